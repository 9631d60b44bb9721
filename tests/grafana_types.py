"""Grafana's published dashboard types (@grafana/schema) and TypeScript, from npm.

tests/grafana holds the package and lock files and types.ts; they are installed with
`npm ci` (which checks every package against the lock's integrity sums, and the lock
against package.json) under build/tools, where later runs find them, and installed again
when either file changes.
"""

import functools
import json
import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "grafana"
MANIFESTS = ("package.json", "package-lock.json")
INSTALLED = Path(__file__).resolve().parents[1] / "build" / "tools" / "grafana-types"


@functools.cache
def grafana_types():
    """The directory holding types.ts, with its packages installed beside it; checked (and
    installed if need be) once per test run."""
    npm = shutil.which("npm")
    assert npm, "npm is not installed: apt-get install nodejs npm (see .ci/run)"
    # What was installed from: written last, inside node_modules, which npm ci empties
    # first, so an install that failed half-way is never taken for a finished one.
    wanted = b"".join((SOURCE / name).read_bytes() for name in MANIFESTS)
    installed_from = INSTALLED / "node_modules" / ".installed-from"
    if not installed_from.exists() or installed_from.read_bytes() != wanted:
        if INSTALLED.exists():
            shutil.rmtree(INSTALLED)
        INSTALLED.mkdir(parents=True)
        for name in MANIFESTS:
            shutil.copy(SOURCE / name, INSTALLED / name)
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=INSTALLED,
            check=True,
            timeout=300,
        )
        installed_from.write_bytes(wanted)
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
