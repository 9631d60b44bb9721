"""Traces (_tracing.py, _span_queue.py, _tracing_settings.py): the settings, checked;
a span per request, received by an OTLP receiver that decodes it with
opentelemetry-proto; one trace id in the span, the response and the exemplar; and every
span counted by what became of it, whatever the collector does."""

import json
import random
import subprocess
import sys
import time
import tracemalloc
import uuid

import pytest
import requests
import urllib3
from flask import Flask
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanKind
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import REGISTRY
from prometheus_client.openmetrics import parser as openmetrics_parser

from flask_cf_prometheus import ConfigError, Metrics
from flask_cf_prometheus._request_span import RequestTracer
from flask_cf_prometheus._span_queue import SpanQueue, backoff_seconds
from flask_cf_prometheus._tracing import _SAMPLERS, _parent
from flask_cf_prometheus._tracing_settings import tracing_settings

from .standins.loopback import StandIn, serving
from .standins.otlp import Receiver, receiving

TOKEN = "token"
# The trace a view's span links to (test_a_view_annotates_its_requests_span...).
LINKED_TRACE = "5b8aa5a2d2c872e8321cf37308d69df2"


def settings(**environ):
    return tracing_settings(environ)


def test_defaults_send_to_opentelemetrys_default_collector():
    found = settings()

    assert found["endpoint"] == "http://localhost:4318/v1/traces"
    assert found["headers"] == {}
    assert (found["sampler"], found["ratio"]) == ("parentbased_always_on", 1.0)
    assert (found["timeout_seconds"], found["queue"], found["batch"]) == (10.0, 2048, 512)


@pytest.mark.parametrize(
    "environ", [{"OTEL_SDK_DISABLED": "true"}, {"OTEL_TRACES_EXPORTER": "none"}]
)
def test_opentelemetrys_own_switches_turn_tracing_off(environ):
    assert tracing_settings(environ) is None


def test_the_endpoint_in_the_order_opentelemetry_gives():
    vcap = json.dumps(
        {
            "user-provided": [
                {
                    "name": "collector",
                    "tags": ["otlp"],
                    "credentials": {
                        "endpoint": "https://otlp.example.com:4318/",
                        "headers": {"Authorization": "Bearer s3cret, with comma"},
                    },
                }
            ]
        }
    )
    bound = settings(VCAP_SERVICES=vcap)
    base = settings(VCAP_SERVICES=vcap, OTEL_EXPORTER_OTLP_ENDPOINT="http://c:4318/")
    whole = settings(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://c:4318",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="http://t:1/traces",
    )

    assert bound["endpoint"] == "https://otlp.example.com:4318/v1/traces"
    assert bound["headers"] == {"Authorization": "Bearer s3cret, with comma"}
    assert (base["endpoint"], base["headers"]) == ("http://c:4318/v1/traces", {})
    assert whole["endpoint"] == "http://t:1/traces"


def test_secret_headers_from_a_file(tmp_path):
    path = tmp_path / "headers"
    path.write_text("x-api-key=s%3Dcret, tenant = blue\n")

    found = settings(OTEL_EXPORTER_OTLP_HEADERS_FILE=str(path))

    assert found["headers"] == {"x-api-key": "s=cret", "tenant": "blue"}


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://c"},
            "OTEL_EXPORTER_OTLP_ENDPOINT='ftp://c' must be an http or https URL with a host",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:99999"},
            "OTEL_EXPORTER_OTLP_ENDPOINT='http://c:99999' must be an http or https URL with a host",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://user:s3cret@c"},
            "OTEL_EXPORTER_OTLP_ENDPOINT must not hold credentials: send them as a header"
            " (OTEL_EXPORTER_OTLP_HEADERS, or the file OTEL_EXPORTER_OTLP_HEADERS_FILE names)",
        ),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL='grpc' must be one of: http/protobuf (any case)",
        ),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"},
            "OTEL_TRACES_SAMPLER_ARG='1.5' must be a number from 0 to 1",
        ),
        (
            {"OTEL_EXPORTER_OTLP_TIMEOUT": "10"},
            "OTEL_EXPORTER_OTLP_TIMEOUT='10' must be a whole number from 100 to 60000",
        ),
        (
            {"OTEL_EXPORTER_OTLP_HEADERS": "authorization"},
            "OTEL_EXPORTER_OTLP_HEADERS has 'authorization': each entry must be key=value,"
            " the key a token",
        ),
        (
            {"OTEL_EXPORTER_OTLP_HEADERS": "x-key=s3cret\r\nInjected: 1"},
            "OTEL_EXPORTER_OTLP_HEADERS has 'x-key' with a value that is not printable",
        ),
        (
            {"OTEL_EXPORTER_OTLP_HEADERS": "x-key=%ff%fe"},
            "OTEL_EXPORTER_OTLP_HEADERS has 'x-key' with a value that is not printable",
        ),
        (
            {"OTEL_RESOURCE_ATTRIBUTES": "team"},
            "OTEL_RESOURCE_ATTRIBUTES has 'team': each entry must be key=value, the key a token",
        ),
        (
            {"OTEL_EXPORTER_OTLP_HEADERS": "a=b", "OTEL_EXPORTER_OTLP_HEADERS_FILE": "/x"},
            "OTEL_EXPORTER_OTLP_HEADERS and OTEL_EXPORTER_OTLP_HEADERS_FILE are both set: set one",
        ),
        (
            {"OTEL_EXPORTER_OTLP_HEADERS_FILE": "/nonexistent/headers"},
            "OTEL_EXPORTER_OTLP_HEADERS_FILE='/nonexistent/headers' is not a file",
        ),
        (
            {"VCAP_SERVICES": "{"},
            "VCAP_SERVICES must be JSON, as Cloud Foundry sets it",
        ),
        (
            {
                "VCAP_SERVICES": json.dumps(
                    {"a": [{"name": "one", "tags": ["otlp"]}, {"name": "two", "tags": ["otlp"]}]}
                )
            },
            "VCAP_SERVICES has 2 services tagged 'otlp' (one, two): bind one",
        ),
        (
            {
                "VCAP_SERVICES": json.dumps(
                    {"a": [{"name": "one", "tags": ["otlp"], "credentials": {"endpoint": 7}}]}
                )
            },
            "the service 'one' (tagged 'otlp')'s endpoint must be an http or https URL",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_it_and_never_a_secret(environ, message):
    with pytest.raises(ConfigError) as error:
        tracing_settings(environ)

    assert str(error.value) == message
    assert "s3cret" not in str(error.value)


def test_an_app_made_without_tracing_says_once_it_ignores_opentelemetrys_variables(
    monkeypatch, caplog
):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "payments")
    app = Flask(__name__)
    app.config.update(TESTING=True, METRICS_BASIC_AUTH_TOKEN=TOKEN)

    Metrics(app, service="plain", version="1")
    response = app.test_client().get("/", headers={"traceparent": traceparent("01")})

    assert [record.getMessage() for record in caplog.records] == [
        "OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME ignored: this service was made"
        " without tracing (README.md, Traces)"
    ]
    assert "traceresponse" not in response.headers


def traceparent(flags, trace_id=None, span_id="b7ad6b7169203331"):
    return f"00-{trace_id or uuid.uuid4().hex}-{span_id}-{flags}"


@pytest.fixture(scope="module")
def receiver():
    receiver = Receiver()
    with receiving(receiver) as server:
        receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
        yield receiver


class Downstream:
    """A service the app calls: it keeps the traceparent of each call."""

    def __init__(self):
        self.traceparents = []

    def handler(downstream):  # noqa: N805 (the handler class reads its downstream)
        class Handler(StandIn):
            def do_GET(self):
                downstream.traceparents.append(self.headers.get("traceparent"))
                self.answer(200, b"{}", [("Content-Type", "application/json")])

        return Handler


@pytest.fixture(scope="module")
def downstream():
    downstream = Downstream()
    with serving(downstream.handler()) as server:
        downstream.url = f"http://127.0.0.1:{server.server_address[1]}/"
        yield downstream


@pytest.fixture(scope="module")
def traced_app(receiver, downstream):
    """An app that traces to the receiver. OpenTelemetry's global tracer provider is set
    once a process: one app serves every test of this module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        patch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=blue")
        patch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        patch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test")
        patch.setenv("CF_INSTANCE_INDEX", "3")
        app = Flask(__name__)
        app.config.update(TESTING=True, METRICS_BASIC_AUTH_TOKEN=TOKEN)

        @app.get("/items/<int:item_id>")
        def item(item_id):
            return {"item": item_id}

        @app.get("/boom")
        def boom():
            return {}, 503

        @app.get("/annotated")
        def annotated():
            span = trace.get_current_span()
            span.set_attribute("app.order", 42)
            span.set_attribute("app.unsendable", object())
            tags, checked = ["new"], {"app.items": 3}
            span.set_attribute("app.tags", tags)
            span.add_event("order.checked", checked)
            # Changed once given: the span keeps what it was given, as the SDK's does.
            tags.append("late")
            checked["app.items"] = 4
            span.add_link(SpanContext(int(LINKED_TRACE, 16), 1, is_remote=True))
            return {}

        @app.get("/raises")
        def raises():
            raise LookupError("no such order")

        @app.get("/call/requests")
        def call_with_requests():
            return {"status": requests.get(downstream.url, timeout=5).status_code}

        @app.get("/call/urllib3")
        def call_with_urllib3():
            return {"status": urllib3.request("GET", downstream.url, timeout=5).status}

        Metrics(app, service="traced", version="2.0", tracing=True)
        yield app


def spans_of(receiver, trace_id, timeout=10, count=1):
    """The spans of this trace the receiver holds, once it holds `count` (None after
    `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [span for span in receiver.received() if span["trace_id"] == trace_id]
        if len(found) >= count:
            return found
        time.sleep(0.02)
    return None


def test_a_request_continues_its_trace_in_a_span_named_by_its_route(traced_app, receiver):
    trace_id = uuid.uuid4().hex
    response = traced_app.test_client().get(
        "/items/7", headers={"traceparent": traceparent("01", trace_id)}
    )

    [span] = spans_of(receiver, trace_id)
    assert span["name"] == "GET /items/<int:item_id>"
    assert span["parent_span_id"] == "b7ad6b7169203331"
    assert span["attributes"]["http.route"] == "/items/<int:item_id>"
    assert span["attributes"]["http.response.status_code"] == 200
    assert response.headers["traceresponse"] == f"00-{trace_id}-{span['span_id']}-01"
    assert span["resource"]["service.name"] == "traced"
    assert span["resource"]["service.version"] == "2.0"
    assert span["resource"]["cloudfoundry.app.instance.id"] == "3"
    assert span["resource"]["deployment.environment.name"] == "test"
    uuid.UUID(span["resource"]["service.instance.id"])
    assert receiver.requests[-1][0] == "/v1/traces"
    assert receiver.requests[-1][1]["x-tenant"] == "blue"


def test_a_request_without_traceparent_starts_a_trace_the_exemplar_carries(traced_app, receiver):
    client = traced_app.test_client()
    response = client.get("/boom")
    _, trace_id, span_id, flags = response.headers["traceresponse"].split("-")

    [span] = spans_of(receiver, trace_id)
    assert (span["span_id"], span["parent_span_id"]) == (span_id, "")
    assert int(flags, 16) & 1  # sampled (and, new in W3C level 2, its id random: 03)
    assert span["name"] == "GET /boom"
    assert span["attributes"]["error.type"] == "503"
    scrape = client.get(
        "/metrics",
        headers={"Authorization": f"Bearer {TOKEN}", "Accept": "application/openmetrics-text"},
    ).text
    exemplars = [
        sample.exemplar.labels
        for family in openmetrics_parser.text_string_to_metric_families(scrape)
        for sample in family.samples
        if sample.exemplar and ("path", "/boom") in sample.labels.items()
    ]
    assert exemplars == [{"trace_id": trace_id, "span_id": span_id}]


@pytest.mark.parametrize("client", ["requests", "urllib3"])
def test_an_outgoing_call_carries_the_trace_on(traced_app, receiver, downstream, client):
    """The call is a client span, child of the request's; the service called is sent
    the client span as its parent."""
    trace_id = uuid.uuid4().hex
    traced_app.test_client().get(
        f"/call/{client}", headers={"traceparent": traceparent("01", trace_id)}
    )

    found = spans_of(receiver, trace_id, count=2)
    spans = {span["kind"]: span for span in found}
    server, call = spans[SpanKind.SPAN_KIND_SERVER], spans[SpanKind.SPAN_KIND_CLIENT]
    assert len(found) == 2, "one client span, not one a library"
    assert call["parent_span_id"] == server["span_id"]
    assert downstream.traceparents[-1] == f"00-{trace_id}-{call['span_id']}-01"


@pytest.mark.parametrize("flags", ["01", "03"])
def test_a_random_trace_ids_flag_is_carried_on_as_opentelemetrys_propagator_carries_it(
    traced_app, receiver, downstream, flags
):
    """W3C level 2: a parent whose trace id is random (flags 03) says so to the client
    and to the service called, as a span made by the SDK's own tracer would."""
    trace_id = uuid.uuid4().hex
    response = traced_app.test_client().get(
        "/call/requests", headers={"traceparent": traceparent(flags, trace_id)}
    )

    spans = {span["kind"]: span for span in spans_of(receiver, trace_id, count=2)}
    server, call = spans[SpanKind.SPAN_KIND_SERVER], spans[SpanKind.SPAN_KIND_CLIENT]
    assert response.headers["traceresponse"] == f"00-{trace_id}-{server['span_id']}-{flags}"
    assert downstream.traceparents[-1] == f"00-{trace_id}-{call['span_id']}-{flags}"


@pytest.mark.parametrize("flags", ["00", "01", "02", "03", "80", "ff"])
@pytest.mark.parametrize("tracestate", [None, "vendor=a1,other=b2"])
def test_a_traceparent_is_read_as_opentelemetrys_propagator_reads_it(flags, tracestate):
    header = f"00-{uuid.uuid4().hex}-b7ad6b7169203331-{flags}"
    carrier = {"traceparent": header} | ({"tracestate": tracestate} if tracestate else {})
    environ = {f"HTTP_{name.upper()}": value for name, value in carrier.items()}

    expected = trace.get_current_span(TraceContextTextMapPropagator().extract(carrier))
    assert _parent(environ) == expected.get_span_context()
    assert _parent(environ).trace_flags == int(flags, 16)


def test_a_view_annotates_its_requests_span_and_an_exception_is_an_event(traced_app, receiver):
    """What a view sets on trace.get_current_span() is sent: attributes, an event, a
    link. A value OpenTelemetry cannot send is cleared, as the SDK's span clears it,
    rather than fail the batch."""
    client = traced_app.test_client()
    trace_id, failed_id = uuid.uuid4().hex, uuid.uuid4().hex
    client.get("/annotated", headers={"traceparent": traceparent("01", trace_id)})
    with pytest.raises(LookupError):
        client.get("/raises", headers={"traceparent": traceparent("01", failed_id)})

    [span] = spans_of(receiver, trace_id)
    assert span["attributes"]["app.order"] == 42
    assert span["attributes"].get("app.unsendable") is None
    assert span["attributes"]["app.tags"] == ["new"]
    assert [(event["name"], event["attributes"]) for event in span["events"]] == [
        ("order.checked", {"app.items": 3})
    ]
    assert span["links"] == [LINKED_TRACE]
    [failed] = spans_of(receiver, failed_id)
    [event] = failed["events"]
    assert event["name"] == "exception"
    assert event["attributes"]["exception.type"] == "LookupError"
    assert event["attributes"]["exception.message"] == "no such order"
    assert "raise LookupError" in event["attributes"]["exception.stacktrace"]
    assert failed["status_code"] == Status.STATUS_CODE_ERROR


def test_a_continued_trace_keeps_its_tracestate(traced_app, receiver):
    trace_id = uuid.uuid4().hex
    traced_app.test_client().get(
        "/items/9",
        headers={"traceparent": traceparent("01", trace_id), "tracestate": "vendor=a1,other=b2"},
    )

    [span] = spans_of(receiver, trace_id)
    assert span["trace_state"] == "vendor=a1,other=b2"


@pytest.mark.parametrize(
    "header",
    [
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",  # no flags
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",  # upper case
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # invalid trace id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # invalid parent
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # version ff
    ],
)
def test_a_malformed_traceparent_starts_a_new_trace(traced_app, receiver, header):
    """As the log line's trace id is read: the span, the log line and the response agree."""
    response = traced_app.test_client().get("/items/10", headers={"traceparent": header})

    _, trace_id, span_id, _ = response.headers["traceresponse"].split("-")
    assert trace_id not in header.lower()
    [span] = spans_of(receiver, trace_id)
    assert (span["span_id"], span["parent_span_id"]) == (span_id, "")


def test_an_unsampled_trace_gets_no_span_nor_exemplar(traced_app, receiver):
    trace_id = uuid.uuid4().hex
    response = traced_app.test_client().get(
        "/items/8", headers={"traceparent": traceparent("00", trace_id)}
    )

    assert response.headers["traceresponse"].startswith(f"00-{trace_id}-")
    assert response.headers["traceresponse"].endswith("-00")
    assert spans_of(receiver, trace_id, timeout=0.5) is None


def test_a_scrape_gets_no_span(traced_app, receiver):
    response = traced_app.test_client().get(
        "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
    )

    assert response.status_code == 200
    assert "traceresponse" not in response.headers


class Kept:
    """What a RequestTracer queues."""

    def put(self, span):
        self.span = span


@pytest.mark.parametrize("limit", [0, 1, 3, None])
def test_a_views_attributes_are_kept_as_the_sdks_span_keeps_them(limit):
    """500 random runs of set_attribute, set_attributes, add_event and add_link, past a
    limit (none: the default, 128): the attributes, events and links sent, their order
    (which a limit evicts first) and the counts dropped are the SDK's span's. Keys that
    are not strings, and values OpenTelemetry cannot send, among them."""
    chooser = random.Random(20261206)
    keys, unsendable = ["a", "b", "c", "d", "e", "", None, 5], object()
    values = [1, "x", 2.5, True, [1, 2], ["x", "y"], None, unsendable]
    limits = SpanLimits(max_span_attributes=limit, max_events=limit, max_links=limit)
    provider = TracerProvider(span_limits=limits)
    for _ in range(500):
        queue = Kept()
        tracer = RequestTracer(provider, queue, __name__, "always_on", 1.0)
        tracer.limits = limits
        ours = tracer.start_span("GET", None, {"http.request.method": "GET"})
        theirs = provider.get_tracer(__name__).start_span(
            "GET", attributes={"http.request.method": "GET"}
        )
        for _ in range(chooser.randint(0, 8)):
            choice, key, value = chooser.random(), chooser.choice(keys), chooser.choice(values)
            if choice < 0.5:
                for span in (ours, theirs):
                    span.set_attribute(key, list(value) if isinstance(value, list) else value)
            elif choice < 0.7:
                given = {chooser.choice(keys[:5]): chooser.choice(values) for _ in range(2)}
                for span in (ours, theirs):
                    span.set_attributes(dict(given))
            elif choice < 0.85:
                for span in (ours, theirs):
                    span.add_event(f"event {key}", {"app.value": value}, timestamp=1)
            else:
                linked = SpanContext(chooser.getrandbits(128), 1, is_remote=True)
                for span in (ours, theirs):
                    span.add_link(linked, {"app.value": value})
        ours.end()
        theirs.end()
        sent = queue.span.readable()
        assert list(sent.attributes.items()) == list(theirs.attributes.items())
        assert sent.dropped_attributes == theirs.dropped_attributes
        assert [(event.name, dict(event.attributes)) for event in sent.events] == [
            (event.name, dict(event.attributes)) for event in theirs.events
        ]
        assert [link.context for link in sent.links] == [link.context for link in theirs.links]
        assert (sent.dropped_events, sent.dropped_links) == (
            theirs.dropped_events,
            theirs.dropped_links,
        )


def test_a_span_holds_no_more_than_its_limits_while_a_view_adds_to_it():
    """Evicted as they are added, as the SDK's span evicts them: a view adding events,
    links and attributes in a loop holds at most the limits' worth (3 here), not all
    it added until the span ends."""
    limits = SpanLimits(max_span_attributes=3, max_events=3, max_links=3)
    queue = Kept()
    tracer = RequestTracer(TracerProvider(span_limits=limits), queue, __name__, "always_on", 1.0)
    tracer.limits = limits
    span = tracer.start_span("GET", None, {})
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for number in range(20_000):
            value = f"{number:01000d}"  # 1 kB each: 60 MB if all were held
            span.set_attribute(f"app.{number}", value)
            span.add_event("app.event", {"app.value": value})
            span.add_link(SpanContext(number + 1, 1, is_remote=True), {"app.value": value})
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    span.end()

    assert held < 1_000_000, held
    sent = queue.span.readable()
    assert (len(sent.attributes), len(sent.events), len(sent.links)) == (3, 3, 3)
    assert (sent.dropped_attributes, sent.dropped_events, sent.dropped_links) == (
        19_997,
        19_997,
        19_997,
    )


@pytest.mark.parametrize("sampler", sorted(_SAMPLERS))
@pytest.mark.parametrize("ratio", [0.0, 0.01, 0.5, 1.0])
def test_a_requests_span_is_sampled_as_the_sdks_sampler_samples(sampler, ratio):
    """Random trace ids, and those at the ratio's bound, with no parent, a sampled one
    and an unsampled one."""
    sdk = _SAMPLERS[sampler](ratio)
    tracer = RequestTracer(TracerProvider(), None, __name__, sampler, ratio)
    bound = round(ratio * 2**64)
    draw = random.Random(f"{sampler} {ratio}")
    edges = [(draw.getrandbits(64) << 64) | low for low in (bound - 1, bound, bound + 1)]
    trace_ids = [draw.getrandbits(128) for _ in range(2000)] + edges
    for trace_id in (trace_id for trace_id in trace_ids if 0 < trace_id < 2**128):
        for flags in (None, TraceFlags.SAMPLED, TraceFlags.DEFAULT):
            parent = None if flags is None else SpanContext(trace_id, 7, True, TraceFlags(flags))
            context = (
                None if parent is None else trace.set_span_in_context(NonRecordingSpan(parent))
            )
            decision = sdk.should_sample(context, trace_id, "GET", trace.SpanKind.SERVER).decision
            assert tracer.sampled(parent, trace_id) == decision.is_sampled(), (trace_id, flags)


def spans_counted():
    return {
        outcome: REGISTRY.get_sample_value("tracing_spans_total", {"outcome": outcome}) or 0
        for outcome in ("exported", "queue_full", "export_failed", "shutdown")
    }


def queue_to(server, timeout, **sizes):
    """A SpanQueue whose exporter sends to the receiver `server` serves."""
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    return SpanQueue(OTLPSpanExporter(endpoint=endpoint, timeout=timeout), **sizes)


def finish_spans(queue, count):
    provider = TracerProvider()
    provider.add_span_processor(queue)
    tracer = provider.get_tracer(__name__)
    for number in range(count):
        tracer.start_span(f"span {number}").end()


def test_every_span_is_counted_whatever_the_collector_does():
    before = spans_counted()
    refusing, slow = Receiver(status=503), Receiver(delay_seconds=5)
    with receiving(refusing) as refused, receiving(slow) as slowed:
        # A queue of 4 spans, sent only when flushed: 6 finished at once leave 2 dropped;
        # the collector refuses the 4 it is sent.
        queue = queue_to(refused, timeout=1, size=4, batch=5, delay_seconds=60)
        finish_spans(queue, 6)
        assert queue.force_flush(5000)
        # A collector slower than the stop's budget: what is queued is counted lost, and
        # the stop keeps to its budget.
        stopping = queue_to(slowed, timeout=3, size=100, batch=10, delay_seconds=0.01)
        finish_spans(stopping, 25)
        started = time.monotonic()
        stopping.shutdown(0.5)
        stopped_in = time.monotonic() - started

    after = spans_counted()
    counted = {outcome: after[outcome] - before[outcome] for outcome in after}
    assert counted == {"exported": 0, "queue_full": 2, "export_failed": 4, "shutdown": 25}
    assert stopped_in < 1.5


FORKING_WORKER = """
import os
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from flask_cf_prometheus._span_queue import SpanQueue

exporter = InMemorySpanExporter()
queue = SpanQueue(exporter, size=10, batch=10, delay_seconds=60)
provider = TracerProvider()
provider.add_span_processor(queue)
tracer = provider.get_tracer("forking")
tracer.start_span("before the fork").end()
child = os.fork()
tracer.start_span("child" if child == 0 else "parent").end()
sent = queue.force_flush(5000)
names = [span.name for span in exporter.get_finished_spans()]
if child == 0:
    os._exit(0 if sent and names == ["child"] else 1)
_, status = os.waitpid(child, 0)
print(sent, names, os.waitstatus_to_exitcode(status))
"""


def test_a_process_forked_from_a_worker_sends_its_own_spans():
    """A view's own fork: the child's spans are sent by a thread of its own, as the SDK's
    BatchSpanProcessor sends them, and what the parent had queued is the parent's. In
    a fresh interpreter, never a fork of pytest's."""
    forked = subprocess.run(
        [sys.executable, "-c", FORKING_WORKER],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert forked.stdout.split("\n")[0] == "True ['before the fork', 'parent'] 0"


class Untellable:
    """A value a view might set whose text cannot be had: OpenTelemetry cannot send it."""

    def __str__(self):
        raise ValueError("no text")


def test_a_span_that_cannot_be_sent_is_dropped_alone_and_says_why(caplog):
    """A request's span holding a value OpenTelemetry cannot encode: the export thread
    logs one line, counts it failed, and sends the rest of its batch. A status that is
    none is ignored, as the SDK's span ignores it, and the span sent."""
    before = spans_counted()
    receiver = Receiver()
    with receiving(receiver) as server:
        queue = queue_to(server, timeout=1, size=10, batch=10, delay_seconds=60)
        tracer = RequestTracer(TracerProvider(), queue, __name__, "always_on", 1.0)
        names = ("GET /good", "GET /bad", "GET /no-status")
        spans = [tracer.start_span(name, None, {}) for name in names]
        spans[1].set_attribute("app.untellable", Untellable())
        spans[2].set_status(None)  # ignored, as the SDK's span ignores it
        for span in spans:
            span.end()
        assert queue.force_flush(5000)
        queue.shutdown(1)

    after = spans_counted()
    assert after["export_failed"] - before["export_failed"] == 1
    assert after["exported"] - before["exported"] == 2
    assert [span["name"] for span in receiver.received()] == ["GET /good", "GET /no-status"]
    assert [
        record.getMessage() for record in caplog.records if "not sent" in record.getMessage()
    ] == ["A span not sent, one of its values unsendable: ValueError('no text')"]


def test_after_a_failed_export_the_queue_waits_before_encoding_more():
    """A collector that refuses: the first full batch is sent at once; the batches that
    fill up in the second after it wait for the backoff, not sent (nor encoded) one by
    one; a flush still sends them."""
    before = spans_counted()
    refusing = Receiver(status=400)  # not retried by the exporter: fails at once
    with receiving(refusing) as refused:
        queue = queue_to(refused, timeout=1, size=1000, batch=1, delay_seconds=0.01)
        finish_spans(queue, 1)
        deadline = time.monotonic() + 5
        while not refusing.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        finish_spans(queue, 40)  # 40 full batches at once, then a third of the backoff
        time.sleep(0.3)
        sent_during_backoff = len(refusing.requests)
        assert queue.force_flush(5000)
        queue.shutdown(1)

    after = spans_counted()
    assert sent_during_backoff == 1
    assert len(refusing.requests) == 41
    assert after["export_failed"] - before["export_failed"] == 41


def test_the_backoff_doubles_to_its_last_and_stays_there():
    waits = [backoff_seconds(failures) for failures in (0, 1, 2, 3, 5, 6, 7, 100, 100_000)]
    assert waits == [0.0, 1.0, 2.0, 4.0, 16.0, 30.0, 30.0, 30.0, 30.0]
