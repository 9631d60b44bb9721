"""Grafana's published dashboard types (@grafana/schema) and TypeScript, from npm.

tests/grafana holds the package and lock files and types.ts. `make test` installs the
packages with `npm ci` (which checks each against the lock's integrity sums) into
build/tools/grafana-types, again whenever either file changes; the tests only use them.
"""

import json
import shutil
import subprocess
from pathlib import Path

from .tools import missing, require

SOURCE = Path(__file__).resolve().parent / "grafana"
MANIFESTS = ("package.json", "package-lock.json")
INSTALLED = Path(__file__).resolve().parents[1] / "build" / "tools" / "grafana-types"


def grafana_types():
    """The directory holding types.ts, with its packages installed beside it."""
    require("npm")
    # The Makefile copies the manifests in, runs npm ci, and writes .installed last.
    current = (INSTALLED / ".installed").exists() and all(
        (INSTALLED / name).read_bytes() == (SOURCE / name).read_bytes() for name in MANIFESTS
    )
    if not current:
        missing("Grafana's types are not installed from tests/grafana: run make test")
    shutil.copy(SOURCE / "types.ts", INSTALLED / "types.ts")
    return INSTALLED


def grafana_version():
    """The Grafana release whose types these are."""
    return json.loads((SOURCE / "package.json").read_text())["dependencies"]["@grafana/schema"]


def typecheck(source, directory):
    """Run tsc, strict, on `source` written to `directory`; return (exit code, output)."""
    checked = directory / "check.ts"
    checked.write_text(source)
    tsc = grafana_types() / "node_modules" / ".bin" / "tsc"
    flags = ["--noEmit", "--strict", "--module", "esnext", "--moduleResolution", "bundler"]
    result = subprocess.run(
        [tsc, *flags, "--target", "es2022", checked],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result.returncode, result.stdout + result.stderr
