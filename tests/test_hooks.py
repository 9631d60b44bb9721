import subprocess
from pathlib import Path

import pytest

from .baking import load_hook

pre_gen = load_hook("pre_gen_project")
post_gen = load_hook("post_gen_project")

TEMPLATE_DEFAULTS = {
    "project_slug": "payments-api",
    "package_name": "payments_api",
    "cf_memory": "512M",
    "cf_instances": "2",
    "metrics_path": "/metrics",
    "metrics_auth": "basic_auth",
    "slo_availability": "99.9",
    "slo_latency_seconds": "0.5",
    "slo_latency_target": "99",
    "alert_receiver": "none",
    "alert_email": "",
    "alert_smarthost": "",
    "runbooks_url": "https://github.com/service-team/payments-api/blob/main/RUNBOOKS.md",
    "_kit_index": "",
}
EMAIL = {
    "alert_receiver": "email",
    "alert_email": "payments-oncall@example.org",
    "alert_smarthost": "smtp.example.org:587",
}


def errors_for(**answers):
    return pre_gen.validation_errors({**TEMPLATE_DEFAULTS, **answers})


def test_defaults_are_valid():
    assert errors_for() == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("project_slug", "a"),
        ("project_slug", "payments-api-v2"),
        ("project_slug", "a" * 63),
        ("package_name", "payments_api"),
        ("package_name", "_private"),
        ("cf_memory", "256M"),
        ("cf_memory", "1G"),
        ("cf_memory", "1024MB"),
        ("cf_memory", "2GB"),
        ("cf_instances", "1"),
        ("cf_instances", "12"),
        ("metrics_path", "/internal/metrics"),
        ("metrics_path", "/_prom.v1"),
        ("slo_availability", "95"),
        ("slo_availability", "99.999"),
        ("slo_latency_target", "99.5"),
        ("slo_latency_seconds", "0.005"),
        ("slo_latency_seconds", "1"),
        ("slo_latency_seconds", "10.0"),
    ],
)
def test_valid_answers(name, value):
    assert errors_for(**{name: value}) == []


@pytest.mark.parametrize(
    "answers",
    [
        {"runbooks_url": "https://gitlab.example.org/team/payments-api/-/blob/main/RUNBOOKS.md"},
        {"runbooks_url": "http://git.internal/payments-api/RUNBOOKS.md"},
        EMAIL,
        {**EMAIL, "alert_email": "team+alerts@mail.example.co.uk", "alert_smarthost": "relay:25"},
        {"alert_receiver": "pagerduty"},
        {"_kit_index": "https://pypi.org/simple/"},
        {"_kit_index": "https://artifacts.example.org/api/pypi/python/simple"},
    ],
)
def test_valid_alerting_answers(answers):
    assert errors_for(**answers) == []


@pytest.mark.parametrize(
    ("answers", "name", "rule"),
    [
        ({"runbooks_url": "github.com/team/x"}, "runbooks_url", "an http(s) URL"),
        ({"runbooks_url": "https://x/RUNBOOKS.md#servicedown"}, "runbooks_url", "no #fragment"),
        ({"runbooks_url": "https://x/a b"}, "runbooks_url", "an http(s) URL"),
        # The owner's index heads requirements.txt: a newline would add a requirement.
        ({"_kit_index": "https://x/simple\nevil==1"}, "_kit_index", "must be empty or the"),
        ({"_kit_index": "pypi"}, "_kit_index", "http(s) URL of a package index"),
        ({**EMAIL, "alert_email": ""}, "alert_email", "must be an email address"),
        ({**EMAIL, "alert_email": "oncall"}, "alert_email", "must be an email address"),
        ({**EMAIL, "alert_email": "a@b"}, "alert_email", "must be an email address"),
        ({**EMAIL, "alert_email": "a@b.c, d@e.f"}, "alert_email", "must be an email address"),
        ({**EMAIL, "alert_smarthost": ""}, "alert_smarthost", "must be host:port"),
        ({**EMAIL, "alert_smarthost": "smtp.example.org"}, "alert_smarthost", "host:port"),
        ({**EMAIL, "alert_smarthost": "smtp.example.org:0"}, "alert_smarthost", "host:port"),
        (
            {"alert_receiver": "slack", "alert_email": "a@b.org"},
            "alert_email",
            "is for alert_receiver 'email' only",
        ),
        ({"alert_smarthost": "smtp:25"}, "alert_smarthost", "is for alert_receiver 'email' only"),
    ],
)
def test_invalid_alerting_answer_names_variable_and_rule(answers, name, rule):
    [error] = errors_for(**answers)

    assert error.startswith(f"{name}={answers[name]!r} ")
    assert rule in error


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("project_slug", "Payments API", "^[a-z][a-z0-9-]{0,62}$"),
        ("project_slug", "1payments", "^[a-z][a-z0-9-]{0,62}$"),
        ("project_slug", "payments_api", "^[a-z][a-z0-9-]{0,62}$"),
        ("project_slug", "a" * 64, "at most 63 characters"),
        ("project_slug", "", "^[a-z][a-z0-9-]{0,62}$"),
        ("project_slug", "../escape", "^[a-z][a-z0-9-]{0,62}$"),
        ("package_name", "payments-api", "valid ASCII Python identifier"),
        ("package_name", "2fast", "valid ASCII Python identifier"),
        ("package_name", "zoë", "valid ASCII Python identifier"),
        ("package_name", "class", "keyword"),
        ("package_name", "flask", "shadow"),
        ("package_name", "prometheus_client", "shadow"),
        ("cf_memory", "512", "M, MB, G or GB"),
        ("cf_memory", "0M", "M, MB, G or GB"),
        ("cf_memory", "1.5G", "M, MB, G or GB"),
        ("cf_memory", "512m", "M, MB, G or GB"),
        ("cf_instances", "0", "positive whole number"),
        ("cf_instances", "-1", "positive whole number"),
        ("cf_instances", "two", "positive whole number"),
        ("metrics_path", "metrics", "must start with /"),
        ("metrics_path", "/", "must start with /"),
        ("metrics_path", "/metrics/", "no trailing /"),
        ("metrics_path", "/met rics", "must start with /"),
        ("metrics_path", '/m"x', "must start with /"),
        ("metrics_path", "/_status", "a path the service serves"),
        ("metrics_path", "/static/metrics", "a path the service serves"),
        ("metrics_path", "/a/../metrics", "must not have . or .. as a segment"),
        ("metrics_path", "/.", "must not have . or .. as a segment"),
        ("slo_availability", "100", "a percentage from 95 up to, not including, 100"),
        ("slo_availability", "94.9", "a percentage from 95"),
        ("slo_availability", "0", "a percentage from 95"),
        ("slo_availability", "99.9%", "a percentage from 95"),
        ("slo_availability", "1e2", "a percentage from 95"),
        ("slo_latency_target", "101", "a percentage from 95"),
        ("slo_latency_target", "", "a percentage from 95"),
        ("slo_latency_seconds", "0.3", "a bucket boundary of the request duration histogram"),
        ("slo_latency_seconds", "-1", "a bucket boundary"),
        ("slo_latency_seconds", "inf", "a bucket boundary"),
    ],
)
def test_invalid_answer_names_variable_value_and_rule(name, value, rule):
    [error] = errors_for(**{name: value})

    assert error.startswith(f"{name}={value!r} ")
    assert rule in error


def test_every_bad_answer_is_reported_at_once():
    errors = errors_for(cf_memory="lots", cf_instances="0")

    assert [error.split("=")[0] for error in errors] == ["cf_memory", "cf_instances"]


def test_main_prints_one_line_per_error_and_fails(capsys):
    assert pre_gen.main({**TEMPLATE_DEFAULTS, "cf_instances": "0"}) == 1

    assert capsys.readouterr().err == (
        "ERROR: cf_instances='0' must be a positive whole number, e.g. 2\n"
    )


def test_hooks_read_answers_as_data():
    """Both hooks parse the answers from JSON, so a quote in an answer cannot break out."""
    for hook in (pre_gen, post_gen):
        text = Path(hook.__file__).read_text(encoding="utf-8")
        assert 'json.loads(r"""{{ cookiecutter | tojson }}""")' in text
        assert "{{ cookiecutter." not in text


def test_next_steps_name_the_project_and_its_python():
    steps = post_gen.next_steps(
        {"project_slug": "payments-api", "package_name": "payments_api", "python_version": "3.12"}
    )

    assert steps.splitlines()[:3] == [
        "Created payments-api. Next steps:",
        "  cd payments-api",
        "  python3.12 -m venv .venv",
    ]
    assert "  .venv/bin/python -m payments_api --bind 127.0.0.1:8000" in steps.splitlines()
    assert "cf push" in steps


def test_latency_thresholds_are_the_histograms_bucket_boundaries(project_python):
    """The service's duration histogram has prometheus_client's default buckets."""
    script = "from prometheus_client import Histogram\nprint(*Histogram.DEFAULT_BUCKETS)"
    buckets = subprocess.run(
        [project_python, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()

    assert tuple(map(float, buckets)) == (*pre_gen.DURATION_BUCKETS, float("inf"))


def kit_pins(directory):
    for name in post_gen.KIT_PINS:
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text("Flask==3.1.3\nflask-cf-prometheus==0.1.0\n")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://github.com/org/template.git", "git+https://github.com/org/template.git"),
        ("git+https://git.example.com/t", "git+https://git.example.com/t"),
        ("git@github.com:org/template.git", "git+ssh://git@github.com/org/template.git"),
        ("ssh://git@github.com/org/template", "git+ssh://git@github.com/org/template"),
        ("git://127.0.0.1:9418/template.git", "git+git://127.0.0.1:9418/template.git"),
        # pip 23.2 (Python 3.11's and 3.12's venv) refuses file:/// as no URL.
        ("file:///srv/template.git", "git+file://localhost/srv/template.git"),
        ("/srv/template.git", "git+file://localhost/srv/template.git"),
    ],
)
def test_the_kit_is_pinned_at_a_url_pip_reads(url, expected):
    assert post_gen.pip_url(url) == expected


def test_a_template_from_a_directory_keeps_the_version_pin_and_says_why(tmp_path):
    """cookiecutter renders a directory as it is: no commit holds those files."""
    kit_pins(tmp_path)

    said = post_gen.pin_kit({"_template": str(tmp_path), "_repo_dir": str(tmp_path)}, tmp_path)

    assert post_gen.template_repository({}) is None
    for name in post_gen.KIT_PINS:
        assert (tmp_path / name).read_text() == "Flask==3.1.3\nflask-cf-prometheus==0.1.0\n"
    assert said == (
        "requirements.txt pins flask-cf-prometheus==0.1.0, which no package index serves yet:"
        " bake from the template's git URL, or see Publishing the kit in its README."
    )


@pytest.mark.parametrize(
    ("template", "url", "said"),
    [
        (
            "https://git.example.com/template",
            "git+https://git.example.com/template",
            "from the template's repository: flask-cf-prometheus @ git+https://",
        ),
        # cruft resolves a file:// URL, and a path, to the absolute path.
        ("/srv/template.git", "git+file://localhost/srv/template.git", "on this machine only"),
    ],
)
def test_crufts_recorded_commit_pins_the_kit(tmp_path, template, url, said):
    """cruft gives the URL (or path) it cloned and the commit, and no _repo_dir."""
    kit_pins(tmp_path)

    told = post_gen.pin_kit({"_template": template, "_commit": "ab12"}, tmp_path)

    expected = f"flask-cf-prometheus @ {url}@ab12#subdirectory=flask-cf-prometheus"
    for name in post_gen.KIT_PINS:
        assert (tmp_path / name).read_text() == (
            "Flask==3.1.3\n# flask-cf-prometheus==0.1.0, from the template's repository"
            f" until it is on an index:\n{expected}\n"
        )
    assert said in told
    assert "\n" not in told


def test_the_git_pin_keeps_the_extra_for_traces(tmp_path):
    kit_pins(tmp_path)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("Flask==3.1.3\nflask-cf-prometheus[otlp]==0.1.0\nprotobuf==7.36.2\n")

    assert post_gen.kit_version(tmp_path) == "0.1.0"

    post_gen.pin_kit({"_template": "https://git.example.com/t", "_commit": "ab12"}, tmp_path)

    assert requirements.read_text() == (
        "Flask==3.1.3\n# flask-cf-prometheus[otlp]==0.1.0, from the template's repository"
        " until it is on an index:\nflask-cf-prometheus[otlp] @"
        " git+https://git.example.com/t@ab12#subdirectory=flask-cf-prometheus\nprotobuf==7.36.2\n"
    )


@pytest.mark.parametrize(
    ("index", "first_line"),
    [
        ("https://pypi.org/simple/", "Flask==3.1.3"),
        ("https://pypi.org/simple", "Flask==3.1.3"),
        ("https://pypi.example.org/simple/", "--index-url https://pypi.example.org/simple/"),
    ],
)
def test_a_published_kit_is_pinned_by_version_from_its_index(tmp_path, index, first_line):
    """Once the template's owner sets _kit_index, every bake pins the version, whatever
    it was made from; an index of the organisation's own heads the file."""
    kit_pins(tmp_path)
    answers = {"_kit_index": index, "_template": "https://git.example.com/t", "_commit": "ab12"}

    assert post_gen.pin_kit(answers, tmp_path) is None

    for name in post_gen.KIT_PINS:
        lines = (tmp_path / name).read_text().splitlines()
        assert lines[0] == first_line
        assert lines[-1] == "flask-cf-prometheus==0.1.0"
