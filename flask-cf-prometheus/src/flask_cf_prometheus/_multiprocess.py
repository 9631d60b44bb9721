"""The scrape's collector: the workers' metric files, read under the directory's lock.

Under gunicorn each worker keeps its values in files of its own (prometheus_client's
multiprocess mode), and the worker answering a scrape reads them all. The shared lock
makes a scrape see a dead worker's files or the aggregate that folded them (_fold.py),
never both, never neither.
"""

import contextlib
import glob
import logging
import os
import threading
from fcntl import LOCK_SH
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.openmetrics import exposition as openmetrics

from . import _openmetrics_files as openmetrics_files
from ._merge_plan import PlanError
from ._metric_files import claims_a_hole, merge_readable
from ._metrics_directory import GENERATION_BYTES, UNREADABLE_SUFFIX, locked, read_generation
from ._reader import Reader, Scrape
from ._rendering import Families, encoder_key

logger = logging.getLogger(__name__)

# What this process has logged already, so that a bad file is said once, not per scrape.
_said = set()


def _say_once(message):
    if message not in _said:
        _said.add(message)
        logger.error(message)


class LockedCollector:
    """The workers' metrics, read under the directory's shared lock.

    The kit's reader (_reader.py) parses each file once; with a prometheus_client it is not
    proven on, prometheus_client's merge reads them instead. A file neither can read is
    skipped, logged once and counted in metrics_files_unreadable. To an OpenMetrics
    scrape, the kit's reader adds each bucket's newest exemplar and each series' start
    (_openmetrics_files.py); prometheus_client's has neither. A gthread worker's threads
    scrape one at a time."""

    def __init__(self, directory):
        self._directory = Path(directory)
        self._reader = Reader.for_installed_version()
        self._openmetrics = openmetrics_files.Reader()
        self._reading = threading.Lock()

    def collect(self):
        with self._reading:
            # With the exemplars, which the text encoders leave out; without the starts,
            # which they would not.
            read, extra = self._read(for_openmetrics=True)
            metrics = read.metrics() if isinstance(read, Scrape) else read
        return [*metrics, *extra]

    def exposition(self, encode):
        """`encode(self)`, the same bytes, rendered from what the reader rendered before
        where it can be."""
        key = encoder_key(encode)
        with self._reading:
            read, extra = self._read(
                for_openmetrics=key is not None and key[0] is openmetrics.generate_latest
            )
            if isinstance(read, Scrape):
                body = read.exposition(encode, extra)
                if body is not None:
                    return body
                read = read.metrics()
        return encode(Families([*read, *extra]))

    def _read(self, for_openmetrics):
        with contextlib.ExitStack() as held:
            try:
                generation = read_generation(held.enter_context(locked(self._directory, LOCK_SH)))
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
                except PlanError as error:
                    _say_once(f"Scrapes read these metric files with prometheus_client: {error}")
            if read is None:
                # A worker creates its file empty and then sizes it: an empty file has no
                # values yet. A link, or a sparse file, is never a metric file.
                sized = [
                    path
                    for path in files
                    if os.path.isfile(path)
                    and not os.path.islink(path)
                    and os.path.getsize(path)
                    and not claims_a_hole(path)
                ]
                read, unreadable = merge_readable(sized)
                if glob.glob(os.path.join(self._directory, "openmetrics_*.bin")):
                    _say_once(
                        "Scrapes read the metric files with prometheus_client:"
                        " no exemplars, no start times"
                    )
            elif for_openmetrics:
                read.exemplars, read.starts = self._openmetrics.read(
                    sorted(glob.glob(os.path.join(self._directory, "openmetrics_*.bin")))
                )
        for path in unreadable:
            _say_once(f"Scrapes skip {path}, which is not a metric file prometheus_client can read")
        unreadable_files = GaugeMetricFamily(
            "metrics_files_unreadable",
            "Files in the metrics directory that scrapes skip or folds kept aside, unreadable.",
            value=len(unreadable) + kept_aside,
        )
        return read, [unreadable_files]
