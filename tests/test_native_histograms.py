"""The latency alerts when Prometheus stores the duration histogram natively: with
conversion to native histograms with custom buckets (NHCB) switched on as prometheus.yml
says, the classic `_bucket` series are gone, and the latency SLO's page fires in a real
Prometheus as it does on the classic series."""

import os
import subprocess
import time

import pytest
from standins.loopback import free_loopback_port

from .baking import bake_with_views
from .prometheus_server import SHORT_SLO_WINDOWS, every_second, run_prometheus, with_windows
from .service import serve
from .tools import require

TOKEN = "native-histograms-token"
# A route slower than the latency objective (0.5 s by default): every request breaks it.
SLOW = """

@bp.get("/slow")
def slow():
    import time

    time.sleep(0.6)
    return {"slow": True}
"""
PAGE = "LatencyBudgetBurn1h"
# What run-prometheus says to set for the conversion on Prometheus 3.5.
NATIVE_FEATURES = "exemplar-storage,native-histograms"


def switched_to_nhcb(prometheus_yml):
    """prometheus.yml with the conversion on, as its own comment says to turn it on."""
    text = prometheus_yml.read_text()
    assert "#   convert_classic_histograms_to_nhcb: true\n" in text, "the comment moved"
    return text.replace("global:\n", "global:\n  convert_classic_histograms_to_nhcb: true\n", 1)


@pytest.mark.parametrize("storage", ["classic", "nhcb"])
def test_the_latency_page_fires_whichever_way_prometheus_stores_the_histogram(
    cookies, project_python, tmp_path, storage
):
    project = bake_with_views(cookies, SLOW)
    monitoring = project / "monitoring"
    environ = {"METRICS_BASIC_AUTH_TOKEN": TOKEN}
    if storage == "nhcb":
        (monitoring / "prometheus.yml").write_text(switched_to_nhcb(monitoring / "prometheus.yml"))
        environ["PROMETHEUS_FEATURES"] = NATIVE_FEATURES
    alerts = monitoring / "alerts.yml"
    alerts.write_text(with_windows(alerts.read_text(), SHORT_SLO_WINDOWS))
    with serve(
        project, project_python, tmp_path, workers=4, METRICS_BASIC_AUTH_TOKEN=TOKEN
    ) as service:
        # No Alertmanager on its port: the alerts are read from Prometheus.
        every_second(monitoring, service.port, free_loopback_port())
        with run_prometheus(
            monitoring, tmp_path, "--rules.alert.resend-delay=1s", **environ
        ) as prometheus:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not firing(prometheus):
                for _ in range(4):
                    service.request("/slow")
            fired = firing(prometheus)
            classic = prometheus.query("http_server_request_duration_seconds_bucket")
            native = prometheus.query("http_server_request_duration_seconds")
            # Recorded by its own group, which may not have evaluated since the second
            # scrape: waited for, the requests going on.
            p99 = prometheus.wait_for(
                'job_path:http_server_request_duration_seconds:p99_5m{path="/slow"}',
                between_polls=lambda: service.request("/slow"),
            )

    assert fired, prometheus.log.read_text()[-3000:]
    assert {alert["labels"]["slo"] for alert in fired} == {"latency"}
    if storage == "nhcb":
        assert classic == [], "the classic series are kept: not the case under test"
        assert native
        assert all("histogram" in item for item in native)
    else:
        assert classic
        assert native == []
    [slow] = p99
    assert 0.5 < float(slow["value"][1]) <= 1.0


def firing(prometheus):
    return [
        alert
        for alert in prometheus.get("/api/v1/alerts")["alerts"]
        if alert["labels"]["alertname"] == PAGE and alert["state"] == "firing"
    ]


def test_run_prometheus_refuses_the_conversion_beside_start_times(cookies, tmp_path):
    """Prometheus 3.5 scrapes nothing when it converts histograms and ingests start
    times (prometheus#15137), saying so only in its log: run-prometheus stops first."""
    monitoring = bake_with_views(cookies, SLOW) / "monitoring"
    (monitoring / "prometheus.yml").write_text(switched_to_nhcb(monitoring / "prometheus.yml"))
    completed = subprocess.run(
        [monitoring / "run-prometheus"],
        env={
            **os.environ,
            "PROMETHEUS": str(require("prometheus")),
            "ALERTMANAGER": "none",
            "PROMETHEUS_PORT": str(free_loopback_port()),
            "PROMETHEUS_DATA": str(tmp_path / "data"),
            "METRICS_BASIC_AUTH_TOKEN": TOKEN,
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert completed.returncode == 1
    assert completed.stderr == (
        "run-prometheus: prometheus.yml converts histograms to native ones, which Prometheus"
        " 3.5 cannot do with created-timestamp-zero-ingestion (prometheus#15137): set"
        f" PROMETHEUS_FEATURES={NATIVE_FEATURES}\n"
    )
    assert "Prometheus" not in completed.stdout, "nothing started"
