"""Where the alerts go: the baked monitoring/alertmanager.yml passes amtool's own check,
and amtool's route test sends every alert of alerts.yml to the receiver its severity
names (Watchdog to its dead man's switch), so that a rule's severity and the route tree
cannot change apart. Then the whole way, with real programs: run-prometheus starts
Prometheus and an Alertmanager, and the Watchdog keeps arriving at a webhook on loopback.
"""

import contextlib
import http.server
import json
import shlex
import subprocess
import time

import pytest
import yaml

from .conftest import bake, run
from .service import free_loopback_port, serving
from .test_monitoring import run_prometheus
from .tools import require

RECEIVERS = {"page": "page", "ticket": "ticket"}


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


def test_every_alert_goes_to_the_receiver_its_severity_names(monitoring):
    amtool = require("amtool")
    rules = alerts(monitoring)
    routed = {}
    for name, labels in rules:
        receiver = expected_receiver(name, labels)
        completed = subprocess.run(
            [amtool, "config", "routes", "test", "--config.file=alertmanager.yml"]
            + [f"--verify.receivers={receiver}", f"alertname={name}"]
            + [f"{key}={value}" for key, value in labels.items()],
            cwd=monitoring,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        routed[name] = (receiver, completed.returncode, completed.stdout.strip())

    assert len(rules) >= 20, "every rule of alerts.yml, the SLO alerts among them"
    assert {name: outcome for name, outcome in routed.items() if outcome[1] != 0} == {}
    assert {receiver for receiver, _, _ in routed.values()} == {"page", "ticket", "watchdog"}


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
def webhook_receiver():
    """Alertmanager's generic webhook, as its documentation describes the payload
    (prometheus.io/docs/alerting/latest/configuration/#webhook_config): each POST's JSON
    kept, on loopback."""
    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format, *args):
            pass

    with serving(Handler) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}/alerts", received


@contextlib.contextmanager
def alerting_stack(monitoring, tmp_path, service_down_after="5m"):
    """run-prometheus with the baked configurations and what the test changes in its own
    copy: seconds rather than minutes (evaluation, ServiceDown's `for`, group waits,
    repeats), a free port for the Alertmanager and a closed one for the service, and a
    webhook on loopback for each receiver. Yields the notifications received, and the
    Alertmanager's URL."""
    port = free_loopback_port()
    closed = free_loopback_port()  # nothing listens there: the local job is down
    prometheus_yml = monitoring / "prometheus.yml"
    prometheus_yml.write_text(
        prometheus_yml.read_text()
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s")
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace('"127.0.0.1:9093"', f'"127.0.0.1:{port}"')
        .replace('"127.0.0.1:8000"', f'"127.0.0.1:{closed}"')
    )
    alerts_yml = monitoring / "alerts.yml"
    down = "      - alert: ServiceDown\n"
    text = alerts_yml.read_text()
    start = text.index(down)
    text = text[:start] + text[start:].replace("for: 5m", f"for: {service_down_after}", 1)
    alerts_yml.write_text(text)
    with webhook_receiver() as (url, received):
        config = yaml.safe_load((monitoring / "alertmanager.yml").read_text())
        for receiver in config["receivers"]:
            receiver["webhook_configs"] = [{"url": url, "send_resolved": True}]
        config["route"].update(group_wait="1s", group_interval="1s")
        for route in config["route"]["routes"]:
            route.update(group_wait="1s", group_interval="1s", repeat_interval="2s")
        (monitoring / "alertmanager.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        run([require("amtool"), "check-config", "alertmanager.yml"], cwd=monitoring)
        environ = {
            "ALERTMANAGER": str(require("alertmanager")),
            "ALERTMANAGER_PORT": str(port),
            "METRICS_BASIC_AUTH_TOKEN": "unused",
        }
        # With its default resend delay (1m), Prometheus 3.5 sent nothing in its first
        # 25 seconds here; with 1s it sends as soon as the alert fires.
        with run_prometheus(monitoring, tmp_path, "--rules.alert.resend-delay=1s", **environ):
            yield received, f"http://127.0.0.1:{port}"


def wait_for(condition, seconds=60):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.2)
    return condition()


def named(received, alertname):
    return [
        notification
        for notification in received
        if any(alert["labels"]["alertname"] == alertname for alert in notification["alerts"])
    ]


def test_the_watchdog_keeps_arriving_through_prometheus_and_alertmanager(cookies, tmp_path):
    monitoring = bake(cookies) / "monitoring"
    with alerting_stack(monitoring, tmp_path) as (received, _):
        arrived = wait_for(lambda: len(named(received, "Watchdog")) >= 3)
        watchdogs = named(received, "Watchdog")
    log = (tmp_path / "run-prometheus.log").read_text()

    assert arrived, (received, log)
    for notification in watchdogs:
        assert notification["version"] == "4"
        assert notification["receiver"] == "watchdog"
        assert notification["status"] == "firing"
        [alert] = notification["alerts"]
        assert alert["labels"] == {"alertname": "Watchdog", "severity": "none"}
        assert alert["annotations"]["summary"].startswith("Always firing")
    assert "Alertmanager 0." in log


def test_a_deploys_silence_holds_the_services_alerts_back_until_it_expires(cookies, tmp_path):
    """The README's silence for a deploy: the service's alerts (ServiceDown here, its
    instance down) reach no one while it lasts and arrive once it expires; the Watchdog,
    which is no service's, keeps arriving all along."""
    project = bake(cookies)
    readme = (project / "README.md").read_text()
    [command] = [line for line in readme.splitlines() if line.startswith("amtool silence add")]
    with alerting_stack(project / "monitoring", tmp_path, service_down_after="1s") as (
        received,
        alertmanager,
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
        assert wait_for(lambda: len(named(received, "Watchdog")) >= 2), received
        time.sleep(max(0.0, 10 - (time.monotonic() - silenced_at)))
        during = len(named(received, "ServiceDown"))
        held_for = time.monotonic() - silenced_at
        arrived = wait_for(lambda: named(received, "ServiceDown"), seconds=60)
        after = time.monotonic() - silenced_at

    assert held_for < 30, "measured inside the silence"
    assert during == 0, f"ServiceDown reached its receiver {held_for:.1f}s into the silence"
    assert arrived, received
    assert after >= 30
    [notification, *_] = named(received, "ServiceDown")
    assert notification["receiver"] == "page"
    assert notification["alerts"][0]["labels"]["job"] == "payments-api"
