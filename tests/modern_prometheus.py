"""Prometheus and promtool 2.55 or later, for the scrape configuration that uses http_headers.

Debian 12's `prometheus` (2.42, which .ci/run installs for the other tests) rejects
http_headers. When the one on PATH is too old, Debian unstable's packages are fetched
from the Debian archive and checked as apt checks them: the suite's InRelease file must
carry a good signature from an unexpired, unrevoked key in the machine's
debian-archive-keyring and be for this suite; from its signed text only, the package
index must match the SHA-256 sum InRelease gives, and each package the sum the index
gives. They are then unpacked (not installed) under build/tools, where later runs find
them. Unlike apt, Valid-Until is not enforced: the archive mirror reachable here serves
a fixed snapshot whose InRelease is past that date.
"""

import functools
import hashlib
import lzma
import re
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

OLDEST = (2, 55)
ARCHIVE = "https://deb.debian.org/debian"
SUITE = "unstable"
PACKAGES = ("prometheus", "promtool")
STATUS = "[GNUPG:] "  # how gpgv's machine-readable status lines begin
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
TOOLS = Path(__file__).resolve().parents[1] / "build" / "tools"


def version(binary):
    output = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"version (\d+)\.(\d+)\.(\d+)", output)
    return tuple(int(part) for part in found.groups())


@functools.cache
def modern_prometheus_bin():
    """A directory holding `prometheus` and `promtool`, both 2.55 or later; found (and
    fetched if need be) once per test run."""
    on_path = shutil.which("prometheus")
    if on_path and shutil.which("promtool") and version(on_path)[:2] >= OLDEST:
        return Path(on_path).parent
    unpacked = TOOLS / f"prometheus-{SUITE}"
    binaries = unpacked / "usr" / "bin"
    fetched = [unpacked / "InRelease", *(binaries / name for name in PACKAGES)]
    if not all(path.exists() for path in fetched):
        _fetch(unpacked)
    found = version(binaries / "prometheus")
    assert found[:2] >= OLDEST, f"Debian {SUITE} has Prometheus {found}, older than {OLDEST}"
    return binaries


def _fetch(destination):
    signed = _download(f"{ARCHIVE}/dists/{SUITE}/InRelease")
    release = verified_release(signed)
    index = package_index()
    digest = release_sha256(release, index)
    # By its sum, as apt does (Acquire-By-Hash): the archive may publish a newer index
    # under the plain name between the two downloads.
    by_hash = f"{index.rpartition('/')[0]}/by-hash/SHA256/{digest}"
    packages = _download(f"{ARCHIVE}/dists/{SUITE}/{by_hash}")
    check_sha256(index, packages, digest)
    stanzas = lzma.decompress(packages).decode().split("\n\n")
    staging = destination.with_name(destination.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for package in PACKAGES:
        fields = _stanza(stanzas, package)
        content = _download(f"{ARCHIVE}/{fields['Filename']}")
        check_sha256(fields["Filename"], content, fields["SHA256"])
        deb = staging / f"{package}.deb"
        deb.write_bytes(content)
        subprocess.run(["dpkg-deb", "--extract", deb, staging], check=True)
        deb.unlink()
    (staging / "InRelease").write_bytes(signed)  # kept as the record of what was checked
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


def package_index():
    """The path, under the suite's directory, of the index of this machine's packages."""
    architecture = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return f"main/binary-{architecture}/Packages.xz"


def _download(url):
    with urllib.request.urlopen(url, timeout=300) as response:
        return response.read()


def verified_release(signed):
    """The signed text of an InRelease file, if apt would trust it: signed by a key in the
    Debian archive keyring, none of whose signatures is bad, for the suite asked for.

    Like apt, gpgv's exit code is not enough: gpgv accepts signatures by expired or
    revoked keys, which its status lines tell apart (GOODSIG against EXPKEYSIG or
    REVKEYSIG). The checks raise rather than assert, so that `python -O` keeps them.
    """
    if not KEYRING.exists():
        raise AssertionError(f"{KEYRING} is missing: apt-get install debian-archive-keyring")
    with tempfile.TemporaryDirectory() as scratch:
        text = Path(scratch) / "Release"
        gpgv = subprocess.run(
            ["gpgv", "--status-fd", "1", "--keyring", KEYRING, "--output", text, "-"],
            input=signed,
            capture_output=True,
        )
        statuses = [
            line.split()[1] for line in gpgv.stdout.decode().splitlines() if line.startswith(STATUS)
        ]
        if gpgv.returncode != 0 or "GOODSIG" not in statuses or "BADSIG" in statuses:
            raise AssertionError(
                f"InRelease is not signed by a Debian archive key (gpgv: {' '.join(statuses)}):"
                f"\n{gpgv.stderr.decode()}"
            )
        release = text.read_text()
    suite = re.search(r"^Suite: (\S+)$", release, re.MULTILINE)
    if not suite or suite[1] != SUITE:
        raise AssertionError(f"InRelease is for suite {suite and suite[1]}, not {SUITE}")
    return release


def release_sha256(release, path):
    """The SHA-256 sum an InRelease text gives for `path`."""
    section = release.partition("\nSHA256:\n")[2]
    for line in section.splitlines():
        if not line.startswith(" "):
            break
        digest, _size, name = line.split()
        if name == path:
            return digest
    raise AssertionError(f"InRelease of Debian {SUITE} lists no SHA-256 sum for {path}")


def check_sha256(name, content, expected):
    digest = hashlib.sha256(content).hexdigest()
    if digest != expected:
        raise AssertionError(f"{name}: SHA-256 {digest}, expected {expected}")
