import importlib.util
import subprocess
import sys
import tempfile
import venv
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


@pytest.fixture(scope="session")
def project_python(tmp_path_factory):
    """A Python with a default project's requirements-dev.txt installed, shared by all bakes.

    Requirements do not depend on the answers (test_requirements_do_not_depend_on_answers),
    so one environment serves every combination.
    """
    from cookiecutter.main import cookiecutter

    output = tmp_path_factory.mktemp("requirements")
    project = Path(cookiecutter(str(TEMPLATE), no_input=True, output_dir=str(output)))
    env_dir = tmp_path_factory.mktemp("project-venv")
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    run(
        [python, "-m", "pip", "install", "--quiet", "-r", "requirements-dev.txt"],
        cwd=project,
    )
    return python


@pytest.fixture(scope="session")
def template_tool():
    """Path of a console script installed beside this test run's Python."""

    def tool(name):
        path = Path(sys.executable).parent / name
        assert path.exists(), f"{name} is not installed: pip install -r requirements-test.txt"
        return path

    return tool


def pytest_terminal_summary(terminalreporter):
    """Which Python each python_version choice's baked suite ran under (test_pythons.py)."""
    from . import tools

    if tools.PYTHONS:
        terminalreporter.section("baked suite, by python_version")
        for version, outcome in sorted(tools.PYTHONS.items()):
            terminalreporter.write_line(f"{version}: {outcome}")
