"""Discovery at scale: the kit's cf-discovery against the Cloud Foundry API stand-in, and
what a real Prometheus then holds.

Run by bench.py (the "discovery" part), or alone from the repository's root:
    .venv/bin/python bench/discovery.py [--apps 500] [--instances 4] [--passes 5]

The stand-in (flask-cf-prometheus/tests/standins/cloudfoundry.py) holds `--apps`
labelled apps of `--instances` each, spread over 20 spaces, plus as many unlabelled
apps, with pages of 5000 results, the most the CF API v3 serves. Each pass is
`cf-discovery --once` in a process of its own: the first writes every file, the later
ones find nothing changed. Printed: the median wall time of a first and of a later pass,
the API and UAA requests per pass, and both as a ratio to the same passes over a fleet
of one app, measured in the same run.

Then the layouts: the files cf-discovery writes (a job per instance, the targets in 32
files that the jobs share) against the layout they replace (a job per instance, each
with a file discovery of its own), both for the same fleet, each loaded by the
Prometheus on PATH with the kit's 15 s scrape interval, every instance answering from
one loopback stand-in. Printed for each: targets written, targets Prometheus holds
(`count(up)`), its CPU to load them, its CPU per second while scraping them, the CPU
one removed instance costs it, and its resident memory; and the chosen layout's
figures as ratios to the replaced one's. The host's limit of inotify instances a user
may have (fs.inotify.max_user_instances) is printed with them: it is what caps the
replaced layout.
"""

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from checkout import DISCOVERY, with_kit_source  # bench/checkout.py, beside this file

REPOSITORY = Path(__file__).resolve().parents[1]

from standins.cloudfoundry import CloudFoundry, cloudfoundry_api  # noqa: E402
from standins.loopback import StandIn, serving  # noqa: E402

LABELS = {"prometheus.io/scrape": "true"}
LOGGED = re.compile(r"; (\d+) targets, (\d+) files changed, (\d+) requests")
FOUNDATION = "bench"
# Seconds Prometheus is given to load and scrape every target once, at 15 s a scrape.
SETTLE_SECONDS = 45
STEADY_SECONDS = 30
CHANGE_SECONDS = 20


def fleet(platform, apps, instances, route="example.com"):
    spaces = [
        platform.space(f"space-{number}", platform.organization(f"org-{number // 4}"))
        for number in range(20)
    ]
    pushed = []
    for number in range(apps):
        space = spaces[number % len(spaces)]
        url = route if ":" in route else f"app-{number}.{route}"
        pushed.append(platform.push(f"app-{number}", space, url, instances, LABELS))
        platform.push(f"other-{number}", space, f"other-{number}.example.com", 1)
    return pushed


def once(platform, output):
    """One pass of cf-discovery --once; its wall time and its summary's numbers."""
    env = with_kit_source(platform.discovery_environment(CF_FOUNDATION=FOUNDATION))
    started = time.perf_counter()
    completed = subprocess.run(
        [*DISCOVERY, "--once", "--no-reload", "--scheme=http", "--output", output],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    targets, changed, requests = map(int, LOGGED.search(completed.stderr).groups())
    return time.perf_counter() - started, targets, changed, requests


def passes(platform, count, output):
    """Wall seconds of the first pass and of each later one, files the first changed, and
    requests per pass."""
    runs = [once(platform, output) for _ in range(count)]
    [per_pass] = {run[3] for run in runs}
    later = statistics.median(run[0] for run in runs[1:])
    return runs[0][0], later, runs[0][2], per_pass


def measure(apps, instances, count):
    platform = CloudFoundry(page_size=5000)
    fleet(platform, apps, instances)
    with cloudfoundry_api(platform), tempfile.TemporaryDirectory() as output:
        return passes(platform, count, Path(output))


@contextlib.contextmanager
def target_stand_in():
    """One loopback server answering every scrape with one sample, as every instance."""

    class Handler(StandIn):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            body = b"# TYPE stand_in gauge\nstand_in 1\n"
            self.answer(200, body, [("Content-Type", "text/plain; version=0.0.4")])

    with serving(Handler) as server:
        yield f"127.0.0.1:{server.server_address[1]}"


def replaced_layout(chosen, replaced):
    """The layout cf-discovery wrote before, for the jobs of `chosen`: each job with a
    file discovery of its own, its target alone in it."""
    replaced.mkdir()
    jobs = json.loads((chosen / f"cf-{FOUNDATION}.yml").read_text())["scrape_configs"]
    targets = {}
    for path in chosen.glob(f"cf-{FOUNDATION}-*.json"):
        for group in json.loads(path.read_text()):
            targets[group["labels"].pop("__cf_job")] = group
    for job in jobs:
        name = job["job_name"]
        (replaced / f"{name}.json").write_text(json.dumps([targets[name]]))
        job["file_sd_configs"] = [{"files": [f"{name}.json"]}]
        del job["relabel_configs"], job["keep_dropped_targets"]
    (replaced / "jobs.yml").write_text(json.dumps({"scrape_configs": jobs}))
    return {name: replaced / f"{name}.json" for name in targets}


class Prometheus:
    """The Prometheus on PATH over one layout's files, its CPU and memory read from /proc."""

    def __init__(self, binary, files, workdir):
        config = workdir / "prometheus.yml"
        config.write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": "15s"},
                    "scrape_config_files": [str(files / "*.yml")],
                }
            )
        )
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.log = (workdir / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=self.log,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2)
                return
            time.sleep(0.2)
        raise RuntimeError("Prometheus was not ready in 60 s")

    def cpu(self):
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def resident_mib(self):
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def count(self, expression):
        query = urllib.parse.urlencode({"query": expression})
        url = f"http://127.0.0.1:{self.port}/api/v1/query?{query}"
        with urllib.request.urlopen(url, timeout=60) as answer:
            result = json.load(answer)["data"]["result"]
        return int(float(result[0]["value"][1])) if result else 0

    def stop(self):
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


def hold(binary, files, workdir, change):
    """Load one layout into a new Prometheus; its figures, with `change` (which removes
    one instance) made after the steady state is measured."""
    prometheus = Prometheus(binary, files, workdir)
    try:
        time.sleep(SETTLE_SECONDS)
        loaded = prometheus.cpu()
        started = time.monotonic()
        time.sleep(STEADY_SECONDS)
        steady = (prometheus.cpu() - loaded) / (time.monotonic() - started)
        held = prometheus.count("count(up)")
        before = prometheus.cpu()
        started = time.monotonic()
        change()
        time.sleep(CHANGE_SECONDS)
        changed = prometheus.cpu() - before - steady * (time.monotonic() - started)
        return {
            "held": held,
            "load": loaded,
            "steady": steady,
            "change": max(changed, 0.0),
            "memory": prometheus.resident_mib(),
        }
    finally:
        prometheus.stop()


def inotify_limit():
    with contextlib.suppress(OSError):
        return Path("/proc/sys/fs/inotify/max_user_instances").read_text().strip()
    return "unknown"


def layouts(apps, instances):
    binary = shutil.which("prometheus")
    if binary is None:
        print("\nLayouts: not measured, no prometheus on PATH (2.55 or later)")
        return
    with (
        tempfile.TemporaryDirectory(prefix="bench-layouts-") as workdir,
        target_stand_in() as address,
    ):
        workdir = Path(workdir)
        platform = CloudFoundry(page_size=5000)
        pushed = fleet(platform, apps, instances, route=address)
        chosen = workdir / "chosen"
        with cloudfoundry_api(platform):
            _, written, _, _ = once(platform, chosen)
            targets = replaced_layout(chosen, workdir / "replaced")
            (workdir / "chosen-prometheus").mkdir()
            (workdir / "replaced-prometheus").mkdir()

            def scale_down():
                platform.scale(pushed[0], instances - 1)
                once(platform, chosen)

            first = sorted(targets)[0]
            figures = {
                "replaced": hold(
                    binary,
                    workdir / "replaced",
                    workdir / "replaced-prometheus",
                    lambda: targets[first].write_text("[]"),
                ),
                "chosen": hold(binary, chosen, workdir / "chosen-prometheus", scale_down),
            }
    version = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()[0]
    print(
        f"\nWhat Prometheus holds of {apps} apps x {instances} instances ({version};"
        f" fs.inotify.max_user_instances = {inotify_limit()})"
    )
    print(f"{'':34}{'replaced':>12}{'chosen':>12}{'ratio':>8}")
    rows = [
        ("targets written", written, written, "d"),
        ("targets Prometheus holds", figures["replaced"]["held"], figures["chosen"]["held"], "d"),
        (
            "CPU s to load and scrape once",
            figures["replaced"]["load"],
            figures["chosen"]["load"],
            ".1f",
        ),
        (
            "CPU s per s, scraping",
            figures["replaced"]["steady"],
            figures["chosen"]["steady"],
            ".3f",
        ),
        (
            "CPU s, one instance removed",
            figures["replaced"]["change"],
            figures["chosen"]["change"],
            ".2f",
        ),
        ("resident memory, MiB", figures["replaced"]["memory"], figures["chosen"]["memory"], ".0f"),
    ]
    for layout in figures.values():
        layout["steady per 1000"] = layout["steady"] * 1000 / max(layout["held"], 1)
    rows.append(
        (
            "CPU s per s per 1,000 held",
            figures["replaced"]["steady per 1000"],
            figures["chosen"]["steady per 1000"],
            ".3f",
        )
    )
    for name, replaced, chosen_value, form in rows:
        ratio = f"{chosen_value / replaced:>8.2f}" if replaced else f"{'-':>8}"
        print(f"{name:34}{replaced:>12{form}}{chosen_value:>12{form}}{ratio}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", type=int, default=500)
    parser.add_argument("--instances", type=int, default=4)
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args(argv)
    base_first, base_later, base_files, base_requests = measure(1, 1, args.passes)
    first, later, files, requests = measure(args.apps, args.instances, args.passes)
    fleet_size = f"{args.apps} labelled apps x {args.instances} instances"
    print(f"\ncf-discovery over {fleet_size} (and {args.apps} unlabelled), one process a pass")
    print(f"{'':28}{'1 app':>10}{fleet_size:>34}{'ratio':>8}")
    rows = [
        ("first pass, ms (writes all)", base_first * 1000, first * 1000),
        ("later pass, ms (median)", base_later * 1000, later * 1000),
        ("files the first pass writes", base_files, files),
        ("API and UAA requests a pass", base_requests, requests),
    ]
    for name, base, value in rows:
        print(f"{name:28}{base:>10.0f}{value:>34.0f}{value / base:>8.2f}")
    layouts(args.apps, args.instances)


if __name__ == "__main__":
    main()
