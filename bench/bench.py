"""Throughput and scrape cost of a baked service, as ratios measured in one run.

Four apps serve the baked service's own views and settings at / under the same
gunicorn settings (2 workers, loopback, no access log), and differ in what they add to
them: nothing (the baseline, "bare"), prometheus-flask-exporter's
GunicornInternalPrometheusMetrics, GOV.UK's gds-metrics, or the service this template
bakes, with all its metrics and its request ids (whose own cost is counted apart). wrk
loads each in interleaved rounds, sync and gthread workers; the medians of requests per
second and of the workers' CPU time per request are printed as ratios to the bare app.
The instructions part also counts the service sent a sampled traceparent, and the bare
app sent the same headers; the tracing part, a service baked with tracing=otlp with
tracing off and on at sampled ratios of 1 and 0.01, sending to a loopback receiver.
Then the scrape latency of each app with metrics, fresh and after 400
worker recycles, with the number of metric files each leaves behind; the cost of a
scrape at scale, 2 to 16 workers' files (scrape_scale.py); the kit's cf-discovery's
passes over 500 apps of 4 instances against the Cloud Foundry API stand-in
(discovery.py); and two sharded Prometheus agents against one Prometheus over the same
1,000 instances (sharding.py).

Wall-clock throughput swings from round to round on a shared machine, so the same apps
are also measured in instructions per request, under callgrind, which counts the same
whatever else the machine is doing.

Run from the template's root:  make bench   (needs wrk and valgrind: apt-get install wrk valgrind)
"""

import argparse
import concurrent.futures
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import discovery  # noqa: E402  (bench/discovery.py, beside this file)
from checkout import TEMPLATE, baked_service  # bench/checkout.py, beside this file
from standins.loopback import free_loopback_port  # noqa: E402

# The tests' way of starting gunicorn and finding its workers, so that both agree.
from tests.service import Gunicorn  # noqa: E402

TOKEN = "bench-token"
# With two or more CPUs, gunicorn runs on one and wrk on another, so that they do not
# take turns on the same CPU: the figures then measure the CPU cost of a request.
SERVER_CPU, LOAD_CPU = ("1", "0") if (os.cpu_count() or 1) >= 2 else (None, None)
EXPORTER = "prometheus-flask-exporter==0.23.2"
GDS_METRICS = "gds-metrics==0.2.4"
PARTS = ("throughput", "instructions", "tracing", "scrape", "scale", "discovery", "sharding")
# The baked service's views and settings, without its middleware (request ids and
# timing) or metrics endpoint; {package} is filled in.
BARE_APP = """
from flask import Flask

from flask_cf_prometheus import _bench

from {package} import views

app = Flask("{package}")
app.config.from_mapping(_bench.app_settings(), SERVICE_NAME="{package}")
app.register_blueprint(views.bp)
"""

# The baked service as it scraped before the kit's reader: prometheus_client's own
# reader and encoder, which the kit falls back to with a prometheus_client it was not
# proven on.
OLD_READER_APP = """
from flask_cf_prometheus import _bench

_bench.use_prometheus_clients_reader()

from wsgi import app  # noqa: E402
"""
# What Prometheus 3 sends with a scrape.
# A W3C traceparent whose flags say the trace is sampled.
SAMPLED_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)
SCALE_WORKERS = (2, 4, 8, 16)
SCALE_ROUTES = (5, 20, 50)

EXPORTER_APP = (
    BARE_APP
    + """
from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

metrics = GunicornInternalPrometheusMetrics(app)
"""
)

GDS_METRICS_APP = (
    BARE_APP
    + """
from gds_metrics import GDSMetrics

GDSMetrics().init_app(app)
"""
)

# Settings every app shares; the baked service keeps its own hooks from gunicorn.conf.py.
COMMON_SETTINGS = """
bind = "127.0.0.1:{port}"
workers = {workers}
worker_class = "{worker_class}"
threads = {threads}
max_requests = {max_requests}
timeout = {timeout}
accesslog = None
logconfig_dict = {{}}  # the baked service's logging config would turn its access log on
control_socket_disable = True
"""

SERVICE_CONF = (
    """
import runpy

globals().update(runpy.run_path("gunicorn.conf.py"))
"""
    + COMMON_SETTINGS
)

BARE_CONF = COMMON_SETTINGS

EXPORTER_CONF = (
    COMMON_SETTINGS
    + """

def child_exit(server, worker):
    from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

    GunicornInternalPrometheusMetrics.mark_process_dead_on_child_exit(worker.pid)
"""
)

GDS_METRICS_CONF = (
    COMMON_SETTINGS
    + """

# As gds-metrics documents it.
from gds_metrics.gunicorn import child_exit
"""
)


class App:
    def __init__(self, name, directory, conf_template, module, python, headers=None, env=None):
        self.name = name
        self.headers = headers or {}
        self.env = env or {}
        self.directory = directory
        self.conf_template = conf_template
        self.module = module
        self.python = python
        self.gunicorn = None

    def start(self, worker_class="sync", threads=1, max_requests=0, workers=2, wrapper=()):
        self.port = free_loopback_port()
        self.workers = workers
        self.metrics_dir = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        conf = self.directory / f"bench-{self.name}.conf.py"
        conf.write_text(
            self.conf_template.format(
                port=self.port,
                worker_class=worker_class,
                threads=threads,
                max_requests=max_requests,
                workers=workers,
                # Under valgrind a worker takes minutes to boot; gunicorn must not kill it.
                timeout=600 if wrapper else 30,
            )
        )
        env = {
            **os.environ,
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
            "METRICS_BASIC_AUTH": "true",
            "METRICS_BASIC_AUTH_TOKEN": TOKEN,
            **self.env,
        }
        command = [self.python.parent / "gunicorn", "--config", conf, self.module]
        self.gunicorn = Gunicorn(
            [*wrapper, *command] if wrapper else pinned(command, SERVER_CPU),
            self.directory,
            env,
            self.directory / f"bench-{self.name}.log",
        )
        # Keep-alive would pin every wrk connection to the first worker up. Under
        # valgrind a worker takes minutes to boot.
        self.gunicorn.wait_for_workers(workers, lambda: self.get("/") is not None, timeout=600)
        time.sleep(0.5)  # let the last worker finish importing the app

    def get(self, path):
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, headers=self.headers), timeout=10
            ) as r:
                return r.read()
        except (urllib.error.URLError, ConnectionError):
            return None

    def recycles(self):
        return len(self.gunicorn.booted_pids()) - self.workers

    def worker_pids(self):
        return self.gunicorn.worker_pids()

    def metric_files(self):
        return len(list(self.metrics_dir.glob("*.db")))

    def stop(self):
        self.gunicorn.stop(timeout=60)
        shutil.rmtree(self.metrics_dir, ignore_errors=True)


def pinned(command, cpu):
    return ["taskset", "--cpu-list", cpu, *command] if cpu and shutil.which("taskset") else command


def wrk(port, seconds, connections):
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", f"http://127.0.0.1:{port}/"]
    output = subprocess.run(
        pinned(command, LOAD_CPU),
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", output)
    if errors:
        raise RuntimeError(f"wrk saw errors:\n{output}")
    per_second = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    requests = int(re.search(r"(\d+) requests in ", output).group(1))
    return per_second, requests


def cpu_seconds(pids):
    """User and system CPU time the processes have used, from /proc/<pid>/stat."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15
    return total / os.sysconf("SC_CLK_TCK")


def scrape_latency(app, scrapes, gap_seconds=0.01):
    """Median seconds of `scrapes` sequential scrapes, spread out by `gap_seconds` so that
    a burst of load from elsewhere on a shared machine covers few of them."""
    timings = []
    for _ in range(scrapes):
        start = time.perf_counter()
        if app.get("/metrics") is None:
            raise RuntimeError(f"{app.name}: scrape failed")
        timings.append(time.perf_counter() - start)
        time.sleep(gap_seconds)
    return statistics.median(timings)


def throughput(apps, rounds, seconds, connections):
    print(f"\nThroughput of / (wrk -t2 -c{connections}, {rounds} interleaved rounds, {seconds} s)")
    print("and the workers' CPU time per request (/proc/<pid>/stat): time the hypervisor")
    print("gives other guests of a shared VM lowers throughput but is not counted in it")
    for worker_class, threads in (("sync", 1), ("gthread", 4)):
        rates = {app.name: [] for app in apps}
        cpu = {app.name: [] for app in apps}
        for _ in range(rounds):
            for app in apps:
                app.start(worker_class, threads)
                try:
                    workers = app.worker_pids()
                    before = cpu_seconds(workers)
                    rate, requests = wrk(app.port, seconds, connections)
                    rates[app.name].append(rate)
                    cpu[app.name].append((cpu_seconds(workers) - before) / requests)
                finally:
                    app.stop()
        print(f"  {worker_class} workers (threads={threads}):")
        for app in apps:
            # The ratio within each round, then their median: drift between rounds cancels.
            speed = ratios(rates[app.name], rates["bare"])
            cost = ratios(cpu["bare"], cpu[app.name])
            print(
                f"    {app.name:<26} {statistics.median(rates[app.name]):6.0f} req/s "
                f"{statistics.median(speed):5.3f} of bare (rounds {min(speed):.2f} to "
                f"{max(speed):.2f})   {statistics.median(cpu[app.name]) * 1e6:5.0f} µs CPU "
                f"{statistics.median(cost):5.3f} of bare's speed (rounds {min(cost):.2f} to "
                f"{max(cost):.2f})"
            )


def ratios(numerators, denominators):
    return [mine / base for mine, base in zip(numerators, denominators, strict=True)]


def worker_instructions(app, requests, output):
    """Instructions one gunicorn worker executes while serving `requests` requests of /,
    counted by callgrind: the same on every run, whatever else the machine is doing."""
    # The hash seed fixed, as in-process: string hashes decide dict layouts, which move a
    # count by some thousands of instructions from one run to the next.
    callgrind = ["env", "PYTHONHASHSEED=0", "valgrind", "--tool=callgrind", "--trace-children=yes"]
    callgrind.append(f"--callgrind-out-file={output}/callgrind.%p")
    app.start(workers=1, wrapper=callgrind)
    try:
        for _ in range(requests):
            if app.get("/") is None:
                raise RuntimeError(f"{app.name}: request failed under valgrind")
        [worker] = app.worker_pids()
    finally:
        app.stop()
    return callgrind_total(output / f"callgrind.{worker}")


def callgrind_total(path):
    """The instructions a callgrind output file counts in all."""
    return int(re.search(r"^summary: (\d+)", path.read_text(), re.MULTILINE).group(1))


def instructions(apps, fewer, more):
    print("\nInstructions per request of / in a sync gunicorn worker (callgrind; the")
    print(f"difference between serving {more} and {fewer} requests, so start-up cancels out)")
    bare, service = apps[0], apps[-1]
    # The same service, every request's traceparent sampled: each leaves an exemplar.
    traced = App(
        f"{service.name}, sampled traceparent",
        service.directory,
        service.conf_template,
        service.module,
        service.python,
        headers={**service.headers, "traceparent": SAMPLED_TRACEPARENT},
    )
    # Bare, sent what the traced service is sent: gunicorn parses each header, some
    # thousands of instructions, whoever serves the request.
    same_request = App(
        f"{bare.name}, the same headers",
        bare.directory,
        bare.conf_template,
        bare.module,
        bare.python,
        headers=traced.headers,
    )
    apps = [*apps, traced, same_request]
    per_request = {}
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as directory:
        for app in apps:
            counts = []
            for requests in (fewer, more):
                run_directory = Path(directory) / f"{app.name}-{requests}"
                run_directory.mkdir()
                counts.append(worker_instructions(app, requests, run_directory))
            per_request[app.name] = (counts[1] - counts[0]) / (more - fewer)
    for app in apps:
        count = per_request[app.name]
        ratio = per_request[bare.name] / count
        print(f"  {app.name:<40} {count:9.0f} instructions   {ratio:5.3f} of bare's speed")
    print(
        f"  {traced.name}, against bare sent the same headers:"
        f" {per_request[same_request.name] / per_request[traced.name]:5.3f}"
    )
    inprocess_instructions(service, fewer * 10, more * 10)


# A service made with tracing=otlp: off, and sampling every trace or one in a hundred.
TRACING = {
    "tracing off": {"OTEL_SDK_DISABLED": "true"},
    "tracing on, ratio 1": {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "1",
    },
    "tracing on, ratio 0.01": {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.01",
    },
}


def tracing(workdir, bare, fewer, more):
    """Instructions per request of a service that traces, its spans sent to an OTLP
    receiver on loopback (tests' stand-in) in batches of 100: the worker's export thread
    is counted with its requests. A batch is sent when full, never on a timer, so that
    the count does not depend on how long callgrind takes."""
    from standins.otlp import Receiver, receiving  # needs opentelemetry-proto

    print("\nInstructions per request of / with tracing=otlp (callgrind, as above; requests")
    print("without a traceparent, so the sampler decides; spans sent in batches of 100)")
    project, python = baked_service(workdir / "traced", tracing="otlp")
    receiver = Receiver()
    with receiving(receiver) as server, tempfile.TemporaryDirectory() as directory:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        counts = {}
        for name, settings in [("bare", None), *TRACING.items()]:
            app = bare
            if settings is not None:
                app = App(
                    name,
                    project,
                    SERVICE_CONF,
                    "wsgi:app",
                    python,
                    env={
                        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "100",
                        "OTEL_BSP_SCHEDULE_DELAY": "60000",
                        **settings,
                    },
                )
            runs = []
            for requests in (fewer, more):
                run_directory = Path(directory) / f"{name}-{requests}"
                run_directory.mkdir()
                runs.append(worker_instructions(app, requests, run_directory))
            counts[name] = (runs[1] - runs[0]) / (more - fewer)
    for name, count in counts.items():
        ratio = counts["bare"] / count
        print(f"  {name:<40} {count:9.0f} instructions   {ratio:5.3f} of bare's speed")
    print(f"  spans the receiver decoded: {len(receiver.received())}")


# inprocess.py's apps, and what each is.
INPROCESS_APPS = {
    "bare": "bare (the service's views alone)",
    "no-ids": "baked service without its request id statements",
    "service": "baked service",
}
# How many memory layouts the in-process counts are taken in.
LAYOUTS = 5


def inprocess_instructions(service, fewer, more):
    """Request ids' cost beside the metrics', from inprocess.py's apps called with no
    server. CPython finds a type's attributes through a cache indexed by address, so the
    layout of memory alone moves a count by a few thousand instructions: the apps are
    compared within each of several layouts, and the median of those differences kept."""
    print(
        f"  in-process, the app called with no server (callgrind, {more} against {fewer}"
        f" requests, hash seed fixed; medians over {LAYOUTS} memory layouts, their range"
        " in brackets):"
    )
    router_id = str(uuid.uuid4())  # a plain token, as the Cloud Foundry router's ids are
    runs = [
        (which, header, layout)
        for layout in range(LAYOUTS)
        for header in (None, router_id)
        for which in INPROCESS_APPS
        if header is None or which != "bare"
    ]
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        counts = dict(
            zip(
                runs,
                pool.map(lambda run: inprocess_count(service, *run, fewer, more), runs),
                strict=True,
            )
        )
    for which, header in dict.fromkeys(run[:2] for run in runs):  # in order, once each
        label = INPROCESS_APPS[which] + (", router's id" if header else "")
        print("    " + spread(label, [counts[which, header, n] for n in range(LAYOUTS)]))
    metrics = [counts["no-ids", None, n] - counts["bare", None, n] for n in range(LAYOUTS)]
    print("  " + spread("every metric (without request ids minus bare)", metrics))
    for header, what in ((None, "a new id"), (router_id, "the router's id")):
        ids = [counts["service", header, n] - counts["no-ids", header, n] for n in range(LAYOUTS)]
        print(
            "  "
            + spread(f"request ids, {what} (service minus without)", ids)
            + f"   {statistics.median(ids) / statistics.median(metrics):5.3f} of the metrics' cost"
        )


def spread(label, counts):
    """A label, the median of counts, and their range."""
    return (
        f"{label:<66} {statistics.median(counts):9.0f}   [{min(counts):.0f} to {max(counts):.0f}]"
    )


def inprocess_count(service, which, router_id, layout, fewer, more):
    """Instructions per request of inprocess.py's `which` app in one memory layout: the
    difference between serving `more` and `fewer` requests."""
    counts = []
    with tempfile.TemporaryDirectory(prefix="bench-inprocess-") as directory:
        for requests in (fewer, more):
            output = Path(directory) / f"callgrind.{requests}"
            command = [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={output}",
                service.python,
                Path(__file__).with_name("inprocess.py"),
                package_of(service),
                which,
                str(requests),
                str(layout),
            ]
            subprocess.run(
                command + ([router_id] if router_id else []),
                cwd=service.directory,
                env={**os.environ, "PYTHONPATH": str(service.directory), "PYTHONHASHSEED": "0"},
                capture_output=True,
                check=True,
            )
            counts.append(callgrind_total(output))
    return (counts[1] - counts[0]) / (more - fewer)


def scrape_cost(apps, recycles, scrapes):
    # As in the issue's own measurement: a worker serves 50 requests, so the 300 scrapes
    # of a measurement recycle a worker about six times. With fewer, the scrapes themselves
    # would keep recycling workers, and each scrape that waits for a new worker to boot
    # would weigh on the median as much as the files do.
    max_requests = 50
    print(f"\nScrape latency of /metrics, fresh and after {recycles} worker recycles")
    print(f"(sync workers, --max-requests {max_requests}; median of {scrapes} scrapes)")
    for app in apps:
        app.start(max_requests=max_requests)
        try:
            for _ in range(3):
                app.get("/")
            fresh = scrape_latency(app, scrapes)
            fresh_files = app.metric_files()
            sent = 0
            while app.recycles() < recycles and sent < recycles * max_requests * 2:
                for _ in range(max_requests):
                    app.get("/")
                sent += max_requests
            done = app.recycles()
            after = scrape_latency(app, scrapes)
            files = app.metric_files()
            if app.name == "baked service":
                # Its directory as the workers left it: folds, aggregates, spare sets,
                # live workers' files; the reader is measured on a copy, in-process.
                real = Path(tempfile.mkdtemp(prefix="bench-real-"))
                shutil.copytree(app.metrics_dir, real, dirs_exist_ok=True)
        finally:
            app.stop()
        print(
            f"  {app.name:<26} fresh {fresh * 1000:6.2f} ms ({fresh_files} files)   "
            f"after {done} recycles {after * 1000:6.2f} ms ({files} files)   "
            f"{after / fresh:4.2f}x fresh"
        )
        if app.name == "baked service":
            try:
                subprocess.run(
                    [app.python, Path(__file__).with_name("scrape_scale.py"), package_of(app)]
                    + ["--directory", real],
                    cwd=app.directory,
                    env={**os.environ, "PYTHONPATH": str(app.directory)},
                    check=True,
                )
            finally:
                shutil.rmtree(real, ignore_errors=True)


def scrape_scale(app, scrapes, seconds):
    """Scrape cost at 2 to 16 workers' files: in-process (scrape_scale.py, run by the
    baked project's Python), end to end through the metrics endpoint, and the latency
    of / under load while Prometheus scrapes, each with the service's reader and with
    prometheus_client's."""
    subprocess.run(
        [app.python, Path(__file__).with_name("scrape_scale.py"), package_of(app)],
        cwd=app.directory,
        env={**os.environ, "PYTHONPATH": str(app.directory)},
        check=True,
    )
    headers = {**app.headers, "Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}
    service = App("service", app.directory, SERVICE_CONF, "wsgi:app", app.python, headers)
    old = App("old", app.directory, SERVICE_CONF, "old_reader_app:app", app.python, headers)
    scrape_endpoint(service, old, scrapes)
    latency_under_load(service, old, seconds)


def package_of(app):
    return next(app.directory.glob("*/metrics.py")).parent.name


def write_worker_files(app, workers, routes):
    """Files of `workers` more workers, as if each had served `routes` routes."""
    subprocess.run(
        [
            app.python,
            Path(__file__).with_name("scrape_scale.py"),
            package_of(app),
            "--write",
            app.metrics_dir,
            str(workers),
            str(routes),
        ],
        cwd=app.directory,
        env={**os.environ, "PYTHONPATH": str(app.directory)},
        check=True,
    )


def timed_scrape(app):
    start = time.perf_counter()
    if app.get("/metrics") is None:
        raise RuntimeError(f"{app.name}: scrape failed")
    return time.perf_counter() - start


def scrape_endpoint(service, old, scrapes, firsts=5):
    print("\nScrape latency end to end: GET /metrics with Prometheus 3's headers (OpenMetrics,")
    print("gzip), one sync worker and the files of more; first scrapes: median of")
    print(f"{firsts} fresh services; warm: median of {scrapes} scrapes; in turns")
    print(
        f"  {'workers':>7} {'routes':>6}   {'prometheus_client first / warm':>30}"
        f"   {'service, first':>20}   {'service, warm':>20}"
    )
    for workers in SCALE_WORKERS:
        for routes in SCALE_ROUTES:
            figures = {service.name: ([], []), old.name: ([], [])}
            for _ in range(firsts):
                for app in (old, service):
                    app.start(workers=1)
                    try:
                        write_worker_files(app, workers, routes)
                        figures[app.name][0].append(timed_scrape(app))
                        figures[app.name][1].append(scrape_latency(app, scrapes // firsts))
                    finally:
                        app.stop()
            (old_firsts, old_warms), (firsts_, warms) = figures[old.name], figures[service.name]
            first, old_first = statistics.median(firsts_), statistics.median(old_firsts)
            warm, old_warm = statistics.median(warms), statistics.median(old_warms)
            print(
                f"  {workers:>7} {routes:>6}   {old_first * 1000:12.1f} / {old_warm * 1000:6.1f} ms"
                f"   {first * 1000:7.1f} ms ({first / old_first:5.3f}x)"
                f"   {warm * 1000:7.2f} ms ({warm / old_warm:5.3f}x)"
            )


def latency_under_load(service, old, seconds, workers=8, routes=50):
    print(f"\nLatency of / under load (wrk -t2 -c8 -d{seconds}s --latency), {workers} sync workers")
    print(f"whose files hold {routes} routes each, scraped every second as Prometheus would")
    if not shutil.which("wrk"):
        print("  not measured: wrk is not installed (apt-get install wrk)")
        return
    runs = (
        ("no scrapes", service, False),
        ("prometheus_client", old, True),
        ("service", service, True),
    )
    for name, app, scraped in runs:
        app.start(workers=workers)
        stop = threading.Event()
        try:
            write_worker_files(app, workers, routes)
            for _ in range(5 * workers):  # every worker likely answers one: the caches warm
                timed_scrape(app)
            if scraped:
                threading.Thread(target=scrape_every_second, args=(app, stop, seconds + 10)).start()
            latencies = wrk_latencies(app.port, seconds)
        finally:
            stop.set()
            app.stop()
        print(f"  {name:<18} p50 {latencies['50%']:7.2f} ms   p99 {latencies['99%']:7.2f} ms")


def scrape_every_second(app, stop, limit):
    deadline = time.monotonic() + limit
    while not stop.wait(1) and time.monotonic() < deadline:
        app.get("/metrics")


def wrk_latencies(port, seconds):
    """wrk's latency percentiles of /, in milliseconds."""
    command = ["wrk", "-t2", "-c8", f"-d{seconds}s", "--latency", f"http://127.0.0.1:{port}/"]
    output = subprocess.run(
        pinned(command, LOAD_CPU), capture_output=True, text=True, check=True, timeout=seconds + 30
    ).stdout
    if re.search(r"Non-2xx or 3xx responses|Socket errors", output):
        raise RuntimeError(f"wrk saw errors:\n{output}")
    units = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    return {
        percentile: float(number) * units[unit]
        for percentile, number, unit in re.findall(r"^\s+(\d+%)\s+([\d.]+)(us|ms|s)$", output, re.M)
    }


def build(workdir):
    project, python = baked_service(workdir, EXPORTER, GDS_METRICS)
    package = next(project.glob("*/metrics.py")).parent.name
    (project / "bare_app.py").write_text(BARE_APP.format(package=package))
    (project / "exporter_app.py").write_text(EXPORTER_APP.format(package=package))
    (project / "gds_metrics_app.py").write_text(GDS_METRICS_APP.format(package=package))
    (project / "old_reader_app.py").write_text(OLD_READER_APP)
    return [
        App("bare", project, BARE_CONF, "bare_app:app", python),
        App("prometheus-flask-exporter", project, EXPORTER_CONF, "exporter_app:app", python),
        App("gds-metrics", project, GDS_METRICS_CONF, "gds_metrics_app:app", python),
        App(
            "baked service",
            project,
            SERVICE_CONF,
            "wsgi:app",
            python,
            headers={"Authorization": f"Bearer {TOKEN}"},
        ),
    ]


def commit():
    """The template's commit, marked when files differ from it."""

    def git(*arguments):
        return subprocess.run(
            ["git", "-C", TEMPLATE, *arguments], capture_output=True, text=True, check=False
        ).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown (not a git checkout)"
    return f"{head} with uncommitted changes" if git("status", "--porcelain") else head


def describe_machine():
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    print(f"Machine: {os.cpu_count()} cores, {model}; Python {platform.python_version()}")
    print(f"Template at commit {commit()}")
    if SERVER_CPU:
        print(f"gunicorn pinned to CPU {SERVER_CPU}, wrk to CPU {LOAD_CPU}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--recycles", type=int, default=400)
    parser.add_argument("--scrapes", type=int, default=300)
    parser.add_argument(
        "--endpoint-scrapes",
        type=int,
        default=21,
        help="warm scrapes per size, end to end through the endpoint",
    )
    parser.add_argument(
        "--instructions",
        type=int,
        nargs=2,
        default=(20, 120),
        metavar=("FEWER", "MORE"),
        help="request counts for the callgrind comparison (needs valgrind)",
    )
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=PARTS,
        help="which measurements to run (all by default)",
    )
    args = parser.parse_args()
    if "throughput" in args.parts and not shutil.which("wrk"):
        sys.exit("bench needs wrk: apt-get install wrk")
    describe_machine()
    if "discovery" in args.parts:
        discovery.main([])
    if "sharding" in args.parts:
        import sharding  # bench/sharding.py, beside this file

        sharding.main([])
    if set(args.parts) <= {"discovery", "sharding"}:
        return
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        apps = build(Path(workdir))
        if "throughput" in args.parts:
            throughput(apps, args.rounds, args.seconds, args.connections)
        if "instructions" in args.parts and shutil.which("valgrind"):
            instructions(apps, *args.instructions)
        elif "instructions" in args.parts:
            print("\nInstructions per request: not measured, valgrind is not installed")
        if "tracing" in args.parts and shutil.which("valgrind"):
            tracing(Path(workdir), apps[0], *args.instructions)
        elif "tracing" in args.parts:
            print("\nInstructions with tracing: not measured, valgrind is not installed")
        if "scrape" in args.parts:
            scrape_cost(apps[1:], args.recycles, args.scrapes)
        if "scale" in args.parts:
            scrape_scale(apps[-1], args.endpoint_scrapes, args.seconds * 3)


if __name__ == "__main__":
    main()
