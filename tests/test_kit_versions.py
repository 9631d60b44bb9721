"""The kit and prometheus_client's releases. The kit reads prometheus_client's internal
file format, so it declares the releases it is proven on; its differential tests run
against each release in that range. A release outside it, as Dependabot would propose
one, is simulated by relabelling the installed release's metadata (what the kit reads
to decide): the kit's suite fails, saying what to do; `--prove-prometheus-client` runs
the differential tests against it; and a service's own suite stays green.
"""

import subprocess

import pytest
from packaging.version import Version

from .baking import KIT, WHEELHOUSE, bake, clean_venv, kit_environment, pip_install, run
from .wheelhouse import prometheus_client_range

RANGE = prometheus_client_range()
DIFFERENTIAL = ["tests/test_metric_files.py", "tests/test_multiprocess.py"]


def releases_in_range():
    """Every prometheus_client release in the kit's range, as the wheelhouse holds them
    (tests/wheelhouse.py downloads each one the index has)."""
    return sorted(
        (
            path.name.split("-")[1]
            for path in WHEELHOUSE.glob("prometheus_client-*.whl")
            if Version(path.name.split("-")[1]) in RANGE
        ),
        key=Version,
    )


def test_the_kits_differential_tests_pass_against_each_release_in_its_range(
    tmp_path, kit_wheels, project_python
):
    """The newest release in the range is the one pip installs with the kit: the kit's
    whole suite runs on it under every offered Python (test_pythons.py). Each older one
    runs the differential tests here."""
    releases = releases_in_range()
    installed = run(
        [
            project_python,
            "-c",
            "from importlib import metadata; print(metadata.version('prometheus-client'))",
        ],
        cwd=tmp_path,
    ).stdout.strip()
    assert releases, f"no prometheus_client release in {RANGE} on the index"
    assert installed == releases[-1]
    for release in releases[:-1]:
        python = kit_environment(
            tmp_path / release,
            kit_wheels,
            f"prometheus-client=={release}",
            "-r",
            KIT / "requirements-test.txt",
        )
        ran = run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *DIFFERENTIAL], cwd=KIT)
        assert " passed" in ran.stdout, (release, ran.stdout)
        assert " skipped" not in ran.stdout, (release, ran.stdout)


@pytest.fixture
def next_release(tmp_path, kit_wheels, cookies):
    """An environment with a baked service's requirements, whose prometheus_client says
    it is the first release past the kit's range."""
    project = bake(cookies)
    python = clean_venv(tmp_path / "venv")
    pip_install(python, "-r", "requirements-dev.txt", cwd=project, find_links=[kit_wheels])
    [dist_info] = (tmp_path / "venv" / "lib").glob(
        "python*/site-packages/prometheus_client-*.dist-info"
    )
    installed = dist_info.name.removeprefix("prometheus_client-").removesuffix(".dist-info")
    upper = next(spec.version for spec in RANGE if spec.operator == "<")
    metadata = dist_info / "METADATA"
    metadata.write_text(
        metadata.read_text().replace(f"\nVersion: {installed}\n", f"\nVersion: {upper}.0\n")
    )
    dist_info.rename(dist_info.with_name(f"prometheus_client-{upper}.0.dist-info"))
    shown = run(
        [
            python,
            "-c",
            "from importlib import metadata; print(metadata.version('prometheus-client'))",
        ],
        cwd=tmp_path,
    )
    assert shown.stdout.strip() == f"{upper}.0"
    return python, project, f"{upper}.0"


def test_a_release_past_the_range_fails_the_kits_suite_saying_how_to_widen_it(next_release):
    python, project, version = next_release
    kit_tests = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *DIFFERENTIAL]

    unproven = subprocess.run(kit_tests, cwd=KIT, capture_output=True, text=True, timeout=600)
    proven = run([*kit_tests, "--prove-prometheus-client"], cwd=KIT)
    service = run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project)

    assert unproven.returncode == 1, unproven.stdout
    assert f"prometheus_client {version} is outside the releases" in unproven.stdout
    assert "pytest --prove-prometheus-client" in unproven.stdout
    assert "widen PROVEN_VERSIONS in _metric_files.py and prometheus-client" in unproven.stdout
    assert " passed" in proven.stdout
    assert " failed" not in proven.stdout
    # The service's own suite knows nothing of the file format: green either way.
    assert " passed" in service.stdout
    assert " failed" not in service.stdout
