"""Scrape cost at scale: the baked service's collector against prometheus_client's.

Run by bench.py with the baked project's Python, in the project's directory:
    python scrape_scale.py PACKAGE [--repeat N]

For 2, 4, 8 and 16 workers, each worker's files hold the service's request metrics for
5, 20 and 50 routes x 2 methods x 3 status codes, written by prometheus_client's own
value class. Both collectors read the same files: prometheus_client's plain
MultiProcessCollector (the baseline), and the service's LockedCollector, which takes the
shared lock and skips files not yet sized. Printed: the median milliseconds per scrape
(collect and encode in the text format), its ratio to the baseline, and the bytes of the
exposition and of the files read.
"""

import argparse
import importlib
import os
import statistics
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

WORKERS = (2, 4, 8, 16)
ROUTES = (5, 20, 50)
METHODS = ("GET", "POST")
CODES = ("200", "404", "500")


def write_worker(pid, routes):
    """What one worker's files hold after serving every label set once."""
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
    in_progress.set(0)
    memory.set(50e6)


def scrape(registry):
    start = time.perf_counter()
    body = generate_latest(registry)
    return time.perf_counter() - start, body


def compare(plain, locked, repeat):
    """Median milliseconds of each, and the median of their ratios: the two scrape in
    turns, so that load from elsewhere weighs on both alike."""
    timings = {"plain": [], "locked": []}
    for _ in range(repeat):
        seconds, body = scrape(plain)
        timings["plain"].append(seconds)
        seconds, locked_body = scrape(locked)
        timings["locked"].append(seconds)
        assert body == locked_body, "both collectors must export the same"
    ratio = statistics.median(
        mine / base for mine, base in zip(timings["locked"], timings["plain"], strict=True)
    )
    base, mine = (statistics.median(timings[name]) * 1000 for name in ("plain", "locked"))
    return base, mine, ratio, len(body)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("package")
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    print(f"\nScrape cost at scale (median of {args.repeat} scrapes each, in turns)")
    print(
        f"  {'workers':>7} {'routes':>6} {'label sets':>10}   {'prometheus_client':>17}"
        f"   {'baked service':>22}   {'exposition':>10} {'files':>9}"
    )
    for workers in WORKERS:
        for routes in ROUTES:
            with tempfile.TemporaryDirectory(prefix="bench-scale-") as directory:
                os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
                multiprocess = importlib.import_module(f"{args.package}.multiprocess")
                for pid in range(1, workers + 1):
                    write_worker(pid, routes)
                plain = CollectorRegistry()
                plain.register(MultiProcessCollector(None, path=directory))
                locked = CollectorRegistry()
                locked.register(multiprocess.LockedCollector(directory))
                base, mine, ratio, size = compare(plain, locked, args.repeat)
                files = sum(path.stat().st_size for path in Path(directory).glob("*.db"))
            series = routes * len(METHODS) * len(CODES)
            print(
                f"  {workers:>7} {routes:>6} {series:>10}   {base:14.2f} ms"
                f"   {mine:8.2f} ms ({ratio:5.3f}x)   {size:>8} B {files:>7} B"
            )


if __name__ == "__main__":
    main()
