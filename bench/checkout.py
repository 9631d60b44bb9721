"""What the benchmarks take from this checkout: a baked service, with the kit's wheel
built from here, and the kit's cf-discovery run from here."""

import subprocess
import sys
import venv
from pathlib import Path

from cookiecutter.main import cookiecutter

TEMPLATE = Path(__file__).resolve().parents[1]
KIT = TEMPLATE / "flask-cf-prometheus"
# cf-discovery needs only the standard library: run from the kit's source, with any Python.
DISCOVERY = [sys.executable, "-m", "flask_cf_prometheus.discovery"]
# The tests' helpers (tests.service, tests.prometheus_server) and the kit's stand-ins
# (standins), for the benchmarks to start services and stand in for Cloud Foundry as the
# tests do.
sys.path[:0] = [str(TEMPLATE), str(KIT / "tests")]


def with_kit_source(environ):
    """`environ` with the kit's source on the path, for DISCOVERY."""
    return {**environ, "PYTHONPATH": str(KIT / "src")}


def baked_service(workdir, *requirements, **answers):
    """A project baked into `workdir` with `answers` over the defaults, and the Python of
    a virtual environment with its requirements (the kit's wheel built from this
    checkout, which its version pin finds) and `requirements`."""
    project = Path(
        cookiecutter(str(TEMPLATE), no_input=True, output_dir=str(workdir), extra_context=answers)
    )
    environment = workdir / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    kit_wheels = workdir / "kit-wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-build-isolation", "--no-deps"]
        + ["--wheel-dir", kit_wheels, KIT],
        check=True,
    )
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--find-links", kit_wheels]
        + ["-r", project / "requirements.txt", *requirements],
        check=True,
    )
    return project, python
