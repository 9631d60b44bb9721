"""Prometheus metrics: every metric the service exports is declared at the top of this file.

`init_app(app)` times each request and serves the metrics endpoint. Under gunicorn,
PROMETHEUS_MULTIPROC_DIR makes prometheus_client keep values in files that all workers
share (see multiprocess.py); without it, as under `flask run` or the test client, values
live in this process and the endpoint serves prometheus_client's default registry.

To add a metric of your own, declare it here and use it in a view:

    ORDERS = Counter("orders_placed", "Orders placed.", ["currency"])
    ORDERS.labels(currency="GBP").inc()
"""

import gzip
import os
import platform
import threading
import time

from flask import g, request
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import Metric

from . import __version__, multiprocess

# Names compatible with GOV.UK's gds-metrics, so existing dashboards keep working.
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

# Label values are bounded whatever clients send: route templates, not raw paths, and
# one value for each of: requests no route matches, and methods outside this set.
STANDARD_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
OTHER_METHOD = "other"
UNMATCHED_PATH = "unmatched"

_children = {}
_process_sampler = None


def _request_children(method, path, code):
    """The labelled histogram and counter for one label set, looked up once."""
    key = (method, path, code)
    children = _children.get(key)
    if children is None:
        children = _children[key] = (REQUEST_DURATION.labels(*key), REQUESTS.labels(*key))
    return children


def init_app(app):
    """Time every request but the metrics scrape itself, and serve the metrics endpoint.

    Call it before registering anything else, so its hooks run first and last.
    Scrapes are not counted: Prometheus records its own scrape duration and success
    (`scrape_duration_seconds`, `up`), and counting them would add a request every
    scrape interval to the service's traffic and skew its latency.
    """
    registry = _registry()
    APP_INFO.labels(app.config["SERVICE_NAME"], __version__, platform.python_version()).set(1)

    @app.before_request
    def start_timer():
        if request.endpoint != "metrics":
            g.metrics_start = time.perf_counter()
            IN_PROGRESS.inc()

    @app.after_request
    def note_status(response):
        g.metrics_status = response.status_code
        return response

    @app.teardown_request
    def record_request(error):
        if error is not None:
            EXCEPTIONS.labels(type(error).__name__).inc()
        start = g.pop("metrics_start", None)
        if start is None:  # a scrape
            return
        # No status when an exception escaped Flask's handlers (as in testing): it is a 500.
        status = g.pop("metrics_status", 500)
        method = request.method if request.method in STANDARD_METHODS else OTHER_METHOD
        path = request.url_rule.rule if request.url_rule is not None else UNMATCHED_PATH
        duration, count = _request_children(method, path, str(status))
        duration.observe(time.perf_counter() - start)
        count.inc()
        IN_PROGRESS.dec()

    @app.get(app.config["METRICS_PATH"], endpoint="metrics")
    def metrics():
        if _process_sampler is not None:
            _process_sampler.sample()  # this worker's figures as of now
        return _exposition(registry)


def start_process_sampler():
    """Sample this worker's process figures from now on; gunicorn.conf.py calls it in
    each worker (post_worker_init)."""
    global _process_sampler
    _process_sampler = ProcessSampler()
    _process_sampler.start()


def _registry():
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return REGISTRY
    registry = CollectorRegistry()
    registry.register(multiprocess.LockedCollector(directory))
    return registry


def _exposition(registry):
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    names = request.args.getlist("name[]")
    body = encode(_OnlyNamed(registry, frozenset(names)) if names else registry)
    headers = {
        "Content-Type": content_type,
        "Cache-Control": "no-store",
        "Vary": "Accept, Accept-Encoding",
    }
    if gzip_accepted(request.headers.get("Accept-Encoding", "")):
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    return body, 200, headers


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
