"""The newer Prometheus that the monitoring tests fetch is checked the way apt checks it."""

import hashlib

import pytest

from .modern_prometheus import (
    SUITE,
    TOOLS,
    check_sha256,
    modern_prometheus_bin,
    package_index,
    release_sha256,
    verified_release,
    version,
)


@pytest.fixture(scope="module")
def signed_release():
    fetched = TOOLS / f"prometheus-{SUITE}" / "InRelease"
    assert modern_prometheus_bin() == fetched.parent / "usr" / "bin", (
        "needs a prometheus older than 2.55 on PATH (Debian 12's, see .ci/run), so one is fetched"
    )
    return fetched.read_bytes()


def test_a_release_signed_by_debian_is_accepted(signed_release):
    release = verified_release(signed_release)
    assert f"\nSuite: {SUITE}\n" in f"\n{release}"
    assert len(release_sha256(release, package_index())) == 64


def test_a_changed_release_is_refused(signed_release):
    # Point the index's sum elsewhere, as an attacker serving a different index would.
    text = signed_release.decode()
    release = verified_release(signed_release)
    digest = release_sha256(release, package_index())
    forged = text.replace(digest, hashlib.sha256(b"another index").hexdigest())
    assert forged != text
    with pytest.raises(AssertionError, match="not signed by a Debian archive key"):
        verified_release(forged.encode())


def test_an_unsigned_release_is_refused(signed_release):
    body = verified_release(signed_release)
    with pytest.raises(AssertionError, match="not signed by a Debian archive key"):
        verified_release(body.encode())


def test_a_file_is_refused_unless_its_sum_matches():
    check_sha256("index", b"index", hashlib.sha256(b"index").hexdigest())
    with pytest.raises(AssertionError, match="index: SHA-256"):
        check_sha256("index", b"index!", hashlib.sha256(b"index").hexdigest())


def test_the_fetched_prometheus_is_new_enough():
    assert version(modern_prometheus_bin() / "prometheus")[:2] >= (2, 55)
