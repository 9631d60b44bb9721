"""A real Prometheus server on loopback, scraping a baked service."""

import contextlib
import json
import os
import subprocess
import time
import urllib.parse
import urllib.request

import yaml
from standins.loopback import free_loopback_port

from .tools import require

SCRAPE_INTERVAL = "1s"


class PrometheusServer:
    def __init__(self, process, port, log):
        self.process = process
        self.url = f"http://127.0.0.1:{port}"
        self.log = log

    def get(self, path, **parameters):
        """The data of a successful answer from the HTTP API."""
        url = f"{self.url}{path}?" + urllib.parse.urlencode(parameters)
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.load(response)
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expression):
        """The result vector of an instant query."""
        return self.get("/api/v1/query", query=expression)["result"]

    def label_values(self, label, selector):
        """The values of `label` on the series `selector` matches, as Grafana asks for them."""
        return self.get(f"/api/v1/label/{label}/values", **{"match[]": selector})

    def targets(self):
        return [
            (target["labels"], target["health"], target["lastError"])
            for target in self.get("/api/v1/targets")["activeTargets"]
        ]

    def rule_health(self):
        return {
            rule["name"]: rule["health"]
            for group in self.get("/api/v1/rules")["groups"]
            for rule in group["rules"]
        }

    def wait_for(self, expression, timeout=60, between_polls=None):
        """Poll until the query returns a non-empty vector of numbers; return it.

        `between_polls`, if given, runs before each wait (to keep load going, say).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            result = self.query(expression)
            if result and all(item["value"][1] not in ("NaN", "+Inf") for item in result):
                return result
            if between_polls:
                between_polls()
            time.sleep(0.5)
        raise AssertionError(f"no result for {expression} in {timeout}s:\n{self.log.read_text()}")


@contextlib.contextmanager
def prometheus_scraping(target_port, tmp_path, jobs=None, features=(), **scrape_settings):
    """Start Prometheus scraping 127.0.0.1:`target_port`/metrics every second.

    `jobs` maps job names to their extra scrape settings (credentials, say); without it,
    one job called "service" has `scrape_settings`. `features` are Prometheus's feature
    flags to enable (exemplar-storage, say).
    """
    binary = require("prometheus")
    port = free_loopback_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": name,
                        "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
                        **settings,
                    }
                    for name, settings in (jobs or {"service": scrape_settings}).items()
                ],
            }
        )
    )
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        *(f"--enable-feature={feature}" for feature in features),
    ]
    with running_prometheus(command, port, tmp_path / "prometheus.log") as server:
        yield server


@contextlib.contextmanager
def running_prometheus(command, port, log, env=None):
    """Run `command`, a Prometheus listening on 127.0.0.1:`port`, until it is ready; stop
    it afterwards."""
    with log.open("wb") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    server = PrometheusServer(process, port, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as response,
            ):
                if response.status == 200:
                    break
            assert time.monotonic() < deadline, f"Prometheus not ready:\n{log.read_text()}"
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# The SLO alerts' windows cut from 1h and 5m, so that a page fires within a test.
SHORT_SLO_WINDOWS = {"1h": "40s", "5m": "20s"}


def every_second(monitoring, service_port, alertmanager_port):
    """Make a baked service's monitoring/prometheus.yml scrape and evaluate every second,
    scrape the service on `service_port` and send alerts to `alertmanager_port`."""
    prometheus_yml = monitoring / "prometheus.yml"
    prometheus_yml.write_text(
        prometheus_yml.read_text()
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s")
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace('"127.0.0.1:9093"', f'"127.0.0.1:{alertmanager_port}"')
        .replace('"127.0.0.1:8000"', f'"127.0.0.1:{service_port}"')
    )


def with_windows(rules, windows):
    """The text of alerts.yml `rules` with each range of `windows` (its keys) replaced
    by its value."""
    for window, seconds in windows.items():
        rules = rules.replace(f"[{window}]", f"[{seconds}]")
    return rules


def run_prometheus(monitoring, tmp_path, *arguments, **environ):
    """monitoring/run-prometheus with the Prometheus the tests use; `arguments` go to
    Prometheus."""
    port = free_loopback_port()
    env = {
        **os.environ,
        "PROMETHEUS": str(require("prometheus")),
        "PROMETHEUS_PORT": str(port),
        "PROMETHEUS_DATA": str(tmp_path / "prometheus-data"),
        # An Alertmanager only where a test asks for one (and its port): never on 9093.
        "ALERTMANAGER": "none",
        **environ,
    }
    command = [monitoring / "run-prometheus", *arguments]
    return running_prometheus(command, port, tmp_path / "run-prometheus.log", env=env)


def alertmanager_alerts(alertmanager):
    """The alerts the Alertmanager at this URL holds, from its API."""
    with urllib.request.urlopen(alertmanager + "/api/v2/alerts", timeout=10) as response:
        return json.loads(response.read())
