"""HTTP for the API and UAA: secure URLs, trusted CAs, no redirects, and JSON answers.

A token or a client's secret goes only where it was meant to: over https (http for a
loopback stand-in only), never on after a redirect, never to a file: URL.
"""

import contextlib
import email.utils
import http.client
import ipaddress
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request

from ._errors import _DiscoveryError


def _secure_url(value, name):
    """An https URL, or http for a loopback address only, with no credentials in it: an
    error names the URL, and a log would then hold them."""
    # No API's URL holds an @ but for credentials, which are refused unquoted.
    if "@" in value:
        raise _DiscoveryError(
            f"{name} must not hold credentials (user:password@):"
            " set CF_USERNAME and CF_PASSWORD_FILE instead"
        )
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 (parsed here, so that a bad port fails here)
    except ValueError as error:
        raise _DiscoveryError(f"{name} is not a URL: {error}") from None
    if parts.scheme == "https" and parts.hostname:
        return value
    if parts.scheme == "http" and parts.hostname:
        try:
            loopback = ipaddress.ip_address(parts.hostname).is_loopback
        except ValueError:
            loopback = parts.hostname == "localhost"
        if loopback:
            return value
    raise _DiscoveryError(
        f"{name}={value!r} must be an https:// URL (http:// only for a loopback address)"
    )


def _redacted(url):
    """`url` as a log line or an error may show it: whatever stands between `//` and the
    last `@` (credentials, however they parse) replaced."""
    start, slashes, rest = url.partition("//")
    if "@" not in rest:
        return url
    return f"{start}{slashes}***@{rest.rpartition('@')[2]}"


def _origin(url):
    """Scheme, host and port, as a browser compares origins."""
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.hostname, parts.port or {"http": 80, "https": 443}[parts.scheme]


def _tls_context(environ):
    """An SSL context trusting CF_CA_CERT's CAs, or None for the system's."""
    path = environ.get("CF_CA_CERT", "")
    if not path:
        return None
    try:
        return ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as error:
        reason = getattr(error, "strerror", None) or error
        raise _DiscoveryError(f"CF_CA_CERT={path!r} is not a readable PEM file: {reason}") from None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect would carry the token or the client's secret elsewhere: answer it as
    the error it is for this client."""

    def redirect_request(self, request, fp, code, message, headers, new_url):
        return None


def _opener(context=None, proxies=None):
    """An opener that follows no redirect; with a CA context for https, and the
    environment's proxies unless `proxies` (a ProxyHandler's mapping) says otherwise."""
    handlers = [_NoRedirects, urllib.request.HTTPSHandler(context=context)]
    if proxies is not None:
        handlers.append(urllib.request.ProxyHandler(proxies))
    return urllib.request.build_opener(*handlers)


# One opener per CA context and proxy choice, built at first use.
_OPENERS = {}


def _open_url(request, timeout, context=None, proxies=None):
    """Open an http or https URL (never a file: URL that an answer named)."""
    scheme = urllib.parse.urlsplit(request.full_url).scheme
    if scheme not in ("http", "https"):
        raise _DiscoveryError(f"refusing to open a {scheme}: URL")
    key = (id(context), proxies is not None)
    if key not in _OPENERS:
        _OPENERS[key] = _opener(context, proxies)
    return _OPENERS[key].open(request, timeout=timeout)


def _cf_error(body):
    """`code title: detail` of each error of a CF API error body, or ""."""
    try:
        answer = json.loads(body)
    except ValueError:
        return ""
    errors = answer.get("errors") if isinstance(answer, dict) else None
    if not isinstance(errors, list):
        return ""
    return "; ".join(
        f"{error.get('code')} {error.get('title')}: {error.get('detail')}"
        for error in errors
        if isinstance(error, dict)
    )


def _retry_after(headers, now):
    """Seconds to wait that a 429 asks for: Retry-After (seconds or a date), else
    X-RateLimit-Reset (Unix time), else None."""
    value = headers.get("Retry-After")
    if value:
        if value.strip().isdigit():
            return float(value)
        with contextlib.suppress(TypeError, ValueError):
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - now)
    reset = headers.get("X-RateLimit-Reset")
    if reset and reset.strip().isdigit():
        return max(0.0, float(reset) - now)
    return None


# The most an answer may hold: a page of 5000 apps with their metadata is a few MB.
_MAX_BODY_BYTES = 50 << 20
# What is read of an error's body, for its CF error.
_MAX_ERROR_BYTES = 1 << 16


def _read_body(response, what):
    """The body of `response`, up to _MAX_BODY_BYTES. (A body that trickles in is ended
    by the pass's deadline: _passes._deadline.)"""
    length = response.getheader("Content-Length", "")
    if length.isdigit() and int(length) > _MAX_BODY_BYTES:
        raise _DiscoveryError(f"{what} answered more than {_MAX_BODY_BYTES >> 20} MB")
    chunks, size = [], 0
    while chunk := response.read1(1 << 16):
        size += len(chunk)
        if size > _MAX_BODY_BYTES:
            raise _DiscoveryError(f"{what} answered more than {_MAX_BODY_BYTES >> 20} MB")
        chunks.append(chunk)
    return b"".join(chunks)


def _fetch_json(request, what, timeout, context):
    """The JSON of the answer to `request`. Any failure is a _DiscoveryError of one line
    that names `what` was asked, with the API's own words and how long it asks to wait."""
    try:
        with _open_url(request, timeout, context) as response:
            body = _read_body(response, what)
    except urllib.error.HTTPError as error:
        detail = _cf_error(error.read(_MAX_ERROR_BYTES))
        message = f"{what} answered {error.code} {error.reason}"
        wait = _retry_after(error.headers, time.time()) if error.code == 429 else None
        if wait is not None:
            message += f", come back in {wait:.0f} s"
        message += f" ({detail})" if detail else ""
        raise _DiscoveryError(message, status=error.code, retry_after=wait) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise _DiscoveryError(f"{what} did not answer: {reason}") from None
    try:
        return json.loads(body)
    except ValueError:
        raise _DiscoveryError(f"{what} answered with something other than JSON") from None
