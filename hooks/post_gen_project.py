"""Remove what the answers leave unused, pin the kit where the template came from, and
tell the service team what to do next.

Deterministic on purpose: no git init, no network, no randomness, so that
`cruft update` can run it again and get the same project (the commit it pins the kit at
is the one cruft records).
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

KIT = "flask-cf-prometheus"
# The files that pin the kit, each by a line `flask-cf-prometheus==X.Y.Z`.
KIT_PINS = ("requirements.txt", "monitoring/requirements.txt")


def remove_unused(answers, project=Path()):
    if answers["metrics_auth"] != "basic_auth" and answers["alert_receiver"] == "none":
        # Prometheus sends no credentials to an IP whitelist, and Alertmanager sends
        # nothing anywhere: no secrets to keep.
        shutil.rmtree(project / "monitoring" / "secrets")


def template_repository(answers):
    """The git URL and commit the service was made from; None when it was made from a
    directory (a local checkout), or from an archive or a repository that git cannot
    read."""
    template = answers.get("_template", "")
    if not template or Path(template).expanduser().is_dir():
        return None
    # cookiecutter clones a URL (its abbreviations expanded) into _repo_dir; cruft clones
    # one too, and records its commit as _commit.
    repo_dir = answers.get("_repo_dir")
    url = _git(repo_dir, "remote", "get-url", "origin") if repo_dir else template
    commit = answers.get("_commit") or _git(repo_dir, "rev-parse", "HEAD")
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
    """A git URL as pip reads it: `git+` and a scheme (scp-like `git@host:path` is ssh)."""
    url = url.removeprefix("git+")
    scp = re.fullmatch(r"([\w.-]+@[\w.-]+):(?!//)(.+)", url)
    if scp:
        url = f"ssh://{scp[1]}/{scp[2]}"
    return f"git+{url}"


def pin_kit(answers, project=Path()):
    """Where the kit is on no index yet: a direct reference to the template's repository
    at the commit the service was made from, in place of the version pin."""
    repository = template_repository(answers)
    if repository is None:
        return None
    url, commit = repository
    requirement = f"{KIT} @ {pip_url(url)}@{commit}#subdirectory={KIT}"
    for name in KIT_PINS:
        path = project / name
        lines = [
            requirement if line.startswith(f"{KIT}==") else line
            for line in path.read_text().splitlines()
        ]
        path.write_text("\n".join(lines) + "\n")
    return requirement


def next_steps(answers):
    slug = answers["project_slug"]
    return "\n".join(
        [
            f"Created {slug}. Next steps:",
            f"  cd {slug}",
            "  python3 -m venv .venv && .venv/bin/pip install -r requirements-dev.txt",
            "  .venv/bin/pytest && .venv/bin/ruff check .",
            f"  .venv/bin/python -m {answers['package_name']} --bind 127.0.0.1:8000",
            "  cf push",
            "README.md explains how to protect the metrics endpoint; monitoring/ holds the",
            "Prometheus configuration, alert rules and Grafana dashboard for the service.",
        ]
    )


if __name__ == "__main__":
    answers = json.loads(r"""{{ cookiecutter | tojson }}""")
    remove_unused(answers)
    pinned = pin_kit(answers)
    print(next_steps(answers))
    if pinned:
        print(f"requirements.txt installs the kit from the template's repository: {pinned}")
