"""prometheus_client's multiprocess files, read as its MultiProcessCollector reads them,
but each key once: a scrape reads the values, and parses only the keys it has not seen.

prometheus_client's merge parses every key of every file at every scrape, and builds an
object per value: half a second for 16 workers' files at 50 routes, for values that have
barely changed since the last scrape. A worker's file only ever grows: a key, once
written, keeps its place, and only the values beside it change. So `Reader` keeps, per
file, the keys it parsed and where their values live, and per directory a plan of what
to add to what and in which order; a scrape reads each file with one system call, checks
its keys are still where they were, and adds up the values.

The output is prometheus_client's, exactly: its samples in its order, and its
exposition. `Reader.exposition` renders a series' unchanging part (name and labels) once,
with prometheus_client's own encoder, and checks that it said the same as the encoder
would with the values in; a scrape then adds only the values, formatted by the
encoder's own `floatToGoString`.

The file format (prometheus_client's mmap_dict.py) and the merge (_multiprocess.py) are
prometheus_client's internals: all the kit knows of them is here, proven against the
installed prometheus_client by tests/test_metric_files.py, and used only with the
versions in PROVEN_VERSIONS (README.md, Versions). With any other,
`Reader.for_installed_version` says so once and returns None, and scrapes use
prometheus_client's own reader: slower, never wrong.
"""

import itertools
import json
import logging
import mmap
import operator
import os
import re
import stat
import struct
from array import array
from importlib import metadata
from itertools import starmap

from prometheus_client import exposition
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

logger = logging.getLogger(__name__)

# The prometheus_client versions this module was proven on, by the differential test
# against prometheus_client's own reader: from the first, up to but not including the
# second. Widen it, with pyproject.toml's range, only with a passing run of
# `pytest --prove-prometheus-client` against the new release (README.md, Versions).
PROVEN_VERSIONS = ((0, 26), (0, 27))

# mmap_dict.py: a file starts with the bytes it uses (an int) and 4 bytes of padding;
# then, per value, the key's length (an int), the key in UTF-8 padded to 8 bytes, and the
# value and its timestamp (doubles), at a multiple of 8 bytes.
_INTEGER = struct.Struct("i")
_HEADER_BYTES = 8
_VALUE_BYTES = 16
_WORD = 8
# prometheus_client reads the first page of a file, then what it says it uses beyond.
_FIRST_READ = mmap.PAGESIZE
_GAUGE = "gauge"
_ENCODERS = (exposition.generate_latest, openmetrics.generate_latest)


class Unreadable(Exception):
    """A file prometheus_client's reader could not read on its own either."""


# What prometheus_client's reader raises on a file it cannot read, and what
# json.loads and unpacking raise on a key that is not one.
_UNREADABLE = (Unreadable, OSError, ValueError, IndexError, struct.error)
_NOT_A_KEY = (ValueError, TypeError)


class PlanError(Exception):
    """Files each readable alone that this module does not merge (a NaN bucket bound,
    a metric with keys of several types): prometheus_client's merge takes them."""


def file_size(keys):
    """Bytes a file of these keys takes (an 8-byte header; per value, the key's length,
    the key padded to 8 bytes, the value and its timestamp), rounded up to whole 64 KiB
    as prometheus_client sizes its files."""
    used = _HEADER_BYTES
    for key in keys:
        length = len(key.encode("utf-8"))
        used += 4 + length + (8 - (length + 4) % 8) + _VALUE_BYTES
    return -(-used // (1 << 16)) * (1 << 16)


def installed_version():
    return metadata.version("prometheus-client")


def proven(version):
    numbers = re.match(r"(\d+)\.(\d+)", version)
    if numbers is None:
        return False
    first, beyond = PROVEN_VERSIONS
    return first <= (int(numbers[1]), int(numbers[2])) < beyond


def _indices(indices):
    """itemgetter that always returns a tuple, whatever the number of indices."""
    if len(indices) == 1:
        (index,) = indices
        return lambda sequence: (sequence[index],)
    if not indices:
        return lambda sequence: ()
    return operator.itemgetter(*indices)


class _File:
    """What one file's keys say: parsed once, extended as the file grows."""

    __slots__ = (
        "end",
        "generation",
        "identity",
        "ids",
        "kind",
        "serial",
        "used",
        "words",
    )

    _serials = itertools.count()

    def __init__(self, kind):
        self.serial = next(self._serials)  # a new one for every change of its keys
        self.kind = kind  # (type, gauge mode, pid) as prometheus_client reads the name
        self.used = 0  # what the header said when the keys were last parsed
        self.end = _HEADER_BYTES  # where parsing stops and goes on: the bytes a read needs
        self.ids = array("l")  # per value: its key's number in Reader._keys
        self.words = array("l")  # per value: where it lives, in doubles from the start
        self.identity = None  # the file's device and inode when its keys were checked
        self.generation = None  # the directory's generation then


class Reader:
    """Reads a directory of prometheus_client's multiprocess files, keeping what it has
    parsed between calls. Not thread-safe: the caller holds a lock."""

    def __init__(self):
        self._files = {}  # name -> _File
        self._keys = {}  # key text -> number
        self._key_info = []  # number -> (metric name, sample name, labels, help, bucket)
        self._shared = {}  # names, help texts and label pairs, each kept once
        self._checked = {}  # file type -> numbers of the keys that files of it may hold
        self._families = set()  # (name, help, file type) prometheus_client accepts
        self._plan = None
        self._renderings = {}  # encoder -> its _Rendering, kept across plans

    @classmethod
    def for_installed_version(cls):
        version = installed_version()
        if proven(version):
            return cls()
        first, beyond = (".".join(map(str, numbers)) for numbers in PROVEN_VERSIONS)
        logger.warning(
            "prometheus_client %s is outside the versions flask-cf-prometheus's metric file"
            " reader was proven on (%s up to %s): scrapes use prometheus_client's own, slower"
            " reader",
            version,
            first,
            beyond,
        )
        return None

    def read(self, paths, generation):
        """Read `paths` (in this order, as MultiProcessCollector would merge them):
        a Scrape of what they hold, and the paths that no reader can read. What is not
        a file, or is empty (a worker makes its file, then sizes it), is passed over.

        `generation` changes whenever a file may have been removed or replaced since
        (_multiprocess.py changes it at every fold): until it does, a file with the
        device and inode of a file read before is that file, grown at most, since
        prometheus_client's writer only appends keys; once it does, each file's keys
        are checked against what was parsed before they are trusted again."""
        views, states, unreadable = [], [], []
        seen = set()
        for path in paths:
            name = os.path.basename(path)
            seen.add(name)
            try:
                status = os.stat(path)
                if not stat.S_ISREG(status.st_mode) or not status.st_size:
                    continue
                view, state = self._read_file(path, name, status, generation)
            except FileNotFoundError:  # removed since it was listed: nothing to count
                continue
            except _UNREADABLE:
                # As prometheus_client's reader would fail on this file alone.
                self._files.pop(name, None)
                unreadable.append(path)
                continue
            views.append(view)
            states.append(state)
        for name in self._files.keys() - seen:
            del self._files[name]
        signature = tuple(state.serial for state in states)
        if self._plan is None or self._plan.signature != signature:
            self._forget_unused_keys()
            self._plan = _Plan(signature, states, self._key_info)
            for rendering in self._renderings.values():
                rendering.forget_all_but(self._plan.families)
        return Scrape(self, self._plan, views), unreadable

    def _read_file(self, path, name, status, generation):
        state = self._files.get(name)
        if state is None:
            state = _File(_kind(name))
        data = _read(path, max(_FIRST_READ, state.end))
        used = _INTEGER.unpack_from(data, _WORD)[0]
        if used > len(data) - _WORD:  # more than the first read took: read it all
            data = _read(path, used, claimed=True)
        length = len(data) - _WORD
        identity = (status.st_dev, status.st_ino)
        if state.ids and (
            identity != state.identity
            or generation != state.generation
            or used < state.used
            or length < state.end
        ):
            # Maybe not the file parsed before: parsed again, and kept as it was if its
            # keys are where they were (their text, hence their length, and place).
            again = self._parse(_File(state.kind), data, used, length)
            if again.ids != state.ids or again.words != state.words:
                state = again
        elif used != state.used:
            # Grown, or never parsed (a new _File has used 0; a file's header says at
            # least 8). A file with no keys is parsed once, not at every scrape.
            state = self._parse(state, data, used, length)
        state.identity = identity
        state.generation = generation
        self._files[name] = state
        return _doubles(data), state

    def _parse(self, state, data, used, length):
        """The file's keys from where parsing stopped, as prometheus_client's
        _read_all_values reads them; Unreadable where it would raise."""
        grown = _File(state.kind)
        grown.end = state.end
        ids, words = grown.ids, grown.words
        ids.extend(state.ids)
        words.extend(state.words)
        typ = state.kind[0]
        keys, key_info = self._keys, self._key_info
        checked = self._checked.setdefault(typ, set())
        pos = grown.end
        while pos < used:  # positions in the file; the buffer has 8 bytes before it
            key_length = _INTEGER.unpack_from(data, _WORD + pos)[0]
            if key_length <= 0 or key_length + pos > used:
                raise Unreadable
            pos += 4
            text = data[_WORD + pos : _WORD + pos + key_length].decode("utf-8")
            pos += key_length + (8 - (key_length + 4) % 8)
            if pos + _VALUE_BYTES > length:
                raise Unreadable
            number = keys.get(text)
            if number is None:
                number = keys[text] = len(key_info)
                key_info.append(_key_info(text, self._shared))
            if number not in checked:
                self._check_family(key_info[number], typ)
                checked.add(number)
            ids.append(number)
            words.append(pos // _WORD + 1)
            pos += _VALUE_BYTES
        grown.end = pos
        grown.used = used
        return grown

    def _check_family(self, info, typ):
        """Raise where prometheus_client's merge of a file of type `typ` holding this
        key alone would."""
        metric_name, _, _, help_text, bucket = info
        if (metric_name, help_text, typ) not in self._families:
            Metric(metric_name, help_text, typ)  # ValueError for a bad name or type
            self._families.add((metric_name, help_text, typ))
        if typ == "histogram" and bucket is _NOT_A_NUMBER:
            raise Unreadable

    def _forget_unused_keys(self):
        """Renumber the keys to those the files still hold, once the forgotten ones
        outnumber them, so that the key table stays bounded by what the files hold."""
        used = {number for state in self._files.values() for number in state.ids}
        if len(self._key_info) <= 2 * len(used) + 1024:
            return
        renumbered = {old: new for new, old in enumerate(sorted(used))}
        texts = {number: text for text, number in self._keys.items()}
        self._keys = {texts[old]: new for old, new in renumbered.items()}
        self._key_info = [self._key_info[old] for old in sorted(used)]
        for state in self._files.values():
            state.ids = array("l", (renumbered[number] for number in state.ids))
        self._checked = {}
        self._shared = {}  # filled again by the keys parsed from now on

    def rendering(self, encode):
        """The cached rendering for `encode`, or None for an encoder that is not one of
        prometheus_client's."""
        key = _encoder_key(encode)
        if key is None:
            return None
        if key not in self._renderings:  # a few at most: the encoders choose_encoder makes
            self._renderings[key] = _Rendering(encode)
        return self._renderings[key]


_NOT_A_NUMBER = object()


def _key_info(text, shared):
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
            bucket = _NOT_A_NUMBER
    return (
        one(metric_name, metric_name),
        one(name, name),
        labels_key,
        one(help_text, help_text),
        bucket,
    )


def _kind(name):
    """The type, gauge mode and pid that prometheus_client reads from a file's name."""
    parts = name.split("_")
    if parts[0] == _GAUGE:
        return _GAUGE, parts[1], parts[2][:-3]  # IndexError: a name it cannot read
    return parts[0], None, None


def _read(path, length, *, claimed=False):
    """Up to `length` bytes from the start of the file, after 8 zero bytes: the value
    0.0 at double 0, for the slots a file holds no value for. A `claimed` length, what
    the file's header says it uses, is never trusted past what the file holds (an app's
    SQLite database claims 1.7 GB); the others are a page, or what a file held before."""
    with open(path, "rb", buffering=0) as file:
        if claimed:
            length = min(length, os.fstat(file.fileno()).st_size)
        buffer = bytearray(_WORD + length)
        view = memoryview(buffer)
        got = 0
        while got < length:
            count = file.readinto(view[_WORD + got :])
            if not count:
                break
            got += count
    view.release()
    if got < 4:
        raise Unreadable
    del buffer[_WORD + got :]
    return buffer


def _doubles(buffer):
    return memoryview(buffer)[: len(buffer) - len(buffer) % _WORD].cast("d")


_MIN, _MAX, _LAST = "min", "max", "last"
_GENERIC_MODES = {
    "min": _MIN,
    "livemin": _MIN,
    "max": _MAX,
    "livemax": _MAX,
}
_SUM_MODES = ("sum", "livesum")
_MOST_RECENT_MODES = ("mostrecent", "livemostrecent")
_MODES_WITHOUT_PID = (*_GENERIC_MODES, *_SUM_MODES, *_MOST_RECENT_MODES)


class _Family:
    __slots__ = (
        "buckets",
        "contributions",
        "doc",
        "groups",
        "mode",
        "name",
        "start",
        "stop",
        "typ",
    )

    def __init__(self, name, doc, typ, mode):
        self.name = name
        self.doc = doc
        self.typ = typ
        self.mode = mode if typ == _GAUGE else None
        self.groups = {}  # labels -> {(sample name, labels): reference}
        self.buckets = {}  # labels without le -> {bound: slot}
        self.contributions = []  # most recent gauges: (name, labels, file, word)
        self.start = self.stop = 0  # its samples' place in the values

    @property
    def most_recent(self):
        return self.mode in _MOST_RECENT_MODES


class _Plan:
    """What to add to what, for one set of files and keys, in the order
    MultiProcessCollector's merge would: _read_metrics and _accumulate_metrics, with
    the values left out."""

    def __init__(self, signature, states, key_info):
        self.signature = signature
        self.families = {}
        modes = {}
        for state in states:
            typ, mode, _ = state.kind
            if typ == _GAUGE:
                for number in set(state.ids):
                    modes[key_info[number][0]] = mode
        self._slots = 0
        self._generic = 0  # slots of min, max and last-value gauges
        self._operation_of = {}  # generic slot -> _MIN, _MAX or _LAST
        self.generic = []  # (generic slot, file, word, operation), in merge order
        sums = []  # per file: (slot, word) in the file's order
        slot_of = {}
        for file, state in enumerate(states):
            typ, _, pid = state.kind
            slots, words = [], []
            for number, word in zip(state.ids, state.words, strict=True):
                token = number if typ != _GAUGE else (number, pid)
                reference = slot_of.get(token)
                if reference is None:
                    reference = self._reference(key_info[number], typ, pid, modes)
                    if reference[0] != "recent":
                        slot_of[token] = reference
                kind, slot = reference
                if kind == "sum":
                    slots.append(slot)
                    words.append(word)
                elif kind == "generic":
                    self.generic.append((slot, file, word, self._operation_of[slot]))
                else:
                    family, name, labels = slot
                    family.contributions.append((name, labels, file, word))
            sums.append((slots, words))
        self.sums = [self._adder(*pairs) for pairs in sums]
        self._outputs()

    def _reference(self, info, typ, pid, modes):
        metric_name, name, labels, help_text, bucket = info
        family = self.families.get(metric_name)
        if family is None:
            metric = Metric(metric_name, help_text, typ)
            family = self.families[metric_name] = _Family(
                metric_name, help_text, metric.type, modes.get(metric_name)
            )
        if typ == _GAUGE:
            labels = (*labels, ("pid", pid))
        if family.typ == _GAUGE:
            if family.mode in _MODES_WITHOUT_PID:
                labels = tuple(label for label in labels if label[0] != "pid")
            if family.most_recent:
                return "recent", (family, name, labels)
            last = None if family.mode in _SUM_MODES else _LAST
            operation = _GENERIC_MODES.get(family.mode, last)
            if operation is not None:
                return "generic", self._sample(family, name, labels, operation)
            return "sum", self._sample(family, name, labels)
        if family.typ == "histogram" and bucket is not None:
            if bucket is _NOT_A_NUMBER or bucket != bucket:
                raise PlanError(f"{metric_name}: a bucket bound that is not a number")
            without_le = tuple(label for label in labels if label[0] != "le")
            bounds = family.buckets.setdefault(without_le, {})
            slot = bounds.get(bucket)
            if slot is None:
                slot = bounds[bucket] = self._new_slot()
            return "sum", slot
        return "sum", self._sample(family, name, labels)

    def _new_slot(self):
        self._slots += 1
        return self._slots - 1

    def _sample(self, family, name, labels, operation=None):
        samples = family.groups.setdefault(labels, {})
        reference = samples.get((name, labels))
        if reference is None:
            if operation is None:
                reference = samples[(name, labels)] = ("sum", self._new_slot())
            else:
                self._operation_of[self._generic] = operation
                reference = samples[(name, labels)] = ("generic", self._generic)
                self._generic += 1
        return reference[1]

    def _adder(self, slots, words):
        """How to add one file's values to the slots: all at once (a tuple of the
        slots' values, 0.0 where the file has none) when the file fills many slots,
        else one by one. A slot a file holds twice gets its second value after."""
        first, again = {}, []
        for slot, word in zip(slots, words, strict=True):
            if slot in first:
                again.append((slot, word))
            else:
                first[slot] = word
        if len(first) * 4 < self._slots:
            return None, list(zip(slots, words, strict=True))
        # Double 0 of a read file is always 0.0 (_read).
        return _indices([first.get(slot, 0) for slot in range(self._slots)]), again

    def _outputs(self):
        """Each family's samples in the merge's order, and where each value comes from:
        a slot, a generic slot, or a running sum of a histogram's buckets."""
        references = []
        les = {}  # bound -> its label
        self.cumulative = []  # per histogram labels: (first output, its bucket slots)
        running = 0
        for family in self.families.values():
            if family.most_recent:
                continue
            bucket, count = f"{family.name}_bucket", f"{family.name}_count"
            for labels, bounds in family.buckets.items():
                ordered = sorted(bounds)
                start = running
                running += len(ordered)
                self.cumulative.append(_indices([bounds[bound] for bound in ordered]))
                samples = family.groups.setdefault(labels, {})
                for offset, bound in enumerate(ordered):
                    le = les.get(bound)
                    if le is None:
                        le = les[bound] = ("le", floatToGoString(bound))
                    samples[(bucket, (*labels, le))] = ("cumulative", start + offset)
                samples[(count, labels)] = ("cumulative", start + len(ordered) - 1)
            family.start = len(references)
            for samples in family.groups.values():
                references.extend(samples.items())
            family.stop = len(references)
        self.keys = [key for key, _ in references]
        for family in self.families.values():  # only what a scrape needs is kept
            family.groups = family.buckets = None
        generic_base = self._slots
        cumulative_base = generic_base + self._generic
        bases = {"sum": 0, "generic": generic_base, "cumulative": cumulative_base}
        self.pick = _indices([bases[kind] + index for _, (kind, index) in references])


class Scrape:
    """The values of one read, evaluated on demand."""

    def __init__(self, reader, plan, views):
        self._reader = reader
        self._plan = plan
        self._views = views
        self.values = self._evaluate()

    def _evaluate(self):
        plan = self._plan
        slots = [0.0] * plan._slots
        add = operator.add
        for view, (indices, one_by_one) in zip(self._views, plan.sums, strict=True):
            if indices is not None:
                slots = list(starmap(add, zip(slots, indices(view), strict=True)))
            for slot, word in one_by_one:
                slots[slot] += view[word]
        generic = [None] * plan._generic
        views = self._views
        for slot, file, word, operation in plan.generic:
            value = views[file][word]
            current = generic[slot]
            if current is None or operation is _LAST:
                generic[slot] = value
            elif operation is _MIN:
                if value < current:
                    generic[slot] = value
            elif value > current:
                generic[slot] = value
        cumulative = []
        for buckets in plan.cumulative:
            # The slots are sums from 0.0, never -0.0, so this is the merge's 0.0 + ...
            cumulative.extend(itertools.accumulate(buckets(slots)))
        return plan.pick([*slots, *generic, *cumulative])

    def _most_recent(self, family):
        """The merge's evaluation of a mostrecent gauge: its samples depend on the
        values' timestamps, so it is replayed at every read."""
        samples, timestamps = {}, {}
        for name, labels, file, word in family.contributions:
            view = self._views[file]
            value, timestamp = view[word], view[word + 1]
            latest = timestamps.setdefault(labels, {})
            timestamp = float(timestamp or 0)
            if latest.get(name, 0.0) < timestamp:
                samples.setdefault(labels, {})[(name, labels)] = value
                latest[name] = timestamp
        return [
            Sample(name, dict(labels), value)
            for by_labels in samples.values()
            for (name, labels), value in by_labels.items()
        ]

    def metrics(self):
        """The metric families, as MultiProcessCollector.collect would return them."""
        result = []
        for family in self._plan.families.values():
            result.append(self.metric(family))
        return result

    def metric(self, family):
        metric = Metric(family.name, family.doc, family.typ)
        if family.most_recent:
            metric.samples = self._most_recent(family)
        else:
            values = self.values[family.start : family.stop]
            metric.samples = [
                Sample(name, dict(labels), value)
                for (name, labels), value in zip(
                    self._plan.keys[family.start : family.stop], values, strict=True
                )
            ]
        return metric

    def exposition(self, encode, extra):
        """What `encode(collector)` would return for a collector yielding these families
        and then `extra`; None when `encode` is not one of prometheus_client's encoders."""
        rendering = self._reader.rendering(encode)
        if rendering is None:
            return None
        return rendering.render(self, self._plan, extra)


class Families:
    """A collector of given families, for prometheus_client's encoders."""

    def __init__(self, metrics):
        self._metrics = metrics

    def collect(self):
        return self._metrics


def _encoder_key(encode):
    function = getattr(encode, "func", encode)
    if function not in _ENCODERS or getattr(encode, "args", ()):
        return None
    return function, tuple(sorted(getattr(encode, "keywords", {}).items()))


class _Rendering:
    """One encoder's rendering of families: per family, its header and each series'
    text up to the value, learnt from the encoder itself and checked against it."""

    def __init__(self, encode):
        self._encode = encode
        self._trailer = encode(Families([])).decode("utf-8")
        # family name -> (what it was learnt for, (header, prefixes) or None: the encoder's)
        self._learnt = {}
        self._formatted = {}  # value -> floatToGoString(value), for values seen before

    def forget_all_but(self, families):
        for name in self._learnt.keys() - families.keys():
            del self._learnt[name]

    def _alone(self, metric):
        text = self._encode(Families([metric])).decode("utf-8")
        return text[: len(text) - len(self._trailer)]

    def _learn(self, metric):
        """The family's header and prefixes, when the encoder's text for it is exactly
        header + prefix + value + newline per sample; else None. And that text."""
        header = self._alone(Metric(metric.name, metric.documentation, metric.type))
        text = self._alone(metric)
        if not text.startswith(header):
            return None, text
        lines = text[len(header) :].split("\n")
        if lines.pop() != "" or len(lines) != len(metric.samples):
            return None, text
        prefixes = []
        for line, sample in zip(lines, metric.samples, strict=True):
            value = floatToGoString(sample.value)
            if not line.endswith(" " + value):
                return None, text
            prefixes.append(line[: len(line) - len(value)])
        return (header, prefixes), text

    def _format(self, values):
        """floatToGoString of each value: looked up for values formatted before, which
        most are from one scrape to the next. Never 0.0 (equal to -0.0, and formatted
        otherwise) nor NaN (equal to nothing): those are formatted every time."""
        formatted = list(map(self._formatted.get, values))
        if None not in formatted:
            return formatted
        if len(self._formatted) > 4 * len(values) + 1024:
            self._formatted.clear()
        for index, text in enumerate(formatted):
            if text is None:
                value = values[index]
                text = formatted[index] = floatToGoString(value)
                if value and value == value:
                    self._formatted[value] = text
        return formatted

    def render(self, scrape, plan, extra):
        parts = []
        for family in plan.families.values():
            keys = plan.keys[family.start : family.stop]
            learnt_for, learnt = self._learnt.get(family.name, (None, None))
            if family.most_recent:
                parts.append(self._alone(scrape.metric(family)))
            elif learnt_for != (family.doc, family.typ, keys):
                learnt, text = self._learn(scrape.metric(family))
                self._learnt[family.name] = (family.doc, family.typ, keys), learnt
                parts.append(text)
            elif learnt is None:
                parts.append(self._alone(scrape.metric(family)))
            else:
                header, prefixes = learnt
                values = self._format(scrape.values[family.start : family.stop])
                parts.append(header)
                parts.append("\n".join(starmap(operator.add, zip(prefixes, values, strict=True))))
                parts.append("\n")
        parts.extend(self._alone(metric) for metric in extra)
        parts.append(self._trailer)
        return "".join(parts).encode("utf-8")
