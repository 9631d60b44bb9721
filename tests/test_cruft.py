"""A generated project stays updatable: cruft can create it and check it against the template."""

import os
import subprocess

from .baking import GIT_IDENTITY, clean_venv, pip_install, run, template_repository
from .sources import edit, git, git_server, track


def test_cruft_create_then_check(tmp_path, template_tool):
    template, _ = template_repository(tmp_path / "template")
    env = {**os.environ, **GIT_IDENTITY}
    output = tmp_path / "output"
    output.mkdir()

    run(
        [template_tool("cruft"), "create", "--no-input", "--output-dir", output, template],
        cwd=tmp_path,
        env=env,
    )

    project = output / "payments-api"
    assert (project / ".cruft.json").exists()
    run([template_tool("cruft"), "check"], cwd=project, env=env)


TEAM_VIEW = '''

@bp.get("/orders")
def orders():
    """The team's own view."""
    ORDERS_LISTED.inc()
    return {"orders": []}
'''
TEAM_METRIC = """
ORDERS_LISTED = Counter("orders_listed", "Times the orders were listed.")
"""


def test_cruft_update_brings_a_kit_release_and_keeps_the_teams_edits(tmp_path, template_tool):
    """A service made from the template's git URL, edited by its team; then a template
    release that bumps the kit and changes a generated file. cruft update applies it
    with no rejected hunk, the team's edits stay, and the service's suite passes
    against the new kit, which pip installs from the template's repository."""
    template, first = template_repository(tmp_path / "template")
    served = tmp_path / "served"
    git("clone", "--quiet", "--bare", template, served / "template.git", cwd=tmp_path)
    env = {**os.environ, **GIT_IDENTITY}
    cruft = template_tool("cruft")
    with git_server(served) as server:
        url = f"{server}/template.git"
        run([cruft, "create", "--no-input", "--output-dir", tmp_path, url], cwd=tmp_path, env=env)
        project = check_update(tmp_path, template, first, url, cruft, env)
        check_publishing(project, template, cruft, env)


def check_update(tmp_path, template, first, url, cruft, env):
    project = tmp_path / "payments-api"
    track(project)
    # The team's edits: a view, a metric of its own, a changed setting.
    package = project / "payments_api"
    edit(
        package / "metrics.py",
        "from flask_cf_prometheus import Metrics\n",
        "from flask_cf_prometheus import Metrics\nfrom prometheus_client import Counter\n",
    )
    edit(
        package / "views.py",
        "from . import __version__\n",
        "from . import __version__\nfrom .metrics import ORDERS_LISTED\n",
    )
    for name, added in (("metrics.py", TEAM_METRIC), ("views.py", TEAM_VIEW)):
        (package / name).write_text((package / name).read_text() + added)
    edit(project / "manifest.yml", "    env:\n", '    env:\n      GUNICORN_TIMEOUT: "60"\n')
    git("commit", "--quiet", "--all", "--message", "Orders", cwd=project)
    # The template's release: the kit at 0.2.0, and a generated file changed.
    kit_init = template / "flask-cf-prometheus" / "src" / "flask_cf_prometheus" / "__init__.py"
    edit(kit_init, '__version__ = "0.1.0"', '__version__ = "0.2.0"')
    slug = template / "{{cookiecutter.project_slug}}"
    for name in ("requirements.txt", "monitoring/requirements.txt"):
        # The service's pin carries the otlp extra in Jinja; the version follows it.
        edit(slug / name, "==0.1.0", "==0.2.0")
    edit(
        slug / "manifest.yml",
        "    health-check-type: http\n",
        "    health-check-type: http\n    health-check-invocation-timeout: 5\n",
    )
    git("commit", "--quiet", "--all", "--message", "Kit 0.2.0", cwd=template)
    git("push", "--quiet", tmp_path / "served" / "template.git", "main", cwd=template)
    second = git("rev-parse", "HEAD", cwd=template).stdout.strip()

    run([cruft, "update", "--skip-apply-ask"], cwd=project, env=env)

    status = git("status", "--porcelain", cwd=project).stdout
    assert not list(project.rglob("*.rej")), status
    conflicted = subprocess.run(
        ["git", "grep", "-l", "-e", "^<<<<<<< ", "-e", "^>>>>>>> "],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert conflicted.returncode == 1, f"conflict markers in {conflicted.stdout}"
    requirement = f"flask-cf-prometheus @ git+{url}@{second}#subdirectory=flask-cf-prometheus"
    for name in ("requirements.txt", "monitoring/requirements.txt"):
        lines = (project / name).read_text().splitlines()
        assert requirement in lines, name
        assert not [line for line in lines if first in line], name
    manifest = (project / "manifest.yml").read_text()
    assert "health-check-invocation-timeout: 5" in manifest, "the template's change"
    assert 'GUNICORN_TIMEOUT: "60"' in manifest, "the team's setting"
    assert TEAM_VIEW in (project / "payments_api" / "views.py").read_text()
    assert TEAM_METRIC in (project / "payments_api" / "metrics.py").read_text()
    # The kit from the template's repository, the rest (and flit_core, to build the kit)
    # from the wheelhouse.
    python = clean_venv(tmp_path / "venv")
    pip_install(python, "-r", "requirements-dev.txt", cwd=project)
    version = run(
        [python, "-c", "import flask_cf_prometheus; print(flask_cf_prometheus.__version__)"],
        cwd=project,
    )
    ran = run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project)
    assert version.stdout.strip() == "0.2.0"
    assert " passed" in ran.stdout
    answered = run(
        [
            python,
            "-c",
            "from payments_api import create_app\n"
            "print(create_app().test_client().get('/orders').json)",
        ],
        cwd=project,
    )
    assert answered.stdout.strip() == "{'orders': []}"
    return project


def check_publishing(project, template, cruft, env):
    """The template's owner publishes the kit and sets _kit_index: the next `cruft update`
    (which takes private variables from the template, never from .cruft.json) turns the
    git reference into the version pin from that index."""
    git("add", "--all", cwd=project)
    git("commit", "--quiet", "--message", "Kit 0.2.0", cwd=project)
    edit(
        template / "cookiecutter.json",
        '"_kit_index": ""',
        '"_kit_index": "https://pypi.org/simple/"',
    )
    git("commit", "--quiet", "--all", "--message", "The kit is on PyPI", cwd=template)
    git("push", "--quiet", project.parent / "served" / "template.git", "main", cwd=template)

    run([cruft, "update", "--skip-apply-ask"], cwd=project, env=env)

    for name in ("requirements.txt", "monitoring/requirements.txt"):
        kit_lines = [
            line
            for line in (project / name).read_text().splitlines()
            if "flask-cf-prometheus" in line
        ]
        assert kit_lines == ["flask-cf-prometheus==0.2.0"], name
