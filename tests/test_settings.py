"""Every setting of the baked service under real gunicorn, started with the manifest's
command: a bad value stops start-up with exactly one line naming the variable, and a
non-zero exit; a blank one means the default; nothing of the app's is ever deleted."""

import os
import re
import signal
import time

import pytest

from .baking import bake
from .load import drive, total
from .service import serve, start_up

TOKEN = "settings-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# The settings table of the service's README, by the kind of value each takes.
WHOLE_NUMBERS = [
    "PORT",
    "WEB_CONCURRENCY",
    "GUNICORN_THREADS",
    "GUNICORN_TIMEOUT",
    "GUNICORN_GRACEFUL_TIMEOUT",
    "GUNICORN_KEEPALIVE",
    "GUNICORN_MAX_REQUESTS",
    "GUNICORN_MAX_REQUESTS_JITTER",
    "CF_INSTANCE_INDEX",
]
REFUSING_ODD_VALUES = [
    *WHOLE_NUMBERS,
    "LOG_FORMAT",
    "PROMETHEUS_METRICS_PATH",
    "METRICS_BASIC_AUTH",
    "VCAP_APPLICATION",
    "METRICS_IP_WHITELIST",
    "METRICS_TRUSTED_PROXIES",
    # Either alone: the two are set together.
    "METRICS_BASIC_AUTH_USERNAME",
    "METRICS_BASIC_AUTH_PASSWORD",
]
# Settings whose every value is a text: a token, or a directory path.
TEXTS = ["METRICS_BASIC_AUTH_TOKEN", "PROMETHEUS_MULTIPROC_DIR"]
ODD_VALUES = ["-1", "99999999999999999999", "é", "nan"]
BAD_VALUES = [
    ("WEB_CONCURRENCY", "0"),
    ("WEB_CONCURRENCY", "3.0"),
    ("WEB_CONCURRENCY", "0x10"),
    ("GUNICORN_TIMEOUT", "19000000000"),
    ("GUNICORN_THREADS", "abc"),
    ("METRICS_IP_WHITELIST", "::ffff:203.0.113.10/64"),
    ("METRICS_TRUSTED_PROXIES", "10.0.0.1/8"),
    ("METRICS_BASIC_AUTH_USERNAME", "a:b"),
    ("PROMETHEUS_METRICS_PATH", "/" + "m" * 5000),
    ("PROMETHEUS_METRICS_PATH", "/a/../metrics"),
    ("VCAP_APPLICATION", "{}"),
    ("VCAP_APPLICATION", '{"application_id": 7}'),
    ("LOG_FORMAT", "xml"),
]


@pytest.fixture(scope="module")
def project(cookies_session):
    return bake(cookies_session)


def with_its_partner(variable, value):
    """The username or password set alone is refused for that; give it its partner."""
    partner = {
        "METRICS_BASIC_AUTH_USERNAME": "METRICS_BASIC_AUTH_PASSWORD",
        "METRICS_BASIC_AUTH_PASSWORD": "METRICS_BASIC_AUTH_USERNAME",
    }.get(variable)
    return {variable: value} if partner is None else {variable: value, partner: ""}


@pytest.mark.parametrize("value", ODD_VALUES)
@pytest.mark.parametrize("variable", REFUSING_ODD_VALUES)
def test_an_odd_value_stops_start_up_with_one_line(
    project, project_python, tmp_path, variable, value
):
    code, output = start_up(
        project, project_python, tmp_path, tmp_path, **with_its_partner(variable, value)
    )

    assert code != 0
    assert len(output.strip().splitlines()) == 1, output
    assert variable in output
    assert "Traceback" not in output


@pytest.mark.parametrize(("variable", "value"), BAD_VALUES, ids=lambda item: str(item)[:24])
def test_a_bad_value_stops_start_up_with_one_line(
    project, project_python, tmp_path, variable, value
):
    code, output = start_up(project, project_python, tmp_path, tmp_path, **{variable: value})

    assert code != 0
    [line] = output.strip().splitlines()
    assert line.startswith(variable)
    assert len(line) < 300, "the value is cut short, not printed whole"


def test_a_route_on_the_metrics_path_stops_start_up_with_one_line(
    project, project_python, tmp_path
):
    code, output = start_up(
        project, project_python, tmp_path, tmp_path, PROMETHEUS_METRICS_PATH="/_status"
    )

    assert code != 0
    assert output == (
        "PROMETHEUS_METRICS_PATH='/_status' is the path of 'service.status' too; choose another\n"
    ), "checked before gunicorn starts workers that would each fail"


@pytest.mark.parametrize("blank", ["", "  "], ids=["empty", "spaces"])
def test_blank_settings_are_the_defaults(project, project_python, tmp_path, blank):
    environ = dict.fromkeys([*REFUSING_ODD_VALUES, *TEXTS], blank)
    del environ["PORT"]  # the test's own port, on loopback
    environ["WEB_CONCURRENCY"] = blank
    with serve(project, project_python, tmp_path, **environ) as service:
        index = service.request("/")
        scrape = service.request("/metrics")
        pids = service.worker_pids()

    assert index.status == 200
    assert index.json()["instance"] is None
    assert scrape.status == 401, "basic auth by default, and no credential configured"
    assert len(pids) == 2, "WEB_CONCURRENCY's default"


def test_odd_tokens_and_directories_mean_what_they_say(project, project_python, tmp_path):
    token = "é-nan-99999999999999999999"
    environ = {"METRICS_BASIC_AUTH_TOKEN": token}
    with serve(project, project_python, tmp_path, **environ) as service:
        # The header carries the token's UTF-8 bytes, which WSGI reads as Latin-1.
        sent = token.encode().decode("latin-1")
        allowed = service.request("/metrics", headers={"Authorization": f"Bearer {sent}"})
        refused = service.request("/metrics", headers={"Authorization": "Bearer -1"})

    assert (allowed.status, refused.status) == (200, 403)


def test_an_empty_metrics_directory_is_unset_and_deletes_nothing(project, project_python, tmp_path):
    """Started by hand with `PROMETHEUS_MULTIPROC_DIR=` beside an app's SQLite file: the
    file stays, no metric file lands beside it, and metrics still add up over workers,
    in a private directory that goes with the service, a reload (SIGHUP) or not."""
    database = project / "app.db"
    database.write_bytes(b"SQLite format 3\0 the app's data")
    command = "PROMETHEUS_MULTIPROC_DIR= exec python -m payments_api"
    environ = {"METRICS_BASIC_AUTH_TOKEN": TOKEN}
    try:
        with serve(project, project_python, tmp_path, command=command, **environ) as service:
            baseline = total(service.metrics_text(TOKEN), "http_server_requests_total")
            completed, failed = drive(service.url, ["/"], 20, clients=4)
            served = total(service.metrics_text(TOKEN), "http_server_requests_total") - baseline
            private = [path for path in service.tmpdir.iterdir() if path.is_dir()]

            old_workers = set(service.worker_pids())
            service.process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 30
            while old_workers & set(service.worker_pids()) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not old_workers & set(service.worker_pids()), service.log_text()
            service.wait_for_workers(2)
            assert service.stop() == 0
        metric_files = sorted(path.name for path in project.rglob("*.db"))
    finally:
        database_kept = database.read_bytes()
        database.unlink()

    assert database_kept == b"SQLite format 3\0 the app's data"
    assert metric_files == ["app.db"]
    assert (completed, failed) == (80, 0)
    assert served == 80, "counted over both workers"
    assert [path.name.startswith("prometheus-multiproc-") for path in private] == [True]
    assert not private[0].exists(), "the private directory goes when gunicorn exits"
    assert "Traceback" not in service.log_text()


def test_a_worker_dying_while_the_lock_is_broken_is_counted_out_once_it_works(
    project, project_python, tmp_path
):
    with serve(project, project_python, tmp_path, METRICS_BASIC_AUTH_TOKEN=TOKEN) as service:
        directory = service.tmpdir / "prometheus-multiproc"
        drive(service.url, ["/"], 5)
        lock = directory / ".lock"
        lock.unlink(missing_ok=True)
        lock.mkdir()  # the lock cannot be opened: no fold, no scrape

        first = service.worker_pids()[0]
        os.kill(first, signal.SIGKILL)
        service.wait_for_replacement(first, workers=2)
        lock.rmdir()
        second = next(pid for pid in service.worker_pids() if pid != first)
        os.kill(second, signal.SIGKILL)
        service.wait_for_replacement(second, workers=2)
        live = service.wait_for_workers(2)

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = service.metrics_text(TOKEN)
            alive = total(text, "gunicorn_workers_alive")
            if alive == 2:
                break
            time.sleep(0.2)
        files = sorted(path.name for path in directory.glob("*.db"))
        assert service.stop() == 0

    log = service.log_text()
    assert f"Could not fold the metrics of dead worker {first}" in log
    assert alive == 2, text
    pids = {int(pid) for pid in re.findall(r'pid="(\d+)"', text)}
    assert pids <= set(live), "no dead worker has series"
    assert not [name for name in files if name.endswith((f"_{first}.db", f"_{second}.db"))]
