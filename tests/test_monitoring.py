"""The monitoring kit uses only metrics that the running service exports."""

import re

import yaml

from .conftest import bake
from .load import SAMPLE, drive
from .service import serve

TOKEN = "monitoring-test-token"
# Metric names as they appear in PromQL; recording rules (with a colon) and Prometheus's
# own `up` are not the service's.
PROMQL_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
SERVICE_PREFIXES = ("http_server_", "process_", "app_")

FAILING_ROUTE = """

@bp.get("/fail-on-purpose")
def fail_on_purpose():
    raise RuntimeError("so that the exception counter has a sample")
"""


def names_in_rules(path):
    groups = yaml.safe_load(path.read_text())["groups"]
    expressions = [rule["expr"] for group in groups for rule in group["rules"]]
    return {
        name
        for expression in expressions
        for name in PROMQL_NAME.findall(expression)
        if ":" not in name and name.startswith(SERVICE_PREFIXES)
    }


def test_every_metric_in_the_rules_is_exported(cookies, project_python, tmp_path):
    project = bake(cookies)
    views = project / "payments_api" / "views.py"
    views.write_text(views.read_text() + FAILING_ROUTE)
    used = names_in_rules(project / "monitoring" / "alerts.yml")

    with serve(project, project_python, tmp_path, METRICS_BASIC_AUTH_TOKEN=TOKEN) as service:
        drive(service.url, ["/", "/fail-on-purpose"], 10)
        exposition = service.request(
            "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
        ).body.decode()

    exported = {match["name"] for line in exposition.splitlines() if (match := SAMPLE.match(line))}
    assert used >= {
        "http_server_requests_total",
        "http_server_request_duration_seconds_bucket",
        "http_server_exceptions_total",
        "http_server_requests_in_progress",
        "process_resident_memory_bytes",
    }
    assert used - exported == set()
