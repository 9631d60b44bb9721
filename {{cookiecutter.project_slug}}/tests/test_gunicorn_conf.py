import logging
import runpy
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import Counter, Gauge

from .conftest import worker

GUNICORN_CONF = str(Path(__file__).parents[1] / "gunicorn.conf.py")


@pytest.fixture
def metrics_dir(tmp_path, monkeypatch):
    directory = tmp_path / "metrics"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    return directory


def load(**environ):
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environ.items():
            patch.setenv(name, value)
        return runpy.run_path(GUNICORN_CONF)


def test_defaults(metrics_dir):
    conf = load()

    assert conf["bind"] == "0.0.0.0:8000"
    assert conf["workers"] == 2
    assert conf["threads"] == 1
    assert conf["max_requests"] == 0
    assert conf["accesslog"] == "-"
    assert conf["control_socket_disable"] is True


def test_settings_from_the_environment(metrics_dir):
    conf = load(PORT="61001", WEB_CONCURRENCY="4", GUNICORN_THREADS="8", GUNICORN_TIMEOUT="60")

    assert conf["bind"] == "0.0.0.0:61001"
    assert conf["workers"] == 4
    assert conf["threads"] == 8
    assert conf["timeout"] == 60


def test_on_starting_empties_the_metrics_directory(metrics_dir):
    metrics_dir.mkdir()
    (metrics_dir / "counter_123.db").write_bytes(b"old run")
    conf = load()

    conf["on_starting"](server=None)

    assert metrics_dir.is_dir()
    assert list(metrics_dir.iterdir()) == []


def test_private_metrics_directory_when_none_is_set(monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "recorded, so that it is unset again after")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    conf = load()
    directory = Path(conf["os"].environ["PROMETHEUS_MULTIPROC_DIR"])
    assert directory.is_dir()

    conf["on_exit"](server=None)

    assert not directory.exists()


def test_child_exit_folds_the_dead_workers_metrics(metrics_dir):
    metrics_dir.mkdir()
    with worker(4242):
        Counter("jobs", "Jobs done.", registry=None).inc(3)
        Gauge("busy", "Busy.", multiprocess_mode="livesum", registry=None).set(1)
    conf = load()

    conf["child_exit"](server=None, worker=SimpleNamespace(pid=4242))

    assert sorted(path.name for path in metrics_dir.glob("*.db")) == ["counter_aggregate.db"]


def test_child_exit_logs_a_failed_fold_and_leaves_the_master_running(metrics_dir, caplog):
    metrics_dir.mkdir()
    # A file that says it holds 64 bytes of values, with a first key longer than that.
    corrupt = metrics_dir / "counter_4243.db"
    corrupt.write_bytes(struct.pack("iii", 64, 0, 100).ljust(64, b"\0"))
    with worker(4243):
        Gauge("busy", "Busy.", multiprocess_mode="livesum", registry=None).set(1)
    conf = load()
    server = SimpleNamespace(log=logging.getLogger("gunicorn.error"))

    conf["child_exit"](server=server, worker=SimpleNamespace(pid=4243))

    assert "Could not fold the metrics of dead worker 4243" in caplog.text
    # What could not be folded stays; the dead worker's requests in progress do not.
    assert sorted(path.name for path in metrics_dir.glob("*.db")) == ["counter_4243.db"]
