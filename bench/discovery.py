"""Discovery at scale: monitoring/cf-discovery against the Cloud Foundry API stand-in.

Run by bench.py (the "discovery" part), or alone from the repository's root:
    .venv/bin/python bench/discovery.py [--apps 500] [--instances 4] [--passes 5]

The stand-in (tests/cloudfoundry.py) holds `--apps` labelled apps of `--instances` each,
spread over 20 spaces, plus as many unlabelled apps, with pages of 5000 results, the
most the CF API v3 serves. Each pass is `cf-discovery --once` in a process of its own:
the first writes every file, the later ones find nothing changed. Printed: the median
wall time of a first and of a later pass, the API and UAA requests per pass, and both
as a ratio to the same passes over a fleet of one app, measured in the same run.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from tests.cloudfoundry import CloudFoundry, cloudfoundry_api  # noqa: E402

DISCOVERY = REPOSITORY / "{{cookiecutter.project_slug}}" / "monitoring" / "cf-discovery"
LABELS = {"prometheus.io/scrape": "true"}
LOGGED = re.compile(r"(\d+) apps, (\d+) targets, (\d+) files changed, (\d+) requests")


def fleet(platform, apps, instances):
    spaces = [
        platform.space(f"space-{number}", platform.organization(f"org-{number // 4}"))
        for number in range(20)
    ]
    for number in range(apps):
        space = spaces[number % len(spaces)]
        platform.push(f"app-{number}", space, f"app-{number}.example.com", instances, LABELS)
        platform.push(f"other-{number}", space, f"other-{number}.example.com", 1)


def passes(platform, count, output):
    """Wall seconds of the first pass and of each later one, and requests per pass."""
    env = {
        **os.environ,
        "CF_API": platform.url,
        "CF_CLIENT_ID": platform.client_id,
        "CF_CLIENT_SECRET": platform.client_secret,
    }
    seconds, requests = [], set()
    for _ in range(count):
        started = time.perf_counter()
        completed = subprocess.run(
            [sys.executable, DISCOVERY, "--once", "--output", output],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        seconds.append(time.perf_counter() - started)
        requests.add(int(LOGGED.search(completed.stderr)[4]))
    [per_pass] = requests
    return seconds[0], statistics.median(seconds[1:]), per_pass


def measure(apps, instances, count):
    platform = CloudFoundry(page_size=5000)
    fleet(platform, apps, instances)
    with cloudfoundry_api(platform), tempfile.TemporaryDirectory() as output:
        return passes(platform, count, Path(output))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", type=int, default=500)
    parser.add_argument("--instances", type=int, default=4)
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args(argv)
    base_first, base_later, base_requests = measure(1, 1, args.passes)
    first, later, requests = measure(args.apps, args.instances, args.passes)
    fleet_size = f"{args.apps} labelled apps x {args.instances} instances"
    print(f"\ncf-discovery over {fleet_size} (and {args.apps} unlabelled), one process a pass")
    print(f"{'':28}{'1 app':>10}{fleet_size:>34}{'ratio':>8}")
    rows = [
        ("first pass, ms (writes all)", base_first * 1000, first * 1000),
        ("later pass, ms (median)", base_later * 1000, later * 1000),
        ("API and UAA requests a pass", base_requests, requests),
    ]
    for name, base, value in rows:
        print(f"{name:28}{base:>10.0f}{value:>34.0f}{value / base:>8.2f}")


if __name__ == "__main__":
    main()
