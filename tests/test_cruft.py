"""A generated project stays updatable: cruft can create it and check it against the template."""

import os
import shutil

from .conftest import TEMPLATE, run

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Template Test",
    "GIT_AUTHOR_EMAIL": "template-test@localhost",
    "GIT_COMMITTER_NAME": "Template Test",
    "GIT_COMMITTER_EMAIL": "template-test@localhost",
}


def test_cruft_create_then_check(tmp_path, template_tool):
    template = tmp_path / "template"
    shutil.copytree(
        TEMPLATE,
        template,
        ignore=shutil.ignore_patterns(".git", ".venv", "build", "__pycache__", ".*_cache"),
    )
    env = {**os.environ, **GIT_IDENTITY}
    run(["git", "init", "--quiet", "--initial-branch", "main"], cwd=template, env=env)
    run(["git", "add", "--all"], cwd=template, env=env)
    run(["git", "commit", "--quiet", "--message", "template"], cwd=template, env=env)
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
