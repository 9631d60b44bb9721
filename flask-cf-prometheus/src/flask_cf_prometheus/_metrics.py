"""Every metric the kit exports, declared once, and the counting of each request.

Under gunicorn, PROMETHEUS_MULTIPROC_DIR makes prometheus_client keep values in files
that all workers share (_multiprocess.py reads them). Without it, as under `flask run`,
values live in this process. A service declares its own metrics as plain
prometheus_client objects, and the endpoint (_endpoint.py) serves them with these.
"""

import time

from prometheus_client import Counter, Gauge, Histogram

from ._exemplars import observe_traced
from ._openmetrics_files import key_text, record_start
from ._settings import app_metrics_directory

# prometheus_client reads PROMETHEUS_MULTIPROC_DIR itself, at the first metric declared
# (below): a set but blank one is refused first, or it would write into the working
# directory.
DIRECTORY = app_metrics_directory()

# The names and method, path and code labels of GOV.UK's gds-metrics (README.md says what
# a gds-metrics dashboard needs to change).
REQUEST_DURATION = Histogram(
    "http_server_request_duration_seconds",
    "Time spent serving HTTP requests, by method, route template and status code.",
    ["method", "path", "code"],
)
REQUESTS = Counter(
    "http_server_requests",
    "HTTP requests served, by method, route template and status code.",
    ["method", "path", "code"],
)
EXCEPTIONS = Counter(
    "http_server_exceptions",
    "Exceptions raised while serving HTTP requests, by exception class name.",
    ["error"],
)
IN_PROGRESS = Gauge(
    "http_server_requests_in_progress",
    "HTTP requests being served right now, summed over live workers.",
    multiprocess_mode="livesum",
)
SCRAPES_REFUSED = Counter(
    "metrics_scrapes_refused",
    "Requests the metrics endpoint refused, by reason: missing_credentials, malformed,"
    " wrong_credentials, address_not_allowed.",
    ["reason"],
)
APP_INFO = Gauge(
    "app_info",
    "Always 1; the labels say which service, version and Python are running.",
    ["name", "version", "python_version"],
    multiprocess_mode="livemax",
)

# Only a service that traces (_tracing.py) has a series of this: labelled, it exports
# nothing until one is made.
TRACING_SPANS = Counter(
    "tracing_spans",
    "Sampled spans this service finished, by what became of them: exported, queue_full"
    " (dropped, the queue full), export_failed (the collector refused them or did not"
    " answer in time), shutdown (still queued when the worker's stop ran out of time).",
    ["outcome"],
)

# prometheus_client's process collector sees only the process that answers the scrape,
# so under gunicorn each worker samples itself into these (ProcessSampler). They stay out
# of the default registry, where that collector already exports the same names.
WORKER_MEMORY = Gauge(
    "process_resident_memory_bytes",
    "Resident memory of each live worker, in bytes.",
    multiprocess_mode="liveall",
    registry=None,
)
WORKER_OPEN_FDS = Gauge(
    "process_open_fds",
    "Open file descriptors of each live worker.",
    multiprocess_mode="liveall",
    registry=None,
)
# A counter summed over workers, not one per worker: a series per pid would grow with
# every recycled worker.
WORKERS_CPU = Counter(
    "process_cpu_seconds",
    "CPU time of all workers, the dead included, in seconds.",
    registry=None,
)

# gunicorn's workers: how many there should be, how many are serving, and why each one
# that exited did. A worker records its own exit; the master records it as "killed" for
# a worker that could not (gunicorn.py). Under gunicorn only, like the above.
WORKERS_CONFIGURED = Gauge(
    "gunicorn_workers_configured",
    "Worker processes gunicorn is configured to run (WEB_CONCURRENCY).",
    multiprocess_mode="livemax",
    registry=None,
)
WORKERS_ALIVE = Gauge(
    "gunicorn_workers_alive",
    "Worker processes that have booted and not exited.",
    multiprocess_mode="livesum",
    registry=None,
)
WORKER_EXITS = Counter(
    "gunicorn_worker_exits",
    "Worker processes that exited, by reason: recycled (GUNICORN_MAX_REQUESTS), timeout"
    " (silent past GUNICORN_TIMEOUT), shutdown (stopped by gunicorn), killed (exited"
    " without saying why: SIGKILL, out of memory, a crash).",
    ["reason"],
    registry=None,
)
EXIT_REASONS = ("recycled", "timeout", "shutdown", "killed")

# Label values are bounded whatever clients send: route templates, not raw paths, and
# one value for each of: requests no route matches, and methods outside this set.
STANDARD_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
OTHER_METHOD = "other"
UNMATCHED_PATH = "unmatched"

_children = {}
# The families whose series get a start (their _created), by name.
_STARTED = tuple(metric.describe()[0].name for metric in (REQUESTS, REQUEST_DURATION))


def _request_children(method, path, code, start):
    """The labelled histogram and counter for one label set, looked up once. Under
    gunicorn, the first time in a worker, the series' start is recorded first, for
    OpenMetrics' _created (_openmetrics_files.py): the start of the request that makes
    them, never later than their first value."""
    key = (method, path, code)
    children = _children.get(key)
    if children is None:
        if DIRECTORY is not None:
            began = time.time() - (time.perf_counter() - start)
            labels = {"method": method, "path": path, "code": code}
            for name in _STARTED:
                record_start(DIRECTORY, key_text(f"{name}_created", labels), began)
        children = _children[key] = (REQUEST_DURATION.labels(*key), REQUESTS.labels(*key))
    return children


def count_request(method, rule, status, start, trace=None):
    """Count a request (_middleware.py calls this as it finishes), by the rule Flask
    matched, if any, and the status it answered with; `start` is its perf_counter(),
    `trace` its sampled trace, if any (_exemplars.py)."""
    duration, count = _request_children(
        method if method in STANDARD_METHODS else OTHER_METHOD,
        UNMATCHED_PATH if rule is None else rule.rule,
        status,
        start,
    )
    if trace is None:
        duration.observe(time.perf_counter() - start)
    else:
        observe_traced(duration, time.perf_counter() - start, trace, DIRECTORY)
    count.inc()


def count_exception(sender, exception, **extra):
    """Count an exception Flask signals (got_request_exception), by its class name."""
    EXCEPTIONS.labels(type(exception).__name__).inc()
