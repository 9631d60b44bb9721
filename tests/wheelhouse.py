"""Download, before the tests run, every wheel their installs need, so that no test
reaches a network: `make test` runs this with the package index the machine has, and
the tests install with `pip --no-index --find-links` from what it downloaded.

    python tests/wheelhouse.py DIRECTORY

What a baked service installs (its requirements-dev.txt, the kit aside: the tests build
it from the checkout) for every Python the python_version prompt offers, the kit's own
test requirements, its build backend (pip builds it from git in the install tests), and
every prometheus_client release in the kit's declared range (test_kit_versions.py).
"""

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import Version

TEMPLATE = Path(__file__).resolve().parents[1]
SERVICE = TEMPLATE / "{{cookiecutter.project_slug}}"
KIT = TEMPLATE / "flask-cf-prometheus"
OFFERED = json.loads((TEMPLATE / "cookiecutter.json").read_text())["python_version"]


def pinned(path):
    """The pinned requirements of a requirements file, the kit and included files aside."""
    return [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith(("#", "-r", "{%", "flask-cf-prometheus"))
    ]


def build_backend():
    """The kit's build backend, as the template's requirements-test.txt pins it."""
    [flit_core] = [
        line for line in pinned(TEMPLATE / "requirements-test.txt") if line.startswith("flit_core")
    ]
    return flit_core


def prometheus_client_range():
    dependencies = tomllib.loads((KIT / "pyproject.toml").read_text())["project"]["dependencies"]
    [declared] = [item for item in dependencies if item.startswith("prometheus-client")]
    return SpecifierSet(declared.removeprefix("prometheus-client"))


def releases_in_range(pip):
    listed = subprocess.run(
        [*pip, "index", "versions", "prometheus-client"], capture_output=True, text=True, check=True
    ).stdout
    [versions] = re.findall(r"Available versions: (.+)", listed)
    in_range = prometheus_client_range()
    return sorted((v for v in versions.split(", ") if Version(v) in in_range), key=Version)


def main(directory):
    pip = [sys.executable, "-m", "pip"]
    requirements = [
        *pinned(SERVICE / "requirements.txt"),
        *pinned(SERVICE / "requirements-dev.txt"),
        *pinned(KIT / "requirements-test.txt"),
        build_backend(),
    ]
    for version in OFFERED:
        # Wheels only, for that Python on this platform: what its venv installs.
        subprocess.run(
            [*pip, "download", "--quiet", "--dest", directory, "--only-binary", ":all:"]
            + ["--python-version", version, *sorted(set(requirements))],
            check=True,
        )
    for release in releases_in_range(pip):
        subprocess.run(
            [*pip, "download", "--quiet", "--dest", directory, "--no-deps"]
            + [f"prometheus-client=={release}"],
            check=True,
        )


if __name__ == "__main__":
    main(sys.argv[1])
