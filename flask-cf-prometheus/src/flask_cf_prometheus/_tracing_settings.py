"""Tracing's settings: OpenTelemetry's standard `OTEL_*` variables, checked like every
other setting (_settings.py), before a worker serves.

The kit reads what it passes to the SDK itself, so a bad value is one line naming it
rather than a warning in each worker and a default in its place. Where the collector is
comes from, in order: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (the whole URL),
OTEL_EXPORTER_OTLP_ENDPOINT (a base, to which `/v1/traces` is added), a Cloud Foundry
service bound with the tag `otlp` (its credentials' `endpoint` and `headers`), and
OpenTelemetry's default, http://localhost:4318. Secret headers come from
OTEL_EXPORTER_OTLP_HEADERS, or from the file OTEL_EXPORTER_OTLP_HEADERS_FILE names,
which keeps them out of the app's environment. No message shows a header's value.
"""

import json
import os
import re
import urllib.parse
from pathlib import Path

from ._settings import ConfigError, _boolean, _choice, _shown, _text, _whole_number

DEFAULT_ENDPOINT = "http://localhost:4318"
TRACES_PATH = "/v1/traces"
SERVICE_TAG = "otlp"
HEADERS_FILE_VARIABLE = "OTEL_EXPORTER_OTLP_HEADERS_FILE"
SAMPLERS = (
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
    "always_on",
    "always_off",
    "traceidratio",
)
# A header's name as HTTP allows it (a token), and a resource attribute's key.
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
HEADERS_FILE_MAX_BYTES = 64 * 1024


def variables_set(environ=os.environ):
    """The OpenTelemetry variables set (not blank) in `environ`, sorted."""
    return sorted(
        name for name in environ if name.startswith("OTEL_") and _text(environ, name) is not None
    )


def tracing_settings(environ=os.environ):
    """What tracing runs with, from the environment, or None when it is turned off
    (OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none); ConfigError for a bad value."""
    if _boolean(environ, "OTEL_SDK_DISABLED", False):
        return None
    if _choice(environ, "OTEL_TRACES_EXPORTER", "otlp", ("otlp", "none")) == "none":
        return None
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        _choice(environ, name, "http/protobuf", ("http/protobuf",))
    endpoint, headers = _collector(environ)
    queue = _whole_number(environ, "OTEL_BSP_MAX_QUEUE_SIZE", 2048, 1, 1_000_000)
    sampler = _choice(environ, "OTEL_TRACES_SAMPLER", "parentbased_always_on", SAMPLERS)
    return {
        "endpoint": endpoint,
        "headers": headers,
        "timeout_seconds": _whole_number(environ, "OTEL_EXPORTER_OTLP_TIMEOUT", 10000, 100, 60000)
        / 1000,
        "compression": _choice(environ, "OTEL_EXPORTER_OTLP_COMPRESSION", "none", ("gzip", "none")),
        "sampler": sampler,
        "ratio": _ratio(environ, sampler),
        "service_name": _text(environ, "OTEL_SERVICE_NAME"),
        "resource": _pairs("OTEL_RESOURCE_ATTRIBUTES", _text(environ, "OTEL_RESOURCE_ATTRIBUTES")),
        "queue": queue,
        "batch": _whole_number(
            environ, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", min(512, queue), 1, queue
        ),
        "delay_seconds": _whole_number(environ, "OTEL_BSP_SCHEDULE_DELAY", 5000, 1, 60000) / 1000,
    }


def _collector(environ):
    """The traces URL and the headers to send it."""
    headers = _headers(environ)
    traces = _text(environ, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if traces is not None:
        return _url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces), headers
    base = _text(environ, "OTEL_EXPORTER_OTLP_ENDPOINT")
    if base is not None:
        return _url("OTEL_EXPORTER_OTLP_ENDPOINT", base, TRACES_PATH), headers
    bound = _bound_service(environ)
    if bound is None:
        return DEFAULT_ENDPOINT + TRACES_PATH, headers
    where, credentials = bound
    url = _url(f"{where}'s endpoint", credentials.get("endpoint"), TRACES_PATH)
    if headers or "headers" not in credentials:
        return url, headers
    value = credentials["headers"]
    if isinstance(value, dict) and all(isinstance(item, str) for item in value.values()):
        value = ",".join(f"{name}={urllib.parse.quote(item)}" for name, item in value.items())
    if not isinstance(value, str):
        raise ConfigError(f"{where}'s headers must be a string or an object of strings")
    return url, _pairs(f"{where}'s headers", value, secret=True)


def _url(name, value, path=""):
    """An http(s) URL with a host and no credentials, `path` added to a base's."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be an http or https URL")
    value = value.strip()
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name}={_shown(value)} must be an http or https URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"{name} must not hold credentials: send them as a header"
            f" (OTEL_EXPORTER_OTLP_HEADERS, or the file {HEADERS_FILE_VARIABLE} names)"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"{name}={_shown(value)} must have no query or fragment")
    return value.rstrip("/") + path if path else value


def _headers(environ):
    text = _text(environ, "OTEL_EXPORTER_OTLP_TRACES_HEADERS") or _text(
        environ, "OTEL_EXPORTER_OTLP_HEADERS"
    )
    path = _text(environ, HEADERS_FILE_VARIABLE)
    if path is None:
        return _pairs("OTEL_EXPORTER_OTLP_HEADERS", text, secret=True)
    if text is not None:
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_HEADERS and {HEADERS_FILE_VARIABLE} are both set: set one"
        )
    try:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"{HEADERS_FILE_VARIABLE}={path!r} is not a file")
        with file.open("rb") as opened:
            data = opened.read(HEADERS_FILE_MAX_BYTES + 1)
        if len(data) > HEADERS_FILE_MAX_BYTES:
            raise ConfigError(f"{HEADERS_FILE_VARIABLE}={path!r} is over 64 KiB")
        text = data.decode("utf-8")
    except OSError as error:
        raise ConfigError(
            f"{HEADERS_FILE_VARIABLE}={path!r} cannot be read: {error.strerror}"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{HEADERS_FILE_VARIABLE}={path!r} is not UTF-8 text") from None
    return _pairs(f"the file {HEADERS_FILE_VARIABLE} names", text.strip(), secret=True)


def _pairs(name, text, secret=False):
    """`key=value,...` as OpenTelemetry writes headers and resource attributes, values
    percent-encoded: {key: value}. A secret's values are never shown."""
    pairs = {}
    for entry in filter(None, (entry.strip() for entry in (text or "").split(","))):
        key, equals, value = entry.partition("=")
        key = key.strip()
        shown = key if secret else entry
        if not equals or not TOKEN.fullmatch(key):
            raise ConfigError(
                f"{name} has {_shown(shown)}: each entry must be key=value, the key a token"
            )
        try:
            value = urllib.parse.unquote(value.strip(), errors="strict")
        except UnicodeDecodeError:
            value = "\0"  # not printable, below
        if not value.isprintable():
            raise ConfigError(f"{name} has {_shown(key)} with a value that is not printable")
        pairs[key] = value.strip()
    return pairs


def _ratio(environ, sampler):
    value = _text(environ, "OTEL_TRACES_SAMPLER_ARG")
    if value is None or not sampler.endswith("traceidratio"):
        return 1.0
    try:
        ratio = float(value)
    except ValueError:
        ratio = None
    if ratio is None or not 0 <= ratio <= 1:
        raise ConfigError(f"OTEL_TRACES_SAMPLER_ARG={_shown(value)} must be a number from 0 to 1")
    return ratio


def _bound_service(environ):
    """(how to name it, its credentials) of the one service bound with the tag `otlp`
    in VCAP_SERVICES, or None when none is."""
    text = _text(environ, "VCAP_SERVICES")
    if text is None:
        return None
    try:
        services = json.loads(text)
    except (ValueError, RecursionError):
        raise ConfigError("VCAP_SERVICES must be JSON, as Cloud Foundry sets it") from None
    tagged = [
        service
        for offering in (services.values() if isinstance(services, dict) else ())
        if isinstance(offering, list)
        for service in offering
        if isinstance(service, dict) and SERVICE_TAG in (service.get("tags") or ())
    ]
    if not tagged:
        return None
    names = [str(service.get("name")) for service in tagged]
    if len(tagged) > 1:
        raise ConfigError(
            f"VCAP_SERVICES has {len(tagged)} services tagged {SERVICE_TAG!r} ({', '.join(names)}):"
            " bind one"
        )
    credentials = tagged[0].get("credentials")
    where = f"the service {names[0]!r} (tagged {SERVICE_TAG!r})"
    if not isinstance(credentials, dict):
        raise ConfigError(f"{where} has no credentials object")
    return where, credentials
