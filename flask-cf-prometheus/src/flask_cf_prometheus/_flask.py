"""`Metrics`, the kit as a Flask extension: what a service's factory calls."""

from . import _endpoint, _middleware
from ._settings import (
    DEFAULT_METRICS_PATH,
    ConfigError,
    app_metrics_directory,
    notice,
    server_settings_from_environ,
    settings_from_environ,
)
from ._tracing_settings import tracing_settings, variables_set


class Metrics:
    """Observe a Flask app: time and count its requests, give each a request id for the
    logs, count its exceptions, and serve every metric of the process, the service's own
    included, on the metrics path to those its protection lets in.

    `service` and `version` label `app_info`; `metrics_path` and `basic_auth` are the
    service's defaults for PROMETHEUS_METRICS_PATH and METRICS_BASIC_AUTH, which the
    environment overrides. Settings already in `app.config` win over the environment's.
    `tracing=True` (the kit's `otlp` extra installed) sends each request's span to an
    OTLP collector, which OpenTelemetry's variables configure and can turn off.
    """

    def __init__(
        self,
        app=None,
        *,
        service,
        version,
        metrics_path=DEFAULT_METRICS_PATH,
        basic_auth=True,
        tracing=False,
    ):
        self.service = service
        self.version = version
        self.metrics_path = metrics_path
        self.basic_auth = basic_auth
        self.tracing = tracing
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
        tracing = self._tracing()
        _endpoint.init_app(app, self.version, directory)
        _middleware.init_app(app, traced=tracing is not None)
        if tracing is not None:
            app.wsgi_app = tracing.traced(app.wsgi_app, app.config["METRICS_PATH"])
        _endpoint.check_no_route_shares_the_path(app)

    def _tracing(self):
        """_tracing.py, configured, when this service traces and OpenTelemetry's
        variables leave it on; None otherwise."""
        if not self.tracing:
            ignored = variables_set()
            if ignored:
                notice(
                    f"{', '.join(ignored)} ignored: this service was made without tracing"
                    " (README.md, Traces)"
                )
            return None
        settings = tracing_settings()
        if settings is None:
            return None
        try:
            from . import _tracing
        except ImportError as error:
            raise ConfigError(
                f"Tracing needs the kit's otlp extra (flask-cf-prometheus[otlp]): {error}"
            ) from None
        _tracing.configure(settings, self.service, self.version)
        return _tracing
