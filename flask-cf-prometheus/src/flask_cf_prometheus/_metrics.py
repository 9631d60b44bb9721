"""The metrics every service exports, the endpoint that serves them, and what gunicorn's
hooks (gunicorn.py) record of its workers.

Under gunicorn, PROMETHEUS_MULTIPROC_DIR makes prometheus_client keep values in files that
all workers share (see _multiprocess.py); without it, as under `flask run` or the test
client, values live in this process and the endpoint serves prometheus_client's default
registry. A service declares metrics of its own as plain prometheus_client objects, which
the endpoint serves with these.
"""

import gzip
import platform
import threading
import time

from flask import got_request_exception, request
from prometheus_client import (
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder, gzip_accepted
from prometheus_client.metrics_core import Metric
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import Map

from . import _multiprocess as multiprocess
from ._auth import REASONS, MetricsAccess, Refused
from ._settings import ConfigError, metrics_directory, refuse_blank_metrics_directory

# prometheus_client reads a set but blank PROMETHEUS_MULTIPROC_DIR as the working
# directory, and writes there the values of the first metric declared (below).
refuse_blank_metrics_directory()

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
_process_sampler = None
_exit_recorded = False


def _request_children(method, path, code):
    """The labelled histogram and counter for one label set, looked up once."""
    key = (method, path, code)
    children = _children.get(key)
    if children is None:
        children = _children[key] = (REQUEST_DURATION.labels(*key), REQUESTS.labels(*key))
    return children


def init_app(app, version):
    """Serve the metrics endpoint to those _auth.py lets in, and count exceptions.

    _middleware.py times and counts each request, wrapping the whole WSGI app so that the
    timing covers everything Flask does for it, at the cost of a function call rather
    than three request hooks.
    """
    metrics_path = app.config["METRICS_PATH"]
    registry = _registry()
    access = MetricsAccess(app.config)
    access.warn_if_closed()
    APP_INFO.labels(app.config["SERVICE_NAME"], version, platform.python_version()).set(1)
    for reason in REASONS:
        SCRAPES_REFUSED.labels(reason)  # every reason from 0, so that rates start at once
    got_request_exception.connect(_count_exception, app)

    @app.get(metrics_path, endpoint="metrics")
    def metrics():
        try:
            access.check(request)
        except Refused as refused:
            SCRAPES_REFUSED.labels(refused.reason).inc()
            raise refused.error from None
        if _process_sampler is not None:
            _process_sampler.sample()  # this worker's figures as of now
        return _exposition(registry)


def check_no_route_shares_the_path(app):
    """Stop start-up when another route answers the metrics path: the protection would
    shadow it (Cloud Foundry's health check at /_status would get 401, say). Called last,
    once every route is registered."""
    metrics_path = app.config["METRICS_PATH"]
    others = Map(
        [rule.empty() for rule in app.url_map.iter_rules() if rule.endpoint != "metrics"],
        converters=app.url_map.converters,
    )
    try:
        endpoint, _ = others.bind("localhost").match(metrics_path)
    except MethodNotAllowed:
        endpoint = "a route for other methods"
    except HTTPException:  # NotFound, or a redirect to a path with a trailing slash
        return
    raise ConfigError(
        f"PROMETHEUS_METRICS_PATH={metrics_path!r} is the path of {endpoint!r} too; choose another"
    )


def count_request(method, rule, status, start):
    """Count a request (_middleware.py calls this as it finishes), by the rule Flask
    matched, if any, and the status it answered with; `start` is its perf_counter()."""
    duration, count = _request_children(
        method if method in STANDARD_METHODS else OTHER_METHOD,
        UNMATCHED_PATH if rule is None else rule.rule,
        status,
    )
    duration.observe(time.perf_counter() - start)
    count.inc()


def _count_exception(sender, exception, **extra):
    EXCEPTIONS.labels(type(exception).__name__).inc()


def prepare_exit_count():
    """Every exit reason from 0, in this worker's files: the master counts the exit of a
    worker that could not count it itself there. gunicorn.py calls it in each
    worker as soon as it has forked (post_fork)."""
    for reason in EXIT_REASONS:
        WORKER_EXITS.labels(reason)


def start_worker(configured_workers):
    """Count this worker in and sample its process figures from now on; gunicorn.py
    calls it in each worker once it has booted (post_worker_init)."""
    global _process_sampler
    WORKERS_CONFIGURED.set(configured_workers)
    WORKERS_ALIVE.set(1)
    _process_sampler = ProcessSampler()
    _process_sampler.start()


def record_worker_exit(reason):
    """Count this worker's exit once, with the first reason given (a timed-out worker
    exits through gunicorn's usual exit path too)."""
    global _exit_recorded
    if not _exit_recorded:
        _exit_recorded = True
        WORKER_EXITS.labels(reason).inc()


def _registry():
    directory = metrics_directory()
    if directory is None:
        return REGISTRY
    return multiprocess.LockedCollector(directory)


def _exposition(registry):
    encode, content_type = _encoder(request.headers.get("Accept", ""))
    names = request.args.getlist("name[]")
    if names:
        body = encode(_OnlyNamed(registry, frozenset(names)))
    elif isinstance(registry, multiprocess.LockedCollector):
        body = registry.exposition(encode)
    else:
        body = encode(registry)
    headers = {
        "Content-Type": content_type,
        "Cache-Control": "no-store",
        "Vary": "Accept, Accept-Encoding",
    }
    if gzip_accepted(request.headers.get("Accept-Encoding", "")):
        # Level 1: on 500 KB of exposition, a ninth of the default level's time for half
        # as many bytes again; the scrape's cost is the service's, the bytes are few.
        body = gzip.compress(body, compresslevel=1)
        headers["Content-Encoding"] = "gzip"
    return body, 200, headers


def _encoder(accept):
    """prometheus_client's choice of format for this Accept header; the text format when
    it cannot read the header (a version such as `abc` makes it raise TypeError)."""
    try:
        return choose_encoder(accept)
    except Exception:  # whatever it cannot read, the client gets the text format
        return generate_latest, CONTENT_TYPE_PLAIN_0_0_4


class _OnlyNamed:
    """A registry view with only the samples whose names are asked for (`?name[]=`).

    prometheus_client's own restricted registry finds nothing in multiprocess mode.
    """

    def __init__(self, registry, names):
        self._registry = registry
        self._names = names

    def collect(self):
        for metric in self._registry.collect():
            samples = [sample for sample in metric.samples if sample.name in self._names]
            if samples:
                restricted = Metric(metric.name, metric.documentation, metric.type, metric.unit)
                restricted.samples = samples
                yield restricted


class ProcessSampler(threading.Thread):
    """Samples this worker's memory, open files and CPU time every few seconds, and
    when it answers a scrape: in multiprocess mode only the worker answering a scrape
    runs code, so every worker must record its own figures as it goes.
    """

    INTERVAL_SECONDS = 5

    def __init__(self):
        super().__init__(name="metrics-process-sampler", daemon=True)
        from prometheus_client.process_collector import ProcessCollector

        self._collector = ProcessCollector(registry=None)
        self._cpu_seconds = 0.0
        self._lock = threading.Lock()

    def sample(self):
        with self._lock:
            self._sample()

    def _sample(self):
        for metric in self._collector.collect():
            value = metric.samples[0].value
            if metric.name == "process_resident_memory_bytes":
                WORKER_MEMORY.set(value)
            elif metric.name == "process_open_fds":
                WORKER_OPEN_FDS.set(value)
            elif metric.name == "process_cpu_seconds":
                WORKERS_CPU.inc(max(value - self._cpu_seconds, 0))
                self._cpu_seconds = value

    def run(self):
        while True:
            self.sample()
            time.sleep(self.INTERVAL_SECONDS)
