"""The baked service's logs under real gunicorn: one JSON object per line, each request's
line tied to the Cloud Foundry router's request id and the W3C trace id, whatever the
client sends in those headers."""

import json
import re
import socket

import pytest

from .baking import bake
from .service import serve

ROUTER_ID = "6f1b4a5e-8c1d-4b7a-9d3e-2f6a8b0c1d2e"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
# Header values a client may send as raw bytes: each must be answered, and none may
# reach the log as it was sent.
HOSTILE = [
    ("X-Vcap-Request-Id", b"x" * 5000),
    ("X-Vcap-Request-Id", "zoë-☃".encode()),
    ("X-Vcap-Request-Id", b"\x1b[31mred\x1b[0m"),
    ("X-Vcap-Request-Id", b'abc" , "level": "CRITICAL'),
    ("traceparent", b"00-" + b"z" * 32 + b"-00f067aa0ba902b7-01"),
    ("traceparent", "00-é".encode() + b"\x00\x07"),
]


@pytest.fixture
def project(cookies):
    return bake(cookies)


def raw_get(port, path, header, value):
    """GET with one header sent as these exact bytes; return the status line and headers."""
    request = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s: %s\r\nConnection: close\r\n\r\n" % (
        path.encode(),
        header.encode(),
        value,
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    return head[0], dict(line.split(": ", 1) for line in head[1:])


def access_lines(log):
    entries = [json.loads(line) for line in log.splitlines()]
    return [entry for entry in entries if entry["logger"] == "gunicorn.access"]


def test_a_request_gets_one_json_access_line_with_its_ids(project, project_python, tmp_path):
    headers = {
        "X-Vcap-Request-Id": ROUTER_ID,
        "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01",
    }
    with serve(project, project_python, tmp_path) as service:
        response = service.request("/", headers=headers)
        missing = service.request("/no/such/page")
        assert service.stop() == 0
    log = service.log_text()

    assert response.headers["X-Request-Id"] == ROUTER_ID
    lines = [entry for entry in access_lines(log) if entry["request_id"] == ROUTER_ID]
    assert len(lines) == 1
    [line] = lines
    assert line["trace_id"] == TRACE_ID
    assert (line["method"], line["route"], line["path"], line["status"]) == ("GET", "/", "/", 200)
    assert line["duration_seconds"] > 0
    assert line["pid"] in service.booted_pids()
    [unmatched] = [entry for entry in access_lines(log) if entry["path"] == "/no/such/page"]
    assert (unmatched["route"], unmatched["status"]) == (None, 404)
    assert unmatched["request_id"] == missing.headers["X-Request-Id"]
    assert "trace_id" not in unmatched


def test_hostile_ids_are_answered_and_never_logged_as_sent(project, project_python, tmp_path):
    with serve(project, project_python, tmp_path) as service:
        answers = [raw_get(service.port, "/", header, value) for header, value in HOSTILE]
        assert service.stop() == 0
    log_bytes = service.log.read_bytes()
    log = log_bytes.decode("utf-8")

    for (header, value), (status_line, headers) in zip(HOSTILE, answers, strict=True):
        assert status_line.split()[1] in ("200", "400"), (header, value, status_line)
        if status_line.split()[1] == "200":
            assert re.fullmatch("[0-9a-f]{32}", headers["X-Request-Id"]), headers
        assert value not in log_bytes
    # Every line is one JSON object: nothing the client sent broke a line.
    entries = [json.loads(line) for line in log.splitlines()]
    assert sum(entry["logger"] == "gunicorn.access" for entry in entries) >= 4
    assert all("trace_id" not in entry for entry in entries)
    assert "Traceback" not in log
