"""The files that prometheus_client's gunicorn workers share, kept to O(live workers).

prometheus_client keeps one file per worker and metric type, and keeps a dead worker's
files forever, so every scrape reads more of them (client_python #204, #367, #443).
Here, when a worker dies, its counters, histograms and summaries are folded into one
aggregate file per type and its files are removed. A shared lock makes each scrape see
either the dead worker's files or the aggregate that includes them, never both, never
neither: totals stay exact and never go backwards.

Values are written by `multiprocess_value_class`, a faster equivalent of
prometheus_client's own, to the same files in the same format.

gunicorn's master imports this module, after gunicorn.conf.py has set
PROMETHEUS_MULTIPROC_DIR: prometheus_client picks its mode when first imported.
"""

import contextlib
import fcntl
import json
import mmap
import os
import struct
import threading
from pathlib import Path

from prometheus_client import values
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

LOCK_FILE = ".lock"
AGGREGATE_ID = "aggregate"
# File name prefixes whose values can be merged over processes without losing meaning.
# Gauges in the live* modes are dropped with their worker; "all" and "mostrecent" gauges
# are kept per process, as prometheus_client does (their files are left alone).
FOLDED_PREFIXES = ("counter", "histogram", "summary", "gauge_sum", "gauge_min", "gauge_max")
LIVE_GAUGE_MODES = ("liveall", "livesum", "livemin", "livemax", "livemostrecent")
INITIAL_FILE_SIZE = 1 << 16  # bytes, as prometheus_client's


def multiprocess_value_class(process_identifier=os.getpid):
    """prometheus_client's MultiProcessValue, with writes that cost about half as much.

    Each process writes the same files, in the same format, so prometheus_client's
    collector and the compaction below read them unchanged. A write is one aligned
    8-byte store through a memoryview of the file, where prometheus_client packs and
    copies 16 bytes through a slice; and a fork is noticed once, by a fork handler,
    where prometheus_client calls getpid before every write. Every request writes five
    values: the in-progress gauge twice, the duration histogram twice, the counter once.
    """
    lock = threading.Lock()
    files = {}
    created = []
    process = process_identifier()

    def value_file(prefix):
        if prefix not in files:
            name = f"{prefix}_{process}.db"
            files[prefix] = ValueFile(Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]) / name)
        return files[prefix]

    def after_fork():
        # A forked worker starts from zero in files of its own, as prometheus_client's do.
        nonlocal lock, process
        lock = threading.Lock()
        if process_identifier() != process:
            process = process_identifier()
            files.clear()
            for value in created:
                value.open()

    os.register_at_fork(after_in_child=after_fork)

    class MultiProcessFileValue:
        _multiprocess = True

        def __init__(
            self,
            typ,
            metric_name,
            name,
            labelnames,
            labelvalues,
            help_text,
            multiprocess_mode="",
            **kwargs,
        ):
            self._prefix = f"{typ}_{multiprocess_mode}" if typ == "gauge" else typ
            self._key = mmap_key(metric_name, name, labelnames, labelvalues, help_text)
            with lock:
                self.open()
                created.append(self)

        def open(self):
            self._file = value_file(self._prefix)
            self._index = self._file.index(self._key)

        # acquire() and release() rather than `with lock`, which costs twice as much.
        def inc(self, amount):
            lock.acquire()
            try:
                self._file.doubles[self._index] += amount
            finally:
                lock.release()

        def set(self, value, timestamp=None):
            lock.acquire()
            try:
                doubles = self._file.doubles
                doubles[self._index] = value
                doubles[self._index + 1] = timestamp or 0.0
            finally:
                lock.release()

        def get(self):
            lock.acquire()
            try:
                return self._file.doubles[self._index]
            finally:
                lock.release()

        def set_exemplar(self, exemplar):
            """Exemplars are not kept in multiprocess mode, as in prometheus_client."""

        def get_exemplar(self):
            return None

    return MultiProcessFileValue


class ValueFile:
    """One process's values of one type, in prometheus_client's file format (see its
    mmap_dict.py): the number of bytes used, then each value's key (length, then UTF-8
    padded to a multiple of 8 bytes) followed by two doubles, the value and a timestamp.

    `doubles` is the whole file seen as doubles; `index(key)` says where a value is.
    """

    def __init__(self, path):
        self._file = open(path, "a+b")  # noqa: SIM115 -- open as long as the process
        self.doubles = None
        size = os.fstat(self._file.fileno()).st_size
        self._map(max(size, INITIAL_FILE_SIZE))
        # A file this pid left before, as "all" gauges do, goes on from its values.
        self._used = struct.unpack_from("i", self._mmap)[0] or 8
        self._indexes = {}
        if self._used > 8:
            for key, _, _, position in MmapedDict.read_all_values_from_file(path):
                self._indexes[key] = position // 8
        struct.pack_into("i", self._mmap, 0, self._used)

    def index(self, key):
        """Where the value for `key` is in `doubles`; its timestamp is next to it."""
        if key not in self._indexes:
            self._indexes[key] = self._append(key)
        return self._indexes[key]

    def _append(self, key):
        encoded = key.encode()
        padded = encoded.ljust(len(encoded) + 8 - (len(encoded) + 4) % 8)
        entry = struct.pack(f"i{len(padded)}sdd", len(encoded), padded, 0.0, 0.0)
        end = self._used + len(entry)
        size = len(self._mmap)
        while end > size:
            size *= 2
        if size > len(self._mmap):
            self._map(size)
        # The entry first, then the count that makes readers see it.
        self._mmap[self._used : end] = entry
        self._used = end
        struct.pack_into("i", self._mmap, 0, end)
        return (end - 16) // 8

    def _map(self, size):
        if self.doubles is not None:
            self.doubles.release()
            self._mmap.close()
        self._file.truncate(size)
        self._mmap = mmap.mmap(self._file.fileno(), size)
        self.doubles = memoryview(self._mmap).cast("d")


if values.ValueClass is not values.MutexValue:
    # prometheus_client is in multiprocess mode: every metric created from now on writes
    # its values this faster way. gunicorn's master imports this module before it forks
    # any worker, and metrics.py before it declares a metric.
    values.ValueClass = multiprocess_value_class()


@contextlib.contextmanager
def _locked(directory, operation):
    """flock the directory's lock file: shared for scrapes, exclusive for compaction.

    A fresh descriptor each time, because flock locks belong to an open file and threads
    of a gthread worker must not release each other's. A killed holder's lock goes with it.
    """
    descriptor = os.open(Path(directory) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, operation)
        yield
    finally:
        os.close(descriptor)


class LockedCollector(MultiProcessCollector):
    """prometheus_client's collector, reading the files under the shared lock."""

    def __init__(self, directory):
        super().__init__(registry=None, path=directory)
        self._directory = Path(directory)

    def collect(self):
        with _locked(self._directory, fcntl.LOCK_SH):
            # A worker creates its file empty and then sizes it: an empty file has no
            # values yet, and reading it would fail the scrape.
            files = [str(path) for path in self._directory.glob("*.db") if path.stat().st_size]
            return self.merge(files)


def reset_directory(path):
    """Create the directory, or empty it of a previous run's files, which would count twice."""
    directory = Path(path)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for leftover in directory.glob("*.db"):
        leftover.unlink()


def mark_worker_dead(pid, path):
    """Fold a dead worker's values into the aggregate files and remove its files."""
    directory = Path(path)
    with _locked(directory, fcntl.LOCK_EX):
        try:
            for prefix in FOLDED_PREFIXES:
                dead = directory / f"{prefix}_{pid}.db"
                if not dead.exists():
                    continue
                if dead.stat().st_size:
                    _fold(dead, directory / f"{prefix}_{AGGREGATE_ID}.db")
                else:
                    # Killed between creating its file and sizing it: nothing to fold.
                    dead.unlink()
        finally:
            # Even if a fold failed: a dead worker has no requests in progress.
            for mode in LIVE_GAUGE_MODES:
                (directory / f"gauge_{mode}_{pid}.db").unlink(missing_ok=True)


def _fold(dead, aggregate):
    """Replace `aggregate` by aggregate + dead, atomically, then remove `dead`.

    The caller holds the exclusive lock, so no scrape sees the step in between.
    """
    sources = [str(path) for path in (aggregate, dead) if path.exists()]
    merged = MultiProcessCollector.merge(sources, accumulate=False)
    staging = aggregate.with_name(f".{aggregate.stem}.staging")
    staging.unlink(missing_ok=True)
    values = MmapedDict(str(staging))
    try:
        for metric in merged:
            for sample in metric.samples:
                key = json.dumps(
                    [metric.name, sample.name, sample.labels, metric.documentation],
                    sort_keys=True,
                )
                values.write_value(key, sample.value, 0.0)
    finally:
        values.close()
    os.replace(staging, aggregate)
    dead.unlink()
