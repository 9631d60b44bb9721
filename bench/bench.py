"""Throughput and scrape cost of a baked service, as ratios measured in one run.

Three apps answer the same JSON at / under the same gunicorn settings (2 workers,
loopback, no access log): a bare Flask app (the baseline), the same app with
prometheus-flask-exporter's GunicornInternalPrometheusMetrics, and the service this
template bakes, with all its metrics on. wrk loads each in interleaved rounds, sync and
gthread workers; the medians are printed as ratios to the bare app. Then the scrape
latency of the exporter and of the baked service, fresh and after 400 worker recycles,
with the number of metric files each leaves behind.

Run from the template's root:  make bench   (needs wrk: apt-get install wrk)
"""

import argparse
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import venv
from pathlib import Path

from cookiecutter.main import cookiecutter

TEMPLATE = Path(__file__).resolve().parents[1]
EXPORTER = "prometheus-flask-exporter==0.23.2"
BODY = '{"instance": None, "service": "payments-api", "version": "0.1.0"}'

BARE_APP = f"""
from flask import Flask

app = Flask(__name__)


@app.get("/")
def index():
    return {BODY}
"""

EXPORTER_APP = f"""
from flask import Flask
from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

app = Flask(__name__)
metrics = GunicornInternalPrometheusMetrics(app)


@app.get("/")
def index():
    return {BODY}
"""

# Settings every app shares; the baked service keeps its own hooks from gunicorn.conf.py.
COMMON_SETTINGS = """
bind = "127.0.0.1:{port}"
workers = 2
worker_class = "{worker_class}"
threads = {threads}
max_requests = {max_requests}
accesslog = None
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


def free_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class App:
    def __init__(self, name, directory, conf_template, module, python):
        self.name = name
        self.directory = directory
        self.conf_template = conf_template
        self.module = module
        self.python = python
        self.process = None

    def start(self, worker_class="sync", threads=1, max_requests=0):
        self.port = free_port()
        self.metrics_dir = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        conf = self.directory / f"bench-{self.name}.conf.py"
        conf.write_text(
            self.conf_template.format(
                port=self.port,
                worker_class=worker_class,
                threads=threads,
                max_requests=max_requests,
            )
        )
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir)}
        self.log = self.directory / f"bench-{self.name}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [self.python.parent / "gunicorn", "--config", conf, self.module],
                cwd=self.directory,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_until_all_workers_booted()

    def _wait_until_all_workers_booted(self, timeout=30):
        """Keep-alive would pin every wrk connection to the first worker up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            booted = self.log.read_text().count("Booting worker")
            if booted >= 2 and self.get("/") is not None:
                time.sleep(0.5)  # let the second worker finish importing the app
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start:\n{self.log.read_text()}")

    def get(self, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
                return r.read()
        except (urllib.error.URLError, ConnectionError):
            return None

    def recycles(self):
        return self.log.read_text().count("Booting worker") - 2

    def metric_files(self):
        return len(list(self.metrics_dir.glob("*.db")))

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)
        shutil.rmtree(self.metrics_dir, ignore_errors=True)


def wrk(port, seconds, connections):
    output = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", output)
    if errors:
        raise RuntimeError(f"wrk saw errors:\n{output}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))


def scrape_latency(app, scrapes):
    """Median seconds of `scrapes` sequential scrapes."""
    timings = []
    for _ in range(scrapes):
        start = time.perf_counter()
        if app.get("/metrics") is None:
            raise RuntimeError(f"{app.name}: scrape failed")
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def throughput(apps, rounds, seconds, connections):
    print(f"\nThroughput of / (wrk -t2 -c{connections}, {rounds} interleaved rounds, {seconds} s)")
    for worker_class, threads in (("sync", 1), ("gthread", 4)):
        results = {app.name: [] for app in apps}
        for _ in range(rounds):
            for app in apps:
                app.start(worker_class, threads)
                try:
                    results[app.name].append(wrk(app.port, seconds, connections))
                finally:
                    app.stop()
        bare = statistics.median(results["bare-flask"])
        print(f"  {worker_class} workers (threads={threads}):")
        for app in apps:
            median = statistics.median(results[app.name])
            print(f"    {app.name:<26} {median:9.0f} req/s   {median / bare:5.3f} of bare")


def scrape_cost(apps, recycles, scrapes):
    max_requests = 5
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
            while app.recycles() < recycles and sent < recycles * max_requests * 3:
                app.get("/")
                sent += 1
            done = app.recycles()
            after = scrape_latency(app, scrapes)
            files = app.metric_files()
        finally:
            app.stop()
        print(
            f"  {app.name:<26} fresh {fresh * 1000:6.2f} ms ({fresh_files} files)   "
            f"after {done} recycles {after * 1000:6.2f} ms ({files} files)   "
            f"{after / fresh:4.2f}x fresh"
        )


def build(workdir):
    project = Path(cookiecutter(str(TEMPLATE), no_input=True, output_dir=str(workdir)))
    environment = workdir / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "-r", project / "requirements.txt", EXPORTER],
        check=True,
    )
    (project / "bare_app.py").write_text(BARE_APP)
    (project / "exporter_app.py").write_text(EXPORTER_APP)
    return [
        App("bare-flask", project, BARE_CONF, "bare_app:app", python),
        App("prometheus-flask-exporter", project, EXPORTER_CONF, "exporter_app:app", python),
        App("baked service", project, SERVICE_CONF, "wsgi:app", python),
    ]


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--recycles", type=int, default=400)
    parser.add_argument("--scrapes", type=int, default=100)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("bench needs wrk: apt-get install wrk")
    describe_machine()
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        apps = build(Path(workdir))
        throughput(apps, args.rounds, args.seconds, args.connections)
        scrape_cost(apps[1:], args.recycles, args.scrapes)


if __name__ == "__main__":
    main()
