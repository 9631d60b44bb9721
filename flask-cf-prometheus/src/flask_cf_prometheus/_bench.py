"""For the template's benchmarks (bench/ beside this folder), not for services.

The benchmarks measure what the kit adds to a request and to a scrape. For that they
build apps the kit never builds: one with the settings but none of the kit's wiring, one
without request ids, one that reads metric files as prometheus_client does. This module
is the one place they reach inside the kit; it changes without notice, with them. Each
function imports what it uses, so that the bare app imports no prometheus_client.
"""

import contextlib
import importlib
import sys

# The module whose request-id statements the benchmarks remove, to count their cost.
MIDDLEWARE_MODULE = "flask_cf_prometheus._middleware"


def app_settings():
    """What `Metrics.init_app` puts in `app.config`, from the environment."""
    from . import _settings

    return _settings.settings_from_environ()


def use_prometheus_clients_reader():
    """Scrape with prometheus_client's own reader, as with a release the kit's reader is
    not proven on. Call it before the app is built."""
    from . import _metric_files

    _metric_files.PROVEN_VERSIONS = ((0, 0), (0, 0))


@contextlib.contextmanager
def middleware_replaced_by(module):
    """Apps whose `Metrics.init_app` runs inside wrap themselves with `module` in place of
    the kit's middleware."""
    from . import _flask

    kit_middleware = importlib.import_module(MIDDLEWARE_MODULE)
    _flask._middleware = sys.modules[MIDDLEWARE_MODULE] = module
    try:
        yield
    finally:
        _flask._middleware = sys.modules[MIDDLEWARE_MODULE] = kit_middleware


def exemplar_writer(directory, pid):
    """What worker `pid` does to leave an exemplar in `directory`, as a function of
    (histogram, amount, trace id, span id), the ids in hex."""
    import time
    from pathlib import Path

    from ._exemplars import bucket_key
    from ._openmetrics_files import Writer, file_name

    writer = Writer(Path(directory) / file_name(pid))

    def leave(histogram, amount, trace_id, span_id):
        key = bucket_key(histogram, amount)
        writer.record(key, bytes.fromhex(trace_id), bytes.fromhex(span_id), amount, time.time())

    return leave


def scrape_collector(directory):
    """A fresh instance of what the metrics endpoint reads `directory` with under
    gunicorn."""
    from ._multiprocess import LockedCollector

    return LockedCollector(directory)
