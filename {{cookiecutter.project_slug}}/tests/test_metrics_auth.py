import base64
import ipaddress
import logging

import pytest

from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.config import (
    DEFAULT_TRUSTED_PROXIES,
)
from {{ cookiecutter.package_name }}.metrics_auth import (
    client_address,
)

APP_ID = "0f4a1c9e-6d1b-4f7e-9a57-3c2d8e1b5a60"
TOKEN = "shared-scrape-token"
USERNAME = "prometheus"
PASSWORD = "correct horse battery staple"
TRUSTED = tuple(ipaddress.ip_network(net) for net in DEFAULT_TRUSTED_PROXIES.split(","))


def metrics_client(**config):
    settings = {
        "METRICS_PATH": "/metrics",
        "CF_APPLICATION_ID": None,
        "METRICS_BASIC_AUTH_TOKEN": None,
        "METRICS_BASIC_AUTH_USERNAME": None,
        "METRICS_BASIC_AUTH_PASSWORD": None,
        "METRICS_IP_WHITELIST": (),
        **config,
    }
    return create_app(settings).test_client()


def basic(username, password):
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


@pytest.fixture
def credentials_client():
    return metrics_client(
        METRICS_BASIC_AUTH=True,
        CF_APPLICATION_ID=APP_ID,
        METRICS_BASIC_AUTH_TOKEN=TOKEN,
        METRICS_BASIC_AUTH_USERNAME=USERNAME,
        METRICS_BASIC_AUTH_PASSWORD=PASSWORD,
    )


def scrape(client, authorization=None, remote_addr="127.0.0.1", forwarded_for=None):
    headers = {}
    if authorization is not None:
        headers["Authorization"] = authorization
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    return client.get("/metrics", headers=headers, environ_base={"REMOTE_ADDR": remote_addr})


@pytest.mark.parametrize(
    "authorization",
    [f"Bearer {APP_ID}", f"Bearer {TOKEN}", f"bearer  {TOKEN} ", basic(USERNAME, PASSWORD)],
    ids=["paas-app-guid", "shared-token", "scheme-any-case", "basic-auth"],
)
def test_each_credential_reads_the_metrics(credentials_client, authorization):
    response = scrape(credentials_client, authorization)

    assert response.status_code == 200
    assert b"http_server_requests_total" in response.data


def test_missing_credentials_get_a_challenge(credentials_client):
    response = scrape(credentials_client)

    assert response.status_code == 401
    challenges = response.headers.getlist("WWW-Authenticate")
    assert any(challenge.startswith("Basic realm=") for challenge in challenges)
    assert any(challenge.startswith("Bearer realm=") for challenge in challenges)
    assert response.json == {"error": "Unauthorized"}


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer wrong-token",
        f"Bearer {TOKEN}x",
        f"Bearer {APP_ID.upper()}",
        basic(USERNAME, "wrong"),
        basic("someone", PASSWORD),
        basic(USERNAME, ""),
        f"Bearer {'x' * 6000}",
    ],
    ids=["token", "token-prefix", "guid-case", "password", "username", "empty-password", "long"],
)
def test_wrong_credentials_are_forbidden(credentials_client, authorization):
    assert scrape(credentials_client, authorization).status_code == 403


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        "Bearer",
        "Bearer ",
        "Basic",
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
        "Basic " + base64.b64encode(b"no-colon-here").decode(),
        "Digest username=prometheus",
        " ",
        TOKEN,
    ],
    ids=[
        "empty",
        "bearer-no-token",
        "bearer-blank-token",
        "basic-no-value",
        "not-base64",
        "not-utf8",
        "no-colon",
        "unknown-scheme",
        "blank",
        "no-scheme",
    ],
)
def test_malformed_authorization_is_a_401_not_a_500(credentials_client, authorization):
    response = scrape(credentials_client, authorization)

    assert response.status_code == 401
    assert response.json == {"error": "Unauthorized"}


def test_no_credential_configured_refuses_everything(caplog):
    with caplog.at_level(logging.WARNING):
        client = metrics_client(METRICS_BASIC_AUTH=True, METRICS_BASIC_AUTH_TOKEN="")

    assert "METRICS_BASIC_AUTH_TOKEN" in caplog.text
    assert scrape(client).status_code == 401
    assert scrape(client, "Bearer ").status_code == 401
    assert scrape(client, "Bearer None").status_code == 403
    assert scrape(client, basic("", "")).status_code == 403
    assert scrape(client, basic("None", "None")).status_code == 403


def test_other_routes_need_no_credentials(credentials_client):
    assert credentials_client.get("/").status_code == 200
    assert credentials_client.get("/_status").status_code == 200


@pytest.fixture
def whitelist_client():
    return metrics_client(
        METRICS_BASIC_AUTH=False,
        METRICS_IP_WHITELIST=(
            ipaddress.ip_network("203.0.113.0/24"),
            ipaddress.ip_network("2001:db8::/32"),
        ),
        METRICS_TRUSTED_PROXIES=TRUSTED,
    )


@pytest.mark.parametrize(
    ("remote_addr", "forwarded_for", "status"),
    [
        ("203.0.113.5", None, 200),
        ("198.51.100.7", None, 403),
        ("10.0.1.2", "203.0.113.5", 200),
        ("10.0.1.2", "203.0.113.5, 10.0.0.9", 200),
        ("10.0.1.2", "203.0.113.5, 198.51.100.7", 403),
        ("10.0.1.2", "198.51.100.7", 403),
        ("198.51.100.7", "203.0.113.5", 403),
        ("10.0.1.2", "garbage, 203.0.113.5", 200),
        ("10.0.1.2", "203.0.113.5, garbage", 400),
        ("10.0.1.2", "", 400),
        ("10.0.1.2", "203.0.113.5:51234", 200),
        ("10.0.1.2", "[2001:db8::1]:443", 200),
        ("10.0.1.2", "2001:db8::1", 200),
        ("10.0.1.2", "::ffff:203.0.113.5", 200),
        ("10.0.1.2", "[2001:db8::1", 400),
        ("10.0.1.2", "2001:db8::1, ::ffff:198.51.100.7", 403),
        ("127.0.0.1", None, 403),
    ],
    ids=[
        "direct-allowed",
        "direct-refused",
        "router-allowed",
        "two-trusted-hops",
        "spoofed-left-entry",
        "router-refused",
        "untrusted-peer-spoofing",
        "garbage-left-ignored",
        "garbage-judged",
        "empty-header",
        "ipv4-with-port",
        "ipv6-bracketed-port",
        "ipv6",
        "ipv4-mapped",
        "unclosed-bracket",
        "ipv6-mixed-refused",
        "loopback-not-listed",
    ],
)
def test_ip_whitelist(whitelist_client, remote_addr, forwarded_for, status):
    response = scrape(whitelist_client, remote_addr=remote_addr, forwarded_for=forwarded_for)

    assert response.status_code == status


def test_whitelist_ignores_credentials(whitelist_client):
    response = scrape(whitelist_client, f"Bearer {TOKEN}", remote_addr="198.51.100.7")

    assert response.status_code == 403


def test_empty_whitelist_refuses_everything(caplog):
    with caplog.at_level(logging.WARNING):
        client = metrics_client(METRICS_BASIC_AUTH=False, METRICS_TRUSTED_PROXIES=TRUSTED)

    assert "METRICS_IP_WHITELIST is empty" in caplog.text
    assert scrape(client, remote_addr="127.0.0.1").status_code == 403


def test_client_address_walks_from_the_right():
    hops = ["198.51.100.1, 203.0.113.9", "10.0.0.3"]

    assert client_address("10.0.0.2", hops, TRUSTED) == ipaddress.ip_address("203.0.113.9")
    assert client_address("10.0.0.2", ["10.0.0.4"], TRUSTED) == ipaddress.ip_address("10.0.0.4")
    assert client_address("10.0.0.2", [], ()) == ipaddress.ip_address("10.0.0.2")
