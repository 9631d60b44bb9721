"""The latency alerts when Prometheus stores the duration histogram natively: with
conversion to native histograms with custom buckets (NHCB) switched on as prometheus.yml
says, the classic `_bucket` series are gone, and the latency SLO's page fires in a real
Prometheus as it does on the classic series."""

import time

import pytest
from standins.loopback import free_loopback_port

from .baking import bake_with_views
from .prometheus_server import run_prometheus
from .service import serve

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
    arguments = ["--rules.alert.resend-delay=1s"]
    if storage == "nhcb":
        (monitoring / "prometheus.yml").write_text(switched_to_nhcb(monitoring / "prometheus.yml"))
        arguments.append("--enable-feature=native-histograms")
    alerts = monitoring / "alerts.yml"
    text = alerts.read_text()
    for window, seconds in (("1h", "40s"), ("5m", "20s")):
        text = text.replace(f"[{window}]", f"[{seconds}]")
    alerts.write_text(text)
    with serve(
        project, project_python, tmp_path, workers=4, METRICS_BASIC_AUTH_TOKEN=TOKEN
    ) as service:
        prometheus_yml = monitoring / "prometheus.yml"
        prometheus_yml.write_text(
            prometheus_yml.read_text()
            .replace("scrape_interval: 15s", "scrape_interval: 1s")
            .replace("evaluation_interval: 15s", "evaluation_interval: 1s")
            .replace('"127.0.0.1:8000"', f'"127.0.0.1:{service.port}"')
            # No Alertmanager: the alerts are read from Prometheus, and sent nowhere.
            .replace('"127.0.0.1:9093"', f'"127.0.0.1:{free_loopback_port()}"')
        )
        with run_prometheus(
            monitoring, tmp_path, *arguments, METRICS_BASIC_AUTH_TOKEN=TOKEN
        ) as prometheus:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not firing(prometheus):
                for _ in range(4):
                    service.request("/slow")
            fired = firing(prometheus)
            classic = prometheus.query("http_server_request_duration_seconds_bucket")
            native = prometheus.query("http_server_request_duration_seconds")
            p99 = prometheus.query("job_path:http_server_request_duration_seconds:p99_5m")

    assert fired, prometheus.log.read_text()[-3000:]
    assert {alert["labels"]["slo"] for alert in fired} == {"latency"}
    if storage == "nhcb":
        assert classic == [], "the classic series are kept: not the case under test"
        assert native
        assert all("histogram" in item for item in native)
    else:
        assert classic
        assert native == []
    slow = [item for item in p99 if item["metric"]["path"] == "/slow"]
    assert 0.5 < float(slow[0]["value"][1]) <= 1.0


def firing(prometheus):
    return [
        alert
        for alert in prometheus.get("/api/v1/alerts")["alerts"]
        if alert["labels"]["alertname"] == PAGE and alert["state"] == "firing"
    ]
