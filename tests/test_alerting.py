"""Where the alerts go: the baked monitoring/alertmanager.yml passes amtool's own check,
and the service's own tests/test_alerts.py, amtool's route test for every alert of
alerts.yml, sends each to the receiver its severity names (Watchdog to its dead man's
switch), so that a rule's severity and the route tree cannot change apart. Then the
whole way, with real programs: run-prometheus starts Prometheus and an Alertmanager, and
notifications arrive at a stand-in for each vendor's endpoint on loopback.
"""

import contextlib
import json
import os
import re
import shlex
import shutil
import ssl
import subprocess
import threading
import time
import urllib.request

import pytest
import yaml
from standins.loopback import StandIn, free_loopback_port, serving

from . import alert_receivers
from .baking import FAILING, bake, bake_with_views, run
from .prometheus_server import (
    SHORT_SLO_WINDOWS,
    alertmanager_alerts,
    every_second,
    run_prometheus,
    with_windows,
)
from .service import serve, wait_for
from .tls import certificates
from .tools import require

RECEIVERS = {"page": "page", "ticket": "ticket"}
TOKEN = "alerting-test-token"


@pytest.fixture(scope="module")
def monitoring(cookies_session):
    return bake(cookies_session) / "monitoring"


def alerts(monitoring):
    """(alertname, labels) of every alerting rule in alerts.yml."""
    groups = yaml.safe_load((monitoring / "alerts.yml").read_text())["groups"]
    return [
        (rule["alert"], rule.get("labels", {}))
        for group in groups
        for rule in group["rules"]
        if "alert" in rule
    ]


def expected_receiver(name, labels):
    if name == "Watchdog":
        return "watchdog"
    return RECEIVERS.get(labels.get("severity"), f"no receiver for severity {labels!r}")


def test_the_configuration_passes_amtools_check(monitoring):
    checked = run([require("amtool"), "check-config", "alertmanager.yml"], cwd=monitoring)

    assert "SUCCESS" in checked.stdout, checked.stdout
    assert " - 3 receivers" in checked.stdout
    assert " - 2 inhibit rules" in checked.stdout


def test_a_severity_the_tree_does_not_know_fails_the_route_test(monitoring):
    """The route test can fail: an alert whose severity no route names falls to the
    root's receiver, not the one it asks for."""
    completed = subprocess.run(
        [require("amtool"), "config", "routes", "test", "--config.file=alertmanager.yml"]
        + ["--verify.receivers=urgent", "alertname=ServiceDown", "severity=urgent"],
        cwd=monitoring,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert completed.returncode != 0
    assert "ticket" in completed.stdout


def test_a_route_to_an_undefined_receiver_fails_the_check(monitoring, tmp_path):
    broken = tmp_path / "alertmanager.yml"
    broken.write_text(
        (monitoring / "alertmanager.yml")
        .read_text()
        .replace("- receiver: page", "- receiver: pager")
    )

    completed = subprocess.run(
        [require("amtool"), "check-config", broken],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert completed.returncode != 0
    assert 'undefined receiver "pager"' in completed.stdout + completed.stderr


@contextlib.contextmanager
def every_receiver_a_webhook():
    """Alertmanager's generic webhook on loopback (alert_receivers.webhook), given to
    every receiver of the test's copy: `configure(config, secrets)` does that, and
    `received` holds what arrives."""
    with alert_receivers.webhook(TOKEN) as (url, received):

        def configure(config, secrets):
            for receiver in config["receivers"]:
                receiver["webhook_configs"] = [
                    {
                        "url": url,
                        "http_config": {"authorization": {"credentials": TOKEN}},
                        "send_resolved": True,
                    }
                ]

        yield configure, received


@contextlib.contextmanager
def alerting_stack(
    monitoring,
    tmp_path,
    service_down_after="5m",
    service_port=None,
    repeat="2s",
    configure=lambda config, secrets: None,
    slo_windows=None,
):
    """run-prometheus with the baked configurations and what the test changes in its own
    copy: seconds rather than minutes (evaluation, ServiceDown's `for`, group waits,
    repeats, and the SLO alerts' windows as `slo_windows` maps them), a free port for the
    Alertmanager, the service's port (a closed one, where nothing listens, by default),
    and the receivers as `configure(config, secrets)` changes them (as baked by
    default). Yields the Alertmanager's URL."""
    port = free_loopback_port()
    every_second(monitoring, service_port or free_loopback_port(), port)
    alerts_yml = monitoring / "alerts.yml"
    down = "      - alert: ServiceDown\n"
    text = alerts_yml.read_text()
    start = text.index(down)
    text = text[:start] + text[start:].replace("for: 5m", f"for: {service_down_after}", 1)
    alerts_yml.write_text(with_windows(text, slo_windows or {}))
    config = yaml.safe_load((monitoring / "alertmanager.yml").read_text())
    configure(config, monitoring / "secrets")
    config["route"].update(group_wait="1s", group_interval="1s")
    for route in config["route"]["routes"]:
        route.update(group_wait="1s", group_interval="1s", repeat_interval=repeat)
    (monitoring / "alertmanager.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    run([require("amtool"), "check-config", "alertmanager.yml"], cwd=monitoring)
    environ = {
        "ALERTMANAGER": str(require("alertmanager")),
        "ALERTMANAGER_PORT": str(port),
        "METRICS_BASIC_AUTH_TOKEN": TOKEN,
    }
    # With its default resend delay (1m), Prometheus 3.5 sent nothing in its first
    # 25 seconds here; with 1s it sends as soon as the alert fires.
    with run_prometheus(monitoring, tmp_path, "--rules.alert.resend-delay=1s", **environ):
        yield f"http://127.0.0.1:{port}"


def test_the_watchdog_keeps_arriving_through_prometheus_and_alertmanager(cookies, tmp_path):
    monitoring = bake(cookies) / "monitoring"
    with (
        every_receiver_a_webhook() as (configure, received),
        alerting_stack(monitoring, tmp_path, configure=configure),
    ):
        arrived = wait_for(lambda: len(received.named("Watchdog")) >= 3)
        watchdogs = [notification.raw for notification in received.named("Watchdog")]
    log = (tmp_path / "run-prometheus.log").read_text()

    assert received.rejected == [], log
    assert arrived, (received.notifications, log)
    for notification in watchdogs:
        assert notification["version"] == "4"
        assert notification["receiver"] == "watchdog"
        assert notification["status"] == "firing"
        [alert] = notification["alerts"]
        assert alert["labels"] == {"alertname": "Watchdog", "severity": "none"}
        assert alert["annotations"]["summary"].startswith("Always firing")
    assert "Alertmanager 0." in log


def test_a_deploys_silence_holds_the_services_alerts_back_until_it_expires(cookies, tmp_path):
    """The silence for a deploy (RUNBOOKS.md, Deploying): the service's alerts (ServiceDown
    here, its instance down) reach no one while it lasts and arrive once it expires; the
    Watchdog, which is no service's, keeps arriving all along."""
    project = bake(cookies)
    runbooks = (project / "RUNBOOKS.md").read_text()
    [command] = [line for line in runbooks.splitlines() if line.startswith("amtool silence add")]
    with (
        every_receiver_a_webhook() as (configure, received),
        alerting_stack(
            project / "monitoring", tmp_path, service_down_after="1s", configure=configure
        ) as alertmanager,
    ):
        arguments = shlex.split(command)[1:]
        arguments = [
            f"--alertmanager.url={alertmanager}" if a.startswith("--alertmanager.url=") else a
            for a in arguments
        ]
        arguments = ["--duration=30s" if a.startswith("--duration=") else a for a in arguments]
        run([require("amtool"), *arguments], cwd=project)
        silenced_at = time.monotonic()
        # While it lasts, with the service down: Watchdogs arrive, ServiceDown does not.
        assert wait_for(lambda: len(received.named("Watchdog")) >= 2), received.notifications
        time.sleep(max(0.0, 10 - (time.monotonic() - silenced_at)))
        during = len(received.named("ServiceDown"))
        held_for = time.monotonic() - silenced_at
        arrived = wait_for(lambda: received.named("ServiceDown"), seconds=60)
        after = time.monotonic() - silenced_at

    assert held_for < 30, "measured inside the silence"
    assert during == 0, f"ServiceDown reached its receiver {held_for:.1f}s into the silence"
    assert arrived, received.notifications
    assert after >= 30
    [notification, *_] = received.named("ServiceDown")
    assert notification.raw["receiver"] == "page"
    assert notification.job == "payments-api"


# Where alerts go, as the alert_receiver prompt chooses: the secret files each choice
# reads, and the configuration amtool must refuse without its essential setting.
SECRETS = {
    "webhook": ["alert-webhook-url", "alert-webhook-token"],
    "slack": ["slack-webhook-url"],
    "pagerduty": ["pagerduty-routing-key"],
    "opsgenie": ["opsgenie-api-key"],
    "email": ["smtp-password"],
}
INTEGRATIONS = {
    "webhook": "webhook_configs",
    "slack": "slack_configs",
    "pagerduty": "pagerduty_configs",
    "opsgenie": "opsgenie_configs",
    "email": "email_configs",
}
EMAIL = "payments-oncall@example.org"
RUNBOOKS_URL = "https://github.com/service-team/payments-api/blob/main/RUNBOOKS.md"


def receiver_answers(receiver):
    """The answers that send alerts to `receiver`."""
    if receiver == "email":
        return {
            "alert_receiver": receiver,
            "alert_email": EMAIL,
            "alert_smarthost": "smtp.example.org:587",
        }
    return {"alert_receiver": receiver}


def bake_receiver(cookies, receiver, **answers):
    return bake(cookies, **receiver_answers(receiver), **answers)


def secret_files(config_text):
    return set(re.findall(r"^[ -]*\w+_file: (\S+)$", config_text, re.MULTILINE))


@pytest.mark.parametrize("receiver", ["none", *SECRETS])
def test_every_receiver_choice_passes_amtools_check(cookies, receiver):
    monitoring = bake_receiver(cookies, receiver) / "monitoring"
    checked = run([require("amtool"), "check-config", "alertmanager.yml"], cwd=monitoring)
    text = (monitoring / "alertmanager.yml").read_text()
    config = yaml.safe_load(text)
    integrations = {
        receiver["name"]: [key for key in receiver if key.endswith("_configs")]
        for receiver in config["receivers"]
    }

    assert "SUCCESS" in checked.stdout, checked.stdout
    expected = [INTEGRATIONS[receiver]] if receiver in INTEGRATIONS else []
    assert integrations == {"page": expected, "ticket": expected, "watchdog": []}
    # Every secret is read from a file under secrets/, which git ignores; none is written.
    assert secret_files(text) == {f"secrets/{name}" for name in SECRETS.get(receiver, [])}
    assert (monitoring / "secrets" / ".gitignore").read_text().splitlines()[-2:] == [
        "*",
        "!.gitignore",
    ]
    assert "{{ cookiecutter" not in text
    assert "{%" not in text


def test_email_goes_to_the_prompts_address_through_its_relay(cookies):
    monitoring = bake_receiver(cookies, "email") / "monitoring"
    config = yaml.safe_load((monitoring / "alertmanager.yml").read_text())

    assert config["global"] == {
        "smtp_smarthost": "smtp.example.org:587",
        "smtp_from": EMAIL,
        "smtp_auth_username": EMAIL,
        "smtp_auth_password_file": "secrets/smtp-password",
    }
    for receiver in config["receivers"][:2]:
        assert receiver["email_configs"] == [{"to": EMAIL, "send_resolved": True}]


# What each receiver cannot go without, and amtool's word for its absence.
ESSENTIAL = {
    "webhook": ("url_file", "one of url or url_file must be configured"),
    "slack": ("api_url_file", "no Slack API URL"),
    "pagerduty": ("routing_key_file", "missing service or routing key in PagerDuty config"),
    "opsgenie": ("api_key_file", "no global OpsGenie API Key set"),
    "email": ("to", "missing to address in email config"),
}


@pytest.mark.parametrize("receiver", list(ESSENTIAL))
def test_a_broken_receiver_fails_amtools_check(cookies, tmp_path, receiver):
    monitoring = bake_receiver(cookies, receiver) / "monitoring"
    key, complaint = ESSENTIAL[receiver]
    config = yaml.safe_load((monitoring / "alertmanager.yml").read_text())
    del config["receivers"][0][INTEGRATIONS[receiver]][0][key]
    broken = tmp_path / "alertmanager.yml"
    broken.write_text(yaml.safe_dump(config))

    completed = subprocess.run(
        [require("amtool"), "check-config", broken],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert completed.returncode != 0
    assert complaint in completed.stdout + completed.stderr


@pytest.mark.parametrize("receiver", list(SECRETS))
def test_a_missing_secret_stops_run_prometheus_with_its_name(cookies, tmp_path, receiver):
    """Neither Alertmanager nor amtool looks for a secret file before it sends a
    notification (amtool's check above passes without one): run-prometheus does, and
    refuses to start while one is missing or empty, naming it."""
    monitoring = bake_receiver(cookies, receiver) / "monitoring"
    *present, missing = SECRETS[receiver]
    for name in present:
        (monitoring / "secrets" / name).write_text("a secret")
    env = {
        **os.environ,
        "PROMETHEUS": str(require("prometheus")),
        "ALERTMANAGER": str(require("alertmanager")),
        "ALERTMANAGER_PORT": str(free_loopback_port()),
        "PROMETHEUS_PORT": str(free_loopback_port()),
        "PROMETHEUS_DATA": str(tmp_path / "data"),
        "METRICS_BASIC_AUTH_TOKEN": TOKEN,
    }

    outcomes = []
    for content in (None, ""):
        if content is not None:
            (monitoring / "secrets" / missing).write_text(content)
        completed = subprocess.run(
            [monitoring / "run-prometheus"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        outcomes.append((completed.returncode, completed.stdout, completed.stderr))

    for returncode, stdout, stderr in outcomes:
        assert returncode == 1
        assert stderr == (
            f"run-prometheus: alertmanager.yml reads secrets/{missing}, which is missing, "
            "empty or unreadable: create it (README.md, Where alerts go)\n"
        )
        assert "Prometheus" not in stdout, "nothing started"


def point(config, integrations, field, value):
    """Set `field` of every receiver's `integrations` (pagerduty_configs, say)."""
    for receiver in config["receivers"]:
        for integration in receiver.get(integrations, []):
            integration[field] = value


@contextlib.contextmanager
def vendor(receiver, tmp_path):
    """The stand-in for the vendor of `receiver`, and how to point the baked receivers at
    it: `configure(config, secrets)` writes the secrets and, where the vendor's address is
    not a secret, changes it in the test's copy (as an account in another region would)."""
    if receiver == "webhook":
        with alert_receivers.webhook(TOKEN) as (url, received):

            def configure(config, secrets):
                (secrets / "alert-webhook-url").write_text(url + "\n")
                (secrets / "alert-webhook-token").write_text(TOKEN)

            yield configure, received
    elif receiver == "slack":
        with alert_receivers.slack() as (url, received):

            def configure(config, secrets):
                (secrets / "slack-webhook-url").write_text(url)

            yield configure, received
    elif receiver == "pagerduty":
        key = "R0UT1NGKEY0123456789abcdefABCDEF"
        with alert_receivers.pagerduty(key) as (url, received):

            def configure(config, secrets):
                (secrets / "pagerduty-routing-key").write_text(key)
                point(config, "pagerduty_configs", "url", url)

            yield configure, received
    elif receiver == "opsgenie":
        key = "eb243592-faa2-4ba2-a551q-1afdf565c889"
        with alert_receivers.opsgenie(key) as (url, received):

            def configure(config, secrets):
                (secrets / "opsgenie-api-key").write_text(key)
                point(config, "opsgenie_configs", "api_url", url)

            yield configure, received
    elif receiver == "email":
        ca, certificate, key = certificates(tmp_path)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(certificate, key)
        password = "relay-password"
        with alert_receivers.smtp_relay(tls, (EMAIL, password)) as (relay, received):

            def configure(config, secrets):
                (secrets / "smtp-password").write_text(password)
                config["global"]["smtp_smarthost"] = relay
                point(config, "email_configs", "tls_config", {"ca_file": str(ca)})

            yield configure, received


@contextlib.contextmanager
def switchable_metrics():
    """A metrics endpoint that fails (503) until `up` is set, then answers."""
    up = threading.Event()

    class Handler(StandIn):
        def do_GET(self):
            body = b"# TYPE stand_in gauge\nstand_in 1\n" if up.is_set() else b"down\n"
            status = 200 if up.is_set() else 503
            self.answer(status, body, [("Content-Type", "text/plain; version=0.0.4")])

    with serving(Handler) as server:
        yield server.server_address[1], up


@pytest.mark.parametrize("receiver", list(SECRETS))
def test_a_page_reaches_the_chosen_receiver_and_then_its_resolution(cookies, tmp_path, receiver):
    """Each alert_receiver choice, with its vendor's stand-in: the service's instance
    down pages once, in the vendor's format, naming the service, with the summary and the
    runbook's link; once it is back, one resolved notification follows."""
    monitoring = bake_receiver(cookies, receiver) / "monitoring"
    with (
        switchable_metrics() as (port, up),
        vendor(receiver, tmp_path) as (configure, received),
        alerting_stack(
            monitoring,
            tmp_path,
            service_down_after="1s",
            service_port=port,
            repeat="1h",
            configure=configure,
        ),
    ):
        fired = wait_for(lambda: received.named("ServiceDown", "firing"))
        up.set()
        resolved = wait_for(lambda: received.named("ServiceDown", "resolved"))
        time.sleep(3)  # time for a duplicate to arrive, were one sent
    log = (tmp_path / "run-prometheus.log").read_text()

    assert received.rejected == [], log
    assert fired, (received.notifications, log)
    assert resolved, (received.notifications, log)
    [firing] = received.named("ServiceDown", "firing")
    [resolution] = received.named("ServiceDown", "resolved")
    for notification in (firing, resolution):
        assert notification.job == "payments-api"
        assert "Prometheus cannot scrape an instance of payments-api." in notification.text
        assert notification.runbook_url == f"{RUNBOOKS_URL}#servicedown"
        assert notification.urgent in (True, None), "a page, where the vendor says"


def test_none_keeps_alerts_in_alertmanager(cookies, tmp_path):
    """alert_receiver=none: the page reaches Alertmanager, routed to `page`, which sends it
    nowhere."""
    monitoring = bake_receiver(cookies, "none") / "monitoring"
    with alerting_stack(monitoring, tmp_path, service_down_after="1s") as alertmanager:
        alerts = lambda: [  # noqa: E731
            alert
            for alert in alertmanager_alerts(alertmanager)
            if alert["labels"]["alertname"] == "ServiceDown"
        ]
        arrived = wait_for(alerts)
        time.sleep(2)
    log = (tmp_path / "run-prometheus.log").read_text()

    assert arrived, log
    [alert] = arrived
    assert [receiver["name"] for receiver in alert["receivers"]] == ["page"]
    assert "Notify for alerts failed" not in log


@pytest.mark.parametrize("receiver", list(SECRETS))
def test_a_fast_burn_pages_once_resolves_once_and_servicedown_holds_back_the_rest(
    cookies, project_python, tmp_path, receiver
):
    """A real service under gunicorn, its errors scraped by Prometheus, its alerts through
    Alertmanager to each vendor's stand-in: serving only errors trips the fast-burn page
    (the SLO's windows cut from 1h and 5m to 40s and 20s); it arrives once, naming the
    service, the objective, the summary and the runbook, while the tickets of the same
    objective are held back; served well again, one resolution follows. Then the service
    stops: ServiceDown pages, and the same service's alerts still firing are inhibited
    by it. It is long because ServiceDown must hold back the burn alerts the first part
    left firing, so both parts run on one service, Prometheus and Alertmanager, and each
    vendor's notification is checked field by field."""
    project = bake_with_views(cookies, FAILING, **receiver_answers(receiver))
    monitoring = project / "monitoring"
    tickets = ("AvailabilityBudgetBurn1d", "AvailabilityBudgetBurn3d")
    with (
        serve(project, project_python, tmp_path, METRICS_BASIC_AUTH_TOKEN=TOKEN) as service,
        vendor(receiver, tmp_path) as (configure, received),
        alerting_stack(
            monitoring,
            tmp_path,
            service_down_after="1s",
            service_port=service.port,
            repeat="1h",
            configure=configure,
            slo_windows=SHORT_SLO_WINDOWS,
        ) as alertmanager,
    ):
        burn = "AvailabilityBudgetBurn1h"
        paged = load_until(service, "/fail", lambda: received.named(burn, "firing"))
        held_tickets = wait_for(
            lambda: (
                {
                    alert["labels"]["alertname"]
                    for alert in alertmanager_alerts(alertmanager)
                    if alert["labels"]["alertname"] in tickets and alert["status"]["inhibitedBy"]
                }
                == set(tickets)
            ),
            seconds=30,
        )
        resolved = load_until(service, "/", lambda: received.named(burn, "resolved"))
        time.sleep(3)  # time for a duplicate to arrive, were one sent
        service.stop()
        down = wait_for(lambda: received.named("ServiceDown", "firing"))
        inhibited = wait_for(
            lambda: [
                alert
                for alert in alertmanager_alerts(alertmanager)
                if alert["status"]["inhibitedBy"]
            ]
        )
        alerts = alertmanager_alerts(alertmanager)
    log = (tmp_path / "run-prometheus.log").read_text()

    assert received.rejected == [], log
    assert paged, (received.notifications, log)
    assert resolved, (received.notifications, log)
    [page] = received.named(burn, "firing")
    [resolution] = received.named(burn, "resolved")
    for notification in (page, resolution):
        assert notification.urgent in (True, None), "a page, where the vendor says"
        assert notification.job == "payments-api"
        # The objective: a label where the vendor's payload carries labels, and in the
        # summary everywhere.
        assert notification.slo in ("availability", None)
        assert "payments-api is burning its availability error budget 14.4 times too fast." in (
            notification.text
        )
        assert notification.runbook_url == f"{RUNBOOKS_URL}#availabilitybudgetburn"
    # The tickets of the same objective fired too (their windows also hold only errors)
    # and were held back by the page: none reached anyone.
    assert held_tickets, alerts
    assert [n for n in received.notifications if n.alertname in tickets] == []
    if receiver == "webhook":
        assert page.raw["receiver"] == "page"

    assert down, (received.notifications, log)
    [servicedown] = received.named("ServiceDown", "firing")
    assert servicedown.urgent in (True, None)
    fingerprint = {a["labels"]["alertname"]: a["fingerprint"] for a in alerts}["ServiceDown"]
    held = {
        alert["labels"]["alertname"]
        for alert in inhibited
        if fingerprint in alert["status"]["inhibitedBy"]
    }
    assert "AvailabilityBudgetBurn6h" in held, alerts
    assert all(a["labels"]["job"] == "payments-api" for a in inhibited)


def load_until(service, path, condition, seconds=90):
    """Requests to `path`, a few at a time, until `condition` holds or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        for _ in range(5):
            service.request(path)
        time.sleep(0.2)
    return condition()


def post(url, payload, headers=()):
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", **dict(headers)},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.parametrize(
    ("stand_in", "path", "payload", "headers"),
    [
        (lambda: alert_receivers.webhook("t"), "", {"version": "4"}, {"Authorization": "Bearer t"}),
        (lambda: alert_receivers.webhook("t"), "", {}, {"Authorization": "Bearer wrong"}),
        (lambda: alert_receivers.slack(), "", {"username": "no text"}, {}),
        (lambda: alert_receivers.slack(), "", {"attachments": [{"title": "x"}]}, {}),
        (
            lambda: alert_receivers.pagerduty("k" * 32),
            "",
            {
                "routing_key": "k" * 32,
                "event_action": "trigger",
                "dedup_key": "d",
                "payload": {"summary": "s", "source": "x", "severity": "page"},
            },
            {},
        ),
        (
            lambda: alert_receivers.pagerduty("k" * 32),
            "",
            {"routing_key": "k" * 32, "event_action": "resolve", "dedup_key": "never"},
            {},
        ),
        (
            lambda: alert_receivers.opsgenie("key"),
            "v2/alerts",
            {"message": "m" * 131, "alias": "a", "priority": "P1"},
            {"Authorization": "GenieKey key"},
        ),
        (
            lambda: alert_receivers.opsgenie("key"),
            "v2/alerts",
            {"message": "m", "alias": "a", "priority": "P1"},
            {"Authorization": "Basic key"},
        ),
    ],
    ids=[
        "webhook-fields", "webhook-token", "slack-empty", "slack-fallback",
        "pagerduty-severity", "pagerduty-resolve", "opsgenie-message", "opsgenie-auth",
    ],
)  # fmt: skip
def test_the_stand_ins_refuse_what_their_vendor_refuses(stand_in, path, payload, headers):
    with stand_in() as (url, received):
        status = post(url + path, payload, headers)

    assert status == 400
    assert len(received.rejected) == 1
    assert received.notifications == []


def test_the_smtp_stand_in_refuses_mail_before_login_and_a_wrong_password(tmp_path):
    import smtplib

    ca, certificate, key = certificates(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(certificate, key)
    client_tls = ssl.create_default_context(cafile=ca)
    with alert_receivers.smtp_relay(tls, (EMAIL, "right")) as (relay, received):
        host, port = relay.split(":")
        with (
            smtplib.SMTP(host, int(port), timeout=10) as smtp,
            pytest.raises(smtplib.SMTPSenderRefused),
        ):
            smtp.sendmail(EMAIL, [EMAIL], b"Subject: x\r\n\r\nx")
        with smtplib.SMTP(host, int(port), timeout=10) as smtp:
            smtp.starttls(context=client_tls)
            with pytest.raises(smtplib.SMTPAuthenticationError):
                smtp.login(EMAIL, "wrong")

    # smtplib tries each mechanism offered: PLAIN, then LOGIN.
    assert (
        received.rejected == ["MAIL before AUTH"] + [f"AUTH as {EMAIL!r} with a wrong password"] * 2
    )
    assert received.notifications == []


def github_anchor(heading):
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def runbook_anchors(project):
    """The anchors of RUNBOOKS.md's headings."""
    runbooks = (project / "RUNBOOKS.md").read_text()
    return {github_anchor(h) for h in re.findall(r"^#+ (.+)$", runbooks, re.MULTILINE)}


@pytest.mark.parametrize("tracing", ["none", "otlp"])
def test_every_alert_has_a_summary_description_runbook_and_panel(cookies, tracing):
    project = bake(cookies, tracing=tracing)
    anchors = runbook_anchors(project)
    board = json.loads((project / "monitoring" / "grafana-dashboard.json").read_text())
    panels = {panel["id"] for panel in board["panels"]}
    groups = yaml.safe_load((project / "monitoring" / "alerts.yml").read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"] if "alert" in rule]

    without_panel = []
    for rule in rules:
        annotations = rule["annotations"]
        assert annotations["summary"], rule["alert"]
        assert annotations["description"], rule["alert"]
        url, _, anchor = annotations["runbook_url"].partition("#")
        assert url == RUNBOOKS_URL
        assert anchor in anchors, f"{rule['alert']}'s runbook #{anchor} is no RUNBOOKS section"
        if "dashboard" in annotations:
            path, _, panel = annotations["dashboard"].partition("?viewPanel=panel-")
            assert path == f"/d/{board['uid']}/payments-api"
            assert int(panel) in panels
        else:
            without_panel.append(rule["alert"])
    # cf-discovery's alerts are the fleet's, not the service's: the dashboard has no
    # panel of them; and the Watchdog has nothing to show.
    assert all(name == "Watchdog" or name.startswith("CloudFoundry") for name in without_panel), (
        without_panel
    )
    assert len(rules) - len(without_panel) >= (15 if tracing == "otlp" else 14)


def test_the_dashboard_links_to_the_runbooks(cookies):
    project = bake(
        cookies,
        runbooks_url="https://git.example.org/team/payments-api/RUNBOOKS.md",
        tracing="otlp",  # every panel
    )
    anchors = runbook_anchors(project)
    board = json.loads((project / "monitoring" / "grafana-dashboard.json").read_text())
    alerts = (project / "monitoring" / "alerts.yml").read_text()
    links = board["links"] + [link for panel in board["panels"] for link in panel.get("links", [])]

    targets = set()
    for link in links:
        url, _, anchor = link["url"].partition("#")
        assert url == "https://git.example.org/team/payments-api/RUNBOOKS.md"
        assert anchor in anchors
        targets.add(anchor)
    runbooks = set(re.findall(r"runbook_url: \S+#(\w+)", alerts))
    # Every runbook of an alert with a panel is linked from its panel.
    assert runbooks - targets <= {"watchdog"} | {
        r for r in runbooks if r.startswith("cloudfoundry")
    }
    assert "runbooks" in targets


def test_the_services_own_route_test_fails_when_a_severity_and_the_tree_part(
    cookies, project_python
):
    """The baked service's tests/test_alerts.py, which its CI runs with amtool: it passes
    as baked, and fails when a rule's severity or the route tree changes alone. It is long
    because it runs that test five ways on one baked copy: as baked, without amtool out of
    CI and in CI, with a severity changed, and with the route tree changed."""
    project = bake(cookies)
    monitoring = project / "monitoring"
    rules = alerts(monitoring)
    command = [
        project_python,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/test_alerts.py",
    ]

    def outcome(**environ):
        completed = subprocess.run(
            command,
            cwd=project,
            env={**os.environ, **environ},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        return completed.returncode, completed.stdout

    baked = outcome()
    without_amtool = outcome(PATH=str(project_python.parent), CI="")
    without_amtool_in_ci = outcome(PATH=str(project_python.parent), CI="true")
    alerts_yml = monitoring / "alerts.yml"
    original = alerts_yml.read_text()
    alerts_yml.write_text(original.replace("severity: page", "severity: pager", 1))
    severity_changed = outcome()
    alerts_yml.write_text(original)
    alertmanager_yml = monitoring / "alertmanager.yml"
    alertmanager_yml.write_text(
        alertmanager_yml.read_text().replace("- receiver: ticket\n", "- receiver: page\n", 1)
    )
    tree_changed = outcome()

    assert len(rules) >= 20, "every rule of alerts.yml, the SLO alerts among them"
    assert {expected_receiver(name, labels) for name, labels in rules} == {
        "page",
        "ticket",
        "watchdog",
    }
    assert baked == (0, baked[1])
    assert f"{len(rules)} passed" in baked[1]
    assert without_amtool[0] == 0
    assert f"{len(rules)} skipped" in without_amtool[1]
    assert without_amtool_in_ci[0] == 1
    assert "no amtool on PATH: install Alertmanager 0.26 or later" in without_amtool_in_ci[1]
    assert severity_changed[0] == 1
    assert "1 failed" in severity_changed[1]
    assert "[ServiceDown]" in severity_changed[1]
    assert tree_changed[0] == 1
    tickets = sum(1 for _, labels in rules if labels.get("severity") == "ticket")
    assert f"{tickets} failed" in tree_changed[1]


@pytest.mark.parametrize("receiver", ["pagerduty", "webhook"])
def test_the_prometheus_apps_alertmanager_writes_its_secrets_from_the_environment(
    cookies, tmp_path, receiver
):
    """The Prometheus app's Alertmanager sidecar (deploy/cloudfoundry.yml), whose
    secrets/ is never pushed: its command writes each secret file from the variable that
    the manifest's `cf set-env` lines name, readable by its owner only, and Alertmanager
    starts on loopback; an unset variable stops it, named."""
    monitoring = bake_receiver(cookies, receiver) / "monitoring"
    manifest = (monitoring / "deploy" / "cloudfoundry.yml").read_text()
    [app] = yaml.safe_load(manifest)["applications"]
    [sidecar] = [sidecar for sidecar in app["sidecars"] if sidecar["name"] == "alertmanager"]
    variables = re.findall(r"^#   cf set-env prometheus (\w+) \"\$\(cat secrets/", manifest, re.M)
    assert len(variables) == len(SECRETS[receiver])
    shutil.rmtree(monitoring / "secrets")
    port = free_loopback_port()
    env = {
        **os.environ,
        "ALERTMANAGER": str(require("alertmanager")),
        "ALERTMANAGER_PORT": str(port),
        "TMPDIR": str(tmp_path),
    }
    command = ["bash", "-c", sidecar["command"]]

    unset = subprocess.run(
        command, cwd=monitoring, env=env, capture_output=True, text=True, timeout=30, check=False
    )
    values = {variable: f"value of {variable}" for variable in variables}
    with subprocess.Popen(
        command, cwd=monitoring, env={**env, **values}, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            ready = wait_for(lambda: answers(f"http://127.0.0.1:{port}/-/ready"), seconds=30)
        finally:
            process.terminate()
            log = process.communicate(timeout=15)[1]

    assert unset.returncode == 1
    assert f"set {variables[0]} (cf set-env prometheus {variables[0]} ...)" in unset.stderr
    assert ready, log
    for variable, secret in zip(variables, SECRETS[receiver], strict=True):
        written = monitoring / "secrets" / secret
        assert written.read_text() == values[variable]
        assert written.stat().st_mode & 0o777 == 0o600
    prometheus_app = yaml.safe_load((monitoring / "deploy" / "prometheus-app.yml").read_text())
    [alertmanagers] = prometheus_app["alerting"]["alertmanagers"]
    assert alertmanagers["static_configs"] == [{"targets": ["127.0.0.1:9093"]}]


def answers(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
