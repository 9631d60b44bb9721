"""The CF API v3 client: its root document, authorised GETs, and lists read to the end.

Lists are filtered on the server and batched by GUIDs, and pages are followed to the
last, as the cf CLI does. The token goes to the API's own origins only.
"""

import urllib.parse
import urllib.request

from ._errors import _DiscoveryError
from ._http import _fetch_json, _origin, _secure_url
from ._uaa import _Token

# GUIDs per filtered request: keeps URLs short whatever the fleet's size.
_GUID_BATCH = 100
# The most results a page of the CF API v3 holds, and more pages than a list can take.
_PAGE_SIZE = 5000
_MAX_PAGES = 1000


def _api_url(value):
    """CF_API: https, or http for a loopback address only (a local stand-in)."""
    if not value:
        raise _DiscoveryError("CF_API is not set: the API's URL, e.g. https://api.example.com")
    return _secure_url(value, "CF_API")


class _Api:
    """The CF API v3, with a UAA token from the client credentials or password grant."""

    def __init__(self, url, grant, timeout, context=None, uaa_url=None):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.context = context
        self.requests = 0  # to the API and UAA, since the pass began
        self.embeds_instances = True  # until the API says it cannot
        self._token = _Token(grant)
        self._token_url = uaa_url.rstrip("/") + "/oauth/token" if uaa_url else None
        self._aliases = None  # origins of the API that its links may name

    def _fetch(self, request, what):
        self.requests += 1
        return _fetch_json(request, what, self.timeout, self.context)

    def _root(self):
        """Read the root document: where UAA is, and the API's own name for itself."""
        root = self._fetch(urllib.request.Request(self.url + "/"), f"the API at {self.url}")
        links = root.get("links") if isinstance(root, dict) else None
        links = links if isinstance(links, dict) else {}
        aliases = {_origin(self.url)}
        for name in ("self", "cloud_controller_v3"):
            href = (links.get(name) or {}).get("href")
            if isinstance(href, str) and urllib.parse.urlsplit(href).scheme == "https":
                aliases.add(_origin(href))
        token_url = self._token_url
        if token_url is None:
            login = (links.get("uaa") or links.get("login") or {}).get("href")
            if not isinstance(login, str) or not login:
                raise _DiscoveryError(
                    f"the API at {self.url} names no UAA in its root document: set CF_UAA_URL"
                )
            # The client's secret goes there: https, as for the API.
            token_url = _secure_url(login, "the UAA the API names").rstrip("/") + "/oauth/token"
        # Kept only whole: a root document that failed is read again at the next pass.
        self._aliases, self._token_url = aliases, token_url

    def get(self, url):
        if self._aliases is None:
            self._root()
        if _origin(url) not in self._aliases:
            # The token goes to the API only, whatever a response links to.
            raise _DiscoveryError(f"the API linked to {url}, outside {self.url}")
        # A link by the API's own name (behind an alias, CF_API): by the name it was given.
        parts, base = urllib.parse.urlsplit(url), urllib.parse.urlsplit(self.url)
        url = urllib.parse.urlunsplit((base.scheme, base.netloc, parts.path, parts.query, ""))
        for attempt in (1, 2):
            authorization = self._token.authorization(self._token_url, self._fetch)
            request = urllib.request.Request(
                url, headers={"Authorization": authorization, "Accept": "application/json"}
            )
            try:
                return self._fetch(request, f"GET {urllib.parse.urlsplit(url).path}")
            except _DiscoveryError as error:
                # A token revoked or expired early: one new token, one more try.
                if attempt == 1 and error.status == 401:
                    self._token.forget()
                    continue
                raise
        raise AssertionError("unreachable")

    def list(self, path, **params):
        """Every resource of a list endpoint, following pagination to the end; and the
        `included` resources of every page, by kind."""
        params = {**params, "per_page": _PAGE_SIZE}
        url = f"{self.url}{path}?{urllib.parse.urlencode(params, safe=',=/')}"
        resources, included = [], {}
        for _ in range(_MAX_PAGES):
            if not url:
                return resources, included
            page = self.get(url)
            if not isinstance(page, dict) or not isinstance(page.get("resources"), list):
                raise _DiscoveryError(f"GET {path} answered JSON that is not a list page")
            if len(page["resources"]) > _PAGE_SIZE:
                raise _DiscoveryError(f"GET {path} answered a page of more than {_PAGE_SIZE}")
            resources.extend(page["resources"])
            for kind, items in (page.get("included") or {}).items():
                included.setdefault(kind, []).extend(items)
            url = ((page.get("pagination") or {}).get("next") or {}).get("href")
        raise _DiscoveryError(f"GET {path} went on past {_MAX_PAGES} pages")

    def list_by_app(self, path, app_guids, **params):
        """A list endpoint filtered on app GUIDs, in batches; with its `included`."""
        resources, included = [], {}
        for start in range(0, len(app_guids), _GUID_BATCH):
            batch = ",".join(app_guids[start : start + _GUID_BATCH])
            more, more_included = self.list(path, app_guids=batch, **params)
            resources.extend(more)
            for kind, items in more_included.items():
                included.setdefault(kind, []).extend(items)
        return resources, included
