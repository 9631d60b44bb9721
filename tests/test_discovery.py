"""monitoring/cf-discovery against a stand-in for the Cloud Foundry API (cloudfoundry.py):
what it writes for the fleet, and that a failing API or bad settings lose nothing."""

import json
import os
import stat
import subprocess

import pytest
import yaml

from .cloudfoundry import CloudFoundry, cloudfoundry_api
from .conftest import bake, run
from .tools import require

SECRET = "discovery-secret"
LABELS = {"prometheus.io/scrape": "true"}
ANNOTATIONS = {"prometheus.io/path": "/internal/metrics", "prometheus.io/auth": "app-guid"}


@pytest.fixture(scope="module")
def project(cookies_session):
    return bake(cookies_session)


@pytest.fixture
def platform():
    """Two organisations, three spaces; pages of two resources."""
    with cloudfoundry_api(CloudFoundry(client_secret=SECRET, page_size=2)) as platform:
        payments = platform.organization("payments")
        platform.live = platform.space("live", payments)
        platform.staging = platform.space("staging", payments)
        platform.other = platform.space("tools", platform.organization("platform"))
        yield platform


def discovery(project, python, platform, output, *arguments, **environ):
    """Run cf-discovery once against the stand-in; its exit code and stderr."""
    env = {
        **os.environ,
        "CF_API": platform.url,
        "CF_CLIENT_ID": platform.client_id,
        "CF_CLIENT_SECRET": SECRET,
        **environ,
    }
    completed = subprocess.run(
        [python, project / "monitoring" / "cf-discovery", "--once", "--output", output, *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.stdout == ""
    return completed.returncode, completed.stderr


def fragments(output):
    """The fragments' jobs, by file name, as Prometheus reads them."""
    return {
        path.name: yaml.safe_load(path.read_text())["scrape_configs"]
        for path in sorted(output.glob("*.yml"))
    }


def targets(output, app, index):
    """What the file_sd file of instance `index` of `app` holds."""
    return json.loads((output / f"cf-{app}-{index}.json").read_text())


def snapshot(output):
    return {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in output.iterdir()}


def test_every_instance_of_every_labelled_app_and_nothing_else(
    project, project_python, platform, tmp_path
):
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
    output = tmp_path / "cf-targets"

    code, log = discovery(project, project_python, platform, output)

    assert code == 0, log
    found = fragments(output)
    assert len(found) == 6
    jobs = found[f"cf-{payments}.yml"]
    assert [job["job_name"] for job in jobs] == [f"cf-{payments}-{index}" for index in range(3)]
    first = jobs[0]
    assert first["scheme"] == "https"
    assert first["metrics_path"] == "/internal/metrics"
    assert first["http_headers"] == {"X-CF-APP-INSTANCE": {"values": [f"{payments}:0"]}}
    assert first["authorization"] == {"type": "Bearer", "credentials": payments}
    assert first["file_sd_configs"] == [{"files": [f"cf-{payments}-0.json"]}]
    assert targets(output, payments, 0) == [
        {
            "targets": ["payments.apps.example.com"],
            "labels": {
                "job": "payments-api",
                "instance": "payments-api/0",
                "cf_org": "payments",
                "cf_space": "live",
                "cf_app": "payments-api",
                "cf_app_guid": payments,
                "cf_instance_index": "0",
            },
        }
    ]
    [staging_job] = found[f"cf-{staging}.yml"]
    assert staging_job["metrics_path"] == "/metrics", "the default path"
    assert targets(output, staging, 0)[0]["labels"]["cf_space"] == "staging"
    assert all("authorization" not in job for job in found[f"cf-{whitelisted}.yml"])
    # Readable by their owner only: they may hold the apps' GUIDs as credentials.
    assert {stat.S_IMODE(path.stat().st_mode) for path in output.iterdir()} == {0o600}
    # Kind to the API: pages of results, not apps times instances. With pages of two: 6
    # apps in 3 pages, their web processes in 3 and their routes in 3 (by app GUIDs).
    assert len(platform.api_requests()) == 3 + 3 + 3
    assert log.strip().splitlines() == [
        "cf-discovery: 6 apps, 9 targets, 15 files changed, 11 requests"
    ]


def test_stopped_apps_and_internal_routes_are_not_scraped(
    project, project_python, platform, tmp_path
):
    # payments.apps.internal sorts first: it must be skipped for being internal.
    both = platform.push("payments-api", platform.live, "payments.example.com", 2, LABELS)
    platform.map_route(both, "payments.apps.internal", internal=True)
    internal_only = platform.push("ledger", platform.live, "ledger.example.com", 1, LABELS)
    platform.unmap_routes(internal_only)
    platform.map_route(internal_only, "ledger.apps.internal", internal=True)
    stopped = platform.push("reports", platform.live, "reports.example.com", 1, LABELS)
    platform.stop(stopped)
    output = tmp_path / "cf-targets"

    assert discovery(project, project_python, platform, output)[0] == 0

    assert set(fragments(output)) == {f"cf-{both}.yml"}
    assert targets(output, both, 0)[0]["targets"] == ["payments.example.com"]


def test_the_fleet_as_it_changes(project, project_python, platform, tmp_path):
    app = platform.push("payments-api", platform.live, "payments.example.com", 2, LABELS)
    gone = platform.push("old-api", platform.live, "old.example.com", 1, LABELS)
    output = tmp_path / "cf-targets"
    other_file = output / "my-own-jobs.yml"
    output.mkdir()
    other_file.write_text("scrape_configs: []\n")

    assert discovery(project, project_python, platform, output)[0] == 0
    unchanged = snapshot(output)
    assert discovery(project, project_python, platform, output) == (
        0,
        "cf-discovery: 2 apps, 3 targets, 0 files changed, 5 requests\n",
    )
    assert snapshot(output) == unchanged, "nothing rewritten when nothing changed"

    platform.scale(app, 4)
    platform.delete(gone)
    platform.unmap_routes(app)
    platform.map_route(app, "payments-v2.example.com")
    assert discovery(project, project_python, platform, output)[0] == 0
    jobs = fragments(output)
    assert set(jobs) == {f"cf-{app}.yml", "my-own-jobs.yml"}, "never another file"
    assert len(jobs[f"cf-{app}.yml"]) == 4
    assert {targets(output, app, index)[0]["targets"][0] for index in range(4)} == {
        "payments-v2.example.com"
    }

    # A rolling deploy: a second web process, scaled up as the first is scaled down.
    platform.scale(app, 1)
    platform.add_web_process(app, 3)
    assert discovery(project, project_python, platform, output)[0] == 0
    assert len(fragments(output)[f"cf-{app}.yml"]) == 3, "the app is never left unscraped"

    platform.scale(app, 0)
    assert discovery(project, project_python, platform, output)[0] == 0
    assert set(fragments(output)) == {"my-own-jobs.yml"}, "no instance, no job"
    assert [path.name for path in output.glob("*.json")] == []


@pytest.mark.parametrize(
    ("fault", "arguments", "reason"),
    [
        ("500", [], "GET /v3/apps answered 500 Internal Server Error"),
        ("hang", ["--timeout", "1"], "GET /v3/apps did not answer: timed out"),
        ("bad_json", [], "GET /v3/apps answered with something other than JSON"),
        (
            "bad_shape",
            [],
            "the API answered a shape cf-discovery does not know (KeyError('relationships'))",
        ),
        ("redirect", [], "GET /v3/apps answered 302 Found"),
    ],
)
def test_a_failing_api_leaves_the_last_good_targets(
    project, project_python, platform, tmp_path, fault, arguments, reason
):
    platform.push("payments-api", platform.live, "payments.example.com", 2, LABELS)
    output = tmp_path / "cf-targets"
    assert discovery(project, project_python, platform, output)[0] == 0
    good = snapshot(output)

    platform.fail_with(fault)
    code, log = discovery(project, project_python, platform, output, *arguments)

    assert code == 1
    assert log == f"cf-discovery: pass failed, the last good targets stay: {reason}\n"
    assert snapshot(output) == good


def test_an_expired_token_is_renewed_and_a_revoked_client_loses_nothing(
    project, project_python, platform, tmp_path
):
    platform.push("payments-api", platform.live, "payments.example.com", 2, LABELS)
    platform.revoke_tokens_after = 2  # API requests: the token expires mid-pass
    output = tmp_path / "cf-targets"

    code, log = discovery(project, project_python, platform, output)

    assert (code, log) == (0, "cf-discovery: 1 apps, 2 targets, 3 files changed, 7 requests\n")
    assert [path for method, path in platform.requests if method == "POST"] == ["/oauth/token"] * 2
    good = snapshot(output)

    platform.client_secret = "rotated"
    platform.expire_tokens()
    code, log = discovery(project, project_python, platform, output)

    assert code == 1
    assert log == (
        "cf-discovery: pass failed, the last good targets stay:"
        " UAA, for client 'prometheus', answered 401 Unauthorized\n"
    )
    assert SECRET not in log
    assert snapshot(output) == good


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"CF_API": ""}, "CF_API is not set: the API's URL, e.g. https://api.example.com"),
        (
            {"CF_API": "http://api.example.com"},
            "CF_API='http://api.example.com' must be an https:// URL"
            " (http:// only for a loopback address)",
        ),
        ({"CF_CLIENT_SECRET": ""}, "CF_CLIENT_ID and CF_CLIENT_SECRET must both be set"),
    ],
)
def test_bad_settings_stop_it_in_one_line_touching_nothing(
    project, project_python, platform, tmp_path, environ, message
):
    platform.push("payments-api", platform.live, "payments.example.com", 2, LABELS)
    output = tmp_path / "cf-targets"
    assert discovery(project, project_python, platform, output)[0] == 0
    good = snapshot(output)

    code, log = discovery(project, project_python, platform, output, **environ)

    assert code == 2
    assert log == f"cf-discovery: {message}\n"
    assert snapshot(output) == good
    assert len(platform.requests) == 1 + 1 + 3, "not one request more"


def test_promtool_accepts_the_kit_with_fragments(project, project_python, platform, tmp_path):
    platform.push("payments-api", platform.live, "payments.example.com", 2, LABELS)
    platform.push(
        "ledger", platform.other, "ledger.example.com", 1, LABELS, {"prometheus.io/auth": "none"}
    )
    monitoring = project / "monitoring"
    output = monitoring / "cf-targets"
    (monitoring / "secrets" / "local-metrics-token").write_text("local-token")
    try:
        assert discovery(project, project_python, platform, output)[0] == 0
        checked = run([require("promtool"), "check", "config", "prometheus.yml"], cwd=monitoring)
    finally:
        for path in output.glob("cf-*.yml"):
            path.unlink()
        (monitoring / "secrets" / "local-metrics-token").unlink()

    assert "SUCCESS" in checked.stdout + checked.stderr


@pytest.mark.parametrize("auth", ["basic_auth", "ip_whitelist"])
def test_promtool_accepts_the_in_platform_alternative(cookies, auth):
    monitoring = bake(cookies, metrics_auth=auth) / "monitoring"
    if auth == "basic_auth":
        (monitoring / "secrets" / "cf-app-guid").write_text("5cdc7595-2e9b-4f62-8d5a-a86b92f2df0e")
    config = yaml.safe_load((monitoring / "prometheus-in-cloudfoundry.yml").read_text())

    checked = run(
        [require("promtool"), "check", "config", "prometheus-in-cloudfoundry.yml"], cwd=monitoring
    )

    assert "SUCCESS" in checked.stdout + checked.stderr
    [job] = config["scrape_configs"]
    assert job["dns_sd_configs"] == [
        {
            "names": ["payments-api.apps.internal"],
            "type": "A",
            "port": 8080,
            "refresh_interval": "30s",
        }
    ]
    assert ("authorization" in job) is (auth == "basic_auth")


def test_the_manifest_labels_the_app_as_discovery_reads_it(project):
    [app] = yaml.safe_load((project / "manifest.yml").read_text())["applications"]

    assert app["metadata"] == {
        "labels": {"prometheus.io/scrape": "true"},
        "annotations": {"prometheus.io/path": "/metrics", "prometheus.io/auth": "app-guid"},
    }
