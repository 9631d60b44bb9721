"""The monitoring kit: its rules and dashboard use only what the running service exports,
its dashboard queries answer from a real Prometheus, its scrape configuration runs in a
real Prometheus against the service (on Cloud Foundry through a stand-in for the router),
its dashboard type-checks against Grafana's own types, and its compose file and Grafana
provisioning validate."""

import contextlib
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from standins.cloudfoundry import CloudFoundry, cloudfoundry_api, cloudfoundry_router
from standins.loopback import free_loopback_port

from .baking import TEMPLATE, bake, bake_with_views, cf_discovery, run
from .grafana_types import grafana_types, grafana_version, typecheck
from .load import SAMPLE, drive
from .prometheus_server import prometheus_scraping, run_prometheus
from .service import serve
from .tools import require

TOKEN = "monitoring-test-token"
SLUG = "payments-api"
SCHEMAS = TEMPLATE / "tests" / "schemas"
# Metric names as they appear in PromQL; recording rules (with a colon) and Prometheus's
# own `up` are not the service's.
PROMQL_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
SERVICE_PREFIXES = ("http_server_", "process_", "app_", "gunicorn_", "metrics_")
# What Grafana puts in place of the dashboard's variables when all values are selected.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$instance": ".*", "$path": ".*"}
LABEL_VALUES = re.compile(r"label_values\((?P<selector>.+), (?P<label>\w+)\)")

FAILING_ROUTE = """

@bp.get("/fail-on-purpose")
def fail_on_purpose():
    raise RuntimeError("so that the exception counter has a sample")
"""


def service_names(expressions):
    return {
        name
        for expression in expressions
        for name in PROMQL_NAME.findall(expression)
        if ":" not in name and name.startswith(SERVICE_PREFIXES)
    }


def rule_expressions(monitoring):
    groups = yaml.safe_load((monitoring / "alerts.yml").read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard(monitoring):
    return json.loads((monitoring / "grafana-dashboard.json").read_text())


def panel_expressions(board):
    return [target["expr"] for panel in board["panels"] for target in panel["targets"]]


def variable_queries(board):
    return [v["query"]["query"] for v in board["templating"]["list"] if v["type"] == "query"]


def as_grafana_sends(expression):
    for variable, value in GRAFANA_VARIABLES.items():
        expression = expression.replace(variable, value)
    assert "$" not in expression, f"a dashboard variable the test does not know: {expression}"
    return expression


def failing_project(cookies, **answers):
    return bake_with_views(cookies, FAILING_ROUTE, **answers)


def test_every_metric_in_the_rules_and_the_dashboard_is_exported(cookies, project_python, tmp_path):
    project = failing_project(cookies)
    monitoring = project / "monitoring"
    in_rules = service_names(rule_expressions(monitoring))
    board = dashboard(monitoring)
    in_dashboard = service_names(panel_expressions(board) + variable_queries(board))

    with serve(project, project_python, tmp_path, METRICS_BASIC_AUTH_TOKEN=TOKEN) as service:
        drive(service.url, ["/", "/fail-on-purpose"], 10)
        exposition = service.request(
            "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
        ).body.decode()

    exported = {match["name"] for line in exposition.splitlines() if (match := SAMPLE.match(line))}
    # A histogram read as a whole (where Prometheus stores it native) is its _bucket
    # series in the exposition.
    in_rules = {f"{name}_bucket" if f"{name}_bucket" in exported else name for name in in_rules}
    in_dashboard = {
        f"{name}_bucket" if f"{name}_bucket" in exported else name for name in in_dashboard
    }
    assert in_rules >= {
        "http_server_requests_total",
        "http_server_request_duration_seconds_bucket",
        "http_server_exceptions_total",
        "http_server_requests_in_progress",
        "process_resident_memory_bytes",
    }
    assert in_dashboard >= in_rules | {"process_cpu_seconds_total"}
    assert in_rules - exported == set()
    assert in_dashboard - exported == set()


def test_dashboard_is_importable_and_provisionable(cookies):
    board = dashboard(bake(cookies, tracing="otlp") / "monitoring")  # every panel
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}

    assert "__inputs" not in board  # provisioning would not fill them in (grafana#10786)
    assert len(board["uid"]) <= 40
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"instance", "path"} <= variables.keys()
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == datasource
    assert [panel["id"] for panel in board["panels"]] == list(range(1, len(board["panels"]) + 1))
    for panel in board["panels"]:
        assert panel["datasource"] == datasource, panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        for target in panel["targets"]:
            assert target["datasource"] == datasource, panel["title"]
            assert f'job="{SLUG}"' in target["expr"]
            assert 'instance=~"$instance"' in target["expr"]
    titles = " ".join(panel["title"].lower() for panel in board["panels"])
    for subject in ("request rate", "error ratio", "duration", "in progress", "memory"):
        assert subject in titles
    # The latency panel shows the duration histogram's exemplars.
    exemplars = [
        target["expr"]
        for panel in board["panels"]
        for target in panel["targets"]
        if target.get("exemplar")
    ]
    assert exemplars
    assert all("http_server_request_duration_seconds" in expr for expr in exemplars)


# Where @grafana/schema sets the defaults of a new dashboard, schemaVersion among them.
DEFAULT_DASHBOARD = "dist/esm/raw/dashboard/x/dashboard_types.gen.mjs"


def as_typescript(board):
    """The dashboard as TypeScript values typed with Grafana's own dashboard types."""
    types = grafana_types() / "types"
    lines = [
        f'import type {{ Dashboard, TimeSeriesFieldConfig, TimeSeriesOptions }} from "{types}";',
        f"export const dashboard: Dashboard = {json.dumps(board, indent=2)};",
    ]
    for panel in board["panels"]:
        assert panel["type"] == "timeseries", "types.ts types time series panels only"
        number = panel["id"]
        options = json.dumps(panel["options"])
        custom = json.dumps(panel["fieldConfig"]["defaults"]["custom"])
        lines.append(f"export const options{number}: TimeSeriesOptions = {options};")
        lines.append(f"export const custom{number}: TimeSeriesFieldConfig = {custom};")
    return "\n".join(lines) + "\n"


def test_dashboard_matches_grafanas_own_types(cookies, tmp_path):
    board = dashboard(bake(cookies, tracing="otlp") / "monitoring")  # every panel

    status, output = typecheck(as_typescript(board), tmp_path)
    assert status == 0, output
    # The schema version is the one that Grafana writes (and later ones migrate from).
    defaults = grafana_types() / "node_modules" / "@grafana" / "schema" / DEFAULT_DASHBOARD
    declared = re.search(r"\bschemaVersion: (\d+),", defaults.read_text())
    assert board["schemaVersion"] == int(declared[1])

    # The check catches a misspelt panel field, an option value Grafana does not know,
    # and a variable setting out of range.
    board["panels"][0]["gridPoss"] = board["panels"][0].pop("gridPos")
    board["panels"][1]["fieldConfig"]["defaults"]["custom"]["showPoints"] = "sometimes"
    board["templating"]["list"][1]["refresh"] = 7
    status, output = typecheck(as_typescript(board), tmp_path)
    assert status != 0
    for mistake in ('"gridPoss"', '"sometimes"', "Type '7'"):
        assert mistake in output, output


def test_dashboard_queries_answer_from_a_real_prometheus(cookies, project_python, tmp_path):
    project = failing_project(cookies)
    board = dashboard(project / "monitoring")
    credentials = {"authorization": {"credentials": TOKEN}}

    with (
        serve(project, project_python, tmp_path, METRICS_BASIC_AUTH_TOKEN=TOKEN) as service,
        prometheus_scraping(service.port, tmp_path, jobs={SLUG: credentials}) as prometheus,
    ):
        for expression in panel_expressions(board):
            # Rates need samples a second apart, so the load goes on between the polls.
            prometheus.wait_for(
                as_grafana_sends(expression),
                between_polls=lambda: drive(service.url, ["/", "/fail-on-purpose"], 3),
            )
        for query in variable_queries(board):
            match = LABEL_VALUES.fullmatch(as_grafana_sends(query))
            values = prometheus.label_values(match["label"], match["selector"])
            assert values, f"no values for the variable {query}"


def test_compose_file_and_grafana_provisioning_validate(cookies, template_tool):
    monitoring = bake(cookies) / "monitoring"
    compose = monitoring / "compose.yaml"
    check = template_tool("check-jsonschema")
    run([check, "--builtin-schema", "vendor.compose-spec", compose], cwd=monitoring)
    provisioning = monitoring / "grafana"
    datasources = provisioning / "datasources" / "prometheus.yml"
    providers = provisioning / "dashboards" / "dashboards.yml"
    run([check, "--schemafile", SCHEMAS / "grafana-datasources.json", datasources], cwd=monitoring)
    run([check, "--schemafile", SCHEMAS / "grafana-dashboards.json", providers], cwd=monitoring)

    # What the files name must exist, and the pieces must point at each other.
    services = yaml.safe_load(compose.read_text())["services"]
    mounts = {}
    for service in services.values():
        for volume in service["volumes"]:
            source, target, *_ = volume.split(":")
            if source.startswith("."):
                assert (monitoring / source).exists(), f"compose.yaml mounts a missing {source}"
                mounts[source] = target
    assert mounts["./grafana"] == "/etc/grafana/provisioning"
    [provider] = yaml.safe_load(providers.read_text())["providers"]
    assert Path(mounts["./grafana-dashboard.json"]).parent == Path(provider["options"]["path"])
    [datasource] = yaml.safe_load(datasources.read_text())["datasources"]
    listen = next(
        argument.split("=", 1)[1]
        for argument in services["prometheus"]["command"]
        if argument.startswith("--web.listen-address=")
    )
    assert datasource["url"] == f"http://{listen}"
    # An exemplar's trace_id (the label the kit gives it) links to the trace UI whose URL
    # Grafana's environment holds, empty unless the user sets it; $$ is a literal $.
    [destination] = datasource["jsonData"]["exemplarTraceIdDestinations"]
    assert destination["name"] == "trace_id"
    assert destination["url"] == "${GRAFANA_TRACE_URL}$${__value.raw}"
    assert services["grafana"]["environment"]["GRAFANA_TRACE_URL"] == "${GRAFANA_TRACE_URL:-}"
    assert (
        "--enable-feature=exemplar-storage,created-timestamp-zero-ingestion"
        in services["prometheus"]["command"]
    )
    assert all(service["network_mode"] == "host" for service in services.values())
    # The Grafana that runs is the one whose types the dashboard is checked against.
    assert services["grafana"]["image"] == f"grafana/grafana:{grafana_version()}"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    assert mounts["."] == "/etc/prometheus"
    # The Alertmanager that prometheus.yml sends alerts to, with alertmanager.yml.
    alerting = yaml.safe_load((monitoring / "prometheus.yml").read_text())["alerting"]
    [targets] = [config["targets"] for config in alerting["alertmanagers"][0]["static_configs"]]
    alertmanager = services["alertmanager"]["command"]
    assert targets == [
        next(a.split("=", 1)[1] for a in alertmanager if a.startswith("--web.listen-address="))
    ]
    assert mounts["./alertmanager.yml"] == next(
        a.split("=", 1)[1] for a in alertmanager if a.startswith("--config.file=")
    )
    assert "--cluster.listen-address=" in alertmanager


def test_the_monitoring_scripts_are_clean_shell(cookies):
    shellcheck = require("shellcheck")
    for auth in ("basic_auth", "ip_whitelist"):
        project = bake(cookies, metrics_auth=auth)
        scripts = [
            "monitoring/run-prometheus",
            "monitoring/alertmanager-secrets",
            "monitoring/deploy/run-alertmanager",
        ]
        run([shellcheck, *scripts], cwd=project)


def test_run_prometheus_refuses_what_it_cannot_run(cookies, tmp_path):
    project = bake(cookies)
    script = project / "monitoring" / "run-prometheus"
    environ = {"PATH": os.environ["PATH"], "PROMETHEUS_DATA": str(tmp_path / "data")}
    # A stand-in that reports the version of Debian 12's Prometheus.
    old_prometheus = tmp_path / "prometheus"
    old_prometheus.write_text("#!/bin/sh\necho 'prometheus, version 2.42.0+ds (branch: debian)'\n")
    old_prometheus.chmod(0o755)

    old = subprocess.run(
        [script],
        env={**environ, "PROMETHEUS": str(old_prometheus)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert old.returncode == 1
    assert "needs Prometheus 2.55.0 or later (http_headers); " in old.stderr
    assert "is 2.42.0" in old.stderr

    modern = {**environ, "PROMETHEUS": str(require("prometheus"))}
    tokenless = subprocess.run([script], env=modern, capture_output=True, text=True, timeout=30)
    assert tokenless.returncode == 1
    assert "set METRICS_BASIC_AUTH_TOKEN" in tokenless.stderr
    assert not (project / "monitoring" / "secrets" / "local-metrics-token").exists()


class Fleet:
    """The apps' running instances, each a real gunicorn of its own, as the platform lists
    them; `backends` is what the router stand-in forwards to."""

    def __init__(self, project, project_python, tmp_path, platform):
        self.project = project
        self.project_python = project_python
        self.tmp_path = tmp_path
        self.platform = platform
        self.backends = {}
        self.instances = {}

    def scale(self, app_guid, count, process=None):
        """Run `count` instances of the app: of all its web processes, or of `process`
        alone (a rolling deploy's)."""
        for index in range(count):
            if (app_guid, index) not in self.instances:
                self.start(app_guid, index)
        for guid, index in sorted(self.instances):
            if guid == app_guid and index >= count:
                stack, _ = self.instances.pop((guid, index))
                del self.backends[f"{guid}:{index}"]
                stack.close()
        if process is None:
            self.platform.scale(app_guid, count)
        else:
            self.platform.processes[process]["instances"] = count

    def start(self, app_guid, index):
        stack = contextlib.ExitStack()
        home = self.tmp_path / f"instance-{len(list(self.tmp_path.iterdir()))}"
        home.mkdir()
        environ = {
            "VCAP_APPLICATION": json.dumps({"application_id": app_guid}),
            "CF_INSTANCE_INDEX": str(index),
            "METRICS_IP_WHITELIST": "127.0.0.1",
        }
        service = stack.enter_context(
            serve(self.project, self.project_python, home, workers=1, **environ)
        )
        self.instances[(app_guid, index)] = (stack, service)
        self.backends[f"{app_guid}:{index}"] = service.url

    def url(self, app_guid, index):
        return self.instances[(app_guid, index)][1].url

    def stop(self):
        """Stop every instance still running."""
        for stack, _ in self.instances.values():
            stack.close()
        self.instances.clear()
        self.backends.clear()

    def only_url(self, app_guid):
        """The URL of the app's one running instance."""
        [(_, service)] = [item for key, item in self.instances.items() if key[0] == app_guid]
        return service.url


def scraped(prometheus, job, count):
    """Wait until Prometheus scrapes exactly instances 0 to `count` - 1 of `job`, all
    up, and no other: a removed instance's series end at once."""
    deadline = time.monotonic() + 60
    expected = {f"{job}/{index}": "1" for index in range(count)}
    while True:
        up = prometheus.query(f'up{{job="{job}", instance!="local"}}')
        found = {item["metric"]["instance"]: item["value"][1] for item in up}
        if found == expected:
            return up
        assert time.monotonic() < deadline, f"{found}, not {expected}: {prometheus.targets()}"
        time.sleep(0.5)


def failing_for_a_while(prometheus, fault):
    """Let discovery fail a few passes; the targets stay, scraped."""
    failures = 'cf_discovery_passes_total{result="failure"}'
    before = float(prometheus.wait_for(failures)[0]["value"][1])
    fault()
    prometheus.wait_for(f"{failures} >= {before + 2}")
    return scraped(prometheus, SLUG, 1)


def push_two_apps_and_an_unlabelled_one(fleet, router, manifest):
    """Two labelled apps in two orgs, 2 and 1 instances, and one the discovery must skip."""
    platform = fleet.platform
    live = platform.space("live", platform.organization("payments"))
    tools = platform.space("tools", platform.organization("platform"))
    app_guid = platform.push(manifest["name"], live, router.address, 2, **manifest["metadata"])
    ledger = platform.push("ledger", tools, router.address, 1, **manifest["metadata"])
    platform.push("unlabelled", live, router.address, 1)
    fleet.scale(app_guid, 2)
    fleet.scale(ledger, 1)
    return app_guid, ledger


def scrape_every_second(monitoring, discovery_port):
    """What the test changes: Prometheus scrapes every second, and finds cf-discovery's
    own metrics on a free port."""
    config = monitoring / "prometheus.yml"
    text = config.read_text().replace("scrape_interval: 15s", "scrape_interval: 1s")
    config.write_text(text.replace("127.0.0.1:9188", f"127.0.0.1:{discovery_port}"))


def start_discovery(stack, project_python, monitoring, platform, prometheus, port, log_path):
    """Run cf-discovery against the API stand-in, its stderr to `log_path`."""
    discovery_log = log_path.open("w")
    stack.callback(discovery_log.close)
    discovery = subprocess.Popen(
        [
            cf_discovery(project_python),
            f"--output={monitoring / 'cf-targets'}",
            "--interval=0.5",
            "--timeout=2",
            "--scheme=http",
            f"--prometheus={prometheus.url}",
            f"--metrics-address=127.0.0.1:{port}",
        ],
        env=platform.discovery_environment(),
        stderr=discovery_log,
    )
    stack.callback(discovery.wait, 15)
    stack.callback(discovery.terminate)


def scale_up_and_down(fleet, prometheus, app_guid):
    """Scale 2 -> 4, count requests over the four instances, then scale to 1."""
    fleet.scale(app_guid, 4)
    four = scraped(prometheus, SLUG, 4)
    # Every request each instance served, counted once, summed over the instances.
    for index in range(4):
        assert drive(fleet.url(app_guid, index), ["/"], 3, clients=1) == (3, 0)
    summed = prometheus.wait_for(f'sum(http_server_requests_total{{job="{SLUG}", path="/"}}) == 12')
    fleet.scale(app_guid, 1)
    scraped(prometheus, SLUG, 1)
    return four, summed


def rolling_deploy(fleet, prometheus, app_guid):
    """A second web process comes up beside the first, which goes."""
    platform = fleet.platform
    [old] = [
        guid
        for guid, process in platform.processes.items()
        if process["relationships"]["app"]["data"]["guid"] == app_guid
    ]
    new = platform.add_web_process(app_guid, 0)
    fleet.scale(app_guid, 2, process=new)
    scraped(prometheus, SLUG, 2)
    del platform.processes[old]
    fleet.scale(app_guid, 1, process=new)
    scraped(prometheus, SLUG, 1)


def reroute_then_delete(platform, prometheus, router, ledger):
    """The ledger's route changes (the router has two names), then the app goes."""
    platform.unmap_routes(ledger)
    platform.map_route(ledger, router.address.replace("127.0.0.1", "localhost"))
    deadline = time.monotonic() + 30
    while "localhost" not in (ledger_url := target_url(prometheus, "ledger/0") or ""):
        assert time.monotonic() < deadline, prometheus.targets()
        time.sleep(0.5)
    scraped(prometheus, "ledger", 1)
    platform.delete(ledger)
    scraped(prometheus, "ledger", 0)
    return ledger_url


def instance_zero_counts_its_own(fleet, prometheus, app_guid):
    """Instance 0 has lived throughout: its requests, each counted once."""
    completed, _ = drive(fleet.only_url(app_guid), ["/"], 7, clients=1)
    counted = prometheus.wait_for(
        f'http_server_requests_total{{job="{SLUG}", path="/"}} == {3 + completed}'
    )
    return completed, counted


def staleness_alert_cut_to_3s(monitoring):
    """The staleness alert's expression, its 150 s threshold cut to 3 s."""
    [failing] = [
        rule["expr"]
        for group in yaml.safe_load((monitoring / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
        if rule.get("alert") == "CloudFoundryDiscoveryFailing"
    ]
    assert failing.endswith(" > 150")
    return failing.removesuffix(" > 150") + " > 3"


def api_fails_then_recovers(platform, prometheus, failing):
    """The API answers 500, hangs, then refuses the client's credentials: the target
    stays, scraped, and `failing` turns true; recovery clears it."""
    failing_for_a_while(prometheus, lambda: platform.fail_with("500"))
    prometheus.wait_for(failing)
    failing_for_a_while(prometheus, lambda: platform.fail_with("hang"))
    platform.fail_with(None)
    secret = platform.client_secret
    platform.client_secret = "rotated"
    still = failing_for_a_while(prometheus, platform.expire_tokens)
    platform.client_secret = secret
    deadline = time.monotonic() + 30
    while prometheus.query(failing):
        assert time.monotonic() < deadline, "the expression stays true after recovery"
        time.sleep(0.5)
    return still, secret


def rules_evaluated(prometheus):
    """Each rule's health, once Prometheus has evaluated them all: it offsets the first
    evaluation within its 15 s interval."""
    deadline = time.monotonic() + 60
    while "unknown" in (rules := prometheus.rule_health()).values():
        assert time.monotonic() < deadline, f"rules not all evaluated: {rules}"
        time.sleep(1)
    return rules


def assert_failures_logged(log, secret):
    """Each failed pass said why in the log, and the secret never appears."""
    failures = [line for line in log.splitlines() if "pass failed, the last good targets" in line]
    for reason in ("answered 500", "did not answer: timed out", "UAA, for client 'prometheus'"):
        assert any(reason in line for line in failures), log
    assert secret not in log


@pytest.mark.parametrize("auth", ["basic_auth", "ip_whitelist"])
def test_discovery_keeps_every_cloudfoundry_instance_scraped_as_the_fleet_changes(
    cookies, project_python, tmp_path, auth
):
    """The apps label themselves (manifest.yml), cf-discovery finds them through the API
    stand-in, and a real Prometheus scrapes each instance, a real gunicorn, through the
    router stand-in: two apps in two orgs over pages of one result, an unlabelled one
    never; as an app scales 2 -> 4 -> 1, its route changes and it is deleted; and while
    the API answers 500, hangs, or refuses the client's credentials."""
    project = bake(cookies, metrics_auth=auth)
    monitoring = project / "monitoring"
    [manifest] = yaml.safe_load((project / "manifest.yml").read_text())["applications"]
    platform = CloudFoundry(page_size=1)
    fleet = Fleet(project, project_python, tmp_path, platform)
    port = free_loopback_port()
    log_path = tmp_path / "cf-discovery.log"

    with contextlib.ExitStack() as stack:
        stack.callback(fleet.stop)
        stack.enter_context(cloudfoundry_api(platform))
        router = stack.enter_context(cloudfoundry_router(fleet.backends))
        app_guid, ledger = push_two_apps_and_an_unlabelled_one(fleet, router, manifest)
        scrape_every_second(monitoring, port)
        prometheus = stack.enter_context(
            run_prometheus(monitoring, tmp_path, METRICS_BASIC_AUTH_TOKEN=TOKEN)
        )
        start_discovery(stack, project_python, monitoring, platform, prometheus, port, log_path)
        scraped(prometheus, SLUG, 2)
        [ledger_up] = scraped(prometheus, "ledger", 1)
        four, summed = scale_up_and_down(fleet, prometheus, app_guid)
        rolling_deploy(fleet, prometheus, app_guid)
        ledger_url = reroute_then_delete(platform, prometheus, router, ledger)
        completed, counted = instance_zero_counts_its_own(fleet, prometheus, app_guid)
        failing = staleness_alert_cut_to_3s(monitoring)
        still, secret = api_fails_then_recovers(platform, prometheus, failing)
        discovered = prometheus.wait_for('{__name__=~"cf_discovery_(apps|targets)"}')
        rules = rules_evaluated(prometheus)
        targets = prometheus.targets()
        checked = run([require("promtool"), "check", "config", "prometheus.yml"], cwd=monitoring)

    assert {item["metric"]["cf_instance_index"] for item in four} == {"0", "1", "2", "3"}
    assert {item["metric"]["cf_space"] for item in four} == {"live"}
    assert (ledger_up["metric"]["cf_org"], ledger_up["metric"]["cf_space"]) == ("platform", "tools")
    assert "localhost" in ledger_url
    assert not [labels for labels, _, _ in targets if labels.get("cf_app") == "unlabelled"]
    assert still[0]["metric"]["instance"] == f"{SLUG}/0"
    assert {item["metric"]["__name__"]: item["value"][1] for item in discovered} == {
        "cf_discovery_apps": "1",
        "cf_discovery_targets": "1",
    }, "one app of one instance left, as discovery says of itself"
    assert completed == 7
    assert float(summed[0]["value"][1]) == 12
    assert [item["metric"]["instance"] for item in counted] == [f"{SLUG}/0"]
    assert "SUCCESS" in checked.stdout + checked.stderr
    assert set(rules.values()) == {"ok"}, rules
    assert_failures_logged(log_path.read_text(), secret)
    assert router.refused == [] or {error for _, error in router.refused} == {"unknown_route"}
    expected_authorization = {
        f"Bearer {guid}" if auth == "basic_auth" else None for guid in (app_guid, ledger)
    }
    assert {authorization for _, authorization in router.seen} == expected_authorization


def target_url(prometheus, instance):
    """The URL Prometheus scrapes for the target with this instance label."""
    for target in prometheus.get("/api/v1/targets")["activeTargets"]:
        if target["labels"].get("instance") == instance:
            return target["scrapeUrl"]
    return None
