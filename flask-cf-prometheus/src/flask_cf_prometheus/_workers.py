"""What gunicorn's hooks (gunicorn.py) record of each worker: that it runs, its process
figures, and why it exited."""

import threading
import time

from ._metrics import (
    EXIT_REASONS,
    WORKER_EXITS,
    WORKER_MEMORY,
    WORKER_OPEN_FDS,
    WORKERS_ALIVE,
    WORKERS_CONFIGURED,
    WORKERS_CPU,
)

_process_sampler = None
_exit_recorded = False


def prepare_exit_count():
    """Every exit reason from 0, in this worker's files: the master counts the exit of a
    worker that could not count it itself there. gunicorn.py calls it in each
    worker as soon as it has forked (post_fork)."""
    for reason in EXIT_REASONS:
        WORKER_EXITS.labels(reason)


def start_worker(configured_workers):
    """Count this worker in and sample its process figures from now on; gunicorn.py
    calls it in each worker once it has booted (post_worker_init)."""
    global _process_sampler
    WORKERS_CONFIGURED.set(configured_workers)
    WORKERS_ALIVE.set(1)
    _process_sampler = ProcessSampler()
    _process_sampler.start()


def record_worker_exit(reason):
    """Count this worker's exit once, with the first reason given (a timed-out worker
    exits through gunicorn's usual exit path too)."""
    global _exit_recorded
    if not _exit_recorded:
        _exit_recorded = True
        WORKER_EXITS.labels(reason).inc()


def sample_this_worker():
    """Sample this worker's process figures now, if it is a gunicorn worker."""
    if _process_sampler is not None:
        _process_sampler.sample()


class ProcessSampler(threading.Thread):
    """Samples this worker's memory, open files and CPU time every few seconds, and
    when it answers a scrape: in multiprocess mode only the worker answering a scrape
    runs code, so every worker must record its own figures as it goes.
    """

    INTERVAL_SECONDS = 5

    def __init__(self):
        super().__init__(name="metrics-process-sampler", daemon=True)
        from prometheus_client.process_collector import ProcessCollector

        self._collector = ProcessCollector(registry=None)
        self._cpu_seconds = 0.0
        self._lock = threading.Lock()

    def sample(self):
        with self._lock:
            self._sample()

    def _sample(self):
        for metric in self._collector.collect():
            value = metric.samples[0].value
            if metric.name == "process_resident_memory_bytes":
                WORKER_MEMORY.set(value)
            elif metric.name == "process_open_fds":
                WORKER_OPEN_FDS.set(value)
            elif metric.name == "process_cpu_seconds":
                WORKERS_CPU.inc(max(value - self._cpu_seconds, 0))
                self._cpu_seconds = value

    def run(self):
        while True:
            self.sample()
            time.sleep(self.INTERVAL_SECONDS)
