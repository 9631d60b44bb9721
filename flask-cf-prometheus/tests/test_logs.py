import json
import logging
import logging.config
import re
from types import SimpleNamespace

import pytest
from werkzeug.test import EnvironBuilder

from flask_cf_prometheus._logs import (
    JsonFormatter,
    logging_config,
)
from flask_cf_prometheus._middleware import (
    trace_from,
)

from .service import create_app

ROUTER_ID = "6f1b4a5e-8c1d-4b7a-9d3e-2f6a8b0c1d2e"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


APP = create_app({"TESTING": True})


def request_id_from(header):
    """The X-Request-Id the service answers a request with this X-Vcap-Request-Id (any
    text: the test client would refuse some as a header) with."""
    environ = EnvironBuilder("/").get_environ()
    if header is not None:
        environ["HTTP_X_VCAP_REQUEST_ID"] = header
    answered = {}

    def start_response(status, headers, exc_info=None):
        answered.update(headers)

    b"".join(APP.wsgi_app(environ, start_response))
    return answered["X-Request-Id"]


def is_new(text):
    return re.fullmatch("[0-9a-f]{32}", text) is not None


def test_new_request_ids_are_16_random_bytes():
    ids = [request_id_from(None) for _ in range(2000)]

    assert all(map(is_new, ids))
    assert len(set(ids)) == len(ids)
    assert {request_id[0] for request_id in ids} == set("0123456789abcdef")
    assert {request_id[-1] for request_id in ids} == set("0123456789abcdef")


def test_the_routers_request_id_is_kept():
    assert request_id_from(ROUTER_ID) == ROUTER_ID
    assert request_id_from("abc.DEF_1:2-3") == "abc.DEF_1:2-3"


@pytest.mark.parametrize(
    "header",
    [None, "", "x" * 129, "zoë", "a\nb", "a\r\nX-Evil: 1", "\x1b[31mred", "a b", "-leading"],
    ids=["none", "empty", "too-long", "non-ascii", "newline", "crlf", "escape", "space", "dash"],
)
def test_anything_else_gets_a_new_request_id(header):
    assert is_new(request_id_from(header))


def test_a_well_formed_traceparent_gives_its_trace_and_span_ids_and_its_flags():
    assert trace_from(TRACEPARENT) == (TRACE_ID, TRACEPARENT.split("-")[2], 1)
    for flags in ("00", "02", "03", "ff"):
        assert trace_from(TRACEPARENT[:-2] + flags)[2] == int(flags, 16)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        f"01-{TRACE_ID}-00f067aa0ba902b7-01",
        f"00-{TRACE_ID.upper()}-00f067aa0ba902b7-01",
        f"00-{'0' * 32}-00f067aa0ba902b7-01",
        f"00-{TRACE_ID}-{'0' * 16}-01",
        f"00-{TRACE_ID[:-1]}-00f067aa0ba902b7-01",
        f"00-{TRACE_ID}-00f067aa0ba902b7-01\nX-Evil: 1",
        f"00-{TRACE_ID}-00f067aa0ba902b7-01-extra",
    ],
)
def test_a_malformed_traceparent_is_ignored(header):
    assert trace_from(header) == (None, None, 0)


@pytest.mark.parametrize("path", ["/", "/_status", "/no/such/page"])
def test_every_response_carries_the_request_id(client, path):
    given = client.get(path, headers={"X-Vcap-Request-Id": ROUTER_ID})
    made = client.get(path, headers={"X-Vcap-Request-Id": "bad\tid"})

    assert given.headers["X-Request-Id"] == ROUTER_ID
    assert is_new(made.headers["X-Request-Id"])


def record(name, message, args=None):
    return logging.LogRecord(name, logging.INFO, __file__, 1, message, args, None)


def test_an_access_record_is_one_json_line_with_the_request():
    atoms = {
        "m": "GET",
        "U": "/items/7\n{injected}",
        "s": "200",
        "D": 2500,
        # The rule Flask matched, as gunicorn hands the environ's entries to its access log.
        "{service.url_rule}e": SimpleNamespace(rule="/items/<int:item_id>"),
        "{service.request_id}e": ROUTER_ID,
        "{service.trace_id}e": TRACE_ID,
    }
    line = JsonFormatter().format(record("gunicorn.access", "%(m)s", atoms))

    assert "\n" not in line
    entry = json.loads(line)
    assert entry["method"] == "GET"
    assert entry["route"] == "/items/<int:item_id>"
    assert entry["path"] == "/items/7\n{injected}"
    assert entry["status"] == 200
    assert entry["duration_seconds"] == 0.0025
    assert (entry["request_id"], entry["trace_id"]) == (ROUTER_ID, TRACE_ID)
    assert entry["level"] == "INFO"
    assert entry["time"].endswith("+00:00")


class Lines(logging.Handler):
    """Keeps what JsonFormatter makes of each record."""

    def __init__(self):
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.entries = []

    def emit(self, record):
        self.entries.append(json.loads(self.format(record)))


def test_the_apps_own_records_carry_the_request_ids_within_a_request():
    app = create_app({"TESTING": True})

    @app.get("/pay")
    def pay():
        app.logger.warning("paid %s", "£5")
        return {}

    lines = Lines()
    app.logger.addHandler(lines)
    headers = {"X-Vcap-Request-Id": ROUTER_ID, "traceparent": TRACEPARENT}
    app.test_client().get("/pay", headers=headers)
    app.logger.warning("outside any request")

    inside, outside = lines.entries
    assert inside["message"] == "paid £5"
    assert (inside["request_id"], inside["trace_id"]) == (ROUTER_ID, TRACE_ID)
    assert outside["message"] == "outside any request"
    assert "request_id" not in outside


def test_an_exception_stays_on_the_line():
    try:
        raise ValueError("first line\nsecond line")
    except ValueError as error:
        failed = logging.LogRecord("app", logging.ERROR, __file__, 1, "failed", None, None)
        failed.exc_info = (type(error), error, error.__traceback__)
    line = JsonFormatter().format(failed)

    assert "\n" not in line
    assert "second line" in json.loads(line)["exception"]


@pytest.fixture
def restored_logging():
    """Put back the loggers a test configures, as they were."""
    loggers = [logging.getLogger(name) for name in (None, "gunicorn.error", "gunicorn.access")]
    saved = [(logger, logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
    yield
    for logger, handlers, level, propagate in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_logging_config_is_accepted_by_the_logging_module(restored_logging, log_format):
    logging.config.dictConfig(logging_config(log_format))

    formatter = logging.getLogger("gunicorn.access").handlers[0].formatter
    assert isinstance(formatter, JsonFormatter) == (log_format == "json")
