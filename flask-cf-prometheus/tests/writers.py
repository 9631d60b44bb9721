"""Metric files as workers write them: one test process playing many workers, a worker
process of its own paused at checkpoints, and pages no reader can read."""

import contextlib
import os
import struct
import subprocess
import sys

from prometheus_client import values

# A metric file that says it holds 64 bytes, whose first key claims 100: what no reader
# can read (prometheus_client raises "Read beyond file size detected").
KEY_PAST_THE_END = struct.pack("iii", 64, 0, 100).ljust(64, b"\0")


def garbage(rng):
    """A page of random bytes under a header that says the page is used."""
    return struct.pack("i", 4096) + rng.randbytes(4092)


@contextlib.contextmanager
def worker(pid):
    """Metrics created inside behave as if created in gunicorn worker `pid`, or in
    this process as a gunicorn worker if `pid` is None.

    prometheus_client chooses where values live when a metric is created; its
    multiprocess value class takes the process identifier, so one test process can play
    many workers, each writing its own files under PROMETHEUS_MULTIPROC_DIR, as
    prometheus_client's own tests do.
    """
    single_process = values.ValueClass
    identifier = os.getpid if pid is None else lambda: pid
    values.ValueClass = values.MultiProcessValue(process_identifier=identifier)
    try:
        yield
    finally:
        values.ValueClass = single_process


# A worker of its own, in a fresh interpreter (never a fork of this one, whose threads
# a fork would copy mid-step): it adds `count` label sets to a counter and a histogram,
# and at each of `pauses` checkpoints says how many it has added and waits for a line.
WRITER = """
import sys
from prometheus_client import Counter, Histogram

count, pauses = int(sys.argv[1]), int(sys.argv[2])
labels = ["kind", "route"]
events = Counter("events", "Events, by kind.", labels)
latency = Histogram("latency_seconds", "Latency.", labels, buckets=(0.25, 1, 2.5))
for number in range(1, count + 1):
    events.labels("a", f"/{number}").inc()
    latency.labels("a", f"/{number}").observe(number % 3)
    if pauses and number % (count // pauses) == 0:
        print(number, flush=True)
        sys.stdin.readline()
"""


@contextlib.contextmanager
def writer(directory, count, pauses=0):
    """A worker process adding label sets (WRITER), its files in `directory`. Iterating
    over `checkpoints(process)` runs it from checkpoint to checkpoint."""
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(count), str(pauses)],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        process.kill()
        process.wait(10)
        process.stdin.close()
        process.stdout.close()


def checkpoints(process):
    """Each checkpoint's count of label sets, the writer paused at it; resumed when the
    caller asks for the next. Then the writer's exit, checked."""
    for line in process.stdout:
        yield int(line)
        process.stdin.write("go\n")
        process.stdin.flush()
    assert process.wait(30) == 0
