"""The three ways a service gets the kit when Cloud Foundry stages it, each as the
service's README tells it, run here without a network: from a package index (one on
loopback), as a direct reference to the template's git repository (a bare repository on
this disk), and from wheels vendored beside the code.

Every other package comes from the wheelhouse that `make test` downloads before the tests
run (tests/wheelhouse.py); each install runs with pip's configuration cleared, so that
nothing but what the test names is reachable.
"""

import contextlib
import functools
import http.server
import json
import os
import re
import shutil
import sys
from pathlib import Path

from .conftest import (
    GIT_IDENTITY,
    KIT_VERSION,
    bake,
    clean_venv,
    offline,
    pip_install,
    run,
    template_repository,
)
from .service import serving


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


def test_from_a_package_index_the_pinned_version(cookies, kit_wheels, wheelhouse, tmp_path):
    project = bake(cookies)
    pinned = [
        line
        for line in (project / "requirements.txt").read_text().splitlines()
        if line.startswith("flask-cf-prometheus")
    ]
    assert pinned == [f"flask-cf-prometheus=={KIT_VERSION}"]
    python = clean_venv(tmp_path / "venv")

    with package_index(kit_wheels, wheelhouse) as (index, _):
        pip(python, "install", "--index-url", index, "-r", "requirements.txt", cwd=project)

    assert installed_kit(python) == (KIT_VERSION, None)
    assert "/simple/flask-cf-prometheus/" in QuietHandler.requested
    the_service_builds(python, project)


def test_from_the_templates_git_repository_at_the_commit_it_was_made_from(wheelhouse, tmp_path):
    """`cookiecutter <git URL>`, as a user runs it: the bake pins the kit at the commit
    it was made from, and pip installs it from the repository (and the service's own
    suite passes with it)."""
    source, commit = template_repository(tmp_path / "source")
    bare = tmp_path / "template.git"
    run(["git", "clone", "--quiet", "--bare", source, bare], cwd=tmp_path)
    url = f"file://{bare}"
    home = tmp_path / "home"
    home.mkdir()
    cookiecutter = Path(sys.executable).parent / "cookiecutter"

    baked = run(
        [cookiecutter, "--no-input", "--output-dir", tmp_path / "out", url],
        cwd=tmp_path,
        env={**os.environ, **GIT_IDENTITY, "HOME": str(home)},
    )

    project = tmp_path / "out" / "payments-api"
    requirement = f"flask-cf-prometheus @ git+{url}@{commit}#subdirectory=flask-cf-prometheus"
    for name in ("requirements.txt", "monitoring/requirements.txt"):
        assert requirement in (project / name).read_text().splitlines(), name
    assert requirement in baked.stdout
    python = clean_venv(tmp_path / "venv")
    # The wheelhouse and nothing else: the kit can only come from the repository.
    pip_install(python, "-r", "requirements-dev.txt", cwd=project)
    version, origin = installed_kit(python)
    assert version == KIT_VERSION
    assert origin["url"] == url
    assert origin["vcs_info"]["commit_id"] == commit
    assert origin["subdirectory"] == "flask-cf-prometheus"
    the_service_builds(python, project)
    ran = run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project)
    assert " passed" in ran.stdout


def test_air_gapped_from_the_wheels_vendored_beside_the_code(
    cookies, kit_wheels, wheelhouse, tmp_path
):
    """The buildpack's vendored install: `pip download -d vendor -r requirements.txt`
    where an index is reachable, then an install that reaches nothing but vendor/."""
    project = bake(cookies)
    vendor = project / "vendor"
    run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--dest", vendor]
        + ["--no-index", "--find-links", kit_wheels, "--find-links", wheelhouse]
        + ["-r", "requirements.txt"],
        cwd=project,
        env=offline(),
    )
    python = clean_venv(tmp_path / "venv")

    pip(
        python,
        "install",
        "--no-index",
        "--find-links",
        vendor,
        "-r",
        "requirements.txt",
        cwd=project,
    )

    assert installed_kit(python) == (KIT_VERSION, None)
    the_service_builds(python, project)
    names = {re.split(r"-\d", path.name, maxsplit=1)[0].lower() for path in vendor.iterdir()}
    assert {"flask_cf_prometheus", "prometheus_client", "flask", "gunicorn"} <= names


def test_the_bakes_pin_is_the_kits_version(cookies):
    project = bake(cookies)
    for name in ("requirements.txt", "monitoring/requirements.txt"):
        lines = (project / name).read_text().splitlines()
        assert f"flask-cf-prometheus=={KIT_VERSION}" in lines, name
