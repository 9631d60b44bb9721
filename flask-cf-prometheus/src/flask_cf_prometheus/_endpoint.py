"""The metrics endpoint: every metric of the process, to those _auth.py lets in."""

import gzip
import platform

from flask import got_request_exception, request
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder, gzip_accepted
from prometheus_client.metrics_core import Metric
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import Map

from . import _workers
from ._auth import REASONS, MetricsAccess, Refused
from ._metrics import APP_INFO, SCRAPES_REFUSED, count_exception
from ._multiprocess import LockedCollector
from ._settings import ConfigError


def init_app(app, version, directory):
    """Serve the metrics endpoint to those _auth.py lets in, and count exceptions.

    _middleware.py times and counts each request, wrapping the whole WSGI app so that the
    timing covers everything Flask does for it, at the cost of a function call rather
    than three request hooks.
    """
    metrics_path = app.config["METRICS_PATH"]
    # Under gunicorn, the workers' files; elsewhere, this process's own metrics.
    registry = REGISTRY if directory is None else LockedCollector(directory)
    access = MetricsAccess(app.config)
    access.warn_if_closed()
    APP_INFO.labels(app.config["SERVICE_NAME"], version, platform.python_version()).set(1)
    for reason in REASONS:
        SCRAPES_REFUSED.labels(reason)  # every reason from 0, so that rates start at once
    got_request_exception.connect(count_exception, app)

    @app.get(metrics_path, endpoint="metrics")
    def metrics():
        try:
            access.check(request)
        except Refused as refused:
            SCRAPES_REFUSED.labels(refused.reason).inc()
            raise refused.error from None
        _workers.sample_this_worker()  # its figures as of now, under gunicorn
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


def _exposition(registry):
    encode, content_type = _encoder(request.headers.get("Accept", ""))
    names = request.args.getlist("name[]")
    if names:
        body = encode(_OnlyNamed(registry, frozenset(names)))
    elif isinstance(registry, LockedCollector):
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
