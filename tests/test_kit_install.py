"""How a service gets the kit, from every source a user bakes from, each as the service's
README tells it, run here without a network: from a package index (one on loopback),
as a direct reference to the template's git repository (`file://` and `git://`, with
cookiecutter and with cruft), and from wheels vendored beside the code.

Every other package comes from the wheelhouse that `make test` downloads before the tests
run (tests/wheelhouse.py); each install runs with pip's configuration cleared, so that
nothing but what the test names is reachable.
"""

import contextlib
import functools
import http.server
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from standins.loopback import free_loopback_port, serving

from . import tools
from .baking import KIT_VERSION, TEMPLATE, bake, clean_venv, offline, run
from .sources import as_a_user, bake_from, bare_template, git_server, readme_block, run_as_written

KIT = "flask-cf-prometheus"


def pip(python, *arguments, cwd):
    return run(
        [sys.executable, "-m", "pip", "--python", python, *arguments, "--quiet"],
        cwd=cwd,
        env=offline(),
    )


def installed_kit(python):
    """The kit's version and, when pip installed it from a URL, where from."""
    shown = run(
        [python, "-c", "import flask_cf_prometheus, sys; print(flask_cf_prometheus.__version__)"],
        cwd=python.parent,
    )
    [dist_info] = (python.parents[1] / "lib").glob("python*/site-packages/flask_cf_prometheus-*")
    direct_url = dist_info / "direct_url.json"
    origin = json.loads(direct_url.read_text()) if direct_url.exists() else None
    return shown.stdout.strip(), origin


def the_service_builds(python, project):
    """Its factory builds the app and the kit's cf-discovery runs."""
    run([python, "-c", "from payments_api import create_app; create_app()"], cwd=project)
    helped = run([python.parent / "cf-discovery", "--help"], cwd=project)
    assert "CF_API" in helped.stdout


@contextlib.contextmanager
def package_index(*directories):
    """A simple repository API (PEP 503) on loopback, holding the files of `directories`:
    what pip reads from PyPI or an organisation's own index."""
    root = Path(directories[0]).parent / "index"
    for directory in directories:
        for path in Path(directory).iterdir():
            name = re.split(r"-\d", path.name, maxsplit=1)[0]
            project = root / "simple" / re.sub(r"[-_.]+", "-", name).lower()
            project.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, project / path.name)
    with serving(functools.partial(QuietHandler, directory=str(root))) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple/", server


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    requested = []

    def log_message(self, format, *args):
        QuietHandler.requested.append(self.path)


def test_from_the_owners_package_index_once_the_kit_is_published(
    cookies, kit_wheels, wheelhouse, tmp_path
):
    """The template's owner has published the kit and set _kit_index: a bake pins its
    version and names the index, and the README's commands install from there alone."""
    with package_index(kit_wheels, wheelhouse) as (index, _):
        project = bake(cookies, _kit_index=index)
        create, install, *_ = readme_block(project, "## Run it locally")
        env = as_a_user("3.11", tmp_path / "bin", wheelhouse=None)
        run_as_written([create, install], project, env)

    lines = (project / "requirements.txt").read_text().splitlines()
    assert lines[0] == f"--index-url {index}"
    assert f"{KIT}=={KIT_VERSION}" in lines
    assert installed_kit(project / ".venv" / "bin" / "python") == (KIT_VERSION, None)
    assert f"/simple/{KIT}/" in QuietHandler.requested


# Each source with each tool, one python_version each: between them, every offered
# Python runs the README's commands with the pip its venv installs (23.2.1 for 3.11).
SOURCES = [
    ("file", "cookiecutter", "3.11"),
    ("file", "cruft", "3.12"),
    ("git", "cookiecutter", "3.13"),
    ("git", "cruft", "3.14"),
]


@contextlib.contextmanager
def served_template(tmp_path, scheme):
    """This checkout as a bare repository, at a `file://` URL or behind git's daemon on
    loopback: the URL users give, what pip is pinned to, and the commit."""
    bare, commit = bare_template(tmp_path)
    if scheme == "file":
        # pip 23.2 reads no file:/// URL: the bake pins file://localhost/.
        yield f"file://{bare}", f"file://localhost{bare}", commit
    else:
        with git_server(bare.parent) as server:
            url = f"{server}/template.git"
            yield url, url, commit


@pytest.mark.parametrize(("scheme", "tool", "version"), SOURCES, ids=lambda v: v)
def test_run_it_locally_as_written_from_each_source(tmp_path, wheelhouse, scheme, tool, version):
    """Baked from the template's repository, the service installs, tests and serves with
    the README's commands as written, on a stock `python3.X` and the pip its venv has;
    the kit comes from the repository at the commit the service was made from."""
    env = as_a_user(version, tmp_path / "bin")
    with served_template(tmp_path, scheme) as (url, pinned_url, commit):
        said, project = bake_from(url, tool, tmp_path / "out", tmp_path, python_version=version)
        create, install, serve, request = readme_block(project, "## Run it locally")
        run_as_written([create, install], project, env)

    requirement = f"{KIT} @ git+{pinned_url}@{commit}#subdirectory={KIT}"
    assert requirement in (project / "requirements.txt").read_text().splitlines()
    [told] = [line for line in said.splitlines() if line.startswith("requirements.txt ")]
    assert (requirement in told) == (scheme == "git"), told
    python = project / ".venv" / "bin" / "python"
    version_installed, origin = installed_kit(python)
    assert version_installed == KIT_VERSION
    assert (origin["url"], origin["vcs_info"]["commit_id"]) == (pinned_url, commit)
    tested = run_as_written(readme_block(project, "## Test"), project, env)
    assert " passed" in tested[0].stdout
    assert " skipped" not in tested[0].stdout
    answer = serve_as_written(serve, request, project, env)
    assert answer["service"] == "payments-api"
    ran = run([python, "--version"], cwd=project).stdout.split()[1]
    tools.PYTHONS[version] += f"; from {scheme}:// by {tool}, Run it locally: {ran}"


def serve_as_written(serve, request, project, env):
    """The README's serve command on a free port in place of 8000, and its request."""
    assert request == "curl http://127.0.0.1:8000/", request
    port = free_loopback_port()
    command = serve.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    server = subprocess.Popen(
        ["bash", "-c", f"exec {command}"],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as answer:
                    return json.load(answer)
            except OSError:
                assert server.poll() is None, f"{command} exited {server.returncode}"
                assert time.monotonic() < deadline, f"{command} did not answer in 30 s"
                time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(15)


def test_a_local_checkout_bake_pins_the_version_and_says_so_in_one_line(tmp_path):
    """A directory has no commit a service can point at: the bake keeps the version pin,
    and says in one line what the team must do."""
    said, project = bake_from(TEMPLATE, "cookiecutter", tmp_path / "out", tmp_path)

    assert f"{KIT}=={KIT_VERSION}" in (project / "requirements.txt").read_text().splitlines()
    assert said.splitlines()[-1] == (
        f"requirements.txt pins {KIT}=={KIT_VERSION}, which no package index serves yet:"
        " bake from the template's git URL, or see Publishing the kit in its README."
    )


@pytest.mark.parametrize("tracing", ["none", "otlp"])
def test_air_gapped_from_the_wheels_vendored_beside_the_code(wheelhouse, tmp_path, tracing):
    """The README's recipe, run as written where an index is reachable, leaves a vendor/
    from which a clean environment installs every requirement with no index, as the
    buildpack does: `pip install --no-index --find-links vendor -r requirements.txt`."""
    env = as_a_user("3.11", tmp_path / "bin")
    bare, _ = bare_template(tmp_path)
    _, project = bake_from(
        f"file://{bare}", "cookiecutter", tmp_path / "out", tmp_path, tracing=tracing
    )
    create, *_ = readme_block(project, "## Run it locally")
    *recipe, push = readme_block(project, "### Air-gapped foundations")
    assert push == "cf push"
    run_as_written([create, *recipe], project, env)
    python = clean_venv(tmp_path / "venv")

    pip(
        python,
        "install",
        "--no-index",
        "--find-links",
        "vendor",
        "-r",
        "requirements.txt",
        cwd=project,
    )

    pin = f"{KIT}[otlp]=={KIT_VERSION}" if tracing == "otlp" else f"{KIT}=={KIT_VERSION}"
    assert pin in (project / "requirements.txt").read_text().splitlines()
    assert installed_kit(python) == (KIT_VERSION, None)
    the_service_builds(python, project)
    names = {
        re.split(r"-\d", path.name, maxsplit=1)[0].lower() for path in project.glob("vendor/*")
    }
    assert {"flask_cf_prometheus", "prometheus_client", "flask", "gunicorn"} <= names
    assert ("opentelemetry_sdk" in names) is (tracing == "otlp")


def test_the_bakes_pin_is_the_kits_version(cookies):
    project = bake(cookies)
    for name in ("requirements.txt", "monitoring/requirements.txt"):
        lines = (project / name).read_text().splitlines()
        assert f"flask-cf-prometheus=={KIT_VERSION}" in lines, name
