"""Settings, each read from one environment variable with a default.

Every setting the kit reads is parsed here, by one set of helpers, and checked before
gunicorn starts a worker (launcher.py, gunicorn.py) and again when the app is built
(`Metrics.init_app`). A bad value raises ConfigError, whose message is one line naming
the variable, the value and the rule. A blank value (empty, or spaces) is the same as
unset: the default.
"""

import ipaddress
import json
import logging
import os
import re
from pathlib import Path

DEFAULT_METRICS_PATH = "/metrics"
METRICS_PATH_PATTERN = re.compile(r"(/[A-Za-z0-9._~-]+)+")
# gunicorn refuses request lines over 4094 bytes; a path this long leaves room for the rest.
METRICS_PATH_MAX_LENGTH = 256
# Where the Cloud Foundry router and load balancers live: loopback and private ranges.
DEFAULT_TRUSTED_PROXIES = "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"
# What METRICS_TRUSTED_PROXIES says to believe no X-Forwarded-For at all.
NO_PROXIES = "none"
LOG_FORMATS = ("json", "text")
# The variable that names where workers share their metric files.
METRICS_DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


# Set by the launcher for the workers it starts, once it has said the app's notices.
NOTICES_SAID_VARIABLE = "FLASK_CF_PROMETHEUS_NOTICES_SAID"
_notices = []


class ConfigError(ValueError):
    """A setting in the environment has a value the service cannot run with."""


def notice(message):
    """Say something of the settings the service runs with, which is not an error: once,
    by the launcher, before gunicorn starts; elsewhere, a warning in each process."""
    _notices.append(message)
    if NOTICES_SAID_VARIABLE not in os.environ:
        logging.getLogger("flask_cf_prometheus").warning(message)


def notices():
    """What notice() was told in this process, in order."""
    return list(_notices)


def _text(environ, name):
    """The variable's value, or None when it is unset or blank."""
    return environ.get(name, "").strip() or None


def _shown(value, length=40):
    """`value` as an error shows it: quoted, and cut short when long."""
    return repr(value) if len(value) <= length else f"{value[:length]!r}..."


def _whole_number(environ, name, default, minimum, maximum):
    value = _text(environ, name)
    if value is None:
        return default
    # Digits only, and few: int() refuses past 4,300 digits with a ValueError of its own.
    digits = value.isascii() and value.isdigit() and len(value.lstrip("0")) <= len(str(maximum))
    number = int(value.lstrip("0") or "0") if digits else None
    if number is None or not minimum <= number <= maximum:
        raise ConfigError(
            f"{name}={_shown(value)} must be a whole number from {minimum} to {maximum}"
        )
    return number


def _choice(environ, name, default, choices):
    value = _text(environ, name)
    if value is None:
        return default
    if value.lower() not in choices:
        raise ConfigError(f"{name}={value!r} must be one of: {', '.join(choices)} (any case)")
    return value.lower()


def _boolean(environ, name, default):
    return _choice(environ, name, "true" if default else "false", ("true", "false")) == "true"


def _metrics_path(environ, name, default):
    value = _text(environ, name) or default
    if len(value) > METRICS_PATH_MAX_LENGTH:
        raise ConfigError(
            f"{name}={value[:20]!r}... must be at most {METRICS_PATH_MAX_LENGTH} characters long"
        )
    if not METRICS_PATH_PATTERN.fullmatch(value):
        raise ConfigError(
            f"{name}={value!r} must start with / and hold only letters, digits"
            " and . _ ~ - in /-separated segments, with no trailing /"
        )
    if {".", ".."} & set(value.split("/")):
        raise ConfigError(f"{name}={value!r} must not have . or .. as a segment")
    return value


def _networks(environ, name, default=""):
    """Comma-separated IPv4/IPv6 addresses and CIDR ranges, as networks; `none` for none.

    An entry must mean exactly what it says: a range with bits set past its prefix
    (`10.0.0.1/8`, `::ffff:203.0.113.10/64`) is refused rather than widened.
    """
    value = _text(environ, name) or default
    if value.lower() == NO_PROXIES:
        return ()
    networks = []
    for entry in filter(None, (entry.strip() for entry in value.split(","))):
        try:
            network = ipaddress.ip_network(entry, strict=False)
            address = ipaddress.ip_interface(entry).ip
        except ValueError:
            raise ConfigError(
                f"{name} has {_shown(entry)}, which is not an IP address or CIDR range"
            ) from None
        if getattr(network.network_address, "scope_id", None):
            raise ConfigError(
                f"{name} has {entry!r}, with a zone (%{network.network_address.scope_id}):"
                " clients' addresses carry none, so write the address without it"
            )
        if address != network.network_address:
            raise ConfigError(
                f"{name} has {entry!r}, whose address has bits set past its /{network.prefixlen}:"
                f" write {network} for the whole range, or the address alone"
            )
        networks.append(_ipv4_if_mapped(network))
    return tuple(networks)


def _ipv4_if_mapped(network):
    """`::ffff:203.0.113.0/120` as `203.0.113.0/24`: client addresses are read the same way.

    A mapped range of prefix /96 or longer has no bits set before the mapped address,
    which _networks has checked."""
    mapped = getattr(network.network_address, "ipv4_mapped", None)
    if mapped is None or network.prefixlen < 96:
        return network
    return ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")


def _application_id(environ):
    """The app's GUID from VCAP_APPLICATION, which Cloud Foundry sets; None elsewhere."""
    value = _text(environ, "VCAP_APPLICATION")
    if value is None:
        return None
    try:
        application = json.loads(value)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than Python recurses
        application = None
    application_id = application.get("application_id") if isinstance(application, dict) else None
    if (
        not isinstance(application_id, str)
        or not application_id.strip()
        or not _utf8(application_id)
    ):
        raise ConfigError(
            "VCAP_APPLICATION must be a JSON object with an application_id string,"
            " as Cloud Foundry sets it; unset it elsewhere"
        )
    return application_id.strip()


def _utf8(text):
    """Whether `text` can be sent as UTF-8: not a JSON string holding a lone surrogate
    (`"\\ud800"`), which no client can send."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _basic_auth_credentials(environ):
    username = _text(environ, "METRICS_BASIC_AUTH_USERNAME")
    password = _text(environ, "METRICS_BASIC_AUTH_PASSWORD")
    if (username is None) != (password is None):
        raise ConfigError(
            "METRICS_BASIC_AUTH_USERNAME and METRICS_BASIC_AUTH_PASSWORD must be set together"
        )
    if username is not None and ":" in username:
        # Basic auth sends user:password and splits at the first colon.
        raise ConfigError("METRICS_BASIC_AUTH_USERNAME must not contain ':'")
    return username, password


def metrics_directory(environ=os.environ):
    """Where workers share their metric files, or None when PROMETHEUS_MULTIPROC_DIR is
    unset or blank: the one rule for this variable, wherever it is read."""
    value = _text(environ, METRICS_DIRECTORY_VARIABLE)
    return None if value is None else Path(value)


def app_metrics_directory(environ=os.environ):
    """metrics_directory() for the app, which refuses a set but blank value.

    prometheus_client reads a blank PROMETHEUS_MULTIPROC_DIR as the working directory.
    `python -m` replaces it with a private directory first; `flask run` does not."""
    directory = metrics_directory(environ)
    if directory is None and METRICS_DIRECTORY_VARIABLE in environ:
        raise ConfigError(
            f"{METRICS_DIRECTORY_VARIABLE} is set but blank: unset it, or name a directory"
        )
    return directory


def settings_from_environ(
    environ=os.environ, *, metrics_path=DEFAULT_METRICS_PATH, metrics_basic_auth=True
):
    """The app's settings, over the service's defaults for the metrics path and the way
    the endpoint is protected; a bad value raises ConfigError, so start-up fails closed."""
    username, password = _basic_auth_credentials(environ)
    return {
        # Cloud Foundry numbers the instances of an app from 0; None when run elsewhere.
        "INSTANCE_INDEX": _whole_number(environ, "CF_INSTANCE_INDEX", None, 0, 9999),
        "METRICS_PATH": _metrics_path(environ, "PROMETHEUS_METRICS_PATH", metrics_path),
        # true: the metrics endpoint asks for credentials; false: it checks the client address.
        "METRICS_BASIC_AUTH": _boolean(environ, "METRICS_BASIC_AUTH", metrics_basic_auth),
        "CF_APPLICATION_ID": _application_id(environ),
        "METRICS_BASIC_AUTH_TOKEN": _text(environ, "METRICS_BASIC_AUTH_TOKEN"),
        "METRICS_BASIC_AUTH_USERNAME": username,
        "METRICS_BASIC_AUTH_PASSWORD": password,
        "METRICS_IP_WHITELIST": _networks(environ, "METRICS_IP_WHITELIST"),
        "METRICS_TRUSTED_PROXIES": _networks(
            environ, "METRICS_TRUSTED_PROXIES", DEFAULT_TRUSTED_PROXIES
        ),
    }


def server_settings_from_environ(environ=os.environ):
    """gunicorn's settings (gunicorn.py), each bounded to what a server can run with."""
    return {
        # Cloud Foundry sends the app's traffic to $PORT.
        "port": _whole_number(environ, "PORT", 8000, 1, 65535),
        # Worker processes; WEB_CONCURRENCY is the name Cloud Foundry and Heroku buildpacks use.
        "workers": _whole_number(environ, "WEB_CONCURRENCY", 2, 1, 64),
        # Threads per worker; more than 1 switches gunicorn to its gthread worker.
        "threads": _whole_number(environ, "GUNICORN_THREADS", 1, 1, 256),
        # Seconds a worker may stay silent before the master kills and replaces it.
        "timeout": _whole_number(environ, "GUNICORN_TIMEOUT", 30, 1, 3600),
        # Seconds to finish requests on shutdown: Cloud Foundry kills the app 10 s after
        # SIGTERM.
        "graceful_timeout": _whole_number(environ, "GUNICORN_GRACEFUL_TIMEOUT", 8, 1, 3600),
        # Seconds an idle keep-alive connection from the router stays open.
        "keepalive": _whole_number(environ, "GUNICORN_KEEPALIVE", 5, 1, 3600),
        # Recycle a worker after this many requests (plus up to the jitter); 0 never recycles.
        "max_requests": _whole_number(environ, "GUNICORN_MAX_REQUESTS", 0, 0, 100_000_000),
        "max_requests_jitter": _whole_number(
            environ, "GUNICORN_MAX_REQUESTS_JITTER", 0, 0, 100_000_000
        ),
        "log_format": _choice(environ, "LOG_FORMAT", "json", LOG_FORMATS),
        "metrics_directory": metrics_directory(environ),
    }


def check_environ(environ=os.environ):
    """Every setting the service reads, checked, ConfigError for the first bad one; and
    gunicorn's settings, for those who start it."""
    settings_from_environ(environ)
    return server_settings_from_environ(environ)
