"""Past one Prometheus: what sharded agents cost against one Prometheus, same fleet.

Run from the repository's root (needs prometheus on PATH, 3.0 or later):
    .venv/bin/python bench/sharding.py [--apps 250] [--instances 4] [--shards 2]

A fleet of `--apps` labelled apps of `--instances` each, in the Cloud Foundry API
stand-in (flask-cf-prometheus/tests/standins/cloudfoundry.py), every instance answering,
through one loopback stand-in for the router, with the exposition of a real baked
service: the default project, under gunicorn with 2 workers, after 40 requests to its
views (the series a default service has). cf-discovery (the kit's, from this checkout)
writes the jobs: all of them for one Prometheus, and --shard I/N for each agent.

Two setups, one after the other, each given 45 s to load and scrape every target, then
measured for 60 s at the kit's 15 s scrape interval:
- one Prometheus (server mode, its TSDB) scraping the whole fleet: the baseline;
- N Prometheus agents (the kit's deploy/prometheus-agent.yml, --agent), each scraping
  its shard and sending it by remote write to a Prometheus with its remote-write
  receiver, as a store.

Printed for each: the CPU seconds per second their processes spent (the agents summed;
the store apart), per 1,000 targets; their resident memory; the samples per second
appended where the data lands (the Prometheus's TSDB; the store's); and, for the
agents, the bytes per sample sent; and the agents' figures as ratios to the baseline.
"""

import argparse
import contextlib
import http.server
import os
import re
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml
from checkout import DISCOVERY, baked_service, with_kit_source  # bench/checkout.py

REPOSITORY = Path(__file__).resolve().parents[1]

from standins.cloudfoundry import CloudFoundry, cloudfoundry_api  # noqa: E402
from standins.loopback import free_loopback_port, serving  # noqa: E402

from tests.prometheus_server import running_prometheus  # noqa: E402
from tests.service import Gunicorn  # noqa: E402

AGENT_CONFIG = REPOSITORY / "flask-cf-prometheus" / "deploy" / "prometheus-agent.yml"
LABELS = {"prometheus.io/scrape": "true"}
SETTLE_SECONDS = 45
STEADY_SECONDS = 60
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$", re.MULTILINE)


def service_exposition(workdir):
    """A default baked service's metrics, under gunicorn with 2 workers, after 40
    requests to its views."""
    project, python = baked_service(workdir)
    port = free_loopback_port()
    env = {
        **os.environ,
        "PATH": f"{python.parent}{os.pathsep}{os.environ['PATH']}",
        "PORT": str(port),
        "GUNICORN_CMD_ARGS": f"--bind 127.0.0.1:{port}",
        "WEB_CONCURRENCY": "2",
        "METRICS_BASIC_AUTH_TOKEN": "bench",
        "TMPDIR": str(workdir),
    }
    [app] = yaml.safe_load((project / "manifest.yml").read_text())["applications"]
    server = Gunicorn(["bash", "-c", app["command"]], project, env, workdir / "gunicorn.log")
    try:
        server.wait_for_workers(2, lambda: _get(port, "/_status") is not None)
        for number in range(40):
            _get(port, ["/", "/_status", "/missing"][number % 3])
        text = _get(port, "/metrics", {"Authorization": "Bearer bench"})
    finally:
        server.stop()
    return text.encode()


def _get(port, path, headers=None):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.read().decode()
    except urllib.error.HTTPError as error:
        return error.read().decode()
    except OSError:
        return None


@contextlib.contextmanager
def router(exposition):
    """Every instance's answer: the service's exposition, whichever instance is asked."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(exposition)))
            self.end_headers()
            self.wfile.write(exposition)

        def handle(self):
            # A Prometheus that stops mid-scrape closes the connection: nothing to answer.
            with contextlib.suppress(ConnectionError):
                super().handle()

        def log_message(self, *arguments):
            pass

    with serving(Handler) as server:
        yield f"127.0.0.1:{server.server_address[1]}"


def discover(platform, output, *arguments):
    output.mkdir(parents=True)
    subprocess.run(
        [*DISCOVERY, "--once", "--no-reload", "--scheme=http", f"--output={output}",
         *arguments],
        env=with_kit_source(platform.discovery_environment(CF_FOUNDATION="bench")),
        check=True,
        capture_output=True,
    )  # fmt: skip


def cpu_seconds(pid):
    """User and system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def resident_mib(pid):
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status)[1]) / 1024


def counter(port, name):
    """The sum of a counter's samples in a Prometheus's own /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(float(value) for metric, _, value in SAMPLE.findall(text) if metric == name)


def measure(processes, appended):
    """CPU seconds per second and resident MiB of `processes` (pid, port), and samples
    per second that `appended` (port, counter) counts, over STEADY_SECONDS after
    SETTLE_SECONDS."""
    time.sleep(SETTLE_SECONDS)
    cpu = [cpu_seconds(pid) for pid, _ in processes]
    count = counter(*appended)
    started_at = time.monotonic()
    time.sleep(STEADY_SECONDS)
    elapsed = time.monotonic() - started_at
    cpu = sum(cpu_seconds(pid) - before for (pid, _), before in zip(processes, cpu, strict=True))
    count = counter(*appended) - count
    memory = sum(resident_mib(pid) for pid, _ in processes)
    return {"cpu": cpu / elapsed, "memory": memory, "samples": count / elapsed}


def held(server):
    """The targets a Prometheus holds that answer, as its query API counts them."""
    [result] = server.query("count(up == 1)")
    return int(result["value"][1])


def one_prometheus(workdir, platform, prometheus):
    directory = workdir / "one"
    discover(platform, directory / "cf-targets")
    (directory / "prometheus.yml").write_text(
        yaml.safe_dump(
            {"global": {"scrape_interval": "15s"}, "scrape_config_files": ["cf-targets/*.yml"]}
        )
    )
    port = free_loopback_port()
    command = [
        prometheus, f"--config.file={directory / 'prometheus.yml'}",
        f"--storage.tsdb.path={directory / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
    ]  # fmt: skip
    with running_prometheus(command, port, directory / "prometheus.log") as server:
        figures = measure(
            [(server.process.pid, port)], (port, "prometheus_tsdb_head_samples_appended_total")
        )
        figures["held"] = held(server)
    return figures


def sent(running):
    """Bytes and samples the agents have sent by remote write so far."""
    return (
        sum(counter(port, "prometheus_remote_storage_bytes_total") for _, port in running),
        sum(counter(port, "prometheus_remote_storage_samples_total") for _, port in running),
    )


def agents(workdir, platform, prometheus, shards):
    store_port = free_loopback_port()
    store_dir = workdir / "store"
    store_dir.mkdir()
    (store_dir / "prometheus.yml").write_text("global: {}\n")
    store = [
        prometheus, f"--config.file={store_dir / 'prometheus.yml'}",
        f"--storage.tsdb.path={store_dir / 'data'}", f"--web.listen-address=127.0.0.1:{store_port}",
        "--web.enable-remote-write-receiver",
    ]  # fmt: skip
    with contextlib.ExitStack() as stack:
        store_server = stack.enter_context(
            running_prometheus(store, store_port, store_dir / "prometheus.log")
        )
        running = []
        for shard in range(shards):
            directory = workdir / f"agent-{shard}"
            discover(platform, directory / "cf-targets", f"--shard={shard}/{shards}")
            (directory / "secrets").mkdir()
            (directory / "secrets" / "remote-write-token").write_text("bench")
            config = yaml.safe_load(AGENT_CONFIG.read_text())
            config["scrape_configs"] = []
            config["remote_write"][0]["url"] = f"http://127.0.0.1:{store_port}/api/v1/write"
            config["global"]["external_labels"] = {"prometheus_shard": str(shard)}
            (directory / "prometheus-agent.yml").write_text(yaml.safe_dump(config))
            port = free_loopback_port()
            command = [
                prometheus,
                "--agent",
                f"--config.file={directory / 'prometheus-agent.yml'}",
                f"--storage.agent.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ]
            agent = stack.enter_context(running_prometheus(command, port, directory / "agent.log"))
            running.append((agent.process.pid, port))
        sent_bytes, sent_samples = sent(running)
        figures = measure(running, (store_port, "prometheus_tsdb_head_samples_appended_total"))
        after_bytes, after_samples = sent(running)
        figures["bytes per sample"] = (after_bytes - sent_bytes) / max(
            after_samples - sent_samples, 1
        )
        figures["held"] = held(store_server)
    return figures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", type=int, default=250)
    parser.add_argument("--instances", type=int, default=4)
    parser.add_argument("--shards", type=int, default=2)
    args = parser.parse_args(argv)
    prometheus = os.environ.get("PROMETHEUS", "prometheus")
    with tempfile.TemporaryDirectory(prefix="bench-sharding-") as temporary:
        workdir = Path(temporary)
        exposition = service_exposition(workdir)
        series = len([line for line in exposition.decode().splitlines() if line[:1] not in "#"])
        platform = CloudFoundry(page_size=5000)
        with cloudfoundry_api(platform), router(exposition) as address:
            space = platform.space("fleet", platform.organization("bench"))
            for number in range(args.apps):
                platform.push(f"app-{number}", space, address, args.instances, LABELS,
                              {"prometheus.io/auth": "none"})  # fmt: skip
            one = one_prometheus(workdir, platform, prometheus)
            sharded = agents(workdir, platform, prometheus, args.shards)
    targets = args.apps * args.instances
    print(f"\nPast one Prometheus: {targets:,} instances ({args.apps} apps x {args.instances}),"
          f" each answering a default service's {series} series, scraped every 15 s")  # fmt: skip
    print(f"{'':36}{'one Prometheus':>16}{f'{args.shards} agents':>12}{'ratio':>8}")
    per_1000 = 1000 / targets
    rows = [
        ("targets held (up == 1)", one["held"], sharded["held"], ".0f"),
        ("CPU s per s", one["cpu"], sharded["cpu"], ".3f"),
        ("CPU s per s per 1,000 targets", one["cpu"] * per_1000, sharded["cpu"] * per_1000, ".3f"),
        ("resident memory, MiB", one["memory"], sharded["memory"], ".0f"),
        ("samples per s appended", one["samples"], sharded["samples"], ".0f"),
    ]
    for name, base, value, form in rows:
        print(f"{name:36}{base:>16{form}}{value:>12{form}}{value / base if base else 0:>8.2f}")
    print(f"{'bytes per sample sent (agents)':36}{'':>16}{sharded['bytes per sample']:>12.2f}")
    scraped = one["samples"] * 15 / max(one["held"], 1)
    print(f"Series per instance, as scraped (with up and scrape_*): {scraped:.0f}")
    print("The store's own CPU and memory are not counted: it stands for Mimir or the like.")


if __name__ == "__main__":
    main()
