"""Pin the kit where the template's owner publishes it, or where the template came from,
and tell the service team what to do next.

Deterministic on purpose: no git init, no network, no randomness, so that
`cruft update` can run it again and get the same project (the commit it pins the kit at
is the one cruft records).
"""

import json
import re
import subprocess
from pathlib import Path

KIT = "flask-cf-prometheus"
# The files that pin the kit, each by a line `flask-cf-prometheus==X.Y.Z`, or with the
# extra for traces, `flask-cf-prometheus[otlp]==X.Y.Z`.
KIT_PINS = ("requirements.txt", "monitoring/requirements.txt")
PYPI = "https://pypi.org/simple/"
PIN = re.compile(rf"^({KIT}(?:\[[a-z,]+\])?)==(\S+)$", re.M)


def template_repository(answers):
    """The git URL and commit the service was made from, or None.

    cruft records both as `_template` and `_commit` (a `file://` URL or a path becomes an
    absolute path). cookiecutter clones a URL into `_repo_dir`; given a directory, it
    renders the files as they are, which no commit may hold.
    """
    template = answers.get("_template", "")
    if not template:
        return None
    if answers.get("_commit"):
        url, commit = template, answers["_commit"]
    elif Path(template).expanduser().is_dir():
        return None
    else:
        repo_dir = answers.get("_repo_dir")
        url = _git(repo_dir, "remote", "get-url", "origin")
        commit = _git(repo_dir, "rev-parse", "HEAD")
    if not (url and commit):
        return None
    return url, commit


def _git(directory, *arguments):
    if not directory:
        return None
    try:
        completed = subprocess.run(
            ["git", "-C", directory, *arguments], capture_output=True, text=True, check=False
        )
    except OSError:  # no git
        return None
    return completed.stdout.strip() if completed.returncode == 0 else None


def pip_url(url):
    """A git URL as pip reads it: `git+` and a scheme (scp-like `git@host:path` is ssh).

    A path, or a `file:` URL, names the host: pip 23.2, which Python 3.11's and 3.12's venv
    install, refuses `file:///` (24.2 takes it).
    """
    url = url.removeprefix("git+")
    scp = re.fullmatch(r"([\w.-]+@[\w.-]+):(?!//)(.+)", url)
    if scp:
        url = f"ssh://{scp[1]}/{scp[2]}"
    elif url.startswith("file:///"):
        url = "file://localhost/" + url.removeprefix("file:///")
    elif "://" not in url:
        url = "file://localhost" + str(Path(url).expanduser().resolve())
    return f"git+{url}"


def kit_version(project=Path()):
    [(_, version)] = PIN.findall((project / KIT_PINS[0]).read_text())
    return version


def pin_kit(answers, project=Path()):
    """Pin the kit where the template's owner publishes it, and say how it installs.

    With `_kit_index` set, the kit is on that index: the version pin stays, and an index
    other than PyPI heads each requirements file. Before that, the pin is the template's
    repository at the commit the service was made from. Returns one line for the team.
    """
    version = kit_version(project)
    index = answers.get("_kit_index", "")
    if index:
        if index.rstrip("/") != PYPI.rstrip("/"):
            for name in KIT_PINS:
                path = project / name
                path.write_text(f"--index-url {index}\n" + path.read_text())
        return None
    repository = template_repository(answers)
    if repository is None:
        return (
            f"requirements.txt pins {KIT}=={version}, which no package index serves yet: "
            "bake from the template's git URL, or see Publishing the kit in its README."
        )
    url, commit = repository
    requirement = f"{KIT} @ {pip_url(url)}@{commit}#subdirectory={KIT}"

    def from_repository(pin):
        return (
            f"# {pin[0]}, from the template's repository until it is on an index:\n"
            + requirement.replace(KIT, pin[1], 1)
        )

    for name in KIT_PINS:
        path = project / name
        path.write_text(PIN.sub(from_repository, path.read_text()))
    if "://" in url and not url.startswith("file:"):
        return f"requirements.txt installs {KIT} from the template's repository: {requirement}"
    return (
        f"requirements.txt installs {KIT} from {url}, on this machine only: "
        "cf push needs a URL its staging reaches, or the kit on an index."
    )


def next_steps(answers):
    slug = answers["project_slug"]
    return "\n".join(
        [
            f"Created {slug}. Next steps:",
            f"  cd {slug}",
            f"  python{answers['python_version']} -m venv .venv",
            "  .venv/bin/pip install -r requirements-dev.txt",
            "  .venv/bin/pytest && .venv/bin/ruff check .",
            f"  .venv/bin/python -m {answers['package_name']} --bind 127.0.0.1:8000",
            "  cf push",
            "README.md explains how to protect the metrics endpoint; monitoring/ holds the",
            "Prometheus configuration, alert rules and Grafana dashboard for the service.",
        ]
    )


if __name__ == "__main__":
    answers = json.loads(r"""{{ cookiecutter | tojson }}""")
    print(next_steps(answers))
    print(pin_kit(answers) or f"requirements.txt pins {KIT}=={kit_version()}.")
