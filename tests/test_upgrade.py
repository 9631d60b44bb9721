"""A service made before the kit upgrades to the template as it is now by UPGRADING.md:
its commands, run as written, and its one manual step, done as it describes."""

import json
import os
import re
import shlex
import subprocess

from . import tools
from .baking import (
    GIT_IDENTITY,
    KIT_VERSION,
    TEMPLATE,
    clean_venv,
    offline,
    pip_install,
    run,
    template_repository,
)
from .sources import bake_from, edit, git, git_server, run_as_written, track

# The last commit whose services carried the machinery the kit now holds.
PRE_KIT = "16f7f12"
GUIDE = TEMPLATE / "UPGRADING.md"
PYPI = "https://pypi.org/simple/"

# The guide's sh blocks by heading, in the order the test runs them.
RUN = "1. Run the update"
FIND = "2. Find your own lines in metrics.py"
TAKE = "3. Take the template's metrics.py"
PUT_BACK = "4. Put your metrics back"
IMPORTS = "5. Find imports of the removed modules"
COMMIT = "7. Test and commit"
PUBLISHED = "The kit's pin"

# The team's edits, where the pre-kit metrics.py told them to declare a metric.
TEAM_METRIC = 'ORDERS_LISTED = Counter("orders_listed", "Times the orders were listed.")\n'
TEAM_VIEW = '''

@bp.get("/orders")
def orders():
    """The orders, newest first."""
    ORDERS_LISTED.inc()
    return {"orders": []}
'''
TEAM_TEST = """def test_orders_are_listed(client):
    response = client.get("/orders")

    assert response.status_code == 200
    assert response.json == {"orders": []}
"""

# What the update removes and adds, as the guide says.
REMOVED = {
    "payments_api/config.py",
    "payments_api/logs.py",
    "payments_api/metric_files.py",
    "payments_api/metrics_auth.py",
    "payments_api/middleware.py",
    "payments_api/multiprocess.py",
    "monitoring/cf-discovery",
    "monitoring/deploy/Containerfile",
    "monitoring/deploy/cf-discovery.service",
    "tests/test_config.py",
    "tests/test_gunicorn_conf.py",
    "tests/test_logs.py",
    "tests/test_metric_files.py",
    "tests/test_metrics.py",
    "tests/test_metrics_auth.py",
    "tests/test_multiprocess.py",
}
ADDED = {
    "RUNBOOKS.md",
    "monitoring/README.md",
    "monitoring/alertmanager.yml",
    "monitoring/alertmanager-secrets",
    "monitoring/deploy/run-alertmanager",
    "monitoring/requirements.txt",
    "tests/test_alerts.py",
}


def guide_blocks():
    """The commands of each sh block of UPGRADING.md, by the heading above it, in order:
    a command a line, as readme_block reads the service README's."""
    sections = re.split(r"^#+ (.+)\n", GUIDE.read_text(), flags=re.MULTILINE)
    blocks = {}
    for heading, body in zip(sections[1::2], sections[2::2], strict=True):
        for block in re.findall(r"```sh\n(.*?)```", body, re.DOTALL):
            assert heading not in blocks, f"two sh blocks under {heading!r}"
            lines = block.replace("\\\n", " ").splitlines()
            blocks[heading] = [line for line in lines if line.strip()]
    return blocks


def make_pre_kit_template(directory):
    """A template repository holding the checkout's files at PRE_KIT, in one commit."""
    found = subprocess.run(
        ["git", "cat-file", "-e", f"{PRE_KIT}^{{commit}}"], cwd=TEMPLATE, capture_output=True
    )
    if found.returncode != 0:
        tools.missing(
            f"{PRE_KIT} is not in this checkout's history (a shallow clone?): fetch the whole"
            " history, git fetch --unshallow"
        )
    directory.mkdir()
    archive = directory.parent / "pre-kit.tar"
    git("archive", "--output", archive, PRE_KIT, cwd=TEMPLATE)
    run(["tar", "-xf", archive, "-C", directory], cwd=directory)
    git("init", "--quiet", "--initial-branch", "main", cwd=directory)
    git("add", "--all", cwd=directory)
    git("commit", "--quiet", "--message", "Before the kit", cwd=directory)


def make_team_edits(project):
    track(project)
    package = project / "payments_api"
    # "Every metric the service exports is declared at the top of this file."
    edit(
        package / "metrics.py",
        "\n# prometheus_client's process collector",
        f"{TEAM_METRIC}\n# prometheus_client's process collector",
    )
    edit(
        package / "views.py",
        "from . import __version__\n",
        "from . import __version__\nfrom .metrics import ORDERS_LISTED\n",
    )
    (package / "views.py").write_text((package / "views.py").read_text() + TEAM_VIEW)
    (project / "tests" / "test_orders.py").write_text(TEAM_TEST)
    edit(project / "manifest.yml", "    env:\n", '    env:\n      GUNICORN_TIMEOUT: "60"\n')
    git("add", "--all", cwd=project)
    git("commit", "--quiet", "--message", "Orders", cwd=project)


def release(template, served, message):
    git("commit", "--quiet", "--all", "--message", message, cwd=template)
    git("push", "--quiet", served, "main", cwd=template)


def staged(project, status):
    """The paths `git status` shows with this index status."""
    lines = git("status", "--porcelain", "--no-renames", cwd=project).stdout.splitlines()
    return {line[3:] for line in lines if line[:2] == status}


def test_a_service_made_before_the_kit_upgrades_as_the_guide_says(tmp_path):
    tools.require("amtool")  # the service's own suite routes every alert with it
    blocks = guide_blocks()
    assert list(blocks) == [RUN, FIND, TAKE, PUT_BACK, IMPORTS, COMMIT, PUBLISHED]
    template = tmp_path / "template"
    make_pre_kit_template(template)
    served = tmp_path / "served" / "template.git"
    git("clone", "--quiet", "--bare", template, served, cwd=tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    env = {**offline(), **GIT_IDENTITY, "HOME": str(home), "PATH": tools.search_path()}
    with git_server(served.parent) as server:
        (tmp_path / "output").mkdir()
        _, project = bake_from(f"{server}/template.git", "cruft", tmp_path / "output", home)
        make_team_edits(project)
        [found] = run_as_written(blocks[IMPORTS], project, env)
        assert "wsgi.py:" in found.stdout, "the guide's search finds the old imports"
        # The template's release: the checkout's files as they are now.
        now, _ = template_repository(tmp_path / "now")
        git("fetch", "--quiet", now, "main", cwd=template)
        git("read-tree", "-u", "--reset", "FETCH_HEAD", cwd=template)
        release(template, served, "The kit")

        upgrade(project, blocks, env)
        check_the_service(project, tmp_path)
        run_as_written(blocks[COMMIT], project, env)
        assert git("status", "--porcelain", cwd=project).stdout == ""

        edit(template / "cookiecutter.json", '"_kit_index": ""', f'"_kit_index": "{PYPI}"')
        release(template, served, "The kit is on PyPI")
        run_as_written(blocks[PUBLISHED], project, env)

    for name in ("requirements.txt", "monitoring/requirements.txt"):
        lines = (project / name).read_text().splitlines()
        kit = [line for line in lines if "flask-cf-prometheus" in line]
        assert kit == [f"flask-cf-prometheus=={KIT_VERSION}"], name


def upgrade(project, blocks, env):
    """The guide's steps up to the test, the manual one done in code."""
    [updated] = run_as_written(blocks[RUN], project, env)
    assert "Good work!" in updated.stdout
    assert staged(project, "D ") == REMOVED
    assert staged(project, "A ") == ADDED
    assert staged(project, "UU") == {"payments_api/metrics.py"}
    assert not list(project.rglob("*.rej"))

    unmerged, own = run_as_written(blocks[FIND], project, env)
    assert unmerged.stdout == "payments_api/metrics.py\n"
    assert f"\n+{TEAM_METRIC}" in own.stdout

    run_as_written(blocks[TAKE], project, env)
    metrics = project / "payments_api" / "metrics.py"
    edit(
        metrics,
        "from flask_cf_prometheus import Metrics\n",
        "from flask_cf_prometheus import Metrics\nfrom prometheus_client import Counter\n",
    )
    assert metrics.read_text().endswith("init_app = metrics.init_app\n")
    metrics.write_text(metrics.read_text() + "\n" + TEAM_METRIC)
    run_as_written(blocks[PUT_BACK], project, env)

    [found] = run_as_written(blocks[IMPORTS], project, env)
    assert found.stdout == "No import of a removed module\n"

    [command] = blocks[RUN]
    answers = json.loads(shlex.split(command)[-1])
    for link in re.findall(r"runbook_url: (.+)", (project / "monitoring/alerts.yml").read_text()):
        assert link.startswith(answers["runbooks_url"] + "#"), link
    assert (project / "RUNBOOKS.md").is_file()
    assert 'GUNICORN_TIMEOUT: "60"' in (project / "manifest.yml").read_text()
    assert TEAM_VIEW in (project / "payments_api" / "views.py").read_text()


def check_the_service(project, tmp_path):
    """The service's suite passes against the kit from the template's repository, and
    its team's metric is served."""
    python = clean_venv(tmp_path / "venv")
    pip_install(python, "-r", "requirements-dev.txt", cwd=project)
    ran = run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env={**os.environ, "PATH": tools.search_path()},
    )
    assert " passed" in ran.stdout, ran.stdout
    assert "skipped" not in ran.stdout, ran.stdout
    served = run(
        [
            python,
            "-c",
            "from payments_api import create_app\n"
            "app = create_app({'METRICS_BASIC_AUTH': True, 'METRICS_BASIC_AUTH_TOKEN': 't'})\n"
            "client = app.test_client()\n"
            "assert client.get('/orders').status_code == 200\n"
            "print(client.get('/metrics', headers={'Authorization': 'Bearer t'}).text)\n",
        ],
        cwd=project,
    )
    assert "\norders_listed_total 1.0\n" in served.stdout, served.stdout
