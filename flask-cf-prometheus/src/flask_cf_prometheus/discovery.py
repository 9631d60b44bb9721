"""Keep Prometheus's scrape jobs equal to the Cloud Foundry fleet.

Every app labelled prometheus.io/scrape=true that the client can see is scraped on each
of its instances. The router picks an instance by a request header, and Prometheus sets
headers per job, never per target: so there is a job per instance, sending the header
X-CF-APP-INSTANCE: <app GUID>:<index> (or, with --instance-header=process,
X-CF-PROCESS-INSTANCE: <process GUID>:<index>). The jobs are in one file per foundation,
cf-<foundation>.yml, which prometheus.yml includes with scrape_config_files; their
targets are in 32 files, cf-<foundation>-NN.json, each read by one file discovery that
all the jobs naming it share, and each job keeps only its own target. So Prometheus
watches 32 files whatever the fleet's size (Linux lets a user watch from 128 file
discoveries by default), and a removed instance's target goes from a file, which ends
its series at once.

Annotations on the app say how to scrape it: prometheus.io/path (default /metrics),
prometheus.io/auth (app-guid: the app's GUID as bearer token, what the service accepts;
or none), prometheus.io/route (which of its routes, as host.domain[/path]) and
prometheus.io/job (the job label; default the app's name, less a blue-green deploy's
-venerable suffix).

With --shard I/N it writes only the instances of shard I of N (from 0): an instance's
shard is a hash of its header's value, so N agents, each with its own cf-discovery, scrape
every instance exactly once between them, and scaling or deploying one app moves no
other instance from its shard.

Without --once it repeats every interval. Either way it asks Prometheus to reload
(/-/reload) when a job came or went, and a job whose instance went stays, without a
target, for two minutes before it goes. When the API fails, the files of the last good
pass stay: a failed pass is "nothing changed", never "the fleet is empty".
Only the Python standard library is needed, so any python3 (3.11 or later) runs it.
"""

import argparse
import base64
import contextlib
import email.utils
import fcntl
import hashlib
import http.client
import ipaddress
import json
import os
import re
import socket
import ssl
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SCRAPE_LABEL = "prometheus.io/scrape"
PATH_ANNOTATION = "prometheus.io/path"
AUTH_ANNOTATION = "prometheus.io/auth"
ROUTE_ANNOTATION = "prometheus.io/route"
JOB_ANNOTATION = "prometheus.io/job"
AUTH_MODES = ("app-guid", "none")
# The suffix cf-blue-green-deploy (and the like) give the old app during a deploy.
RENAMED_SUFFIX = "-venerable"
# GUIDs per filtered request: keeps URLs short whatever the fleet's size.
GUID_BATCH = 100
# The most results a page of the CF API v3 holds, and more pages than a list can take.
PAGE_SIZE = 5000
MAX_PAGES = 1000
# A token is renewed when it has less than this many seconds (or half its life) left.
TOKEN_MARGIN_SECONDS = 60
# Files of targets: each is one file discovery (one inotify instance) in Prometheus,
# and each job sorts through the targets of its own file, so a change costs Prometheus
# jobs x targets / BUCKETS^2 (bench/discovery.py, "layouts").
BUCKETS = 32
# The longest a failing pass makes it wait before the next: a failure it backs off from
# (8 intervals at the most, and 5 minutes), and a rate limit's Retry-After.
BACKOFF_DOUBLINGS = 3
MAX_BACKOFF_SECONDS = 300
MAX_RETRY_AFTER_SECONDS = 3600
GUID = re.compile(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}")
FOUNDATION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
# The files of the layout before foundations and shared target files: one of jobs per
# app, one of targets per instance. Removed wherever found: Prometheus would refuse
# their jobs beside the same jobs in cf-<foundation>.yml.
LEGACY_FILE = re.compile(r"cf-[0-9a-f-]{36}(-\d+\.json|\.yml)")
ENVIRONMENT = """\
environment:
  CF_API                  the API's URL, e.g. https://api.example.com (required)
  CF_CLIENT_ID            a UAA client with the client_credentials grant, and
  CF_CLIENT_SECRET        its secret, or CF_CLIENT_SECRET_FILE, a file holding it
  CF_USERNAME             or a technical user (UAA's password grant, through the cf CLI's
  CF_PASSWORD             client "cf"), and the password, or CF_PASSWORD_FILE
  CF_UAA_URL              UAA's URL, where the API's root document names another
  CF_CA_CERT              a PEM file of the CAs to trust for the API and UAA
                          (default: the system's, or SSL_CERT_FILE)
  CF_FOUNDATION           the cf_foundation label and the files' names (default: the
                          API's host name)
  HTTPS_PROXY, NO_PROXY   a proxy for the API and UAA; never for the reload, which goes
                          straight to --prometheus
"""


class DiscoveryError(Exception):
    """A pass that failed: one line, never holding a credential. `retry_after` is how
    many seconds the API asked to be left alone, if it asked."""

    def __init__(self, message, status=None, retry_after=None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def cf_error(body):
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


def retry_after(headers, now):
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


class Api:
    """The CF API v3, with a UAA token from the client credentials or password grant."""

    def __init__(self, url, grant, timeout, context=None, uaa_url=None):
        self.url = url.rstrip("/")
        self.grant = grant  # (grant_type, form, basic auth user, its secret)
        self.timeout = timeout
        self.context = context
        self.requests = 0
        self._token = None
        self._renew_at = 0.0
        self._token_url = uaa_url.rstrip("/") + "/oauth/token" if uaa_url else None
        self._aliases = None  # origins of the API that its links may name
        self.embeds_instances = True  # until the API says it cannot

    def _fetch(self, request, what):
        self.requests += 1
        try:
            with open_url(request, self.timeout, self.context) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            detail = cf_error(error.read())
            message = f"{what} answered {error.code} {error.reason}"
            wait = retry_after(error.headers, time.time()) if error.code == 429 else None
            if wait is not None:
                message += f", come back in {wait:.0f} s"
            message += f" ({detail})" if detail else ""
            raise DiscoveryError(message, status=error.code, retry_after=wait) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", error)
            raise DiscoveryError(f"{what} did not answer: {reason}") from None
        try:
            return json.loads(body)
        except ValueError:
            raise DiscoveryError(f"{what} answered with something other than JSON") from None

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
                raise DiscoveryError(
                    f"the API at {self.url} names no UAA in its root document: set CF_UAA_URL"
                )
            # The client's secret goes there: https, as for the API.
            token_url = secure_url(login, "the UAA the API names").rstrip("/") + "/oauth/token"
        # Kept only whole: a root document that failed is read again at the next pass.
        self._aliases, self._token_url = aliases, token_url

    def _authorization(self):
        if self._token is None or time.monotonic() > self._renew_at:
            self._renew_token()
        return f"Bearer {self._token}"

    def _renew_token(self):
        if self._aliases is None:
            self._root()
        grant_type, form, user, secret = self.grant
        basic = base64.b64encode(f"{user}:{secret}".encode()).decode()
        request = urllib.request.Request(
            self._token_url,
            data=urllib.parse.urlencode({"grant_type": grant_type, **form}).encode(),
            headers={"Authorization": "Basic " + basic, "Accept": "application/json"},
        )
        started = time.monotonic()
        who = f"user {form['username']!r}" if "username" in form else f"client {user!r}"
        answer = self._fetch(request, f"UAA, for {who},")
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str):
            raise DiscoveryError("UAA answered without an access token")
        # UAA says how long a token lives; one that does not say is renewed often.
        lifetime = float(answer.get("expires_in") or TOKEN_MARGIN_SECONDS * 2)
        self._token = token
        self._renew_at = started + lifetime - min(TOKEN_MARGIN_SECONDS, lifetime / 2)

    def get(self, url):
        if self._aliases is None:
            self._root()
        if _origin(url) not in self._aliases:
            # The token goes to the API only, whatever a response links to.
            raise DiscoveryError(f"the API linked to {url}, outside {self.url}")
        # A link by the API's own name (behind an alias, CF_API): by the name it was given.
        parts, base = urllib.parse.urlsplit(url), urllib.parse.urlsplit(self.url)
        url = urllib.parse.urlunsplit((base.scheme, base.netloc, parts.path, parts.query, ""))
        for attempt in (1, 2):
            request = urllib.request.Request(
                url, headers={"Authorization": self._authorization(), "Accept": "application/json"}
            )
            try:
                return self._fetch(request, f"GET {urllib.parse.urlsplit(url).path}")
            except DiscoveryError as error:
                # A token revoked or expired early: one new token, one more try.
                if attempt == 1 and error.status == 401:
                    self._token = None
                    continue
                raise
        raise AssertionError("unreachable")

    def list(self, path, **params):
        """Every resource of a list endpoint, following pagination to the end; and the
        `included` resources of every page, by kind."""
        params = {**params, "per_page": PAGE_SIZE}
        url = f"{self.url}{path}?{urllib.parse.urlencode(params, safe=',=/')}"
        resources, included = [], {}
        for _ in range(MAX_PAGES):
            if not url:
                return resources, included
            page = self.get(url)
            if not isinstance(page, dict) or not isinstance(page.get("resources"), list):
                raise DiscoveryError(f"GET {path} answered JSON that is not a list page")
            resources.extend(page["resources"])
            for kind, items in (page.get("included") or {}).items():
                included.setdefault(kind, []).extend(items)
            url = ((page.get("pagination") or {}).get("next") or {}).get("href")
        raise DiscoveryError(f"GET {path} went on past {MAX_PAGES} pages")

    def list_by_app(self, path, app_guids, **params):
        """A list endpoint filtered on app GUIDs, in batches; with its `included`."""
        resources, included = [], {}
        for start in range(0, len(app_guids), GUID_BATCH):
            batch = ",".join(app_guids[start : start + GUID_BATCH])
            more, more_included = self.list(path, app_guids=batch, **params)
            resources.extend(more)
            for kind, items in more_included.items():
                included.setdefault(kind, []).extend(items)
        return resources, included


def discover(api):
    """Every labelled app that can be scraped, by GUID: its names, how to scrape it, its
    route and its web processes' instance counts; and why each other one cannot be."""
    apps, included = api.list(
        "/v3/apps", label_selector=f"{SCRAPE_LABEL}=true", include="space.organization"
    )
    spaces = {space["guid"]: space for space in included.get("spaces", [])}
    organizations = {org["guid"]: org["name"] for org in included.get("organizations", [])}
    skipped = {}  # app GUID: (name, reason)
    started = []
    for app in apps:
        if not GUID.fullmatch(app["guid"]):
            skipped[app["guid"]] = (app["name"], "invalid_guid")  # it could not name a job
        elif app["state"] != "STARTED":
            skipped[app["guid"]] = (app["name"], "stopped")
        else:
            started.append(app)
    guids = [app["guid"] for app in started]
    processes, states = {}, {}
    for process in web_processes(api, guids):
        app_guid = process["relationships"]["app"]["data"]["guid"]
        # During a rolling or canary deploy an app has two web processes.
        processes.setdefault(app_guid, {})[process["guid"]] = int(process["instances"])
        for instance in process.get("process_instances") or []:
            states[(process["guid"], int(instance["index"]))] = instance["state"]
    listed, included = api.list_by_app("/v3/routes", guids, include="domain")
    domains = {domain["guid"]: domain for domain in included.get("domains", [])}
    routes = {}
    for route in listed:
        for destination in route.get("destinations", []):
            if destination["app"].get("process", {}).get("type", "web") == "web":
                routes.setdefault(destination["app"]["guid"], []).append(route)
    found = {}
    for app in started:
        annotations = (app.get("metadata") or {}).get("annotations") or {}
        web = processes.get(app["guid"], {})
        route, reason = scrape_route(
            routes.get(app["guid"], []), domains, annotations.get(ROUTE_ANNOTATION)
        )
        if not web:
            reason = "no_web_process"
        elif not any(web.values()):
            reason = "no_instances"
        if reason:
            skipped[app["guid"]] = (app["name"], reason)
            continue
        space = spaces.get(app["relationships"]["space"]["data"]["guid"], {})
        organization_guid = (
            space.get("relationships", {}).get("organization", {}).get("data", {}).get("guid")
        )
        auth = annotations.get(AUTH_ANNOTATION) or "app-guid"
        found[app["guid"]] = {
            "guid": app["guid"],
            "name": app["name"],
            "job": annotations.get(JOB_ANNOTATION) or app["name"].removesuffix(RENAMED_SUFFIX),
            "space": space.get("name", ""),
            "organization": organizations.get(organization_guid, ""),
            "host": route["url"].partition("/")[0],
            # The router passes the route's path on: the app serves metrics below it.
            "metrics_path": route.get("path", "")
            + (annotations.get(PATH_ANNOTATION) or "/metrics"),
            "auth": auth if auth in AUTH_MODES else "app-guid",
            "processes": web,
            "states": {key: state for key, state in states.items() if key[0] in web},
        }
    return found, skipped


def web_processes(api, guids):
    """The apps' web processes; with the state of each instance, where the API embeds
    them (process_instances, experimental in Cloud Controller since 2026: one request
    for them all). An API without it refuses the parameter (400), and is asked
    without it from then on."""
    if api.embeds_instances:
        try:
            listed = api.list_by_app("/v3/processes", guids, types="web", embed="process_instances")
            return listed[0]
        except DiscoveryError as error:
            if error.status != 400:
                raise
            api.embeds_instances = False
    return api.list_by_app("/v3/processes", guids, types="web")[0]


def instance_state(app, processes, index):
    """What the API says of the instance an index reaches, if it says and it is not
    running: an index any of `processes` runs is running."""
    said = [app["states"].get((process, index)) for process in processes]
    if "RUNNING" in said or not any(said):
        return None
    return next(state for state in said if state)


def scrape_route(routes, domains, wanted):
    """The route an app is scraped through, and None; or None and why there is none.

    `wanted` (the route annotation) names one as host.domain[/path]. Otherwise: an http
    route on a domain Prometheus can reach (not internal, for container-to-container
    traffic), not a wildcard, without a path (the router does not strip it); a shared
    domain, the platform's, before an organisation's own (a CDN's, say); then by name."""

    def domain(route):
        return domains.get(route["relationships"]["domain"]["data"]["guid"], {})

    def reachable(route):
        return (
            route.get("protocol", "http") == "http"
            and not domain(route).get("internal")
            and route.get("host") != "*"
        )

    if wanted:
        wanted = re.sub(r"^https?://", "", wanted).rstrip("/")
        chosen = [route for route in routes if route["url"] == wanted and reachable(route)]
        return (chosen[0], None) if chosen else (None, "route_not_found")
    http = [route for route in routes if route.get("protocol", "http") == "http"]
    outside = [route for route in http if not domain(route).get("internal")]
    named = [route for route in outside if route.get("host") != "*"]
    whole = [route for route in named if not route.get("path")]
    for candidates, reason in (
        (routes, "no_route"),
        (http, "tcp_route_only"),
        (outside, "internal_route_only"),
        (named, "wildcard_route_only"),
        (whole, "path_route_only"),
    ):
        if not candidates:
            return None, reason

    def rank(route):
        owned = ((domain(route).get("relationships") or {}).get("organization") or {}).get("data")
        return bool(owned), route["url"]

    return min(whole, key=rank), None


# What each reason for not scraping a labelled app means, for the log.
SKIPPED = {
    "stopped": "it is stopped",
    "no_web_process": "it has no web process",
    "no_instances": "its web process has no instance",
    "no_route": "it has no route to its web process",
    "tcp_route_only": "it has TCP routes only",
    "internal_route_only": "its only http routes are internal (container-to-container)",
    "wildcard_route_only": "its only http routes are wildcards",
    "path_route_only": f"its only http routes have a path: name one with {ROUTE_ANNOTATION}",
    "route_not_found": f"{ROUTE_ANNOTATION} names no http route of its own",
    "invalid_guid": "its GUID is not one",
}


class Settings:
    """How the jobs reach the instances: from the command line."""

    def __init__(self, options, foundation):
        self.foundation = foundation
        self.scheme = options.scheme
        self.by_process = options.instance_header == "process"
        self.ca_file = options.scrape_ca_file
        self.proxy_url = options.scrape_proxy_url
        self.proxy_from_environment = options.scrape_proxy_from_environment
        self.shard = options.shard

    def scrapes(self, instance):
        """Whether this shard scrapes the instance named by its header's value."""
        if self.shard is None:
            return True
        index, count = self.shard
        digest = hashlib.sha256(instance.encode()).digest()
        return int.from_bytes(digest[:8], "big") % count == index


def bucket_file(foundation, job_name):
    return f"cf-{foundation}-{zlib.crc32(job_name.encode()) % BUCKETS:02d}.json"


def instance_jobs(found, settings):
    """Every instance's job and its target, by job name."""
    wanted = {}
    for guid, app in found.items():
        if settings.by_process:
            keys = [
                (process, "X-CF-PROCESS-INSTANCE", count)
                for process, count in sorted(app["processes"].items())
            ]
        else:
            # The router numbers the instances of each process from 0 and sends an index
            # to one of the processes that have it: the larger count covers both.
            keys = [(guid, "X-CF-APP-INSTANCE", max(app["processes"].values()))]
        for key, header, count in keys:
            for index in range(count):
                if not settings.scrapes(f"{key}:{index}"):
                    continue
                # Unique in Prometheus's whole configuration, whatever else it loads.
                name = f"cf-{settings.foundation}-{key}-{index}"
                labels = {
                    "__cf_job": name,
                    "job": app["job"],
                    "instance": f"{app['name']}/{index}",
                    "cf_foundation": settings.foundation,
                    "cf_org": app["organization"],
                    "cf_space": app["space"],
                    "cf_app": app["name"],
                    "cf_app_guid": guid,
                    "cf_instance_index": str(index),
                }
                if settings.by_process:
                    labels["cf_process_guid"] = key
                processes = [key] if settings.by_process else sorted(app["processes"])
                state = instance_state(app, processes, index)
                if state:
                    # CRASHED, DOWN, STARTING: why its up is 0, or about to be.
                    labels["cf_instance_state"] = state
                target = {"targets": [app["host"]], "labels": labels}
                wanted[name] = (job(name, app, settings, header, f"{key}:{index}"), target)
    return wanted


def job(name, app, settings, header, instance):
    """An instance's scrape job: it sends the header that picks the instance, and keeps,
    of the targets in its file, its own."""
    scrape = {
        "job_name": name,
        "scheme": settings.scheme,
        "metrics_path": app["metrics_path"],
        "http_headers": {header: dict(values=[instance])},
        "file_sd_configs": [{"files": [bucket_file(settings.foundation, name)]}],
        "relabel_configs": [{"source_labels": ["__cf_job"], "regex": name, "action": "keep"}],
        # The other targets of the file are dropped by every job but one: none is kept
        # for Prometheus's page of dropped targets (0 would keep them all).
        "keep_dropped_targets": 1,
    }
    if app["auth"] == "app-guid":
        scrape["authorization"] = {"type": "Bearer", "credentials": app["guid"]}
    if settings.ca_file:
        scrape["tls_config"] = {"ca_file": str(settings.ca_file)}
    if settings.proxy_url:
        scrape["proxy_url"] = settings.proxy_url
    if settings.proxy_from_environment:
        scrape["proxy_from_environment"] = True
    return scrape


def write_files(directory, files):
    """Write `files` (name: content) into the directory; return how many changed. Each
    is written whole under a name of its own and renamed into place, readable by its
    owner and its group only (a job holds the app's GUID as its credential): in a
    directory with the set-group-ID bit, the directory's group, which Prometheus can
    run in."""
    changed = 0
    for name, content in files.items():
        text = json.dumps(content, indent=2, sort_keys=True) + "\n"
        path = directory / name
        with contextlib.suppress(FileNotFoundError):
            if path.read_text() == text:
                continue
        descriptor, staging = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
        try:
            os.fchmod(descriptor, 0o640)
            with os.fdopen(descriptor, "w") as output:
                output.write(text)
            os.replace(staging, path)
        except BaseException:
            Path(staging).unlink(missing_ok=True)
            raise
        changed += 1
    return changed


def remove_files(directory, keep, ours):
    """Remove the files of the directory whose names match `ours`, but those in `keep`;
    any other file stays. Return how many went."""
    gone = [path for path in directory.iterdir() if ours.fullmatch(path.name)]
    gone = [path for path in gone if path.name not in keep]
    for path in gone:
        path.unlink()
    return len(gone)


class Fleet:
    """The files of one foundation, kept equal to its fleet from pass to pass.

    Prometheus marks a target's series stale at once when it goes from a file, so that
    `up` and the rest stop, but not when its job goes in a reload (they stay visible for
    the 5 minutes of a query's lookback), and a new route needs no reload. So a job whose
    instance is gone stays a while with no target, and then goes. What is retiring, and
    whether Prometheus has yet to reload, is kept in a state file beside the others, so
    that passes of --once, or a restart, go on where the last one stopped."""

    # Long enough for Prometheus to see the target go at its next scrape, at any usual
    # scrape interval, before the job goes.
    RETIRING_SECONDS = 120

    def __init__(self, output, settings, api, reloads=True):
        self.output = output
        self.settings = settings
        self.api = api  # the API's URL, kept with the state
        self.reloads = reloads  # False: Prometheus reloads by itself
        stem = f"cf-{settings.foundation}"
        self.jobs_file = f"{stem}.yml"
        self.state_file = output / f".{stem}.state.json"
        self.target_files = re.compile(re.escape(stem) + r"-\d\d\.json")
        self.jobs = {}
        self.retiring = {}  # job name: when it goes (Unix time)
        self.reload_pending = False
        # What the last run left; anything unreadable is as if it were not there.
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
            written = json.loads((output / self.jobs_file).read_text())["scrape_configs"]
            self.jobs = {scrape["job_name"]: scrape for scrape in written}
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
            state = json.loads(self.state_file.read_text())
            self.reload_pending = reloads and state.get("reload_pending") is True
            retiring = state["retiring"]
            self.retiring = {name: float(until) for name, until in retiring.items()}

    def remove_former_names(self):
        """Remove the files this API's discovery wrote under another foundation name
        (CF_FOUNDATION changed since): Prometheus would scrape every instance twice.
        Those of a discovery still running, which holds their lock, stay. Return the
        names whose files went."""
        removed = []
        for state_path in sorted(self.output.glob(".cf-*.state.json")):
            name = state_path.name.removeprefix(".cf-").removesuffix(".state.json")
            state = None
            with contextlib.suppress(OSError, ValueError):
                state = json.loads(state_path.read_text())
            if name == self.settings.foundation or not isinstance(state, dict):
                continue
            if state.get("api") != self.api:
                continue
            lock_path = self.output / f".cf-{name}.lock"
            with open(lock_path, "a") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                theirs = re.compile(re.escape(f"cf-{name}") + r"(\.yml|-\d\d\.json)")
                remove_files(self.output, (), theirs)
                state_path.unlink()
                lock_path.unlink()
            removed.append(name)
        if removed:
            self.note_reload()
        return removed

    def update(self, wanted):
        """Write the files for the jobs `instance_jobs` gave; return how many target
        files and how many job files changed (Prometheus reloads for the jobs only: it
        watches the target files itself)."""
        now = time.time()
        for name in self.jobs.keys() - wanted.keys():
            self.retiring.setdefault(name, now + self.RETIRING_SECONDS)
        self.retiring = {
            name: until
            for name, until in self.retiring.items()
            if until > now and name in self.jobs and name not in wanted
        }
        jobs = {name: scrape for name, (scrape, _) in wanted.items()}
        jobs.update((name, self.jobs[name]) for name in self.retiring)
        targets = {scrape["file_sd_configs"][0]["files"][0]: [] for scrape in jobs.values()}
        for _, (scrape, target) in sorted(wanted.items()):
            targets[scrape["file_sd_configs"][0]["files"][0]].append(target)
        listed = {"scrape_configs": [jobs[name] for name in sorted(jobs)]}
        if jobs != self.jobs:
            # Said before the jobs are written: a stop in between still reloads next time.
            self.note_reload()
        # A job's target file is there before the job, and goes after it.
        targets_changed = write_files(self.output, targets)
        jobs_changed = write_files(self.output, {self.jobs_file: listed})
        jobs_changed += remove_files(self.output, (), LEGACY_FILE)
        targets_changed += remove_files(self.output, targets, self.target_files)
        self.jobs = jobs
        if jobs_changed:
            self.note_reload()
        self.save()
        return targets_changed, jobs_changed

    def note_reload(self):
        if self.reloads and not self.reload_pending:
            self.reload_pending = True
            self.save()

    def reloaded(self):
        self.reload_pending = False
        self.save()

    def save(self):
        state = {"api": self.api, "retiring": self.retiring, "reload_pending": self.reload_pending}
        write_files(self.output, {self.state_file.name: state})


def quoted(text):
    """A label value as the exposition format writes it: backslash, quote and newline
    escaped."""
    return json.dumps(text, ensure_ascii=False)


class Health:
    """cf-discovery's own metrics, served for Prometheus at --metrics-address, each
    labelled with the foundation."""

    HELP = {
        "cf_discovery_passes_total": ("counter", "Discovery passes, by result."),
        "cf_discovery_last_success_timestamp_seconds": (
            "gauge",
            "When the last pass that reached the API whole ended, in Unix time.",
        ),
        "cf_discovery_labelled_apps": (
            "gauge",
            "Apps labelled prometheus.io/scrape=true the client could see, last good pass.",
        ),
        "cf_discovery_apps": ("gauge", "Labelled apps scraped, as of the last good pass."),
        "cf_discovery_apps_skipped": (
            "gauge",
            "Labelled apps not scraped, by reason, as of the last good pass.",
        ),
        "cf_discovery_targets": ("gauge", "Instances with a scrape job, as of the last good pass."),
        "cf_discovery_api_requests": ("gauge", "Requests to the CF API and UAA, last pass."),
        "cf_discovery_reloads_total": ("counter", "Requests to Prometheus to reload, by result."),
        "cf_discovery_reload_pending": (
            "gauge",
            "1 while jobs were written that Prometheus has not yet reloaded, else 0.",
        ),
    }

    def __init__(self, foundation):
        self.lock = threading.Lock()
        self.foundation = foundation
        self.values = {name: {} for name in self.HELP}
        for result in ("success", "failure"):
            self.values["cf_discovery_passes_total"][("result", result)] = 0
            self.values["cf_discovery_reloads_total"][("result", result)] = 0
        self.values["cf_discovery_last_success_timestamp_seconds"][()] = 0.0
        self.values["cf_discovery_reload_pending"][()] = 0

    def set(self, name, value, *label):
        with self.lock:
            self.values[name][label] = value

    def add(self, name, *label):
        with self.lock:
            self.values[name][label] += 1

    def succeeded(self, labelled, found, skipped, targets, requests):
        with self.lock:
            self.values["cf_discovery_passes_total"][("result", "success")] += 1
            self.values["cf_discovery_last_success_timestamp_seconds"][()] = time.time()
            self.values["cf_discovery_labelled_apps"][()] = labelled
            self.values["cf_discovery_apps"][()] = found
            reasons = Counter(reason for _, reason in skipped.values())
            self.values["cf_discovery_apps_skipped"] = {
                ("reason", reason): count for reason, count in reasons.items()
            }
            self.values["cf_discovery_targets"][()] = targets
            self.values["cf_discovery_api_requests"][()] = requests

    def exposition(self):
        text = []
        with self.lock:
            for name, (kind, help_text) in self.HELP.items():
                text += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
                for label, value in sorted(self.values[name].items()):
                    pairs = [("cf_foundation", self.foundation), *([label] if label else [])]
                    labels = ",".join(f"{key}={quoted(given)}" for key, given in pairs)
                    text.append(name + "{" + labels + "} " + str(value))
        return ("\n".join(text) + "\n").encode()

    def serve(self, address):
        host, _, port = address.rpartition(":")
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = health.exposition() if self.path == "/metrics" else b"not found\n"
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *arguments):
                pass

        host = host.strip("[]")

        class Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        server = Server((host, int(port)), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def one_pass(api, fleet):
    """Discover and write; return what was found and what changed. DiscoveryError
    leaves every file as it was."""
    api.requests = 0
    try:
        found, skipped = discover(api)
        wanted = instance_jobs(found, fleet.settings)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
        # A resource without a field the API documents: a proxy's answer, or a version
        # of the API that differs; a failed pass, not a crash.
        message = f"the API answered a shape cf-discovery does not know ({error!r})"
        raise DiscoveryError(message) from None
    try:
        changed = fleet.update(wanted)
    except OSError as error:
        raise DiscoveryError(f"cannot write into {fleet.output}: {error.strerror}") from None
    return found, skipped, len(wanted), changed


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect would carry the token or the client's secret elsewhere: answer it as
    the error it is for this client."""

    def redirect_request(self, request, fp, code, message, headers, new_url):
        return None


def opener(context=None, proxies=None):
    """An opener that follows no redirect; with a CA context for https, and the
    environment's proxies unless `proxies` (a ProxyHandler's mapping) says otherwise."""
    handlers = [_NoRedirects, urllib.request.HTTPSHandler(context=context)]
    if proxies is not None:
        handlers.append(urllib.request.ProxyHandler(proxies))
    return urllib.request.build_opener(*handlers)


_OPENERS = {}


def open_url(request, timeout, context=None, proxies=None):
    """Open an http or https URL (never a file: URL that an answer named)."""
    scheme = urllib.parse.urlsplit(request.full_url).scheme
    if scheme not in ("http", "https"):
        raise DiscoveryError(f"refusing to open a {scheme}: URL")
    key = (id(context), proxies is not None)
    if key not in _OPENERS:
        _OPENERS[key] = opener(context, proxies)
    return _OPENERS[key].open(request, timeout=timeout)


def reload_prometheus(url, timeout):
    """Ask Prometheus to reload, straight to it: never through a proxy of the environment,
    which is for the API."""
    request = urllib.request.Request(url.rstrip("/") + "/-/reload", method="POST")
    try:
        with open_url(request, timeout, proxies={}):
            pass
    except urllib.error.HTTPError as error:
        hint = " (start it with --web.enable-lifecycle)" if error.code == 403 else ""
        raise DiscoveryError(f"answered {error.code} {error.reason}{hint}") from None
    except (OSError, http.client.HTTPException) as error:
        raise DiscoveryError(f"did not answer: {getattr(error, 'reason', error)}") from None


def api_url(value):
    """CF_API: https, or http for a loopback address only (a local stand-in)."""
    if not value:
        raise DiscoveryError("CF_API is not set: the API's URL, e.g. https://api.example.com")
    return secure_url(value, "CF_API")


def secure_url(value, name):
    """An https URL, or http for a loopback address only."""
    parts = urllib.parse.urlsplit(value)
    if parts.scheme == "https" and parts.hostname:
        return value
    if parts.scheme == "http" and parts.hostname:
        try:
            loopback = ipaddress.ip_address(parts.hostname).is_loopback
        except ValueError:
            loopback = parts.hostname == "localhost"
        if loopback:
            return value
    raise DiscoveryError(
        f"{name}={value!r} must be an https:// URL (http:// only for a loopback address)"
    )


def _origin(url):
    """Scheme, host and port, as a browser compares origins."""
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.hostname, parts.port or {"http": 80, "https": 443}[parts.scheme]


def secret(environ, name):
    """The value of `name`, or of the file `name`_FILE names (a systemd credential, a
    mounted secret), without its final newline; "" if neither is set."""
    path = environ.get(f"{name}_FILE", "")
    if not path:
        return environ.get(name, "")
    try:
        return Path(path).read_text().removesuffix("\n")
    except OSError as error:
        raise DiscoveryError(f"{name}_FILE={path!r} cannot be read: {error.strerror}") from None


def grant(environ):
    """UAA's grant from the environment: a technical user's password, or a client's."""
    username = environ.get("CF_USERNAME", "").strip()
    if username:
        password = secret(environ, "CF_PASSWORD")
        if not password:
            raise DiscoveryError("CF_USERNAME is set: set CF_PASSWORD or CF_PASSWORD_FILE too")
        # The cf CLI's own public client, whose secret is empty.
        return "password", {"username": username, "password": password}, "cf", ""
    client_id = environ.get("CF_CLIENT_ID", "").strip()
    client_secret = secret(environ, "CF_CLIENT_SECRET")
    if not client_id or not client_secret:
        raise DiscoveryError(
            "set CF_CLIENT_ID and CF_CLIENT_SECRET (or CF_CLIENT_SECRET_FILE),"
            " or CF_USERNAME and CF_PASSWORD (or CF_PASSWORD_FILE)"
        )
    return "client_credentials", {}, client_id, client_secret


def tls_context(environ):
    """An SSL context trusting CF_CA_CERT's CAs, or None for the system's."""
    path = environ.get("CF_CA_CERT", "")
    if not path:
        return None
    try:
        return ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as error:
        reason = getattr(error, "strerror", None) or error
        raise DiscoveryError(f"CF_CA_CERT={path!r} is not a readable PEM file: {reason}") from None


def foundation_name(environ, url):
    name = environ.get("CF_FOUNDATION", "").strip() or urllib.parse.urlsplit(url).hostname
    # (Not a GUID: the files of the layout before had such names, and are removed.)
    if not FOUNDATION.fullmatch(name) or GUID.fullmatch(name):
        raise DiscoveryError(
            f"CF_FOUNDATION={name!r} must be letters, digits, '.', '_' and '-' (at most 63),"
            " and not a GUID"
        )
    return name


def locked(output, foundation):
    """Hold the foundation's lock in the output directory for the process's life: two
    discoveries of one foundation would undo each other's files."""
    output.mkdir(parents=True, exist_ok=True)
    handle = open(output / f".cf-{foundation}.lock", "a")  # noqa: SIM115 (held until exit)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DiscoveryError(
            f"another cf-discovery writes foundation {foundation!r}'s files in {output}:"
            " give each foundation its own CF_FOUNDATION"
        ) from None
    return handle


def http_url(text):
    """An http or https URL with a host, for argparse."""
    try:
        parts = urllib.parse.urlsplit(text)
        valid = parts.scheme in ("http", "https") and parts.hostname and parts.port != 0
    except ValueError:
        valid = False
    if not valid:
        raise argparse.ArgumentTypeError(f"{text!r} is not an http:// or https:// URL")
    return text


def host_and_port(text):
    """HOST:PORT, [IPv6]:PORT, for argparse: an address and a port, never a port alone
    (which would listen on every address)."""
    host, _, port = text.rpartition(":")
    if not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return text


def shard(text):
    match = re.fullmatch(r"([0-9]{1,6})/([0-9]{1,6})", text)
    if not match or int(match[1]) >= int(match[2]):
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N with 0 <= I < N, e.g. 0/2")
    return int(match[1]), int(match[2])


def seconds(text):
    """A positive number of seconds, for argparse."""
    value = float(text)
    if not 0 < value < 86400:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 0 to 86400")
    return value


def arguments(argv):
    parser = argparse.ArgumentParser(
        prog="cf-discovery",
        description=__doc__.split("\n\n")[0],
        epilog=ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--once", action="store_true", help="one pass (and reload), then exit: for cron"
    )
    parser.add_argument(
        "--interval", type=seconds, default=30, help="seconds between passes (default 30)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("cf-targets"),
        help="directory of the files (default: cf-targets/ in the working directory)",
    )
    parser.add_argument(
        "--prometheus",
        type=http_url,
        default="http://127.0.0.1:9090",
        help="Prometheus to ask to reload when a job came or went (default %(default)s)",
    )
    parser.add_argument(
        "--no-reload",
        action="store_true",
        help="never ask Prometheus to reload: it reloads by itself"
        " (--enable-feature=auto-reload-config)",
    )
    parser.add_argument(
        "--metrics-address",
        type=host_and_port,
        default="127.0.0.1:9188",
        help="HOST:PORT to serve cf-discovery's own metrics at (default %(default)s)",
    )
    parser.add_argument(
        "--timeout", type=seconds, default=10, help="seconds to wait for an answer (default 10)"
    )
    parser.add_argument(
        "--scheme",
        choices=("https", "http"),
        default="https",
        help="how Prometheus reaches the routes (default https)",
    )
    parser.add_argument(
        "--instance-header",
        choices=("app", "process"),
        default="app",
        help="app: X-CF-APP-INSTANCE, which every router honours, a job per index;"
        " process: X-CF-PROCESS-INSTANCE (gorouter from 2025), a job per instance of each"
        " web process, so both processes of a deploy are scraped (default app)",
    )
    parser.add_argument(
        "--scrape-ca-file",
        type=lambda text: Path(text).resolve(),
        help="CA file the jobs trust for the routes' TLS",
    )
    parser.add_argument(
        "--shard",
        type=shard,
        help="I/N: only the instances of shard I of N (from 0), for N agents that share"
        " a fleet, each with its own --output",
    )
    proxy = parser.add_mutually_exclusive_group()
    proxy.add_argument("--scrape-proxy-url", type=http_url, help="a proxy for the jobs")
    proxy.add_argument(
        "--scrape-proxy-from-environment",
        action="store_true",
        help="the jobs use the proxy of Prometheus's environment (HTTPS_PROXY, NO_PROXY)",
    )
    return parser.parse_args(argv)


def log(message):
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"{stamp} cf-discovery: {message}", file=sys.stderr, flush=True)


def summary(found, skipped, targets, changed, requests):
    counts = Counter(reason for _, reason in skipped.values())
    reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(counts.items()))
    return (
        f"{len(found) + len(skipped)} labelled apps: {len(found)} scraped, {len(skipped)}"
        f" skipped{f' ({reasons})' if reasons else ''}; {targets} targets,"
        f" {sum(changed)} files changed, {requests} requests"
    )


def main(argv=None):
    options = arguments(argv)
    try:
        url = api_url(os.environ.get("CF_API", "").strip())
        uaa = os.environ.get("CF_UAA_URL", "").strip()
        uaa = secure_url(uaa, "CF_UAA_URL") if uaa else None
        api = Api(url, grant(os.environ), options.timeout, tls_context(os.environ), uaa)
        foundation = foundation_name(os.environ, url)
        lock = locked(options.output, foundation)
    except DiscoveryError as error:
        log(str(error))
        return 2
    except OSError as error:
        log(f"cannot use --output={options.output}: {error.strerror}")
        return 2
    with lock:
        fleet = Fleet(options.output, Settings(options, foundation), url, not options.no_reload)
        try:
            for name in fleet.remove_former_names():
                log(f"removed the files of foundation {name!r}, this API's former CF_FOUNDATION")
        except OSError as error:
            log(f"cannot use --output={options.output}: {error.strerror}")
            return 2
        return run(options, api, fleet)


def run(options, api, fleet):
    health = Health(fleet.settings.foundation)
    if not options.once:
        try:
            health.serve(options.metrics_address)
        except (OSError, ValueError) as error:
            log(f"cannot serve its metrics at --metrics-address={options.metrics_address}: {error}")
            return 2
    reported = {}  # the skipped apps already logged, and why
    failures = 0
    while True:
        started = time.monotonic()
        wait = options.interval
        try:
            found, skipped, targets, changed = one_pass(api, fleet)
        except Exception as error:  # a failed pass, whatever failed: the loop goes on
            failures += 1
            reason = error if isinstance(error, DiscoveryError) else repr(error)
            health.add("cf_discovery_passes_total", "result", "failure")
            health.set("cf_discovery_api_requests", api.requests)
            log(f"pass failed, the last good targets stay: {reason}")
            asked = getattr(error, "retry_after", None)
            if asked is not None:
                # As long as the API asks, from its answer, within reason.
                asked = min(max(asked, options.interval), MAX_RETRY_AFTER_SECONDS)
                wait = asked + (time.monotonic() - started)
            else:
                # Whatever failed (an API down, a secret UAA refuses): less and less often.
                backoff = options.interval * 2 ** min(failures - 1, BACKOFF_DOUBLINGS)
                wait = max(min(backoff, MAX_BACKOFF_SECONDS), options.interval)
            code = 1
        else:
            failures, code = 0, 0
            health.succeeded(len(found) + len(skipped), len(found), skipped, targets, api.requests)
            for guid, (name, why) in skipped.items():
                if reported.get(guid) != why:
                    log(f"not scraping app {name} ({guid}): {SKIPPED[why]}")
            reported = dict(skipped)
            log(summary(found, skipped, targets, changed, api.requests))
            if not found and not skipped:
                log(
                    f"no app labelled {SCRAPE_LABEL}=true is visible: the client needs a"
                    " space role (SpaceAuditor) in every space to watch"
                )
        if fleet.reload_pending and not options.no_reload:
            try:
                reload_prometheus(options.prometheus, options.timeout)
            except DiscoveryError as error:
                health.add("cf_discovery_reloads_total", "result", "failure")
                log(f"Prometheus at {options.prometheus} did not reload: {error}")
                code = 1
            else:
                health.add("cf_discovery_reloads_total", "result", "success")
                try:
                    fleet.reloaded()
                except OSError as error:
                    log(f"cannot write into {fleet.output}: {error.strerror}")
                    code = 1
        health.set("cf_discovery_reload_pending", int(fleet.reload_pending))
        if options.once:
            return code
        time.sleep(max(0.0, wait - (time.monotonic() - started)))


if __name__ == "__main__":
    sys.exit(main())
