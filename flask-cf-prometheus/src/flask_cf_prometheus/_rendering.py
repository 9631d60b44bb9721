"""The exposition of a scrape, rendered as prometheus_client's encoders render it.

A series' unchanging part (its name and labels) is rendered once, by the encoder
itself, and checked against what the encoder says with the values in. A scrape then
adds only the values, formatted by the encoder's own `floatToGoString`.
"""

import operator
from itertools import starmap

from prometheus_client import exposition
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.utils import floatToGoString

from ._openmetrics_files import openmetrics_suffix

ENCODERS = (exposition.generate_latest, openmetrics.generate_latest)


class Families:
    """A collector of given families, for prometheus_client's encoders."""

    def __init__(self, metrics):
        self._metrics = metrics

    def collect(self):
        return self._metrics


def encoder_key(encode):
    function = getattr(encode, "func", encode)
    if function not in ENCODERS or getattr(encode, "args", ()):
        return None
    return function, tuple(sorted(getattr(encode, "keywords", {}).items()))


class Rendering:
    """One encoder's rendering of families: per family, its header and each series'
    text up to the value, learnt from the encoder itself and checked against it."""

    def __init__(self, encode):
        self._encode = encode
        # Only OpenMetrics has exemplars and starts (_created); the text format, as
        # prometheus_client's multiprocess reader writes it, has neither.
        self._openmetrics = encoder_key(encode)[0] is openmetrics.generate_latest
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
                continue
            if learnt_for != (family.doc, family.typ, keys):
                learnt, _ = self._learn(scrape.metric(family, exemplars=False))
                self._learnt[family.name] = (family.doc, family.typ, keys), learnt
            if learnt is None:
                parts.append(self._alone(scrape.metric(family, starts=self._openmetrics)))
                continue
            header, prefixes = learnt
            values = self._format(scrape.values[family.start : family.stop])
            lines = list(starmap(operator.add, zip(prefixes, values, strict=True)))
            if self._openmetrics:
                for index, exemplar in scrape.exemplars_of(family):
                    lines[index] += openmetrics_suffix(exemplar)
                for last, start in reversed(scrape.starts_of(family)):
                    # The series' last line with its name made the _created sample's.
                    name = keys[last][0]
                    created = family.name + "_created" + prefixes[last][len(name) :]
                    lines.insert(last + 1, created + floatToGoString(start))
            parts.append(header)
            parts.append("\n".join(lines))
            parts.append("\n")
        parts.extend(self._alone(metric) for metric in extra)
        parts.append(self._trailer)
        return "".join(parts).encode("utf-8")


class Renderings:
    """Each encoder's Rendering, made when first asked for: a few at most, the encoders
    choose_encoder makes."""

    def __init__(self):
        self._by_encoder = {}

    def for_encoder(self, encode):
        """The rendering for `encode`, or None for an encoder that is not one of
        prometheus_client's."""
        key = encoder_key(encode)
        if key is None:
            return None
        if key not in self._by_encoder:
            self._by_encoder[key] = Rendering(encode)
        return self._by_encoder[key]

    def forget_all_but(self, families):
        for rendering in self._by_encoder.values():
            rendering.forget_all_but(families)
