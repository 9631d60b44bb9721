"""The WSGI middleware every request passes through: it gives the request its ids, and
times and counts it.

One function does all three: a layer per concern would cost every request a call, a
closure and a start_response wrapper of its own.

The request id is the router's `X-Vcap-Request-Id` when it is a plain token, else 16
random bytes in hex. The trace id comes from a well-formed W3C `traceparent`. Both go
into the WSGI environ for _logs.py, and the response carries the id as `X-Request-Id`.
A sampled traceparent's trace becomes the exemplar of the request's duration
(_exemplars.py).

Scrapes are not counted. Prometheus records its own (`scrape_duration_seconds`, `up`),
and counting them would skew the service's traffic and latency.
"""

import os
import re
import time

from ._exemplars import SAMPLED_TRACE_KEY
from ._logs import REQUEST_ID_KEY, RULE_KEY, TRACE_ID_KEY
from ._metrics import IN_PROGRESS, count_request

# What a request id from a client may look like: the router's is a UUID, and anything
# else (too long, non-ASCII, control characters) is replaced rather than logged.
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
# W3C Trace Context, version 00: version-trace id-parent id-flags, lower-case hex; spaces
# around are the header's own.
TRACEPARENT_PATTERN = re.compile(r"\s*00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})\s*")
SAMPLED = 0x01  # the flags' sampled bit
INVALID_TRACE_ID, INVALID_SPAN_ID = "0" * 32, "0" * 16


def init_app(app, traced=False):
    """Wrap the whole WSGI app, so that the timing covers everything Flask does for a
    request. `traced`: _tracing.py's layer, outside this one, gives each request its
    trace (the span's) and says whether it is sampled, whatever its traceparent says."""
    app.wsgi_app = _observed(app.wsgi_app, app.config["METRICS_PATH"], traced)


def _observed(wsgi_app, metrics_path, traced):
    def observed_wsgi_app(environ, start_response):
        request_id = environ.get("HTTP_X_VCAP_REQUEST_ID")
        if not (request_id and REQUEST_ID_PATTERN.fullmatch(request_id)):
            # As random as a version 4 UUID (128 bits to its 122), for a fifth of the
            # instructions uuid.uuid4() takes to check and convert them.
            request_id = os.urandom(16).hex()
        environ[REQUEST_ID_KEY] = request_id
        trace = None
        if traced:
            trace = environ.get(SAMPLED_TRACE_KEY)
        elif "HTTP_TRACEPARENT" in environ:
            trace_id, span_id, flags = trace_from(environ["HTTP_TRACEPARENT"])
            environ[TRACE_ID_KEY] = trace_id
            if flags & SAMPLED:
                trace = environ[SAMPLED_TRACE_KEY] = (trace_id, span_id)
        # Unless the app starts a response, an exception escaped Flask's handlers (as in
        # testing mode): the request is counted as a 500, its route unknown.
        status = "500"
        rule = None

        def start_response_noting_status(status_line, headers, exc_info=None):
            nonlocal status, rule
            status = status_line[:3]
            # Flask has matched the route by the time it starts the response, and forgets
            # its request once it has answered, before gunicorn logs it: the rule is kept
            # for the access log.
            rule = environ[RULE_KEY] = getattr(environ.get("werkzeug.request"), "url_rule", None)
            headers.append(("X-Request-Id", request_id))
            return start_response(status_line, headers, exc_info)

        if environ.get("PATH_INFO") == metrics_path:
            return wsgi_app(environ, start_response_noting_status)
        start = time.perf_counter()
        IN_PROGRESS.inc()
        try:
            return wsgi_app(environ, start_response_noting_status)
        finally:
            IN_PROGRESS.dec()
            # A scrape spelt otherwise (//metrics) reaches the metrics view too: Flask's
            # match, not the raw path, says it was one.
            if rule is None or rule.endpoint != "metrics":
                count_request(environ["REQUEST_METHOD"], rule, status, start, trace)

    return observed_wsgi_app


def trace_from(header):
    """(trace id, parent span id, flags) of a well-formed W3C traceparent header, the ids
    in hex and the flags an int (bit 0: sampled; bit 1, W3C level 2: the trace id is
    random); (None, None, 0) for any other."""
    match = TRACEPARENT_PATTERN.fullmatch(header) if header else None
    if match is None:
        return None, None, 0
    trace_id, span_id, flags = match.groups()
    if trace_id == INVALID_TRACE_ID or span_id == INVALID_SPAN_ID:
        return None, None, 0
    return trace_id, span_id, int(flags, 16)
