"""The generated docs document what the service really reads and does: the README for
its team, monitoring/README.md for the platform team, RUNBOOKS.md for whoever is paged."""

import ast
import re

import pytest
import yaml

from .baking import KIT, bake, run
from .tools import require

# What a service runs of the kit: all of it but cf-discovery, whose --help documents it.
KIT_MODULES = [
    path
    for path in (KIT / "src" / "flask_cf_prometheus").glob("*.py")
    if path.name != "discovery.py"
]
# Keys that the kit's middleware reads from each request's WSGI environ, not settings.
WSGI_ENVIRON_KEYS = {
    "PATH_INFO",
    "REQUEST_METHOD",
    "HTTP_X_VCAP_REQUEST_ID",
    "HTTP_TRACEPARENT",
    "HTTP_TRACESTATE",
}
# The kit's tracing, which a service made without it never runs: it reads none of
# OpenTelemetry's variables, and says it ignores them.
TRACING_MODULES = {"_tracing.py", "_tracing_settings.py", "_span_queue.py", "_request_span.py"}
CODE_BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)
# os.environ.get("X"), os.environ["X"], and the kit's helpers: _text(environ, "X"),
# _whole_number(environ, "X", ...) and _choice(environ, "X", ...).
ENVIRONMENT_READ = re.compile(
    r"""(?:environ\.get\(|environ\[|_\w+\(environ, |_whole_number\(|_choice\()"""
    r"""["']([A-Z][A-Z0-9_]+)"""
)


def code_blocks(readme, language):
    return [body for lang, body in CODE_BLOCK.findall(readme) if lang == language]


def all_docs(path):
    """The three documents of a baked service, one after another."""
    return "\n".join(
        (path / name).read_text() for name in ("README.md", "monitoring/README.md", "RUNBOOKS.md")
    )


@pytest.fixture(
    params=[("basic_auth", "none"), ("ip_whitelist", "none"), ("basic_auth", "otlp")],
    ids="-".join,
)
def project(request, cookies):
    metrics_auth, tracing = request.param
    return bake(cookies, metrics_auth=metrics_auth, tracing=tracing), metrics_auth


def test_every_variable_the_service_reads_is_documented(project):
    path, _ = project
    readme = (path / "README.md").read_text()
    kit = [module for module in KIT_MODULES if module.name not in TRACING_MODULES]
    sources = [path / "gunicorn.conf.py", *(path / "payments_api").glob("*.py"), *kit]
    variables = {
        name for source in sources for name in ENVIRONMENT_READ.findall(source.read_text())
    }

    assert {"PORT", "WEB_CONCURRENCY", "METRICS_IP_WHITELIST", "VCAP_APPLICATION"} <= variables
    undocumented = {name for name in variables - WSGI_ENVIRON_KEYS if f"`{name}`" not in readme}
    assert undocumented == set()


def test_a_bake_that_traces_documents_every_opentelemetry_variable(cookies):
    readme = (bake(cookies, tracing="otlp") / "README.md").read_text()
    sources = [KIT / "src" / "flask_cf_prometheus" / name for name in TRACING_MODULES]
    variables = {
        name for source in sources for name in ENVIRONMENT_READ.findall(source.read_text())
    }

    assert {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_SAMPLER", "VCAP_SERVICES"} <= variables
    undocumented = {name for name in variables - WSGI_ENVIRON_KEYS if f"`{name}`" not in readme}
    # Cloud Foundry sets VCAP_SERVICES; Traces says how a bound collector is read.
    assert undocumented <= {"VCAP_SERVICES"}
    assert "`OTEL_EXPORTER_OTLP_HEADERS_FILE`" in readme
    read = "".join(source.read_text() for source in sources)
    documented = table_column(readme, "Variable")
    unread = [name for name in documented if name.startswith("OTEL_") and f'"{name}"' not in read]
    assert unread == []


def table_column(readme, header):
    """The backticked names in the first column of every table whose header row starts
    with `header`."""
    names, inside = [], False
    for line in readme.splitlines():
        if not line.startswith("|"):
            inside = False
        elif line.startswith(f"| {header}"):
            inside = True
        elif inside and not line.startswith("| ---"):
            names.extend(re.findall(r"`([^`]+)`", line.split("|")[1]))
    return names


def test_every_setting_the_readme_documents_is_read(project):
    path, _ = project
    readme = (path / "README.md").read_text()
    sources = "".join(
        source.read_text()
        for source in [
            path / "gunicorn.conf.py",
            *(path / "payments_api").glob("*.py"),
            *KIT_MODULES,
        ]
    )
    documented = table_column(readme, "Variable")

    assert {"PORT", "PROMETHEUS_MULTIPROC_DIR", "METRICS_TRUSTED_PROXIES"} <= set(documented)
    unread = [name for name in documented if f'"{name}"' not in sources]
    assert unread == []


def metrics_made(source):
    """(kind, name) of each metric the code makes: prometheus_client's classes called
    with a name, not the examples in docstrings."""
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("Counter", "Gauge", "Histogram", "Summary", "GaugeMetricFamily")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            yield node.func.id, node.args[0].value


def test_every_metric_the_readme_names_is_exported_and_every_one_named(project):
    path, _ = project
    readme = (path / "README.md").read_text()
    exported = {
        f"{name}_total" if kind == "Counter" else name
        for source in [*(path / "payments_api").glob("*.py"), *KIT_MODULES]
        for kind, name in metrics_made(source.read_text())
    }
    documented = set(table_column(readme, "Metric"))

    assert "metrics_files_unreadable" in exported
    assert documented == exported


def test_every_alert_the_docs_name_is_a_rule_and_every_rule_named(project):
    """The service's alerts in its README's table, the monitoring's in monitoring/README.md,
    the SLO alerts' burn rates in RUNBOOKS.md."""
    path, _ = project
    docs = all_docs(path)
    rules = yaml.safe_load((path / "monitoring" / "alerts.yml").read_text())
    alerts = {
        rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule
    }
    documented = set()
    for name in table_column(docs, "Alert"):
        if name.startswith("…"):  # the SLO alerts' table: one row for both objectives
            documented |= {f"{objective}{name[1:]}" for objective in ("Availability", "Latency")}
        else:
            documented.add(name)

    assert len(alerts) > 10
    assert documented <= alerts
    assert {alert for alert in alerts - documented if f"`{alert}`" not in docs} == set()


def test_chosen_protection_comes_first(project):
    path, metrics_auth = project
    readme = (path / "README.md").read_text()
    credentials = readme.index("### Credentials")
    whitelist = readme.index("### IP whitelist")

    assert (credentials < whitelist) == (metrics_auth == "basic_auth")
    assert "the default here" in readme
    assert "\n\n\n" not in all_docs(path)


def test_the_docs_name_no_private_module_of_the_kit(project):
    path, _ = project
    private = {module.name for module in KIT_MODULES if re.fullmatch(r"_[a-z]\w*\.py", module.name)}
    docs = all_docs(path)

    assert "_multiprocess.py" in private
    assert {name for name in private if name in docs} == set()
    assert "flask_cf_prometheus._" not in docs


def test_yaml_examples_parse(project):
    """The Prometheus jobs and the dead man's switch's receiver, in monitoring/README.md."""
    path, _ = project
    blocks = code_blocks(all_docs(path), "yaml")

    assert blocks
    receivers = []
    for block in blocks:
        config = yaml.safe_load(block)
        if isinstance(config, list):  # a receiver of alertmanager.yml
            receivers.extend(config)
        else:
            assert config["scrape_configs"][0]["job_name"] == "payments-api"
    # The dead man's switch's receiver, in place of the baked one, passes amtool's check.
    [watchdog] = receivers
    alertmanager = path / "monitoring" / "alertmanager.yml"
    config = yaml.safe_load(alertmanager.read_text())
    config["receivers"] = [r for r in config["receivers"] if r["name"] != "watchdog"]
    alertmanager.write_text(
        yaml.safe_dump({**config, "receivers": [*config["receivers"], watchdog]})
    )
    run([require("amtool"), "check-config", alertmanager], cwd=path)
    assert watchdog["webhook_configs"] == [{"url_file": "secrets/watchdog-url"}]


def test_custom_metric_example_works_as_written(cookies, project_python):
    path = bake(cookies)
    declaration, use = code_blocks((path / "README.md").read_text(), "python")[:2]
    metrics_module = path / "payments_api" / "metrics.py"
    metrics_module.write_text(metrics_module.read_text() + "\n" + declaration)
    increment = use.strip().splitlines()[-1]
    script = (
        "from payments_api import create_app\n"
        "from payments_api.metrics import ORDERS_PLACED\n"
        "app = create_app({'METRICS_BASIC_AUTH': True, 'METRICS_BASIC_AUTH_TOKEN': 't'})\n"
        f"{increment}\n"
        "print(app.test_client().get('/metrics', headers={'Authorization': 'Bearer t'}).text)\n"
    )

    result = run([project_python, "-c", script], cwd=path)

    assert 'orders_placed_total{currency="GBP"} 1.0' in result.stdout
