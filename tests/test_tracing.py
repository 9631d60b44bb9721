"""Traces of a service made with tracing=otlp, under real gunicorn, sent to an OTLP/HTTP
receiver on loopback that decodes them with opentelemetry-proto: one span for each
sampled request, through recycling, a SIGKILL and a SIGTERM; and a collector down or
slow that costs the requests nothing and the stop no more than its budget."""

import json
import os
import shutil
import statistics
import subprocess
import time

import pytest
from standins.loopback import free_loopback_port
from standins.otlp import Receiver, receiving

from .baking import bake
from .service import kill_a_worker, serve

TOKEN = "tracing-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OPENMETRICS = {"Accept": "application/openmetrics-text; version=1.0.0", **AUTH}
# gunicorn's default graceful timeout in the baked service (GUNICORN_GRACEFUL_TIMEOUT).
GRACEFUL_SECONDS = 8
# The exemplars of a scrape, by prometheus_client's parser: [trace_id, span_id] of each
# but those of the health checks, which the test did not send.
EXEMPLARS = """
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
print(json.dumps([
    [sample.exemplar.labels["trace_id"], sample.exemplar.labels["span_id"]]
    for family in text_string_to_metric_families(sys.stdin.read())
    for sample in family.samples
    if sample.exemplar and sample.labels["path"] != "/_status"
]))
"""
# tracing_spans_total by outcome, summed over a stopped service's metric files.
SPANS_COUNTED = """
import json, sys
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
registry = CollectorRegistry()
MultiProcessCollector(registry, path=sys.argv[1])
print(json.dumps({
    sample.labels["outcome"]: sample.value
    for family in registry.collect() if family.name == "tracing_spans"
    for sample in family.samples if sample.name == "tracing_spans_total"
}))
"""


@pytest.fixture
def project(cookies):
    return bake(cookies, tracing="otlp")


class Requests:
    """Requests sent, each with what its response said: sampled traceparents, unsampled
    ones and none, to a route and to no route."""

    def __init__(self):
        self.sent = []  # one dict a request

    def send(self, service):
        number = len(self.sent)
        trace_id, parent_id = os.urandom(16).hex(), os.urandom(8).hex()
        kind = ("sampled", "unsampled", "none")[number % 3]
        headers = {
            "sampled": {"traceparent": f"00-{trace_id}-{parent_id}-01"},
            "unsampled": {"traceparent": f"00-{trace_id}-{parent_id}-00"},
            "none": {},
        }[kind]
        path = "/" if number % 4 else "/no/such/page"
        response = service.request(path, headers=headers)
        assert response.status in (200, 404), response.body
        version, answered_trace, span_id, flags = response.headers["traceresponse"].split("-")
        self.sent.append(
            {
                "kind": kind,
                "path": path,
                "parent_id": parent_id if kind != "none" else "",
                "trace_id": answered_trace,
                "span_id": span_id,
                "sampled": bool(int(flags, 16) & 1),  # 03: sampled, its id random
                "request_id": response.headers["X-Request-Id"],
            }
        )
        if kind != "none":
            assert answered_trace == trace_id  # continued, not restarted

    def sampled(self):
        return {request["trace_id"]: request for request in self.sent if request["sampled"]}


def access_lines(log):
    """The service's access log lines, by request id."""
    lines = {}
    for line in log.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry["logger"] == "gunicorn.access":
                lines[entry["request_id"]] = entry
    return lines


def pid_of(request, lines, spans):
    """The pid of the worker that served a request: its log line's, or its span's."""
    if request["request_id"] in lines:
        return lines[request["request_id"]]["pid"]
    span = spans.get(request["trace_id"])
    return span["resource"]["process.pid"] if span else None


def serve_traced(project, python, tmp_path, endpoint, **environ):
    return serve(
        project,
        python,
        tmp_path,
        workers=4,
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        METRICS_BASIC_AUTH_TOKEN=TOKEN,
        **{"OTEL_BSP_SCHEDULE_DELAY": "100", **environ},
    )


def test_each_sampled_request_is_one_span_through_recycling_sigkill_and_sigterm(
    project, tracing_python, tmp_path
):
    receiver, requests = Receiver(), Requests()
    with receiving(receiver) as server:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        with serve_traced(
            project, tracing_python, tmp_path, endpoint, GUNICORN_MAX_REQUESTS="30"
        ) as service:
            for _ in range(120):
                requests.send(service)
            killed = kill_a_worker(service)
            for _ in range(120):
                requests.send(service)
            scraped = service.request("/metrics", headers=OPENMETRICS).body
            stopping = time.monotonic()
            service.stop()
            stopped_in = time.monotonic() - stopping
            log = service.log_text()
            booted = service.booted_pids()
        spans = [
            span for span in receiver.received() if span["attributes"]["url.path"] != "/_status"
        ]

    lines = access_lines(log)
    sampled = requests.sampled()
    assert len(booted) > 5, "workers recycled"
    assert f"Worker (pid:{killed}) was sent SIGKILL" in log
    assert stopped_in < GRACEFUL_SECONDS
    assert "Traceback" not in log
    # Every request's log line carries the trace its response named, but those of the
    # killed worker that had answered and not yet logged.
    unlogged = [request for request in requests.sent if request["request_id"] not in lines]
    assert len(unlogged) <= 2, unlogged
    for request in requests.sent:
        if request not in unlogged:
            assert lines[request["request_id"]]["trace_id"] == request["trace_id"]
    assert {request["kind"] for request in sampled.values()} == {"sampled", "none"}

    # One span a sampled request, none for the others; only the killed worker's lost.
    by_trace = {span["trace_id"]: span for span in spans}
    assert len(by_trace) == len(spans), "a request sent twice"
    assert set(by_trace) <= set(sampled)
    lost = set(sampled) - set(by_trace)
    assert {pid_of(sampled[trace_id], lines, by_trace) for trace_id in lost} <= {killed, None}
    assert len(by_trace) >= len(sampled) - 30
    for trace_id, span in by_trace.items():
        request = sampled[trace_id]
        route = "/" if request["path"] == "/" else None
        assert span["name"] == (f"GET {route}" if route else "GET"), span
        assert span["attributes"].get("http.route") == route
        assert span["span_id"] == request["span_id"]
        assert span["parent_span_id"] == request["parent_id"]
        assert span["resource"]["process.pid"] in (pid_of(request, lines, by_trace), killed)

    # Each worker an instance of its own.
    instances = {}
    for span in spans:
        instances.setdefault(span["resource"]["process.pid"], set()).add(
            span["resource"]["service.instance.id"]
        )
    assert len(instances) > 4
    assert all(len(ids) == 1 for ids in instances.values())
    assert len(set.union(*instances.values())) == len(instances)

    # The exemplars are the spans: trace and span ids of sampled requests.
    read = subprocess.run(
        [tracing_python, "-c", EXEMPLARS], input=scraped, capture_output=True, check=True
    )
    exemplars = json.loads(read.stdout)
    assert exemplars
    for trace_id, span_id in exemplars:
        assert sampled[trace_id]["span_id"] == span_id
        assert trace_id in by_trace or trace_id in lost


def spans_counted(service, python, tmp_path):
    """tracing_spans_total by outcome from a stopped service's metrics directory."""
    copy = tmp_path / "metrics-copy"
    shutil.copytree(service.tmpdir / "prometheus-multiproc", copy)
    read = subprocess.run(
        [python, "-c", SPANS_COUNTED, copy], capture_output=True, text=True, check=True
    )
    return json.loads(read.stdout)


@pytest.mark.parametrize("collector", ["down", "slow"])
def test_a_collector_down_or_slow_costs_requests_nothing_and_a_stop_its_budget(
    project, tracing_python, tmp_path, collector
):
    """Three services in turns, 500 requests each after 50 to warm up: tracing off, one
    sending to a collector that answers at once, and one whose collector is down or
    answers after 30 s. The last one's median latency stays within 10 % of the second's:
    the collector's state costs a request nothing. What tracing itself costs (the
    request's span and its encoding, every request sampled) is bounded against tracing
    off. The spans that could not be sent are counted, and the stop keeps to its budget."""
    healthy, slow = Receiver(), Receiver(delay_seconds=30)  # the exporter waits 10 s
    with receiving(healthy) as healthy_server, receiving(slow) as slow_server:
        port = slow_server.server_address[1] if collector == "slow" else free_loopback_port()
        # Connection errors are retried until the export's timeout: a shorter one shows
        # the failures while the test runs.
        timeout = {"OTEL_EXPORTER_OTLP_TIMEOUT": "1000"} if collector == "down" else {}
        answering = f"http://127.0.0.1:{healthy_server.server_address[1]}"
        for name in ("off", "healthy", "tested"):
            (tmp_path / name).mkdir()
        with (
            serve_traced(
                project, tracing_python, tmp_path / "off", answering, OTEL_SDK_DISABLED="true"
            ) as off,
            serve_traced(project, tracing_python, tmp_path / "healthy", answering) as sending,
            serve_traced(
                project, tracing_python, tmp_path / "tested", f"http://127.0.0.1:{port}", **timeout
            ) as tested,
        ):
            services = (off, sending, tested)
            latencies = {service: [] for service in services}
            for number in range(550):
                for turn in range(3):
                    service = services[(number + turn) % 3]
                    start = time.perf_counter()
                    assert service.request("/").status == 200
                    if number >= 50:
                        latencies[service].append(time.perf_counter() - start)
            stopping = time.monotonic()
            tested.stop()
            stopped_in = time.monotonic() - stopping
            log = tested.log_text()

    median = {service: statistics.median(times) for service, times in latencies.items()}
    assert median[tested] <= 1.10 * median[sending], median
    # Measured at 1.04 to 1.08 on a 2-core VM; 1.10 to 1.16 when each request made the
    # SDK's span (BENCHMARKS.md, Traces).
    assert median[sending] <= 1.20 * median[off], median
    assert stopped_in < GRACEFUL_SECONDS
    assert "Traceback" not in log
    counted = spans_counted(tested, tracing_python, tmp_path)
    served = len(access_lines(log))
    assert served >= 550
    assert counted.get("exported", 0) == 0, counted
    assert sum(counted.values()) == served, counted
    if collector == "slow":
        assert counted["shutdown"] > 0, counted
        assert slow.received(), "the slow collector was sent spans"
    else:
        assert counted["export_failed"] > 0, counted
    assert healthy.received(), "the healthy collector was sent spans"
