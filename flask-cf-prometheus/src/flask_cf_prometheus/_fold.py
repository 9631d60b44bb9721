"""The fold: a dead worker's values merged into aggregate files, and its files removed.

prometheus_client keeps a dead worker's files forever, so every scrape reads more of them
(client_python #204, #367, #443). Here a dead worker's counters, histograms and summaries
are folded into one aggregate file per type, with prometheus_client's own reader, writer
and merge. Under the directory's exclusive lock, totals stay exact and never go back."""

import contextlib
import fcntl
import json
import logging
import os
from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict, mmap_key

from . import _openmetrics_files as openmetrics_files
from ._metric_files import file_size, is_readable, merge_readable
from ._metrics_directory import (
    AGGREGATE_ID,
    UNREADABLE_SUFFIX,
    WORKER_FILE_SIZES,
    allocate,
    locked,
    new_generation,
    replenish_spares,
)

logger = logging.getLogger(__name__)

# File name prefixes whose values can be merged over processes without losing meaning.
# Gauges in the live* modes are dropped with their worker; "all" and "mostrecent" gauges
# are kept per process, as prometheus_client does (their files are left alone).
FOLDED_PREFIXES = ("counter", "histogram", "summary", "gauge_sum", "gauge_min", "gauge_max")
LIVE_GAUGE_MODES = ("liveall", "livesum", "livemin", "livemax", "livemostrecent")

# Dead workers whose files a fold could not take (a full disk, a broken lock), and those
# whose exit is not yet counted: the master retries them at the next worker exit.
_unfolded = set()
_exits_to_count = {}


def forget_dead_workers():
    """Forget the dead workers of a previous run, whose files a new run removes."""
    _unfolded.clear()
    _exits_to_count.clear()


def mark_worker_dead(pid, path, live=(), unexplained_exit=None):
    """Fold dead worker `pid`'s values into the aggregate files, and remove its files.

    Dead workers whose fold failed before (a full disk, a lock not taken) are tried again,
    unless a new worker has their pid (`live`). Then the spare sets are topped up.
    `unexplained_exit`, a (counter name, reason) pair, counts the exit of a worker that
    did not count it itself."""
    directory = Path(path)
    # First, before anything can fail: a later exit retries whatever this one cannot do.
    _unfolded.add(pid)
    if unexplained_exit:
        _exits_to_count[pid] = unexplained_exit
    try:
        with locked(directory, fcntl.LOCK_EX) as lock:
            new_generation(lock)
            failure = None
            for dead in sorted(_unfolded - set(live)):
                try:
                    if dead in _exits_to_count:
                        record_unexplained_exit(dead, directory, *_exits_to_count[dead])
                        del _exits_to_count[dead]
                    _fold_worker(dead, directory)
                except Exception as error:  # each worker on its own; raised below
                    failure = failure or error
                else:
                    _unfolded.discard(dead)
                finally:
                    # Even if its fold failed: a dead worker has no requests in progress
                    # and is not alive.
                    _remove_live_gauges(dead, directory)
            if failure is not None:
                raise failure
            replenish_spares(directory)
    except Exception:
        # The lock itself may have failed: no scrape can be reading then, since scrapes
        # take the same lock, and the dead worker must stop counting as alive.
        _remove_live_gauges(pid, directory)
        raise


def _remove_live_gauges(pid, directory):
    with contextlib.suppress(OSError):  # a read-only directory: nothing more can be done
        for mode in LIVE_GAUGE_MODES:
            (directory / f"gauge_{mode}_{pid}.db").unlink(missing_ok=True)


def record_unexplained_exit(pid, path, metric, reason):
    """Count a dead worker's exit as `reason` in counter `metric`, unless it counted one.

    A worker makes the counter's label sets at 0 as it forks, so the 1 is written in place.
    A worker killed before that gets the key from another worker's file. A worker with no
    counter file never got its files, and said so as it exited: it is not counted. The
    caller holds the exclusive lock."""
    directory = Path(path)
    dead = directory / f"counter_{pid}.db"
    if not dead.exists():
        # It never got its files (allocate_worker_files, in gunicorn's post_fork): it
        # exited saying why, before serving anything, and was not killed.
        return
    sized = dead.stat().st_size > 0
    try:
        reasons = _counter_keys(dead, metric) if sized else {}
    except Exception:  # unreadable: its fold sets it aside, and what it said is lost
        return
    if any(value for _, value in reasons.values()):
        return
    key = reasons[reason][0] if reason in reasons else _key_elsewhere(directory, metric, reason)
    if key is None:
        return
    if not sized:
        allocate(dead, WORKER_FILE_SIZES["counter"])
    values = MmapedDict(str(dead))
    try:
        values.write_value(key, 1.0, 0.0)
    finally:
        values.close()


def _counter_keys(path, metric):
    """The label sets of counter `metric` in a file, by their reason: (key, value)."""
    reasons = {}
    for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path)):
        metric_name, _, labels, _ = json.loads(key)
        if metric_name == metric:
            reasons[labels.get("reason")] = (key, value)
    return reasons


def _key_elsewhere(directory, metric, reason):
    """The key of counter `metric` for `reason`, as another worker's file spells it."""
    for path in sorted(directory.glob("counter_*.db")):
        if not path.stat().st_size or not is_readable(str(path)):
            continue
        for key, _ in _counter_keys(path, metric).values():
            metric_name, name, _, help_text = json.loads(key)
            return mmap_key(metric_name, name, ["reason"], [reason], help_text)
    return None


def _fold_worker(pid, directory):
    dead = directory / openmetrics_files.file_name(pid)
    if dead.exists():
        # The exemplars first: a fold of them that fails leaves the counts unfolded too,
        # and the retry folds both.
        openmetrics_files.fold(dead, directory / openmetrics_files.file_name(AGGREGATE_ID))
    for prefix in FOLDED_PREFIXES:
        dead = directory / f"{prefix}_{pid}.db"
        if not dead.exists():
            continue
        if dead.stat().st_size:
            _fold(dead, directory / f"{prefix}_{AGGREGATE_ID}.db")
        else:
            # Killed between creating its file and sizing it: nothing to fold.
            dead.unlink()


def _fold(dead, aggregate):
    """Replace `aggregate` by aggregate + dead, atomically, then remove `dead`.

    The caller holds the exclusive lock, so no scrape sees the step in between. The staging
    file gets its disk blocks before it is written: a full disk leaves both files as they
    were."""
    sources = [str(path) for path in (aggregate, dead) if path.exists()]
    metrics, unreadable = merge_readable(sources, accumulate=False)
    for source in unreadable:  # set aside, and the rest folded
        _set_aside(Path(source))
    merged = [
        (
            mmap_key(
                metric.name,
                sample.name,
                list(sample.labels),
                list(sample.labels.values()),
                metric.documentation,
            ),
            sample.value,
        )
        for metric in metrics
        for sample in metric.samples
    ]
    staging = aggregate.with_name(f".{aggregate.stem}.staging")
    staging.unlink(missing_ok=True)
    try:
        allocate(staging, file_size(key for key, _ in merged))
        values = MmapedDict(str(staging))
        try:
            for key, value in merged:
                values.write_value(key, value, 0.0)
        finally:
            values.close()
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    os.replace(staging, aggregate)
    dead.unlink(missing_ok=True)  # gone if it was set aside


def _set_aside(path):
    """Rename a file no reader can read out of the scrapes' and folds' way, keeping it:
    it may be all there is of the counts it held."""
    number = 1
    while (aside := path.with_name(f"{path.name}.{number}{UNREADABLE_SUFFIX}")).exists():
        number += 1
    path.rename(aside)
    logger.error("Set aside %s, which no reader can read, as %s", path, aside.name)
