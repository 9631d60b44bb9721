"""Exemplars of the baked service under real gunicorn, stored by a real Prometheus: each
bucket's newest sampled trace, from every worker, the recycled and the killed included."""

import math
import os
import subprocess
import time

import pytest

from .baking import bake
from .load import drive
from .prometheus_server import prometheus_scraping
from .service import kill_a_worker, serve, wait_for
from .tools import require

TOKEN = "exemplar-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OPENMETRICS = {"Accept": "application/openmetrics-text; version=1.0.0", **AUTH}
# prometheus_client's default buckets, which the kit's request duration histogram has.
BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
PARSE = """
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
print(json.dumps([
    [sample.labels, sample.exemplar.labels, sample.exemplar.value]
    for family in text_string_to_metric_families(sys.stdin.read())
    for sample in family.samples
    if sample.exemplar
]))
"""


class Traces:
    """Requests with traceparent headers: sampled ones, whose trace ids may come back as
    exemplars, and unsampled or malformed ones, whose never may."""

    def __init__(self):
        self.sampled, self.not_sampled = set(), set()
        self._number = 0

    def send(self, service, path):
        self._number += 1
        trace_id = os.urandom(16).hex()
        span_id = os.urandom(8).hex()
        kind = self._number % 4
        header = {
            0: f"00-{trace_id}-{span_id}-01",
            1: f"00-{trace_id}-{span_id}-00",
            2: f"00-{trace_id.upper()}-{span_id}-01",  # malformed: upper-case hex
            3: f"00-{trace_id}-{span_id}-01-extra",
        }[kind]
        (self.sampled if kind == 0 else self.not_sampled).add(trace_id)
        response = service.request(path, headers={"traceparent": header})
        assert response.status in (200, 404), response.body


def in_its_bucket(value, le):
    """Whether `value` falls in the bucket whose upper bound is `le` and no lower one."""
    bound = math.inf if le == "+Inf" else float(le)
    below = max((other for other in BOUNDS if other < bound), default=-math.inf)
    return below < value <= bound


@pytest.fixture
def project(cookies):
    return bake(cookies)


def test_prometheus_stores_each_workers_exemplars_through_recycling_and_sigkill(
    project, project_python, tmp_path
):
    traces = Traces()
    environ = {"GUNICORN_MAX_REQUESTS": "30", "METRICS_BASIC_AUTH_TOKEN": TOKEN}
    with serve(project, project_python, tmp_path, workers=4, **environ) as service:
        # Served before Prometheus starts, by workers that are all gone by then: their
        # exemplars can reach it only through the folds.
        first_workers = set(service.worker_pids())
        for _ in range(80):
            traces.send(service, "/no/such/page")
        kill_a_worker(service)
        assert wait_for(
            lambda: (
                drive(service.url, ["/"], 10)[1] == 0
                and not first_workers & set(service.worker_pids())
            ),
            seconds=90,
        ), "the first workers outlived the recycling"
        scraped = service.request("/metrics", headers=OPENMETRICS).body
        text = service.request("/metrics", headers=AUTH).body

        bearer = {"authorization": {"type": "Bearer", "credentials": TOKEN}}
        with prometheus_scraping(
            service.port, tmp_path, features=["exemplar-storage"], **bearer
        ) as prometheus:
            prometheus.wait_for('up{job="service"} == 1')
            # Served while Prometheus scrapes, as workers recycle and one is killed.
            for round in range(3):
                for _ in range(40):
                    traces.send(service, "/")
                if round == 1:
                    kill_a_worker(service)
                time.sleep(1.5)
            time.sleep(3)
            found = prometheus.get(
                "/api/v1/query_exemplars",
                query="http_server_request_duration_seconds_bucket",
                start=time.time() - 600,
                end=time.time(),
            )
        log = service.log_text()

    stored = [
        (series["seriesLabels"], exemplar) for series in found for exemplar in series["exemplars"]
    ]
    paths = {labels["path"] for labels, _ in stored}
    assert paths == {"/", "unmatched"}, found
    for labels, exemplar in stored:
        assert exemplar["labels"]["trace_id"] in traces.sampled, exemplar
        assert set(exemplar["labels"]) == {"trace_id", "span_id"}
        assert in_its_bucket(float(exemplar["value"]), labels["le"]), (labels, exemplar)
    assert log.count("was sent SIGKILL") >= 2
    assert "Traceback" not in log

    # prometheus_client's strict OpenMetrics parser reads the service's scrape, and
    # promtool its text format, which has no exemplars.
    parsed = subprocess.run(
        [project_python, "-c", PARSE], input=scraped, capture_output=True, timeout=30, check=True
    )
    assert parsed.stdout.count(b"trace_id") >= 1
    assert b"trace_id" not in text
    checked = subprocess.run(
        [require("promtool"), "check", "metrics"], input=text, capture_output=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
