"""Start times under gunicorn: each counter and histogram series of the baked service
carries its `_created` in OpenMetrics, so that a Prometheus with
created-timestamp-zero-ingestion counts a new series' first requests, which a series
first seen above zero loses (the first 5xx after a deploy, say)."""

import subprocess

import pytest

from .baking import FAILING, bake_with_views
from .prometheus_server import prometheus_scraping
from .service import serve

TOKEN = "created-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OPENMETRICS = {"Accept": "application/openmetrics-text; version=1.0.0", **AUTH}
FAILURES = 7
NOT_FOUND = 5
PARSE = """
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
created = [
    sample
    for family in text_string_to_metric_families(sys.stdin.read())
    for sample in family.samples
    if sample.name.endswith("_created")
]
print(len(created))
"""


@pytest.mark.parametrize("ingestion", ["created-timestamp-zero-ingestion", None])
def test_increase_counts_a_new_series_first_requests(cookies, project_python, tmp_path, ingestion):
    """Routes first requested while Prometheus scrapes: their series are born above zero.
    With the feature, increase() at the last scrape over a window from before they were
    born is exactly what was sent; without it (the control), it is not."""
    project = bake_with_views(cookies, FAILING)
    bearer = {"authorization": {"type": "Bearer", "credentials": TOKEN}}
    features = [ingestion] if ingestion else []
    with (
        serve(
            project, project_python, tmp_path, workers=2, METRICS_BASIC_AUTH_TOKEN=TOKEN
        ) as service,
        prometheus_scraping(service.port, tmp_path, features=features, **bearer) as prometheus,
    ):
        prometheus.wait_for('http_server_requests_total{path="/_status"}')
        for _ in range(FAILURES):
            assert service.request("/fail").status == 500
        for _ in range(NOT_FOUND):
            assert service.request("/no/such/page").status == 404
        scraped = service.request("/metrics", headers=OPENMETRICS).body
        counted = {}
        for path, sent in (("/fail", FAILURES), ("unmatched", NOT_FOUND)):
            selector = f'http_server_requests_total{{path="{path}"}}'
            # Scraped since the last request: the series holds every one.
            prometheus.wait_for(f"{selector} == {sent}")
            [last] = prometheus.query(f"timestamp({selector})")
            increase = prometheus.get(
                "/api/v1/query", query=f"increase({selector}[1m])", time=last["value"][1]
            )["result"]
            # No result: one sample, from which increase() counts nothing.
            counted[path] = (sum(float(item["value"][1]) for item in increase), sent)

    if ingestion:
        assert all(got == sent for got, sent in counted.values()), counted
    else:
        assert all(got < sent for got, sent in counted.values()), counted
    parsed = subprocess.run(
        [project_python, "-c", PARSE], input=scraped, capture_output=True, timeout=30, check=True
    )
    assert int(parsed.stdout) >= 4, "both routes' counter and histogram carry a start"
    assert b"http_server_requests_created{" in scraped
