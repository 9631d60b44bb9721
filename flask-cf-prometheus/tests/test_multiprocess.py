import contextlib
import errno
import fcntl
import mmap
import os
import random
import shutil
import struct
import subprocess
import sys
import threading
import time
import tracemalloc

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.openmetrics import parser as openmetrics_parser

from flask_cf_prometheus._exemplars import observe_traced
from flask_cf_prometheus._fold import mark_worker_dead
from flask_cf_prometheus._metric_files import claims_a_hole
from flask_cf_prometheus._metrics_directory import (
    WORKER_FILE_SIZES,
    allocate_worker_files,
    locked,
    reset_directory,
    worker_file,
)
from flask_cf_prometheus._multiprocess import LockedCollector

from . import writers
from .service import create_app
from .writers import KEY_PAST_THE_END, checkpoints, worker, writer

BUCKETS = (0.1, 0.5, 1.0)


def serve_requests(pid, durations, code="200"):
    """What worker `pid` records for requests that took `durations` seconds."""
    with worker(pid):
        requests = Counter("requests", "Requests.", ["code"], registry=None)
        duration = Histogram("duration", "Duration.", buckets=BUCKETS, registry=None)
        for seconds in durations:
            requests.labels(code).inc()
            duration.observe(seconds)


def scrape(directory):
    registry = CollectorRegistry()
    registry.register(LockedCollector(directory))
    return registry


def value(directory, name, **labels):
    return scrape(directory).get_sample_value(name, labels) or 0.0


def total(directory, name):
    """The sum of every sample called `name`, over all label sets."""
    return sum(
        sample.value
        for metric in scrape(directory).collect()
        for sample in metric.samples
        if sample.name == name
    )


def db_files(directory):
    return sorted(path.name for path in directory.glob("*.db"))


def test_a_reused_pid_goes_on_from_the_file_its_namesake_left(directory):
    with worker(120):
        Gauge("last", "Last.", ["kind"], registry=None).labels("a").set(4)
    mark_worker_dead(120, directory)  # "all" gauges stay per process, file included

    with worker(120):
        last = Gauge("last", "Last.", ["kind"], registry=None)
        assert last.labels("a")._value.get() == 4
        last.labels("b").set(6)

    assert scrape(directory).get_sample_value("last", {"kind": "a", "pid": "120"}) == 4
    assert scrape(directory).get_sample_value("last", {"kind": "b", "pid": "120"}) == 6


FORKING_WORKER = """
import os
from prometheus_client import Counter

requests = Counter("requests", "Requests.")
requests.inc()
child = os.fork()
if child == 0:
    requests.inc(2)
    os._exit(0)
os.waitpid(child, 0)
print(os.getpid(), child)
"""


def test_a_forked_worker_writes_files_of_its_own(directory):
    """As gunicorn forks its workers: in a fresh interpreter, never a fork of pytest's."""
    forked = subprocess.run(
        [sys.executable, "-c", FORKING_WORKER],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    parent, child = forked.stdout.split()

    assert db_files(directory) == sorted([f"counter_{parent}.db", f"counter_{child}.db"])
    assert value(directory, "requests_total") == 3


def test_counters_and_histograms_stay_exact_as_workers_die(directory):
    serve_requests(101, [0.05, 0.3, 7.0])
    serve_requests(102, [0.05])
    before = generate_latest(scrape(directory))

    mark_worker_dead(101, directory)
    mark_worker_dead(102, directory)

    assert generate_latest(scrape(directory)) == before
    assert value(directory, "requests_total", code="200") == 4
    assert value(directory, "duration_bucket", le="0.1") == 2
    assert value(directory, "duration_bucket", le="0.5") == 3
    assert value(directory, "duration_bucket", le="+Inf") == 4
    assert value(directory, "duration_count") == 4
    assert value(directory, "duration_sum") == pytest.approx(7.4)
    assert db_files(directory) == ["counter_aggregate.db", "histogram_aggregate.db"]


def test_files_stay_proportional_to_live_workers(directory):
    for pid in range(1000, 1050):
        serve_requests(pid, [0.2, 0.2])
        mark_worker_dead(pid, directory)
    serve_requests(2000, [0.2])

    assert value(directory, "requests_total", code="200") == 101
    assert db_files(directory) == [
        "counter_2000.db",
        "counter_aggregate.db",
        "histogram_2000.db",
        "histogram_aggregate.db",
    ]


def test_a_reused_pid_starts_from_zero_and_is_folded_again(directory):
    serve_requests(300, [0.2] * 3)
    mark_worker_dead(300, directory)
    serve_requests(300, [0.2] * 4)

    assert value(directory, "requests_total", code="200") == 7
    mark_worker_dead(300, directory)
    assert value(directory, "requests_total", code="200") == 7
    assert value(directory, "duration_count") == 7


def test_a_worker_killed_before_sizing_its_files_leaves_nothing_behind(directory):
    serve_requests(310, [0.2] * 2)
    mark_worker_dead(310, directory)
    (directory / "counter_311.db").touch()
    (directory / "histogram_311.db").touch()

    mark_worker_dead(311, directory)

    assert value(directory, "requests_total", code="200") == 2
    assert value(directory, "duration_count") == 2
    assert db_files(directory) == ["counter_aggregate.db", "histogram_aggregate.db"]


def test_live_gauges_go_with_their_worker(directory):
    with worker(400):
        Gauge("in_progress", "In progress.", multiprocess_mode="livesum", registry=None).set(2)
        Gauge("memory", "Memory.", multiprocess_mode="liveall", registry=None).set(5)
    with worker(401):
        Gauge("in_progress", "In progress.", multiprocess_mode="livesum", registry=None).set(1)

    mark_worker_dead(400, directory)

    assert value(directory, "in_progress") == 1
    assert scrape(directory).get_sample_value("memory", {"pid": "400"}) is None


def test_max_gauges_are_folded_and_all_gauges_kept_per_worker(directory):
    for pid, level in ((500, 3.0), (501, 8.0), (502, 5.0)):
        with worker(pid):
            Gauge("peak", "Peak.", multiprocess_mode="max", registry=None).set(level)
            Gauge("last", "Last.", registry=None).set(level)
        mark_worker_dead(pid, directory)

    assert value(directory, "peak") == 8
    assert scrape(directory).get_sample_value("last", {"pid": "501"}) == 8
    assert "gauge_max_aggregate.db" in db_files(directory)


def test_compaction_waits_for_a_scrape_in_progress(directory):
    serve_requests(600, [0.2])
    with locked(directory, fcntl.LOCK_SH):
        # While a scrape holds the shared lock, the exclusive one a fold takes cannot be
        # had: the fold waits, and the scrape sees the dead worker's files.
        with pytest.raises(BlockingIOError), locked(directory, fcntl.LOCK_EX | fcntl.LOCK_NB):
            pass
        assert "counter_600.db" in db_files(directory)
    mark_worker_dead(600, directory)

    assert db_files(directory) == ["counter_aggregate.db", "histogram_aggregate.db"]


def test_scrapes_racing_worker_deaths_never_go_backwards(directory):
    deaths = 150
    totals = []
    errors = []
    done = threading.Event()
    scraped = threading.Semaphore(0)

    def keep_scraping():
        try:
            while not done.is_set():
                totals.append(value(directory, "requests_total", code="200"))
                scraped.release()
        except Exception as error:  # reported by the assertion below
            errors.append(error)

    scraper = threading.Thread(target=keep_scraping)
    scraper.start()
    try:
        for pid in range(10_000, 10_000 + deaths):
            serve_requests(pid, [0.2])
            mark_worker_dead(pid, directory)
            if pid % 10 == 0:  # a scrape at least every 10 deaths, whatever the scheduler
                assert scraped.acquire(timeout=30), "the scraper stopped"
    finally:
        done.set()
        scraper.join(30)

    assert errors == []
    assert len(totals) >= deaths // 10
    assert all(later >= earlier for earlier, later in zip(totals, totals[1:], strict=False))
    assert value(directory, "requests_total", code="200") == deaths


def test_a_growing_file_never_shows_fewer_bytes_used(directory):
    """Scrapes read as many of a worker's values as its file's header says are there; a
    header that reads 0, even for an instant, hides all of them (client_python #315).
    A thread reads the header while the worker writes; at each of its pauses, the
    header has grown."""
    went_down = []
    seen = []
    with writer(directory, 5_000, pauses=20) as process:
        paused = checkpoints(process)
        next(paused)  # its file exists, the first label sets in it
        path = directory / f"counter_{process.pid}.db"
        with (
            path.open("rb") as file,
            contextlib.closing(mmap.mmap(file.fileno(), 8, prot=mmap.PROT_READ)) as header,
        ):
            done = threading.Event()

            def watch():
                last = 0
                while not done.is_set():
                    used = struct.unpack_from("i", header)[0]
                    if used < last:
                        went_down.append((last, used))
                    last = used
                    time.sleep(0)  # the GIL, for the thread that drives the writer

            watcher = threading.Thread(target=watch)
            watcher.start()
            try:
                for _ in paused:  # the writer resumes, and this waits for its next pause
                    seen.append(struct.unpack_from("i", header)[0])
            finally:
                done.set()
                watcher.join(10)

    assert went_down == []
    assert len(seen) == 19
    assert seen == sorted(seen)
    assert len(set(seen)) == 19, "the header grew from each pause to the next"


def test_scrapes_never_go_backwards_while_a_worker_adds_label_sets(directory):
    totals = []
    with writer(directory, 1_000, pauses=20) as process:
        for added in checkpoints(process):
            totals.append(total(directory, "events_total"))
            assert totals[-1] == added
        totals.append(total(directory, "events_total"))

    assert totals == sorted(totals)
    assert totals[-1] == 1_000


def test_reset_directory_empties_a_previous_run(directory):
    serve_requests(700, [0.2])

    reset_directory(directory, workers=2)

    assert db_files(directory) == []


@pytest.fixture
def full_disk(monkeypatch):
    """Make every allocation fail as on a full disk, until `.room()` is called."""

    class Disk:
        full = True

        def room(self):
            self.full = False

    disk = Disk()
    allocate = os.posix_fallocate

    def posix_fallocate(descriptor, offset, length):
        if disk.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        allocate(descriptor, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", posix_fallocate)
    return disk


def allocated_bytes(path):
    return path.stat().st_blocks * 512


def test_a_workers_files_have_their_disk_blocks_before_it_writes(directory):
    allocate_worker_files(1200, directory)
    for prefix, size in WORKER_FILE_SIZES.items():
        assert allocated_bytes(directory / worker_file(prefix, 1200)) >= size

    serve_requests(1200, [0.2, 0.2])

    assert value(directory, "requests_total", code="200") == 2
    assert value(directory, "duration_count") == 2


def test_aggregate_files_take_the_room_their_values_need_however_many_fold(directory):
    for pid in range(1300, 1340):
        allocate_worker_files(pid, directory)
        serve_requests(pid, [0.2])
        mark_worker_dead(pid, directory)

    assert value(directory, "requests_total", code="200") == 40
    sizes = {path.name: path.stat().st_size for path in directory.glob("*.db")}
    assert sizes == {"counter_aggregate.db": 1 << 16, "histogram_aggregate.db": 1 << 16}


def test_allocating_a_reused_pids_files_keeps_their_values(directory):
    with worker(1210):
        Gauge("last", "Last.", registry=None).set(7)
    allocate_worker_files(1210, directory)

    assert scrape(directory).get_sample_value("last", {"pid": "1210"}) == 7


def test_a_worker_booting_on_a_full_disk_takes_a_spare_set(directory, full_disk):
    full_disk.room()
    reset_directory(directory, workers=2)
    full_disk.full = True

    allocate_worker_files(1220, directory)
    allocate_worker_files(1221, directory)
    serve_requests(1220, [0.2])

    assert value(directory, "requests_total", code="200") == 1
    assert len(list(directory.glob("*_1220.db"))) == len(list(directory.glob("*_1221.db"))) == 5
    assert list(directory.glob(".spare-*")) == []
    with pytest.raises(OSError, match="No space left"):
        allocate_worker_files(1222, directory)


def test_a_full_disk_leaves_a_dead_workers_files_counted_until_there_is_room(directory, full_disk):
    serve_requests(1230, [0.2] * 3)
    before = generate_latest(scrape(directory))

    with pytest.raises(OSError, match="No space left"):
        mark_worker_dead(1230, directory)

    assert generate_latest(scrape(directory)) == before
    assert db_files(directory) == ["counter_1230.db", "histogram_1230.db"]
    assert list(directory.glob(".*.staging")) == []

    full_disk.room()
    serve_requests(1231, [0.2])
    mark_worker_dead(1231, directory)

    assert value(directory, "requests_total", code="200") == 4
    assert value(directory, "duration_count") == 4
    assert db_files(directory) == ["counter_aggregate.db", "histogram_aggregate.db"]
    assert sorted(path.name for path in directory.glob(".spare-*")) == [".spare-0", ".spare-1"]


def test_a_failed_fold_is_not_retried_while_a_new_worker_has_the_pid(directory, full_disk):
    serve_requests(1240, [0.2])
    with pytest.raises(OSError, match="No space left"):
        mark_worker_dead(1240, directory)
    full_disk.room()

    mark_worker_dead(1241, directory, live={1240: "a new worker with the old pid"})

    assert "counter_1240.db" in db_files(directory)
    mark_worker_dead(1240, directory)
    assert db_files(directory) == ["counter_aggregate.db", "histogram_aggregate.db"]
    assert value(directory, "requests_total", code="200") == 1


def test_a_worker_file_no_reader_can_read_is_set_aside_and_holds_up_no_other(directory):
    # A file that says it holds 64 bytes of values, with a first key longer than that.
    (directory / "counter_1260.db").write_bytes(KEY_PAST_THE_END)
    mark_worker_dead(1260, directory)

    serve_requests(1261, [0.2])
    mark_worker_dead(1261, directory)

    assert db_files(directory) == ["counter_aggregate.db", "histogram_aggregate.db"]
    assert (directory / "counter_1260.db.1.unreadable").exists()
    assert value(directory, "requests_total", code="200") == 1
    assert value(directory, "metrics_files_unreadable") == 1


def test_a_worker_dying_while_the_lock_is_broken_is_folded_once_it_works(directory):
    """The pid is kept before anything can fail, its live gauges go at once, and its
    files are folded at the next worker exit after the lock is repaired."""
    for pid in (1300, 1301, 1302):
        with worker(pid):
            Gauge("alive", "Alive.", multiprocess_mode="livesum", registry=None).set(1)
            Counter("requests", "Requests.", registry=None).inc(pid - 1299)
    (directory / ".lock").mkdir()  # replaced by a directory: it cannot be opened

    with pytest.raises(IsADirectoryError):
        mark_worker_dead(1300, directory, live=[1301, 1302])
    assert not (directory / "gauge_livesum_1300.db").exists()
    assert (directory / "counter_1300.db").exists()

    (directory / ".lock").rmdir()
    mark_worker_dead(1301, directory, live=[1302])

    assert value(directory, "alive") == 1
    assert value(directory, "requests_total") == 1 + 2 + 3
    assert db_files(directory) == [
        "counter_1302.db",
        "counter_aggregate.db",
        "gauge_livesum_1302.db",
    ]


def garbage(seed):
    """4 KiB that say they hold 4 KiB of values, and hold random bytes (seeded, so
    that every run reads the same garbage)."""
    return writers.garbage(random.Random(seed))  # noqa: S311


def hostile_files(directory):
    """Files in the metrics directory that prometheus_client's reader cannot read."""
    serve_requests(1400, [0.2])
    good = (directory / "counter_1400.db").read_bytes()
    used = struct.unpack_from("i", good)[0]
    (directory / "counter_1401.db").write_bytes(garbage(1401))
    (directory / "counter_1402.db").write_bytes(good[: used // 2])  # truncated
    (directory / "counter_1403.db").write_bytes(struct.pack("i", 1 << 30) + good[4:])
    negative_length = bytearray(good)
    struct.pack_into("i", negative_length, 8, -5)
    (directory / "counter_1404.db").write_bytes(bytes(negative_length))
    not_json = bytearray(good)
    not_json[12:14] = b"[["
    (directory / "counter_1405.db").write_bytes(bytes(not_json))
    (directory / "x.db").mkdir()
    (directory / "notes.db").write_bytes(good)  # a name prometheus_client cannot type
    return 6


def test_a_file_no_reader_can_read_never_fails_a_scrape(directory, caplog):
    unreadable = hostile_files(directory)
    serve_requests(1410, [0.2, 0.3])
    (directory / "counter_abc.db").write_bytes((directory / "counter_1410.db").read_bytes())

    for _ in range(2):
        assert value(directory, "requests_total", code="200") == 1 + 2 + 2
        assert value(directory, "metrics_files_unreadable") == unreadable

    said = [record.message for record in caplog.records if record.name.endswith("multiprocess")]
    assert len(said) == unreadable, "each said once, not at every scrape"


def sparse_metric_file(path, size):
    """A file named like a metric file whose header claims `size` bytes in use, of which
    the disk holds none: a hole where its values would be."""
    with path.open("wb") as file:
        file.write(struct.pack("i", size - 8))
        file.truncate(size)


def test_a_sparse_file_or_a_link_costs_a_scrape_no_more_than_a_clean_one(directory):
    """A 2 GiB sparse file once made every scrape read it whole: 2 GiB per worker, 4 to
    16 s. A scrape reads what a live metric file can hold, and no more."""
    serve_requests(1510, [0.2, 0.3])
    tracemalloc.start()
    try:
        clean = scrape_peak(directory)
        sparse_metric_file(directory / "counter_1511.db", 256 << 20)
        (directory / "elsewhere").mkdir()
        sparse_metric_file(directory / "elsewhere" / "big.db", 256 << 20)
        (directory / "counter_1512.db").symlink_to(directory / "elsewhere" / "big.db")
        hostile = scrape_peak(directory)
    finally:
        tracemalloc.stop()

    assert value(directory, "requests_total", code="200") == 2
    assert value(directory, "metrics_files_unreadable") == 2
    assert hostile <= 3 * clean, (hostile, clean)
    # The same check for prometheus_client's reader, where scrapes fall back to it.
    assert claims_a_hole(directory / "counter_1511.db")
    assert not claims_a_hole(directory / "counter_1510.db")


def scrape_peak(directory):
    """The most memory a scrape of `directory` allocated, in bytes."""
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    generate_latest(scrape(directory))
    return tracemalloc.get_traced_memory()[1] - before


def test_a_fold_sets_an_aggregate_it_cannot_read_aside(directory):
    (directory / "counter_aggregate.db").write_bytes(garbage(1419))
    serve_requests(1420, [0.2])
    serve_requests(1421, [0.2])

    mark_worker_dead(1420, directory, live=[1421])

    assert value(directory, "requests_total", code="200") == 2
    assert (directory / "counter_aggregate.db.1.unreadable").exists()
    assert value(directory, "metrics_files_unreadable") == 1
    assert db_files(directory)[:2] == ["counter_1421.db", "counter_aggregate.db"]
    reset_directory(directory, workers=2)
    assert list(directory.glob("*.unreadable")) == []


def test_a_removed_directory_is_made_again_by_scrapes_and_booting_workers(directory):
    serve_requests(1250, [0.2])
    registry = scrape(directory)  # as the service makes it, at start-up
    shutil.rmtree(directory)

    assert registry.get_sample_value("requests_total", {"code": "200"}) is None
    assert (directory / ".lock").exists()
    allocate_worker_files(1251, directory)
    serve_requests(1251, [0.2, 0.2])

    assert registry.get_sample_value("requests_total", {"code": "200"}) == 2


def test_metrics_endpoint_reads_the_shared_files(directory):
    serve_requests(800, [0.2, 0.2])
    mark_worker_dead(800, directory)
    config = {"METRICS_PATH": "/metrics", "METRICS_BASIC_AUTH": True}
    client = create_app({**config, "METRICS_BASIC_AUTH_TOKEN": "token"}).test_client()

    response = client.get(
        "/metrics?name[]=requests_total", headers={"Authorization": "Bearer token"}
    )

    assert response.status_code == 200
    assert response.text.splitlines() == [
        "# HELP requests_total Requests.",
        "# TYPE requests_total counter",
        'requests_total{code="200"} 2.0',
    ]


def test_scrapes_answer_where_the_lock_cannot_be_opened(directory):
    """A read-only metrics directory, or a lock file that cannot be opened for writing,
    once made every scrape an OSError: a 500. Nothing can fold files there either, so
    they are read whole without the lock, and the log says so once."""
    serve_requests(810, [0.2, 0.2, 0.2])
    (directory / ".lock").mkdir()  # opening it for writing fails, even for root
    config = {"METRICS_PATH": "/metrics", "METRICS_BASIC_AUTH": True}
    client = create_app({**config, "METRICS_BASIC_AUTH_TOKEN": "token"}).test_client()

    responses = [
        client.get("/metrics?name[]=requests_total", headers={"Authorization": "Bearer token"})
        for _ in range(2)
    ]

    assert [response.status_code for response in responses] == [200, 200]
    assert 'requests_total{code="200"} 3.0' in responses[1].text.splitlines()
    assert value(directory, "duration_count") == 3


def test_a_workers_exemplars_outlive_it_in_the_aggregate(directory):
    """This process as a worker: its exemplars are read from its file, then from the
    aggregate its fold made; an OpenMetrics scrape carries them, the text format not."""
    traces = [(f"{number:032x}", f"{number:016x}") for number in range(1, 4)]
    with worker(None):
        duration = Histogram("duration", "Duration.", ["code"], buckets=BUCKETS, registry=None)
        observe_traced(duration.labels("200"), 0.3, traces[0], directory)
        observe_traced(duration.labels("200"), 0.2, traces[1], directory)  # newer, same bucket
        observe_traced(duration.labels("500"), 7.0, traces[2], directory)
        observe_traced(duration.labels("500"), 0.05, None, directory)
    expected = {
        (("code", "200"), ("le", "0.5")): (traces[1], 0.2),
        (("code", "500"), ("le", "+Inf")): (traces[2], 7.0),
    }

    assert openmetrics_exemplars(directory) == expected
    mark_worker_dead(os.getpid(), directory)
    assert not list(directory.glob(f"*_{os.getpid()}.*"))
    assert openmetrics_exemplars(directory) == expected
    assert b"trace_id" not in generate_latest(scrape(directory))


def openmetrics_exemplars(directory):
    body = LockedCollector(directory).exposition(openmetrics.generate_latest).decode()
    return {
        tuple(sorted(sample.labels.items())): (
            (sample.exemplar.labels["trace_id"], sample.exemplar.labels["span_id"]),
            sample.exemplar.value,
        )
        for family in openmetrics_parser.text_string_to_metric_families(body)
        for sample in family.samples
        if sample.exemplar
    }
