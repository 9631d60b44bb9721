"""Scrape cost at scale, in-process: the baked service's collector against
prometheus_client's MultiProcessCollector and generate_latest.

Run by bench.py with the baked project's Python, in the project's directory:
    python scrape_scale.py PACKAGE [--repeat N]            the comparison
    python scrape_scale.py PACKAGE --write DIR WORKERS ROUTES  files for a running service

For 2, 4, 8 and 16 workers, each worker's files hold the service's request metrics for
5, 20 and 50 routes x 2 methods x 3 status codes, written by prometheus_client's own
value class. Both read the same files, in turns: prometheus_client (the baseline), and
the service's LockedCollector. Printed, in milliseconds: the first scrape (of a
collector that has read nothing yet; the median of several) and a warm one (the
median of --repeat), each with its ratio to prometheus_client's in the same turns; and
the memory the service's collector keeps between scrapes (tracemalloc), beside the
bytes the files use.
"""

import argparse
import gc
import os
import re
import statistics
import struct
import tempfile
import time
import tracemalloc
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.openmetrics import exposition as openmetrics

WORKERS = (2, 4, 8, 16)
ROUTES = (5, 20, 50)
METHODS = ("GET", "POST")
CODES = ("200", "404", "500")
FIRST_SCRAPES = 5


def write_worker(pid, routes, exemplars=None):
    """What one worker's files hold after serving every label set once; with
    `exemplars` (the kit's exemplar writer for the worker), each request's trace too."""
    values.ValueClass = values.MultiProcessValue(process_identifier=lambda: pid)
    labels = ["method", "path", "code"]
    duration = Histogram("http_server_request_duration_seconds", "D.", labels, registry=None)
    requests = Counter("http_server_requests", "R.", labels, registry=None)
    in_progress = Gauge(
        "http_server_requests_in_progress", "I.", multiprocess_mode="livesum", registry=None
    )
    memory = Gauge(
        "process_resident_memory_bytes", "M.", multiprocess_mode="liveall", registry=None
    )
    for route in range(routes):
        for method in METHODS:
            for code in CODES:
                duration.labels(method, f"/route/{route}", code).observe(0.01 * route)
                requests.labels(method, f"/route/{route}", code).inc()
                if exemplars is not None:
                    child = duration.labels(method, f"/route/{route}", code)
                    exemplars(child, 0.01 * route, os.urandom(16).hex(), os.urandom(8).hex())
    in_progress.set(0)
    memory.set(50e6)


def timed(scrape):
    start = time.perf_counter()
    body = scrape()
    return time.perf_counter() - start, body


def compare(baseline, service, repeat, encode=generate_latest):
    """Medians of the first and warm scrapes, in seconds, and of their ratios to the
    baseline's in the same turn; the two take turns, so that load from elsewhere on
    the machine weighs on both alike."""
    firsts, warms = [], []
    for _ in range(FIRST_SCRAPES):
        base, body = timed(baseline)
        collector = service()
        mine, service_body = timed(lambda collector=collector: collector.exposition(encode))
        firsts.append((mine, base))
    check(body, service_body)
    for _ in range(repeat):
        base, body = timed(baseline)
        mine, service_body = timed(lambda: collector.exposition(encode))
        warms.append((mine, base))
    check(body, service_body)
    return [
        (
            statistics.median(mine for mine, _ in pairs),
            statistics.median(base for _, base in pairs),
            statistics.median(mine / base for mine, base in pairs),
        )
        for pairs in (firsts, warms)
    ]


def check(baseline_body, service_body):
    """The service's exposition is prometheus_client's, and its own gauge after (in
    OpenMetrics, once its exemplars are taken out: prometheus_client's reader has none)."""
    gauge = b"# HELP metrics_files_unreadable"
    if baseline_body.endswith(b"# EOF\n"):
        baseline_body = baseline_body.removesuffix(b"# EOF\n")
        service_body = re.sub(rb" # \{[^}]*\} \S+ \S+$", b"", service_body, flags=re.MULTILINE)
    assert service_body.startswith(baseline_body + gauge), "both must export the same"


def kept_bytes(service):
    """What a collector keeps between scrapes, after its first."""
    gc.collect()
    tracemalloc.start()
    collector = service()
    collector.exposition(generate_latest)
    gc.collect()
    kept = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del collector
    return kept


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("package")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--write", nargs=3, metavar=("DIRECTORY", "WORKERS", "ROUTES"))
    parser.add_argument(
        "--directory", help="compare on a copy of a real service's metrics directory"
    )
    args = parser.parse_args()
    from flask_cf_prometheus import _bench

    if args.write:
        directory, workers, routes = args.write
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        for pid in range(1_000_001, 1_000_001 + int(workers)):  # no real worker's pid
            write_worker(pid, int(routes), _bench.exemplar_writer(directory, pid))
        return

    if args.directory:
        real_directory(args.directory, args.repeat)
        return
    print("\nScrape cost in-process: prometheus_client's MultiProcessCollector and")
    print("generate_latest, and the service's collector (first scrape: median of")
    print(f"{FIRST_SCRAPES} fresh collectors; warm: median of {args.repeat}; in turns)")
    print(
        f"  {'workers':>7} {'routes':>6} {'label sets':>10} {'files use':>10}"
        f"   {'prometheus_client':>17}   {'service, first':>20}   {'service, warm':>20}"
        f"   {'kept':>8}"
    )
    for workers in WORKERS:
        for routes in ROUTES:
            with tempfile.TemporaryDirectory(prefix="bench-scale-") as directory:
                os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
                for pid in range(1, workers + 1):
                    write_worker(pid, routes)
                registry = CollectorRegistry()
                registry.register(MultiProcessCollector(None, path=directory))
                figures = compare(
                    lambda registry=registry: generate_latest(registry),
                    lambda directory=directory: _bench.scrape_collector(directory),
                    args.repeat,
                )
                kept = kept_bytes(lambda directory=directory: _bench.scrape_collector(directory))
                used = sum(
                    struct.unpack_from("i", path.read_bytes(), 0)[0]
                    for path in Path(directory).glob("*.db")
                )
            (first, base_first, first_ratio), (warm, base_warm, warm_ratio) = figures
            series = routes * len(METHODS) * len(CODES)
            print(
                f"  {workers:>7} {routes:>6} {series:>10} {used / 1024:>6.0f} KiB"
                f"   {base_first * 1000:7.1f} / {base_warm * 1000:6.1f} ms"
                f"   {first * 1000:7.1f} ms ({first_ratio:5.3f}x)"
                f"   {warm * 1000:7.2f} ms ({warm_ratio:5.3f}x)"
                f"   {kept / 1024:>4.0f} KiB"
            )
    with_exemplars(args.repeat)


def with_exemplars(repeat):
    """The warm OpenMetrics scrape of 16 workers' files whose every label set's request
    was sampled, leaving an exemplar: the service's, against prometheus_client's, which
    reads no exemplars."""
    from flask_cf_prometheus import _bench

    print(
        "  OpenMetrics, 16 workers, an exemplar on every label set's bucket (the service's;"
        " prometheus_client's has none):"
    )
    for routes in ROUTES:
        with tempfile.TemporaryDirectory(prefix="bench-exemplars-") as directory:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
            for pid in range(1, 17):
                write_worker(pid, routes, _bench.exemplar_writer(directory, pid))
            registry = CollectorRegistry()
            registry.register(MultiProcessCollector(None, path=directory))
            _, (warm, base_warm, warm_ratio) = compare(
                lambda registry=registry: openmetrics.generate_latest(registry),
                lambda directory=directory: _bench.scrape_collector(directory),
                repeat,
                encode=openmetrics.generate_latest,
            )
        print(
            f"  {16:>7} {routes:>6} {routes * len(METHODS) * len(CODES):>10}"
            f"   prometheus_client warm {base_warm * 1000:6.1f} ms"
            f"   service warm {warm * 1000:7.2f} ms ({warm_ratio:5.3f}x)"
        )


def real_directory(directory, repeat):
    """One line: the comparison on a real service's directory, as its workers left it."""
    from flask_cf_prometheus import _bench

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    registry = CollectorRegistry()
    registry.register(MultiProcessCollector(None, path=directory))
    (first, base_first, first_ratio), (warm, base_warm, warm_ratio) = compare(
        lambda: generate_latest(registry),
        lambda: _bench.scrape_collector(directory),
        repeat,
    )
    files = sorted(path.name for path in Path(directory).glob("*.db"))
    empty = sum(
        1
        for name in files
        if struct.unpack_from("i", (Path(directory) / name).read_bytes())[0] <= 8
    )
    spares = len(list(Path(directory).glob(".spare-*")))
    print(
        f"  in-process on its directory ({len(files)} files, {empty} with no keys,"
        f" {spares} spare sets): first {first * 1000:.2f} ms ({first_ratio:.3f}x"
        f" prometheus_client's {base_first * 1000:.2f} ms), warm {warm * 1000:.3f} ms"
        f" ({warm_ratio:.3f}x its {base_warm * 1000:.2f} ms)"
    )


if __name__ == "__main__":
    main()
