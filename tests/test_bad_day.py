"""A bad day for the baked service under real gunicorn: the metrics directory's disk
fills up, the directory is removed, another service starts on it, or something foreign
lands in it before a reload. The service answers throughout, its master never dies, and
its metrics recover."""

import errno
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from .baking import bake
from .load import drive, total
from .service import serve, start_up, wait_for
from .tools import missing

TOKEN = "bad-day-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TMPFS_BYTES = 16 << 20


def on_tmpfs(size):
    """Runs its arguments in mount and user namespaces of their own, with a tmpfs of
    `size` bytes on $TMPDIR, where the manifest command puts the metrics directory: a
    disk that can fill up."""
    return [
        "unshare",
        "--user",
        "--map-root-user",
        "--mount",
        "bash",
        "-c",
        f'mount -t tmpfs -o size={size} tmpfs "$TMPDIR" && exec "$@"',
        "on-small-tmpfs",
    ]


ON_SMALL_TMPFS = on_tmpfs(TMPFS_BYTES)


@pytest.fixture
def project(cookies):
    return bake(cookies)


@pytest.fixture(scope="session")
def small_tmpfs():
    probe = subprocess.run(
        [*ON_SMALL_TMPFS, "true"],
        env={**os.environ, "TMPDIR": "/tmp"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if probe.returncode != 0:
        missing(
            "cannot mount a tmpfs in a user namespace here (unshare --user --map-root-user"
            f" --mount): {probe.stderr.strip()}"
        )
    return ON_SMALL_TMPFS


class Prober(threading.Thread):
    """GETs / every 50 ms until stopped (or for at most `limit_seconds`), keeping every
    answer's status, or the error when there was none."""

    def __init__(self, service, limit_seconds=120):
        super().__init__(daemon=True)
        self.service = service
        self.answers = []
        self._stop_event = threading.Event()
        self._deadline = time.monotonic() + limit_seconds

    def run(self):
        while not self._stop_event.is_set() and time.monotonic() < self._deadline:
            try:
                self.answers.append(self.service.request("/").status)
            except OSError as error:
                self.answers.append(repr(error))
            time.sleep(0.05)

    def stop(self):
        self._stop_event.set()
        self.join(30)


def requests_total(service):
    return total(service.metrics_text(TOKEN), "http_server_requests_total")


def fill(directory):
    """Write into `directory` until its filesystem is full; return the file written."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb", buffering=0) as output:
        for _ in range(TMPFS_BYTES // len(chunk) + 1):
            try:
                output.write(chunk)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                return filler
    raise AssertionError(f"{directory} did not fill up")


def kill_and_wait_for_replacement(service):
    victim = service.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    service.wait_for_replacement(victim, workers=2)
    return victim


def test_a_full_disk_takes_neither_the_master_nor_the_requests_nor_the_totals(
    project, project_python, tmp_path, small_tmpfs
):
    environ = {"METRICS_BASIC_AUTH_TOKEN": TOKEN}
    with serve(project, project_python, tmp_path, wrapper=small_tmpfs, **environ) as service:
        # The service's own view of the container: its tmpfs, through its process.
        directory = Path(f"/proc/{service.process.pid}/root{service.tmpdir}/prometheus-multiproc")
        baseline = requests_total(service)
        prober = Prober(service)
        prober.start()
        before_full = drive(service.url, ["/", "/_status"], 50)

        filler = fill(directory)
        probes_before_full = len(prober.answers)
        while_full = [drive(service.url, ["/"], 25)]
        for _ in range(2):  # each replacement boots on a spare set of files
            kill_and_wait_for_replacement(service)
            while_full.append(drive(service.url, ["/"], 25))
        scraped_while_full = requests_total(service)

        probes_while_full = len(prober.answers) - probes_before_full
        filler.unlink()
        kill_and_wait_for_replacement(service)  # the next worker exit folds what was left
        after = drive(service.url, ["/", "/_status"], 25)
        prober.stop()
        final = requests_total(service)
        files = sorted(path.name for path in directory.iterdir())
        assert service.process.poll() is None, "the master must survive"
        assert service.stop() == 0

    log = service.log_text()
    runs = [before_full, *while_full, after]
    assert all(failed == 0 for _, failed in runs), runs
    assert set(prober.answers) == {200}, prober.answers
    assert probes_before_full > 0
    assert probes_while_full > 0
    assert "Could not fold the metrics of dead worker" in log
    assert "No space left on device" in log
    assert "Fatal Python error" not in log
    assert "SIGBUS" not in log
    # Every request served is counted: those served on the full disk too.
    served_while_full = sum(completed for completed, _ in [before_full, *while_full])
    assert scraped_while_full >= baseline + served_while_full
    probes = len(prober.answers)
    assert final == baseline + sum(completed for completed, _ in runs) + probes
    assert "counter_aggregate.db" in files
    assert not [name for name in files if name.endswith(".staging")]
    assert {".spare-0", ".spare-1"} <= set(files)


def test_a_removed_metrics_directory_is_made_again(project, project_python, tmp_path):
    environ = {"METRICS_BASIC_AUTH_TOKEN": TOKEN}
    with serve(project, project_python, tmp_path, **environ) as service:
        directory = service.tmpdir / "prometheus-multiproc"
        drive(service.url, ["/"], 10)

        subprocess.run(["rm", "-rf", directory], check=True)
        scrape = service.request("/metrics", headers=AUTH)
        kill_and_wait_for_replacement(service)
        served = drive(service.url, ["/"], 10)
        after = requests_total(service)
        assert service.process.poll() is None
        assert service.stop() == 0

    assert scrape.status == 200
    assert served == (40, 0)
    # Counts lost with the directory start again from zero, which Prometheus reads as a
    # reset: the new worker's requests are counted; the worker that was running before
    # goes on writing into the removed files until it exits.
    assert 0 < after <= 40
    assert (directory / ".lock").exists()
    assert "Traceback" not in service.log_text()


def test_a_disk_too_small_to_boot_on_stops_start_up_in_one_line(
    project, project_python, tmp_path, small_tmpfs
):
    """A 1 MiB tmpfs holds neither the spare sets nor the workers' files: start-up stops,
    naming the directory and the room needed, rather than with a posix_fallocate
    traceback or a service that cannot write its metrics."""
    container_tmp = tmp_path / "container-tmp"
    container_tmp.mkdir()
    code, output = start_up(
        project, project_python, tmp_path, container_tmp, wrapper=on_tmpfs(1 << 20)
    )

    assert code != 0, output
    assert "Traceback" not in output
    # Said before gunicorn starts: its start line, printed first, once hid the reason.
    assert "Starting gunicorn" not in output, output
    [line] = [line for line in output.splitlines() if "PROMETHEUS_MULTIPROC_DIR" in line]
    assert line == (
        f"PROMETHEUS_MULTIPROC_DIR='{container_tmp}/prometheus-multiproc' has no room for the"
        " metric files: 2 workers and 2 spare sets need 6.0 MiB (No space left on device)"
    )


def test_a_second_service_on_the_directory_refuses_and_the_first_counts_on(
    project, project_python, tmp_path
):
    """Two services given one directory (no TMPDIR, or two run by hand): the second would
    empty the files the first one's live workers write into."""
    environ = {"METRICS_BASIC_AUTH_TOKEN": TOKEN}
    with serve(project, project_python, tmp_path, **environ) as service:
        baseline = requests_total(service)
        before = drive(service.url, ["/"], 100)
        code, output = start_up(project, project_python, tmp_path, service.tmpdir, **environ)
        after = drive(service.url, ["/"], 100)
        final = requests_total(service)
        assert service.stop() == 0

    assert code != 0, output
    assert "Starting gunicorn" not in output, output
    [line] = [line for line in output.splitlines() if "PROMETHEUS_MULTIPROC_DIR" in line]
    assert line == (
        f"PROMETHEUS_MULTIPROC_DIR='{service.tmpdir}/prometheus-multiproc' belongs to a"
        f" service that is running (gunicorn master {service.process.pid}): give each"
        " service a directory of its own"
    )
    assert before[1] == after[1] == 0
    assert final == baseline + before[0] + after[0], "every request counted, before and after"


def test_a_reload_with_something_foreign_in_the_directory_keeps_serving(
    project, project_python, tmp_path
):
    """A SIGHUP re-reads the settings and checks them: one that fails is said in one
    line, and the master goes on, with new workers, on the settings in force."""
    environ = {"METRICS_BASIC_AUTH_TOKEN": TOKEN}
    with serve(project, project_python, tmp_path, **environ) as service:
        baseline = requests_total(service)
        before = drive(service.url, ["/"], 20)
        (service.tmpdir / "prometheus-multiproc" / "notes.txt").write_text("a user's")
        old = set(service.worker_pids())
        os.kill(service.process.pid, signal.SIGHUP)
        renewed = wait_for(lambda: len(set(service.worker_pids()) - old) == 2, seconds=30)
        served = drive(service.url, ["/"], 20)
        final = requests_total(service)
        assert service.process.poll() is None, "the master must survive"
        assert service.stop() == 0

    assert renewed
    assert before[1] == served[1] == 0
    assert final == baseline + before[0] + served[0]
    [warning] = [
        line for line in service.log_text().splitlines() if "Reload kept the settings" in line
    ]
    assert "holds what is not a metric file (notes.txt)" in warning
    assert "Traceback" not in service.log_text()
