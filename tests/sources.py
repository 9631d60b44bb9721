"""Where users bake from, and the commands the service README gives them, run as written.

A template repository is served as users reach one: a bare repository behind a
`file://` URL, or git's own daemon on loopback behind a `git://` URL. Package installs
reach no network: pip's index is replaced, through pip's own environment variables, by
the wheelhouse that `make test` downloads, so a README command runs as it is written.
"""

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from standins.loopback import free_loopback_port

from . import tools
from .baking import GIT_IDENTITY, WHEELHOUSE, offline, run, template_repository


def git(*arguments, cwd):
    return run(["git", *arguments], cwd=cwd, env={**os.environ, **GIT_IDENTITY})


def edit(path, old, new):
    """Replace the first `old` in the file at `path` by `new`; `old` must be there."""
    text = path.read_text()
    assert old in text, f"{old!r} is not in {path}"
    path.write_text(text.replace(old, new, 1))


def track(project):
    """The baked project as its team keeps it: a git repository, one commit as made."""
    git("init", "--quiet", "--initial-branch", "main", cwd=project)
    git("add", "--all", cwd=project)
    git("commit", "--quiet", "--message", "Made from the template", cwd=project)


@contextlib.contextmanager
def git_server(base):
    """git's own daemon serving the repositories under `base` on loopback, read-only: a
    git URL that cruft and pip reach as they would a forge's."""
    port = free_loopback_port()
    daemon = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={base}"]
        + ["--listen=127.0.0.1", f"--port={port}", base],
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert time.monotonic() < deadline, "git daemon did not start"
            time.sleep(0.05)
        yield f"git://127.0.0.1:{port}"
    finally:
        daemon.terminate()
        daemon.wait(10)


def bare_template(directory):
    """This checkout as a bare repository under `directory`: its path and commit."""
    source, commit = template_repository(directory / "source")
    bare = directory / "served" / "template.git"
    git("clone", "--quiet", "--bare", source, bare, cwd=directory)
    return bare, commit


def bake_from(url, tool, output, home, **answers):
    """`cookiecutter` or `cruft create` from `url`, as a user runs it, with `answers`
    over the defaults; what the bake printed, and the project."""
    bin_directory = Path(sys.executable).parent
    if tool == "cookiecutter":
        extra = [f"{name}={value}" for name, value in answers.items()]
        command = [bin_directory / "cookiecutter", "--no-input", "--output-dir", output, url]
        command += extra
    else:
        command = [bin_directory / "cruft", "create", "--no-input", "--output-dir", output, url]
        command += ["--extra-context", repr(answers).replace("'", '"')]
    # cookiecutter clones into ~/.cookiecutters: a home of this test's own.
    baked = run(command, cwd=output.parent, env={**os.environ, **GIT_IDENTITY, "HOME": str(home)})
    return baked.stdout, output / "payments-api"


def sh_block(path, heading):
    """The commands of the first sh block under the heading line that starts with
    `heading` in the Markdown file at `path`, a command a line (a line ending in a
    backslash continues on the next)."""
    text = path.read_text()
    section = text[text.index(f"\n{heading}") :]
    [block] = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)[:1]
    return [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def readme_block(project, heading):
    """The commands of the first sh block under `heading` of the service README."""
    return sh_block(project / "README.md", f"{heading}\n")


def as_a_user(version, bin_directory, wheelhouse=WHEELHOUSE):
    """The environment a README command runs in: `python<version>` on PATH as a stock
    interpreter, and pip's index replaced by `wheelhouse` (None: what the command names)."""
    bin_directory.mkdir(exist_ok=True)
    link = bin_directory / f"python{version}"
    if not link.exists():
        link.symlink_to(tools.python(version))
    env = {**offline(), "PATH": f"{bin_directory}{os.pathsep}{os.environ['PATH']}"}
    if wheelhouse is not None:
        env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse))
    return env


def run_as_written(commands, project, env):
    """Each command through the shell, in the project's directory; the outputs."""
    return [run(["bash", "-c", command], cwd=project, env=env) for command in commands]
