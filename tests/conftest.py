import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

TEMPLATE = Path(__file__).parents[1]


@pytest.fixture(scope="session", autouse=True)
def _hook_scripts_in_pytest_temp(tmp_path_factory):
    """cookiecutter renders each hook into a temporary file that it never removes
    (cookiecutter#886, closed as intended): keep them in this run's directory, which
    pytest cleans, rather than leave two files in /tmp for every bake."""
    saved = tempfile.tempdir
    tempfile.tempdir = str(tmp_path_factory.mktemp("hook-scripts"))
    yield
    tempfile.tempdir = saved


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


@pytest.fixture(scope="session")
def kit_wheels(tmp_path_factory):
    """A directory holding the kit's wheel, built from this checkout, for pip's
    --find-links: what a baked service's `flask-cf-prometheus==` pin installs here.

    Built without build isolation, with the flit_core of requirements-test.txt, so that
    building needs no index."""
    wheels = tmp_path_factory.mktemp("kit-wheels")
    run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-build-isolation", "--no-deps"]
        + ["--wheel-dir", wheels, KIT],
        cwd=tmp_path_factory.getbasetemp(),
    )
    return wheels


@pytest.fixture(scope="session")
def wheelhouse():
    if not WHEELHOUSE.is_dir():
        pytest.fail(
            f"{WHEELHOUSE} is missing: run make test, or python tests/wheelhouse.py {WHEELHOUSE}"
        )
    return WHEELHOUSE


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


@pytest.fixture(scope="session")
def project_python(tmp_path_factory, kit_wheels, wheelhouse):
    """A Python with a default project's requirements-dev.txt installed, shared by all bakes.

    Requirements do not depend on the answers (test_requirements_do_not_depend_on_answers),
    so one environment serves every combination. The kit comes from this checkout's wheel.
    """
    from cookiecutter.main import cookiecutter

    output = tmp_path_factory.mktemp("requirements")
    project = Path(cookiecutter(str(TEMPLATE), no_input=True, output_dir=str(output)))
    python = clean_venv(tmp_path_factory.mktemp("project-venv") / "venv")
    pip_install(python, "-r", "requirements-dev.txt", cwd=project, find_links=[kit_wheels])
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


@pytest.fixture(scope="session")
def template_tool():
    """Path of a console script installed beside this test run's Python."""

    def tool(name):
        path = Path(sys.executable).parent / name
        assert path.exists(), f"{name} is not installed: pip install -r requirements-test.txt"
        return path

    return tool


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """What each offered Python ran so far (test_pythons.py, test_kit_install.py), on
    their tests' reports: it reaches the summary from whichever test process
    (pytest-xdist) ran them."""
    from . import tools

    report = yield
    ran_pythons = item.module.__name__.endswith((".test_pythons", ".test_kit_install"))
    if ran_pythons and tools.PYTHONS and call.when == "call":
        report.user_properties.append(("pythons", dict(tools.PYTHONS)))
    return report


def pytest_terminal_summary(terminalreporter):
    """Which Python each python_version choice's README commands and the kit's suite ran
    under (test_kit_install.py, test_pythons.py)."""
    pythons = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            for name, value in getattr(report, "user_properties", ()):
                if name == "pythons":
                    # Each report holds what its process had found so far: the longest
                    # line of each version is the whole of it.
                    for version, outcome in value.items():
                        pythons[version] = max(pythons.get(version, ""), outcome, key=len)
    if pythons:
        terminalreporter.section("the README's commands and the kit's suite, by python_version")
        for version, outcome in sorted(pythons.items()):
            terminalreporter.write_line(f"{version}: {outcome}")
