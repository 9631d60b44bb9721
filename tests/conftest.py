"""The template's fixtures and test-run hooks; the helpers the tests import live in
baking.py and the other helper modules."""

import sys
import tempfile
from pathlib import Path

import pytest

from .baking import KIT, TEMPLATE, WHEELHOUSE, clean_venv, pip_install, run


@pytest.fixture(scope="session", autouse=True)
def _hook_scripts_in_pytest_temp(tmp_path_factory):
    """cookiecutter renders each hook into a temporary file that it never removes
    (cookiecutter#886, closed as intended): keep them in this run's directory, which
    pytest cleans, rather than leave two files in /tmp for every bake."""
    saved = tempfile.tempdir
    tempfile.tempdir = str(tmp_path_factory.mktemp("hook-scripts"))
    yield
    tempfile.tempdir = saved


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


@pytest.fixture(scope="session")
def project_python(tmp_path_factory, kit_wheels, wheelhouse):
    """A Python with a default project's requirements-dev.txt installed, shared by all bakes.

    Requirements depend on no answer but `tracing`
    (test_requirements_do_not_depend_on_answers), so one environment serves every
    combination without traces. The kit comes from this checkout's wheel.
    """
    return _project_venv(tmp_path_factory, kit_wheels, "none")


@pytest.fixture(scope="session")
def tracing_python(tmp_path_factory, kit_wheels, wheelhouse):
    """A Python with the requirements-dev.txt of a project that traces (tracing=otlp)."""
    return _project_venv(tmp_path_factory, kit_wheels, "otlp")


def _project_venv(tmp_path_factory, kit_wheels, tracing):
    from cookiecutter.main import cookiecutter

    output = tmp_path_factory.mktemp(f"requirements-{tracing}")
    project = Path(
        cookiecutter(
            str(TEMPLATE), no_input=True, output_dir=str(output), extra_context={"tracing": tracing}
        )
    )
    python = clean_venv(tmp_path_factory.mktemp(f"project-venv-{tracing}") / "venv")
    pip_install(python, "-r", "requirements-dev.txt", cwd=project, find_links=[kit_wheels])
    return python


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
                    # Each report holds what its process had found so far, a line of
                    # "; "-separated parts a version; two processes find different parts.
                    for version, outcome in value.items():
                        parts = pythons.setdefault(version, [])
                        parts += [part for part in outcome.split("; ") if part not in parts]
    if pythons:
        terminalreporter.section("the README's commands and the kit's suite, by python_version")
        for version, parts in sorted(pythons.items()):
            terminalreporter.write_line(f"{version}: {'; '.join(parts)}")
