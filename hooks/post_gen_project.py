"""Tell the service team what to do next.

Deterministic on purpose: no git init, no network, no randomness, so that
`cruft update` can run it again and get the same project.
"""

import json


def next_steps(answers):
    slug = answers["project_slug"]
    return "\n".join(
        [
            f"Created {slug}. Next steps:",
            f"  cd {slug}",
            "  python3 -m venv .venv && .venv/bin/pip install -r requirements-dev.txt",
            "  .venv/bin/pytest && .venv/bin/ruff check .",
            "  .venv/bin/gunicorn --config gunicorn.conf.py --bind 127.0.0.1:8000 wsgi:app",
            "  cf push",
            "README.md explains how to protect the metrics endpoint and point Prometheus at it.",
        ]
    )


if __name__ == "__main__":
    print(next_steps(json.loads(r"""{{ cookiecutter | tojson }}""")))
