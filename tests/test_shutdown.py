"""Stopping the baked service as Cloud Foundry does: SIGTERM to the process that runs the
manifest's command in a shell, then SIGKILL 10 s later. Requests in flight finish."""

import os
import signal
import threading
import time
import urllib.request

import pytest

from .baking import bake_with_views
from .load import total
from .service import serve

TOKEN = "shutdown-test-token"
SLOW_SECONDS = 3
# gunicorn.conf.py's default, below Cloud Foundry's 10 s between SIGTERM and SIGKILL.
GRACEFUL_TIMEOUT = 8
SLOW_ROUTE = f"""

@bp.get("/slow")
def slow():
    import time

    time.sleep({SLOW_SECONDS})
    return {{"slept": {SLOW_SECONDS}}}
"""


@pytest.fixture
def project(cookies):
    return bake_with_views(cookies, SLOW_ROUTE)


def in_progress(service):
    return total(service.metrics_text(TOKEN), "http_server_requests_in_progress")


# bash replaces itself with the last command of `bash -c` on its own; dash, Debian's sh,
# does not, so only the manifest's `exec` hands gunicorn the signal there.
@pytest.mark.parametrize("shell", ["bash", "sh"])
def test_sigterm_lets_requests_in_flight_finish(project, project_python, tmp_path, shell):
    environ = {"METRICS_BASIC_AUTH_TOKEN": TOKEN}
    with serve(project, project_python, tmp_path, workers=3, shell=shell, **environ) as service:
        answers = []

        def slow_request():
            with urllib.request.urlopen(service.url + "/slow", timeout=30) as response:
                answers.append((response.status, response.read()))

        clients = [threading.Thread(target=slow_request) for _ in range(2)]
        for client in clients:
            client.start()
        deadline = time.monotonic() + 10
        while in_progress(service) < 2:
            assert time.monotonic() < deadline, "the slow requests never started"
            time.sleep(0.05)
        workers = service.worker_pids()

        os.kill(service.process.pid, signal.SIGTERM)
        sent = time.monotonic()
        service.process.wait(GRACEFUL_TIMEOUT + 2)
        stopped_after = time.monotonic() - sent
        for client in clients:
            client.join(30)

    assert answers == [(200, b'{"slept":3}\n')] * 2
    assert service.process.returncode == 0
    assert stopped_after < GRACEFUL_TIMEOUT
    assert not [pid for pid in workers if pid in service.worker_pids()]
    log = service.log_text()
    assert "Handling signal: term" in log
    assert "SIGKILL" not in log
