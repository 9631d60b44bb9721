"""A scrape job per instance, its target, and the shard that scrapes it.

The router picks an instance by a header (X-CF-APP-INSTANCE or X-CF-PROCESS-INSTANCE), and
Prometheus sets headers per job, never per target: so each instance has a job. The jobs
read their targets from 32 shared files, whatever the fleet's size. An instance's shard is
a hash of its header's value, so deploying one app moves no other instance between shards.
"""

import hashlib
import re
import urllib.parse
import zlib

from ._errors import _DiscoveryError
from ._selection import _GUID

# Files of targets: each is one file discovery (one inotify instance) in Prometheus,
# and each job sorts through the targets of its own file, so a change costs Prometheus
# jobs x targets / BUCKETS^2 (bench/discovery.py, "layouts").
_BUCKETS = 32
_FOUNDATION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def _foundation_name(environ, url):
    """CF_FOUNDATION, or the API's host name: the cf_foundation label and the files' names."""
    name = environ.get("CF_FOUNDATION", "").strip() or urllib.parse.urlsplit(url).hostname
    # (Not a GUID: the files of the layout before had such names, and are removed.)
    if not _FOUNDATION.fullmatch(name) or _GUID.fullmatch(name):
        raise _DiscoveryError(
            f"CF_FOUNDATION={name!r} must be letters, digits, '.', '_' and '-' (at most 63),"
            " and not a GUID"
        )
    return name


class _Settings:
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


def _bucket_file(foundation, job_name):
    """The file of targets a job reads: one of _BUCKETS, by a hash of its name."""
    return f"cf-{foundation}-{zlib.crc32(job_name.encode()) % _BUCKETS:02d}.json"


def _instance_state(app, processes, index):
    """What the API says of the instance an index reaches, if it says and it is not
    running: an index any of `processes` runs is running."""
    said = [app["states"].get((process, index)) for process in processes]
    if "RUNNING" in said or not any(said):
        return None
    return next(state for state in said if state)


def _job(name, app, settings, header, instance):
    """An instance's scrape job: it sends the header that picks the instance, and keeps,
    of the targets in its file, its own."""
    scrape = {
        "job_name": name,
        "scheme": settings.scheme,
        "metrics_path": app["metrics_path"],
        "http_headers": {header: dict(values=[instance])},
        "file_sd_configs": [{"files": [_bucket_file(settings.foundation, name)]}],
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


def _instance_jobs(found, settings):
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
                state = _instance_state(app, processes, index)
                if state:
                    # CRASHED, DOWN, STARTING: why its up is 0, or about to be.
                    labels["cf_instance_state"] = state
                target = {"targets": [app["host"]], "labels": labels}
                wanted[name] = (_job(name, app, settings, header, f"{key}:{index}"), target)
    return wanted
