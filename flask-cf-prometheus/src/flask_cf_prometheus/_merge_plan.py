"""What a scrape adds to what: the order of prometheus_client's merge, worked out once.

A plan is built for one set of files and keys, and kept until they change. It gives each
sample a slot, says which file's values add into which slot, and in which order the merge
would yield the samples. A scrape (_reader.py) then only adds up the values.
"""

import operator

from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from ._metric_files import GAUGE, NOT_A_NUMBER


class PlanError(Exception):
    """Files each readable alone that this module does not merge (a NaN bucket bound,
    a metric with keys of several types): prometheus_client's merge takes them."""


def indices_getter(indices):
    """itemgetter that always returns a tuple, whatever the number of indices."""
    if len(indices) == 1:
        (index,) = indices
        return lambda sequence: (sequence[index],)
    if not indices:
        return lambda sequence: ()
    return operator.itemgetter(*indices)


MIN, MAX, LAST = "min", "max", "last"
_GENERIC_MODES = {
    "min": MIN,
    "livemin": MIN,
    "max": MAX,
    "livemax": MAX,
}
_SUM_MODES = ("sum", "livesum")
_MOST_RECENT_MODES = ("mostrecent", "livemostrecent")
_MODES_WITHOUT_PID = (*_GENERIC_MODES, *_SUM_MODES, *_MOST_RECENT_MODES)


class Family:
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
        self.mode = mode if typ == GAUGE else None
        self.groups = {}  # labels -> {(sample name, labels): reference}
        self.buckets = {}  # labels without le -> {bound: slot}
        self.contributions = []  # most recent gauges: (name, labels, file, word)
        self.start = self.stop = 0  # its samples' place in the values

    @property
    def most_recent(self):
        return self.mode in _MOST_RECENT_MODES


class Plan:
    """What to add to what, for one set of files and keys, in the order
    MultiProcessCollector's merge would: _read_metrics and _accumulate_metrics, with
    the values left out."""

    def __init__(self, signature, states, key_info):
        self.signature = signature
        self.families = {}
        self._sorted_keys = {}
        self._series = {}
        modes = _gauge_modes(states, key_info)
        self.slot_count = 0
        self.generic_count = 0  # slots of min, max and last-value gauges
        self._operation_of = {}  # generic slot -> MIN, MAX or LAST
        self.generic = []  # (generic slot, file, word, operation), in merge order
        sums = []  # per file: (slot, word) in the file's order
        slot_of = {}
        for file, state in enumerate(states):
            typ, _, pid = state.kind
            slots, words = [], []
            for number, word in zip(state.ids, state.words, strict=True):
                token = number if typ != GAUGE else (number, pid)
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
        self.sums = [_adder(slots, words, self.slot_count) for slots, words in sums]
        self.keys, self.pick, self.cumulative = _output_order(
            self.families, self.slot_count, self.generic_count
        )

    def _reference(self, info, typ, pid, modes):
        metric_name, name, labels, help_text, bucket = info
        family = self.families.get(metric_name)
        if family is None:
            metric = Metric(metric_name, help_text, typ)
            family = self.families[metric_name] = Family(
                metric_name, help_text, metric.type, modes.get(metric_name)
            )
        if typ == GAUGE:
            labels = (*labels, ("pid", pid))
        if family.typ == GAUGE:
            if family.mode in _MODES_WITHOUT_PID:
                labels = tuple(label for label in labels if label[0] != "pid")
            if family.most_recent:
                return "recent", (family, name, labels)
            last = None if family.mode in _SUM_MODES else LAST
            operation = _GENERIC_MODES.get(family.mode, last)
            if operation is not None:
                return "generic", self._sample(family, name, labels, operation)
            return "sum", self._sample(family, name, labels)
        if family.typ == "histogram" and bucket is not None:
            if bucket is NOT_A_NUMBER or bucket != bucket:
                raise PlanError(f"{metric_name}: a bucket bound that is not a number")
            without_le = tuple(label for label in labels if label[0] != "le")
            bounds = family.buckets.setdefault(without_le, {})
            slot = bounds.get(bucket)
            if slot is None:
                slot = bounds[bucket] = self._new_slot()
            return "sum", slot
        return "sum", self._sample(family, name, labels)

    def _new_slot(self):
        self.slot_count += 1
        return self.slot_count - 1

    def _sample(self, family, name, labels, operation=None):
        samples = family.groups.setdefault(labels, {})
        reference = samples.get((name, labels))
        if reference is None:
            if operation is None:
                reference = samples[(name, labels)] = ("sum", self._new_slot())
            else:
                self._operation_of[self.generic_count] = operation
                reference = samples[(name, labels)] = ("generic", self.generic_count)
                self.generic_count += 1
        return reference[1]

    def series(self, family):
        """(index of its last sample in the family, its sorted labels without `le`) of
        each series: the merge keeps a series' samples together. Worked out once per
        plan."""
        cached = self._series.get(family.name)
        if cached is None:
            cached = []
            for index, (_, labels) in enumerate(self.keys[family.start : family.stop]):
                series = tuple(sorted(pair for pair in labels if pair[0] != "le"))
                if cached and cached[-1][1] == series:
                    cached[-1] = (index, series)
                else:
                    cached.append((index, series))
            self._series[family.name] = cached
        return cached

    def sorted_keys(self, family):
        """The family's keys with their labels sorted (the merge puts `le` last), as
        exemplar files name samples; worked out once per plan."""
        cached = self._sorted_keys.get(family.name)
        if cached is None:
            keys = self.keys[family.start : family.stop]
            cached = [(name, tuple(sorted(labels))) for name, labels in keys]
            self._sorted_keys[family.name] = cached
        return cached


def _gauge_modes(states, key_info):
    """Each gauge's mode by its metric name, as the files' names say it."""
    modes = {}
    for state in states:
        typ, mode, _ = state.kind
        if typ == GAUGE:
            for number in set(state.ids):
                modes[key_info[number][0]] = mode
    return modes


def _adder(slots, words, slot_count):
    """How to add one file's values to the slots: all at once (a tuple of the
    slots' values, 0.0 where the file has none) when the file fills many slots,
    else one by one. A slot a file holds twice gets its second value after."""
    first, again = {}, []
    for slot, word in zip(slots, words, strict=True):
        if slot in first:
            again.append((slot, word))
        else:
            first[slot] = word
    if len(first) * 4 < slot_count:
        return None, list(zip(slots, words, strict=True))
    # Double 0 of a read file is always 0.0 (read_file, _metric_files.py).
    return indices_getter([first.get(slot, 0) for slot in range(slot_count)]), again


def _output_order(families, slot_count, generic_count):
    """Each family's samples in the merge's order (their keys), where each value comes
    from (a slot, a generic slot, or a running sum of a histogram's buckets), and the
    bucket slots of each histogram's running sums."""
    references = []
    les = {}  # bound -> its label
    cumulative = []  # per histogram labels: its bucket slots, in order
    running = 0
    for family in families.values():
        if family.most_recent:
            continue
        bucket, count = f"{family.name}_bucket", f"{family.name}_count"
        for labels, bounds in family.buckets.items():
            ordered = sorted(bounds)
            start = running
            running += len(ordered)
            cumulative.append(indices_getter([bounds[bound] for bound in ordered]))
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
    for family in families.values():  # only what a scrape needs is kept
        family.groups = family.buckets = None
    generic_base = slot_count
    cumulative_base = generic_base + generic_count
    bases = {"sum": 0, "generic": generic_base, "cumulative": cumulative_base}
    pick = indices_getter([bases[kind] + index for _, (kind, index) in references])
    return [key for key, _ in references], pick, cumulative
