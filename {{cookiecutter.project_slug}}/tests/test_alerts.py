"""Every alert of monitoring/alerts.yml goes to the receiver its severity names, by
Alertmanager's own route test: a rule's severity and the route tree of
monitoring/alertmanager.yml cannot change apart."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

MONITORING = Path(__file__).resolve().parent.parent / "monitoring"
RULES = [
    rule
    for group in yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    for rule in group["rules"]
    if "alert" in rule
]


@pytest.fixture(scope="module")
def amtool():
    found = shutil.which("amtool")
    if found is None:
        message = "no amtool on PATH: install Alertmanager 0.26 or later (prometheus.io/download)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def expected_receiver(rule):
    # The Watchdog goes to the dead man's switch; every other alert by its severity,
    # each severity's receiver named after it.
    return "watchdog" if rule["alert"] == "Watchdog" else rule["labels"]["severity"]


@pytest.mark.parametrize("rule", RULES, ids=[rule["alert"] for rule in RULES])
def test_alert_reaches_the_receiver_its_severity_names(amtool, rule):
    labels = {"alertname": rule["alert"], **rule.get("labels", {})}
    completed = subprocess.run(
        [amtool, "config", "routes", "test", "--config.file=alertmanager.yml"]
        + [f"--verify.receivers={expected_receiver(rule)}"]
        + [f"{name}={value}" for name, value in labels.items()],
        cwd=MONITORING,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr
