"""`Metrics`, the kit as a Flask extension: what a service's factory calls."""

from . import _endpoint, _middleware
from ._settings import (
    DEFAULT_METRICS_PATH,
    app_metrics_directory,
    server_settings_from_environ,
    settings_from_environ,
)


class Metrics:
    """Observe a Flask app: time and count its requests, give each a request id for the
    logs, count its exceptions, and serve every metric of the process, the service's own
    included, on the metrics path to those its protection lets in.

    `service` and `version` label `app_info`; `metrics_path` and `basic_auth` are the
    service's defaults for PROMETHEUS_METRICS_PATH and METRICS_BASIC_AUTH, which the
    environment overrides. Settings already in `app.config` win over the environment's.
    """

    def __init__(
        self, app=None, *, service, version, metrics_path=DEFAULT_METRICS_PATH, basic_auth=True
    ):
        self.service = service
        self.version = version
        self.metrics_path = metrics_path
        self.basic_auth = basic_auth
        if app is not None:
            self.init_app(app)

    def init_app(self, app):
        """Wire the app. Call it last in the factory, once every route is registered: it
        stops start-up (ConfigError) when a setting is bad or another route answers the
        metrics path."""
        directory = app_metrics_directory()
        server_settings_from_environ()  # checked too, as the gunicorn master checks them
        settings = settings_from_environ(
            metrics_path=self.metrics_path, metrics_basic_auth=self.basic_auth
        )
        app.config.setdefault("SERVICE_NAME", self.service)
        for name, value in settings.items():
            app.config.setdefault(name, value)
        _endpoint.init_app(app, self.version, directory)
        _middleware.init_app(app)
        _endpoint.check_no_route_shares_the_path(app)
