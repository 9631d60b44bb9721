"""The files that prometheus_client's gunicorn workers share, kept to O(live workers).

prometheus_client keeps one file per worker and metric type, and keeps a dead worker's
files forever, so every scrape reads more of them (client_python #204, #367, #443).
Here, when a worker dies, its counters, histograms and summaries are folded into one
aggregate file per type and its files are removed. A shared lock makes each scrape see
either the dead worker's files or the aggregate that includes them, never both, never
neither: totals stay exact and never go backwards.

A full disk must not take the service down: writing into a memory-mapped page that the
filesystem cannot back kills the process with SIGBUS, which no `except` catches. So every
file this module writes is given its disk blocks first (posix_fallocate), where a full
disk is an OSError; a worker's files get theirs before prometheus_client maps them, from
spare sets the master allocates ahead when the disk has no room left.

Values are written by prometheus_client's own value class. Scrapes read them with
_metric_files.py, which parses each file once; folds use prometheus_client's own reader,
writer and merge.
"""

import contextlib
import errno
import fcntl
import glob
import json
import logging
import os
import re
import shutil
import threading
from fcntl import LOCK_SH
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

from . import _metric_files as metric_files
from ._settings import METRICS_DIRECTORY, ConfigError

logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"
GENERATION_BYTES = 16
AGGREGATE_ID = "aggregate"
# File name prefixes whose values can be merged over processes without losing meaning.
# Gauges in the live* modes are dropped with their worker; "all" and "mostrecent" gauges
# are kept per process, as prometheus_client does (their files are left alone).
FOLDED_PREFIXES = ("counter", "histogram", "summary", "gauge_sum", "gauge_min", "gauge_max")
LIVE_GAUGE_MODES = ("liveall", "livesum", "livemin", "livemax", "livemostrecent")
# The files a worker of this service writes (metrics.py) and the bytes each is given
# before the worker maps them: 64 KiB, prometheus_client's first size, holds about 300
# label sets of a counter; a histogram's label set takes 16 values, so its file gets
# 1 MiB, about 240 label sets of the request duration histogram.
WORKER_FILE_SIZES = {
    "counter": 1 << 16,
    "histogram": 1 << 20,
    "gauge_livesum": 1 << 16,
    "gauge_livemax": 1 << 16,
    "gauge_liveall": 1 << 16,
}
# Sets of worker files the master keeps allocated, for workers that boot on a full disk.
SPARE_SETS = 2
# What the metrics directory may hold: the files prometheus_client names (mmap_dict.py:
# the type, the gauge's mode, the process), the aggregates, and this module's own. A
# directory holding anything else (an app's database, a user's .spare-7, /) is refused
# at start-up, untouched (check_contents).
VALUE_FILE = re.compile(
    r"(counter|histogram|summary|gauge_(live)?(all|sum|max|min|mostrecent))_(\d+|aggregate)\.db"
)
# A file a fold could not read is renamed with this suffix, out of the scrapes' way.
UNREADABLE_SUFFIX = ".unreadable"
OWN_FILE = re.compile(r"\.\w+_aggregate\.staging|\w+\.db\.\d+\.unreadable")
# Spare sets, numbered below SPARE_SETS, and one a worker is claiming.
OWN_DIRECTORY = re.compile(r"\.spare-(\d+|claimed-\d+)(\.making)?")

# Dead workers whose files a fold could not take (a full disk, a broken lock), and those
# whose exit is not yet counted: the master retries them at the next worker exit.
_unfolded = set()
_exits_to_count = {}
# What this process has logged already, so that a bad file is said once, not per scrape.
_said = set()


def _allocate(path, size):
    """Give `path` (created if need be, its contents kept) `size` bytes of disk blocks."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(descriptor, 0, size)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def _locked(directory, operation):
    """flock the directory's lock file, and yield its descriptor: shared for scrapes,
    exclusive for compaction.

    A fresh descriptor each time, because flock locks belong to an open file and threads
    of a gthread worker must not release each other's. A killed holder's lock goes with it.
    """
    # Recreated if someone removed it: scrapes answer again, counting from zero.
    Path(directory).mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = Path(directory) / LOCK_FILE
    try:
        descriptor = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        descriptor = os.open(lock, os.O_RDWR)
    else:
        _new_generation(descriptor)  # a new directory, whose files are all new
    try:
        fcntl.flock(descriptor, operation)
        yield descriptor
    finally:
        os.close(descriptor)


def _new_generation(lock):
    """Say that files may have been removed or replaced, in the lock file: a scrape then
    checks that each file it reads holds the keys it parsed before (_metric_files.py)."""
    os.pwrite(lock, os.urandom(GENERATION_BYTES), 0)


def _generation(lock):
    return os.pread(lock, GENERATION_BYTES, 0)


class LockedCollector:
    """The workers' metrics, read under the shared lock: by metric_files' reader, which
    parses each file once, or by prometheus_client's merge with a prometheus_client
    that reader was not proven on. A file no reader can read is skipped, said once in
    the log, and counted in metrics_files_unreadable.

    Threads of a gthread worker scrape one at a time: the reader keeps what it has
    parsed for the next scrape.
    """

    def __init__(self, directory):
        self._directory = Path(directory)
        self._reader = metric_files.Reader.for_installed_version()
        self._reading = threading.Lock()

    def collect(self):
        with self._reading:
            read, extra = self._read()
            metrics = read.metrics() if isinstance(read, metric_files.Scrape) else read
        return [*metrics, *extra]

    def exposition(self, encode):
        """`encode(self)`, the same bytes, rendered from what the reader rendered before
        where it can be."""
        with self._reading:
            read, extra = self._read()
            if isinstance(read, metric_files.Scrape):
                body = read.exposition(encode, extra)
                if body is not None:
                    return body
                read = read.metrics()
        return encode(metric_files.Families([*read, *extra]))

    def _read(self):
        with contextlib.ExitStack() as held:
            try:
                generation = _generation(held.enter_context(_locked(self._directory, LOCK_SH)))
            except OSError as error:
                # A directory that cannot hold the lock (read-only, say) cannot be folded
                # into either: its files, read alone, are whole. Without the lock's
                # generation, every file's keys are checked again at every scrape.
                _say_once(f"Scrapes read {self._directory} without its lock: {error}")
                generation = os.urandom(GENERATION_BYTES)
            # As prometheus_client lists them, in the same order.
            files = glob.glob(os.path.join(self._directory, "*.db"))
            kept_aside = len(list(self._directory.glob(f"*{UNREADABLE_SUFFIX}")))
            read = None
            if self._reader is not None:
                try:
                    read, unreadable = self._reader.read(files, generation)
                except metric_files.PlanError as error:
                    _say_once(f"Scrapes read these metric files with prometheus_client: {error}")
            if read is None:
                # A worker creates its file empty and then sizes it: an empty file has no
                # values yet.
                sized = [path for path in files if os.path.isfile(path) and os.path.getsize(path)]
                read, unreadable = _merge_readable(sized)
        for path in unreadable:
            _say_once(f"Scrapes skip {path}, which is not a metric file prometheus_client can read")
        unreadable_files = GaugeMetricFamily(
            "metrics_files_unreadable",
            "Files in the metrics directory that scrapes skip or folds kept aside, unreadable.",
            value=len(unreadable) + kept_aside,
        )
        return read, [unreadable_files]


def _merge_readable(files, accumulate=True):
    """prometheus_client's merge of the files its reader can read, and those it cannot:
    tried one by one only when the merge of them all fails."""
    try:
        return list(MultiProcessCollector.merge(files, accumulate)), []
    except Exception:  # whatever a corrupt or foreign file makes the reader raise
        unreadable = [path for path in files if not _readable(path)]
        readable = [path for path in files if path not in unreadable]
        return list(MultiProcessCollector.merge(readable, accumulate)), unreadable


def _readable(path):
    try:
        MultiProcessCollector.merge([path])
    except Exception:
        return False
    return True


def _say_once(message):
    if message not in _said:
        _said.add(message)
        logger.error(message)


def check_directory(path):
    """Create the metrics directory if need be; ConfigError when it cannot be used."""
    directory = Path(path)
    setting = f"{METRICS_DIRECTORY}={str(path)!r}"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{setting} is not a directory") from None
    except OSError as error:
        raise ConfigError(f"{setting} cannot be made: {error.strerror}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"{setting} is a directory this user cannot write into")


def check_contents(path, workers):
    """ConfigError, in one line, for a metrics directory that holds anything but this
    module's and prometheus_client's files, or has no room for `workers` workers' files
    and the spare sets. Nothing is touched: gunicorn.settings() calls this before
    gunicorn starts, and reset_directory again."""
    directory = Path(path)
    setting = f"{METRICS_DIRECTORY}={str(path)!r}"
    try:
        entries = list(os.scandir(directory))
    except OSError as error:
        raise ConfigError(f"{setting} cannot be listed: {error.strerror}") from None
    foreign = sorted(entry.name for entry in entries if not _own(entry))
    if foreign:
        named = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if foreign[3:] else "")
        raise ConfigError(
            f"{setting} holds what is not a metric file ({named}): give the service a"
            " directory of its own, which it empties of metric files at every start"
        )
    needed = _room_needed(workers)
    # What the start will remove counts as room: a restart in place frees it first.
    reclaimed = sum(_disk_bytes(entry) for entry in entries)
    if shutil.disk_usage(directory).free + reclaimed < needed:
        raise _no_room(path, workers, needed, os.strerror(errno.ENOSPC))


def _own(entry):
    """Whether this directory entry is one of the metric files or this module's own:
    never a symbolic link, a spare set only below SPARE_SETS and holding worker files."""
    name = entry.name
    if entry.is_symlink():
        return False
    if VALUE_FILE.fullmatch(name) or OWN_FILE.fullmatch(name):
        return entry.is_file()
    if name == LOCK_FILE:
        return entry.is_file() and entry.stat().st_size in (0, GENERATION_BYTES)
    spare = OWN_DIRECTORY.fullmatch(name)
    if spare is None or not entry.is_dir():
        return False
    if spare[1].isdigit() and int(spare[1]) >= SPARE_SETS:
        return False
    worker_files = {f"{prefix}.db" for prefix in WORKER_FILE_SIZES}
    return all(
        inner.name in worker_files and inner.is_file() and not inner.is_symlink()
        for inner in os.scandir(entry.path)
    )


def _disk_bytes(entry):
    if entry.is_dir():
        return sum(_disk_bytes(inner) for inner in os.scandir(entry.path))
    return entry.stat().st_blocks * 512


def _room_needed(workers):
    """Bytes the spare sets and `workers` workers' files take."""
    return (SPARE_SETS + workers) * sum(WORKER_FILE_SIZES.values())


def _no_room(path, workers, needed, reason):
    return ConfigError(
        f"{METRICS_DIRECTORY}={str(path)!r} has no room for the metric files:"
        f" {workers} workers and {SPARE_SETS} spare sets need"
        f" {needed / (1 << 20):.1f} MiB ({reason})"
    )


def reset_directory(path, workers):
    """Empty the directory of a previous run's metric files, which would count twice;
    then allocate the spare sets of worker files. ConfigError, in one line, for a
    directory that holds anything else, or that cannot hold the spare sets and
    `workers` workers' files."""
    directory = Path(path)
    check_directory(directory)
    check_contents(directory, workers)
    for leftover in directory.iterdir():
        if VALUE_FILE.fullmatch(leftover.name) or OWN_FILE.fullmatch(leftover.name):
            leftover.unlink()
        elif OWN_DIRECTORY.fullmatch(leftover.name):
            shutil.rmtree(leftover)
    _unfolded.clear()
    _exits_to_count.clear()
    needed = _room_needed(workers)
    try:
        if shutil.disk_usage(directory).free < needed:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        replenish_spares(directory)
    except OSError as error:
        raise _no_room(path, workers, needed, error.strerror) from None


def replenish_spares(path):
    """Allocate the spare sets of worker files that are missing; OSError on a full disk.

    A set is made under a temporary name and renamed into place, so a worker never
    claims half a set."""
    directory = Path(path)
    for number in range(SPARE_SETS):
        spare = directory / f".spare-{number}"
        if spare.exists():
            continue
        making = directory / f".spare-{number}.making"
        shutil.rmtree(making, ignore_errors=True)
        try:
            making.mkdir()
            for prefix, size in WORKER_FILE_SIZES.items():
                _allocate(making / f"{prefix}.db", size)
            making.rename(spare)
        finally:
            shutil.rmtree(making, ignore_errors=True)


def allocate_worker_files(pid, path):
    """Give worker `pid`'s files their disk blocks before prometheus_client maps them, so
    that a full disk cannot kill the worker with SIGBUS at its first metric write. On a
    full disk a spare set is claimed instead; OSError when there is none left.

    The directory is created if someone removed it, so that the worker can boot."""
    directory = Path(path)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        for prefix, size in WORKER_FILE_SIZES.items():
            _allocate(directory / f"{prefix}_{pid}.db", size)
    except OSError:
        if not _claim_spare(pid, directory):
            # None of its files left behind: the master then knows that this worker
            # never got them (record_unexplained_exit), and counts no kill.
            with contextlib.suppress(OSError):
                for prefix in WORKER_FILE_SIZES:
                    (directory / f"{prefix}_{pid}.db").unlink(missing_ok=True)
            raise


def _claim_spare(pid, directory):
    for number in range(SPARE_SETS):
        claimed = directory / f".spare-claimed-{pid}"
        try:
            # Atomic: of two workers renaming the same set, one gets it.
            (directory / f".spare-{number}").rename(claimed)
        except FileNotFoundError:
            continue
        for prefix in WORKER_FILE_SIZES:
            os.replace(claimed / f"{prefix}.db", directory / f"{prefix}_{pid}.db")
        claimed.rmdir()
        return True
    return False


def mark_worker_dead(pid, path, live=(), unexplained_exit=None):
    """Fold a dead worker's values into the aggregate files and remove its files; then
    the files of dead workers that could not be folded before (a full disk, a lock that
    could not be taken), none of the `live` pids, which a new worker may have taken; and
    top up the spare sets used up since.

    `unexplained_exit`, a (counter name, reason) pair: count the exit as that reason
    first if the worker did not count it itself (record_unexplained_exit)."""
    directory = Path(path)
    # First, before anything can fail: a later exit retries whatever this one cannot do.
    _unfolded.add(pid)
    if unexplained_exit:
        _exits_to_count[pid] = unexplained_exit
    try:
        with _locked(directory, fcntl.LOCK_EX) as lock:
            _new_generation(lock)
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
    """Set a dead worker's counter `metric` to 1 for `reason` when none of its reasons
    is above 0: the worker died without recording why (killed, or crashed).

    A worker makes every label set of the counter at 0 as soon as it has forked, so the
    value is written in place, into disk blocks its file already has. A worker killed
    before that has its allocated file with no keys, given that one value, the counter's
    key taken from another worker's file (its help text is the worker's to say); none is
    written while no worker has made the counter yet. A worker with no counter file at
    all never got its files, and exited saying so: not counted. The caller holds the
    exclusive lock."""
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
        _allocate(dead, WORKER_FILE_SIZES["counter"])
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
        if not path.stat().st_size or not _readable(str(path)):
            continue
        for key, _ in _counter_keys(path, metric).values():
            metric_name, name, _, help_text = json.loads(key)
            return mmap_key(metric_name, name, ["reason"], [reason], help_text)
    return None


def _fold_worker(pid, directory):
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

    The caller holds the exclusive lock, so no scrape sees the step in between. The
    staging file gets its disk blocks before it is mapped, as many as the merged values
    take, so it never grows, and a full disk is an OSError that leaves both files as
    they were.
    """
    sources = [str(path) for path in (aggregate, dead) if path.exists()]
    metrics, unreadable = _merge_readable(sources, accumulate=False)
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
        _allocate(staging, metric_files.file_size(key for key, _ in merged))
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
