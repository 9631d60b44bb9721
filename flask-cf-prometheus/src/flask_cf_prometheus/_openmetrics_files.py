"""What OpenMetrics shows that prometheus_client's multiprocess files cannot hold: each
bucket's exemplar (the trace behind its newest observation) and each series' start time
(its `_created`), in a file per worker beside its values.

prometheus_client keeps exemplars and start times in one process only: its multiprocess
values have neither (client_python #826). Here each worker writes its own into
`openmetrics_<pid>.bin`, and a dead worker's are folded into `openmetrics_aggregate.bin`
with its counts (_fold.py). A scrape takes, for each bucket, the newest exemplar of all,
so that an exemplar never goes back in time, which Prometheus would refuse; and for
each series, the earliest start, so that a start never moves later, which Prometheus
would read as a reset.

A file is a header (the bytes used, 4 bytes, then 4 zero bytes) and records, appended
and never moved. A record is its key's length and CRC-32 (4 bytes each), the key (JSON
`[sample name, labels]`: a bucket's, or a series' `_created`) padded to 8 bytes, and
two copies of its value. A copy is a sequence number (8 bytes), a trace id (16) and a
span id (8), zero for a start, the value and the timestamp (doubles), and a CRC-32 of
all that (4 bytes, then 4 zero bytes). Copy 1 holds odd sequence numbers, copy 0 even
ones: the writer overwrites the older, so a read finds the newer whole, unless the
writer overwrote both during that one read; then the record is skipped for that scrape.
"""

import contextlib
import hashlib
import json
import logging
import mmap
import os
import stat
import struct
import threading
import time
import zlib
from pathlib import Path

from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

logger = logging.getLogger(__name__)

PREFIX = "openmetrics"
# 256 KiB: about 1,000 buckets' exemplars of the request duration histogram.
FILE_BYTES = 1 << 18
HEADER = struct.Struct("<I4x")
RECORD_HEADER = struct.Struct("<II")
EXEMPLAR = struct.Struct("<Q16s8sdd")
CHECKED = struct.Struct("<I4x")
COPY_BYTES = EXEMPLAR.size + CHECKED.size
WORD = 8


def file_name(pid):
    return f"{PREFIX}_{pid}.bin"


def key_text(sample_name, labels):
    """The key of one sample: its name and labels, in one spelling for every worker."""
    return json.dumps([sample_name, labels], sort_keys=True, separators=(",", ":"))


def is_start(text):
    """Whether a key is a series' start time (its `_created` sample), which the earliest
    wins, rather than an exemplar, which the newest does."""
    return text.startswith('["') and text[2 : text.find('"', 2)].endswith("_created")


def _preferred(text, copy, known):
    """Whether `copy` wins over `known`, for the record of key `text`."""
    if known is None:
        return True
    if is_start(text):
        return copy[4] < known[4]
    return copy[4] > known[4]


def _padded(length):
    return length + -length % WORD


def _record_bytes(key):
    return RECORD_HEADER.size + _padded(len(key)) + 2 * COPY_BYTES


def _copy(sequence, trace_id, span_id, value, timestamp):
    fields = EXEMPLAR.pack(sequence, trace_id, span_id, value, timestamp)
    return fields + CHECKED.pack(zlib.crc32(fields))


def _read_copy(data, offset):
    """(sequence, trace id, span id, value, timestamp) of a whole copy; None for a copy
    never written, or being written as it was read."""
    fields = data[offset : offset + EXEMPLAR.size]
    if len(fields) < EXEMPLAR.size:
        return None
    (checked,) = CHECKED.unpack_from(data, offset + EXEMPLAR.size)
    if zlib.crc32(fields) != checked:
        return None
    return EXEMPLAR.unpack(fields)


def records(data):
    """Each whole record of a file's bytes: (key text, offset of its first copy, its
    newest whole copy or None). Stops at the first record that is not whole."""
    if len(data) < HEADER.size:
        return
    (used,) = HEADER.unpack_from(data)
    used = min(used, len(data))
    offset = HEADER.size
    while offset + RECORD_HEADER.size <= used:
        length, checked = RECORD_HEADER.unpack_from(data, offset)
        key_start = offset + RECORD_HEADER.size
        copies = key_start + _padded(length)
        end = copies + 2 * COPY_BYTES
        if not length or end > used:
            return
        key = bytes(data[key_start : key_start + length])
        if zlib.crc32(key) != checked:
            return
        try:
            text = key.decode("utf-8")
        except UnicodeDecodeError:
            return
        newest = max(
            filter(None, (_read_copy(data, copies), _read_copy(data, copies + COPY_BYTES))),
            default=None,
        )
        yield text, copies, newest
        offset = end


def parse_key(text):
    """(sample name, sorted label pairs) of a key, as the reader's plan names samples;
    None for a key that is not one."""
    try:
        name, labels = json.loads(text)
    except (ValueError, TypeError):
        return None
    if type(name) is not str or type(labels) is not dict:
        return None
    if not all(type(value) is str for value in labels.values()):
        return None
    return name, tuple(sorted(labels.items()))


def as_exemplar(copy):
    _, trace_id, span_id, value, timestamp = copy
    return Exemplar({"trace_id": trace_id.hex(), "span_id": span_id.hex()}, value, timestamp)


def openmetrics_suffix(exemplar):
    """What prometheus_client's OpenMetrics encoder writes after a sample's value for
    this exemplar (its labels are hex: nothing to escape)."""
    labels = ",".join(f'{name}="{value}"' for name, value in sorted(exemplar.labels.items()))
    return f" # {{{labels}}} {floatToGoString(exemplar.value)} {exemplar.timestamp}"


class Writer:
    """This process's exemplar file, memory-mapped: each key's record is found once and
    then overwritten in place. Not thread-safe: the caller holds a lock."""

    def __init__(self, path):
        self._path = Path(path)
        self._records = {}  # key text -> [offset of the first copy, newest copy]
        self._map = None
        self._used = HEADER.size
        self._full = False

    def open(self):
        """Map the file, given its disk blocks if it has not got them; OSError when
        it cannot be (a full disk)."""
        descriptor = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            if os.fstat(descriptor).st_size < FILE_BYTES:
                # Not given its blocks by gunicorn's post_fork (a service run otherwise):
                # given them here, or a full disk would be a SIGBUS at the first write.
                os.posix_fallocate(descriptor, 0, FILE_BYTES)
            self._map = mmap.mmap(descriptor, FILE_BYTES)
        finally:
            os.close(descriptor)
        # A reused pid's file, whose namesake's fold failed: its records go on.
        for text, copies, newest in records(self._map):
            self._records[text] = [copies, newest]
            self._used = copies + 2 * COPY_BYTES
        HEADER.pack_into(self._map, 0, self._used)

    def record_start(self, key, timestamp):
        """Make `timestamp` the start of the series whose `_created` sample is `key`,
        unless it has an earlier one. False when the file has no room left for it."""
        return self.record(key, bytes(16), bytes(8), timestamp, timestamp, earliest=True)

    def record(self, key, trace_id, span_id, value, timestamp, *, earliest=False):
        """Make (trace id, span id, value, timestamp) the exemplar of sample `key`, the
        ids as bytes, unless it has a newer one; or, `earliest`, the start of a series,
        unless it has an earlier one. False when the file has no room left for a new
        key."""
        if self._map is None:
            self.open()
        known = self._records.get(key)
        if known is None:
            known = self._append(key)
            if known is None:
                return False
        copies, newest = known
        if newest is not None and (timestamp >= newest[4] if earliest else timestamp <= newest[4]):
            # An exemplar older than the one kept (the clock went back), or a later start.
            return True
        sequence = 1 if newest is None else newest[0] + 1
        # Copy 1 for odd sequence numbers, copy 0 for even ones: the older is overwritten,
        # and the newer stays whole while it is.
        target = copies + COPY_BYTES * (sequence % 2)
        self._map[target : target + COPY_BYTES] = _copy(
            sequence, trace_id, span_id, value, timestamp
        )
        known[1] = (sequence, trace_id, span_id, value, timestamp)
        return True

    def _append(self, key):
        encoded = key.encode("utf-8")
        end = self._used + _record_bytes(encoded)
        if end > len(self._map):
            if not self._full:
                self._full = True
                logger.warning(
                    "%s is full: buckets seen from now on get no exemplars from this worker",
                    self._path,
                )
            return None
        start = self._used
        self._map[start : start + RECORD_HEADER.size + len(encoded)] = (
            RECORD_HEADER.pack(len(encoded), zlib.crc32(encoded)) + encoded
        )
        self._used = end
        HEADER.pack_into(self._map, 0, end)  # last: a reader sees the record whole or not
        known = self._records[key] = [start + RECORD_HEADER.size + _padded(len(encoded)), None]
        return known


# This process's Writer (False if it cannot have one, None until asked), for the
# metrics directory it was opened in.
_lock = threading.Lock()
_writer = None
_writer_directory = None


def _forget_writer():
    global _writer, _writer_directory
    _writer = _writer_directory = None


# A worker forked from a process that wrote writes a file of its own.
os.register_at_fork(after_in_child=_forget_writer)


def record_exemplar(directory, key, trace_id, span_id, value):
    """Make the trace (ids in hex) the exemplar of bucket `key`, as of now, in this
    process's file in `directory`."""
    with _lock:
        writer = _process_writer(directory)
        if writer:
            writer.record(key, bytes.fromhex(trace_id), bytes.fromhex(span_id), value, time.time())


def record_start(directory, key, timestamp):
    """Make `timestamp` the start of the series whose `_created` sample is `key`, unless
    this process's file in `directory` has an earlier one."""
    with _lock:
        writer = _process_writer(directory)
        if writer:
            writer.record_start(key, timestamp)


def _process_writer(directory):
    global _writer, _writer_directory
    if directory is _writer_directory or directory == _writer_directory:
        return _writer
    writer = Writer(Path(directory) / file_name(os.getpid()))
    try:
        writer.open()
    except OSError as error:
        # A full disk, say: this worker's requests go on, without exemplars or starts.
        logger.error("This worker keeps no exemplars or starts: %s", error)
        writer = False
    _writer, _writer_directory = writer, directory
    return writer


class Reader:
    """Reads the files at each scrape; each key's text is parsed once, and a file not
    changed since the last scrape is not parsed again. The caller holds a lock."""

    def __init__(self):
        self._keys = {}  # key text -> (sample name, sorted label pairs), or None
        self._files = {}  # path -> (digest of its bytes, its whole records)
        self._last = None  # (the files' digests, what the last read gave)

    def read(self, paths):
        """Of all these files: the newest exemplar of each bucket, {(sample name, sorted
        label pairs): Exemplar}, and the earliest start of each series, {(its `_created`
        sample's name, sorted label pairs): timestamp}, the caller's to read, not to
        change. A file that cannot be read gives none."""
        files = {}
        for path in paths:
            try:
                data = _read(path)
            except OSError:
                continue
            digest = hashlib.blake2b(data, digest_size=16).digest()
            known = self._files.get(path)
            files[path] = known if known and known[0] == digest else (digest, _whole(data))
        self._files = files
        digests = [(path, digest) for path, (digest, _) in files.items()]
        if self._last is None or self._last[0] != digests:
            self._last = digests, self._merged(files.values())
        return self._last[1]

    def _merged(self, files):
        """read()'s answer from each file's (digest, whole records)."""
        chosen = {}
        for _, whole in files:
            _choose(chosen, whole)
        keys = self._keys
        if len(keys) > 100_000:  # keys of files long gone
            keys.clear()
        exemplars, starts = {}, {}
        for text, copy in chosen.items():
            key = keys.get(text, False)
            if key is False:
                key = keys[text] = parse_key(text)
            if key is None:
                continue
            if is_start(text):
                starts[key] = copy[4]
            else:
                exemplars[key] = as_exemplar(copy)
        return exemplars, starts


def _read(path):
    """A file's used bytes. Never through a symbolic link, never past what the file holds
    nor into a hole (a sparse file claiming gigabytes): such a file gives no records."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with open(descriptor, "rb", buffering=0) as file:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            return b""
        data = file.read(mmap.PAGESIZE)
        if len(data) >= HEADER.size:
            (used,) = HEADER.unpack_from(data)
            if used > len(data):
                used = min(used, status.st_size)
                if os.lseek(descriptor, 0, os.SEEK_HOLE) < used:
                    return b""
                os.lseek(descriptor, len(data), os.SEEK_SET)
                data += file.read(used - len(data))
    return data


def _whole(data):
    """[(key text, newest whole copy)] of a file's bytes, but records never written."""
    return [(text, copy) for text, _, copy in records(data) if copy is not None]


def _choose(chosen, whole):
    """Make each of a file's copies the chosen one of its key in `chosen` where it wins."""
    for text, copy in whole:
        if _preferred(text, copy, chosen.get(text)):
            chosen[text] = copy


def fold(dead, aggregate):
    """Replace `aggregate` by the newest exemplar and the earliest start of each key in
    it and `dead`, atomically, then remove `dead`. The caller holds the directory's
    exclusive lock; a file that cannot be read (but is not missing) fails the fold."""
    newest = {}
    for path in (aggregate, dead):
        with contextlib.suppress(FileNotFoundError):
            _choose(newest, _whole(_read(path)))
    staging = aggregate.with_name(f".{aggregate.stem}.staging")
    staging.unlink(missing_ok=True)
    body = bytearray()
    for text, (_, trace_id, span_id, value, timestamp) in newest.items():
        encoded = text.encode("utf-8")
        body += RECORD_HEADER.pack(len(encoded), zlib.crc32(encoded))
        body += encoded.ljust(_padded(len(encoded)), b"\0")
        body += bytes(COPY_BYTES) + _copy(1, trace_id, span_id, value, timestamp)
    data = HEADER.pack(HEADER.size + len(body)) + body
    try:
        descriptor = os.open(staging, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            # Its blocks first: a full disk leaves both files as they were.
            os.posix_fallocate(descriptor, 0, len(data))
            os.pwrite(descriptor, data, 0)
        finally:
            os.close(descriptor)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    os.replace(staging, aggregate)
    Path(dead).unlink(missing_ok=True)
