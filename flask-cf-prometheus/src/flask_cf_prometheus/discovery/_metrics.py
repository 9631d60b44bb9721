"""cf-discovery beside Prometheus: its own metrics, which Prometheus scrapes, and the
reload it asks of Prometheus when a job came or went."""

import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ._errors import _DiscoveryError
from ._http import _open_url


def _quoted(text):
    """A label value as the exposition format writes it: backslash, quote and newline
    escaped."""
    return json.dumps(text, ensure_ascii=False)


class _Health:
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
                    labels = ",".join(f"{key}={_quoted(given)}" for key, given in pairs)
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


def _reload_prometheus(url, timeout):
    """Ask Prometheus to reload, straight to it: never through a proxy of the environment,
    which is for the API."""
    request = urllib.request.Request(url.rstrip("/") + "/-/reload", method="POST")
    try:
        with _open_url(request, timeout, proxies={}):
            pass
    except urllib.error.HTTPError as error:
        hint = " (start it with --web.enable-lifecycle)" if error.code == 403 else ""
        raise _DiscoveryError(f"answered {error.code} {error.reason}{hint}") from None
    except (OSError, http.client.HTTPException) as error:
        raise _DiscoveryError(f"did not answer: {getattr(error, 'reason', error)}") from None
