"""The server span of each request, made at the cost a request can afford.

The SDK's span checks each attribute as it is set, under a lock, and calls every span
processor as it starts and ends; with its sampler, some 48,000 instructions a sampled
request, twice this span's (BENCHMARKS.md, Traces). A request's span here keeps what it
is given unchecked, within OpenTelemetry's limits (OTEL_SPAN_*) as the SDK's span keeps
them (a list copied, so that a later change is not sent). Once ended, it goes to the
worker's queue (_span_queue.py) whole. The export thread makes it the SDK's
ReadableSpan, its values cleaned as the SDK's own span's are, and sends it with the
spans the SDK makes (the outgoing calls of requests and urllib3).

The tracer provider's ids and resource make and describe it, as they do the SDK's
spans, and it is sampled as the provider's sampler samples (RequestTracer.sampled). It
is OpenTelemetry's API Span: a view adds its attributes, events and links to
`trace.get_current_span()` as it would to the SDK's.
"""

import logging
import time
import traceback

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, sampling
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

logger = logging.getLogger(__name__)

UNSET = Status(StatusCode.UNSET)
# A span's trace flags, by (sampled, its trace id random): made once.
FLAGS = {
    (sampled, random): TraceFlags(
        (TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
        | (TraceFlags.RANDOM_TRACE_ID if random else 0)
    )
    for sampled in (False, True)
    for random in (False, True)
}


class RequestTracer:
    """Starts the server span of each request, with `provider`'s ids and resource, and
    sampled as `provider`'s sampler would: `sampler` names it (OTEL_TRACES_SAMPLER, one
    of _tracing.py's), `ratio` is its argument. Ended and sampled, a span goes to `queue`
    (a SpanQueue)."""

    def __init__(self, provider, queue, scope_name, sampler, ratio):
        self._ids = provider.id_generator
        self._random = self._ids.is_trace_id_random()
        self.resource = provider.resource
        self.scope = InstrumentationScope(scope_name)
        self.limits = SpanLimits()  # read from OTEL_* as the provider reads its own
        self.queue = queue
        # The SDK's samplers, as two comparisons: a parent-based one follows a parent's
        # flag; else the trace id's low 64 bits are compared with the ratio's bound
        # (TraceIdRatioBased's, exactly: at 1 every id passes, at 0 none).
        self._follows_parent = sampler.startswith("parentbased_")
        root = sampler.removeprefix("parentbased_")
        rate = {"always_on": 1.0, "always_off": 0.0}.get(root, ratio)
        self._bound = sampling.TraceIdRatioBased.get_bound_for_rate(rate)

    def sampled(self, parent, trace_id):
        """Whether the span of trace `trace_id` whose parent is `parent` (a remote
        SpanContext, or None) is sampled."""
        if parent is not None and self._follows_parent:
            return parent.trace_flags.sampled
        return trace_id & sampling.TraceIdRatioBased.TRACE_ID_LIMIT < self._bound

    def start_span(self, name, parent, attributes):
        """The span of a request whose traceparent is `parent` (a remote SpanContext),
        or None to start a trace: a RequestSpan if sampled, else a NonRecordingSpan that
        carries its ids on. The flags and tracestate as the SDK's Tracer gives them."""
        if parent is None:
            trace_id, random, state = self._ids.generate_trace_id(), self._random, None
        else:
            trace_id, state = parent.trace_id, parent.trace_state
            random = parent.trace_flags.random_trace_id
        sampled = self.sampled(parent, trace_id)
        # Positional: SpanContext's keywords cost a request some 2,000 instructions.
        context = SpanContext(
            trace_id, self._ids.generate_span_id(), False, FLAGS[sampled, random], state
        )
        if not sampled:
            return NonRecordingSpan(context)
        return RequestSpan(self, name, context, parent, attributes)


def _kept(attributes):
    """Attributes as they are now, as the SDK's span keeps them: a list the view changes
    later is sent as it was."""
    if not attributes:
        return attributes
    return {
        key: tuple(value) if isinstance(value, list) else value for key, value in attributes.items()
    }


class RequestSpan(trace.Span):
    """A sampled request's span: what it is told, kept until it ends, then queued.
    Attributes, events and links are bounded as they are added, and a list given as a
    value is copied, as the SDK's span does both; values are checked and cleaned in the
    export thread."""

    def __init__(self, tracer, name, context, parent, attributes):
        self._tracer = tracer
        self._name = name
        self._context = context
        self._parent = parent
        self._attributes = attributes
        self._dropped = 0  # attributes dropped as they were set
        # The SDK's BoundedLists, made at the first a view adds: (name, attributes,
        # timestamp) and (span context, attributes).
        self._events = self._links = None
        self._status = UNSET
        self._start = time.time_ns()
        self._end = None

    def get_span_context(self):
        return self._context

    def is_recording(self):
        return self._end is None

    def set_attribute(self, key, value):
        """As the SDK's span: a key that is not a non-empty string is dropped, and
        counted."""
        if self._end is None and (not key or not isinstance(key, str)):
            logger.warning("invalid key `%s`. must be non-empty string. Dropping key.", key)
            self._dropped += 1
            return
        self.set_attributes({key: value})

    def set_attributes(self, attributes):
        """As the SDK's span: a key set again becomes the newest, and past the limit
        (OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT) the oldest is evicted, and counted. The values
        are checked, and the keys made strings, in the export thread."""
        if self._end is not None:
            return
        held, limit = self._attributes, self._tracer.limits.max_span_attributes
        for key, value in attributes.items():
            held.pop(key, None)
            if limit == 0:
                self._dropped += 1
                continue
            while limit is not None and len(held) >= limit:
                del held[next(iter(held))]
                self._dropped += 1
            held[key] = tuple(value) if isinstance(value, list) else value

    def add_event(self, name, attributes=None, timestamp=None):
        """As the SDK's span: past the limit (OTEL_SPAN_EVENT_COUNT_LIMIT) the oldest is
        evicted, and counted."""
        if self._end is None:
            if self._events is None:
                self._events = BoundedList(self._tracer.limits.max_events)
            self._events.append((name, _kept(attributes), timestamp or time.time_ns()))

    def add_link(self, context, attributes=None):
        """As the SDK's span: a link to an invalid context is kept only with attributes
        or a tracestate."""
        if (
            self._end is None
            and context
            and (context.is_valid or attributes or context.trace_state)
        ):
            if self._links is None:
                self._links = BoundedList(self._tracer.limits.max_links)
            self._links.append((context, _kept(attributes)))

    def update_name(self, name):
        if self._end is None:
            self._name = name

    def set_status(self, status, description=None):
        """As the SDK's span: OK is final, UNSET changes nothing, and anything but a
        Status or a StatusCode is ignored."""
        if self._end is not None or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, StatusCode):
            status = Status(status, description)
        if isinstance(status, Status) and status.status_code is not StatusCode.UNSET:
            self._status = status

    def record_exception(self, exception, attributes=None, timestamp=None, escaped=False):
        """An `exception` event, with the attributes the SDK's span gives it."""
        kind = type(exception)
        module = kind.__module__
        exception_attributes = {
            "exception.type": f"{module}.{kind.__qualname__}"
            if module and module != "builtins"
            else kind.__qualname__,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
            **(attributes or {}),
        }
        self.add_event("exception", exception_attributes, timestamp)

    def end(self, end_time=None):
        if self._end is not None:
            return
        self._end = end_time or time.time_ns()
        self._tracer.queue.put(self)  # made only when sampled

    def readable(self):
        """The SDK's ReadableSpan of this ended span, within OpenTelemetry's limits: the
        export thread's work, not the request's."""
        limits = self._tracer.limits
        events = BoundedList.from_seq(
            limits.max_events,
            [
                Event(
                    name,
                    BoundedAttributes(
                        limits.max_event_attributes,
                        attributes,
                        max_value_len=limits.max_attribute_length,
                    ),
                    timestamp,
                )
                for name, attributes, timestamp in self._events or ()
            ],
        )
        links = BoundedList.from_seq(
            limits.max_links,
            [
                trace.Link(
                    context,
                    BoundedAttributes(
                        limits.max_link_attributes,
                        attributes,
                        max_value_len=limits.max_attribute_length,
                    ),
                )
                for context, attributes in self._links or ()
            ],
        )
        # What the view's BoundedLists dropped as they were added; the limits above
        # drop nothing more.
        events.dropped = self._events.dropped if self._events is not None else 0
        links.dropped = self._links.dropped if self._links is not None else 0
        attributes = BoundedAttributes(
            limits.max_span_attributes,
            self._attributes,
            max_value_len=limits.max_span_attribute_length,
        )
        attributes.dropped += self._dropped
        return ReadableSpan(
            name=self._name,
            context=self._context,
            parent=self._parent,
            resource=self._tracer.resource,
            attributes=attributes,
            events=events,
            links=links,
            kind=SpanKind.SERVER,
            status=self._status,
            start_time=self._start,
            end_time=self._end,
            instrumentation_scope=self._tracer.scope,
        )
