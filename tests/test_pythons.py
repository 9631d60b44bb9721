"""Every Python the python_version prompt offers runs the kit's own suite, against the
kit's wheel as a service installs it. The service baked for each runs its README's
commands under it (test_kit_install.py: Run it locally and Test, as written).

.ci/run provides each one; locally a missing one is skipped with what to install.
"""

import concurrent.futures
import json

import pytest
import yaml

from . import tools
from .baking import KIT, TEMPLATE, kit_environment, run

OFFERED = json.loads((TEMPLATE / "cookiecutter.json").read_text())["python_version"]


def kits_suite(version, directory, kit_wheels):
    """The kit's suite under `version`, in a fresh environment of the kit's wheel: its
    output, and the path the kit was imported from."""
    interpreter = tools.python(version)
    environment = directory / "venv"
    python = kit_environment(
        environment, kit_wheels, "-r", KIT / "requirements-test.txt", interpreter=interpreter
    )
    # From the kit's directory, whose src/ layout keeps the checkout off sys.path: the
    # tests import the installed wheel.
    ran = run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", directory / "t"],
        cwd=KIT,
    )
    imported = run(
        [python, "-c", "import flask_cf_prometheus; print(flask_cf_prometheus.__file__)"], cwd=KIT
    )
    return ran.stdout, imported.stdout, environment


@pytest.fixture(scope="module")
def suites(tmp_path_factory, kit_wheels):
    """The kit's suite under every offered Python, run at once: most of its time is spent
    waiting on loopback servers and the programs it starts. Each version's future."""
    with concurrent.futures.ThreadPoolExecutor(len(OFFERED)) as pool:
        yield {
            version: pool.submit(kits_suite, version, tmp_path_factory.mktemp(version), kit_wheels)
            for version in OFFERED
        }


@pytest.mark.parametrize("version", OFFERED)
def test_the_kits_suite_passes_under_each_offered_python(suites, version):
    # A missing Python skips (or, under CI=true, fails) here, as tools.python says.
    ran, imported, environment = suites[version].result()

    assert " passed" in ran, ran
    assert " skipped" not in ran, ran
    assert imported.startswith(str(environment)), imported
    tools.PYTHONS[version] += f"; the kit's suite: {ran.strip().splitlines()[-1]}"


def test_the_templates_own_workflow_runs_ci_under_each_offered_python(template_tool):
    workflow = TEMPLATE / ".github" / "workflows" / "test.yml"
    run(
        [template_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows"]
        + [workflow],
        cwd=TEMPLATE,
    )
    job = yaml.safe_load(workflow.read_text())["jobs"]["test"]
    installed = job["steps"][1]["with"]["python-version"].splitlines()

    assert job["strategy"]["matrix"]["python"] == OFFERED
    assert installed == [*OFFERED, "${{ matrix.python }}"]
    assert job["steps"][-1]["run"].endswith("bash .ci/run")
