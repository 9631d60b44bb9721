"""Exemplars: a sampled request's trace, on the bucket its duration fell into.

A request whose W3C `traceparent` is sampled (flags bit 0 set) has its trace and span
ids in the WSGI environ (_middleware.py). Each histogram observed with `observe` during
the request keeps them as the exemplar of the bucket the value fell into: under
gunicorn in this worker's file (_openmetrics_files.py), which every scrape reads; in one
process, as prometheus_client keeps exemplars itself.
"""

import bisect

from flask import has_request_context, request
from prometheus_client.utils import floatToGoString

from ._metric_files import histogram_layout
from ._openmetrics_files import key_text, record_exemplar
from ._settings import metrics_directory

# Where this process keeps its values, read once, as prometheus_client reads it: when the
# first metric is declared.
_DIRECTORY = metrics_directory()
# In the WSGI environ of a request whose traceparent is sampled: (trace id, span id), hex.
SAMPLED_TRACE_KEY = "flask_cf_prometheus.sampled_trace"

_layouts = {}  # histogram -> (upper bounds, each bucket's key)


def observe(histogram, amount):
    """`histogram.observe(amount)` and, in a request whose traceparent is sampled, the
    request's trace as the exemplar of the bucket `amount` fell into. `histogram` is a
    prometheus_client Histogram without labels, or a child of its `.labels()`."""
    trace = request.environ.get(SAMPLED_TRACE_KEY) if has_request_context() else None
    observe_traced(histogram, amount, trace, _DIRECTORY)


def observe_traced(histogram, amount, trace, directory):
    """observe() with the trace given, (trace id, span id) in hex or None, and the
    metrics directory, None in one process."""
    if trace is None:
        histogram.observe(amount)
        return
    trace_id, span_id = trace
    if directory is None:
        histogram.observe(amount, {"trace_id": trace_id, "span_id": span_id})
        return
    histogram.observe(amount)
    key = bucket_key(histogram, amount)
    if key is not None:
        record_exemplar(directory, key, trace_id, span_id, amount)


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
