"""UAA's tokens for the API: the grant from the environment, and a token renewed in time.

A platform gives cf-discovery either a UAA client with the client_credentials grant or a
technical user (the password grant, through the cf CLI's own client).
"""

import base64
import time
import urllib.parse
import urllib.request
from pathlib import Path

from ._errors import _DiscoveryError

# A token is renewed when it has less than this many seconds (or half its life) left.
_TOKEN_MARGIN_SECONDS = 60


def _secret(environ, name):
    """The value of `name`, or of the file `name`_FILE names (a systemd credential, a
    mounted secret), without its final newline; "" if neither is set. Bytes that are not
    UTF-8 stay as they were (surrogate escapes, as the environment's do), and are sent
    to UAA as they were."""
    path = environ.get(f"{name}_FILE", "")
    if not path:
        return environ.get(name, "")
    try:
        return Path(path).read_bytes().decode(errors="surrogateescape").removesuffix("\n")
    except OSError as error:
        raise _DiscoveryError(f"{name}_FILE={path!r} cannot be read: {error.strerror}") from None


def _grant(environ):
    """UAA's grant from the environment: a technical user's password, or a client's."""
    username = environ.get("CF_USERNAME", "").strip()
    if username:
        password = _secret(environ, "CF_PASSWORD")
        if not password:
            raise _DiscoveryError("CF_USERNAME is set: set CF_PASSWORD or CF_PASSWORD_FILE too")
        # The cf CLI's own public client, whose secret is empty.
        return "password", {"username": username, "password": password}, "cf", ""
    client_id = environ.get("CF_CLIENT_ID", "").strip()
    client_secret = _secret(environ, "CF_CLIENT_SECRET")
    if not client_id or not client_secret:
        raise _DiscoveryError(
            "set CF_CLIENT_ID and CF_CLIENT_SECRET (or CF_CLIENT_SECRET_FILE),"
            " or CF_USERNAME and CF_PASSWORD (or CF_PASSWORD_FILE)"
        )
    return "client_credentials", {}, client_id, client_secret


class _Token:
    """The API's bearer token from UAA, asked for again shortly before it expires."""

    def __init__(self, grant):
        self.grant = grant  # (grant_type, form, basic auth user, its secret)
        self.value = None
        self.renew_at = 0.0

    def authorization(self, token_url, fetch):
        """The Authorization header for the API. A new token, when one is due, comes from
        `token_url` through `fetch(request, what)`, which counts and checks requests."""
        if self.value is None or time.monotonic() > self.renew_at:
            self._renew(token_url, fetch)
        return f"Bearer {self.value}"

    def forget(self):
        """Drop the token the API refused: the next request asks UAA for another."""
        self.value = None

    def _renew(self, token_url, fetch):
        grant_type, form, user, secret = self.grant
        # A secret's bytes as they were given; an error never quotes them.
        basic = base64.b64encode(f"{user}:{secret}".encode(errors="surrogateescape")).decode()
        fields = {"grant_type": grant_type, **form}
        request = urllib.request.Request(
            token_url,
            data=urllib.parse.urlencode(fields, errors="surrogateescape").encode(),
            headers={"Authorization": "Basic " + basic, "Accept": "application/json"},
        )
        started = time.monotonic()
        who = f"user {form['username']!r}" if "username" in form else f"client {user!r}"
        answer = fetch(request, f"UAA, for {who},")
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str):
            raise _DiscoveryError("UAA answered without an access token")
        # UAA says how long a token lives; one that does not say is renewed often.
        lifetime = float(answer.get("expires_in") or _TOKEN_MARGIN_SECONDS * 2)
        self.value = token
        self.renew_at = started + lifetime - min(_TOKEN_MARGIN_SECONDS, lifetime / 2)
