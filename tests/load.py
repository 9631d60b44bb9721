"""Bounded load and scraping against a service on loopback: every loop stops by itself."""

import http.client
import re
import threading
import time
import urllib.request

SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{.*\})? (?P<value>\S+)$")


def total(exposition, name):
    """Sum of all samples called `name` in a Prometheus text exposition."""
    values = [
        float(match["value"])
        for line in exposition.splitlines()
        if (match := SAMPLE.match(line)) and match["name"] == name
    ]
    return sum(values)


def drive(url, paths, requests_per_client, clients=4, deadline_seconds=60):
    """GET each path in turn from several clients; return (completed, failed) counts."""
    completed = failed = 0
    lock = threading.Lock()
    deadline = time.monotonic() + deadline_seconds

    def client():
        nonlocal completed, failed
        for index in range(requests_per_client):
            if time.monotonic() > deadline:
                return
            try:
                with urllib.request.urlopen(url + paths[index % len(paths)], timeout=10):
                    pass
                ok = True
            except urllib.error.HTTPError:
                ok = True  # a 4xx or 5xx answer is a completed request too
            except OSError:
                ok = False
            with lock:
                if ok:
                    completed += 1
                else:
                    failed += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(deadline_seconds + 15)
    return completed, failed


class Scraper(threading.Thread):
    """Scrapes until stopped (or for at most `limit_seconds`), keeping each total seen."""

    def __init__(self, service, metrics_path, name, headers=None, limit_seconds=120):
        super().__init__(daemon=True)
        self.service = service
        self.metrics_path = metrics_path
        self.headers = headers
        self.name_to_sum = name
        self.totals = []
        self.failures = []
        self.dropped = 0  # connections closed without an answer
        self._stop_event = threading.Event()
        self._deadline = time.monotonic() + limit_seconds

    def run(self):
        while not self._stop_event.is_set() and time.monotonic() < self._deadline:
            try:
                response = self.service.request(self.metrics_path, headers=self.headers)
            except (OSError, http.client.HTTPException):
                # A worker killed mid-answer may have sent its headers and part of the body.
                self.dropped += 1
                continue
            if response.status != 200:
                self.failures.append(response.status)
            else:
                self.totals.append(total(response.body.decode(), self.name_to_sum))
            time.sleep(0.01)

    def stop(self):
        self._stop_event.set()
        self.join(15)
        assert not self.is_alive(), "the scraper did not stop"
