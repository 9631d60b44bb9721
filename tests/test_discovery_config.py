"""A service's monitoring/ as Prometheus reads it: promtool accepts its configuration with
the files cf-discovery writes, and the in-platform alternative; the manifest labels the
app as discovery reads it. cf-discovery itself is tested by the kit's suite
(flask-cf-prometheus/tests/test_discovery.py)."""

import subprocess

import pytest
import yaml
from standins.cloudfoundry import CloudFoundry, cloudfoundry_api

from .baking import bake, cf_discovery, run
from .tools import require

SECRET = "discovery-secret"
LABELS = {"prometheus.io/scrape": "true"}
PATH = "prometheus.io/path"
HOSTILE_PATHS = {
    "rocket": "/\U0001f680/metrics",
    "yaml": "/x:*y&z!'\"{}[]|>%@`",
    "broken": "/metrics\nnow",
}


@pytest.fixture(scope="module")
def project(cookies_session):
    return bake(cookies_session)


@pytest.fixture
def platform():
    with cloudfoundry_api(CloudFoundry(client_secret=SECRET)) as platform:
        platform.live = platform.space("live", platform.organization("payments"))
        platform.other = platform.space("tools", platform.organization("platform"))
        yield platform


@pytest.mark.parametrize(
    "options", [[], ["--instance-header=process", "--scrape-proxy-from-environment"]]
)
def test_promtool_accepts_the_kit_with_what_discovery_writes(
    project, project_python, platform, tmp_path, options
):
    """With what any app owner may write in an annotation beside the others' apps: a
    character beyond the BMP, YAML's own syntax, a line break, and a path Prometheus
    cannot ask for (that app alone is skipped)."""
    platform.push("payments-api", platform.live, "payments.example.com", 2, LABELS)
    platform.push(
        "ledger", platform.other, "ledger.example.com", 1, LABELS, {"prometheus.io/auth": "none"}
    )
    for name, path in HOSTILE_PATHS.items():
        platform.push(name, platform.live, f"{name}.example.com", 1, LABELS, {PATH: path})
    monitoring = project / "monitoring"
    output = monitoring / "cf-targets"
    (monitoring / "secrets" / "local-metrics-token").write_text("local-token")
    ca = tmp_path / "ca.pem"
    ca.write_text("")  # promtool checks that the file is there
    try:
        ran = subprocess.run(
            [cf_discovery(project_python), "--once", "--no-reload", "--output", output]
            + [f"--scrape-ca-file={ca}", *options],
            env=platform.discovery_environment(CF_CLIENT_SECRET=SECRET, CF_FOUNDATION="lab"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        checked = run([require("promtool"), "check", "config", "prometheus.yml"], cwd=monitoring)
        written = yaml.safe_load((output / "cf-lab.yml").read_text())["scrape_configs"]
    finally:
        for path in output.glob("*"):
            if path.name != ".gitignore":
                path.unlink()
        (monitoring / "secrets" / "local-metrics-token").unlink()

    assert ran.returncode == 0, ran.stderr
    assert "SUCCESS" in checked.stdout + checked.stderr
    paths = {job["metrics_path"] for job in written}
    assert paths == {"/metrics", HOSTILE_PATHS["rocket"], HOSTILE_PATHS["yaml"]}, "all but one"
    assert {job["tls_config"]["ca_file"] for job in written} == {str(ca)}
    assert {job.get("proxy_from_environment", False) for job in written} == {bool(options)}


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
