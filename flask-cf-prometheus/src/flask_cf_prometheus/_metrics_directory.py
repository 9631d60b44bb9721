"""The metrics directory: what it may hold, its lock, and each worker's files.

A full disk must not take the service down: writing into a memory-mapped page that the
filesystem cannot back kills the process with SIGBUS, which no `except` catches. So each
worker's files get their disk blocks (posix_fallocate) before prometheus_client maps
them, where a full disk is an OSError. The master keeps spare sets allocated ahead, for
workers that boot when the disk has no room left.
"""

import contextlib
import errno
import fcntl
import os
import re
import shutil
import stat
from pathlib import Path

from . import _openmetrics_files as openmetrics_files
from ._settings import METRICS_DIRECTORY_VARIABLE, ConfigError

LOCK_FILE = ".lock"
# Locked by the service that owns the directory, and holding its master's process id.
OWNER_FILE = ".owner"
GENERATION_BYTES = 16
AGGREGATE_ID = "aggregate"
# The files a worker of this service writes (_metrics.py) and the bytes each is given
# before the worker maps them: 64 KiB, prometheus_client's first size, holds about 300
# label sets of a counter; a histogram's label set takes 16 values, so its file gets
# 1 MiB, about 240 label sets of the request duration histogram. Its exemplars and its
# series' starts go to a file of their own (_openmetrics_files.py): 256 KiB, about 1,000.
WORKER_FILE_SIZES = {
    "counter": 1 << 16,
    "histogram": 1 << 20,
    "gauge_livesum": 1 << 16,
    "gauge_livemax": 1 << 16,
    "gauge_liveall": 1 << 16,
    openmetrics_files.PREFIX: openmetrics_files.FILE_BYTES,
}
# Sets of worker files the master keeps allocated, for workers that boot on a full disk.
SPARE_SETS = 2
# What the metrics directory may hold: the files prometheus_client names (mmap_dict.py:
# the type, the gauge's mode, the process), the aggregates, and the kit's own. A
# directory holding anything else (an app's database, a user's .spare-7, /) is refused
# at start-up, untouched (check_contents).
VALUE_FILE = re.compile(
    r"(counter|histogram|summary|gauge_(live)?(all|sum|max|min|mostrecent))_(\d+|aggregate)\.db"
)
# A file a fold could not read is renamed with this suffix, out of the scrapes' way.
UNREADABLE_SUFFIX = ".unreadable"
# Exemplars and starts, a file per worker and the aggregate: not .db, which both readers
# read.
OPENMETRICS_FILE = re.compile(r"openmetrics_(\d+|aggregate)\.bin")
OWN_FILE = re.compile(
    rf"\.\w+_aggregate\.staging|\w+\.db\.\d+\.unreadable|{OPENMETRICS_FILE.pattern}"
)
# Spare sets, numbered below SPARE_SETS, and one a worker is claiming.
OWN_DIRECTORY = re.compile(r"\.spare-(\d+|claimed-\d+)(\.making)?")


def worker_file(prefix, pid):
    """The name of worker `pid`'s file of `prefix` (a key of WORKER_FILE_SIZES)."""
    if prefix == openmetrics_files.PREFIX:
        return openmetrics_files.file_name(pid)
    return f"{prefix}_{pid}.db"


def _spare_file(prefix):
    return f"{prefix}.bin" if prefix == openmetrics_files.PREFIX else f"{prefix}.db"


def allocate(path, size):
    """Give `path` (created if need be, its contents kept) `size` bytes of disk blocks."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(descriptor, 0, size)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def locked(directory, operation):
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
        # Never through a symbolic link, into a pipe, or into another user's file: the
        # fold writes the generation into it.
        descriptor = os.open(lock, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK)
        found = os.fstat(descriptor)
        if not stat.S_ISREG(found.st_mode) or found.st_uid != os.geteuid():
            os.close(descriptor)
            raise OSError(errno.EPERM, f"{lock} is not a regular file of this service's") from None
    else:
        new_generation(descriptor)  # a new directory, whose files are all new
    try:
        fcntl.flock(descriptor, operation)
        yield descriptor
    finally:
        os.close(descriptor)


def new_generation(lock):
    """Say that files may have been removed or replaced, in the lock file: a scrape then
    checks that each file it reads holds the keys it parsed before (_reader.py)."""
    os.pwrite(lock, os.urandom(GENERATION_BYTES), 0)


def read_generation(lock):
    return os.pread(lock, GENERATION_BYTES, 0)


def check_directory(path):
    """Create the metrics directory if need be; ConfigError when it cannot be used."""
    directory = Path(path)
    setting = f"{METRICS_DIRECTORY_VARIABLE}={str(path)!r}"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{setting} is not a directory") from None
    except OSError as error:
        raise ConfigError(f"{setting} cannot be made: {error.strerror}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"{setting} is a directory this user cannot write into")


_OWNER_BYTES = 24


def claim(path):
    """Hold the directory for this service: an open descriptor of its owner file, locked
    for as long as this process or a worker it forks keeps it. Another service started
    on the directory would empty the files the live workers write into, so it gets a
    ConfigError naming the owner, and touches nothing."""
    setting = f"{METRICS_DIRECTORY_VARIABLE}={str(path)!r}"
    try:
        descriptor = os.open(Path(path) / OWNER_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as error:
        raise ConfigError(f"{setting} cannot be claimed: {error.strerror}") from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        said = os.pread(descriptor, _OWNER_BYTES, 0).decode(errors="replace").strip()
        os.close(descriptor)
        owner = f"gunicorn master {said}" if said.isdigit() else "another process"
        raise ConfigError(
            f"{setting} belongs to a service that is running ({owner}): give each service"
            " a directory of its own"
        ) from None
    except OSError as error:
        os.close(descriptor)
        raise ConfigError(f"{setting} cannot be claimed: {error.strerror}") from None
    # Who holds it, for the message another start gives; the lock alone is the claim.
    with contextlib.suppress(OSError):  # a full disk, say
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
    return descriptor


def check_contents(path, workers):
    """ConfigError, in one line, for a metrics directory that holds anything but this
    module's and prometheus_client's files, or has no room for `workers` workers' files
    and the spare sets. Nothing is touched: gunicorn.settings() calls this before
    gunicorn starts, and reset_directory again."""
    directory = Path(path)
    setting = f"{METRICS_DIRECTORY_VARIABLE}={str(path)!r}"
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
    """Whether this directory entry is one of the metric files or the kit's own:
    never a symbolic link, a spare set only below SPARE_SETS and holding worker files."""
    name = entry.name
    if entry.is_symlink():
        return False
    if VALUE_FILE.fullmatch(name) or OWN_FILE.fullmatch(name):
        return entry.is_file()
    if name == LOCK_FILE:
        return entry.is_file() and entry.stat().st_size in (0, GENERATION_BYTES)
    if name == OWNER_FILE:
        return entry.is_file() and entry.stat().st_size <= _OWNER_BYTES
    spare = OWN_DIRECTORY.fullmatch(name)
    if spare is None or not entry.is_dir():
        return False
    if spare[1].isdigit() and int(spare[1]) >= SPARE_SETS:
        return False
    worker_files = set(map(_spare_file, WORKER_FILE_SIZES))
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
        f"{METRICS_DIRECTORY_VARIABLE}={str(path)!r} has no room for the metric files:"
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
                allocate(making / _spare_file(prefix), size)
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
            allocate(directory / worker_file(prefix, pid), size)
    except OSError:
        if not _claim_spare(pid, directory):
            # None of its files left behind: the master then knows that this worker
            # never got them (record_unexplained_exit), and counts no kill.
            with contextlib.suppress(OSError):
                for prefix in WORKER_FILE_SIZES:
                    (directory / worker_file(prefix, pid)).unlink(missing_ok=True)
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
            os.replace(claimed / _spare_file(prefix), directory / worker_file(prefix, pid))
        claimed.rmdir()
        return True
    return False
