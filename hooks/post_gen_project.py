"""Remove what the answers leave unused, and tell the service team what to do next.

Deterministic on purpose: no git init, no network, no randomness, so that
`cruft update` can run it again and get the same project.
"""

import json
import shutil
from pathlib import Path


def remove_unused(answers, project=Path()):
    if answers["metrics_auth"] != "basic_auth":
        # Prometheus sends no credentials to an IP whitelist: no secrets to keep.
        shutil.rmtree(project / "monitoring" / "secrets")


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
    print(next_steps(answers))
