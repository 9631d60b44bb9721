import errno
import logging
import mmap
import os
import shutil
import time
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from flask_cf_prometheus import _fold as folding
from flask_cf_prometheus import _logs as logs
from flask_cf_prometheus import _metrics as metrics
from flask_cf_prometheus import _metrics_directory as metrics_directory
from flask_cf_prometheus import _workers as worker_records
from flask_cf_prometheus import gunicorn
from flask_cf_prometheus._multiprocess import (
    LockedCollector,
)

from .writers import KEY_PAST_THE_END, worker

HOOKS = (
    "on_starting",
    "post_fork",
    "post_worker_init",
    "worker_abort",
    "worker_exit",
    "child_exit",
)


@pytest.fixture(autouse=True)
def _a_new_master(monkeypatch):
    """Each test's hooks run as in a master of their own: none serving yet, no directory
    claimed; the claim a test made is let go."""
    for name, value in [
        ("_directory", None),
        ("_in_force", None),
        ("_serving", False),
        ("_fold_failure_said_at", None),
        ("_fold_failures_unsaid", 0),
        ("_allocation_said_at", mmap.mmap(-1, 8)),
    ]:
        monkeypatch.setattr(gunicorn, name, value)
    monkeypatch.setattr(gunicorn, "_claimed", None)
    yield
    if gunicorn._claimed is not None:
        os.close(gunicorn._claimed)


@pytest.fixture
def metrics_dir(tmp_path, monkeypatch):
    directory = tmp_path / "metrics"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    return directory


def arbiter(workers):
    """What the hooks read of gunicorn's master: its settings."""
    return SimpleNamespace(cfg=SimpleNamespace(workers=workers))


def load(**environ):
    """What gunicorn reads of a service's gunicorn.conf.py: the kit's settings and hooks."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environ.items():
            patch.setenv(name, value)
        return {**gunicorn.settings(), **{hook: getattr(gunicorn, hook) for hook in HOOKS}}


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


@pytest.mark.parametrize(
    ("variable", "value", "rule"),
    [
        ("WEB_CONCURRENCY", "0", "from 1 to 64"),
        ("WEB_CONCURRENCY", "abc", "from 1 to 64"),
        ("WEB_CONCURRENCY", "99999999999999999999", "from 1 to 64"),
        ("GUNICORN_THREADS", "abc", "from 1 to 256"),
        ("GUNICORN_THREADS", "-1", "from 1 to 256"),
        ("PORT", "abc", "from 1 to 65535"),
        ("PORT", "99999", "from 1 to 65535"),
        ("PORT", "0", "from 1 to 65535"),
        ("GUNICORN_TIMEOUT", "0", "from 1 to 3600"),
        ("GUNICORN_TIMEOUT", "19000000000", "from 1 to 3600"),
        ("GUNICORN_GRACEFUL_TIMEOUT", "2.5", "from 1 to 3600"),
        ("GUNICORN_KEEPALIVE", "0", "from 1 to 3600"),
        ("GUNICORN_MAX_REQUESTS", "-5", "from 0 to 100000000"),
        ("GUNICORN_MAX_REQUESTS_JITTER", "many", "from 0 to 100000000"),
    ],
)
def test_a_bad_setting_stops_gunicorn_naming_variable_value_and_rule(
    metrics_dir, variable, value, rule
):
    with pytest.raises(SystemExit) as stopped:
        load(**{variable: value})

    assert str(stopped.value) == f"{variable}={value!r} must be a whole number {rule}"


def test_a_bad_app_setting_stops_gunicorn_before_any_worker(metrics_dir):
    with pytest.raises(SystemExit) as stopped:
        load(METRICS_BASIC_AUTH="yes")

    assert str(stopped.value) == "METRICS_BASIC_AUTH='yes' must be one of: true, false (any case)"


@pytest.mark.parametrize(("value", "expected"), [("", "json"), ("json", "json"), ("TEXT", "text")])
def test_log_format(metrics_dir, value, expected):
    conf = load(LOG_FORMAT=value)

    assert conf["logconfig_dict"] == logs.logging_config(expected)


def test_a_bad_log_format_stops_gunicorn(metrics_dir):
    with pytest.raises(SystemExit) as stopped:
        load(LOG_FORMAT="xml")

    assert str(stopped.value) == "LOG_FORMAT='xml' must be one of: json, text (any case)"


def test_on_starting_empties_the_metrics_directory_of_a_previous_runs_files(metrics_dir):
    metrics_dir.mkdir()
    old_run = ["counter_123.db", "gauge_livesum_123.db", "histogram_aggregate.db"]
    leftovers = [".counter_aggregate.staging", "counter_9.db.4.unreadable", "openmetrics_123.bin"]
    for name in [*old_run, *leftovers]:
        (metrics_dir / name).write_bytes(b"old run")
    (metrics_dir / ".lock").write_bytes(bytes(16))
    (metrics_dir / ".spare-claimed-123").mkdir()
    (metrics_dir / ".spare-claimed-123" / "counter.db").write_bytes(b"old run")
    conf = load()

    conf["on_starting"](server=arbiter(workers=2))

    assert sorted(path.name for path in metrics_dir.iterdir()) == [
        ".lock",
        ".owner",
        ".spare-0",
        ".spare-1",
    ]


def symlink_to_a_directory(path):
    target = path.parent.parent / "elsewhere"
    target.mkdir()
    path.symlink_to(target)


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("app.db", lambda path: path.write_bytes(b"SQLite format 3\0")),
        ("notes.txt", lambda path: path.write_text("notes")),
        ("counter.db", lambda path: path.write_bytes(b"not ours")),
        ("counter_123.db.bak", lambda path: path.write_bytes(b"not ours")),
        # Once deleted at start-up with everything in it.
        (".spare-7", lambda path: path.mkdir()),
        # Once a traceback at start-up.
        (".spare-0", symlink_to_a_directory),
        # Once overwritten by the lock's generation.
        (".lock", lambda path: path.write_text("a user's lock, holding more than 16 bytes")),
        ("counter_1.db", lambda path: path.symlink_to(path.parent / "app.db")),
    ],
)
def test_a_directory_holding_what_is_not_ours_is_refused_untouched(metrics_dir, name, make):
    metrics_dir.mkdir()
    (metrics_dir / "counter_123.db").write_bytes(b"old run")
    make(metrics_dir / name)
    before = sorted((path.name, path.is_symlink()) for path in metrics_dir.iterdir())

    with pytest.raises(SystemExit) as stopped:
        load()
    with pytest.raises(SystemExit) as stopped_later:
        gunicorn.on_starting(arbiter(workers=2))

    assert str(stopped.value) == (
        f"PROMETHEUS_MULTIPROC_DIR='{metrics_dir}' holds what is not a metric file ({name}):"
        " give the service a directory of its own, which it empties of metric files at"
        " every start"
    )
    assert str(stopped_later.value) == str(stopped.value)
    assert sorted((path.name, path.is_symlink()) for path in metrics_dir.iterdir()) == before


def test_a_directory_another_running_service_owns_is_refused_untouched(metrics_dir):
    """Its workers write into the files a start would empty: their counts would be lost."""
    load()["on_starting"](arbiter(workers=2))
    (metrics_dir / "counter_123.db").write_bytes(b"a live worker's")
    before = sorted(path.name for path in metrics_dir.iterdir())

    with pytest.raises(metrics_directory.ConfigError) as refused:
        metrics_directory.claim(metrics_dir)  # as another master would, on its own

    assert str(refused.value) == (
        f"PROMETHEUS_MULTIPROC_DIR='{metrics_dir}' belongs to a service that is running"
        f" (gunicorn master {os.getpid()}): give each service a directory of its own"
    )
    assert sorted(path.name for path in metrics_dir.iterdir()) == before
    assert (metrics_dir / "counter_123.db").read_bytes() == b"a live worker's"


def test_a_reload_whose_checks_fail_keeps_the_settings_in_force(metrics_dir, caplog):
    """gunicorn's SIGHUP reads the config file again: a check that fails then must not
    stop a master that serves."""
    serving = load(GUNICORN_TIMEOUT="45")
    serving["on_starting"](arbiter(workers=2))
    (metrics_dir / "notes.txt").write_text("a user's")

    with caplog.at_level(logging.WARNING, logger="gunicorn.error"):
        reloaded = load(GUNICORN_TIMEOUT="60")
        bad_value = load(GUNICORN_TIMEOUT="soon")

    assert reloaded == serving
    assert bad_value == serving
    assert [record.getMessage() for record in caplog.records] == [
        "Reload kept the settings in force: PROMETHEUS_MULTIPROC_DIR="
        f"'{metrics_dir}' holds what is not a metric file (notes.txt): give the service a"
        " directory of its own, which it empties of metric files at every start",
        "Reload kept the settings in force: GUNICORN_TIMEOUT='soon' must be a whole number"
        " from 1 to 3600",
    ]


@pytest.mark.parametrize("directory", ["/", "."])
def test_the_root_and_the_working_directory_are_refused(directory, monkeypatch, tmp_path):
    """Whatever else they hold, the metric files would be left among it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wsgi.py").write_text("app = None\n")

    with pytest.raises(SystemExit) as stopped:
        load(PROMETHEUS_MULTIPROC_DIR=directory)

    assert "holds what is not a metric file" in str(stopped.value)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["wsgi.py"]


def test_a_directory_too_small_stops_gunicorn_before_it_starts(metrics_dir, monkeypatch):
    """In gunicorn.conf.py, before gunicorn says it is starting: the one line that says
    why came after gunicorn's start line, when on_starting checked."""
    metrics_dir.mkdir()
    usage = shutil.disk_usage(metrics_dir)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1 << 20))

    with pytest.raises(SystemExit) as stopped:
        load(WEB_CONCURRENCY="4")

    assert str(stopped.value) == (
        f"PROMETHEUS_MULTIPROC_DIR='{metrics_dir}' has no room for the metric files:"
        " 4 workers and 2 spare sets need 9.0 MiB (No space left on device)"
    )


@pytest.mark.parametrize("value", ["", "  "])
def test_a_blank_metrics_directory_is_unset(monkeypatch, tmp_path, value):
    monkeypatch.chdir(tmp_path)

    with pytest.raises(SystemExit) as stopped:
        load(PROMETHEUS_MULTIPROC_DIR=value)

    assert "PROMETHEUS_MULTIPROC_DIR is unset" in str(stopped.value)
    assert list(tmp_path.iterdir()) == []


def test_a_metrics_directory_that_is_a_file_stops_gunicorn(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("")

    with pytest.raises(SystemExit) as stopped:
        load(PROMETHEUS_MULTIPROC_DIR=str(a_file))

    assert str(stopped.value) == f"PROMETHEUS_MULTIPROC_DIR='{a_file}' is not a directory"


def test_a_disk_too_small_stops_gunicorn_naming_the_room_needed(metrics_dir, monkeypatch):
    conf = load()
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(free=1 << 20))

    with pytest.raises(SystemExit) as stopped:
        conf["on_starting"](server=arbiter(workers=4))

    assert str(stopped.value) == (
        f"PROMETHEUS_MULTIPROC_DIR='{metrics_dir}' has no room for the metric files:"
        " 4 workers and 2 spare sets need 9.0 MiB (No space left on device)"
    )


def test_post_fork_allocates_the_workers_metric_files(metrics_dir):
    conf = load()

    conf["post_fork"](server=None, worker=SimpleNamespace(pid=4240))

    assert sorted(path.name for path in metrics_dir.glob("*.db")) == [
        "counter_4240.db",
        "gauge_liveall_4240.db",
        "gauge_livemax_4240.db",
        "gauge_livesum_4240.db",
        "histogram_4240.db",
    ]


def test_post_fork_exits_the_worker_when_the_disk_has_no_room(metrics_dir, monkeypatch, caplog):
    def disk_full(descriptor, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", disk_full)
    waits = []
    monkeypatch.setattr(time, "sleep", waits.append)
    conf = load(GUNICORN_TIMEOUT="1")
    server = SimpleNamespace(
        log=logging.getLogger("gunicorn.error"), cfg=SimpleNamespace(timeout=1)
    )

    # SystemExit(1), not an exception: gunicorn's master stops on a worker's boot error.
    with pytest.raises(SystemExit) as exited:
        conf["post_fork"](server=server, worker=SimpleNamespace(pid=4241))

    assert exited.value.code == 1
    assert "Worker 4241 cannot allocate its metric files" in caplog.text
    # It waits before it exits, so that the master does not fork replacements in a tight
    # loop; for less than the timeout, so that the master does not abort it first.
    assert waits == [0.5]


def test_a_worker_that_could_not_get_its_files_is_not_counted_as_killed(metrics_dir, monkeypatch):
    """A full disk with no spare set: post_fork exits the worker, saying why, before it
    serves anything. It was counted as killed, every time the master tried another."""
    metrics_dir.mkdir()
    dead_worker_exits(4243, recorded="recycled")  # a counter whose key could be taken
    conf = load(GUNICORN_TIMEOUT="1")
    server = SimpleNamespace(
        WORKERS={}, log=logging.getLogger("gunicorn.error"), cfg=SimpleNamespace(timeout=1)
    )
    allocate = os.posix_fallocate
    allocated = []

    def room_for_one_file(descriptor, offset, length):
        if allocated:
            raise OSError(errno.ENOSPC, "No space left on device")
        allocated.append(length)
        allocate(descriptor, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", room_for_one_file)
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    with pytest.raises(SystemExit):
        conf["post_fork"](server=server, worker=SimpleNamespace(pid=4244))
    monkeypatch.setattr(os, "posix_fallocate", allocate)

    assert allocated, "one file had room"
    assert not list(metrics_dir.glob("*_4244.db")), "none of its files left behind"
    conf["child_exit"](server=server, worker=SimpleNamespace(pid=4244))
    conf["child_exit"](server=server, worker=SimpleNamespace(pid=4243))
    assert aggregate_exits(metrics_dir) == {
        "recycled": 1,
        "timeout": 0,
        "shutdown": 0,
        "killed": 0,
    }


def test_child_exit_folds_the_dead_workers_metrics(metrics_dir):
    metrics_dir.mkdir()
    with worker(4242):
        Counter("jobs", "Jobs done.", registry=None).inc(3)
        Gauge("busy", "Busy.", multiprocess_mode="livesum", registry=None).set(1)
    conf = load()

    conf["child_exit"](server=SimpleNamespace(WORKERS={}), worker=SimpleNamespace(pid=4242))

    assert sorted(path.name for path in metrics_dir.glob("*.db")) == ["counter_aggregate.db"]


def dead_worker_exits(pid, recorded=None):
    """The exit counter a worker leaves: every reason at 0, and `recorded` at 1."""
    with worker(pid):
        exits = Counter("gunicorn_worker_exits", "Exits.", ["reason"], registry=None)
        for reason in ("recycled", "timeout", "shutdown", "killed"):
            exits.labels(reason)
        if recorded:
            exits.labels(recorded).inc()


def aggregate_exits(metrics_dir):
    registry = CollectorRegistry()
    registry.register(LockedCollector(metrics_dir))
    return {
        sample.labels["reason"]: sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == "gunicorn_worker_exits_total"
    }


def test_child_exit_counts_a_worker_that_said_nothing_as_killed(metrics_dir):
    metrics_dir.mkdir()
    dead_worker_exits(4250)
    dead_worker_exits(4251, recorded="recycled")
    conf = load()
    server = SimpleNamespace(WORKERS={})

    conf["child_exit"](server=server, worker=SimpleNamespace(pid=4250))
    conf["child_exit"](server=server, worker=SimpleNamespace(pid=4251))

    assert aggregate_exits(metrics_dir) == {
        "recycled": 1,
        "timeout": 0,
        "shutdown": 0,
        "killed": 1,
    }


def test_child_exit_counts_a_worker_killed_before_it_made_its_exit_counter(metrics_dir):
    """Killed between post_fork's allocation and its prepare_exit_count: a counter file
    with no keys, or one not yet sized. The key comes from another worker's file. A
    worker with no counter file at all never got its files (post_fork exited it, saying
    why): it was not killed, and is not counted."""
    metrics_dir.mkdir()
    dead_worker_exits(4252, recorded="shutdown")
    metrics_directory.allocate_worker_files(4253, metrics_dir)
    (metrics_dir / "counter_4254.db").write_bytes(b"")
    conf = load()
    server = SimpleNamespace(WORKERS={})

    conf["child_exit"](server=server, worker=SimpleNamespace(pid=4253))
    conf["child_exit"](server=server, worker=SimpleNamespace(pid=4254))
    conf["child_exit"](server=server, worker=SimpleNamespace(pid=4255))
    conf["child_exit"](server=server, worker=SimpleNamespace(pid=4252))

    assert aggregate_exits(metrics_dir) == {
        "recycled": 0,
        "timeout": 0,
        "shutdown": 1,
        "killed": 2,
    }
    assert sorted(path.name for path in metrics_dir.glob("*.db")) == [
        "counter_aggregate.db",
        "histogram_aggregate.db",
    ]


def test_an_exit_is_counted_once_though_a_fold_is_retried(metrics_dir, monkeypatch):
    """The counter folded, the histogram not (a full disk): the retry at the next exit
    must not count the exit again in a new file."""
    metrics_dir.mkdir()
    dead_worker_exits(4256)
    with worker(4256):
        Histogram("duration", "Duration.", registry=None).observe(0.1)
    conf = load()
    server = SimpleNamespace(WORKERS={}, log=logging.getLogger("gunicorn.error"))
    fold = folding._fold

    def fold_counters_only(dead, aggregate):
        if dead.name.startswith("histogram"):
            raise OSError(errno.ENOSPC, "No space left on device")
        fold(dead, aggregate)

    monkeypatch.setattr(folding, "_fold", fold_counters_only)
    conf["child_exit"](server=server, worker=SimpleNamespace(pid=4256))
    monkeypatch.setattr(folding, "_fold", fold)
    dead_worker_exits(4257, recorded="recycled")
    conf["child_exit"](server=server, worker=SimpleNamespace(pid=4257))

    assert aggregate_exits(metrics_dir)["killed"] == 1
    assert sorted(path.name for path in metrics_dir.glob("*.db")) == [
        "counter_aggregate.db",
        "histogram_aggregate.db",
    ]


def test_child_exit_says_nothing_of_an_exit_before_any_worker_made_the_counter(metrics_dir):
    metrics_dir.mkdir()
    conf = load()

    conf["child_exit"](server=SimpleNamespace(WORKERS={}), worker=SimpleNamespace(pid=4255))

    assert list(metrics_dir.glob("*.db")) == []


@pytest.mark.parametrize(("requests_served", "reason"), [(100, "recycled"), (99, "shutdown")])
def test_worker_exit_says_whether_the_worker_was_recycled(
    metrics_dir, monkeypatch, requests_served, reason
):
    """Counted once, in this worker's counter, with the first reason given: a worker the
    master aborts (worker_abort) exits through worker_exit too. The master's own call,
    for a worker it found gone (another pid), counts nothing."""

    def exits():
        [family] = metrics.WORKER_EXITS.collect()
        return {
            sample.labels["reason"]: sample.value
            for sample in family.samples
            if sample.name == "gunicorn_worker_exits_total"
        }

    monkeypatch.setattr(worker_records, "_exit_recorded", False)  # a fresh worker's
    worker_records.prepare_exit_count()
    before = exits()
    conf = load()
    booted = SimpleNamespace(
        pid=os.getpid(),
        booted=True,
        nr=requests_served,
        max_requests=100,
        cfg=SimpleNamespace(graceful_timeout=8, timeout=30),  # read when the worker traces
    )

    conf["worker_exit"](server=None, worker=SimpleNamespace(pid=os.getpid() + 1, booted=True))
    conf["worker_exit"](server=None, worker=booted)
    conf["worker_abort"](worker=booted)

    counted = {name: exits()[name] - before[name] for name in before}
    assert counted == {"recycled": 0, "timeout": 0, "shutdown": 0, "killed": 0, reason: 1}


def test_child_exit_logs_a_failed_fold_and_leaves_the_master_running(
    metrics_dir, monkeypatch, caplog
):
    metrics_dir.mkdir()
    dead_worker_exits(4243, recorded="shutdown")
    with worker(4243):
        Gauge("busy", "Busy.", multiprocess_mode="livesum", registry=None).set(1)
    conf = load()
    server = SimpleNamespace(WORKERS={}, log=logging.getLogger("gunicorn.error"))

    def disk_full(descriptor, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", disk_full)
    conf["child_exit"](server=server, worker=SimpleNamespace(pid=4243))

    assert "Could not fold the metrics of dead worker 4243" in caplog.text
    # What could not be folded stays; the dead worker's requests in progress do not.
    assert sorted(path.name for path in metrics_dir.glob("*.db")) == ["counter_4243.db"]


def test_child_exit_sets_aside_a_file_no_reader_can_read(metrics_dir, caplog):
    metrics_dir.mkdir()
    corrupt = metrics_dir / "counter_4244.db"
    corrupt.write_bytes(KEY_PAST_THE_END)
    conf = load()
    server = SimpleNamespace(WORKERS={}, log=logging.getLogger("gunicorn.error"))

    conf["child_exit"](server=server, worker=SimpleNamespace(pid=4244))

    assert "Could not fold" not in caplog.text
    assert "Set aside" in caplog.text
    assert sorted(path.name for path in metrics_dir.iterdir() if "4244" in path.name) == [
        "counter_4244.db.1.unreadable"
    ]


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_a_lock_that_is_not_a_regular_file_of_ours_is_never_written_through(tmp_path, kind):
    """A .lock replaced while the service runs: the fold, which writes the lock's
    generation, once wrote through a symbolic link over an SQLite database's header."""
    database = tmp_path / "app.db"
    original = b"SQLite format 3\0" + bytes(100)
    database.write_bytes(original)
    directory = tmp_path / "metrics"
    directory.mkdir()
    if kind == "symlink":
        (directory / ".lock").symlink_to(database)
    else:
        os.mkfifo(directory / ".lock")

    with pytest.raises(OSError, match=r"\.lock"):
        folding.mark_worker_dead(123, directory, live=[])

    assert database.read_bytes() == original


def test_a_disk_that_stays_full_says_so_once_a_minute_without_a_traceback(
    metrics_dir, monkeypatch, caplog
):
    """Workers dying on a full disk, and each replacement unable to get its files, one a
    second: the log once took a traceback for each, and a line for each boot."""

    def disk_full(*arguments, **options):
        raise OSError(errno.ENOSPC, "No space left on device")

    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    conf = load()
    monkeypatch.setattr(folding, "mark_worker_dead", disk_full)
    monkeypatch.setattr(os, "posix_fallocate", disk_full)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(free=0))
    server = SimpleNamespace(
        WORKERS={}, log=logging.getLogger("gunicorn.error"), cfg=SimpleNamespace(timeout=30)
    )

    with caplog.at_level(logging.ERROR, logger="gunicorn.error"):
        for pid in range(5000, 5120):  # two minutes of deaths and failed replacements
            conf["child_exit"](server=server, worker=SimpleNamespace(pid=pid))
            with pytest.raises(SystemExit):
                conf["post_fork"](server=server, worker=SimpleNamespace(pid=pid + 1000))
            clock[0] += 1

    full = "[Errno 28] No space left on device"
    assert [record.getMessage() for record in caplog.records] == [
        f"Could not fold the metrics of dead worker 5000: {full}",
        f"Worker 6000 cannot allocate its metric files: {full}",
        f"Could not fold the metrics of dead worker 5060: {full} (59 more since)",
        f"Worker 6060 cannot allocate its metric files: {full}",
    ]
    assert not [record for record in caplog.records if record.exc_info]
