"""Every Python the python_version prompt offers runs the kit's own suite, against the
kit's wheel as a service installs it. The service baked for each runs its README's
commands under it (test_kit_install.py: Run it locally and Test, as written).

.ci/run provides each one; locally a missing one is skipped with what to install.
"""

import json

import pytest
import yaml

from . import tools
from .baking import KIT, TEMPLATE, kit_environment, run

OFFERED = json.loads((TEMPLATE / "cookiecutter.json").read_text())["python_version"]


@pytest.mark.parametrize("version", OFFERED)
def test_the_kits_suite_passes_under_each_offered_python(tmp_path, kit_wheels, version):
    interpreter = tools.python(version)
    environment = tmp_path / "venv"
    python = kit_environment(
        environment, kit_wheels, "-r", KIT / "requirements-test.txt", interpreter=interpreter
    )
    # From the kit's directory, whose src/ layout keeps the checkout off sys.path: the
    # tests import the installed wheel.
    ran = run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=KIT)
    imported = run(
        [python, "-c", "import flask_cf_prometheus; print(flask_cf_prometheus.__file__)"], cwd=KIT
    )

    assert " passed" in ran.stdout, ran.stdout
    assert " skipped" not in ran.stdout, ran.stdout
    assert imported.stdout.startswith(str(environment)), imported.stdout
    tools.PYTHONS[version] += f"; the kit's suite: {ran.stdout.strip().splitlines()[-1]}"


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
