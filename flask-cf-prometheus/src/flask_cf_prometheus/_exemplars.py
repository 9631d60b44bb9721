"""Exemplars: a sampled request's trace, on the bucket its duration fell into.

A request whose W3C `traceparent` is sampled (flags bit 0 set) has its trace and span
ids in the WSGI environ (_middleware.py). Each histogram observed with `observe` during
the request keeps them as the exemplar of the bucket the value fell into: under
gunicorn in this worker's exemplar file (_exemplar_files.py), which every scrape reads;
in one process, as prometheus_client keeps exemplars itself.
"""

import bisect
import logging
import os
import threading
import time
from pathlib import Path

from flask import has_request_context, request
from prometheus_client.utils import floatToGoString

from ._exemplar_files import Writer, file_name, key_text
from ._metric_files import histogram_layout
from ._settings import metrics_directory

logger = logging.getLogger(__name__)

# In the WSGI environ of a request whose traceparent is sampled: (trace id, span id), hex.
SAMPLED_TRACE_KEY = "flask_cf_prometheus.sampled_trace"

_lock = threading.Lock()
_writer = None  # this process's Writer, False if it cannot have one, None until asked
_writer_directory = None
_layouts = {}  # histogram -> (upper bounds, each bucket's key)


def _forget_writer():
    global _writer, _writer_directory
    _writer = _writer_directory = None


# A worker forked from a process that wrote exemplars writes a file of its own.
os.register_at_fork(after_in_child=_forget_writer)


def observe(histogram, amount):
    """`histogram.observe(amount)` and, in a request whose traceparent is sampled, the
    request's trace as the exemplar of the bucket `amount` fell into. `histogram` is a
    prometheus_client Histogram without labels, or a child of its `.labels()`."""
    trace = request.environ.get(SAMPLED_TRACE_KEY) if has_request_context() else None
    observe_traced(histogram, amount, trace)


def observe_traced(histogram, amount, trace):
    """observe() with the trace given: (trace id, span id) in hex, or None."""
    if trace is None:
        histogram.observe(amount)
        return
    trace_id, span_id = trace
    directory = metrics_directory()
    if directory is None:
        histogram.observe(amount, {"trace_id": trace_id, "span_id": span_id})
        return
    histogram.observe(amount)
    key = bucket_key(histogram, amount)
    if key is None:
        return
    with _lock:
        writer = _writer if directory == _writer_directory else _open(directory)
        if writer:
            writer.record(key, bytes.fromhex(trace_id), bytes.fromhex(span_id), amount, time.time())


def bucket_key(histogram, amount):
    """The exemplar file's key of the bucket `amount` falls into, as prometheus_client
    counts it (the first whose bound is at least `amount`); None for NaN."""
    layout = _layouts.get(histogram)
    if layout is None:
        name, labels, bounds = histogram_layout(histogram)
        keys = tuple(key_text(name, {**labels, "le": floatToGoString(bound)}) for bound in bounds)
        layout = _layouts[histogram] = bounds, keys
    bounds, keys = layout
    index = bisect.bisect_left(bounds, amount)
    if amount != amount or index == len(bounds):  # NaN falls in no bucket
        return None
    return keys[index]


def _open(directory):
    global _writer, _writer_directory
    writer = Writer(Path(directory) / file_name(os.getpid()))
    try:
        writer.open()
    except OSError as error:
        # A full disk, say: this worker's requests go on, without exemplars.
        logger.error("This worker keeps no exemplars: %s", error)
        writer = False
    _writer, _writer_directory = writer, directory
    return writer
