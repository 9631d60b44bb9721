import base64
import ipaddress
import logging

import pytest

from flask_cf_prometheus._auth import (
    MAX_FORWARDED_HOPS,
    client_address,
)
from flask_cf_prometheus._settings import (
    DEFAULT_TRUSTED_PROXIES,
    settings_from_environ,
)

from .service import create_app

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
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
    ],
    ids=[
        "token",
        "token-prefix",
        "guid-case",
        "password",
        "username",
        "empty-password",
        "long",
        "not-utf8",
    ],
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


def as_sent(text, encoding="utf-8"):
    """A header value as a WSGI server hands it on: the bytes sent, read as Latin-1."""
    return text.encode(encoding).decode("latin-1")


def test_non_ascii_secrets_match_as_the_utf8_the_client_sends():
    token, password = "jeton-été-✓", "mot de passe: ünïcode ✓"
    client = metrics_client(
        METRICS_BASIC_AUTH=True,
        METRICS_BASIC_AUTH_TOKEN=token,
        METRICS_BASIC_AUTH_USERNAME=USERNAME,
        METRICS_BASIC_AUTH_PASSWORD=password,
    )

    assert scrape(client, as_sent(f"Bearer {token}")).status_code == 200
    assert scrape(client, basic(USERNAME, password)).status_code == 200
    assert scrape(client, as_sent(f"Bearer {token}"[:-2], "latin-1")).status_code == 403
    latin1 = base64.b64encode(f"{USERNAME}:{password[:-2]}".encode("latin-1")).decode()
    assert scrape(client, f"Basic {latin1}").status_code == 403


@pytest.mark.parametrize(
    ("authorization", "reason", "status"),
    [
        (None, "missing_credentials", 401),
        ("Bearer", "malformed", 401),
        ("Digest username=prometheus", "malformed", 401),
        ("Bearer wrong-token", "wrong_credentials", 403),
        (basic(USERNAME, "wrong"), "wrong_credentials", 403),
    ],
)
def test_each_refusal_is_counted_by_reason(credentials_client, authorization, reason, status):
    before = refusals(credentials_client)

    assert scrape(credentials_client, authorization).status_code == status

    after = refusals(credentials_client)
    assert {key: after[key] - before[key] for key in after} == {
        key: 1 if key == reason else 0 for key in after
    }


def refusals(client, **allowed):
    """The refused-scrapes counter, by reason, as a scrape with the token (or with the
    `allowed` scrape arguments) reads it."""
    lines = scrape(client, **(allowed or {"authorization": f"Bearer {TOKEN}"})).text.splitlines()
    prefix = 'metrics_scrapes_refused_total{reason="'
    return {
        line[len(prefix) :].split('"')[0]: float(line.split()[-1])
        for line in lines
        if line.startswith(prefix)
    }


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


def test_refused_addresses_are_counted(whitelist_client):
    allowed = {"remote_addr": "203.0.113.5"}
    before = refusals(whitelist_client, **allowed)

    assert scrape(whitelist_client, remote_addr="198.51.100.7").status_code == 403

    after = refusals(whitelist_client, **allowed)
    assert after["address_not_allowed"] == before["address_not_allowed"] + 1
    assert sum(after.values()) == sum(before.values()) + 1


@pytest.mark.parametrize("client", ["203.0.113.10", "::ffff:203.0.113.10"])
@pytest.mark.parametrize("entry", ["203.0.113.10", "::ffff:203.0.113.10", "::ffff:203.0.113.0/120"])
def test_ipv4_mapped_whitelist_entries_match_the_ipv4_client(entry, client):
    settings = settings_from_environ({"METRICS_BASIC_AUTH": "false", "METRICS_IP_WHITELIST": entry})
    app = create_app({**settings, "METRICS_PATH": "/metrics"})

    assert scrape(app.test_client(), remote_addr=client).status_code == 200
    assert scrape(app.test_client(), remote_addr="203.0.113.11").status_code == (
        200 if entry.endswith("/120") else 403
    )


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


def test_a_chain_of_trusted_proxies_is_judged_so_far_and_no_further():
    """90 headers of 8 KB of trusted addresses once cost a worker 0.45 s a request: past
    MAX_FORWARDED_HOPS trusted entries, the client is unreadable, and refused."""
    client = "203.0.113.9"
    within = [client, *(["10.0.0.3"] * (MAX_FORWARDED_HOPS - 1))]
    beyond = [", ".join(["10.0.0.3"] * 800)] * 90

    assert client_address("10.0.0.2", within, TRUSTED) == ipaddress.ip_address(client)
    assert client_address("10.0.0.2", [client, *within[1:], "10.0.0.4"], TRUSTED) is None
    assert client_address("10.0.0.2", [client, *beyond], TRUSTED) is None
