"""Who may read the metrics endpoint, decided per request and closed by default.

METRICS_BASIC_AUTH=true asks for credentials: the app's own GUID as a bearer token
(what the GOV.UK PaaS Prometheus sends), a shared METRICS_BASIC_AUTH_TOKEN, or HTTP
basic auth with METRICS_BASIC_AUTH_USERNAME and METRICS_BASIC_AUTH_PASSWORD.
METRICS_BASIC_AUTH=false checks the client's address against METRICS_IP_WHITELIST,
reading X-Forwarded-For only as far as METRICS_TRUSTED_PROXIES vouch for it.
"""

import base64
import hmac
import ipaddress
import logging

from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import BadRequest, Forbidden, Unauthorized

logger = logging.getLogger(__name__)

REALM = "metrics"
# Why a request was refused: the values of the refused-scrapes counter's `reason` label.
MISSING_CREDENTIALS = "missing_credentials"
MALFORMED = "malformed"
WRONG_CREDENTIALS = "wrong_credentials"
ADDRESS_NOT_ALLOWED = "address_not_allowed"
REASONS = (MISSING_CREDENTIALS, MALFORMED, WRONG_CREDENTIALS, ADDRESS_NOT_ALLOWED)
CHALLENGES = [
    WWWAuthenticate("basic", {"realm": REALM, "charset": "UTF-8"}),
    WWWAuthenticate("bearer", {"realm": REALM}),
]


class Refused(Exception):
    """A request the metrics endpoint turns away: why (one of REASONS) and the HTTP error
    to answer it with."""

    def __init__(self, reason, error):
        super().__init__(reason)
        self.reason = reason
        self.error = error


class MetricsAccess:
    """Checks requests to the metrics endpoint against the app's settings."""

    def __init__(self, config):
        self.basic_auth = config["METRICS_BASIC_AUTH"]
        self.tokens = [
            token.encode("utf-8", "surrogateescape")
            for token in (config["CF_APPLICATION_ID"], config["METRICS_BASIC_AUTH_TOKEN"])
            if token
        ]
        username = config["METRICS_BASIC_AUTH_USERNAME"]
        password = config["METRICS_BASIC_AUTH_PASSWORD"]
        self.credentials = (
            (
                username.encode("utf-8", "surrogateescape"),
                password.encode("utf-8", "surrogateescape"),
            )
            if username and password
            else None
        )
        self.whitelist = config["METRICS_IP_WHITELIST"]
        self.trusted_proxies = config["METRICS_TRUSTED_PROXIES"]

    def warn_if_closed(self):
        """Say at start-up what to set, when nothing could ever be let in."""
        if self.basic_auth and not (self.tokens or self.credentials):
            logger.warning(
                "The metrics endpoint refuses every request: no credential is configured. "
                "Set METRICS_BASIC_AUTH_TOKEN, or METRICS_BASIC_AUTH_USERNAME and "
                "METRICS_BASIC_AUTH_PASSWORD (on Cloud Foundry the app's GUID also works), "
                "or METRICS_BASIC_AUTH=false with METRICS_IP_WHITELIST."
            )
        elif not self.basic_auth and not self.whitelist:
            logger.warning(
                "The metrics endpoint refuses every request: METRICS_IP_WHITELIST is empty. "
                "Set it to the addresses of your Prometheus servers, or use "
                "METRICS_BASIC_AUTH=true with credentials."
            )

    def check(self, request):
        """Raise Refused for a request that may not read the metrics; return when it may."""
        if self.basic_auth:
            self._check_credentials(request.headers.get("Authorization"))
        else:
            self._check_address(request.remote_addr, request.headers.getlist("X-Forwarded-For"))

    def _check_credentials(self, header):
        if not header:
            raise Refused(MISSING_CREDENTIALS, Unauthorized(www_authenticate=CHALLENGES))
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        if not value:
            raise _malformed("Malformed Authorization header.")
        scheme = scheme.lower()
        if scheme == "bearer":
            allowed = self._token_matches(value)
        elif scheme == "basic":
            allowed = self._basic_matches(value)
        else:
            raise _malformed("Unsupported authorization scheme.")
        if not allowed:
            raise Refused(
                WRONG_CREDENTIALS, Forbidden("Wrong credentials for the metrics endpoint.")
            )

    def _token_matches(self, token):
        # WSGI gives header values as Latin-1 text: encoding them back gives the bytes
        # the client sent, which are compared with the token's UTF-8.
        given = token.encode("latin-1", "replace")
        # Every configured token is compared, in constant time, whatever matches first.
        return sum(hmac.compare_digest(given, expected) for expected in self.tokens) > 0

    def _basic_matches(self, encoded):
        try:
            decoded = base64.b64decode(encoded.encode("latin-1", "replace"), validate=True)
        except ValueError:  # not base64 (binascii.Error)
            decoded = b""
        # Compared as the bytes the client sent: the UTF-8 that the challenge asks for.
        username, colon, password = decoded.partition(b":")
        if not colon:
            raise _malformed("Malformed basic credentials.")
        if self.credentials is None:
            return False
        expected_username, expected_password = self.credentials
        username_matches = hmac.compare_digest(username, expected_username)
        password_matches = hmac.compare_digest(password, expected_password)
        return username_matches and password_matches

    def _check_address(self, remote_addr, forwarded_for):
        client = client_address(remote_addr, forwarded_for, self.trusted_proxies)
        if client is None:
            raise Refused(MALFORMED, BadRequest("Unreadable client address in X-Forwarded-For."))
        if not any(client in network for network in self.whitelist):
            error = Forbidden("This client address may not read the metrics endpoint.")
            raise Refused(ADDRESS_NOT_ALLOWED, error)


def _malformed(description):
    return Refused(MALFORMED, Unauthorized(description, www_authenticate=CHALLENGES))


# The most X-Forwarded-For entries judged. No deployment chains more trusted proxies,
# and a client could send thousands in each request for the whitelist to parse.
MAX_FORWARDED_HOPS = 16


def client_address(remote_addr, forwarded_for, trusted_proxies):
    """The address of the client, as far as trusted proxies vouch for it.

    The hops are the X-Forwarded-For entries, then the peer that connected. Walking from
    the right, a hop inside a trusted proxy range passes the judgement to the hop on its
    left; the first hop outside them is the client. Entries left of it prove nothing.
    None when the hop to judge is not an IP address, or lies past MAX_FORWARDED_HOPS.
    """
    # Split from the right, and only as far as is judged: the first item keeps the rest.
    entries = ",".join(forwarded_for).rsplit(",", MAX_FORWARDED_HOPS) if forwarded_for else []
    unread = len(entries) > MAX_FORWARDED_HOPS
    hops = [*entries, remote_addr or ""]
    for position in range(len(hops) - 1, -1, -1):
        if unread and position == 0:
            return None
        address = _parse_address(hops[position])
        if address is None:
            return None
        trusted = any(address in network for network in trusted_proxies)
        if not trusted or position == 0:
            return address
    return None


def _parse_address(text):
    """An IP address from a forwarded hop: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`,
    `[2001:db8::1]` or `[2001:db8::1]:80`; IPv4-mapped IPv6 reads as IPv4."""
    text = text.strip()
    if text.startswith("["):
        text, bracket, _ = text[1:].partition("]")
        if not bracket:
            return None
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address
