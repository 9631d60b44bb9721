"""/metrics protection of the baked service over real HTTP, started as Cloud Foundry would."""

import base64
import json
import subprocess

import pytest

from .conftest import bake
from .prometheus_server import prometheus_scraping
from .service import free_loopback_port, manifest_command, manifest_environment, serve

APP_ID = "5b1c7a52-2f8e-4c1d-9e0b-7a3f6d2c8e41"
VCAP_APPLICATION = json.dumps({"application_id": APP_ID, "application_name": "payments-api"})
TOKEN = "shared-token-for-several-prometheus"
GUNICORN_SETTINGS = {"WEB_CONCURRENCY", "GUNICORN_THREADS", "PORT", "GUNICORN_TIMEOUT"}
USERNAME, PASSWORD = "prometheus", "s3cret: with a colon"


def basic(username, password):
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def scrape_status(service, **headers):
    return service.request("/metrics", headers=headers).status


@pytest.fixture(scope="module")
def basic_auth_project(cookies_session):
    return bake(cookies_session, metrics_auth="basic_auth")


@pytest.fixture(scope="module")
def ip_whitelist_project(cookies_session):
    return bake(cookies_session, metrics_auth="ip_whitelist")


def test_basic_auth_mode_over_http(basic_auth_project, project_python, tmp_path):
    environ = {
        "VCAP_APPLICATION": VCAP_APPLICATION,
        "METRICS_BASIC_AUTH_TOKEN": TOKEN,
        "METRICS_BASIC_AUTH_USERNAME": USERNAME,
        "METRICS_BASIC_AUTH_PASSWORD": PASSWORD,
    }
    with serve(basic_auth_project, project_python, tmp_path, **environ) as service:
        missing = service.request("/metrics")
        assert missing.status == 401
        assert "Basic realm=" in missing.headers["WWW-Authenticate"]
        assert scrape_status(service, Authorization=f"Bearer {APP_ID}") == 200
        assert scrape_status(service, Authorization=f"Bearer {TOKEN}") == 200
        assert scrape_status(service, Authorization=basic(USERNAME, PASSWORD)) == 200
        assert scrape_status(service, Authorization="Bearer guess") == 403
        assert scrape_status(service, Authorization=basic(USERNAME, "guess")) == 403
        assert scrape_status(service, Authorization="Basic %%%") == 401
        assert service.request("/").status == 200
        assert service.stop() == 0
    assert "Traceback" not in service.log_text()


def test_basic_auth_mode_is_closed_until_configured(basic_auth_project, project_python, tmp_path):
    with serve(basic_auth_project, project_python, tmp_path) as service:
        assert scrape_status(service) == 401
        assert scrape_status(service, Authorization="Bearer None") == 403
        assert scrape_status(service, Authorization=basic("", "")) == 403
    assert "refuses every request: no credential is configured" in service.log_text()


def test_switch_to_ip_whitelist_at_run_time(basic_auth_project, project_python, tmp_path):
    environ = {"METRICS_BASIC_AUTH": "FALSE", "METRICS_IP_WHITELIST": "127.0.0.1, 203.0.113.0/24"}
    with serve(basic_auth_project, project_python, tmp_path, **environ) as service:
        assert scrape_status(service) == 200
        # Loopback is a trusted proxy by default, so the header is judged, from the right.
        assert scrape_status(service, **{"X-Forwarded-For": "203.0.113.9"}) == 200
        assert scrape_status(service, **{"X-Forwarded-For": "203.0.113.9, 198.51.100.1"}) == 403
        assert scrape_status(service, **{"X-Forwarded-For": "not-an-address"}) == 400


def test_ip_whitelist_mode_over_http(ip_whitelist_project, project_python, tmp_path):
    with serve(ip_whitelist_project, project_python, tmp_path) as service:
        assert scrape_status(service) == 403
        assert scrape_status(service, Authorization=f"Bearer {TOKEN}") == 403
    assert "METRICS_IP_WHITELIST is empty" in service.log_text()

    whitelisted = tmp_path / "whitelisted"
    whitelisted.mkdir()
    environ = {"METRICS_IP_WHITELIST": "::1,127.0.0.1"}
    with serve(ip_whitelist_project, project_python, whitelisted, **environ) as service:
        assert scrape_status(service) == 200


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("METRICS_IP_WHITELIST", "10.0.0.1, bogus", "METRICS_IP_WHITELIST has 'bogus'"),
        ("METRICS_BASIC_AUTH", "maybe", "METRICS_BASIC_AUTH='maybe' must be true or false"),
        ("METRICS_BASIC_AUTH_USERNAME", "prometheus", "must be set together"),
        ("PROMETHEUS_METRICS_PATH", "/_status", "'/_status' is the path of 'service.status'"),
        ("PROMETHEUS_METRICS_PATH", "/a/../metrics", "must not have . or .. as a segment"),
        ("WEB_CONCURRENCY", "0", "WEB_CONCURRENCY='0' must be a whole number, 1 or more"),
        ("GUNICORN_THREADS", "abc", "GUNICORN_THREADS='abc' must be a whole number, 1 or more"),
        ("PORT", "99999", "PORT='99999' must be a whole number, from 1 to 65535"),
        ("GUNICORN_TIMEOUT", "0", "GUNICORN_TIMEOUT='0' must be a whole number, 1 or more"),
    ],
)
def test_misconfiguration_stops_the_service(
    ip_whitelist_project, project_python, tmp_path, variable, value, message
):
    port = free_loopback_port()
    env = manifest_environment(project_python, port, tmp_path, tmp_path, **{variable: value})
    result = subprocess.run(
        ["bash", "-c", manifest_command(ip_whitelist_project)],
        cwd=ip_whitelist_project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    if variable in GUNICORN_SETTINGS:
        # gunicorn.conf.py stops before gunicorn starts: that one line and nothing else.
        assert (result.stdout + result.stderr).strip() == message


def test_prometheus_scrapes_with_each_credential_and_fails_without(
    basic_auth_project, project_python, tmp_path
):
    environ = {
        "METRICS_BASIC_AUTH_TOKEN": TOKEN,
        "METRICS_BASIC_AUTH_USERNAME": USERNAME,
        "METRICS_BASIC_AUTH_PASSWORD": PASSWORD,
    }
    jobs = {
        "bearer": {"authorization": {"type": "Bearer", "credentials": TOKEN}},
        "basic": {"basic_auth": {"username": USERNAME, "password": PASSWORD}},
        "anonymous": {},
    }
    with (
        serve(basic_auth_project, project_python, tmp_path, **environ) as service,
        prometheus_scraping(service.port, tmp_path, jobs=jobs) as prometheus,
    ):
        prometheus.wait_for('up{job="bearer"} == 1')
        prometheus.wait_for('up{job="basic"} == 1')
        anonymous = prometheus.wait_for('up{job="anonymous"}')
        requests = prometheus.wait_for('http_server_requests_total{job="basic"}')

    assert float(anonymous[0]["value"][1]) == 0
    assert requests
