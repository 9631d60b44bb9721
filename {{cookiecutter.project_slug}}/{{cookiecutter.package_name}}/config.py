"""Settings, each read from one environment variable with a default."""

import ipaddress
import json
import os
import re

# Defaults chosen when the project was generated.
DEFAULT_METRICS_PATH = {{ cookiecutter.metrics_path | tojson }}
DEFAULT_METRICS_BASIC_AUTH = {{ "True" if cookiecutter.metrics_auth == "basic_auth" else "False" }}

METRICS_PATH_PATTERN = re.compile(r"(/[A-Za-z0-9._~-]+)+")
# Where the Cloud Foundry router and load balancers live: loopback and private ranges.
DEFAULT_TRUSTED_PROXIES = "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"


class ConfigError(ValueError):
    """A setting in the environment has a value the service cannot run with."""


def _text(environ, name):
    """The variable's value, or None when it is unset or blank: blank never matches."""
    return environ.get(name, "").strip() or None


def _boolean(environ, name, default):
    value = _text(environ, name)
    if value is None:
        return default
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f"{name}={value!r} must be true or false (any case)")


def _metrics_path(environ, name, default):
    value = _text(environ, name) or default
    if not METRICS_PATH_PATTERN.fullmatch(value):
        raise ConfigError(
            f"{name}={value!r} must start with / and hold only letters, digits"
            " and . _ ~ - in /-separated segments, with no trailing /"
        )
    if {".", ".."} & set(value.split("/")):
        raise ConfigError(f"{name}={value!r} must not have . or .. as a segment")
    return value


def _networks(environ, name, default=""):
    """Comma-separated IPv4/IPv6 addresses and CIDR ranges, as networks."""
    entries = [entry.strip() for entry in environ.get(name, default).split(",")]
    networks = []
    for entry in filter(None, entries):
        try:
            networks.append(_ipv4_if_mapped(ipaddress.ip_network(entry, strict=False)))
        except ValueError:
            raise ConfigError(
                f"{name} has {entry!r}, which is not an IP address or CIDR range"
            ) from None
    return tuple(networks)


def _ipv4_if_mapped(network):
    """`::ffff:203.0.113.10` as `203.0.113.10`: client addresses are read the same way."""
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
    except ValueError:
        raise ConfigError("VCAP_APPLICATION is not valid JSON") from None
    application_id = application.get("application_id") if isinstance(application, dict) else None
    if not isinstance(application_id, str):
        return None
    return application_id.strip() or None


def _basic_auth_credentials(environ):
    username = _text(environ, "METRICS_BASIC_AUTH_USERNAME")
    password = _text(environ, "METRICS_BASIC_AUTH_PASSWORD")
    if (username is None) != (password is None):
        raise ConfigError(
            "METRICS_BASIC_AUTH_USERNAME and METRICS_BASIC_AUTH_PASSWORD must be set together"
        )
    return username, password


def settings_from_environ(environ=os.environ):
    """The service's settings; a bad value raises ConfigError, so start-up fails closed."""
    username, password = _basic_auth_credentials(environ)
    return {
        "SERVICE_NAME": {{ cookiecutter.project_slug | tojson }},
        # Cloud Foundry numbers the instances of an app from 0; None when run elsewhere.
        "INSTANCE_INDEX": environ.get("CF_INSTANCE_INDEX"),
        "METRICS_PATH": _metrics_path(environ, "PROMETHEUS_METRICS_PATH", DEFAULT_METRICS_PATH),
        # true: the metrics endpoint asks for credentials; false: it checks the client address.
        "METRICS_BASIC_AUTH": _boolean(environ, "METRICS_BASIC_AUTH", DEFAULT_METRICS_BASIC_AUTH),
        "CF_APPLICATION_ID": _application_id(environ),
        "METRICS_BASIC_AUTH_TOKEN": _text(environ, "METRICS_BASIC_AUTH_TOKEN"),
        "METRICS_BASIC_AUTH_USERNAME": username,
        "METRICS_BASIC_AUTH_PASSWORD": password,
        "METRICS_IP_WHITELIST": _networks(environ, "METRICS_IP_WHITELIST"),
        "METRICS_TRUSTED_PROXIES": _networks(
            environ, "METRICS_TRUSTED_PROXIES", DEFAULT_TRUSTED_PROXIES
        ),
    }
