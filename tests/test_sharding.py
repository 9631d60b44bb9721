"""Past one Prometheus: two Prometheus agents, each with the kit's agent configuration
(deploy/prometheus-agent.yml) and its own cf-discovery --shard I/2, scrape a fleet of
300 instances behind the router's stand-in and write every sample by remote write to a
real receiver (a Prometheus with its remote-write receiver). Every instance's `up`
arrives there exactly once, labelled with the shard that scraped it, and stays so
through a scale and a rolling deploy."""

import contextlib
import shutil
import subprocess
import time

import yaml

from .cloudfoundry import CloudFoundry, cloudfoundry_api
from .conftest import KIT, cf_discovery, run
from .prometheus_server import running_prometheus
from .service import free_loopback_port
from .test_discovery_fleet import fleet_router
from .tools import require

APPS = 60
INSTANCES = 5
SHARDS = 2
AGENT_CONFIG = KIT / "deploy" / "prometheus-agent.yml"
FLEET = 'up{cf_foundation="lab"}'


def test_promtool_accepts_the_agent_configuration_in_agent_mode(tmp_path):
    config = tmp_path / "prometheus-agent.yml"
    shutil.copy(AGENT_CONFIG, config)

    checked = run([require("promtool"), "check", "config", "--agent", config], cwd=tmp_path)

    assert "SUCCESS" in checked.stdout + checked.stderr
    # An agent configuration holds no rules: they run where the data is.
    assert "rule_files" not in yaml.safe_load(config.read_text())


@contextlib.contextmanager
def receiver(tmp_path):
    """A Prometheus that stores what the agents send (--web.enable-remote-write-receiver)."""
    directory = tmp_path / "receiver"
    directory.mkdir()
    (directory / "prometheus.yml").write_text("global:\n  evaluation_interval: 1s\n")
    port = free_loopback_port()
    command = [
        require("prometheus"),
        f"--config.file={directory / 'prometheus.yml'}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-remote-write-receiver",
    ]
    with running_prometheus(command, port, directory / "prometheus.log") as server:
        yield server


@contextlib.contextmanager
def agent(tmp_path, shard, write_url, platform, discovery, stack):
    """Agent `shard` of SHARDS: the kit's configuration in a directory of its own (scrapes
    every 2 s, sends at least every second, to `write_url`), its cf-discovery (the
    program `discovery`) beside it."""
    directory = tmp_path / f"agent-{shard}"
    (directory / "cf-targets").mkdir(parents=True)
    (directory / "secrets").mkdir()
    (directory / "secrets" / "remote-write-token").write_text("agent-token")
    discovery_port = free_loopback_port()
    config = yaml.safe_load(AGENT_CONFIG.read_text())
    config["global"]["scrape_interval"] = "2s"
    [discovery_job] = config["scrape_configs"]
    discovery_job["static_configs"] = [{"targets": [f"127.0.0.1:{discovery_port}"]}]
    [remote] = config["remote_write"]
    remote["url"] = write_url
    remote["queue_config"]["batch_send_deadline"] = "1s"
    (directory / "prometheus-agent.yml").write_text(yaml.safe_dump(config))
    port = free_loopback_port()
    command = [
        require("prometheus"),
        "--agent",
        f"--config.file={directory / 'prometheus-agent.yml'}",
        f"--storage.agent.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
    ]
    env = {"PATH": "/usr/bin:/bin", "PROMETHEUS_SHARD": str(shard)}
    with running_prometheus(command, port, directory / "agent.log", env=env) as server:
        log = stack.enter_context((directory / "cf-discovery.log").open("w"))
        process = subprocess.Popen(
            [
                discovery,
                f"--output={directory / 'cf-targets'}",
                f"--shard={shard}/{SHARDS}",
                "--interval=2",
                "--scheme=http",
                "--instance-header=process",
                f"--prometheus={server.url}",
                f"--metrics-address=127.0.0.1:{discovery_port}",
            ],
            env=platform.discovery_environment(CF_FOUNDATION="lab"),
            stderr=log,
        )
        try:
            yield server
        finally:
            process.terminate()
            process.wait(15)


def arrived(store, count, timeout=120, steady=6):
    """Wait until the store has held `count` instances' `up` for `steady` seconds (three
    scrapes: every agent has written what it scrapes, a late one included), and return
    them; fail with what it holds if it does not."""
    deadline = time.monotonic() + timeout
    since = None
    while True:
        up = store.query(FLEET)
        if len(up) != count:
            since = None
        elif since is None:
            since = time.monotonic()
        elif time.monotonic() - since >= steady:
            return up
        assert time.monotonic() < deadline, f"{len(up)} instances' up arrived, not {count}"
        time.sleep(0.5)


def instance(item):
    return item["metric"]["cf_process_guid"], item["metric"]["cf_instance_index"]


def test_shards_write_every_instance_once_to_the_store_through_scale_and_deploy(
    cookies, project_python, tmp_path
):
    platform = CloudFoundry(page_size=100)
    with contextlib.ExitStack() as stack:
        stack.enter_context(cloudfoundry_api(platform))
        router = stack.enter_context(fleet_router(platform))
        organization = platform.organization("fleet")
        space = platform.space("live", organization)
        apps = [
            platform.push(
                f"app-{number}",
                space,
                router,
                INSTANCES,
                {"prometheus.io/scrape": "true"},
                {"prometheus.io/auth": "none"},
            )
            for number in range(APPS)
        ]
        store = stack.enter_context(receiver(tmp_path))
        write_url = f"{store.url}/api/v1/write"
        for shard in range(SHARDS):
            stack.enter_context(
                agent(tmp_path, shard, write_url, platform, cf_discovery(project_python), stack)
            )

        fleet = arrived(store, APPS * INSTANCES)
        per_shard = store.query(f"count by (prometheus_shard) ({FLEET})")
        duplicates = store.query(f"count by (cf_process_guid, cf_instance_index) ({FLEET}) > 1")
        # One app scaled up by two; another deployed: a new web process of five beside
        # the old, as a rolling deploy has it until the old one goes.
        platform.scale(apps[0], INSTANCES + 2)
        platform.add_web_process(apps[1], INSTANCES)
        changed = arrived(store, APPS * INSTANCES + 2 + INSTANCES)
        duplicates_after = store.query(
            f"count by (cf_process_guid, cf_instance_index) ({FLEET}) > 1"
        )
        discovered = store.query("cf_discovery_targets")

    assert all(item["value"][1] == "1" for item in fleet), "every instance up"
    assert duplicates == []
    assert duplicates_after == []
    counts = {item["metric"]["prometheus_shard"]: int(item["value"][1]) for item in per_shard}
    assert sorted(counts) == ["0", "1"]
    assert sum(counts.values()) == APPS * INSTANCES
    assert min(counts.values()) > APPS * INSTANCES / 4, counts
    # Each instance stays with the shard that scraped it before.
    shard_of = {instance(item): item["metric"]["prometheus_shard"] for item in fleet}
    moved = {
        instance(item)
        for item in changed
        if instance(item) in shard_of
        and shard_of[instance(item)] != item["metric"]["prometheus_shard"]
    }
    assert moved == set()
    # Each cf-discovery's count of its targets arrives too, from its own shard.
    assert sorted(
        (item["metric"]["prometheus_shard"], int(item["value"][1])) for item in discovered
    ) == sorted(
        (shard, sum(1 for item in changed if item["metric"]["prometheus_shard"] == shard))
        for shard in ("0", "1")
    )
