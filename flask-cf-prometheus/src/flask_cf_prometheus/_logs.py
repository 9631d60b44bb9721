"""Logs: one JSON object per line, tied to the Cloud Foundry router's request ids.

gunicorn.py hands `logging_config()` to gunicorn, so that its access log, its own
messages and the app's logging all go out through `JsonFormatter` (or, with
LOG_FORMAT=text, plain lines). Each line logged while serving a request carries the ids
_middleware.py gave it.
"""

import json
import logging
import os
from datetime import UTC, datetime

from flask import has_request_context, request

# Where _middleware.py keeps a request's ids, and the rule Flask matched, in the environ.
REQUEST_ID_KEY = "service.request_id"
TRACE_ID_KEY = "service.trace_id"
RULE_KEY = "service.url_rule"
REQUEST_KEYS = (REQUEST_ID_KEY, TRACE_ID_KEY)


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
