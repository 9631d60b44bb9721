"""The baked service under real gunicorn, started with the manifest's own command."""

import os
import signal

import pytest

from .baking import bake
from .service import serve


@pytest.fixture
def project(cookies):
    return bake(cookies)


def test_service_answers_under_gunicorn(project, project_python, tmp_path):
    with serve(project, project_python, tmp_path, workers=2) as service:
        index = service.request("/")
        status = service.request("/_status")
        missing = service.request("/no/such/page")
        wrong_method = service.request("/", method="DELETE")

        assert (index.status, index.json()["service"]) == (200, "payments-api")
        assert index.headers["Content-Type"] == "application/json"
        assert (status.status, status.json()) == (200, {"status": "ok"})
        assert (missing.status, missing.json()) == (404, {"error": "Not Found"})
        assert (wrong_method.status, wrong_method.json()) == (405, {"error": "Method Not Allowed"})
        assert service.stop() == 0

    log = service.log_text()
    assert f"Listening at: http://127.0.0.1:{service.port}" in log
    assert '"message": "GET /_status 200"' in log, "the access log goes to stdout"
    assert "Traceback" not in log


def test_metrics_directory_is_set_before_python_starts(project, project_python, tmp_path):
    with serve(project, project_python, tmp_path) as service:
        directory = service.tmpdir / "prometheus-multiproc"
        assert directory.is_dir()
        assert oct(directory.stat().st_mode & 0o777) == oct(0o700)


def test_a_metrics_directory_set_with_cf_set_env_is_the_one_used(project, project_python, tmp_path):
    chosen = tmp_path / "chosen-metrics"
    with serve(project, project_python, tmp_path, PROMETHEUS_MULTIPROC_DIR=str(chosen)) as service:
        assert service.request("/").status == 200
        assert (chosen / ".owner").read_text() == f"{service.process.pid}\n"
        assert not (service.tmpdir / "prometheus-multiproc").exists()


def test_a_clients_script_name_header_is_ignored(project, project_python, tmp_path):
    """gunicorn takes SCRIPT_NAME from a header sent from loopback (its trusted proxies,
    and on Cloud Foundry a proxy in the container): one the path does not start with
    was a 500 that no metric counted."""
    token = "script-name-token"
    with serve(project, project_python, tmp_path, METRICS_BASIC_AUTH_TOKEN=token) as service:
        index = service.request("/", headers={"SCRIPT_NAME": "/metrics"})
        nested = service.request("/_status", headers={"SCRIPT_NAME": "/_status"})
        exposition = service.metrics_text(token)

    assert (index.status, nested.status) == (200, 200)
    assert 'path="/_status"' in exposition, "served at its own path, and counted"
    assert "SCRIPT_NAME" not in service.log_text()


def test_no_control_socket_is_opened(project, project_python, tmp_path):
    with serve(project, project_python, tmp_path) as service:
        assert service.request("/").status == 200
        sockets = [path for path in service.home.rglob("*") if path.is_socket()]
        assert sockets == []
        assert not (service.home / ".gunicorn").exists()


def test_killed_worker_is_replaced_and_handled(project, project_python, tmp_path):
    with serve(project, project_python, tmp_path, workers=2) as service:
        victim, survivor = service.wait_for_workers(2)

        os.kill(victim, signal.SIGKILL)
        service.wait_for_replacement(victim, workers=2)

        assert victim not in service.worker_pids()
        assert survivor in service.worker_pids()
        assert len(service.worker_pids()) == 2
        assert all(service.request("/").status == 200 for _ in range(20))
        assert service.stop() == 0

    log = service.log_text()
    assert f"Worker (pid:{victim}) was sent SIGKILL" in log
    assert "Traceback" not in log
