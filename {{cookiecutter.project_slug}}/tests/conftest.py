import contextlib

import pytest
from prometheus_client import values

from {{ cookiecutter.package_name }} import create_app


@pytest.fixture
def app():
    return create_app({"TESTING": True})


@pytest.fixture
def client(app):
    return app.test_client()


@contextlib.contextmanager
def worker(pid):
    """Metrics created inside behave as if created in gunicorn worker `pid`.

    prometheus_client chooses where values live when a metric is created; its own
    MultiProcessValue takes the process identifier, so one test process can play many
    workers, each writing its own files under PROMETHEUS_MULTIPROC_DIR.
    """
    single_process = values.ValueClass
    values.ValueClass = values.MultiProcessValue(process_identifier=lambda: pid)
    try:
        yield
    finally:
        values.ValueClass = single_process
