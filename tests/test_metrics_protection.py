"""/metrics protection of the baked service over real HTTP, started as Cloud Foundry would."""

import base64
import json

import pytest

from .baking import bake
from .prometheus_server import prometheus_scraping
from .service import serve

APP_ID = "5b1c7a52-2f8e-4c1d-9e0b-7a3f6d2c8e41"
VCAP_APPLICATION = json.dumps({"application_id": APP_ID, "application_name": "payments-api"})
TOKEN = "shared-token-for-several-prometheus"
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
