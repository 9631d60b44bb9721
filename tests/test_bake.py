"""Bake the template with every combination of choices and check what comes out."""

import itertools
import json
import py_compile
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from cookiecutter.exceptions import FailedHookException
from cookiecutter.main import cookiecutter

from .baking import TEMPLATE, bake, run
from .tools import require

CHOICES = json.loads((TEMPLATE / "cookiecutter.json").read_text())
COMBINATIONS = (
    [
        dict(zip(("python_version", "metrics_auth"), values, strict=True))
        for values in itertools.product(CHOICES["python_version"], CHOICES["metrics_auth"])
    ]
    + [
        # Every other place alerts can go, with the protection that has no secrets of its own.
        {"metrics_auth": "ip_whitelist", "alert_receiver": receiver}
        | (
            {"alert_email": "oncall@example.org", "alert_smarthost": "smtp.example.org:587"}
            if receiver == "email"
            else {}
        )
        for receiver in CHOICES["alert_receiver"][1:]
    ]
    + [{"metrics_auth": "basic_auth", "tracing": "otlp"}]
)
LEFTOVER_TEMPLATE_SYNTAX = re.compile(r"{{|}}|{%|%}|cookiecutter\.")
# Alertmanager's own (Go) templates, in alertmanager.yml: actions on the data (.Status),
# range and end, and a string literal.
GO_TEMPLATE_ACTION = re.compile(r'{{ (?:\.|range \.|end |"\\n" )[^{}]*}}')
# promtool's notation for a native histogram sample, in slo_test.yml's input series.
NATIVE_HISTOGRAM = re.compile(r"{{schema:-?\d+ [^{}]*}}")
# SchemaStore's, copied in: tests/schemas/README.md says from where.
MANIFEST_SCHEMA = TEMPLATE / "tests" / "schemas" / "cloudfoundry-application-manifest.json"


def combination_id(answers):
    return "-".join(f"{key}:{value}" for key, value in answers.items())


def project_files(project):
    return [path for path in project.rglob("*") if path.is_file()]


def lint(project, python):
    """The project's own pinned ruff: lint and format, as its CI runs them."""
    ruff = python.parent / "ruff"
    run([ruff, "check", "--no-cache", "."], cwd=project)
    run([ruff, "format", "--no-cache", "--check", "."], cwd=project)


def run_own_tests(project, python):
    return run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project)


@pytest.fixture(params=COMBINATIONS, ids=combination_id)
def baked(request, cookies):
    return bake(cookies, **request.param), request.param


def test_bake_leaves_no_template_syntax(baked):
    project, _ = baked
    for path in project_files(project):
        text = path.read_text(encoding="utf-8")
        if path.name == "alertmanager.yml":
            text = GO_TEMPLATE_ACTION.sub("", text)
        if path.name == "slo_test.yml":
            text = NATIVE_HISTOGRAM.sub("", text)
        assert not LEFTOVER_TEMPLATE_SYNTAX.search(text), f"template syntax left in {path}"
        assert not LEFTOVER_TEMPLATE_SYNTAX.search(str(path.relative_to(project)))


def test_baked_files_parse(baked):
    project, _ = baked
    for path in project_files(project):
        if path.suffix == ".py":
            py_compile.compile(str(path), doraise=True, cfile=str(path) + "c")
            Path(str(path) + "c").unlink()
        elif path.suffix in (".yml", ".yaml"):
            yaml.safe_load(path.read_text(encoding="utf-8"))
        elif path.suffix == ".toml":
            tomllib.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))


def test_baked_project_passes_ruff(baked, project_python):
    project, _ = baked
    lint(project, project_python)


@pytest.mark.parametrize("metrics_auth", CHOICES["metrics_auth"])
def test_baked_project_passes_its_own_tests(cookies, project_python, metrics_auth):
    """Once per answer that changes the code its tests run (python_version changes
    ruff's target, checked above for each, and the interpreter, test_pythons.py)."""
    project = bake(cookies, metrics_auth=metrics_auth)
    result = run_own_tests(project, project_python)
    assert re.search(r"\b\d+ passed\b", result.stdout), result.stdout
    assert "failed" not in result.stdout
    assert "skipped" not in result.stdout


@pytest.fixture
def tracing_project(cookies, tracing_python):
    """A bake that traces, and a Python with its requirements-dev.txt installed."""
    return bake(cookies, tracing="otlp"), tracing_python


def installed(python):
    """The names of the distributions installed in `python`'s environment, lower-case."""
    listed = run(
        [
            python,
            "-c",
            "import importlib.metadata as m; print(*(d.name for d in m.distributions()))",
        ],
        cwd=python.parent,
    )
    return set(listed.stdout.lower().split())


def test_a_bake_that_traces_passes_its_own_tests_and_ruff(tracing_project):
    project, python = tracing_project
    result = run_own_tests(project, python)
    assert re.search(r"\b\d+ passed\b", result.stdout), result.stdout
    assert "failed" not in result.stdout
    assert "skipped" not in result.stdout
    lint(project, python)
    assert {"opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http"} <= installed(python)


def test_a_bake_without_tracing_installs_no_opentelemetry(project_python):
    assert not [name for name in installed(project_python) if "opentelemetry" in name]


def test_manifest_follows_the_answers(baked):
    project, answers = baked
    [app] = yaml.safe_load((project / "manifest.yml").read_text())["applications"]

    assert app["name"] == "payments-api"
    assert app["buildpacks"] == ["python_buildpack"]
    assert "buildpack" not in app
    assert app["memory"] == "512M"
    assert app["instances"] == 2
    assert app["health-check-type"] == "http"
    assert app["health-check-http-endpoint"] == "/_status"
    assert app["command"].startswith("PROMETHEUS_MULTIPROC_DIR=")
    assert app["command"].endswith(" exec python -m payments_api")
    assert app["env"] == {
        "PROMETHEUS_METRICS_PATH": "/metrics",
        "METRICS_BASIC_AUTH": "true" if answers["metrics_auth"] == "basic_auth" else "false",
    }


def test_manifest_is_valid_for_cloud_foundry(baked, template_tool):
    project, _ = baked
    run(
        [template_tool("check-jsonschema"), "--schemafile", MANIFEST_SCHEMA, "manifest.yml"],
        cwd=project,
    )


def test_github_workflow_is_valid(baked, template_tool):
    project, answers = baked
    workflow = project / ".github" / "workflows" / "ci.yml"
    run(
        [
            template_tool("check-jsonschema"),
            "--builtin-schema",
            "vendor.github-workflows",
            workflow,
        ],
        cwd=project,
    )
    jobs = yaml.safe_load(workflow.read_text())["jobs"]
    steps = jobs["test"]["steps"]
    assert steps[1]["with"]["python-version"] == answers.get("python_version", "3.11")
    # tests/test_alerts.py's amtool, from the image compose.yaml runs.
    compose_images = yaml.safe_load((project / "monitoring" / "compose.yaml").read_text())
    [amtool] = [step["run"] for step in steps if step.get("name") == "amtool"]
    assert (
        f"docker create --name alertmanager {compose_images['services']['alertmanager']['image']}"
        in amtool
    )
    assert "/bin/amtool /usr/local/bin/amtool" in amtool
    assert [step.get("run") for step in steps[-3:]] == [
        "ruff check .",
        "ruff format --check .",
        "pytest",
    ]
    # promtool and amtool from the images compose.yaml runs, on the rules and their tests
    # and on where the alerts go.
    compose = yaml.safe_load((project / "monitoring" / "compose.yaml").read_text())
    images = {name: service["image"] for name, service in compose["services"].items()}
    commands = [step["run"] for step in jobs["alerts"]["steps"] if "run" in step]
    assert [command.split(images["prometheus"])[-1].split() for command in commands[:2]] == [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml", "slo_test.yml"],
    ]
    assert all("--entrypoint promtool" in command for command in commands[:2])
    assert commands[2].split(images["alertmanager"])[-1].split() == [
        "check-config",
        "alertmanager.yml",
    ]
    assert "--entrypoint amtool" in commands[2]


def test_dependabot_config_is_valid(baked, template_tool):
    project, _ = baked
    config = project / ".github" / "dependabot.yml"
    run(
        [template_tool("check-jsonschema"), "--builtin-schema", "vendor.dependabot", config],
        cwd=project,
    )
    updates = yaml.safe_load(config.read_text())["updates"]
    where = {
        (update["package-ecosystem"], directory)
        for update in updates
        for directory in update.get("directories", [update.get("directory")])
    }
    assert where == {("pip", "/"), ("pip", "/monitoring"), ("github-actions", "/")}


def test_python_version_reaches_runtime_and_tools(baked):
    project, answers = baked
    version = answers.get("python_version", "3.11")
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())

    assert (project / "runtime.txt").read_text() == f"python-{version}.x\n"
    assert pyproject["project"]["requires-python"] == f">={version}"
    assert pyproject["tool"]["ruff"]["target-version"] == "py" + version.replace(".", "")


def test_requirements_do_not_depend_on_answers_but_tracing(cookies):
    default = bake(cookies)
    other = bake(cookies, project_name="Other", python_version="3.14", metrics_auth="ip_whitelist")
    tracing = bake(cookies, tracing="otlp")
    for name in ("requirements.txt", "requirements-dev.txt"):
        assert (default / name).read_text() == (other / name).read_text()
    assert (default / "requirements-dev.txt").read_text() == (
        tracing / "requirements-dev.txt"
    ).read_text()
    added = set((tracing / "requirements.txt").read_text().splitlines()) - set(
        (default / "requirements.txt").read_text().splitlines()
    )
    assert "flask-cf-prometheus[otlp]==0.1.0" in added
    assert all(line.startswith("#") or "==" in line for line in added)


def test_runtime_requirements_are_pinned(cookies):
    requirements = (bake(cookies) / "requirements.txt").read_text().splitlines()
    packages = [line for line in requirements if line and not line.startswith("#")]

    assert packages
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", line) for line in packages)
    names = {line.split("==")[0].lower() for line in packages}
    assert {"flask", "gunicorn", "prometheus-client"} <= names


def test_derived_names(cookies):
    project = bake(cookies, project_name="Card Payments Service")

    assert project.name == "card-payments-service"
    assert (project / "card_payments_service" / "__init__.py").exists()


def test_other_answers_reach_the_project(cookies, project_python):
    project = bake(cookies, metrics_path="/internal/metrics", cf_instances="5", cf_memory="1G")
    [app] = yaml.safe_load((project / "manifest.yml").read_text())["applications"]

    assert (app["instances"], app["memory"]) == (5, "1G")
    assert app["env"]["PROMETHEUS_METRICS_PATH"] == "/internal/metrics"
    run_own_tests(project, project_python)


def test_longest_slug_still_passes_lint_and_tests(cookies, project_python):
    slug = "s" + "-service" * 7 + "-abcde"
    assert len(slug) == 63
    project = bake(cookies, project_slug=slug)

    lint(project, project_python)
    run_own_tests(project, project_python)


HOSTILE = {
    "project_name": 'Zoë\'s "Quote" \\ Service \'\'\' """ ✓',
    "description": "Backslash \\n, \"double\", 'single', ''' and \"\"\", tab\t, émoji 🚀: yes # no",
    "author_name": 'O\'Brien "Team" \\ Müller',
}


def test_hostile_answers_bake_into_files_that_parse(cookies, project_python):
    project = bake(cookies, **HOSTILE)

    assert project.name == "zoe-s-quote-service"
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["description"] == HOSTILE["description"]
    assert pyproject["project"]["authors"] == [{"name": HOSTILE["author_name"]}]
    readme = (project / "README.md").read_text(encoding="utf-8")
    assert readme.startswith(f"# {HOSTILE['project_name']}\n\n{HOSTILE['description']}\n")
    for path in project.rglob("*.yml"):
        yaml.safe_load(path.read_text(encoding="utf-8"))
    lint(project, project_python)
    run_own_tests(project, project_python)


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ({"project_slug": "Payments API"}, "ERROR: project_slug='Payments API' must match"),
        ({"package_name": "class"}, "ERROR: package_name='class' must not be a Python keyword"),
        ({"cf_memory": "lots"}, "ERROR: cf_memory='lots' must be a positive whole number"),
        ({"cf_instances": "0"}, "ERROR: cf_instances='0' must be a positive whole number"),
        ({"metrics_path": "metrics"}, "ERROR: metrics_path='metrics' must start with /"),
        ({"slo_availability": "100"}, "ERROR: slo_availability='100' must be a percentage from 95"),
        ({"slo_latency_seconds": "0.3"}, "ERROR: slo_latency_seconds='0.3' must be a bucket"),
    ],
    ids=lambda value: next(iter(value)) if isinstance(value, dict) else None,
)
def test_bad_answer_stops_the_bake_and_leaves_nothing(tmp_path, capfd, answers, message):
    with pytest.raises(FailedHookException):
        cookiecutter(str(TEMPLATE), no_input=True, extra_context=answers, output_dir=str(tmp_path))

    assert message in capfd.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_alert_rules_check_and_pass_their_unit_tests(baked):
    project, _ = baked
    monitoring = project / "monitoring"

    promtool = require("promtool")
    run([promtool, "check", "rules", "alerts.yml"], cwd=monitoring)
    for tests in ("alerts_test.yml", "slo_test.yml"):
        result = run([promtool, "test", "rules", tests], cwd=monitoring)
        assert "SUCCESS" in result.stdout + result.stderr


SLO_ALERTS = [
    (sli, long, burn, severity)
    for sli in ("availability", "latency")
    for long, burn, severity in (("1h", "14.4", "page"), ("6h", "6", "page"), ("1d", "3", "ticket"))
    + (("3d", "1", "ticket"),)
]


@pytest.mark.parametrize(
    "objectives",
    [
        {"slo_availability": "99.5", "slo_latency_seconds": "1.0", "slo_latency_target": "95"},
        {"slo_availability": "95", "slo_latency_seconds": "0.005", "slo_latency_target": "99.99"},
    ],
    ids=["99.5-1s-95", "95-5ms-99.99"],
)
def test_slo_alerts_follow_the_objectives(cookies, objectives):
    monitoring = bake(cookies, **objectives) / "monitoring"
    groups = yaml.safe_load((monitoring / "alerts.yml").read_text())["groups"]
    rules = {
        rule.get("alert") or rule["record"]: rule for group in groups for rule in group["rules"]
    }
    objective = {
        "availability": objectives["slo_availability"],
        "latency": objectives["slo_latency_target"],
    }
    for sli, long, burn, severity in SLO_ALERTS:
        rule = rules[f"{sli.capitalize()}BudgetBurn{long}"]
        threshold = f"> {burn} * (100 - {objective[sli]}) / 100"
        assert rule["expr"].count(threshold) == 2, rule["expr"]
        assert rule["labels"] == {"severity": severity, "slo": sli}
    latency = rules["job:slo_latency_errors:ratio_rate5m"]["expr"]
    seconds = float(objectives["slo_latency_seconds"])
    le = f'le=~"{seconds:g}|{seconds}"' if seconds.is_integer() else f'le="{seconds}"'
    assert le in latency
    assert "HighErrorRatio" not in rules
    assert "HighLatencyP99" not in rules

    promtool = require("promtool")
    for tests in ("alerts_test.yml", "slo_test.yml"):
        run([promtool, "test", "rules", tests], cwd=monitoring)
