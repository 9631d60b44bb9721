"""The service's metrics: its own, declared here, and the kit's, which time and count
every request, count exceptions and workers, and serve them all on the metrics path
(README.md, Metrics).

To add a metric of your own, declare it here and use it in a view:

    ORDERS_PLACED = Counter("orders_placed", "Orders placed.", ["currency"])
    ORDERS_PLACED.labels(currency="GBP").inc()
"""

from flask_cf_prometheus import Metrics

from . import __version__

metrics = Metrics(
    service={{ cookiecutter.project_slug | tojson }},
    version=__version__,
    # Defaults: PROMETHEUS_METRICS_PATH and METRICS_BASIC_AUTH override them (README.md,
    # Settings).
    metrics_path={{ cookiecutter.metrics_path | tojson }},
    basic_auth={{ "True" if cookiecutter.metrics_auth == "basic_auth" else "False" }},
{%- if cookiecutter.tracing == "otlp" %}
    # Each request's span to an OTLP collector, set by OpenTelemetry's variables
    # (README.md, Traces); OTEL_TRACES_EXPORTER=none turns it off.
    tracing=True,
{%- endif %}
)
init_app = metrics.init_app
