"""cf-discovery at the scale of a fleet, in a real Prometheus: 300 instances behind a
stand-in for the router, past Linux's default of 128 file discoveries a user may watch,
every one scraped, each by its own job, through a canary deploy and a scale-down; and
the alerts on discovery itself, live."""

import contextlib
import subprocess
import time
from pathlib import Path

import yaml
from standins.cloudfoundry import CloudFoundry, cloudfoundry_api, fleet_router
from standins.loopback import free_loopback_port

from .baking import bake, cf_discovery
from .prometheus_server import run_prometheus

APPS = 75
INSTANCES = 4


def inotify_limit():
    with contextlib.suppress(OSError):
        return int(Path("/proc/sys/fs/inotify/max_user_instances").read_text())
    return None


def push_fleet(platform, router):
    """APPS apps of INSTANCES instances each, over five spaces, scraped without
    credentials; returns their GUIDs."""
    organization = platform.organization("fleet")
    spaces = [platform.space(f"space-{number}", organization) for number in range(5)]
    return [
        platform.push(
            f"app-{number}",
            spaces[number % len(spaces)],
            router,
            INSTANCES,
            {"prometheus.io/scrape": "true"},
            {"prometheus.io/auth": "none"},
        )
        for number in range(APPS)
    ]


def start_discovery(stack, project_python, monitoring, platform, prometheus, port, log):
    """Run cf-discovery against the API stand-in, its stderr to `log`; stopped with `stack`."""
    discovery = subprocess.Popen(
        [
            cf_discovery(project_python),
            f"--output={monitoring / 'cf-targets'}",
            "--interval=2",
            "--scheme=http",
            "--instance-header=process",
            f"--prometheus={prometheus.url}",
            f"--metrics-address=127.0.0.1:{port}",
        ],
        env=platform.discovery_environment(CF_FOUNDATION="lab"),
        stderr=log,
    )
    stack.callback(discovery.wait, 15)
    stack.callback(discovery.terminate)
    return discovery


def scraped(prometheus, count):
    """Wait until exactly `count` instances are up, each answered by the instance its job
    names; return what answered."""
    deadline = time.monotonic() + 120
    while True:
        up = prometheus.query('up{cf_app_guid!=""} == 1')
        answered = prometheus.query("stand_in_answered")
        own = [
            item
            for item in answered
            if item["metric"]["process"] == item["metric"]["cf_process_guid"]
            and item["metric"]["index"] == item["metric"]["cf_instance_index"]
        ]
        if len(up) == len(own) == len(answered) == count:
            return answered
        assert time.monotonic() < deadline, (
            f"{len(up)} up, {len(own)} of {len(answered)} answered by their own"
            f" instance, not {count} (inotify limit {inotify_limit()})"
        )
        time.sleep(1)


def alert_expressions(monitoring):
    """Each alert of alerts.yml by name: its expression."""
    return {
        rule["alert"]: rule["expr"]
        for group in yaml.safe_load((monitoring / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def test_every_instance_of_a_fleet_past_the_inotify_limit_is_scraped_by_its_own_job(
    cookies, project_python, tmp_path
):
    project = bake(cookies)
    monitoring = project / "monitoring"
    platform = CloudFoundry(page_size=100)
    port = free_loopback_port()
    with contextlib.ExitStack() as stack:
        stack.enter_context(cloudfoundry_api(platform))
        router = stack.enter_context(fleet_router(platform))
        apps = push_fleet(platform, router)
        config = monitoring / "prometheus.yml"
        text = config.read_text().replace("scrape_interval: 15s", "scrape_interval: 5s")
        config.write_text(text.replace("127.0.0.1:9188", f"127.0.0.1:{port}"))
        prometheus = stack.enter_context(
            run_prometheus(monitoring, tmp_path, METRICS_BASIC_AUTH_TOKEN="unused")
        )
        log = stack.enter_context((tmp_path / "cf-discovery.log").open("w"))
        discovery = start_discovery(
            stack, project_python, monitoring, platform, prometheus, port, log
        )

        fleet = scraped(prometheus, APPS * INSTANCES)
        written = prometheus.wait_for("cf_discovery_targets")

        # A canary deploy of five apps: a second web process of one instance beside the
        # first; each instance of both is scraped.
        canaries = [platform.add_web_process(app, 1) for app in apps[:5]]
        with_canaries = scraped(prometheus, APPS * INSTANCES + 5)
        # Ten apps scaled down to one instance: the others' series end.
        for app in apps[5:15]:
            platform.scale(app, 1)
        scaled = scraped(prometheus, APPS * INSTANCES + 5 - 10 * (INSTANCES - 1))
        # Every target written is held: the alert that compares them stays quiet. Then
        # discovery dies: the alert for that turns true (its 2 minutes aside).
        alerts = alert_expressions(monitoring)
        missing = prometheus.query(alerts["CloudFoundryTargetsMissing"])
        discovery.kill()
        discovery.wait(15)
        down = prometheus.wait_for(alerts["CloudFoundryDiscoveryDown"], timeout=30)
        files = sorted(path.name for path in (monitoring / "cf-targets").glob("cf-lab-*.json"))
        jobs = yaml.safe_load((monitoring / "cf-targets" / "cf-lab.yml").read_text())
        prometheus_log = prometheus.log.read_text()

    assert len(fleet) == 300
    assert [item["value"][1] for item in written] == ["300"]
    assert {item["metric"]["cf_foundation"] for item in fleet} == {"lab"}
    assert len({item["metric"]["job"] for item in fleet}) == APPS
    answered_by = {item["metric"]["process"] for item in with_canaries}
    assert set(canaries) <= answered_by
    assert len(scaled) == 305 - 30
    assert len(files) <= 32 < APPS * INSTANCES
    assert len(jobs["scrape_configs"]) >= len(scaled)
    assert "inotify" not in prometheus_log, prometheus_log[-2000:]
    assert missing == []
    assert [item["metric"]["job"] for item in down] == ["cf-discovery"]
