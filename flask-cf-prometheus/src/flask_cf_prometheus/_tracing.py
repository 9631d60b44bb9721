"""Traces: a span for each request, sent over OTLP/HTTP from each worker (the kit's
`otlp` extra).

OpenTelemetry is set up in each process that serves, after gunicorn's fork
(gunicorn.py's post_worker_init), never in the master: a batch thread or a
`service.instance.id` made before a fork would be shared by every worker. Each worker
is an instance of its own; the resource says which app, instance and worker it is.

The request's span continues its `traceparent` or starts a trace, and the sampler says
whether it is recorded. Its trace id is the one the request's log line, its
`traceresponse` header and, when sampled, its exemplar carry (_middleware.py). Outgoing
calls made with requests or urllib3 carry the context on. Metrics stay with
prometheus_client: OpenTelemetry's Prometheus exporter has no multiprocess mode.
"""

import json
import os
import threading
import uuid

from opentelemetry import context, trace
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider, sampling
from opentelemetry.trace import SpanContext, TraceFlags, TraceState

from ._exemplars import SAMPLED_TRACE_KEY
from ._logs import RULE_KEY, TRACE_ID_KEY
from ._metrics import STANDARD_METHODS
from ._middleware import trace_from
from ._request_span import RequestTracer
from ._span_queue import SpanQueue

_SAMPLERS = {
    "always_on": lambda ratio: sampling.ALWAYS_ON,
    "always_off": lambda ratio: sampling.ALWAYS_OFF,
    "traceidratio": sampling.TraceIdRatioBased,
    "parentbased_always_on": lambda ratio: sampling.ParentBased(sampling.ALWAYS_ON),
    "parentbased_always_off": lambda ratio: sampling.ParentBased(sampling.ALWAYS_OFF),
    "parentbased_traceidratio": lambda ratio: sampling.ParentBased(
        sampling.TraceIdRatioBased(ratio)
    ),
}

# What init_app configured in this process, and what start() made of it in this pid.
_configured = None
_started = None  # (pid, tracer, span queue)
_starting = threading.Lock()
# The traceresponse header's flags, by a span's trace flags (sampled, random trace id).
FLAGS_TEXT = ("00", "01", "02", "03")


def _forget_started():
    global _started
    _started = None


# A process forked from one that traces makes its own tracer (and export thread).
os.register_at_fork(after_in_child=_forget_started)


def configure(settings, service, version):
    """Keep what tracing runs with; the tracer is made in the process that serves."""
    global _configured
    _configured = settings, service, version


def tracer():
    """This process's tracer of requests (_request_span.py), made at its first use in
    this pid."""
    if _started is None:
        with _starting:  # two first requests at once, in threads, start it once
            if _started is None:
                start()
    return _started[1]


def start():
    """Make this process's tracer: in a gunicorn worker once it has booted, or at the
    first request in a process that serves otherwise (`flask run`, a test client)."""
    global _started
    if _configured is None:
        return
    settings, service, version = _configured
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter(
        endpoint=settings["endpoint"],
        headers=settings["headers"],
        timeout=settings["timeout_seconds"],
        compression=Compression.Gzip
        if settings["compression"] == "gzip"
        else Compression.NoCompression,
    )
    queue = SpanQueue(
        exporter,
        size=settings["queue"],
        batch=settings["batch"],
        delay_seconds=settings["delay_seconds"],
    )
    provider = TracerProvider(
        sampler=_SAMPLERS[settings["sampler"]](settings["ratio"]),
        resource=resource(settings, service, version),
        shutdown_on_exit=False,  # stop() sends what is queued, within its budget
    )
    provider.add_span_processor(queue)  # the spans the SDK makes
    for instrumentor in (RequestsInstrumentor(), URLLib3Instrumentor()):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=provider)
    _started = (
        os.getpid(),
        RequestTracer(provider, queue, __name__, settings["sampler"], settings["ratio"]),
        queue,
    )


def stop(timeout_seconds):
    """Send what this worker has queued, waiting at most `timeout_seconds`."""
    if _started is not None and _started[0] == os.getpid():
        _started[2].shutdown(timeout_seconds)


def resource(settings, service, version, environ=os.environ):
    """Who sends the spans: the service, this worker (an instance id of its own), and
    on Cloud Foundry the app, its instance, space and org."""
    attributes = {
        **settings["resource"],
        "service.name": settings["service_name"] or service,
        "service.version": version,
        "service.instance.id": str(uuid.uuid4()),
        "process.pid": os.getpid(),
    }
    try:
        application = json.loads(environ.get("VCAP_APPLICATION") or "{}")
    except (ValueError, RecursionError):  # checked at start-up; not here
        application = {}
    if not isinstance(application, dict):
        application = {}
    for attribute, key in (
        ("cloudfoundry.app.id", "application_id"),
        ("cloudfoundry.app.name", "application_name"),
        ("cloudfoundry.space.id", "space_id"),
        ("cloudfoundry.space.name", "space_name"),
        ("cloudfoundry.org.id", "organization_id"),
        ("cloudfoundry.org.name", "organization_name"),
    ):
        if isinstance(application.get(key), str):
            attributes[attribute] = application[key]
    if environ.get("CF_INSTANCE_INDEX", "").strip():
        attributes["cloudfoundry.app.instance.id"] = environ["CF_INSTANCE_INDEX"].strip()
    return Resource.create(attributes)


def traced(wsgi_app, metrics_path):
    """Wrap the metrics middleware's app: each request but a scrape in a server span."""

    def traced_wsgi_app(environ, start_response):
        if environ.get("PATH_INFO") == metrics_path:
            return wsgi_app(environ, start_response)
        parent = _parent(environ)
        method = environ.get("REQUEST_METHOD", "")
        # Semantic conventions: a method outside the standard set is _OTHER.
        method = method if method in STANDARD_METHODS else "_OTHER"
        name = method if method != "_OTHER" else "HTTP"
        span = tracer().start_span(
            name,
            parent,
            {
                "http.request.method": method,
                "url.path": environ.get("PATH_INFO", ""),
                "url.scheme": environ.get("wsgi.url_scheme", "http"),
            },
        )
        span_context = span.get_span_context()
        # In hex through bytes: half the instructions of a format spec.
        trace_id = span_context.trace_id.to_bytes(16, "big").hex()
        span_id = span_context.span_id.to_bytes(8, "big").hex()
        flags = span_context.trace_flags & 3
        environ[TRACE_ID_KEY] = trace_id
        if flags & TraceFlags.SAMPLED:
            environ[SAMPLED_TRACE_KEY] = (trace_id, span_id)
        header = ("traceresponse", f"00-{trace_id}-{span_id}-{FLAGS_TEXT[flags]}")
        status = None

        def start_response_traced(status_line, headers, exc_info=None):
            nonlocal status
            status = status_line[:3]
            headers.append(header)
            return start_response(status_line, headers, exc_info)

        token = context.attach(trace.set_span_in_context(span))
        try:
            return wsgi_app(environ, start_response_traced)
        except BaseException as error:
            span.record_exception(error, escaped=True)
            raise
        finally:
            context.detach(token)
            # Only a sampled span records (a NonRecordingSpan ignores all this), and one
            # a view has ended ignores it too.
            if flags & TraceFlags.SAMPLED:
                _name(span, name, environ, status)
                span.end()

    return traced_wsgi_app


def _parent(environ):
    """The span context of the request's traceparent, read by the parser that gives the
    log line its trace id (so the two cannot disagree), with its tracestate; None for a
    request without a well-formed one."""
    trace_id, span_id, flags = trace_from(environ.get("HTTP_TRACEPARENT"))
    if trace_id is None:
        return None
    state = environ.get("HTTP_TRACESTATE")
    return SpanContext(
        int(trace_id, 16),
        int(span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(flags),  # as OpenTelemetry's propagator reads them
        trace_state=TraceState.from_header([state]) if state else None,
    )


def _name(span, name, environ, status):
    """The span's name (`name`, the method's) and what it answered, once Flask has
    matched the route: the route's template, never the raw path."""
    code = int(status) if status and status.isdigit() else 500
    attributes = {"http.response.status_code": code}
    route = getattr(environ.get(RULE_KEY), "rule", None)
    if route is not None:
        span.update_name(f"{name} {route}")
        attributes["http.route"] = route
    if code >= 500:
        attributes["error.type"] = str(code)
        span.set_status(trace.Status(trace.StatusCode.ERROR))
    span.set_attributes(attributes)
