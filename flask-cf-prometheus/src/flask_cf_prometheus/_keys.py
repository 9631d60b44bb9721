"""The keys of prometheus_client's multiprocess files, each parsed once.

A worker's file only grows: a key, once written, keeps its place, and only the values
beside it change. So each file's keys are parsed once (`FileKeys`), extended as the file
grows, and numbered in one table shared by every file (`KeyTable`).
"""

import itertools
from array import array

from prometheus_client.metrics_core import Metric

from ._metric_files import (
    HEADER_BYTES,
    INTEGER,
    NOT_A_NUMBER,
    VALUE_BYTES,
    WORD,
    Unreadable,
    parse_key,
)


class FileKeys:
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
        self.end = HEADER_BYTES  # where parsing stops and goes on: the bytes a read needs
        self.ids = array("l")  # per value: its key's number in the KeyTable
        self.words = array("l")  # per value: where it lives, in doubles from the start
        self.identity = None  # the file's device and inode when its keys were checked
        self.generation = None  # the directory's generation then


class KeyTable:
    """Every key the files hold, numbered, with what it says (parse_key). Not
    thread-safe: the caller holds a lock."""

    def __init__(self):
        self._numbers = {}  # key text -> number
        self.info = []  # number -> (metric name, sample name, labels, help, bucket)
        self._shared = {}  # names, help texts and label pairs, each kept once
        self._checked = {}  # file type -> numbers of the keys that files of it may hold
        self._families = set()  # (name, help, file type) prometheus_client accepts

    def parse(self, state, data, used, length):
        """The file's keys from where parsing stopped, as prometheus_client's
        _read_all_values reads them; Unreadable where it would raise."""
        grown = FileKeys(state.kind)
        grown.end = state.end
        ids, words = grown.ids, grown.words
        ids.extend(state.ids)
        words.extend(state.words)
        typ = state.kind[0]
        keys, key_info = self._numbers, self.info
        checked = self._checked.setdefault(typ, set())
        pos = grown.end
        while pos < used:  # positions in the file; the buffer has 8 bytes before it
            key_length = INTEGER.unpack_from(data, WORD + pos)[0]
            if key_length <= 0 or key_length + pos > used:
                raise Unreadable
            pos += 4
            text = data[WORD + pos : WORD + pos + key_length].decode("utf-8")
            pos += key_length + (8 - (key_length + 4) % 8)
            if pos + VALUE_BYTES > length:
                raise Unreadable
            number = keys.get(text)
            if number is None:
                number = keys[text] = len(key_info)
                key_info.append(parse_key(text, self._shared))
            if number not in checked:
                self._check_family(key_info[number], typ)
                checked.add(number)
            ids.append(number)
            words.append(pos // WORD + 1)
            pos += VALUE_BYTES
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
        if typ == "histogram" and bucket is NOT_A_NUMBER:
            raise Unreadable

    def forget_all_but(self, states):
        """Renumber the keys to those these files hold, once the forgotten ones
        outnumber them, so that the table stays bounded by what the files hold."""
        used = {number for state in states for number in state.ids}
        if len(self.info) <= 2 * len(used) + 1024:
            return
        renumbered = {old: new for new, old in enumerate(sorted(used))}
        texts = {number: text for text, number in self._numbers.items()}
        self._numbers = {texts[old]: new for old, new in renumbered.items()}
        self.info = [self.info[old] for old in sorted(used)]
        for state in states:
            state.ids = array("l", (renumbered[number] for number in state.ids))
        self._checked = {}
        self._shared = {}  # filled again by the keys parsed from now on
