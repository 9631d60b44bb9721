"""The baked service's worker lifecycle metrics under real gunicorn: how many workers are
configured and alive, and why each one that exited did."""

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from .baking import bake_with_views
from .load import drive
from .service import serve

TOKEN = "lifecycle-test-token"
MAX_REQUESTS = 20
# Long enough for a worker to boot on a loaded machine, short enough to wait for.
TIMEOUT_SECONDS = 4
HANGING_ROUTE = """

@bp.get("/hang")
def hang():
    import time

    time.sleep(30)  # past GUNICORN_TIMEOUT: the master stops the worker first
    return {}
"""
EXITS = re.compile(r'^gunicorn_worker_exits_total\{reason="(\w+)"\} (\S+)$', re.MULTILINE)


@pytest.fixture
def project(cookies):
    return bake_with_views(cookies, HANGING_ROUTE)


READ_EXITS = """
import sys
from prometheus_client import CollectorRegistry, generate_latest
from flask_cf_prometheus._multiprocess import LockedCollector

registry = CollectorRegistry()
registry.register(LockedCollector(sys.argv[1]))
sys.stdout.write(generate_latest(registry).decode())
"""


def announced_recycles(log):
    """The pid of each worker that said it would recycle after its current request."""
    return [
        json.loads(line)["pid"]
        for line in log.splitlines()
        if "Autorestarting worker after current request." in line
    ]


def sample(text, name):
    [value] = re.findall(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(value)


def test_exits_are_counted_by_reason(project, project_python, tmp_path):
    environ = {
        "METRICS_BASIC_AUTH_TOKEN": TOKEN,
        "GUNICORN_MAX_REQUESTS": str(MAX_REQUESTS),
        "GUNICORN_TIMEOUT": str(TIMEOUT_SECONDS),
    }
    with serve(project, project_python, tmp_path, workers=2, **environ) as service:
        completed, failed = drive(service.url, ["/"], 50, clients=2)

        # A request that hangs: the master aborts its worker after the timeout.
        with pytest.raises((urllib.error.URLError, ConnectionError, TimeoutError)):
            urllib.request.urlopen(service.url + "/hang", timeout=TIMEOUT_SECONDS * 5)
        # On a loaded machine a booting worker may time out too: each one is counted.
        aborted = re.findall(r"WORKER TIMEOUT \(pid:(\d+)\)", service.log_text())
        assert aborted, service.log_text()
        for pid in aborted:
            service.wait_for_replacement(int(pid), workers=2)

        victim = service.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        service.wait_for_replacement(victim, workers=2)
        # The replacement counts itself alive once it has booted, a moment after its fork.
        deadline = time.monotonic() + 30
        live = service.metrics_text(TOKEN)
        while sample(live, "gunicorn_workers_alive") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
            live = service.metrics_text(TOKEN)
        assert service.stop() == 0  # the two workers left exit as shut down

    # After the master has reaped every worker, the metrics directory holds all exits.
    directory = service.tmpdir / "prometheus-multiproc"
    read = subprocess.run(
        [project_python, "-c", READ_EXITS, directory],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    exits = {reason: float(value) for reason, value in EXITS.findall(read.stdout)}
    log = service.log_text()
    # gunicorn says a worker will recycle as it takes its last request, before serving
    # it: when that is the hanging one, the worker times out instead.
    aborted = {int(pid) for pid in re.findall(r"WORKER TIMEOUT \(pid:(\d+)\)", log)}
    recycles = len([pid for pid in announced_recycles(log) if pid not in aborted])

    # Each exit as the master's log tells it, whatever the scheduler made of the timeout.
    timeouts = log.count("WORKER TIMEOUT")
    kills = log.count("was sent SIGKILL!")
    assert (completed, failed) == (100, 0)
    assert recycles >= 100 // MAX_REQUESTS - 2
    assert timeouts >= 1
    assert f"Worker (pid:{victim}) was sent SIGKILL!" in log
    assert exits == {"recycled": recycles, "timeout": timeouts, "shutdown": 2, "killed": kills}
    assert sample(live, "gunicorn_workers_configured") == 2
    assert sample(live, "gunicorn_workers_alive") == 2
