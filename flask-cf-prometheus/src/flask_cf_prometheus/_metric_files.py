"""prometheus_client's multiprocess files: their format, and the versions of
prometheus_client this kit's reader of them is proven on.

The file format (prometheus_client's mmap_dict.py) and the merge (its multiprocess.py)
are prometheus_client's internals. All the kit knows of the format is here; of the merge,
in _merge_plan.py. Both are proven against the installed prometheus_client by
tests/test_metric_files.py, and used only with the versions in PROVEN_VERSIONS (README.md,
Versions). With any other, scrapes use prometheus_client's own reader: slower, never wrong.
"""

import json
import math
import mmap
import os
import re
import struct
from importlib import metadata

from prometheus_client.multiprocess import MultiProcessCollector

# The prometheus_client versions the kit's reader was proven on, by the differential test
# against prometheus_client's own reader: from the first, up to but not including the
# second. Widen it, with pyproject.toml's range, only with a passing run of
# `pytest --prove-prometheus-client` against the new release (README.md, Versions).
PROVEN_VERSIONS = ((0, 26), (0, 27))

# mmap_dict.py: a file starts with the bytes it uses (an int) and 4 bytes of padding;
# then, per value, the key's length (an int), the key in UTF-8 padded to 8 bytes, and the
# value and its timestamp (doubles), at a multiple of 8 bytes.
INTEGER = struct.Struct("i")
HEADER_BYTES = 8
VALUE_BYTES = 16
WORD = 8
# prometheus_client reads the first page of a file, then what it says it uses beyond.
FIRST_READ = mmap.PAGESIZE
GAUGE = "gauge"


class Unreadable(Exception):
    """A file prometheus_client's reader could not read on its own either."""


# What prometheus_client's reader raises on a file it cannot read, and what
# json.loads and unpacking raise on a key that is not one.
UNREADABLE_ERRORS = (Unreadable, OSError, ValueError, IndexError, struct.error)
_NOT_A_KEY = (ValueError, TypeError)


def file_size(keys):
    """Bytes a file of these keys takes (an 8-byte header; per value, the key's length,
    the key padded to 8 bytes, the value and its timestamp), rounded up to whole 64 KiB
    as prometheus_client sizes its files."""
    used = HEADER_BYTES
    for key in keys:
        length = len(key.encode("utf-8"))
        used += 4 + length + (8 - (length + 4) % 8) + VALUE_BYTES
    return -(-used // (1 << 16)) * (1 << 16)


def installed_version():
    return metadata.version("prometheus-client")


def proven(version):
    numbers = re.match(r"(\d+)\.(\d+)", version)
    if numbers is None:
        return False
    first, beyond = PROVEN_VERSIONS
    return first <= (int(numbers[1]), int(numbers[2])) < beyond


NOT_A_NUMBER = object()


def parse_key(text, shared):
    """A key as prometheus_client's merge reads it: (metric name, sample name, sorted
    labels, help, the `le` label's bound); Unreadable where it would raise or where its
    exposition would. Names, help and labels are taken from `shared` where another key
    has them already, so that each is kept once."""
    try:
        metric_name, name, labels, help_text = json.loads(text)
    except _NOT_A_KEY:
        raise Unreadable from None
    if not (
        type(labels) is dict
        and type(metric_name) is type(name) is type(help_text) is str
        and set(map(type, labels.values())) <= {str}
    ):
        raise Unreadable
    one = shared.setdefault
    labels_key = tuple(sorted(one(pair, pair) for pair in labels.items()))
    bucket = None
    if "le" in labels:
        try:
            bucket = float(labels["le"])
        except ValueError:
            bucket = NOT_A_NUMBER
    return (
        one(metric_name, metric_name),
        one(name, name),
        labels_key,
        one(help_text, help_text),
        bucket,
    )


def kind_of(name):
    """The type, gauge mode and pid that prometheus_client reads from a file's name."""
    parts = name.split("_")
    if parts[0] == GAUGE:
        return GAUGE, parts[1], parts[2][:-3]  # IndexError: a name it cannot read
    return parts[0], None, None


def read_file(path, length, *, claimed=False):
    """Up to `length` bytes from the start of the file, after 8 zero bytes: the value
    0.0 at double 0, for the slots a file holds no value for. A `claimed` length, what
    the file's header says it uses, is never trusted past what the file holds (an app's
    SQLite database claims 1.7 GB); the others are a page, or what a file held before."""
    with open(path, "rb", buffering=0) as file:
        if claimed:
            length = min(length, os.fstat(file.fileno()).st_size)
            if _first_hole(file.fileno()) < length:
                # prometheus_client writes every byte a file uses: a hole there is a
                # sparse file, which claims gigabytes that would be read at every scrape.
                raise Unreadable
        buffer = bytearray(WORD + length)
        view = memoryview(buffer)
        got = 0
        while got < length:
            count = file.readinto(view[WORD + got :])
            if not count:
                break
            got += count
    view.release()
    if got < 4:
        raise Unreadable
    del buffer[WORD + got :]
    return buffer


def claims_a_hole(path):
    """Whether the file's header claims bytes where the file holds a hole: read_file's
    check, for the files handed to prometheus_client's reader, which reads them all."""
    try:
        with open(path, "rb", buffering=0) as file:
            header = file.read(INTEGER.size)
            used = INTEGER.unpack(header)[0] if len(header) == INTEGER.size else 0
            length = min(used, os.fstat(file.fileno()).st_size)
            return _first_hole(file.fileno()) < length
    except OSError:
        return False


def _first_hole(descriptor):
    """Where the file's first hole begins (its size if it has none, or if the filesystem
    cannot say); the file's offset is left at its start."""
    try:
        return os.lseek(descriptor, 0, os.SEEK_HOLE)
    except OSError:
        return math.inf
    finally:
        os.lseek(descriptor, 0, os.SEEK_SET)


def doubles(buffer):
    return memoryview(buffer)[: len(buffer) - len(buffer) % WORD].cast("d")


def merge_readable(files, accumulate=True):
    """prometheus_client's merge of the files its reader can read, and those it cannot:
    tried one by one only when the merge of them all fails."""
    try:
        return list(MultiProcessCollector.merge(files, accumulate)), []
    except Exception:  # whatever a corrupt or foreign file makes the reader raise
        unreadable = [path for path in files if not is_readable(path)]
        readable = [path for path in files if path not in unreadable]
        return list(MultiProcessCollector.merge(readable, accumulate)), unreadable


def is_readable(path):
    try:
        MultiProcessCollector.merge([path])
    except Exception:
        return False
    return True


def histogram_layout(histogram):
    """(its buckets' sample name, its labels, its buckets' upper bounds) of an observable
    Histogram: one without labels, or a child of `.labels()`. prometheus_client keeps
    them in attributes of its own, proven with the reader (tests/test_exemplars.py)."""
    labels = dict(zip(histogram._labelnames, histogram._labelvalues, strict=True))
    return histogram._name + "_bucket", labels, tuple(histogram._upper_bounds)
