"""Where the alerts go: the baked monitoring/alertmanager.yml passes amtool's own check,
and amtool's route test sends every alert of alerts.yml to the receiver its severity
names (Watchdog to its dead man's switch), so that a rule's severity and the route tree
cannot change apart."""

import subprocess

import pytest
import yaml

from .conftest import bake, run
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
