"""Logs: one JSON object per line, tied to the Cloud Foundry router's request ids.

`init_app(app)` gives every request an id: the router's `X-Vcap-Request-Id` when it is a
plain token, else a new one, 16 random bytes in hex; and a trace id from a W3C
`traceparent` header, when it is well formed. The response carries the id back as
`X-Request-Id`. gunicorn.conf.py hands
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
RULE_KEY = "service.url_rule"
REQUEST_KEYS = (REQUEST_ID_KEY, TRACE_ID_KEY)


def init_app(app):
    app.wsgi_app = _with_request_ids(app.wsgi_app)


def _with_request_ids(wsgi_app):
    # Every request pays for this, so it is kept to the least: what it can leave to the
    # access log line, it does.
    def wsgi_app_with_request_ids(environ, start_response):
        request_id = environ.get("HTTP_X_VCAP_REQUEST_ID")
        if not (request_id and REQUEST_ID_PATTERN.fullmatch(request_id)):
            # As random as a version 4 UUID (128 bits to its 122), for a fifth of the
            # instructions uuid.uuid4() takes to check and convert them.
            request_id = os.urandom(16).hex()
        environ[REQUEST_ID_KEY] = request_id
        if "HTTP_TRACEPARENT" in environ:
            environ[TRACE_ID_KEY] = trace_id_from(environ["HTTP_TRACEPARENT"])

        def start_response_with_request_id(status, headers, exc_info=None):
            # Flask has matched the route by the time it starts the response, and forgets
            # its request once it has answered, before gunicorn logs it.
            environ[RULE_KEY] = getattr(environ.get("werkzeug.request"), "url_rule", None)
            headers.append(("X-Request-Id", request_id))
            return start_response(status, headers, exc_info)

        return wsgi_app(environ, start_response_with_request_id)

    return wsgi_app_with_request_ids


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
        "route": _route(atoms.get(_environ_atom(RULE_KEY))),
        "path": path,
        "status": int(status) if str(status).isdigit() else status,
        "duration_seconds": atoms["D"] / 1_000_000,
        **_request_fields({key: atoms[_environ_atom(key)] for key in REQUEST_KEYS}),
    }


def _route(rule):
    """The template of the route Flask matched; None when none did (or gunicorn's "-"
    when the request never reached Flask)."""
    return getattr(rule, "rule", None)


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
