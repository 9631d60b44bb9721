"""The files that prometheus_client's gunicorn workers share, kept to O(live workers).

prometheus_client keeps one file per worker and metric type, and keeps a dead worker's
files forever, so every scrape reads more of them (client_python #204, #367, #443).
Here, when a worker dies, its counters, histograms and summaries are folded into one
aggregate file per type and its files are removed. A shared lock makes each scrape see
either the dead worker's files or the aggregate that includes them, never both, never
neither: totals stay exact and never go backwards.

Values are written by prometheus_client's own value class; this module reads and folds
its files with prometheus_client's own reader, writer and merge.
"""

import contextlib
import fcntl
import os
from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

LOCK_FILE = ".lock"
AGGREGATE_ID = "aggregate"
# File name prefixes whose values can be merged over processes without losing meaning.
# Gauges in the live* modes are dropped with their worker; "all" and "mostrecent" gauges
# are kept per process, as prometheus_client does (their files are left alone).
FOLDED_PREFIXES = ("counter", "histogram", "summary", "gauge_sum", "gauge_min", "gauge_max")
LIVE_GAUGE_MODES = ("liveall", "livesum", "livemin", "livemax", "livemostrecent")


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
                key = mmap_key(
                    metric.name,
                    sample.name,
                    list(sample.labels),
                    list(sample.labels.values()),
                    metric.documentation,
                )
                values.write_value(key, sample.value, 0.0)
    finally:
        values.close()
    os.replace(staging, aggregate)
    dead.unlink()
