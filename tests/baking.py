"""The template checkout the tests run in, and what it bakes: paths, bakes, commands.

Plain helpers, imported by the tests; the fixtures are conftest.py's.
"""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

TEMPLATE = Path(__file__).parents[1]


def load_hook(name):
    """Import a hook script as a module: its functions run unrendered, as plain Python."""
    spec = importlib.util.spec_from_file_location(name, TEMPLATE / "hooks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bake(cookies, **answers):
    """Bake with these answers over the defaults; fail loudly if the bake fails."""
    result = cookies.bake(extra_context=answers)
    assert result.exit_code == 0, result.exception
    return result.project_path


def bake_with_views(cookies, views_source, **answers):
    """Bake, then add `views_source` (routes on the blueprint `bp`) to the service's views."""
    project = bake(cookies, **answers)
    views = project / "payments_api" / "views.py"
    views.write_text(views.read_text() + views_source)
    return project


# A route for bake_with_views that fails every request with a 500.
FAILING = """

@bp.get("/fail")
def fail():
    return {"error": "failing on purpose"}, 500
"""


def run(command, cwd, **kwargs):
    completed = subprocess.run(command, cwd=cwd, capture_output=True, text=True, **kwargs)
    assert completed.returncode == 0, (
        f"{command} failed in {cwd}:\n{completed.stdout}\n{completed.stderr}"
    )
    return completed


KIT = TEMPLATE / "flask-cf-prometheus"
# The kit's version, as its package says it (flit reads it from there too).
KIT_VERSION = re.search(
    r'^__version__ = "(.+)"$',
    (KIT / "src" / "flask_cf_prometheus" / "__init__.py").read_text(),
    re.MULTILINE,
)[1]


# Every wheel the tests install but the kit's, downloaded before they run (make test runs
# tests/wheelhouse.py), so that no test reaches a network.
WHEELHOUSE = TEMPLATE / "build" / "wheelhouse"


def offline():
    """The environment of a pip that knows only what its command line names."""
    environ = {name: value for name, value in os.environ.items() if not name.startswith("PIP_")}
    return {**environ, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def clean_venv(directory, interpreter=sys.executable):
    """A virtual environment of `interpreter` with nothing installed: this run's pip
    installs into it (an interpreter unpacked from another distribution, as .ci/run's
    Debian unstable ones are, may have no ensurepip wheels of its own that work)."""
    run([interpreter, "-m", "venv", "--without-pip", directory], cwd=Path(directory).parent)
    return Path(directory) / "bin" / "python"


def pip_install(python, *arguments, cwd, find_links=()):
    """pip install into `python`'s environment from the wheelhouse and `find_links`
    alone, with no index."""
    links = [option for link in (WHEELHOUSE, *find_links) for option in ("--find-links", link)]
    return run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-index"]
        + [*links, *arguments],
        cwd=cwd,
        env=offline(),
    )


def kit_environment(directory, kit_wheels, *requirements, interpreter=sys.executable):
    """A fresh environment of `interpreter` with the kit's wheel and `requirements`."""
    python = clean_venv(directory, interpreter)
    [wheel] = kit_wheels.glob("*.whl")
    pip_install(python, wheel, *requirements, cwd=Path(directory).parent)
    return python


GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Template Test",
    "GIT_AUTHOR_EMAIL": "template-test@localhost",
    "GIT_COMMITTER_NAME": "Template Test",
    "GIT_COMMITTER_EMAIL": "template-test@localhost",
}


def template_repository(directory):
    """A git repository holding this checkout's files as they are now, in one commit:
    what users clone, with whatever this run changes. Its path and commit."""
    shutil.copytree(
        TEMPLATE,
        directory,
        ignore=shutil.ignore_patterns(".git", ".venv", "build", "__pycache__", ".*_cache"),
    )
    env = {**os.environ, **GIT_IDENTITY}
    run(["git", "init", "--quiet", "--initial-branch", "main"], cwd=directory, env=env)
    run(["git", "add", "--all"], cwd=directory, env=env)
    run(["git", "commit", "--quiet", "--message", "template"], cwd=directory, env=env)
    commit = run(["git", "rev-parse", "HEAD"], cwd=directory).stdout.strip()
    return directory, commit


def cf_discovery(python):
    """The kit's cf-discovery console script, in the environment of `python`."""
    return Path(python).parent / "cf-discovery"
