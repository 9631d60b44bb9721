import tomllib
from pathlib import Path

import pytest
from flask_cf_prometheus import ConfigError
from prometheus_client import REGISTRY

from {{ cookiecutter.package_name }} import __version__, create_app


def test_config_argument_overrides_settings():
    assert not create_app().testing
    assert create_app({"TESTING": True}).testing
    assert create_app({"METRICS_PATH": "/other"}).config["METRICS_PATH"] == "/other"


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("PROMETHEUS_METRICS_PATH", "/internal/metrics")
    monkeypatch.setenv("CF_INSTANCE_INDEX", "1")

    config = create_app().config

    assert config["METRICS_PATH"] == "/internal/metrics"
    assert config["INSTANCE_INDEX"] == 1


@pytest.mark.parametrize(
    ("variable", "value"), [("METRICS_BASIC_AUTH", "maybe"), ("GUNICORN_TIMEOUT", "nan")]
)
def test_bad_setting_stops_start_up(monkeypatch, variable, value):
    """Every setting is checked, gunicorn's too, as the gunicorn master checks them."""
    monkeypatch.setenv(variable, value)

    with pytest.raises(ConfigError, match=f"{variable}='{value}'"):
        create_app()


def test_version_matches_pyproject():
    pyproject = Path(__file__).parents[1] / "pyproject.toml"
    assert tomllib.loads(pyproject.read_text())["project"]["version"] == __version__


@pytest.mark.parametrize(
    ("path", "route"), [("/_status", "'service.status'"), ("/static/app.css", "'static'")]
)
def test_metrics_path_may_not_be_another_routes_path(path, route):
    with pytest.raises(
        ConfigError, match=f"PROMETHEUS_METRICS_PATH='{path}' is the path of {route}"
    ):
        create_app({"METRICS_PATH": path})


def test_a_blank_metrics_directory_stops_start_up_outside_gunicorn(monkeypatch, tmp_path):
    """prometheus_client reads a set but blank PROMETHEUS_MULTIPROC_DIR as the current
    directory; under `flask run` nothing replaces it first (python -m does)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", " ")

    with pytest.raises(ConfigError, match="PROMETHEUS_MULTIPROC_DIR is set but blank"):
        create_app()

    assert list(tmp_path.iterdir()) == []


def test_the_metrics_endpoint_is_where_and_as_protected_as_chosen(client):
    response = client.get({{ cookiecutter.metrics_path | tojson }})
{%- if cookiecutter.metrics_auth == "basic_auth" %}

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
{%- else %}

    # No address is whitelisted until METRICS_IP_WHITELIST names one.
    assert response.status_code == 403
{%- endif %}


def test_app_info_names_this_service():
    create_app()

    labels = {
        "name": {{ cookiecutter.project_slug | tojson }},
        "version": __version__,
    }
    info = [
        sample.labels
        for metric in REGISTRY.collect()
        for sample in metric.samples
        if sample.name == "app_info"
    ]
    assert [{key: value for key, value in sample.items() if key in labels} for sample in info] == [
        labels
    ]
{%- if cookiecutter.tracing == "otlp" %}


def test_a_request_answers_with_the_trace_it_continues(client):
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"

    response = client.get("/", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})

    assert response.headers["traceresponse"].startswith(f"00-{trace_id}-")
{%- endif %}
