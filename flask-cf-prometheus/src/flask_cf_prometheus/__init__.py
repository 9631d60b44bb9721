"""Flask services on Cloud Foundry, observed by Prometheus: the machinery every service
uses and none writes (README.md).

The public API is what this module names, and the modules `gunicorn` (the hooks and
settings a service's gunicorn.conf.py imports), `launcher` (what `python -m` the service
runs) and `discovery` (the cf-discovery program). Modules whose names start with an
underscore are private: they change without notice.
"""

from ._settings import ConfigError

__version__ = "0.1.0"
__all__ = ["ConfigError", "Metrics", "__version__", "observe"]


def __getattr__(name):
    # Metrics and observe import prometheus_client, which reads PROMETHEUS_MULTIPROC_DIR
    # on its first metric: loaded when first named, so that the launcher (which sets that
    # variable) and cf-discovery import this package without it.
    if name == "Metrics":
        from ._flask import Metrics

        return Metrics
    if name == "observe":
        from ._exemplars import observe

        return observe
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
