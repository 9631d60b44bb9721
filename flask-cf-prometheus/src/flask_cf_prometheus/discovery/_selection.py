"""Which labelled apps to scrape, and through which of their routes.

An app labelled prometheus.io/scrape=true is scraped unless it cannot be, for a reason the
log and a metric give. Its annotations say how: prometheus.io/path (default /metrics),
prometheus.io/auth (app-guid, its GUID as bearer token, or none), prometheus.io/route
(host.domain[/path]) and prometheus.io/job (default its name, less a -venerable suffix).
"""

import re

from ._errors import _DiscoveryError

_SCRAPE_LABEL = "prometheus.io/scrape"
_PATH_ANNOTATION = "prometheus.io/path"
_AUTH_ANNOTATION = "prometheus.io/auth"
_ROUTE_ANNOTATION = "prometheus.io/route"
_JOB_ANNOTATION = "prometheus.io/job"
_AUTH_MODES = ("app-guid", "none")
# The suffix cf-blue-green-deploy (and the like) give the old app during a deploy.
_RENAMED_SUFFIX = "-venerable"
# More instances than a process of any foundation runs: an app claiming more is skipped,
# rather than made into millions of jobs.
_MAX_INSTANCES = 10_000
_GUID = re.compile(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}")
# What each reason for not scraping a labelled app means, for the log.
_SKIPPED = {
    "stopped": "it is stopped",
    "no_web_process": "it has no web process",
    "no_instances": "its web process has no instance",
    "no_route": "it has no route to its web process",
    "tcp_route_only": "it has TCP routes only",
    "internal_route_only": "its only http routes are internal (container-to-container)",
    "wildcard_route_only": "its only http routes are wildcards",
    "path_route_only": f"its only http routes have a path: name one with {_ROUTE_ANNOTATION}",
    "route_not_found": f"{_ROUTE_ANNOTATION} names no http route of its own",
    "invalid_guid": "its GUID is not one",
    "too_many_instances": "a web process claims more instances than one can have",
    "invalid_text": "its name, space, organization, route or an annotation is not Unicode",
    "invalid_path": f"{_PATH_ANNOTATION}, below its route's path, is not a URL path",
}
# A path Prometheus can ask for: no space, control character, query or fragment.
_URL_PATH = re.compile(r"/[^\s\x00-\x1f\x7f-\x9f?#]{0,1023}")


def _unusable(app):
    """Why what the app's owner wrote cannot go into Prometheus's files, or None: each
    app's metadata is data, and one app's cannot make the files invalid for all."""
    texts = (app["name"], app["job"], app["space"], app["organization"], app["host"])
    try:
        for text in (*texts, app["metrics_path"]):
            text.encode()
    except UnicodeEncodeError:  # a lone surrogate, which the API's JSON can hold
        return "invalid_text"
    if not _URL_PATH.fullmatch(app["metrics_path"]):
        return "invalid_path"
    return None


def _web_processes(api, guids):
    """The apps' web processes; with the state of each instance, where the API embeds
    them (process_instances, experimental in Cloud Controller since 2026: one request
    for them all). An API without it refuses the parameter (400), and is asked
    without it from then on."""
    if api.embeds_instances:
        try:
            listed = api.list_by_app("/v3/processes", guids, types="web", embed="process_instances")
            return listed[0]
        except _DiscoveryError as error:
            if error.status != 400:
                raise
            api.embeds_instances = False
    return api.list_by_app("/v3/processes", guids, types="web")[0]


def _scrape_route(routes, domains, wanted):
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


def _discover(api):
    """Every labelled app that can be scraped, by GUID: its names, how to scrape it, its
    route and its web processes' instance counts; and why each other one cannot be."""
    apps, included = api.list(
        "/v3/apps", label_selector=f"{_SCRAPE_LABEL}=true", include="space.organization"
    )
    spaces = {space["guid"]: space for space in included.get("spaces", [])}
    organizations = {org["guid"]: org["name"] for org in included.get("organizations", [])}
    skipped = {}  # app GUID: (name, reason)
    started = []
    for app in apps:
        if not _GUID.fullmatch(app["guid"]):
            skipped[app["guid"]] = (app["name"], "invalid_guid")  # it could not name a job
        elif app["state"] != "STARTED":
            skipped[app["guid"]] = (app["name"], "stopped")
        else:
            started.append(app)
    guids = [app["guid"] for app in started]
    processes, states = {}, {}
    oversized = set()  # apps with a process past _MAX_INSTANCES: one app's, not a failure
    for process in _web_processes(api, guids):
        app_guid = process["relationships"]["app"]["data"]["guid"]
        # During a rolling or canary deploy an app has two web processes.
        instances = int(process["instances"])
        if instances > _MAX_INSTANCES:
            oversized.add(app_guid)
            continue
        processes.setdefault(app_guid, {})[process["guid"]] = instances
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
        route, reason = _scrape_route(
            routes.get(app["guid"], []), domains, annotations.get(_ROUTE_ANNOTATION)
        )
        if app["guid"] in oversized:
            reason = "too_many_instances"
        elif not web:
            reason = "no_web_process"
        elif not any(web.values()):
            reason = "no_instances"
        if reason:
            skipped[app["guid"]] = (app["name"], reason)
            continue
        space = spaces.get(app["relationships"]["space"]["data"]["guid"])
        organization_guid = (space or {}).get("relationships", {}).get("organization", {})
        organization_guid = organization_guid.get("data", {}).get("guid")
        if space is None or organization_guid not in organizations:
            # Asked for with include=space.organization: an answer without them would
            # blank every target's cf_space and cf_org.
            raise _DiscoveryError(
                f"GET /v3/apps answered without the space and organization of app {app['guid']}"
            )
        auth = annotations.get(_AUTH_ANNOTATION) or "app-guid"
        scraped = {
            "guid": app["guid"],
            "name": app["name"],
            "job": annotations.get(_JOB_ANNOTATION) or app["name"].removesuffix(_RENAMED_SUFFIX),
            "space": space.get("name", ""),
            "organization": organizations.get(organization_guid, ""),
            "host": route["url"].partition("/")[0],
            # The router passes the route's path on: the app serves metrics below it.
            "metrics_path": route.get("path", "")
            + (annotations.get(_PATH_ANNOTATION) or "/metrics"),
            "auth": auth if auth in _AUTH_MODES else "app-guid",
            "processes": web,
            "states": {key: state for key, state in states.items() if key[0] in web},
        }
        reason = _unusable(scraped)
        if reason:
            skipped[app["guid"]] = (app["name"], reason)
        else:
            found[app["guid"]] = scraped
    return found, skipped
