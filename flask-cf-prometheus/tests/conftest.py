import pytest

from flask_cf_prometheus import _metric_files as metric_files

from .proven import PROVE
from .service import create_app


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


@pytest.fixture
def directory(tmp_path, monkeypatch):
    """A metrics directory, in PROMETHEUS_MULTIPROC_DIR."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def app():
    return create_app({"TESTING": True})


@pytest.fixture
def client(app):
    return app.test_client()
