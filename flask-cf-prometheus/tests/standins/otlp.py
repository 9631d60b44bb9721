"""An OTLP/HTTP traces receiver on loopback, as an OpenTelemetry collector is to a service:
it decodes each export with opentelemetry-proto, as a collector does, and keeps the spans.

It answers at once (the default), after a delay (a collector that is slow), or with an
error status (one that refuses). Its spans are dictionaries of what the tests read.
"""

import gzip
import threading
import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from .loopback import StandIn, serving

TRACES_PATH = "/v1/traces"


def _value(any_value):
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


class Receiver:
    """What the receiver was sent, and how it answers. Thread-safe."""

    def __init__(self, delay_seconds=0.0, status=200):
        self.delay_seconds = delay_seconds
        self.status = status
        self.spans = []
        self.requests = []  # (path, headers) of each export
        self._lock = threading.Lock()

    def handler(receiver):  # noqa: N805 (the handler class reads its receiver)
        class Handler(StandIn):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.receive(self.path, dict(self.headers), body)
                if receiver.delay_seconds:
                    time.sleep(receiver.delay_seconds)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.answer(receiver.status, answer, [("Content-Type", "application/x-protobuf")])

        return Handler

    def receive(self, path, headers, body):
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = []
        for resource_spans in request.resource_spans:
            resource = {item.key: _value(item.value) for item in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(
                        {
                            "name": span.name,
                            "kind": span.kind,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "trace_state": span.trace_state,
                            "attributes": {
                                item.key: _value(item.value) for item in span.attributes
                            },
                            "events": [
                                {
                                    "name": event.name,
                                    "attributes": {
                                        item.key: _value(item.value) for item in event.attributes
                                    },
                                }
                                for event in span.events
                            ],
                            "links": [link.trace_id.hex() for link in span.links],
                            "status_code": span.status.code,
                            "resource": resource,
                        }
                    )
        with self._lock:
            self.requests.append((path, headers))
            self.spans.extend(spans)

    def received(self):
        with self._lock:
            return list(self.spans)


def receiving(receiver):
    """The receiver served on a free loopback port for the duration of the block; the
    server is yielded (its `server_address` says where)."""
    return serving(receiver.handler())
