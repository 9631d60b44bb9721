"""Prometheus and promtool 2.55 or later, for the scrape configuration that uses http_headers.

Debian 12's `prometheus` (2.42, which .ci/run installs for the other tests) rejects
http_headers. When the one on PATH is too old, Debian unstable's packages are fetched
over HTTPS from the Debian archive, checked against the SHA-256 sums of its index, and
unpacked (not installed) under build/tools, where later runs find them.
"""

import hashlib
import lzma
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

OLDEST = (2, 55)
ARCHIVE = "https://deb.debian.org/debian"
SUITE = "unstable"
PACKAGES = ("prometheus", "promtool")
TOOLS = Path(__file__).resolve().parents[1] / "build" / "tools"


def version(binary):
    output = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"version (\d+)\.(\d+)\.(\d+)", output)
    return tuple(int(part) for part in found.groups())


def modern_prometheus_bin():
    """A directory holding `prometheus` and `promtool`, both 2.55 or later."""
    on_path = shutil.which("prometheus")
    if on_path and shutil.which("promtool") and version(on_path)[:2] >= OLDEST:
        return Path(on_path).parent
    unpacked = TOOLS / f"prometheus-{SUITE}"
    binaries = unpacked / "usr" / "bin"
    if not (binaries / "prometheus").exists() or not (binaries / "promtool").exists():
        _fetch(unpacked)
    found = version(binaries / "prometheus")
    assert found[:2] >= OLDEST, f"Debian {SUITE} has Prometheus {found}, older than {OLDEST}"
    return binaries


def _fetch(destination):
    architecture = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    index = f"{ARCHIVE}/dists/{SUITE}/main/binary-{architecture}/Packages.xz"
    with urllib.request.urlopen(index, timeout=120) as response:
        stanzas = lzma.decompress(response.read()).decode().split("\n\n")
    staging = destination.with_name(destination.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for package in PACKAGES:
        fields = _stanza(stanzas, package)
        with urllib.request.urlopen(f"{ARCHIVE}/{fields['Filename']}", timeout=300) as response:
            content = response.read()
        digest = hashlib.sha256(content).hexdigest()
        assert digest == fields["SHA256"], f"{fields['Filename']}: SHA-256 {digest} does not match"
        deb = staging / f"{package}.deb"
        deb.write_bytes(content)
        subprocess.run(["dpkg-deb", "--extract", deb, staging], check=True)
        deb.unlink()
    shutil.rmtree(destination, ignore_errors=True)
    staging.rename(destination)


def _stanza(stanzas, package):
    for stanza in stanzas:
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " "
        )
        if fields.get("Package") == package:
            return fields
    raise AssertionError(f"Debian {SUITE} has no package {package}")
