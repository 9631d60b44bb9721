"""A worker's finished spans, queued and sent in batches by a thread of its own, each
one counted by what became of it.

The SDK's BatchSpanProcessor does the same, but its force_flush waits for the collector
however long it takes (opentelemetry-python #4568), and what it drops it reports only
through OpenTelemetry's own metrics, which have no multiprocess mode. A request only
appends to the queue: a collector down or slow never slows one. A full queue drops the
span at once; a stop waits for the queue at most as long as it is given. After a failed
export the thread waits longer before the next (1 s, doubling to 30 s): encoding spans
for a collector that is down would cost the worker's requests CPU for nothing.
"""

import collections
import logging
import os
import threading
import time
import weakref

from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import SpanExportResult

from ._metrics import TRACING_SPANS
from ._request_span import RequestSpan

logger = logging.getLogger(__name__)

OUTCOMES = ("exported", "queue_full", "export_failed", "shutdown")
# Seconds to wait after the first failed export in a row; each next failure doubles it.
FIRST_BACKOFF, LAST_BACKOFF = 1.0, 30.0


def backoff_seconds(failures):
    """How long to wait after `failures` failed exports in a row before the next: none
    after none. The exponent stops growing once past the last: a collector down for
    days must not overflow it."""
    if not failures:
        return 0.0
    return min(FIRST_BACKOFF * 2 ** min(failures - 1, 16), LAST_BACKOFF)


class SpanQueue(SpanProcessor):
    def __init__(self, exporter, *, size, batch, delay_seconds):
        self._exporter = exporter
        self._size = size
        self._batch = batch
        self._delay = delay_seconds
        self._queue = collections.deque()
        self._changed = threading.Condition()
        self._stopping = False
        self._flushing = False
        self._in_flight = 0
        self._abandoned = False  # the stop gave up waiting: the rest are counted lost
        self._failures = 0  # failed exports in a row
        self._counters = {outcome: TRACING_SPANS.labels(outcome) for outcome in OUTCOMES}
        self._start_thread()
        # A process forked from this one (a view's os.fork, multiprocessing) sends its
        # spans from a thread of its own, as the SDK's BatchSpanProcessor does: a thread
        # does not survive a fork.
        restart = weakref.WeakMethod(self._restart_in_child)

        def restart_in_child():
            if (method := restart()) is not None:
                method()

        os.register_at_fork(after_in_child=restart_in_child)

    def _start_thread(self):
        self._thread = threading.Thread(target=self._run, name="tracing-export", daemon=True)
        self._thread.start()

    def _restart_in_child(self):
        """In a forked child: the spans queued before the fork are the parent's to send."""
        self._changed = threading.Condition()
        self._queue.clear()
        self._in_flight = 0
        self._flushing = False
        self._failures = 0
        self._start_thread()

    def on_start(self, span, parent_context=None):
        pass

    def on_end(self, span):
        if span.context.trace_flags.sampled:
            self.put(span)

    def put(self, span):
        """Queue a sampled span: the SDK's, ended, or a request's (_request_span.py)."""
        with self._changed:
            if self._stopping or len(self._queue) >= self._size:
                self._counters["queue_full" if not self._stopping else "shutdown"].inc()
                return
            self._queue.append(span)
            if len(self._queue) >= self._batch and not self._failures:
                self._changed.notify()

    def _run(self):
        while True:
            with self._changed:
                backoff = backoff_seconds(self._failures)
                deadline = time.monotonic() + (backoff or self._delay)
                # A full batch sends at once, unless the last export failed.
                while not (self._stopping or self._flushing) and (
                    backoff or len(self._queue) < self._batch
                ):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._changed.wait(left)
                if not self._queue:
                    if self._stopping:
                        return
                    continue
                batch = [self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))]
                self._in_flight = len(batch)
            result, unsendable = self._export(batch)
            with self._changed:
                self._in_flight = 0
                self._failures = self._failures + 1 if result == "export_failed" else 0
                if not self._abandoned:
                    self._counters[result].inc(len(batch) - unsendable)
                    if unsendable:  # each inc is a write to this worker's file
                        self._counters["export_failed"].inc(unsendable)
                self._changed.notify_all()

    def _export(self, batch):
        """What became of the spans of `batch` that could be sent (exported or
        export_failed), and how many could not be: a request's span holding a value a
        view set that OpenTelemetry cannot encode is dropped alone, not with its batch."""
        spans = []
        for span in batch:
            try:
                spans.append(span.readable() if isinstance(span, RequestSpan) else span)
            except Exception as error:
                logger.error("A span not sent, one of its values unsendable: %r", error)
        try:
            # The exporter's own HTTP calls are not traced.
            with suppress_instrumentation():
                done = not spans or self._exporter.export(spans) is SpanExportResult.SUCCESS
        except Exception as error:  # the thread goes on
            logger.error("Spans not sent (%d): %r", len(spans), error)
            done = False
        return "exported" if done else "export_failed", len(batch) - len(spans)

    def shutdown(self, timeout_seconds=5.0):
        """Send what is queued, waiting at most `timeout_seconds`; what is still queued
        or being sent then is counted lost (`shutdown`)."""
        with self._changed:
            if self._stopping:
                return
            self._stopping = True
            self._changed.notify_all()
        self._thread.join(timeout_seconds)
        with self._changed:
            if self._thread.is_alive():
                self._abandoned = True
                self._counters["shutdown"].inc(len(self._queue) + self._in_flight)
                self._queue.clear()
        self._exporter.shutdown()

    def force_flush(self, timeout_millis=30000):
        """Wait until the queue is sent, at most `timeout_millis`; whether it was."""
        deadline = time.monotonic() + timeout_millis / 1000
        with self._changed:
            self._flushing = True
            try:
                while self._queue or self._in_flight:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._changed.notify_all()
                    self._changed.wait(left)
            finally:
                self._flushing = False
        return True
