import contextlib
import os

import pytest
from prometheus_client import values

from .service import create_app


@pytest.fixture
def app():
    return create_app({"TESTING": True})


@pytest.fixture
def client(app):
    return app.test_client()


@contextlib.contextmanager
def worker(pid):
    """Metrics created inside behave as if created in gunicorn worker `pid`, or in
    this process as a gunicorn worker if `pid` is None.

    prometheus_client chooses where values live when a metric is created; its
    multiprocess value class takes the process identifier, so one test process can play
    many workers, each writing its own files under PROMETHEUS_MULTIPROC_DIR, as
    prometheus_client's own tests do.
    """
    single_process = values.ValueClass
    identifier = os.getpid if pid is None else lambda: pid
    values.ValueClass = values.MultiProcessValue(process_identifier=identifier)
    try:
        yield
    finally:
        values.ValueClass = single_process
