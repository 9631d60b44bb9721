"""The kit as it is released: its sdist and wheel build and pass `twine check`, what the
release workflow publishes is what it built and checked, its changelog names its
version, and the generated service leaves prometheus_client's version to the kit."""

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest
import yaml

from .baking import GIT_IDENTITY, KIT, KIT_VERSION, TEMPLATE, bake, run, template_repository
from .sources import sh_block

WORKFLOW = TEMPLATE / ".github" / "workflows" / "kit.yml"


@pytest.fixture(scope="module")
def distributions(tmp_path_factory, kit_wheels):
    """The sdist, built by flit_core as `python -m build` calls it, and the wheel the
    whole run installs (conftest.kit_wheels)."""
    out = tmp_path_factory.mktemp("dist")
    run(
        [
            sys.executable,
            "-c",
            f"from flit_core import buildapi; buildapi.build_sdist({str(out)!r})",
        ],
        cwd=KIT,
    )
    return sorted([*out.iterdir(), *kit_wheels.glob("*.whl")], key=lambda path: path.name)


def test_the_sdist_and_wheel_pass_twine_check(distributions, template_tool):
    names = [path.name for path in distributions]
    assert names == [
        f"flask_cf_prometheus-{KIT_VERSION}-py3-none-any.whl",
        f"flask_cf_prometheus-{KIT_VERSION}.tar.gz",
    ]

    checked = run([template_tool("twine"), "check", "--strict", *distributions], cwd=KIT)

    assert checked.stdout.count("PASSED") == 2, checked.stdout


def test_a_broken_readme_fails_twine_check(distributions, template_tool, tmp_path):
    """The check can fail: a wheel whose metadata names no description type."""
    [wheel] = [path for path in distributions if path.suffix == ".whl"]
    broken = tmp_path / wheel.name
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(broken, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.endswith("METADATA"):
                data = data.replace(b"Description-Content-Type: text/markdown\n", b"")
            target.writestr(item, data)

    checked = subprocess.run(
        [template_tool("twine"), "check", "--strict", broken], capture_output=True, text=True
    )

    assert checked.returncode != 0, checked.stdout


def test_the_wheel_carries_the_console_script_and_the_proven_range(distributions):
    [wheel] = [path for path in distributions if path.suffix == ".whl"]
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = archive.read(
            f"flask_cf_prometheus-{KIT_VERSION}.dist-info/entry_points.txt"
        ).decode()
        metadata = archive.read(f"flask_cf_prometheus-{KIT_VERSION}.dist-info/METADATA").decode()

    assert "cf-discovery=flask_cf_prometheus.discovery:main" in entry_points.splitlines()
    assert "Requires-Dist: prometheus-client>=0.26,<0.27" in metadata
    assert not [name for name in names if name.startswith("tests/")]


def test_the_release_workflow_publishes_what_it_built_and_checked(template_tool):
    run(
        [template_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows"]
        + [WORKFLOW],
        cwd=TEMPLATE,
    )
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    build = "\n".join(step.get("run", "") for step in jobs["build"]["steps"])
    publish = jobs["publish"]

    assert "python -m build --outdir dist flask-cf-prometheus" in build
    assert "twine check --strict dist/*" in build
    assert publish["needs"] == "build"
    assert publish["if"] == "startsWith(github.ref, 'refs/tags/flask-cf-prometheus-v')"
    # Trusted publishing: an OIDC token, no stored secret.
    assert publish["permissions"] == {"id-token": "write"}
    assert publish["steps"][-1]["uses"] == "pypa/gh-action-pypi-publish@release/v1"
    assert "secrets." not in WORKFLOW.read_text()


def test_the_changelog_and_the_version_agree():
    pyproject = tomllib.loads((KIT / "pyproject.toml").read_text())
    changelog = (KIT / "CHANGELOG.md").read_text()

    assert pyproject["project"]["dynamic"] == ["version"]
    assert re.search(rf"^## {re.escape(KIT_VERSION)}\b", changelog, re.MULTILINE)


def test_dependabot_leaves_prometheus_client_to_the_kit(cookies):
    project = bake(cookies)
    config = yaml.safe_load((project / ".github" / "dependabot.yml").read_text())
    [pip] = [update for update in config["updates"] if update["package-ecosystem"] == "pip"]

    assert {"dependency-name": "prometheus-client"} in pip["ignore"]
    assert set(pip["directories"]) == {"/", "/monitoring"}
    assert "flask-cf-prometheus" in pip["groups"]["kit"]["patterns"]


def test_publishing_as_the_template_readme_says_tags_what_the_workflow_publishes(
    kit_wheels, tmp_path
):
    """The README's tag command, run as written in a clone, pushes the tag whose name the
    workflow's check accepts for the kit's wheel."""
    [tag_command] = sh_block(TEMPLATE / "README.md", "## Publishing the kit\n")
    origin = tmp_path / "origin.git"
    run(["git", "init", "--quiet", "--bare", origin], cwd=tmp_path)
    clone, _ = template_repository(tmp_path / "clone")
    run(["git", "remote", "add", "origin", origin], cwd=clone)

    run(["bash", "-c", tag_command], cwd=clone, env={**os.environ, **GIT_IDENTITY})

    [tag] = run(["git", "tag"], cwd=origin).stdout.split()
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["build"]["steps"]
    [check] = [step for step in steps if step.get("name") == "The tag names the kit's version"]
    (tmp_path / "dist").mkdir()
    shutil.copy(next(kit_wheels.glob("*.whl")), tmp_path / "dist")
    run(["bash", "-c", check["run"]], cwd=tmp_path, env={"GITHUB_REF": f"refs/tags/{tag}"})
    assert check["if"] == "startsWith(github.ref, 'refs/tags/flask-cf-prometheus-v')"
