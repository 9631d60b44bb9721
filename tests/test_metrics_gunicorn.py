"""Metrics of the baked service under real gunicorn: exact, monotonic, compact, valid."""

import subprocess
import time

import pytest

from .baking import bake
from .load import Scraper, drive, total
from .prometheus_server import prometheus_scraping
from .service import kill_a_worker, serve
from .tools import require

TOKEN = "integration-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_REQUESTS = 50
REQUESTS_PER_PHASE = 4 * 100
# Per live worker: counter, histogram and three live gauge files; plus one aggregate
# counter and histogram file for all the dead.
FILES_PER_WORKER = 5
AGGREGATE_FILES = 2


@pytest.fixture
def project(cookies):
    return bake(cookies)


# gthread workers: a worker's threads scrape at once, through one reader of the files.
@pytest.mark.parametrize("threads", ["1", "4"], ids=["sync", "gthread"])
def test_totals_exact_and_monotonic_across_recycling_and_sigkill(
    project, project_python, tmp_path, threads
):
    environ = {
        "GUNICORN_MAX_REQUESTS": str(MAX_REQUESTS),
        "GUNICORN_THREADS": threads,
        "METRICS_BASIC_AUTH_TOKEN": TOKEN,
    }
    with serve(project, project_python, tmp_path, workers=2, **environ) as service:
        # The readiness probes before the load are requests too.
        baseline = total(
            service.request("/metrics", headers=AUTH).body.decode(), "http_server_requests_total"
        )
        scrapers = [
            Scraper(service, "/metrics", "http_server_requests_total", headers=AUTH)
            for _ in range(2)
        ]
        for scraper in scrapers:
            scraper.start()
        first = drive(service.url, ["/", "/_status", "/no/such/page"], REQUESTS_PER_PHASE // 4)
        victim = kill_a_worker(service)
        service.wait_for_replacement(victim, workers=2)
        second = drive(service.url, ["/", "/_status"], REQUESTS_PER_PHASE // 4)
        for scraper in scrapers:
            scraper.stop()

        final = service.request("/metrics", headers=AUTH)
        directory = service.tmpdir / "prometheus-multiproc"
        db_files = sorted(path.name for path in directory.glob("*.db"))
        booted = service.log_text().count("Booting worker with pid")

    assert (first[1], second[1]) == (0, 0), "no client request may fail"
    completed = first[0] + second[0]
    assert completed == 2 * REQUESTS_PER_PHASE
    served = baseline + completed
    assert total(final.body.decode(), "http_server_requests_total") == served
    assert total(final.body.decode(), "http_server_request_duration_seconds_count") == served
    for scraper in scrapers:
        assert scraper.failures == []
        # At most the one scrape that the SIGKILLed worker was serving loses its connection.
        assert scraper.dropped <= 1
        assert len(scraper.totals) > 10
        assert all(b >= a for a, b in zip(scraper.totals, scraper.totals[1:], strict=False))
    # Recycling happened many times, yet files track live workers only.
    assert booted >= 2 + completed // (2 * MAX_REQUESTS)
    assert len(db_files) <= 2 * FILES_PER_WORKER + AGGREGATE_FILES, db_files
    assert "counter_aggregate.db" in db_files
    # The signal reached a live worker, not one that had just exited by itself.
    assert f"Worker (pid:{victim}) was sent SIGKILL!" in service.log_text()
    assert "Traceback" not in service.log_text()


def test_promtool_accepts_the_exposition(project, project_python, tmp_path):
    with serve(project, project_python, tmp_path, METRICS_BASIC_AUTH_TOKEN=TOKEN) as service:
        drive(service.url, ["/", "/no/such/page"], 20)
        text = service.request("/metrics", headers=AUTH)
        openmetrics = service.request(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0", **AUTH}
        )

    assert text.headers["Content-Type"].startswith("text/plain")
    assert openmetrics.headers["Content-Type"].startswith("application/openmetrics-text")
    # promtool reads the classic text format; prometheus_client's OpenMetrics parser is strict.
    result = subprocess.run(
        [require("promtool"), "check", "metrics"], input=text.body, capture_output=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    parse = (
        "import sys\n"
        "from prometheus_client.openmetrics.parser import text_string_to_metric_families\n"
        "families = list(text_string_to_metric_families(sys.stdin.read()))\n"
        "print(sorted(family.name for family in families))\n"
    )
    parsed = subprocess.run(
        [project_python, "-c", parse],
        input=openmetrics.body.decode(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert parsed.returncode == 0, parsed.stderr
    assert "'http_server_requests'" in parsed.stdout


def test_worker_process_figures_and_app_info(project, project_python, tmp_path):
    with serve(project, project_python, tmp_path, METRICS_BASIC_AUTH_TOKEN=TOKEN) as service:
        pids = {str(pid) for pid in service.worker_pids()}
        drive(service.url, ["/"], 100)
        # Each worker samples its figures once it has loaded the app, which the one that
        # answered readiness has, but the other may still be doing on a busy machine.
        deadline = time.monotonic() + 30
        while (memory_pids := memory_sample_pids(body := service.metrics_text(TOKEN))) != pids:
            assert time.monotonic() < deadline, f"{memory_pids} sampled, workers {pids}"
            time.sleep(0.2)

    assert memory_pids == pids
    assert total(body, "process_open_fds") > 0
    assert total(body, "process_cpu_seconds_total") > 0
    assert 'app_info{name="payments-api",python_version="' in body


def memory_sample_pids(body):
    return {
        line.split('pid="')[1].split('"')[0]
        for line in body.splitlines()
        if line.startswith("process_resident_memory_bytes{")
    }


def test_prometheus_scrapes_the_service(project, project_python, tmp_path):
    bearer = {"authorization": {"type": "Bearer", "credentials": TOKEN}}
    with (
        serve(project, project_python, tmp_path, METRICS_BASIC_AUTH_TOKEN=TOKEN) as service,
        prometheus_scraping(service.port, tmp_path, **bearer) as prometheus,
    ):
        prometheus.wait_for('up{job="service"} == 1')
        drive(service.url, ["/", "/_status"], 50)

        requests = prometheus.wait_for('sum(http_server_requests_total{path="/"}) >= 100')
        # A rate over 10 s goes to zero (and the quantile to NaN) 10 s after the load, so
        # requests go on between polls.
        quantile = prometheus.wait_for(
            "histogram_quantile(0.9, sum by (le) "
            "(rate(http_server_request_duration_seconds_bucket[10s])))",
            between_polls=lambda: drive(service.url, ["/"], 1, clients=1),
        )

    assert float(requests[0]["value"][1]) >= 100
    assert 0 < float(quantile[0]["value"][1]) < 10
