"""Run a baked service under real gunicorn, the way Cloud Foundry starts it, on loopback."""

import contextlib
import http.client
import http.server
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml
from standins.loopback import free_loopback_port

START_TIMEOUT = 30
STOP_TIMEOUT = 15


def manifest_command(project):
    [app] = yaml.safe_load((project / "manifest.yml").read_text())["applications"]
    return app["command"]


@dataclass
class Response:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


class Gunicorn:
    """A gunicorn master started by `command` in a session of its own, writing its log to
    `log`; its workers are known by the pids it logs as it boots them. The tests and the
    benchmarks both start gunicorn through this."""

    def __init__(self, command, cwd, env, log):
        self.log = log
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                command,
                cwd=cwd,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log_text(self):
        return self.log.read_text(errors="replace")

    def booted_pids(self):
        """Pids of every worker the master has booted, the dead included."""
        return [int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", self.log_text())]

    def worker_pids(self):
        """Pids of the workers the master booted that are still alive."""
        return [pid for pid in self.booted_pids() if _alive(pid)]

    def wait_for_workers(self, count, ready, timeout=START_TIMEOUT):
        """Wait until `count` workers are up and `ready()` is true, so that load spreads
        over all of them; return their pids."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"gunicorn exited:\n{self.log_text()}"
            if len(self.worker_pids()) >= count and ready():
                return self.worker_pids()
            time.sleep(0.1)
        raise AssertionError(f"{count} workers not up in {timeout}s:\n{self.log_text()}")

    def wait_for_replacement(self, victim, workers, timeout=20):
        """Wait until the master has replaced the dead worker `victim`: `workers` live
        workers again, none of them `victim`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = self.worker_pids()
            if victim not in pids and len(pids) == workers:
                return pids
            time.sleep(0.05)
        raise AssertionError(f"worker {victim} not replaced:\n{self.log_text()}")

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM the master, as Cloud Foundry does, and return its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
                raise AssertionError(f"gunicorn ignored SIGTERM:\n{self.log_text()}") from None
        # Whatever is left of its session: a gunicorn that a shell started and did not
        # hand the signal to, say.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.returncode


class Service(Gunicorn):
    """A baked service started with its manifest's command, on loopback `port`."""

    def __init__(self, command, cwd, env, log, port, tmpdir, home):
        super().__init__(command, cwd, env, log)
        self.port = port
        self.tmpdir = tmpdir
        self.home = home

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def request(self, path, method="GET", headers=None, timeout=10):
        request = urllib.request.Request(self.url + path, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return Response(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as error:
            return Response(error.code, dict(error.headers), error.read())

    def metrics_text(self, token):
        """The metrics endpoint's text exposition, read with bearer `token`."""
        response = self.request("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert response.status == 200, response.body
        return response.body.decode()

    def wait_for_workers(self, count, ready=None, timeout=START_TIMEOUT):
        return super().wait_for_workers(count, ready or self._answers, timeout)

    def _answers(self):
        # A probe is never abandoned while a worker may still answer it: an abandoned one
        # would be counted in the metrics after a test has taken its baseline.
        try:
            return self.request("/_status", timeout=START_TIMEOUT).status == 200
        except (OSError, http.client.HTTPException):
            return False


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited but is not reaped yet; /proc tells.
    with contextlib.suppress(OSError):
        return " Z " not in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1][:3]
    return False


def manifest_environment(python, port, home, tmpdir, **environ):
    """The environment for the manifest's command: the project's Python first on PATH,
    none of the caller's own service settings, and gunicorn bound to loopback."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PROMETHEUS_", "METRICS_", "GUNICORN_", "XDG_RUNTIME_DIR"))
    }
    env.update(
        PATH=f"{python.parent}{os.pathsep}{env['PATH']}",
        HOME=str(home),
        TMPDIR=str(tmpdir),
        PORT=str(port),
        GUNICORN_CMD_ARGS=f"--bind 127.0.0.1:{port}",
    )
    env.update(environ)
    return env


def start_up(project, python, home, tmpdir, wrapper=(), **environ):
    """Run the manifest's command, by `wrapper` if any, until it exits, as a start-up
    that must fail does: its exit code and its output."""
    env = manifest_environment(python, free_loopback_port(), home, tmpdir, **environ)
    completed = subprocess.run(
        [*wrapper, "bash", "-c", manifest_command(project)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return completed.returncode, completed.stdout + completed.stderr


@contextlib.contextmanager
def serve(project, python, tmp_path, workers=2, wrapper=(), shell="bash", command=None, **environ):
    """Start the manifest's command (or `command`) in `shell` (`shell -c command`, as
    Cloud Foundry does), with the project's Python environment on PATH, run by `wrapper`
    (a command that takes the command to run as its last arguments), if any.

    Only the bind address changes: GUNICORN_CMD_ARGS keeps the server on loopback.
    """
    port = free_loopback_port()
    tmpdir = tmp_path / "container-tmp"
    home = tmp_path / "home"
    tmpdir.mkdir()
    home.mkdir()
    env = manifest_environment(
        python, port, home, tmpdir, **{"WEB_CONCURRENCY": str(workers), **environ}
    )
    command = [*wrapper, shell, "-c", command or manifest_command(project)]
    service = Service(command, project, env, tmp_path / "gunicorn.log", port, tmpdir, home)
    try:
        service.wait_for_workers(workers)
        yield service
    finally:
        with contextlib.suppress(AssertionError):
            service.stop()


def kill_a_worker(service):
    """SIGKILL a live worker and return its pid; workers recycle all the while, so the
    one picked may have exited by itself before the signal, and then the next one is."""
    for pid in service.worker_pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            return pid
    raise AssertionError(f"no live worker to kill:\n{service.log_text()}")


def wait_for(condition, seconds=60):
    """Poll `condition` until it holds or `seconds` pass; what it last said."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.2)
    return condition()
