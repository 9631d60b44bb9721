"""Refuse answers that would bake a broken project, before anything is written.

Cookiecutter renders this file with Jinja; the answers arrive as JSON data (never
pasted into code), so quotes and backslashes in them cannot change what runs here.
"""

import functools
import json
import keyword
import re
import sys

# Import names the generated service relies on: a package with one of these names
# would shadow the real module.
RESERVED_PACKAGE_NAMES = frozenset(
    {"config", "flask", "gunicorn", "prometheus_client", "tests", "werkzeug", "wsgi"}
)

# Cloud Foundry uses the app name as the route host, a DNS label of at most 63 characters.
SLUG_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,62}")
MEMORY_PATTERN = re.compile(r"[1-9][0-9]*(M|MB|G|GB)")
INSTANCES_PATTERN = re.compile(r"[1-9][0-9]*")
METRICS_PATH_PATTERN = re.compile(r"(/[A-Za-z0-9._~-]+)+")
HEALTH_CHECK_PATH = "/_status"
# Flask serves static files under this prefix.
STATIC_PATH = "/static/"


def _package_name_error(value):
    if not value.isidentifier() or not value.isascii():
        return "must be a valid ASCII Python identifier"
    if keyword.iskeyword(value):
        return "must not be a Python keyword"
    if value in RESERVED_PACKAGE_NAMES:
        return "must not shadow a module the service imports: " + ", ".join(
            sorted(RESERVED_PACKAGE_NAMES)
        )
    return None


def _pattern_error(pattern, rule):
    def check(value):
        return None if pattern.fullmatch(value) else rule

    return check


def _metrics_path_error(value):
    if not METRICS_PATH_PATTERN.fullmatch(value):
        return (
            "must start with / and hold only letters, digits and . _ ~ - "
            "in /-separated segments, with no trailing /"
        )
    if {".", ".."} & set(value.split("/")):
        return "must not have . or .. as a segment"
    if value == HEALTH_CHECK_PATH or value.startswith(STATIC_PATH):
        return f"must not be a path the service serves ({HEALTH_CHECK_PATH}, {STATIC_PATH}...)"
    return None


# The boundaries of the request duration histogram's buckets (prometheus_client's
# defaults): a latency objective is computed from one of them exactly.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
NUMBER_PATTERN = re.compile(r"[0-9]+(\.[0-9]+)?")


def _objective_error(value):
    # 14.4 times the budget is the fastest burn the alerts page on; below 95 % it would
    # fail most requests, and a fast burn could not be told from an outage.
    if not NUMBER_PATTERN.fullmatch(value) or not 95 <= float(value) < 100:
        return "must be a percentage from 95 up to, not including, 100, e.g. 99.9"
    return None


def _latency_threshold_error(value):
    if not NUMBER_PATTERN.fullmatch(value) or float(value) not in DURATION_BUCKETS:
        bounds = ", ".join(f"{bound:g}" for bound in DURATION_BUCKETS)
        return f"must be a bucket boundary of the request duration histogram: {bounds}"
    return None


# An address as mail relays take it, and a relay as Alertmanager's smarthost: host:port.
EMAIL_PATTERN = re.compile(r"[^@\s\"'<>,;]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
SMARTHOST_PATTERN = re.compile(r"[A-Za-z0-9.-]+:[1-9][0-9]{0,4}")
RUNBOOKS_URL_PATTERN = re.compile(r"https?://[^\s#\"'<>]+")
# The template owner's: written into requirements.txt as `--index-url`, so one line.
INDEX_URL_PATTERN = re.compile(r"(https?://[^\s#\"'<>]+)?")


def _email_only(rule):
    """A setting of the email receiver: as `rule` says when alerts go by email, and left
    empty otherwise, so that no answer is silently dropped."""

    def check(value, answers):
        if answers.get("alert_receiver") == "email":
            return rule(value)
        return None if value == "" else "is for alert_receiver 'email' only: leave it empty"

    return check


RULES = {
    "project_slug": _pattern_error(
        SLUG_PATTERN,
        "must match ^[a-z][a-z0-9-]{0,62}$ (a letter, then lowercase letters, digits and -;"
        " at most 63 characters)",
    ),
    "package_name": _package_name_error,
    "cf_memory": _pattern_error(
        MEMORY_PATTERN,
        "must be a positive whole number followed by M, MB, G or GB, e.g. 256M or 1G",
    ),
    "cf_instances": _pattern_error(INSTANCES_PATTERN, "must be a positive whole number, e.g. 2"),
    "metrics_path": _metrics_path_error,
    "slo_availability": _objective_error,
    "slo_latency_seconds": _latency_threshold_error,
    "slo_latency_target": _objective_error,
    "runbooks_url": _pattern_error(
        RUNBOOKS_URL_PATTERN,
        "must be an http(s) URL with no #fragment, e.g."
        " https://github.com/team/payments-api/blob/main/RUNBOOKS.md",
    ),
    "_kit_index": _pattern_error(
        INDEX_URL_PATTERN,
        "must be empty or the http(s) URL of a package index's simple API, e.g."
        " https://pypi.org/simple/",
    ),
}
# Rules that depend on another answer.
ANSWER_RULES = {
    "alert_email": _email_only(
        _pattern_error(EMAIL_PATTERN, "must be an email address, e.g. payments-oncall@example.org")
    ),
    "alert_smarthost": _email_only(
        _pattern_error(SMARTHOST_PATTERN, "must be host:port, e.g. smtp.example.org:587")
    ),
}


def validation_errors(answers):
    """One line for each answer that breaks its rule, naming the variable and the value."""
    rules = {
        **RULES,
        **{name: functools.partial(rule, answers=answers) for name, rule in ANSWER_RULES.items()},
    }
    errors = []
    for name, rule in rules.items():
        value = answers[name]
        problem = rule(value) if isinstance(value, str) else "must be text"
        if problem:
            errors.append(f"{name}={value!r} {problem}")
    return errors


def main(answers):
    errors = validation_errors(answers)
    for error in errors:
        print(f"ERROR: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(json.loads(r"""{{ cookiecutter | tojson }}""")))
