"""Logs: one JSON object per line, tied to the Cloud Foundry router's request ids.

`init_app(app)` gives every request an id: the router's `X-Vcap-Request-Id` when it is a
plain token, else a new one; and a trace id from a W3C `traceparent` header, when it is
well formed. The response carries the id back as `X-Request-Id`. gunicorn.conf.py hands
`logging_config()` to gunicorn, so that its access log, its own messages and the app's
logging all go out through `JsonFormatter` (or, with LOG_FORMAT=text, plain lines).
"""

import json
import logging
import os
import re
from datetime import UTC, datetime

from flask import has_request_context, request

# What a request id from a client may look like: the router's is a UUID, and anything
# else (too long, non-ASCII, control characters) is replaced rather than logged.
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
# W3C Trace Context, version 00: version-trace id-parent id-flags, lower-case hex.
TRACEPARENT_PATTERN = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
REQUEST_ID_KEY = "service.request_id"
TRACE_ID_KEY = "service.trace_id"
ROUTE_KEY = "service.route"
REQUEST_KEYS = (REQUEST_ID_KEY, TRACE_ID_KEY)
# A version 4 UUID's fourth group starts with a hex digit whose top two bits are RFC
# 4122's variant, 10, and whose other two are random.
VARIANT_DIGIT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def init_app(app):
    app.wsgi_app = _with_request_ids(app.wsgi_app)


def _with_request_ids(wsgi_app):
    def wsgi_app_with_request_ids(environ, start_response):
        request_id = request_id_from(environ.get("HTTP_X_VCAP_REQUEST_ID"))
        environ[REQUEST_ID_KEY] = request_id
        environ[TRACE_ID_KEY] = trace_id_from(environ.get("HTTP_TRACEPARENT"))

        def start_response_with_request_id(status, headers, exc_info=None):
            # Flask has matched the route by the time it starts the response.
            rule = getattr(environ.get("werkzeug.request"), "url_rule", None)
            environ[ROUTE_KEY] = rule.rule if rule else None
            headers.append(("X-Request-Id", request_id))
            return start_response(status, headers, exc_info)

        return wsgi_app(environ, start_response_with_request_id)

    return wsgi_app_with_request_ids


def request_id_from(header):
    """The router's request id if it is a plain token, else a new one."""
    if header and REQUEST_ID_PATTERN.fullmatch(header):
        return header
    return new_request_id()


def new_request_id():
    """A random (version 4) UUID, as str(uuid.uuid4()) would make from the same 16 bytes
    of os.urandom, in a third of its instructions: uuid.UUID checks and converts what
    this only formats."""
    hexed = os.urandom(16).hex()
    variant = VARIANT_DIGIT[hexed[16]]
    return f"{hexed[:8]}-{hexed[8:12]}-4{hexed[13:16]}-{variant}{hexed[17:20]}-{hexed[20:]}"


def trace_id_from(header):
    """The trace id of a well-formed W3C traceparent header; None for any other."""
    if not header:
        return None
    match = TRACEPARENT_PATTERN.fullmatch(header.strip())
    if match is None or match[1] == "0" * 32 or match[2] == "0" * 16:
        return None
    return match[1]


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: newlines and anything else a client sent
    are escaped by the encoder, never written as they are."""

    def format(self, record):
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
            "instance": os.environ.get("CF_INSTANCE_INDEX"),
        }
        if record.name == "gunicorn.access" and isinstance(record.args, dict):
            entry.update(_access_fields(record.args))
        elif has_request_context():
            entry.update(_request_fields(request.environ))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _access_fields(atoms):
    """What gunicorn's access log record knows of a request (its `atoms`)."""
    method, path, status = atoms["m"], atoms["U"], atoms["s"]
    return {
        "message": f"{method} {path} {status}",
        "method": method,
        "route": atoms[_environ_atom(ROUTE_KEY)],
        "path": path,
        "status": int(status) if str(status).isdigit() else status,
        "duration_seconds": atoms["D"] / 1_000_000,
        **_request_fields({key: atoms[_environ_atom(key)] for key in REQUEST_KEYS}),
    }


def _environ_atom(key):
    """How gunicorn's access log names an entry of the WSGI environ ('-' when missing)."""
    return "{" + key + "}e"


def _request_fields(environ):
    fields = {"request_id": environ.get(REQUEST_ID_KEY)}
    if environ.get(TRACE_ID_KEY) not in (None, "-"):
        fields["trace_id"] = environ[TRACE_ID_KEY]
    return fields


def logging_config(log_format):
    """gunicorn's logconfig_dict: its messages and errors to stderr, its access log and
    the app's logging to stdout, where Cloud Foundry's loggregator collects both."""
    if log_format == "json":
        formatter = {"()": f"{__name__}.JsonFormatter"}
    else:
        formatter = {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(message)s"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"service": formatter},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "service",
                "stream": "ext://sys.stdout",
            },
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "service",
                "stream": "ext://sys.stderr",
            },
        },
        "root": {"level": "INFO", "handlers": ["stdout"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["stdout"], "propagate": False},
        },
    }
