"""Past one Prometheus: two Prometheus agents, each with the kit's agent configuration
(deploy/prometheus-agent.yml) and its own cf-discovery --shard I/2, scrape a fleet of
300 instances behind the router's stand-in and write every sample by remote write to a
real store (a Prometheus with its remote-write receiver, and VictoriaMetrics). Every instance's `up`
arrives there exactly once, labelled with the shard that scraped it, and stays so
through a scale and a rolling deploy."""

import concurrent.futures
import contextlib
import os
import shutil
import subprocess
import time

import pytest
import yaml
from standins.cloudfoundry import CloudFoundry, cloudfoundry_api, cloudfoundry_router, fleet_router
from standins.loopback import free_loopback_port

from .baking import FAILING, KIT, bake_with_views, cf_discovery, run
from .prometheus_server import (
    SHORT_SLO_WINDOWS,
    alertmanager_alerts,
    running_prometheus,
    with_windows,
)
from .service import serve, wait_for
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
def receiver(tmp_path, port=None, kind="prometheus", rules=None, alertmanager=None):
    """A store for what the agents send, on `port` (a free one by default); started again
    on the same port, it keeps its data. Prometheus with its remote-write receiver, or
    VictoriaMetrics (queried at once: no 30 s latency offset). Both answer Prometheus's
    query API, at url + /api/v1/query, and take remote writes at url + /api/v1/write.
    With `rules`, a rule file, its ruler evaluates them every second: Prometheus itself,
    or vmalert, which writes what it records and ALERTS into VictoriaMetrics; and sends
    what fires to `alertmanager`, a URL, if any."""
    directory = tmp_path / kind
    directory.mkdir(exist_ok=True)
    port = port or free_loopback_port()
    if kind == "prometheus":
        config = {"global": {"evaluation_interval": "1s"}}
        if rules:
            config["rule_files"] = [str(rules)]
        if alertmanager:
            target = alertmanager.removeprefix("http://")
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [target]}]}]}
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        command = [
            require("prometheus"),
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-remote-write-receiver",
            "--enable-feature=exemplar-storage",
            # As in test_alerting.py: the default (1m) sends nothing for the first minute.
            "--rules.alert.resend-delay=1s",
        ]
    else:
        command = [
            require("victoria-metrics"),
            f"-storageDataPath={directory / 'data'}",
            f"-httpListenAddr=127.0.0.1:{port}",
            "-search.latencyOffset=0s",
        ]
    with running_prometheus(command, port, directory / "store.log") as server:
        if kind == "prometheus" or not rules:
            yield server
            return
        ruler_port = free_loopback_port()
        ruler = [
            require("vmalert"),
            f"-rule={rules}",
            f"-datasource.url={server.url}",
            f"-remoteWrite.url={server.url}",
            "-evaluationInterval=1s",
            f"-notifier.url={alertmanager}" if alertmanager else "-notifier.blackhole",
            f"-httpListenAddr=127.0.0.1:{ruler_port}",
        ]
        with running_prometheus(ruler, ruler_port, directory / "vmalert.log"):
            yield server


@contextlib.contextmanager
def agent(tmp_path, shard, write_url, platform, discovery, stack, header="process"):
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
    with agent_process(directory, shard, port) as server:
        log = stack.enter_context((directory / "cf-discovery.log").open("w"))
        process = subprocess.Popen(
            [
                discovery,
                f"--output={directory / 'cf-targets'}",
                f"--shard={shard}/{SHARDS}",
                "--interval=2",
                "--scheme=http",
                f"--instance-header={header}",
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


def agent_process(directory, shard, port):
    """The agent's Prometheus alone, as `agent` set its directory up: started again, it
    replays its write-ahead log. Stopping, it tries for 10 s, not a minute, to send what
    it has not (--storage.remote.flush-deadline)."""
    command = [
        require("prometheus"),
        "--agent",
        f"--config.file={directory / 'prometheus-agent.yml'}",
        f"--storage.agent.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        "--storage.remote.flush-deadline=10s",
        # As the configuration's header says.
        "--enable-feature=exemplar-storage,created-timestamp-zero-ingestion",
    ]
    env = {"PATH": "/usr/bin:/bin", "PROMETHEUS_SHARD": str(shard)}
    log = directory / "agent.log"
    with log.open("a") as previous:
        previous.write("--- started\n")
    return running_prometheus(
        command, port, directory / f"agent-{time.monotonic_ns()}.log", env=env
    )


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


def push_fleet(platform, router):
    """APPS apps of INSTANCES instances each, in one space, scraped without credentials."""
    organization = platform.organization("fleet")
    space = platform.space("live", organization)
    return [
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


@pytest.mark.parametrize("kind", ["prometheus", "victoria-metrics"])
def test_shards_write_every_instance_once_to_the_store_through_scale_and_deploy(
    project_python, tmp_path, kind
):
    platform = CloudFoundry(page_size=100)
    with contextlib.ExitStack() as stack:
        stack.enter_context(cloudfoundry_api(platform))
        router = stack.enter_context(fleet_router(platform))
        apps = push_fleet(platform, router)
        store = stack.enter_context(receiver(tmp_path, kind=kind))
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


def test_an_agent_or_the_store_down_for_a_minute_loses_nothing_but_a_restart_its_backlog(
    project_python, tmp_path
):
    """Agent 0 stopped for a minute and started again, the store up: what it scraped
    before it stopped arrives, and what it scrapes from its restart; only the minute it
    was down is missing (nothing scraped it). The store down for a minute: the agents
    keep scraping into their write-ahead logs and send it all once it is back, so agent
    1's instances have a sample at every scrape of the minute. Agent 0, stopped 30 s
    into that minute and started again 10 s later, sends what it scrapes from then on,
    but not what it had scraped before it stopped: Prometheus's remote write starts from
    the end of the log it replays (prometheus/prometheus#8809, open), which the README
    says. This test tells when that changes. It is long because the two outages run one
    after the other against the same fleet, agents and store, and each window's samples
    are counted from the store at the end, between the times the outages recorded."""
    platform = CloudFoundry(page_size=100)
    apps, instances = 20, 5
    with contextlib.ExitStack() as stack:
        stack.enter_context(cloudfoundry_api(platform))
        router = stack.enter_context(fleet_router(platform))
        space = platform.space("live", platform.organization("fleet"))
        for number in range(apps):
            platform.push(
                f"app-{number}",
                space,
                router,
                instances,
                {"prometheus.io/scrape": "true"},
                {"prometheus.io/auth": "none"},
            )
        store_port = free_loopback_port()
        store = stack.enter_context(receiver(tmp_path, store_port))
        write_url = f"{store.url}/api/v1/write"
        agents = [
            stack.enter_context(
                agent(tmp_path, shard, write_url, platform, cf_discovery(project_python), stack)
            )
            for shard in range(SHARDS)
        ]
        arrived(store, apps * instances)
        agent_port = int(agents[0].url.rsplit(":", 1)[1])
        # Agent 0 stopped for a minute, the store up: it sends what it scraped before it
        # stops, and from its restart on; only the minute it was down is missing.
        started = time.time()
        time.sleep(10)
        paused = time.time()
        agents[0].process.terminate()
        agents[0].process.wait(15)
        time.sleep(60)
        agent_0 = stack.enter_context(agent_process(tmp_path / "agent-0", 0, agent_port))
        resumed = time.time()
        arrived(store, apps * instances)
        time.sleep(10)
        replayed = agent_0.log.read_text()
        # The store down for a minute; agent 0 stopped 30 s in, started 10 s later.
        store.process.terminate()
        store.process.wait(15)
        down = time.time()
        time.sleep(30)
        stopped = time.time()
        agent_0.process.terminate()
        agent_0.process.wait(15)
        time.sleep(10)
        stack.enter_context(agent_process(tmp_path / "agent-0", 0, agent_port))
        restarted = time.time()
        time.sleep(max(0.0, 60 - (time.time() - down)))
        store = stack.enter_context(receiver(tmp_path, store_port))
        back = time.time()
        arrived(store, apps * instances)

        def samples(shard, start, end):
            """Each instance of the shard's count of samples from start to end."""
            window = int(end - start)
            result = store.get(
                "/api/v1/query",
                query=f'count_over_time(up{{cf_foundation="lab", prometheus_shard="{shard}"}}'
                f"[{window}s])",
                time=f"{end:.3f}",
            )["result"]
            return [float(item["value"][1]) for item in result], window

        before_pause, before_window = samples("0", started, paused - 1)
        after_pause, after_window = samples("0", resumed + 4, down - 1)
        agent_1, agent_1_window = samples("1", down + 1, back - 1)
        agent_0_before, _ = samples("0", down + 1, stopped - 1)
        agent_0_after, agent_0_window = samples("0", restarted + 4, back - 1)
        in_shard_0 = len(store.query('up{cf_foundation="lab", prometheus_shard="0"}'))

    # Scraped every 2 s: a sample per instance and scrape, give or take one at each end.
    assert "replaying wal" in replayed.lower(), replayed[-2000:]
    assert len(before_pause) == len(after_pause) > 0
    assert min(before_pause) >= before_window / 2 - 2, (before_window, sorted(before_pause))
    assert min(after_pause) >= after_window / 2 - 2, (after_window, sorted(after_pause))
    assert agent_1, "agent 1 has instances"
    assert min(agent_1) >= agent_1_window / 2 - 2, (agent_1_window, sorted(agent_1)[:5])
    assert in_shard_0 > 0
    assert len(agent_0_after) == in_shard_0
    assert min(agent_0_after) >= agent_0_window / 2 - 2, (agent_0_window, sorted(agent_0_after))
    assert agent_0_before == [], "what agent 0 scraped before its restart was sent after all"


REAL_INSTANCES = 40


@pytest.fixture(scope="module")
def real_instances(cookies_session, project_python, tmp_path_factory):
    """REAL_INSTANCES instances of a baked service that can fail on purpose, each a
    gunicorn of its own (one worker, as a small Cloud Foundry instance runs), on
    loopback, started eight at a time: the project (its SLO windows cut from 1h and 5m
    to 40s and 20s in alerts.yml) and the services."""
    project = bake_with_views(cookies_session, FAILING, metrics_auth="ip_whitelist")
    rules = project / "monitoring" / "alerts.yml"
    rules.write_text(with_windows(rules.read_text(), SHORT_SLO_WINDOWS))
    whitelist = {"METRICS_IP_WHITELIST": "127.0.0.1"}
    managers = [
        serve(project, project_python, tmp_path_factory.mktemp(f"instance-{n}"), workers=1,
              **whitelist)
        for n in range(REAL_INSTANCES)
    ]  # fmt: skip
    entered = []

    def start(manager):
        service = manager.__enter__()
        entered.append(manager)
        return service

    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            services = list(pool.map(start, managers))
        yield project, services
    finally:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda manager: manager.__exit__(None, None, None), entered))


@pytest.mark.parametrize("kind", ["prometheus", "victoria-metrics"])
def test_an_slo_alert_fires_from_the_stores_rules(real_instances, project_python, tmp_path, kind):
    """The service's alerts.yml evaluated where the data is, by the store's ruler: 40 real
    instances of a service behind the router's stand-in, among 100 stand-in instances,
    scraped by two agents, each instance by one; serving errors, the fast-burn page
    fires in the store for the service as a whole, its error ratio summed over every
    instance whichever shard scraped it. The failing requests' sampled traces reach a
    Prometheus store as exemplars (VictoriaMetrics keeps none). It is long because the
    alert needs the whole path running at once: services, router, discovery, two
    agents, the store and its ruler."""
    project, services = real_instances
    rules = project / "monitoring" / "alerts.yml"
    platform = CloudFoundry(page_size=100)
    backends = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(cloudfoundry_api(platform))
        fleet = stack.enter_context(fleet_router(platform))
        router = stack.enter_context(cloudfoundry_router(backends))
        space = platform.space("live", platform.organization("payments"))
        for number in range(20):
            platform.push(
                f"app-{number}",
                space,
                fleet,
                INSTANCES,
                {"prometheus.io/scrape": "true"},
                {"prometheus.io/auth": "none"},
            )
        guid = platform.push(
            "payments-api",
            space,
            router.address,
            REAL_INSTANCES,
            {"prometheus.io/scrape": "true"},
            {"prometheus.io/auth": "none"},
        )
        for index, service in enumerate(services):
            backends[f"{guid}:{index}"] = service.url
        # The service's own Alertmanager configuration, which the store's ruler sends to.
        alertmanager_port = free_loopback_port()
        alertmanager = f"http://127.0.0.1:{alertmanager_port}"
        stack.enter_context(
            running_prometheus(
                [
                    require("alertmanager"),
                    f"--config.file={project / 'monitoring' / 'alertmanager.yml'}",
                    f"--storage.path={tmp_path / 'alertmanager'}",
                    f"--web.listen-address=127.0.0.1:{alertmanager_port}",
                    "--cluster.listen-address=",
                ],
                alertmanager_port,
                tmp_path / "alertmanager.log",
            )
        )
        store = stack.enter_context(
            receiver(tmp_path, kind=kind, rules=rules, alertmanager=alertmanager)
        )
        for shard in range(SHARDS):
            stack.enter_context(
                agent(
                    tmp_path,
                    shard,
                    f"{store.url}/api/v1/write",
                    platform,
                    cf_discovery(project_python),
                    stack,
                    header="app",
                )
            )
        arrived(store, 20 * INSTANCES + REAL_INSTANCES)
        real = store.query('up{job="payments-api"}')
        firing = 'ALERTS{alertname="AvailabilityBudgetBurn1h", alertstate="firing"}'
        deadline = time.monotonic() + 120
        sampled = set()
        while not store.query(firing) and time.monotonic() < deadline:
            for service in services:
                trace_id = os.urandom(16).hex()
                sampled.add(trace_id)
                service.request("/fail", headers={"traceparent": f"00-{trace_id}-{'1' * 16}-01"})
            time.sleep(0.2)
        alerts = store.query(firing)
        ratio = store.query("job:slo_availability_errors:ratio_rate5m")
        received = wait_for(
            lambda: [
                alert
                for alert in alertmanager_alerts(alertmanager)
                if alert["labels"]["alertname"] == "AvailabilityBudgetBurn1h"
            ]
        )
        exemplars = []
        if kind == "prometheus":
            # Each agent sends what it scrapes within a few seconds: wait until every
            # shard's exemplars are in the store, or 30 s.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and shards_of(exemplars) != {"0", "1"}:
                time.sleep(1)
                exemplars = stored_exemplars(store)
        # Each instance's request totals, by the shards that sent them.
        totals = store.query(
            "count by (cf_instance_index, prometheus_shard)"
            ' (http_server_requests_total{job="payments-api"})'
        )

    # Every real instance once, answering, and both shards scraping some of them.
    assert len(real) == REAL_INSTANCES
    assert {item["metric"]["cf_instance_index"] for item in real} == {
        str(index) for index in range(REAL_INSTANCES)
    }
    assert all(item["value"][1] == "1" for item in real)
    assert {item["metric"]["prometheus_shard"] for item in real} == {"0", "1"}
    # Their request totals too: every instance's, each from one shard only, the one that
    # scrapes its up.
    shard_of = {
        item["metric"]["cf_instance_index"]: item["metric"]["prometheus_shard"] for item in real
    }
    assert sorted(
        (item["metric"]["cf_instance_index"], item["metric"]["prometheus_shard"]) for item in totals
    ) == sorted(shard_of.items())
    [alert] = alerts
    assert {key: alert["metric"][key] for key in ("job", "slo", "severity")} == {
        "job": "payments-api",
        "slo": "availability",
        "severity": "page",
    }
    # And it reaches the service's Alertmanager, routed to the page receiver.
    [sent] = received
    assert [receiver["name"] for receiver in sent["receivers"]] == ["page"]
    assert sent["labels"]["job"] == "payments-api"
    # Recorded over the service as a whole: no instance, no shard.
    [recorded] = [item for item in ratio if item["metric"].get("job") == "payments-api"]
    assert "instance" not in recorded["metric"]
    assert "prometheus_shard" not in recorded["metric"]
    assert float(recorded["value"][1]) > 0.9
    # The exemplars came through the agents (send_exemplars), from instances of both.
    if kind == "prometheus":
        assert traced(exemplars), "no exemplar reached the store"
        assert {trace_id for _, trace_id in traced(exemplars)} <= sampled
        assert shards_of(exemplars) == {"0", "1"}, traced(exemplars)


def stored_exemplars(store):
    return store.get(
        "/api/v1/query_exemplars",
        query='http_server_request_duration_seconds_bucket{job="payments-api"}',
        start=time.time() - 600,
        end=time.time(),
    )


def shards_of(exemplars):
    return {labels["prometheus_shard"] for labels, _ in traced(exemplars)}


def traced(exemplars):
    """(series labels, trace id) of each exemplar an exemplar query returned."""
    return [
        (series["seriesLabels"], exemplar["labels"]["trace_id"])
        for series in exemplars
        for exemplar in series["exemplars"]
    ]
