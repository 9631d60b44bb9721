import contextlib
import os

import pytest
from prometheus_client import values

from flask_cf_prometheus import _metric_files as metric_files

from .service import create_app

PROVE = "--prove-prometheus-client"
# The range the kit declares, whatever --prove-prometheus-client widens it to.
DECLARED = metric_files.PROVEN_VERSIONS


def pytest_addoption(parser):
    parser.addoption(
        PROVE,
        action="store_true",
        help="read the metric files with the kit's own reader whatever prometheus_client"
        " is installed, so that the differential tests say whether it can be proven on it",
    )


@pytest.fixture(autouse=True, scope="session")
def _prove_the_installed_prometheus_client(request):
    """With --prove-prometheus-client, the proven range is the installed release's, as
    if widened to it: what a maintainer would widen it to, once these tests pass."""
    if not request.config.getoption(PROVE):
        yield
        return
    installed = tuple(int(number) for number in metric_files.installed_version().split(".")[:2])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            metric_files, "PROVEN_VERSIONS", (installed, (installed[0], installed[1] + 1))
        )
        yield


def unproven_message():
    """What to do when the installed prometheus_client is outside the proven range."""
    first, beyond = (".".join(map(str, numbers)) for numbers in metric_files.PROVEN_VERSIONS)
    return (
        f"prometheus_client {metric_files.installed_version()} is outside the releases the"
        f" kit's reader is proven on ({first} up to {beyond}), so the kit falls back to"
        f" prometheus_client's own reader. To prove it: pytest {PROVE}; if every test"
        " passes, widen PROVEN_VERSIONS in _metric_files.py and prometheus-client in"
        " pyproject.toml to it, note it in CHANGELOG.md, and release"
    )


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
