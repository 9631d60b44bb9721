"""The newer Prometheus that the monitoring tests fetch is checked the way apt checks it."""

import hashlib
import os
import shutil
import subprocess

import pytest

from . import modern_prometheus
from .modern_prometheus import (
    ARCHIVE,
    SUITE,
    TOOLS,
    _download,
    check_sha256,
    modern_prometheus_bin,
    package_index,
    release_sha256,
    verified_release,
    version,
)


@pytest.fixture(scope="module")
def signed_release():
    """Debian's InRelease: the one the last fetch kept, or a fresh one."""
    kept = TOOLS / f"prometheus-{SUITE}" / "InRelease"
    return kept.read_bytes() if kept.exists() else _download(f"{ARCHIVE}/dists/{SUITE}/InRelease")


@pytest.fixture(scope="module")
def own_keys(tmp_path_factory):
    """A keyring with a current key and one that expired in 2020, and a sign(text, key)."""
    gpg = shutil.which("gpg")
    assert gpg, "gpg is not installed: apt-get install gnupg (see .ci/run)"
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    environ = {**os.environ, "GNUPGHOME": str(home)}
    in_2020 = ["--faked-system-time", "20200101T000000"]

    def run_gpg(*arguments, **options):
        command = [gpg, "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
        return subprocess.run(
            [*command, *arguments], env=environ, check=True, capture_output=True, **options
        ).stdout

    def sign(text, key):
        time = in_2020 if key == "expired" else []
        return run_gpg(*time, "--local-user", key, "--clearsign", input=text.encode())

    try:
        run_gpg(*in_2020, "--quick-gen-key", "expired", "ed25519", "sign", "1d")
        run_gpg("--quick-gen-key", "current", "ed25519", "sign", "1d")
        keyring = home / "keyring.gpg"
        keyring.write_bytes(run_gpg("--export", "expired", "current"))
        yield keyring, sign
    finally:
        # gpg started an agent for the keys.
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=environ, check=False)


def test_a_release_signed_by_debian_is_accepted(signed_release):
    release = verified_release(signed_release)
    assert f"\nSuite: {SUITE}\n" in f"\n{release}"
    assert len(release_sha256(release, package_index())) == 64


def test_a_changed_release_is_refused(signed_release):
    # Point the index's sum elsewhere, as an attacker serving a different index would.
    text = signed_release.decode()
    digest = release_sha256(verified_release(signed_release), package_index())
    forged = text.replace(digest, hashlib.sha256(b"another index").hexdigest())
    assert forged != text
    with pytest.raises(AssertionError, match="not signed by a Debian archive key"):
        verified_release(forged.encode())


def test_an_unsigned_release_is_refused(signed_release):
    body = verified_release(signed_release)
    with pytest.raises(AssertionError, match="not signed by a Debian archive key"):
        verified_release(body.encode())


def test_only_the_signed_text_is_read(signed_release):
    index = package_index()
    genuine = release_sha256(verified_release(signed_release), index)
    planted = f"SHA256:\n {hashlib.sha256(b'planted').hexdigest()} 0 {index}\n\n".encode()

    assert release_sha256(verified_release(planted + signed_release), index) == genuine


def test_a_release_signed_by_an_expired_key_is_refused(own_keys, monkeypatch):
    keyring, sign = own_keys
    monkeypatch.setattr(modern_prometheus, "KEYRING", keyring)
    release = f"Suite: {SUITE}\n"

    # gpgv itself exits 0 for the expired key; only its status lines tell.
    assert verified_release(sign(release, "current")) == release
    with pytest.raises(AssertionError, match="not signed by a Debian archive key") as refused:
        verified_release(sign(release, "expired"))
    assert " EXPKEYSIG " in str(refused.value)


def test_a_release_for_another_suite_is_refused(own_keys, monkeypatch):
    keyring, sign = own_keys
    monkeypatch.setattr(modern_prometheus, "KEYRING", keyring)

    with pytest.raises(AssertionError, match="InRelease is for suite stable"):
        verified_release(sign("Suite: stable\n", "current"))


def test_a_file_is_refused_unless_its_sum_matches():
    check_sha256("index", b"index", hashlib.sha256(b"index").hexdigest())
    with pytest.raises(AssertionError, match="index: SHA-256"):
        check_sha256("index", b"index!", hashlib.sha256(b"index").hexdigest())


def test_the_fetched_prometheus_is_new_enough():
    assert version(modern_prometheus_bin() / "prometheus")[:2] >= (2, 55)
