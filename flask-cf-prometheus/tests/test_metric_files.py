"""metric_files' reader against prometheus_client's own, on the same files.

Files are written by prometheus_client's own value class, as several workers, in a
seeded random history; after every step both read them, and must agree sample for
sample, in the same order, and byte for byte in every exposition the metrics endpoint
can choose. A failing seed is in the assertion's message: `SEEDS` can be set to it.
"""

import contextlib
import glob
import itertools
import logging
import math
import os
import random
import shutil
import sqlite3
import struct
import threading
import time
import tracemalloc

import pytest
from prometheus_client import Counter, Gauge, Histogram, Summary, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.samples import Exemplar, Sample
from prometheus_client.utils import floatToGoString

from flask_cf_prometheus import _metric_files as metric_files
from flask_cf_prometheus import _openmetrics_files as openmetrics_files
from flask_cf_prometheus._fold import mark_worker_dead
from flask_cf_prometheus._metric_files import merge_readable
from flask_cf_prometheus._metrics_directory import allocate_worker_files
from flask_cf_prometheus._multiprocess import LockedCollector
from flask_cf_prometheus._rendering import Families, Rendering

from .proven import DECLARED, unproven_message
from .writers import checkpoints, garbage, worker, writer

SEEDS = range(int(os.environ.get("METRIC_FILES_SEEDS", "30")))
STEPS = 60
GAUGE_MODES = (
    "all",
    "liveall",
    "sum",
    "livesum",
    "max",
    "livemax",
    "min",
    "livemin",
    "mostrecent",
    "livemostrecent",
)
LABEL_VALUES = ("a", "b", "é", 'say "hi"', "back\\slash", "new\nline", "🙂", "")
NUMBERS = (0.0, -0.0, 1.0, 0.5, 2.5, 1e-9, 123456789.125, 1e21, -3.75, float("inf"))
# Accept headers the metrics endpoint serves: the text format, OpenMetrics, with
# UTF-8 names allowed, and Prometheus 3's default.
ACCEPT = (
    "",
    "application/openmetrics-text; version=1.0.0",
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;q=0.3,"
    "text/plain;version=0.0.4;q=0.2,*/*;q=0.1",
)


def listing(directory):
    return [
        path
        for path in glob.glob(os.path.join(directory, "*.db"))
        if os.path.isfile(path) and os.path.getsize(path)
    ]


def summary(metrics):
    """Every field of every sample, NaN equal to NaN and -0.0 apart from 0.0."""
    return [
        (
            metric.name,
            metric.documentation,
            metric.type,
            [
                (sample.name, sample.labels, repr(sample.value), sample.timestamp, sample.exemplar)
                for sample in metric.samples
            ],
        )
        for metric in metrics
    ]


class Extras:
    """The exemplars and starts a history left, as the workers' files should give them:
    the newest exemplar of each bucket and the earliest start of each series, written
    by the kit's writer into worker `pid`'s file."""

    def __init__(self, directory):
        self._directory = directory
        self.newest = {}  # (sample name, sorted label pairs) -> Exemplar
        self.starts = {}  # (family name, sorted label pairs) -> timestamp
        self._clock = itertools.count(1_700_000_000)

    def clear(self):
        self.newest.clear()
        self.starts.clear()

    def start(self, pid, family, labels, timestamp):
        """A start for series `labels` of `family` (a counter's or histogram's)."""
        key = openmetrics_files.key_text(f"{family}_created", labels)
        writer = openmetrics_files.Writer(self._directory / openmetrics_files.file_name(pid))
        assert writer.record_start(key, timestamp)
        series = (family, tuple(sorted(labels.items())))
        self.starts[series] = min(timestamp, self.starts.get(series, timestamp))

    def leave(self, pid, name, labels, bounds, value):
        """An exemplar for `value`, observed in histogram `name` with `labels`: on the
        first bucket whose bound is at least the value, as prometheus_client counts it."""
        bound = next(bound for bound in bounds if value <= bound)
        labels = {**labels, "le": floatToGoString(bound)}
        trace_id = random.Random(next(self._clock)).randbytes(24)
        timestamp = float(next(self._clock))
        key = openmetrics_files.key_text(f"{name}_bucket", labels)
        writer = openmetrics_files.Writer(self._directory / openmetrics_files.file_name(pid))
        assert writer.record(key, trace_id[:16], trace_id[16:], value, timestamp)
        self.newest[(f"{name}_bucket", tuple(sorted(labels.items())))] = Exemplar(
            {"trace_id": trace_id[:16].hex(), "span_id": trace_id[16:].hex()}, value, timestamp
        )

    def on(self, metrics):
        """`metrics` with the exemplars on their histograms' buckets."""
        for metric in metrics:
            if metric.type == "histogram":
                metric.samples = [
                    sample._replace(exemplar=self.newest.get((sample.name, sorted_labels(sample))))
                    for sample in metric.samples
                ]
        return metrics

    def with_starts(self, metrics):
        """Copies of `metrics` with each counter's and histogram's series followed by its
        start, where it has one: a _created sample after the series' last."""
        started = []
        for metric in metrics:
            copy = Metric(metric.name, metric.documentation, metric.type)
            copy.samples = []
            for index, sample in enumerate(metric.samples):
                copy.samples.append(sample)
                series = tuple(pair for pair in sorted_labels(sample) if pair[0] != "le")
                following = metric.samples[index + 1 : index + 2]
                if following and series == tuple(
                    pair for pair in sorted_labels(following[0]) if pair[0] != "le"
                ):
                    continue  # not the series' last sample
                start = self.starts.get((metric.name, series))
                if start is not None and metric.type in ("counter", "histogram"):
                    labels = {name: value for name, value in sample.labels.items() if name != "le"}
                    copy.samples.append(Sample(f"{metric.name}_created", labels, start))
            started.append(copy)
        return started


def sorted_labels(sample):
    return tuple(sorted(sample.labels.items()))


def assert_same(directory, collector, context, extras=None):
    """The collector reads what prometheus_client's merge reads, in every exposition,
    with `extras`' (an Extras) exemplars on the buckets, and in OpenMetrics its starts."""
    expected, _ = merge_readable(listing(directory))
    if extras is not None:
        expected = extras.on(expected)
    actual = collector.collect()
    # The kit's reader, not the fallback, must be under test.
    assert collector._reader is not None, unproven_message()
    assert summary(actual[:-1]) == summary(expected), context
    for accept in ACCEPT:
        encode, content_type = choose_encoder(accept)
        body = collector.exposition(encode)
        shown = expected
        if extras is not None and content_type.startswith("application/openmetrics-text"):
            shown = extras.with_starts(expected)
        assert body == encode(Families([*shown, actual[-1]])), f"{context}, Accept: {accept!r}"


def define():
    """The metrics a worker writes: every type and every gauge mode, made in the
    current worker(pid) context."""
    labels = ["kind", "route"]
    metrics = {
        "counter": Counter("events", "Events, by kind.", labels, registry=None),
        "histogram": Histogram(
            "latency_seconds", "Latency.", labels, buckets=(0.25, 1, 2.5), registry=None
        ),
        "default_histogram": Histogram("size_bytes", "Size.", registry=None),
        "summary": Summary("payload_bytes", "Payload.", labels, registry=None),
    }
    for mode in GAUGE_MODES:
        metrics[mode] = Gauge(
            f"level_{mode}", f"Level, {mode}.", labels, multiprocess_mode=mode, registry=None
        )
    return metrics


def write(rng, pid, extras):
    """One random write, as worker `pid`; half the histograms' observations leave an
    exemplar, and a third of the counters' and histograms' writes a start."""
    with worker(pid):
        metrics = define()
        name = rng.choice(sorted(metrics))
        metric = metrics[name]
        if name == "default_histogram":
            number = rng.choice(NUMBERS[:-2])
            metric.observe(number)
            if rng.random() < 0.5:
                extras.leave(pid, "size_bytes", {}, Histogram.DEFAULT_BUCKETS, number)
            if rng.random() < 0.3:
                extras.start(pid, "size_bytes", {}, rng.uniform(1e9, 2e9))
            return
        labels = {"kind": rng.choice(LABEL_VALUES), "route": f"/r/{rng.randrange(4)}"}
        child = metric.labels(**labels)
        number = rng.choice(NUMBERS)
        if name == "counter":
            child.inc(abs(number))
            if rng.random() < 0.3:
                extras.start(pid, "events", labels, rng.uniform(1e9, 2e9))
        elif name == "histogram":
            child.observe(number)
            if rng.random() < 0.5:
                extras.leave(pid, "latency_seconds", labels, (0.25, 1, 2.5, math.inf), number)
            if rng.random() < 0.3:
                extras.start(pid, "latency_seconds", labels, rng.uniform(1e9, 2e9))
        elif name == "summary":
            child.observe(number)
        elif rng.random() < 0.1:
            child.set(math.nan)
        elif rng.random() < 0.5 and "mostrecent" not in name:
            child.inc(number)
        else:
            child.set(number)


def write_garbage(rng, directory):
    """A file no reader can read, under a name prometheus_client reads as a counter's."""
    (directory / f"counter_garbage{rng.randrange(1000)}.db").write_bytes(garbage(rng))


def name_like(rng, name, pid):
    """The name of a file of the same type as `name`, for another "pid"; a gauge's in
    any mode."""
    typ = name.split("_")[0]
    if typ == "gauge":
        return f"gauge_{rng.choice(GAUGE_MODES)}_{pid}.db"
    return f"{typ}_{pid}.db"


def rewrite(rng, source, target):
    """`source`'s keys in another order, written by prometheus_client's writer into
    `target`, with some values changed and their timestamps kept."""
    entries = [entry[:3] for entry in MmapedDict.read_all_values_from_file(str(source))]
    rng.shuffle(entries)
    values = MmapedDict(str(target))
    try:
        for key, value, timestamp in entries:
            values.write_value(key, value * rng.choice((1, 2, -1)), timestamp)
    finally:
        values.close()


def history(seed, directory, extras):
    """Random steps: writes by live workers, a worker's death and fold (its pid free to
    come back), a copy of a file under another name (a gauge's in any mode), a file's
    keys in another order, garbage, the directory removed."""
    rng = random.Random(seed)  # noqa: S311 (seeded, so that a failing seed replays)
    live = set()
    for step in range(STEPS):
        roll = rng.random()
        if roll < 0.7 or not live:
            pid = rng.randrange(1, 6)
            live.add(pid)
            write(rng, pid, extras)
            yield f"seed {seed}, step {step}: worker {pid} writes"
        elif roll < 0.85:
            pid = rng.choice(sorted(live))
            live.discard(pid)
            mark_worker_dead(pid, directory, live=sorted(live))
            yield f"seed {seed}, step {step}: worker {pid} dies and is folded"
        elif roll < 0.92:
            source = rng.choice(sorted(directory.glob("*_[0-9]*.db")) or [None])
            if source is not None:
                copy = directory / name_like(rng, source.name, f"copy{step}")
                shutil.copy(source, copy)
            yield f"seed {seed}, step {step}: a copy of {source}"
        elif roll < 0.95:
            source = rng.choice(sorted(directory.glob("*_[0-9]*.db")) or [None])
            if source is not None:
                rewrite(rng, source, directory / name_like(rng, source.name, f"other{step}"))
            yield f"seed {seed}, step {step}: {source}'s keys in another order"
        elif roll < 0.98:
            write_garbage(rng, directory)
            yield f"seed {seed}, step {step}: garbage"
        else:
            shutil.rmtree(directory)
            directory.mkdir()
            live.clear()
            extras.clear()
            yield f"seed {seed}, step {step}: the directory removed and made again"


@pytest.mark.parametrize("seed", SEEDS)
def test_the_reader_reads_what_prometheus_clients_merge_reads(directory, seed):
    """And each bucket's newest exemplar and each series' earliest start, from the
    workers' files and the folds'."""
    collector = LockedCollector(directory)
    extras = Extras(directory)
    for context in history(seed, directory, extras):
        assert_same(directory, collector, context, extras)


def test_a_recycled_pid_and_a_fold_between_scrapes(directory):
    collector = LockedCollector(directory)
    for pid in (1, 2):
        with worker(pid):
            define()["histogram"].labels("a", "/").observe(0.3)
    assert_same(directory, collector, "two workers")
    mark_worker_dead(1, directory, live=[2])
    assert_same(directory, collector, "worker 1 folded")
    with worker(1):
        define()["counter"].labels("b", "/").inc()
    assert_same(directory, collector, "pid 1 back, with other keys")


def test_gauges_keep_the_first_of_equal_values_and_the_last_of_a_pid(directory):
    """min and max keep the first of two equal values (0.0, then -0.0); `all` keeps the
    last value of a pid that two files hold."""
    collector = LockedCollector(directory)
    for pid, value in ((1, 0.0), (2, -0.0)):
        with worker(pid):
            metrics = define()
            for mode in ("min", "livemin", "max", "livemax", "all"):
                metrics[mode].labels("a", "/").set(value)
    entries = MmapedDict.read_all_values_from_file(str(directory / "gauge_all_1.db"))
    again = MmapedDict(str(directory / "gauge_liveall_1.db"))
    try:
        for key, value, timestamp, _ in entries:
            again.write_value(key, value + 5, timestamp)
    finally:
        again.close()

    assert_same(directory, collector, "equal values; a pid in two files")


def test_a_file_replaced_or_rewritten_under_its_name_is_read_again(directory):
    collector = LockedCollector(directory)
    with worker(1):
        counter = define()["counter"]
        counter.labels("a", "/x").inc()
        counter.labels("b", "/y").inc(2)
    with worker(2):
        counter = define()["counter"]
        counter.labels("b", "/y").inc(5)
        counter.labels("a", "/x").inc(7)
    assert_same(directory, collector, "two workers")
    first, second = directory / "counter_1.db", directory / "counter_2.db"
    # Keys as long as each other, in the other order: only the keys say which is which.
    keys_a_b, keys_b_a = first.read_bytes(), second.read_bytes()
    (directory / "new").write_bytes(keys_b_a)
    os.replace(directory / "new", first)
    assert_same(directory, collector, "worker 1's file replaced by one with other keys")

    # In place, as a fold rewrites nothing; but a fold says that files may have changed.
    first.write_bytes(keys_a_b)
    with worker(3):
        define()["counter"].labels("a", "/x").inc()
    mark_worker_dead(3, directory, live=[1, 2])
    assert_same(directory, collector, "worker 1's file rewritten in place, then a fold")


def test_scrapes_render_only_the_values_once_the_series_are_known(directory, monkeypatch):
    collector = LockedCollector(directory)
    with worker(1):
        define()["histogram"].labels("a", "/").observe(0.3)
    assert_same(directory, collector, "the series are new: learnt from the encoders")
    rendered = []
    by_the_encoder = Rendering._alone

    def alone(rendering, metric):
        rendered.append(metric.name)
        return by_the_encoder(rendering, metric)

    monkeypatch.setattr(Rendering, "_alone", alone)
    with worker(1):
        define()["histogram"].labels("a", "/").observe(2)
    extras = Extras(directory)
    extras.leave(1, "latency_seconds", {"kind": "a", "route": "/"}, (0.25, 1, 2.5), 2)
    extras.start(1, "latency_seconds", {"kind": "a", "route": "/"}, 1_700_000_000.5)

    assert_same(directory, collector, "a value changed, an exemplar and a start came", extras)
    assert rendered == ["metrics_files_unreadable"] * len(ACCEPT), "only the gauge made anew"


def test_threads_scraping_at_once_agree_with_prometheus_client(directory):
    collector = LockedCollector(directory)
    failures = []
    stop = threading.Event()

    def scrape(accept):
        encode, _ = choose_encoder(accept)
        deadline = time.monotonic() + 10
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                collector.exposition(encode)
            except Exception as error:  # the test fails with it below
                failures.append(error)
                return

    threads = [threading.Thread(target=scrape, args=(accept,)) for accept in ACCEPT]
    for thread in threads:
        thread.start()
    rng = random.Random(7)  # noqa: S311
    extras = Extras(directory)
    for _ in range(150):
        write(rng, rng.randrange(1, 4), extras)
    stop.set()
    for thread in threads:
        thread.join()

    assert failures == []
    assert extras.newest
    assert extras.starts
    assert_same(directory, collector, "after the threads", extras)


def test_files_growing_while_scrapes_read_them(directory):
    """A worker adds label sets while scrapes read its files: at each of 10 pauses one
    scrape sees exactly what it added, and one more races the writes that follow."""
    collector = LockedCollector(directory)
    totals = []

    def scrape():
        metrics = {metric.name: metric for metric in collector.collect()}
        events = metrics.get("events")
        totals.append(sum(sample.value for sample in events.samples) if events else 0)

    with writer(directory, 1000, pauses=10) as process:
        for added in checkpoints(process):
            scrape()
            assert totals[-1] == added
            assert_same(directory, collector, f"paused at {added} label sets")
        scrape()

    assert totals == sorted(totals), "a growing file never reads as fewer values"
    assert totals[-1] == 1000
    assert_same(directory, collector, "once it stopped growing")


def test_a_prometheus_client_outside_the_proven_versions_is_read_by_its_own_reader(
    directory, monkeypatch, caplog
):
    monkeypatch.setattr(metric_files, "installed_version", lambda: "0.99.0")
    monkeypatch.setattr(metric_files, "PROVEN_VERSIONS", DECLARED)
    with worker(1):
        define()["histogram"].labels("a", "/").observe(0.3)
    with caplog.at_level(logging.WARNING):
        collector = LockedCollector(directory)

    assert collector._reader is None
    assert [record.getMessage() for record in caplog.records] == [
        "prometheus_client 0.99.0 is outside the versions flask-cf-prometheus's metric"
        " file reader was proven on (0.26 up to 0.27): scrapes use prometheus_client's"
        " own, slower reader"
    ]
    expected, _ = merge_readable(listing(directory))
    assert summary(collector.collect()[:-1]) == summary(expected)
    actual = collector.exposition(generate_latest)
    assert actual == generate_latest(Families([*expected, collector.collect()[-1]]))

    # Its reader has no exemplars: the workers' are left out, and that is said once.
    Extras(directory).leave(1, "latency_seconds", {"kind": "a", "route": "/"}, (0.25, 1), 0.3)
    encode, _ = choose_encoder(ACCEPT[1])
    with caplog.at_level(logging.ERROR):
        assert collector.exposition(encode) == collector.exposition(encode)
    expected, _ = merge_readable(listing(directory))
    assert collector.exposition(encode) == encode(Families([*expected, collector.collect()[-1]]))
    assert caplog.text.count("no exemplars") == 1


@pytest.mark.parametrize(
    ("version", "proven"),
    [("0.26.0", True), ("0.26.7", True), ("0.25.9", False), ("0.27.0", False), ("1.0.0", False)],
)
def test_the_proven_range(version, proven, monkeypatch):
    monkeypatch.setattr(metric_files, "PROVEN_VERSIONS", DECLARED)
    assert metric_files.proven(version) is proven


def test_the_installed_prometheus_client_is_proven():
    assert metric_files.proven(metric_files.installed_version()), unproven_message()


def sqlite_database(path):
    """An app's SQLite database: its first four bytes, b"SQLi", read as a file's used
    length, claim 1.7 GB."""
    with contextlib.closing(sqlite3.connect(path)) as database, database:
        database.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")
        database.executemany("INSERT INTO orders (total) VALUES (?)", [(1.5,)] * 100)


@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("app.db", sqlite_database),
        # A metric file whose header claims 200 MB in 16 bytes.
        (
            "counter_77.db",
            lambda path: path.write_bytes(struct.pack("<i", 200_000_000) + bytes(12)),
        ),
    ],
    ids=["sqlite", "claims-200-MB"],
)
def test_a_file_claiming_more_than_it_holds_costs_what_it_holds(directory, name, write):
    """Neither read nor allocated past the file's end: an app's database in the metrics
    directory once made every scrape allocate 1.7 GB (a 512M instance is killed)."""
    with worker(1):
        define()["counter"].labels("a", "/").inc(2)
    write(directory / name)
    collector = LockedCollector(directory)

    tracemalloc.start()
    try:
        collector.collect()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 8 << 20, f"a scrape took {peak >> 20} MiB"
    assert_same(directory, collector, "the file read as prometheus_client reads it")


def test_an_aggregate_with_no_keys_leaves_the_plan_as_it_was(directory):
    """A worker is given its files before it runs (allocate_worker_files); one that
    observed no histogram leaves, folded, a histogram_aggregate.db with no keys. That
    file was parsed again at every scrape, and the plan of the whole directory rebuilt:
    a warm scrape at 16 workers x 50 routes cost 0.19 of prometheus_client's, not 0.045."""
    allocate_worker_files(5, directory)
    with worker(5):
        Counter("events", "Events, by kind.", ["kind", "route"], registry=None).labels(
            "a", "/"
        ).inc()
    mark_worker_dead(5, directory, live=[])
    with worker(6):
        define()["counter"].labels("b", "/").inc()
    aggregate = directory / "histogram_aggregate.db"
    assert aggregate.exists()
    assert list(MmapedDict.read_all_values_from_file(str(aggregate))) == []
    collector = LockedCollector(directory)
    assert_same(directory, collector, "first scrape")
    plan = collector._reader._plan

    assert_same(directory, collector, "second scrape, nothing changed")

    assert collector._reader._plan is plan, "the plan was rebuilt with nothing changed"
