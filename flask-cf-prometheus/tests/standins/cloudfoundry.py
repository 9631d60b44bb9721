"""A stand-in for the Cloud Foundry API v3 and its UAA, on loopback, for cf-discovery.

Cloud Foundry itself cannot run here, so this serves the response shapes its own
documentation gives (cloudfoundry/cloud_controller_ng, docs/v3/source/includes, published
at https://v3-apidocs.cloudfoundry.org; cloudfoundry/uaa, TokenEndpointDocs.java):

- `GET /`: the global root document, `links.uaa.href` and `links.login.href` (root).
- `POST /oauth/token`: UAA's client credentials grant, the client's id and secret in HTTP
  basic auth; or its password grant, with the cf CLI's client `cf:` and a user's name and
  password; `{"access_token", "token_type": "bearer", "expires_in"}`, or 401
  `{"error": "invalid_client"}` for a wrong secret.
- `GET /v3/apps`: `label_selector` (`key=value` requirements), `include=space.organization`
  with `included.spaces` and `included.organizations`, pagination with
  `pagination.next.href` repeating the filters (resources/apps/_list.md.erb).
- `GET /v3/processes`: `app_guids` and `types` filters; a rolling deploy lists two `web`
  processes for one app (app/actions/deployment_create.rb, clone_existing_web_process);
  `embed=process_instances` puts each instance's `index`, `state` and `since` in
  `process_instances` (concepts/_embed.md.erb, experimental), or, for an API older than
  that, a 400 `CF-BadQueryParameter`.
- `GET /v3/routes`: `app_guids` filter, `include=domain`; `url` is host.domain and path
  (http) or domain:port (tcp), without a scheme; `host` may be `*` (a wildcard);
  destinations name the app and its process type (resources/routes/_object.md.erb,
  _destination_object.md.erb); a domain is `internal` or not, and shared or owned by an
  organisation (`relationships.organization.data`, resources/domains/_object.md.erb).
- 401 `CF-InvalidAuthToken` for an unknown or expired token (concepts/_errors.md.erb).
- 429 from the rate limiter: `Retry-After` seconds, `X-RateLimit-Reset` in Unix seconds,
  and `{"errors": [{"code": 10013, "title": "CF-RateLimitExceeded", ...}]}`
  (cloud_controller_ng middleware/rate_limiter.rb, errors/v2.yml; docs.cloudfoundry.org,
  running/rate-limit-cloud-controller-api.html).
- `external_url`: the name the API gives itself in its root document and its links (an
  API reached through an alias), when the tests set one.

Pages hold at most `page_size` resources whatever `per_page` asks, so that a small fleet
spans pages. Faults of the API (not of UAA) are switched on with `fail_with`: "500",
"hang", "trickle" (a byte every half second), "endless" (an answer of 64 MiB),
"bad_json", "bad_shape" (a process without its fields), "redirect" (elsewhere,
where the token must not go), "429" (`rate_limit_retry_after` seconds); tokens can be
revoked after a number of API requests, and each request's time is kept.
"""

import base64
import contextlib
import json
import os
import random
import re
import secrets
import threading
import time
import types
import urllib.error
import urllib.parse
import urllib.request
import uuid

from .loopback import StandIn, serving


class CloudFoundry:
    def __init__(
        self, client_id="prometheus", client_secret="discovery-secret", page_size=2, seed=0
    ):
        # GUIDs drawn from a seeded generator: what depends on them (which shard an
        # instance falls in) is the same every run. Another platform takes another seed.
        self._guids = random.Random(seed)
        self.client_id = client_id
        self.client_secret = client_secret
        self.page_size = page_size
        self.token_lifetime = 3600
        self.tokens = {}
        self.organizations = {}
        self.spaces = {}
        self.apps = {}
        self.processes = {}
        self.routes = {}
        self.domains = {}
        self.requests = []
        self.fault = None
        self.revoke_tokens_after = None
        self.rate_limit_retry_after = 5
        self.rate_limit_says_retry_after = True  # else X-RateLimit-Reset alone
        self.names_uaa = True  # the root document's uaa and login links
        self.users = {}  # a technical user's name: password, for the password grant
        self.embeds_instances = True  # an API older than embed=process_instances: False
        self.instance_states = {}  # (process GUID, index): state, where not RUNNING
        self.includes = True  # False: "included": [] whatever include= asks for
        self.authorized = 0
        self.url = None
        self.external_url = None
        self.request_times = []
        self._lock = threading.Lock()

    # The platform's state, as cf push, cf scale and cf set-label would leave it.

    def guid(self):
        return str(uuid.UUID(int=self._guids.getrandbits(128), version=4))

    def organization(self, name):
        guid = self.guid()
        self.organizations[guid] = {"guid": guid, "name": name}
        return guid

    def space(self, name, organization):
        guid = self.guid()
        self.spaces[guid] = {
            "guid": guid,
            "name": name,
            "relationships": {"organization": {"data": {"guid": organization}}},
        }
        return guid

    def push(self, name, space, route_url, instances, labels=None, annotations=None):
        """An app with a web process of `instances` and a route; its GUID."""
        guid = self.guid()
        self.apps[guid] = {
            "guid": guid,
            "name": name,
            "state": "STARTED",
            "relationships": {"space": {"data": {"guid": space}}},
            "metadata": {"labels": labels or {}, "annotations": annotations or {}},
        }
        self.add_web_process(guid, instances)
        self.map_route(guid, route_url)
        return guid

    def add_web_process(self, app, instances):
        guid = self.guid()
        self.processes[guid] = {
            "guid": guid,
            "type": "web",
            "instances": instances,
            "relationships": {"app": {"data": {"guid": app}}},
        }
        return guid

    def scale(self, app, instances):
        for process in self.processes.values():
            if process["relationships"]["app"]["data"]["guid"] == app:
                process["instances"] = instances

    def map_route(
        self, app, url, path="", internal=False, protocol="http", owner=None, process="web"
    ):
        """A route host.domain[path] to the app's `process`; for tcp, `url` is the domain
        and a port; `owner`, an organisation's GUID, makes the domain private to it."""
        guid = self.guid()
        host, _, domain = url.partition(".")
        if protocol == "tcp":
            host, domain = "", url.partition(":")[0]
        if domain not in self.domains:
            self.domains[domain] = {
                "guid": self.guid(),
                "name": domain,
                "internal": internal,
                "relationships": {"organization": {"data": owner and {"guid": owner}}},
            }
        self.routes[guid] = {
            "guid": guid,
            "protocol": protocol,
            "host": host,
            "path": path,
            "url": url + path,
            "relationships": {"domain": {"data": {"guid": self.domains[domain]["guid"]}}},
            "destinations": [
                {
                    "guid": self.guid(),
                    "app": {"guid": app, "process": {"type": process}},
                    "weight": None,
                    "port": 8080,
                    "protocol": "http1",
                }
            ],
        }
        return guid

    def unmap_routes(self, app):
        for guid, route in list(self.routes.items()):
            if any(d["app"]["guid"] == app for d in route["destinations"]):
                del self.routes[guid]

    def stop(self, app):
        self.apps[app]["state"] = "STOPPED"

    def delete(self, app):
        self.unmap_routes(app)
        del self.apps[app]
        for guid, process in list(self.processes.items()):
            if process["relationships"]["app"]["data"]["guid"] == app:
                del self.processes[guid]

    def fail_with(self, fault):
        self.fault = fault

    def expire_tokens(self):
        self.tokens.clear()

    def discovery_environment(self, **more):
        """The environment cf-discovery needs to reach this API as its client."""
        return {
            **os.environ,
            "CF_API": self.url,
            "CF_CLIENT_ID": self.client_id,
            "CF_CLIENT_SECRET": self.client_secret,
            **more,
        }

    def api_requests(self):
        return [path for method, path in self.requests if path.startswith("/v3/")]

    # The HTTP side.

    def handle(self, handler):
        parts = urllib.parse.urlsplit(handler.path)
        query = urllib.parse.parse_qs(parts.query)
        with self._lock:
            self.requests.append((handler.command, handler.path))
            self.request_times.append((time.monotonic(), parts.path))
        if parts.path.startswith("/v3/"):
            if self.fault == "429":
                wait = self.rate_limit_retry_after
                error = {
                    "code": 10013,
                    "title": "CF-RateLimitExceeded",
                    "detail": "Rate Limit Exceeded",
                }
                headers = {
                    "X-RateLimit-Limit": "2000",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(int(time.time()) + wait),
                }
                if self.rate_limit_says_retry_after:
                    headers["Retry-After"] = str(wait)
                return 429, {"errors": [error]}, headers
            if self.fault == "hang":
                time.sleep(30)
                return 504, {"errors": []}
            if self.fault == "500":
                error = {"code": 10001, "title": "CF-ServerError", "detail": "An error occurred"}
                return 500, {"errors": [error]}
            if self.fault == "bad_json":
                return 200, "<html>a proxy's error page</html>"
            if self.fault == "redirect":
                return 302, {}, {"Location": "http://127.0.0.2:9/elsewhere"}
            if self.fault == "bad_shape" and parts.path == "/v3/processes":
                return 200, self.list_page(parts.path, query, [{"guid": self.guid()}])
        if handler.command == "POST" and parts.path == "/oauth/token":
            return self.token(handler)
        if parts.path == "/":
            return 200, {
                "links": {
                    "self": {"href": self.named},
                    "cloud_controller_v3": {"href": f"{self.named}/v3"},
                    "login": {"href": self.url} if self.names_uaa else None,
                    "uaa": {"href": self.url} if self.names_uaa else None,
                    "credhub": None,
                }
            }
        token = (handler.headers.get("Authorization") or "").removeprefix("Bearer ")
        if self.tokens.get(token, 0) < time.monotonic():
            return 401, {
                "errors": [
                    {"code": 1000, "title": "CF-InvalidAuthToken", "detail": "Invalid Auth Token"}
                ]
            }
        with self._lock:
            self.authorized += 1
            if self.authorized == self.revoke_tokens_after:
                self.tokens.clear()  # revoked: this request is the last it served
        if parts.path == "/v3/apps":
            return 200, self.apps_page(parts.path, query)
        if parts.path == "/v3/processes":
            embed = query.get("embed") == ["process_instances"]
            if "embed" in query and not (embed and self.embeds_instances):
                error = {
                    "code": 10005,
                    "title": "CF-BadQueryParameter",
                    "detail": "The query parameter is invalid:"
                    " Unknown query parameter(s): 'embed'.",
                }
                return 400, {"errors": [error]}
            page = self.list_page(parts.path, query, self.matching_processes(query))
            if embed:
                page["resources"] = [self.with_instances(p) for p in page["resources"]]
            return 200, page
        if parts.path == "/v3/routes":
            page = self.list_page(parts.path, query, self.matching_routes(query))
            if query.get("include") == ["domain"]:
                used = {r["relationships"]["domain"]["data"]["guid"] for r in page["resources"]}
                domains = [domain for domain in self.domains.values() if domain["guid"] in used]
                page["included"] = {"domains": domains}
            return 200, page
        return 404, {"errors": [{"code": 10000, "title": "CF-NotFound", "detail": "Unknown"}]}

    @property
    def named(self):
        """The URL the API gives for itself."""
        return self.external_url or self.url

    def token(self, handler):
        length = int(handler.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(handler.rfile.read(length).decode())
        given = handler.headers.get("Authorization", "").removeprefix("Basic ")
        if form.get("grant_type") == ["password"]:
            # The cf CLI's client, "cf" with an empty secret, and a user's password.
            user = (form.get("username", [""])[0], form.get("password", [""])[0])
            if base64.b64decode(given) != b"cf:" or self.users.get(user[0]) != user[1]:
                return 401, {"error": "unauthorized", "error_description": "Bad credentials"}
        else:
            # A secret of bytes that are not UTF-8 is given as the environment holds them.
            expected = f"{self.client_id}:{self.client_secret}".encode(errors="surrogateescape")
            if (
                form.get("grant_type") != ["client_credentials"]
                or base64.b64decode(given) != expected
            ):
                return 401, {"error": "invalid_client", "error_description": "Bad credentials"}
        token = secrets.token_hex(16)
        self.tokens[token] = time.monotonic() + self.token_lifetime
        return 200, {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": self.token_lifetime,
            "scope": "cloud_controller.read",
            "jti": str(uuid.uuid4()),
        }

    def apps_page(self, path, query):
        requirements = _label_requirements(query.get("label_selector", [""])[0])
        apps = [
            app
            for app in self.apps.values()
            if all(app["metadata"]["labels"].get(key) == value for key, value in requirements)
        ]
        page = self.list_page(path, query, apps)
        if query.get("include") == ["space.organization"]:
            resources = page["resources"]
            spaces = {app["relationships"]["space"]["data"]["guid"] for app in resources}
            organizations = {
                self.spaces[space]["relationships"]["organization"]["data"]["guid"]
                for space in spaces
            }
            page["included"] = {
                "spaces": [self.spaces[guid] for guid in sorted(spaces)],
                "organizations": [self.organizations[guid] for guid in sorted(organizations)],
            }
            if not self.includes:
                page["included"] = []
        return page

    def with_instances(self, process):
        """The process with its instances' states embedded, before its relationships
        (cloud_controller_ng, embed_process_instances_decorator.rb)."""
        instances = [
            {
                "index": index,
                "state": self.instance_states.get((process["guid"], index), "RUNNING"),
                "since": 1764750000.0,
            }
            for index in range(process["instances"])
        ]
        return {**process, "process_instances": instances}

    def matching_processes(self, query):
        apps = _guid_filter(query, "app_guids")
        kinds = _guid_filter(query, "types")
        return [
            process
            for process in self.processes.values()
            if (apps is None or process["relationships"]["app"]["data"]["guid"] in apps)
            and (kinds is None or process["type"] in kinds)
        ]

    def matching_routes(self, query):
        apps = _guid_filter(query, "app_guids")
        return [
            route
            for route in self.routes.values()
            if apps is None or any(d["app"]["guid"] in apps for d in route["destinations"])
        ]

    def list_page(self, path, query, resources):
        per_page = min(int(query.get("per_page", ["50"])[0]), self.page_size)
        number = int(query.get("page", ["1"])[0])
        pages = max(1, -(-len(resources) // per_page))

        def link(page):
            if not 1 <= page <= pages:
                return None
            params = {key: values[0] for key, values in query.items()}
            params.update(page=page, per_page=per_page)
            encoded = urllib.parse.urlencode(sorted(params.items()))
            return {"href": f"{self.named}{path}?{encoded}"}

        return {
            "pagination": {
                "total_results": len(resources),
                "total_pages": pages,
                "first": link(1),
                "last": link(pages),
                "next": link(number + 1),
                "previous": link(number - 1),
            },
            "resources": resources[(number - 1) * per_page : number * per_page],
        }


def _label_requirements(selector):
    """`key=value` requirements of a label selector, the form cf-discovery sends."""
    requirements = []
    for requirement in filter(None, selector.split(",")):
        match = re.fullmatch(r"([\w\-./]+)==?([\w\-.]*)", requirement)
        assert match, f"a label selector requirement the stand-in does not know: {requirement}"
        requirements.append(match.groups())
    return requirements


def _guid_filter(query, name):
    return set(query[name][0].split(",")) if name in query else None


@contextlib.contextmanager
def cloudfoundry_api(platform, tls=None):
    """Serve `platform` on loopback, with its `url` set; over https with `tls`, a server
    SSLContext."""

    class Handler(StandIn):
        def do_GET(self):
            answer = platform.handle(self)
            if platform.fault in ("trickle", "endless") and self.path.startswith("/v3/"):
                self.stream(platform.fault)
            else:
                self.answer_json(*answer)

        do_POST = do_GET

        def stream(self, fault):
            """trickle: a byte of the body every half second, for 30 s at most, which no
            timeout of a read ends; endless: 1 MiB after 1 MiB, 64 MiB at most."""
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if fault == "trickle":
                self.send_header("Content-Length", "60")
            self.send_header("Connection", "close")
            self.end_headers()
            chunk, pause = (b" ", 0.5) if fault == "trickle" else (b" " * (1 << 20), 0)
            for _ in range(60 if fault == "trickle" else 64):
                try:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                except OSError:  # the client gave up, as it should
                    return
                time.sleep(pause)

        def answer_json(self, status, body, headers=None):
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            with contextlib.suppress(OSError):  # the client gave up waiting (the hang fault)
                content_type = ("Content-Type", "application/json")
                self.answer(status, data, [*(headers or {}).items(), content_type])

    with serving(Handler, tls) as server:
        scheme = "https" if tls is not None else "http"
        platform.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
        yield platform


GUID = r"[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}"
APP_INSTANCE = re.compile(rf"({GUID}):(\d+)")


@contextlib.contextmanager
def fleet_router(platform, tls=None):
    """A stand-in for the router in front of every instance of `platform`: it picks an
    instance as gorouter does (routing-release, handlers/lookup.go) — by
    X-CF-APP-INSTANCE, "<app GUID>:<index>", checked first, from the last process that
    has the index; else by X-CF-PROCESS-INSTANCE, "<process GUID>:<index>" — and answers
    for it with a metric naming the instance that answered: its process and index. An
    unknown instance gets gorouter's 400 with X-Cf-Routererror: unknown_route. Over
    https with `tls`, a server SSLContext."""

    class Handler(StandIn):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            answered = self.instance()
            if answered is None:
                self.answer(400, b"400 Bad Request", [("X-Cf-Routererror", "unknown_route")])
                return
            process, index = answered
            body = (
                "# TYPE stand_in_answered gauge\n"
                f'stand_in_answered{{process="{process}",index="{index}"}} 1\n'
            ).encode()
            self.answer(200, body, [("Content-Type", "text/plain; version=0.0.4")])

        def instance(self):
            processes = list(platform.processes.values())
            app = APP_INSTANCE.fullmatch(self.headers.get("X-CF-APP-INSTANCE") or "")
            if app:
                guid, index = app[1], int(app[2])
                having = [
                    process["guid"]
                    for process in processes
                    if process["relationships"]["app"]["data"]["guid"] == guid
                    and index < process["instances"]
                ]
                return (having[-1], index) if having else None
            chosen = APP_INSTANCE.fullmatch(self.headers.get("X-CF-PROCESS-INSTANCE") or "")
            if chosen:
                guid, index = chosen[1], int(chosen[2])
                process = platform.processes.get(guid)
                if process and index < process["instances"]:
                    return guid, index
            return None

    with serving(Handler, tls) as server:
        yield f"127.0.0.1:{server.server_address[1]}"


@contextlib.contextmanager
def cloudfoundry_router(backends):
    """A stand-in for Cloud Foundry's router, on loopback: it honours X-CF-APP-INSTANCE as
    the Cloud Foundry documentation describes (routing-release, "How to use X-CF headers"):
    "<app GUID>:<index>", a 400 with X-Cf-Routererror for a malformed value or an unknown
    instance, and sends each instance's requests on to its own service: `backends` maps
    "<app GUID>:<index>" to the service's URL, and the test changes it as it scales."""
    seen = []
    refused = []
    guid = r"[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}"
    header_format = re.compile(rf"{guid}:\d+")

    class Handler(StandIn):
        def do_GET(self):
            header = self.headers.get("X-CF-APP-INSTANCE")
            if header is None or not header_format.fullmatch(header):
                return self.refuse(header, "invalid_cf_app_instance_header")
            service_url = backends.get(header)
            if service_url is None:
                return self.refuse(header, "unknown_route")
            seen.append((header, self.headers.get("Authorization")))
            forwarded = {
                name: value
                for name, value in self.headers.items()
                if name.lower() in ("authorization", "accept", "accept-encoding")
            }
            request = urllib.request.Request(service_url + self.path, headers=forwarded)
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    self.forward(response.status, response.headers, response.read())
            except urllib.error.HTTPError as error:
                self.forward(error.code, error.headers, error.read())

        def forward(self, status, headers, body):
            kept = [
                (name, headers[name])
                for name in ("Content-Type", "Content-Encoding")
                if headers.get(name)
            ]
            self.answer(status, body, kept)

        def refuse(self, header, error):
            refused.append((header, error))
            self.answer(400, b"400 Bad Request", [("X-Cf-Routererror", error)])

    with serving(Handler) as server:
        yield types.SimpleNamespace(
            address=f"127.0.0.1:{server.server_address[1]}", seen=seen, refused=refused
        )
