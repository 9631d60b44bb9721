"""cf-discovery, as the kit's wheel installs it, against a stand-in for the Cloud Foundry
API (standins/cloudfoundry.py): what it writes for the fleet, why it skips an app, how it
shards, and that a failing API, a refused reload or bad settings lose nothing and say so.

Against a real Prometheus, and with a service's monitoring files, the template's suite
tests it too (tests/test_discovery_*.py there)."""

import contextlib
import grp
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

import flask_cf_prometheus.discovery

from .standins.cloudfoundry import CloudFoundry, cloudfoundry_api
from .standins.loopback import StandIn, free_loopback_port, serving

SECRET = "discovery-secret"
# Every secret these tests give cf-discovery: none may reach its log.
SECRETS = (SECRET, "s3cret", "user-password", "pa55word")
FOUNDATION = "lab"
LABELS = {"prometheus.io/scrape": "true"}
PATH, JOB = "prometheus.io/path", "prometheus.io/job"
ANNOTATIONS = {"prometheus.io/path": "/internal/metrics", "prometheus.io/auth": "app-guid"}
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ cf-discovery: (.*)")
SUMMARY = re.compile(
    r"(\d+) labelled apps: (\d+) scraped, (\d+) skipped(?: \((.*)\))?;"
    r" (\d+) targets, (\d+) files changed, (\d+) requests"
)


# The console script the wheel installs beside this Python.
CF_DISCOVERY = Path(sys.executable).parent / "cf-discovery"


@pytest.fixture(scope="module", autouse=True)
def _installed():
    if not CF_DISCOVERY.exists():
        pytest.fail(f"no {CF_DISCOVERY}: install the kit (pip install .) before its suite")


@pytest.fixture
def platform():
    """Two organisations, three spaces; pages of two resources."""
    with cloudfoundry_api(CloudFoundry(client_secret=SECRET, page_size=2)) as platform:
        payments = platform.organization("payments")
        platform.live = platform.space("live", payments)
        platform.staging = platform.space("staging", payments)
        platform.other = platform.space("tools", platform.organization("platform"))
        yield platform


def environment(platform, **environ):
    """As the client was first given its secret: the tests rotate the platform's."""
    settings = {"CF_CLIENT_SECRET": SECRET, "CF_FOUNDATION": FOUNDATION, **environ}
    return platform.discovery_environment(**settings)


def cf_discovery(platform, *arguments, **environ):
    """Run cf-discovery with `arguments` against the stand-in, to its end."""
    return subprocess.run(
        [CF_DISCOVERY, *arguments],
        env=environment(platform, **environ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def discovery(platform, output, *arguments, **environ):
    """Run cf-discovery once against the stand-in; its exit code and its log's messages,
    each line checked to start with the time. Without --prometheus, it reloads none."""
    if not any(argument.startswith("--prometheus") for argument in arguments):
        arguments = ("--no-reload", *arguments)
    completed = cf_discovery(platform, "--once", "--output", output, *arguments, **environ)
    assert completed.stdout == ""
    return completed.returncode, messages(completed.stderr)


def messages(log):
    """The messages of cf-discovery's log, each line checked: it starts with the time,
    and holds no secret."""
    lines = log.splitlines()
    assert all(LOG_LINE.fullmatch(line) for line in lines), log
    assert not [secret for secret in SECRETS if secret in log], log
    return [LOG_LINE.fullmatch(line)[1] for line in lines]


def summary(lines):
    """The pass's summary line, as numbers, with the skipped reasons as text."""
    [found] = [SUMMARY.fullmatch(line) for line in lines if SUMMARY.fullmatch(line)]
    labelled, scraped, skipped, reasons, targets, changed, requests = found.groups()
    numbers = (labelled, scraped, skipped, targets, changed, requests)
    return (*map(int, numbers), reasons)


def jobs(output, foundation=FOUNDATION):
    """The foundation's jobs, by name, as Prometheus reads them."""
    listed = yaml.safe_load((output / f"cf-{foundation}.yml").read_text())["scrape_configs"]
    return {job["job_name"]: job for job in listed}


def targets(output, foundation=FOUNDATION):
    """Every target group of the foundation's target files, by the job that keeps it."""
    found = {}
    for path in output.glob(f"cf-{foundation}-[0-9][0-9].json"):
        for group in json.loads(path.read_text()):
            found[group["labels"]["__cf_job"]] = {**group, "file": path.name}
    return found


def kept(output, job_name, foundation=FOUNDATION):
    """The target that the job keeps, as Prometheus would: of the targets in its file, the
    one its relabelling keeps; None if there is none."""
    job = jobs(output, foundation)[job_name]
    [file] = job["file_sd_configs"][0]["files"]
    [rule] = job["relabel_configs"]
    assert (rule["action"], rule["source_labels"]) == ("keep", ["__cf_job"])
    groups = json.loads((output / file).read_text()) if (output / file).exists() else []
    matching = [g for g in groups if re.fullmatch(rule["regex"], g["labels"]["__cf_job"])]
    assert len(matching) <= 1
    return matching[0] if matching else None


def snapshot(output):
    return {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in output.iterdir()}


def push_six_labelled_apps_and_an_unlabelled_one(platform):
    """Payments in two spaces, a ledger scraped without credentials, three batch apps and
    an unlabelled app; returns the GUIDs of payments live, payments staging and ledger."""
    payments = platform.push(
        "payments-api", platform.live, "payments.apps.example.com", 3, LABELS, ANNOTATIONS
    )
    staging = platform.push(
        "payments-api", platform.staging, "payments-staging.apps.example.com", 1, LABELS
    )
    whitelisted = platform.push(
        "ledger",
        platform.other,
        "ledger.apps.example.com",
        2,
        LABELS,
        {"prometheus.io/auth": "none"},
    )
    platform.push("unlabelled", platform.live, "unlabelled.apps.example.com", 2)
    for number in range(3):  # more labelled apps than fit on a page, and routes than apps
        platform.push(f"batch-{number}", platform.other, f"batch-{number}.example.com", 1, LABELS)
    return payments, staging, whitelisted


def test_every_instance_of_every_labelled_app_and_nothing_else(platform, tmp_path):
    payments, staging, whitelisted = push_six_labelled_apps_and_an_unlabelled_one(platform)
    output = tmp_path / "cf-targets"

    code, log = discovery(platform, output)

    assert code == 0, log
    found = jobs(output)
    assert len(found) == 3 + 1 + 2 + 3
    first = found[f"cf-lab-{payments}-0"]
    assert first == {
        "job_name": f"cf-lab-{payments}-0",
        "scheme": "https",
        "metrics_path": "/internal/metrics",
        "http_headers": {"X-CF-APP-INSTANCE": {"values": [f"{payments}:0"]}},
        "authorization": {"type": "Bearer", "credentials": payments},
        "file_sd_configs": [{"files": [first["file_sd_configs"][0]["files"][0]]}],
        "relabel_configs": [
            {"source_labels": ["__cf_job"], "regex": f"cf-lab-{payments}-0", "action": "keep"}
        ],
        "keep_dropped_targets": 1,
    }
    assert re.fullmatch(r"cf-lab-\d\d\.json", first["file_sd_configs"][0]["files"][0])
    assert kept(output, f"cf-lab-{payments}-0") == {
        "targets": ["payments.apps.example.com"],
        "labels": {
            "__cf_job": f"cf-lab-{payments}-0",
            "job": "payments-api",
            "instance": "payments-api/0",
            "cf_foundation": "lab",
            "cf_org": "payments",
            "cf_space": "live",
            "cf_app": "payments-api",
            "cf_app_guid": payments,
            "cf_instance_index": "0",
        },
    }
    # Every job keeps one target, its own; no target is kept by two jobs.
    assert {name: kept(output, name)["labels"]["__cf_job"] for name in found} == {
        name: name for name in found
    }
    assert found[f"cf-lab-{staging}-0"]["metrics_path"] == "/metrics", "the default path"
    assert kept(output, f"cf-lab-{staging}-0")["labels"]["cf_space"] == "staging"
    assert "authorization" not in found[f"cf-lab-{whitelisted}-1"]
    # Readable by their owner and group only: they may hold the apps' GUIDs as credentials.
    assert {stat.S_IMODE(path.stat().st_mode) for path in output.glob("cf-*")} == {0o640}
    # 32 files of targets at the most, whatever the fleet's size.
    files = {path.name for path in output.glob("cf-*.json")}
    assert files == {target["file"] for target in targets(output).values()}
    assert len(files) <= 32
    # Kind to the API: pages of results, not apps times instances. With pages of two: 6
    # apps in 3 pages, their web processes in 3 and their routes in 3 (by app GUIDs).
    assert len(platform.api_requests()) == 3 + 3 + 3
    assert summary(log) == (6, 6, 0, 9, len(files) + 1, 11, None)
    assert len(log) == 1, log


def push_labelled(platform, name, url="", instances=1, annotations=None):
    """A labelled app in the live space, with only the annotations given."""
    app = platform.push(name, platform.live, url or f"{name}.example.com", instances, LABELS)
    platform.apps[app]["metadata"]["annotations"] = annotations or {}
    return app


def push_an_app_for_every_reason_not_to_scrape(platform):
    """Eight apps discovery must skip, each for its own reason, and a wildcard-routed one;
    returns the TCP-routed, the internal-routed and the wildcard apps' GUIDs."""
    stopped = push_labelled(platform, "reports")
    platform.stop(stopped)
    push_labelled(platform, "idle", instances=0)
    routeless = push_labelled(platform, "batch")
    platform.unmap_routes(routeless)
    tcp = push_labelled(platform, "broker")
    platform.unmap_routes(tcp)
    platform.map_route(tcp, "tcp.example.com:1024", protocol="tcp")
    internal = push_labelled(platform, "ledger")
    platform.unmap_routes(internal)
    platform.map_route(internal, "ledger.apps.internal", internal=True)
    wildcard = push_labelled(platform, "catch-all", "*.shop.example.com")
    path_only = push_labelled(platform, "docs", "docs.example.com")
    platform.unmap_routes(path_only)
    platform.map_route(path_only, "www.example.com", path="/docs")
    push_labelled(
        platform, "misnamed", annotations={"prometheus.io/route": "elsewhere.example.com"}
    )
    no_web = push_labelled(platform, "worker")
    for process in platform.processes.values():
        if process["relationships"]["app"]["data"]["guid"] == no_web:
            process["type"] = "worker"
    return tcp, internal, wildcard


def push_apps_scraped_by_the_route_they_prefer(platform, wildcard):
    """Scraped: through the platform's domain before a CDN's, a named route before a
    wildcard, and a route with a path where the annotation names it; returns the
    handbook app's GUID, the one with a path."""
    cdn = platform.organization("cdn")
    shop = push_labelled(platform, "shop", "a-shop.cdn.example.net")
    platform.map_route(shop, "shop.apps.example.com")
    platform.map_route(wildcard, "catch-all.apps.example.com")
    platform.domains["cdn.example.net"]["relationships"]["organization"]["data"] = {"guid": cdn}
    handbook = push_labelled(
        platform, "handbook", annotations={"prometheus.io/route": "www.example.com/handbook"}
    )
    platform.map_route(handbook, "www.example.com", path="/handbook")
    push_labelled(platform, "shop-venerable")
    push_labelled(platform, "pay-v2", annotations={"prometheus.io/job": "payments"})
    return handbook


def test_every_app_not_scraped_is_counted_and_said_with_its_reason(platform, tmp_path):
    tcp, internal, wildcard = push_an_app_for_every_reason_not_to_scrape(platform)
    handbook = push_apps_scraped_by_the_route_they_prefer(platform, wildcard)
    output = tmp_path / "cf-targets"

    code, log = discovery(platform, output)

    assert code == 0, log
    reasons = (
        "1 internal_route_only, 1 no_instances, 1 no_route, 1 no_web_process,"
        " 1 path_route_only, 1 route_not_found, 1 stopped, 1 tcp_route_only"
    )
    assert summary(log)[:4] == (13, 5, 8, 5)
    assert summary(log)[-1] == reasons
    said = {line.split(" (")[0].removeprefix("not scraping app ") for line in log[:-1]}
    assert said == {
        "reports", "idle", "batch", "broker", "ledger", "docs", "misnamed", "worker"
    }  # fmt: skip
    assert f"not scraping app broker ({tcp}): it has TCP routes only" in log
    assert f"not scraping app ledger ({internal}): its only http routes are internal" in " ".join(
        log
    )
    by_app = {target["labels"]["cf_app"]: target for target in targets(output).values()}
    assert by_app["shop"]["targets"] == ["shop.apps.example.com"]
    assert by_app["catch-all"]["targets"] == ["catch-all.apps.example.com"]
    assert by_app["handbook"]["targets"] == ["www.example.com"]
    assert jobs(output)[f"cf-lab-{handbook}-0"]["metrics_path"] == "/handbook/metrics"
    assert by_app["shop-venerable"]["labels"]["job"] == "shop", "a blue-green deploy's old app"
    assert by_app["pay-v2"]["labels"]["job"] == "payments"


def expire_retiring(output, foundation=FOUNDATION):
    """As if the two minutes a retiring job stays had passed: its time, in the state
    file, moved to the past."""
    path = output / f".cf-{foundation}.state.json"
    state = json.loads(path.read_text())
    state["retiring"] = dict.fromkeys(state["retiring"], 0)
    path.write_text(json.dumps(state))


def test_the_fleet_as_it_changes(platform, tmp_path):
    app = platform.push("payments-api", platform.live, "payments.example.com", 2, LABELS)
    gone = platform.push("old-api", platform.live, "old.example.com", 1, LABELS)
    output = tmp_path / "cf-targets"
    output.mkdir()
    (output / "my-own-jobs.yml").write_text("scrape_configs: []\n")
    # The files of the layout before this one, a job file per app and a target file per
    # instance: Prometheus would refuse their jobs beside the same ones in cf-lab.yml.
    legacy = [output / f"cf-{app}.yml", output / f"cf-{app}-0.json"]
    for path in legacy:
        path.write_text("[]\n")

    assert discovery(platform, output)[0] == 0
    assert not any(path.exists() for path in legacy)
    unchanged = snapshot(output)
    code, log = discovery(platform, output)
    assert (code, summary(log)) == (0, (2, 2, 0, 3, 0, 5, None))
    assert snapshot(output) == unchanged, "nothing rewritten when nothing changed"
    state = json.loads((output / ".cf-lab.state.json").read_text())
    assert state["reload_pending"] is False, "--no-reload: Prometheus reloads by itself"

    platform.scale(app, 4)
    platform.delete(gone)
    platform.unmap_routes(app)
    platform.map_route(app, "payments-v2.example.com")
    assert discovery(platform, output)[0] == 0
    assert (output / "my-own-jobs.yml").read_text() == "scrape_configs: []\n", "never another's"
    assert {kept(output, f"cf-lab-{app}-{index}")["targets"][0] for index in range(4)} == {
        "payments-v2.example.com"
    }
    # A gone instance's target goes at once (its series end); its job stays a while.
    assert kept(output, f"cf-lab-{gone}-0") is None
    assert set(jobs(output)) == {f"cf-lab-{app}-{index}" for index in range(4)} | {
        f"cf-lab-{gone}-0"
    }
    expire_retiring(output)
    assert discovery(platform, output)[0] == 0
    assert set(jobs(output)) == {f"cf-lab-{app}-{index}" for index in range(4)}

    # A rolling deploy: a second web process, scaled up as the first is scaled down.
    platform.scale(app, 1)
    platform.add_web_process(app, 3)
    assert discovery(platform, output)[0] == 0
    live = {name for name in jobs(output) if kept(output, name)}
    assert live == {f"cf-lab-{app}-{index}" for index in range(3)}, "never left unscraped"

    platform.scale(app, 0)
    assert discovery(platform, output)[0] == 0
    assert not [name for name in jobs(output) if kept(output, name)], "no instance, no target"
    expire_retiring(output)
    code, log = discovery(platform, output)
    assert jobs(output) == {}
    assert list(output.glob("cf-lab-*.json")) == [], "no job, no file of targets"
    assert f"not scraping app payments-api ({app}): its web process has no instance" in log


def test_both_processes_of_a_deploy_are_scraped_by_process_instance(platform, tmp_path):
    app = platform.push("payments-api", platform.live, "payments.example.com", 2, LABELS)
    [old] = list(platform.processes)
    new = platform.add_web_process(app, 1)  # a canary
    output = tmp_path / "cf-targets"

    code, log = discovery(platform, output, "--instance-header=process")

    assert code == 0, log
    assert {name: job["http_headers"] for name, job in jobs(output).items()} == {
        f"cf-lab-{old}-0": {"X-CF-PROCESS-INSTANCE": {"values": [f"{old}:0"]}},
        f"cf-lab-{old}-1": {"X-CF-PROCESS-INSTANCE": {"values": [f"{old}:1"]}},
        f"cf-lab-{new}-0": {"X-CF-PROCESS-INSTANCE": {"values": [f"{new}:0"]}},
    }
    labels = [kept(output, name)["labels"] for name in jobs(output)]
    assert {(label["cf_process_guid"], label["cf_instance_index"]) for label in labels} == {
        (old, "0"),
        (old, "1"),
        (new, "0"),
    }
    assert {label["cf_app_guid"] for label in labels} == {app}


def test_instances_the_api_says_are_not_running_are_labelled_with_their_state(platform, tmp_path):
    app = platform.push("payments-api", platform.live, "payments.example.com", 3, LABELS)
    [process] = list(platform.processes)
    platform.instance_states[(process, 1)] = "CRASHED"
    platform.instance_states[(process, 2)] = "STARTING"
    output = tmp_path / "cf-targets"

    code, log = discovery(platform, output)

    assert code == 0, log
    states = [
        kept(output, f"cf-lab-{app}-{index}")["labels"].get("cf_instance_state")
        for index in range(3)
    ]
    assert states == [None, "CRASHED", "STARTING"]
    assert summary(log)[-2] == 5, "no request more: the states come with the processes"

    # An API older than embed=process_instances refuses it: asked without, no states.
    platform.embeds_instances = False
    code, log = discovery(platform, output)

    assert code == 0, log
    assert summary(log)[-2] == 6, "one refused request more"
    assert [
        kept(output, f"cf-lab-{app}-{index}")["labels"].get("cf_instance_state")
        for index in range(3)
    ] == [None, None, None]


@pytest.mark.parametrize(
    ("fault", "arguments", "reason"),
    [
        (
            "500",
            [],
            "GET /v3/apps answered 500 Internal Server Error"
            " (10001 CF-ServerError: An error occurred)",
        ),
        ("hang", ["--timeout", "1"], "GET /v3/apps did not answer: timed out"),
        ("bad_json", [], "GET /v3/apps answered with something other than JSON"),
        (
            "bad_shape",
            [],
            "the API answered a shape cf-discovery does not know (KeyError('relationships'))",
        ),
        ("redirect", [], "GET /v3/apps answered 302 Found"),
        (
            "trickle",
            ["--timeout=2", "--pass-timeout=3"],
            "the pass took longer than --pass-timeout=3 s",
        ),
        ("endless", [], "GET /v3/apps answered more than 50 MB"),
        (
            "429",
            [],
            "GET /v3/apps answered 429 Too Many Requests, come back in 5 s"
            " (10013 CF-RateLimitExceeded: Rate Limit Exceeded)",
        ),
    ],
)
def test_a_failing_api_leaves_the_last_good_targets(platform, tmp_path, fault, arguments, reason):
    platform.push("payments-api", platform.live, "payments.example.com", 2, LABELS)
    output = tmp_path / "cf-targets"
    assert discovery(platform, output)[0] == 0
    good = snapshot(output)

    platform.fail_with(fault)
    code, log = discovery(platform, output, *arguments)

    assert code == 1
    assert log == [f"pass failed, the last good targets stay: {reason}"]
    assert snapshot(output) == good


def test_an_answer_without_what_it_was_asked_to_include_fails_the_pass(platform, tmp_path):
    """It once blanked every target's cf_space and cf_org, silently."""
    app = platform.push("payments-api", platform.live, "payments.example.com", 2, LABELS)
    output = tmp_path / "cf-targets"
    assert discovery(platform, output)[0] == 0
    good = snapshot(output)

    platform.includes = False
    code, log = discovery(platform, output)

    assert (code, log) == (
        1,
        [
            "pass failed, the last good targets stay: GET /v3/apps answered without the"
            f" space and organization of app {app}"
        ],
    )
    assert snapshot(output) == good


def test_an_app_claiming_millions_of_instances_is_skipped_alone(platform, tmp_path):
    """One claiming 5,000,000 once drove cf-discovery past 4 GiB. Failing the pass for
    it would freeze every other app's targets: that app alone is skipped."""
    platform.push("payments-api", platform.live, "payments.example.com", 2, LABELS)
    huge = platform.push("huge", platform.live, "huge.example.com", 1, LABELS)
    [process] = [
        guid
        for guid, process in platform.processes.items()
        if process["relationships"]["app"]["data"]["guid"] == huge
    ]
    # Without each instance embedded: with them, the answer is past 50 MB, refused too.
    platform.embeds_instances = False
    platform.processes[process]["instances"] = 5_000_000
    output = tmp_path / "cf-targets"

    code, log = discovery(platform, output)

    assert code == 0, log
    assert summary(log)[:4] == (2, 1, 1, 2)
    assert log[0] == (
        f"not scraping app huge ({huge}): a web process claims more instances than one can have"
    )


def apps_asked(platform, count):
    """Wait until /v3/apps has been asked for `count` times; the times."""
    deadline = time.monotonic() + 60
    while len(asked := [t for t, path in platform.request_times if path == "/v3/apps"]) < count:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return asked


def gaps(times):
    return [later - earlier for earlier, later in zip(times, times[1:], strict=False)]


def test_a_rate_limited_api_is_left_alone_as_long_as_it_asks(platform, tmp_path):
    """A 429 with Retry-After: 5, in a loop of passes every half second: no request to the
    API before the 5 seconds pass, and the files stay."""
    platform.push("payments-api", platform.live, "payments.example.com", 2, LABELS)
    output = tmp_path / "cf-targets"
    assert discovery(platform, output)[0] == 0
    good = snapshot(output)
    platform.fail_with("429")
    with looping(platform, output, "--interval=0.5"):
        asked = apps_asked(platform, 1 + 3)[1:]
        assert snapshot(output) == good

    assert min(gaps(asked)) >= 5, gaps(asked)


def test_a_rate_limit_said_by_its_reset_time_alone_is_honoured(platform, tmp_path):
    platform.push("payments-api", platform.live, "payments.example.com", 2, LABELS)
    platform.fail_with("429")
    platform.rate_limit_says_retry_after = False

    code, log = discovery(platform, tmp_path / "cf-targets")

    assert code == 1
    [line] = log
    assert re.fullmatch(
        r"pass failed, the last good targets stay: GET /v3/apps answered 429 Too Many"
        r" Requests, come back in [45] s \(10013 CF-RateLimitExceeded: Rate Limit Exceeded\)",
        line,
    ), line


def test_a_failing_api_is_asked_less_and_less_often(platform, tmp_path):
    """5xx answers: each failed pass doubles the wait before the next, from the interval."""
    platform.push("payments-api", platform.live, "payments.example.com", 2, LABELS)
    platform.fail_with("500")
    with looping(platform, tmp_path / "cf-targets", "--interval=0.5"):
        asked = apps_asked(platform, 4)

    waits = gaps(asked)
    assert [round(wait * 2) / 2 for wait in waits] == [0.5, 1.0, 2.0], waits


def test_a_uaa_the_root_document_does_not_name_is_given_by_cf_uaa_url(platform, tmp_path):
    platform.push("payments-api", platform.live, "payments.example.com", 1, LABELS)
    platform.names_uaa = False
    output = tmp_path / "cf-targets"

    unnamed = discovery(platform, output)
    given = discovery(platform, output, CF_UAA_URL=platform.url)

    assert unnamed == (
        1,
        [
            "pass failed, the last good targets stay: the API at"
            f" {platform.url} names no UAA in its root document: set CF_UAA_URL"
        ],
    )
    assert given[0] == 0, given

    # In a loop, a root document without UAA is read again at each pass, until it has one.
    with looping(platform, output, "--interval=0.2"):
        deadline = time.monotonic() + 30
        while len([path for _, path in platform.requests if path == "/"]) < 4:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        platform.names_uaa = True
        while not [path for method, path in platform.requests[3:] if method == "POST"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)


@pytest.mark.parametrize(
    "arguments",
    [
        ["--scrape-proxy-url=http://proxy.example.com:3128", "--scrape-proxy-from-environment"],
        ["--metrics-address=9188"],
        ["--metrics-address=[::1:9188"],
        ["--metrics-address=::1:9188"],
        ["--metrics-address=127.0.0.1:٩١٨٨"],
        ["--interval=0"],
        ["--interval=1e-300"],
        ["--interval=nan"],
        ["--pass-timeout=0.5"],
    ],
)
def test_bad_options_stop_it_before_it_asks_anything(platform, tmp_path, arguments):
    completed = cf_discovery(platform, "--output", tmp_path, *arguments)
    assert completed.returncode == 2
    assert "cf-discovery: error:" in completed.stderr
    assert platform.requests == []


def test_a_metrics_port_in_use_stops_it_in_one_line(platform, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        completed = cf_discovery(
            platform, "--no-reload", f"--metrics-address={address}", "--output", tmp_path
        )

    assert completed.returncode == 2
    assert messages(completed.stderr) == [
        f"cannot serve its metrics at --metrics-address={address}: [Errno 98] Address already"
        " in use"
    ]
    assert platform.requests == []


def test_help_names_every_environment_variable_it_reads():
    modules = Path(flask_cf_prometheus.discovery.__file__).parent.glob("*.py")
    source = "\n".join(module.read_text() for module in modules)
    read = set(re.findall(r"environ\.get\(\"([A-Z_]+)\"", source))
    read |= {f"{name}_FILE" for name in re.findall(r"secret\(environ, \"([A-Z_]+)\"\)", source)}
    read |= set(re.findall(r"secret\(environ, \"([A-Z_]+)\"\)", source))

    helped = subprocess.run(
        [CF_DISCOVERY, "--help"], capture_output=True, text=True, timeout=60, check=True
    )

    assert read >= {"CF_API", "CF_CLIENT_ID", "CF_CLIENT_SECRET", "CF_CLIENT_SECRET_FILE"}
    assert {name for name in read if name not in helped.stdout} == set()
    assert {"HTTPS_PROXY", "NO_PROXY"} <= set(re.findall(r"[A-Z_]{4,}", helped.stdout))


@contextlib.contextmanager
def looping(platform, output, *arguments, **environ):
    """cf-discovery running in a loop; its log, once stopped, in `log` of the yielded
    namespace."""
    log_path = output.parent / "cf-discovery.log"
    with log_path.open("w") as log:
        command = [CF_DISCOVERY, "--output", output]
        if not any(argument.startswith("--metrics-address") for argument in arguments):
            command.append(f"--metrics-address=127.0.0.1:{free_loopback_port()}")
        if not any(argument.startswith("--prometheus") for argument in arguments):
            command.append("--no-reload")
        process = subprocess.Popen(
            [*command, *arguments],
            env=environment(platform, **environ),
            stderr=log,
        )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(15)
    process.log = messages(log_path.read_text())


def test_an_expired_token_is_renewed_and_a_revoked_client_loses_nothing(platform, tmp_path):
    platform.push("payments-api", platform.live, "payments.example.com", 2, LABELS)
    platform.revoke_tokens_after = 2  # API requests: the token expires mid-pass
    output = tmp_path / "cf-targets"

    code, log = discovery(platform, output)

    assert (code, summary(log)[:3]) == (0, (1, 1, 0))
    assert summary(log)[-2] == 7, "root, a token, 3 requests, a new token, the one again"
    assert [path for method, path in platform.requests if method == "POST"] == ["/oauth/token"] * 2
    good = snapshot(output)

    platform.client_secret = "rotated"
    platform.expire_tokens()
    code, log = discovery(platform, output)

    assert code == 1
    assert log == [
        "pass failed, the last good targets stay:"
        " UAA, for client 'prometheus', answered 401 Unauthorized"
    ]
    assert SECRET not in "".join(log)
    assert snapshot(output) == good


def test_secrets_from_files_and_a_technical_users_password(platform, tmp_path):
    platform.push("payments-api", platform.live, "payments.example.com", 1, LABELS)
    platform.users["prometheus-reader"] = "user-password"
    secrets = tmp_path / "credentials"
    secrets.mkdir()
    (secrets / "client-secret").write_text(SECRET + "\n")  # as echo leaves it
    (secrets / "password").write_text("user-password\n")
    output = tmp_path / "cf-targets"

    from_file = discovery(
        platform,
        output,
        CF_CLIENT_SECRET="",
        CF_CLIENT_SECRET_FILE=str(secrets / "client-secret"),
    )
    as_user = discovery(
        platform,
        output,
        CF_CLIENT_ID="",
        CF_CLIENT_SECRET="",
        CF_USERNAME="prometheus-reader",
        CF_PASSWORD_FILE=str(secrets / "password"),
    )
    platform.users["prometheus-reader"] = "changed"
    refused = discovery(
        platform,
        output,
        CF_USERNAME="prometheus-reader",
        CF_PASSWORD_FILE=str(secrets / "password"),
    )

    assert from_file[0] == 0, from_file
    assert as_user[0] == 0, as_user
    assert refused == (
        1,
        [
            "pass failed, the last good targets stay:"
            " UAA, for user 'prometheus-reader', answered 401 Unauthorized"
        ],
    )


def test_no_secret_reaches_the_log_whatever_its_bytes(platform, tmp_path):
    """A secret that is not UTF-8 (a byte the environment or its file holds) is sent to
    UAA as it was given, and no error quotes it."""
    platform.push("payments-api", platform.live, "payments.example.com", 1, LABELS)
    platform.client_secret = "s3cret\udcff"  # the byte 0xff, as os.environ holds it
    secret_file = tmp_path / "client-secret"
    secret_file.write_bytes(b"s3cret\xff\n")
    output = tmp_path / "cf-targets"

    given = discovery(platform, output, CF_CLIENT_SECRET="s3cret\udcff")
    from_file = discovery(
        platform, output, CF_CLIENT_SECRET="", CF_CLIENT_SECRET_FILE=str(secret_file)
    )
    platform.client_secret = "rotated"
    refused = discovery(platform, output, CF_CLIENT_SECRET="s3cret\udcff")

    assert given[0] == 0, given
    assert from_file[0] == 0, from_file
    assert refused == (
        1,
        [
            "pass failed, the last good targets stay:"
            " UAA, for client 'prometheus', answered 401 Unauthorized"
        ],
    )


def push_what_app_owners_may_write(platform):
    """Apps whose names and annotations hold what any app owner may set: characters
    beyond the BMP, YAML's own syntax, line breaks, text that forges a log line, and
    what Prometheus cannot take. Returns the GUIDs of those that can be scraped."""
    forged = "\n2026-12-04T00:00:00Z cf-discovery: 99 labelled apps: 99 scraped"
    scraped = {
        "rocket": push_labelled(platform, "rocket", annotations={PATH: "/\U0001f680/metrics"}),
        "yaml": push_labelled(platform, "yaml", annotations={PATH: "/x:*y&z!'\"{}[]|>%@`"}),
        "breaks": push_labelled(platform, "breaks", annotations={JOB: "pay\u2028\x85ments"}),
        "ünïcödé\u200b": push_labelled(platform, "ünïcödé\u200b", "unicode.example.com"),
    }
    push_labelled(platform, "spaced", annotations={PATH: "/metrics now"})
    push_labelled(platform, "fragment", annotations={PATH: "/metrics#top"})
    push_labelled(platform, "relative", annotations={PATH: "metrics"})
    push_labelled(platform, "broken\udc80", "broken.example.com")
    platform.stop(push_labelled(platform, "forger" + forged, "forger.example.com"))
    return scraped


def test_what_app_owners_write_is_data_and_one_app_cannot_break_the_files(platform, tmp_path):
    scraped = push_what_app_owners_may_write(platform)
    output = tmp_path / "cf-targets"

    code, log = discovery(platform, output)

    assert code == 0, log
    text = (output / f"cf-{FOUNDATION}.yml").read_text(encoding="utf-8")
    assert not re.search(r"\\u[dD][89a-fA-F]", text), "a surrogate escape, which YAML refuses"
    paths = {
        kept(output, name)["labels"]["cf_app"]: job["metrics_path"]
        for name, job in jobs(output).items()
    }
    assert paths == {
        "rocket": "/\U0001f680/metrics",
        "yaml": "/x:*y&z!'\"{}[]|>%@`",
        "breaks": "/metrics",
        "ünïcödé\u200b": "/metrics",
    }
    labels = {target["labels"]["cf_app"]: target["labels"] for target in targets(output).values()}
    assert labels["breaks"]["job"] == "pay\u2028\x85ments"
    assert set(labels) == set(scraped)
    assert summary(log)[:3] == (9, 4, 5)
    assert summary(log)[-1] == "3 invalid_path, 1 invalid_text, 1 stopped"
    # One line a skipped app, and the summary: nothing it was given forged another.
    assert len(log) == 5 + 1, log
    assert any(line.startswith("not scraping app broken\\udc80 (") for line in log), log
    assert any("forger\\n2026-12-04T00:00:00Z cf-discovery: 99" in line for line in log), log


def test_links_by_the_apis_own_name_are_followed_through_the_name_it_was_given(platform, tmp_path):
    """CF_API is an alias; the API's root document and its pages' links name it by its
    own (external) name: the pages are asked for through the alias, with the token."""
    platform.external_url = "https://api.sys.example.com"
    for number in range(5):
        platform.push(f"app-{number}", platform.live, f"app-{number}.example.com", 1, LABELS)
    output = tmp_path / "cf-targets"

    code, log = discovery(platform, output)

    assert code == 0, log
    assert summary(log)[:2] == (5, 5)
    assert len([path for path in platform.api_requests() if path.startswith("/v3/apps")]) == 3


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"CF_API": ""}, "CF_API is not set: the API's URL, e.g. https://api.example.com"),
        (
            {"CF_API": "http://api.example.com"},
            "CF_API='http://api.example.com' must be an https:// URL"
            " (http:// only for a loopback address)",
        ),
        (
            {"CF_CLIENT_SECRET": ""},
            "set CF_CLIENT_ID and CF_CLIENT_SECRET (or CF_CLIENT_SECRET_FILE),"
            " or CF_USERNAME and CF_PASSWORD (or CF_PASSWORD_FILE)",
        ),
        (
            {"CF_CLIENT_SECRET_FILE": "/nonexistent/secret"},
            "CF_CLIENT_SECRET_FILE='/nonexistent/secret' cannot be read: No such file or directory",
        ),
        (
            {"CF_USERNAME": "someone"},
            "CF_USERNAME is set: set CF_PASSWORD or CF_PASSWORD_FILE too",
        ),
        (
            {"CF_FOUNDATION": "eu/west"},
            "CF_FOUNDATION='eu/west' must be letters, digits, '.', '_' and '-' (at most 63),"
            " and not a GUID",
        ),
        ({"CF_API": "https://[::1"}, "CF_API is not a URL: Invalid IPv6 URL"),
        ({"CF_UAA_URL": "https://[::1"}, "CF_UAA_URL is not a URL: Invalid IPv6 URL"),
        (
            {"CF_API": "https://prometheus:pa55word@api.example.com"},
            "CF_API must not hold credentials (user:password@):"
            " set CF_USERNAME and CF_PASSWORD_FILE instead",
        ),
        (
            {"CF_API": "https://prometheus:pa55word#x@api.example.com"},
            "CF_API must not hold credentials (user:password@):"
            " set CF_USERNAME and CF_PASSWORD_FILE instead",
        ),
        (
            {"CF_CA_CERT": "/nonexistent/ca.pem"},
            "CF_CA_CERT='/nonexistent/ca.pem' is not a readable PEM file:"
            " No such file or directory",
        ),
    ],
)
def test_bad_settings_stop_it_in_one_line_touching_nothing(platform, tmp_path, environ, message):
    platform.push("payments-api", platform.live, "payments.example.com", 2, LABELS)
    output = tmp_path / "cf-targets"
    assert discovery(platform, output)[0] == 0
    good = snapshot(output)

    code, log = discovery(platform, output, **environ)

    assert (code, log) == (2, [message])
    assert snapshot(output) == good
    assert len(platform.requests) == 1 + 1 + 3, "not one request more"


def test_two_foundations_share_a_directory_and_one_foundation_has_one_writer(platform, tmp_path):
    app = platform.push("payments-api", platform.live, "payments.example.com", 2, LABELS)
    output = tmp_path / "cf-targets"
    with cloudfoundry_api(CloudFoundry(client_secret=SECRET, seed=1)) as other:
        other_app = other.push(
            "ledger", other.space("live", other.organization("eu")), "ledger.eu.example.com", 1,
            LABELS,
        )  # fmt: skip
        assert discovery(other, output, CF_FOUNDATION="eu")[0] == 0
        assert discovery(platform, output)[0] == 0
        assert discovery(other, output, CF_FOUNDATION="eu")[0] == 0

        with looping(platform, output, "--interval=30"):
            deadline = time.monotonic() + 30
            while not (output / ".cf-lab.state.json").exists() or not jobs(output):
                assert time.monotonic() < deadline
                time.sleep(0.2)
            time.sleep(1)
            second = discovery(platform, output)

    assert set(jobs(output)) == {f"cf-lab-{app}-0", f"cf-lab-{app}-1"}
    assert set(jobs(output, "eu")) == {f"cf-eu-{other_app}-0"}
    assert kept(output, f"cf-eu-{other_app}-0", "eu")["labels"]["cf_foundation"] == "eu"
    assert second == (
        2,
        [
            f"another cf-discovery writes foundation 'lab''s files in {output}:"
            " give each foundation its own CF_FOUNDATION"
        ],
    )


def test_a_foundations_former_name_leaves_no_files_behind(platform, tmp_path):
    """CF_FOUNDATION changed: the files of the old name, for the same API, go (else
    Prometheus would scrape every instance twice); another API's stay."""
    app = platform.push("payments-api", platform.live, "payments.example.com", 1, LABELS)
    output = tmp_path / "cf-targets"
    with cloudfoundry_api(CloudFoundry(client_secret=SECRET, seed=1)) as other:
        other.push(
            "ledger", other.space("live", other.organization("eu")), "l.example.com", 1, LABELS
        )
        assert discovery(other, output, CF_FOUNDATION="eu")[0] == 0
    assert discovery(platform, output, CF_FOUNDATION="old")[0] == 0

    code, log = discovery(platform, output)

    assert code == 0, log
    assert log[0] == "removed the files of foundation 'old', this API's former CF_FOUNDATION"
    assert sorted(path.name for path in output.glob("cf-*.yml")) == ["cf-eu.yml", "cf-lab.yml"]
    assert not list(output.glob("*old*"))
    assert set(jobs(output)) == {f"cf-lab-{app}-0"}


def test_the_files_take_the_group_of_a_set_group_id_directory(platform, tmp_path):
    """A packaged Prometheus runs as its own user: the directory's group, Prometheus's,
    can read every file (monitoring/README.md, Scraping on Cloud Foundry)."""
    if os.geteuid() != 0:
        pytest.skip("changing a directory's group to one the user is not in needs root")
    platform.push("payments-api", platform.live, "payments.example.com", 2, LABELS)
    output = tmp_path / "cf-targets"
    output.mkdir()
    group = grp.getgrnam("nogroup").gr_gid
    os.chown(output, -1, group)
    output.chmod(0o2750)

    assert discovery(platform, output)[0] == 0

    written = list(output.glob("cf-*"))
    assert {(path.stat().st_gid, stat.S_IMODE(path.stat().st_mode)) for path in written} == {
        (group, 0o640)
    }


@contextlib.contextmanager
def reload_endpoint(status):
    """A stand-in for Prometheus's /-/reload, answering `status` (a list, changed by the
    test); the reloads it was asked for."""
    asked = []

    class Handler(StandIn):
        def do_POST(self):
            asked.append(self.path)
            body = b"Lifecycle API is not enabled.\n" if status[0] == 403 else b""
            self.answer(status[0], body)

    with serving(Handler) as server:
        yield f"http://localhost:{server.server_address[1]}", asked


def test_once_reloads_prometheus_and_says_when_it_cannot(platform, tmp_path):
    """--once asks for a reload when a job came or went, and, refused (Prometheus without
    --web.enable-lifecycle), asks again at the next pass until it is done; a proxy in the
    environment, for the API, never carries the reload."""
    app = platform.push("payments-api", platform.live, "payments.example.com", 1, LABELS)
    output = tmp_path / "cf-targets"
    status = [403]
    proxy = {"http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    proxy["NO_PROXY"] = proxy["no_proxy"] = "127.0.0.1"  # the API stand-in, not Prometheus
    with reload_endpoint(status) as (url, asked):
        refused = discovery(platform, output, f"--prometheus={url}", **proxy)
        unchanged = discovery(platform, output, f"--prometheus={url}")
        status[0] = 200
        reloaded = discovery(platform, output, f"--prometheus={url}")
        quiet = discovery(platform, output, f"--prometheus={url}")
        platform.scale(app, 2)
        scaled = discovery(platform, output, f"--prometheus={url}")

    message = (
        f"Prometheus at {url} did not reload: answered 403 Forbidden"
        " (start it with --web.enable-lifecycle)"
    )
    assert (refused[0], refused[1][-1]) == (1, message)
    assert (unchanged[0], unchanged[1][-1]) == (1, message), "still pending"
    assert reloaded[0] == 0
    assert (quiet[0], scaled[0]) == (0, 0)
    assert asked == ["/-/reload"] * 4, "refused twice, then once, none unchanged, once scaled"


@pytest.mark.parametrize("password", ["pa55word", "pa55word#x", "pa55word/x"])
def test_a_prometheus_url_with_credentials_is_refused_unquoted(platform, tmp_path, password):
    """urllib would not send them, and a log would show them."""
    url = f"http://admin:{password}@127.0.0.1:9090"

    completed = cf_discovery(platform, "--once", f"--prometheus={url}", "--output", tmp_path)

    assert completed.returncode == 2
    assert "the URL must not hold credentials (user:password@)" in completed.stderr
    assert "pa55word" not in completed.stderr
    assert platform.requests == []


def test_its_own_metrics_say_what_it_found_skipped_and_reloaded(platform, tmp_path):
    platform.push("payments-api", platform.live, "payments.example.com", 3, LABELS)
    stopped = platform.push("reports", platform.live, "reports.example.com", 1, LABELS)
    platform.stop(stopped)
    output = tmp_path / "cf-targets"
    port = free_loopback_port()
    status = [403]
    with (
        reload_endpoint(status) as (url, asked),
        looping(
            platform,
            output,
            "--interval=0.5",
            f"--metrics-address=127.0.0.1:{port}",
            f"--prometheus={url}",
        ),  # fmt: skip
    ):
        deadline = time.monotonic() + 30
        while len(asked) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            refused = answer.read().decode()
        status[0] = 200
        while len(asked) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            reloaded = answer.read().decode()

    def value(text, series):
        [line] = [line for line in text.splitlines() if line.startswith(series + " ")]
        return float(line.split()[-1])

    foundation = 'cf_foundation="lab"'
    assert value(refused, f"cf_discovery_labelled_apps{{{foundation}}}") == 2
    assert value(refused, f"cf_discovery_apps{{{foundation}}}") == 1
    assert value(refused, f'cf_discovery_apps_skipped{{{foundation},reason="stopped"}}') == 1
    assert value(refused, f"cf_discovery_targets{{{foundation}}}") == 3
    assert value(refused, f"cf_discovery_reload_pending{{{foundation}}}") == 1
    assert value(refused, f'cf_discovery_reloads_total{{{foundation},result="failure"}}') >= 2
    assert value(reloaded, f"cf_discovery_reload_pending{{{foundation}}}") == 0
    assert value(reloaded, f'cf_discovery_reloads_total{{{foundation},result="success"}}') == 1
    assert value(reloaded, f'cf_discovery_passes_total{{{foundation},result="failure"}}') == 0


def shard_instances(platform, tmp_path, count, *arguments):
    """Each shard's instances (the header values its jobs send), from N runs of
    cf-discovery --shard I/N, each with its own output."""
    shards = []
    for index in range(count):
        output = tmp_path / f"shard-{index}-of-{count}"
        output.mkdir(parents=True, exist_ok=True)
        code, lines = discovery(platform, output, f"--shard={index}/{count}", *arguments)
        assert code == 0, lines
        listed = jobs(output).values() if (output / f"cf-{FOUNDATION}.yml").exists() else []
        shards.append(
            {
                value
                for job in listed
                if kept(output, job["job_name"])
                for values in job["http_headers"].values()
                for value in values["values"]
            }
        )
    return shards


@pytest.mark.parametrize("header", ["app", "process"])
def test_shards_scrape_every_instance_exactly_once_and_keep_them_through_scale_and_deploy(
    platform, tmp_path, header
):
    apps = [
        platform.push(f"app-{n}", platform.live, f"app-{n}.apps.example.com", 3, LABELS)
        for n in range(12)
    ]
    arguments = ("--scheme=http", f"--instance-header={header}")
    whole = shard_instances(platform, tmp_path / "whole", 1, *arguments)[0]
    before = shard_instances(platform, tmp_path, 3, *arguments)
    platform.scale(apps[0], 5)
    platform.add_web_process(apps[1], 3)  # a rolling deploy's new process, beside the old
    after = shard_instances(platform, tmp_path, 3, *arguments)

    assert len(whole) == 36
    assert set().union(*before) == whole
    assert sum(len(shard) for shard in before) == len(whole), "no instance in two shards"
    # Spread by a hash of each instance: a third of 36 is 12, and a uniform hash leaves a
    # shard outside 6 to 18 in about one draw of 20. The stand-in's GUIDs are seeded, so
    # this draw, and the check, are the same every run.
    assert all(6 <= len(shard) <= 18 for shard in before), [len(s) for s in before]
    # Every instance stays in its shard; only the new ones are placed.
    for old, new in zip(before, after, strict=True):
        assert old <= new
    added = set().union(*after) - whole
    assert sum(len(shard) for shard in after) == len(whole) + len(added)
    assert len(added) == (2 if header == "app" else 5)


@pytest.mark.parametrize("value", ["2/2", "1", "-1/2", "0/0", "a/b", "1/2/3", "０/2"])
def test_a_shard_that_is_not_i_of_n_is_refused(platform, tmp_path, value):
    completed = cf_discovery(
        platform, "--once", "--no-reload", f"--shard={value}", "--output", tmp_path
    )

    assert completed.returncode == 2
    assert f"argument --shard: {value!r} is not I/N with 0 <= I < N, e.g. 0/2" in completed.stderr
    assert "Traceback" not in completed.stderr
