"""Settings, each read from one environment variable with a default."""

import os
import re

# Defaults chosen when the project was generated.
DEFAULT_METRICS_PATH = {{ cookiecutter.metrics_path | tojson }}
DEFAULT_METRICS_BASIC_AUTH = {{ "True" if cookiecutter.metrics_auth == "basic_auth" else "False" }}

METRICS_PATH_PATTERN = re.compile(r"(/[A-Za-z0-9._~-]+)+")


class ConfigError(ValueError):
    """A setting in the environment has a value the service cannot run with."""


def _boolean(environ, name, default):
    value = environ.get(name, "").strip()
    if not value:
        return default
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f"{name}={value!r} must be true or false (any case)")


def _metrics_path(environ, name, default):
    value = environ.get(name, "").strip() or default
    if not METRICS_PATH_PATTERN.fullmatch(value):
        raise ConfigError(
            f"{name}={value!r} must start with / and hold only letters, digits"
            " and . _ ~ - in /-separated segments, with no trailing /"
        )
    return value


def settings_from_environ(environ=os.environ):
    """The service's settings; a bad value raises ConfigError, so start-up fails closed."""
    return {
        "SERVICE_NAME": {{ cookiecutter.project_slug | tojson }},
        # Cloud Foundry numbers the instances of an app from 0; None when run elsewhere.
        "INSTANCE_INDEX": environ.get("CF_INSTANCE_INDEX"),
        "METRICS_PATH": _metrics_path(environ, "PROMETHEUS_METRICS_PATH", DEFAULT_METRICS_PATH),
        # true: /metrics asks for credentials; false: it checks the client's IP address.
        "METRICS_BASIC_AUTH": _boolean(environ, "METRICS_BASIC_AUTH", DEFAULT_METRICS_BASIC_AUTH),
    }
