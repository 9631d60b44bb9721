"""A generated project stays updatable: cruft can create it and check it against the template."""

import os

from .conftest import GIT_IDENTITY, run, template_repository


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
