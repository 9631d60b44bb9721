"""Where cf-discovery runs in production, as the kit's deploy/ has it: a systemd unit,
a container image, and a Prometheus app on Cloud Foundry with cf-discovery as its
sidecar. Cloud Foundry and a container builder cannot run here: the manifest is checked
against the platform's schema, each home's command line is run against the API
stand-in, and the unit is checked by systemd's own verifier."""

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from standins.cloudfoundry import CloudFoundry, cloudfoundry_api

from .baking import KIT, TEMPLATE, bake, cf_discovery, run
from .tools import require

DEPLOY = KIT / "deploy"
# Where the systemd unit's comment installs the kit.
INSTALLED = "/opt/cf-discovery/bin/cf-discovery"
MANIFEST_SCHEMA = TEMPLATE / "tests" / "schemas" / "cloudfoundry-application-manifest.json"
LABELS = {"prometheus.io/scrape": "true"}


@pytest.fixture(scope="module")
def monitoring(cookies_session):
    return bake(cookies_session) / "monitoring"


@pytest.fixture
def platform():
    with cloudfoundry_api(CloudFoundry()) as platform:
        space = platform.space("live", platform.organization("payments"))
        platform.push("payments-api", space, "payments.example.com", 2, LABELS)
        yield platform


def environ(platform, **more):
    return platform.discovery_environment(**more)


def test_the_systemd_unit_passes_systemds_verifier(project_python, tmp_path):
    unit = (DEPLOY / "cf-discovery.service").read_text()
    # Where the unit's comment installs it, the wheel's console script here: verify checks
    # that it can run it.
    copy = tmp_path / "cf-discovery.service"
    copy.write_text(unit.replace(INSTALLED, str(cf_discovery(project_python))))

    checked = run([require("systemd-analyze"), "verify", str(copy)], cwd=tmp_path)

    assert checked.stderr == "", checked.stderr
    service = dict(line.split("=", 1) for line in unit.splitlines() if re.match(r"[A-Z]\w+=", line))
    assert service["Environment"] == "CF_CLIENT_SECRET_FILE=%d/client-secret"
    assert service["LoadCredential"] == "client-secret:/etc/cf-discovery/client-secret"
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "2", "a setting to mend is not retried"
    assert "SECRET=" not in unit.replace("SECRET_FILE=", "")


def test_the_systemd_units_command_runs_as_written(project_python, platform, tmp_path):
    """Its ExecStart, with --once added, against the stand-in: the files appear in its
    state directory, group-readable, and the secret comes from the credential file."""
    unit = (DEPLOY / "cf-discovery.service").read_text()
    [command] = [
        line[len("ExecStart=") :] for line in unit.splitlines() if line.startswith("ExecStart=")
    ]
    arguments = shlex.split(command)
    assert arguments[0] == INSTALLED
    assert f"#   python3 -m venv {Path(INSTALLED).parents[1]}\n" in unit, "installed as it says"
    state = tmp_path / "var-lib-cf-discovery"
    arguments = [str(cf_discovery(project_python)), *arguments[1:], "--once", "--no-reload"]
    arguments = [argument.replace("/var/lib/cf-discovery", str(state)) for argument in arguments]
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "client-secret").write_text(platform.client_secret + "\n")

    completed = subprocess.run(
        arguments,
        env=environ(
            platform,
            CF_CLIENT_SECRET="",
            CF_CLIENT_SECRET_FILE=str(credentials / "client-secret"),
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    assert (state / "cf-127.0.0.1.yml").exists(), "the API's host names the foundation"


def test_the_container_images_entrypoint_runs_as_written(project_python, platform, tmp_path):
    text = (DEPLOY / "Containerfile").read_text()
    [entrypoint] = re.findall(r"^ENTRYPOINT (.+)$", text, re.MULTILINE)
    arguments = json.loads(entrypoint)
    assert arguments[0] == "cf-discovery"
    assert re.search(r"^RUN pip install --no-cache-dir /src/flask-cf-prometheus ", text, re.M)
    assert re.search(r"^USER 65534:65534$", text, re.MULTILINE), "never root"
    output = tmp_path / "cf-targets"
    arguments = [cf_discovery(project_python), *arguments[1:], "--once", "--no-reload"]
    arguments = [str(argument).replace("/cf-targets", str(output)) for argument in arguments]

    completed = subprocess.run(
        arguments, env=environ(platform), capture_output=True, text=True, timeout=60, check=False
    )

    assert completed.returncode == 0, completed.stderr
    assert list(output.glob("cf-*.yml"))


def test_the_container_image_builds(tmp_path):
    """Only where a builder runs and can fetch the python image: neither Docker's daemon
    nor a registry of images can be reached from this project's machines."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker on PATH: the Containerfile is checked above, not built")
    info = subprocess.run([docker, "info"], capture_output=True, text=True, check=False)
    if info.returncode != 0:
        pytest.skip(f"docker cannot build here: {info.stderr.strip().splitlines()[-1]}")
    tag = f"cf-discovery-test:{os.getpid()}"
    built = run(
        [docker, "build", "-f", DEPLOY / "Containerfile", "-t", tag, KIT],
        cwd=tmp_path,
    )
    try:
        helped = run([docker, "run", "--rm", tag, "--help"], cwd=tmp_path)
    finally:
        subprocess.run([docker, "rmi", tag], capture_output=True, check=False)
    assert built.returncode == 0
    assert "CF_CLIENT_SECRET_FILE" in helped.stdout


def test_the_prometheus_app_manifest_is_valid_and_holds_no_secret(monitoring, template_tool):
    manifest = monitoring / "deploy" / "cloudfoundry.yml"

    run(
        [template_tool("check-jsonschema"), "--schemafile", MANIFEST_SCHEMA, manifest],
        cwd=monitoring,
    )

    [app] = yaml.safe_load(manifest.read_text())["applications"]
    assert app["path"] == ".."
    assert not [name for name in app["env"] if re.search("SECRET|PASSWORD", name)]
    sidecars = {sidecar["name"]: sidecar for sidecar in app["sidecars"]}
    assert sorted(sidecars) == ["alertmanager", "cf-discovery"]
    assert all(sidecar["process_types"] == ["web"] for sidecar in sidecars.values())
    assert "cf-discovery" in shlex.split(sidecars["cf-discovery"]["command"])
    assert "--web.enable-lifecycle" in app["command"]
    assert app["no-route"] is True, "its lifecycle API is never on a route"


def test_the_prometheus_app_runs_its_sidecars_command_and_loads_what_it_writes(
    monitoring, project_python, platform, tmp_path
):
    """The sidecar's command, from the app's root (monitoring/), with the kit its
    requirements.txt pins, writes cf-targets/ as the app's Prometheus configuration
    includes it; promtool accepts the whole."""
    [app] = yaml.safe_load((monitoring / "deploy" / "cloudfoundry.yml").read_text())["applications"]
    [sidecar] = [sidecar for sidecar in app["sidecars"] if sidecar["name"] == "cf-discovery"]
    arguments = shlex.split(sidecar["command"])
    assert arguments[:2] == ["exec", "cf-discovery"]
    service = (monitoring.parent / "requirements.txt").read_text().splitlines()
    [kit] = [line for line in service if line.startswith("flask-cf-prometheus")]
    assert kit in (monitoring / "requirements.txt").read_text().splitlines(), "pinned alike"
    try:
        completed = subprocess.run(
            [cf_discovery(project_python), *arguments[2:], "--once", "--no-reload"],
            cwd=monitoring,
            env=environ(platform, CF_FOUNDATION=app["env"]["CF_FOUNDATION"]),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        checked = run(
            [require("promtool"), "check", "config", "deploy/prometheus-app.yml"], cwd=monitoring
        )
        written = sorted(path.name for path in (monitoring / "cf-targets").glob("cf-*"))
    finally:
        for path in (monitoring / "cf-targets").iterdir():
            if path.name != ".gitignore":
                path.unlink()

    assert completed.returncode == 0, completed.stderr
    assert "cf-example.yml" in written
    assert "SUCCESS" in checked.stdout + checked.stderr
    assert re.search(r"alerts\.yml\s+SUCCESS: [1-9]\d* rules found", checked.stdout), checked.stdout
    cfignore = (monitoring / ".cfignore").read_text().split()
    assert {"secrets/", "cf-targets/"} <= set(cfignore), "no credential is pushed"
