"""prometheus_client's multiprocess files, read as its MultiProcessCollector reads them,
but each key once.

prometheus_client's merge parses every key of every file at every scrape: half a second
for 16 workers' files at 50 routes. Here each file's keys are parsed once (_keys.py)
and the merge is planned once (_merge_plan.py): a scrape reads each file with one system
call and adds up the values. Its output is prometheus_client's, exactly."""

import itertools
import logging
import operator
import os
import stat
from itertools import starmap

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from . import _metric_files as metric_files
from ._keys import FileKeys, KeyTable
from ._merge_plan import LAST, MIN, Plan
from ._metric_files import (
    FIRST_READ,
    INTEGER,
    UNREADABLE_ERRORS,
    WORD,
    Unreadable,
    doubles,
    kind_of,
    read_file,
)
from ._rendering import Renderings

logger = logging.getLogger(__name__)


class Scrape:
    """The values of one read, evaluated on demand."""

    def __init__(self, renderings, plan, views):
        self._renderings = renderings
        self._plan = plan
        self._views = views
        self.values = self._evaluate()
        # The newest exemplar of each bucket, by (sample name, labels), and the start of
        # each series, by its _created sample's (_openmetrics_files.py).
        self.exemplars = {}
        self.starts = {}

    def starts_of(self, family):
        """(index of the series' last sample in the family, its start) of each series of
        a counter or histogram that has a start."""
        if family.typ not in ("counter", "histogram") or not self.starts:
            return []
        name = family.name + "_created"
        found = []
        for last, labels in self._plan.series(family):
            start = self.starts.get((name, labels))
            if start is not None:
                found.append((last, start))
        return found

    def exemplars_of(self, family):
        """(sample's index in the family, exemplar) of each of a histogram's buckets that
        has one."""
        if family.typ != "histogram" or not self.exemplars:
            return []
        found = []
        for index, key in enumerate(self._plan.sorted_keys(family)):
            exemplar = self.exemplars.get(key)
            if exemplar is not None and key[0].endswith("_bucket"):
                found.append((index, exemplar))
        return found

    def _evaluate(self):
        plan = self._plan
        slots = [0.0] * plan.slot_count
        add = operator.add
        for view, (indices, one_by_one) in zip(self._views, plan.sums, strict=True):
            if indices is not None:
                slots = list(starmap(add, zip(slots, indices(view), strict=True)))
            for slot, word in one_by_one:
                slots[slot] += view[word]
        generic = [None] * plan.generic_count
        views = self._views
        for slot, file, word, operation in plan.generic:
            value = views[file][word]
            current = generic[slot]
            if current is None or operation is LAST:
                generic[slot] = value
            elif operation is MIN:
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

    def metric(self, family, *, exemplars=True, starts=False):
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
            for index, exemplar in self.exemplars_of(family) if exemplars else ():
                metric.samples[index] = metric.samples[index]._replace(exemplar=exemplar)
            # After each series' last sample, its start, as prometheus_client writes it.
            for last, start in reversed(self.starts_of(family) if starts else ()):
                series = metric.samples[last]
                created = Sample(family.name + "_created", series.labels, start)
                metric.samples.insert(last + 1, created)
        return metric

    def exposition(self, encode, extra):
        """What `encode(collector)` would return for a collector yielding these families
        and then `extra`; None when `encode` is not one of prometheus_client's encoders."""
        rendering = self._renderings.for_encoder(encode)
        if rendering is None:
            return None
        return rendering.render(self, self._plan, extra)


class Reader:
    """Reads a directory of prometheus_client's multiprocess files, keeping what it has
    parsed between calls. Not thread-safe: the caller holds a lock."""

    def __init__(self):
        self._files = {}  # name -> FileKeys
        self._keys = KeyTable()
        self._plan = None
        self._renderings = Renderings()  # kept across plans

    @classmethod
    def for_installed_version(cls):
        version = metric_files.installed_version()
        if metric_files.proven(version):
            return cls()
        first, beyond = (".".join(map(str, numbers)) for numbers in metric_files.PROVEN_VERSIONS)
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
        """Read `paths`, in MultiProcessCollector's order: a Scrape, and the paths no reader
        can read. Empty files (a worker makes its file, then sizes it) are passed over.

        Until `generation` changes, a file with a known device and inode is the file read
        before, grown at most. A fold changes it when it removes or replaces files, and then
        each file's keys are checked again."""
        views, states, unreadable = [], [], []
        seen = set()
        for path in paths:
            name = os.path.basename(path)
            seen.add(name)
            try:
                status = os.lstat(path)
                if stat.S_ISLNK(status.st_mode):
                    # Never a metric file: a link to one elsewhere (a sparse file of
                    # gigabytes, say) is not read.
                    raise Unreadable
                if not stat.S_ISREG(status.st_mode) or not status.st_size:
                    continue
                view, state = self._read_file(path, name, status, generation)
            except FileNotFoundError:  # removed since it was listed: nothing to count
                continue
            except UNREADABLE_ERRORS:
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
            self._keys.forget_all_but(self._files.values())
            self._plan = Plan(signature, states, self._keys.info)
            self._renderings.forget_all_but(self._plan.families)
        return Scrape(self._renderings, self._plan, views), unreadable

    def _read_file(self, path, name, status, generation):
        state = self._files.get(name)
        if state is None:
            state = FileKeys(kind_of(name))
        data = read_file(path, max(FIRST_READ, state.end))
        used = INTEGER.unpack_from(data, WORD)[0]
        if used > len(data) - WORD:  # more than the first read took: read it all
            data = read_file(path, used, claimed=True)
        length = len(data) - WORD
        identity = (status.st_dev, status.st_ino)
        if state.ids and (
            identity != state.identity
            or generation != state.generation
            or used < state.used
            or length < state.end
        ):
            # Maybe not the file parsed before: parsed again, and kept as it was if its
            # keys are where they were (their text, hence their length, and place).
            again = self._keys.parse(FileKeys(state.kind), data, used, length)
            if again.ids != state.ids or again.words != state.words:
                state = again
        elif used != state.used:
            # Grown, or never parsed (a new FileKeys has used 0; a file's header says at
            # least 8). A file with no keys is parsed once, not at every scrape.
            state = self._keys.parse(state, data, used, length)
        state.identity = identity
        state.generation = generation
        self._files[name] = state
        return doubles(data), state
