"""A pass (discover, write the files) and the loop of passes, with its log and reloads.

A failed pass is "nothing changed", never "the fleet is empty": the files of the last
good pass stay, and the loop waits longer after each failure, or as long as the API asks.
"""

import contextlib
import signal
import sys
import time
from collections import Counter

from ._errors import _DiscoveryError
from ._http import _redacted
from ._jobs import _instance_jobs
from ._metrics import _Health, _reload_prometheus
from ._selection import _SCRAPE_LABEL, _SKIPPED, _discover

# The longest a failing pass makes it wait before the next: a failure it backs off from
# (8 intervals at the most, and 5 minutes), and a rate limit's Retry-After.
_BACKOFF_DOUBLINGS = 3
_MAX_BACKOFF_SECONDS = 300
_MAX_RETRY_AFTER_SECONDS = 3600


def _escaped(text):
    """`text` with every character that is not printable (a newline, a control
    character, a lone surrogate) escaped as Python writes it: names and errors from the
    API can neither end a log line nor forge another."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


def _log(message):
    """One line on stderr, stamped in UTC, for the journal or a container's log."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"{stamp} cf-discovery: {_escaped(message)}", file=sys.stderr, flush=True)


def _summary(found, skipped, targets, changed, requests):
    """The log line of a good pass."""
    counts = Counter(reason for _, reason in skipped.values())
    reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(counts.items()))
    return (
        f"{len(found) + len(skipped)} labelled apps: {len(found)} scraped, {len(skipped)}"
        f" skipped{f' ({reasons})' if reasons else ''}; {targets} targets,"
        f" {sum(changed)} files changed, {requests} requests"
    )


@contextlib.contextmanager
def _deadline(seconds):
    """End what the block waits for once `seconds` have passed, whatever it is: a
    connection, or headers or a body that trickle in, which a timeout on each read never
    ends. SIGALRM's handler raises in the main thread, where the passes run."""

    def expired(signum, frame):
        raise _DiscoveryError(f"the pass took longer than --pass-timeout={seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _one_pass(api, fleet, pass_timeout):
    """Discover, within `pass_timeout` seconds, and write; return what was found and
    what changed. _DiscoveryError leaves every file as it was."""
    api.requests = 0
    try:
        with _deadline(pass_timeout):
            found, skipped = _discover(api)
            wanted = _instance_jobs(found, fleet.settings)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
        # A resource without a field the API documents: a proxy's answer, or a version
        # of the API that differs; a failed pass, not a crash.
        message = f"the API answered a shape cf-discovery does not know ({error!r})"
        raise _DiscoveryError(message) from None
    try:
        changed = fleet.update(wanted)
    except OSError as error:
        raise _DiscoveryError(f"cannot write into {fleet.output}: {error.strerror}") from None
    return found, skipped, len(wanted), changed


def _run(options, api, fleet):
    """Pass after pass (one with --once), serving the metrics; the exit status of the last."""
    health = _Health(fleet.settings.foundation)
    if not options.once:
        try:
            health.serve(options.metrics_address)
        except (OSError, ValueError) as error:
            _log(
                f"cannot serve its metrics at --metrics-address={options.metrics_address}: {error}"
            )
            return 2
    reported = {}  # the skipped apps already logged, and why
    failures = 0
    while True:
        started = time.monotonic()
        wait = options.interval
        try:
            found, skipped, targets, changed = _one_pass(api, fleet, options.pass_timeout)
        except Exception as error:  # a failed pass, whatever failed: the loop goes on
            failures += 1
            reason = error if isinstance(error, _DiscoveryError) else repr(error)
            health.add("cf_discovery_passes_total", "result", "failure")
            health.set("cf_discovery_api_requests", api.requests)
            _log(f"pass failed, the last good targets stay: {reason}")
            asked = getattr(error, "retry_after", None)
            if asked is not None:
                # As long as the API asks, from its answer, within reason.
                asked = min(max(asked, options.interval), _MAX_RETRY_AFTER_SECONDS)
                wait = asked + (time.monotonic() - started)
            else:
                # Whatever failed (an API down, a secret UAA refuses): less and less often.
                backoff = options.interval * 2 ** min(failures - 1, _BACKOFF_DOUBLINGS)
                wait = max(min(backoff, _MAX_BACKOFF_SECONDS), options.interval)
            code = 1
        else:
            failures, code = 0, 0
            health.succeeded(len(found) + len(skipped), len(found), skipped, targets, api.requests)
            for guid, (name, why) in skipped.items():
                if reported.get(guid) != why:
                    _log(f"not scraping app {name} ({guid}): {_SKIPPED[why]}")
            reported = dict(skipped)
            _log(_summary(found, skipped, targets, changed, api.requests))
            if not found and not skipped:
                _log(
                    f"no app labelled {_SCRAPE_LABEL}=true is visible: the client needs a"
                    " space role (SpaceAuditor) in every space to watch"
                )
        if fleet.reload_pending and not options.no_reload:
            try:
                _reload_prometheus(options.prometheus, options.timeout)
            except _DiscoveryError as error:
                health.add("cf_discovery_reloads_total", "result", "failure")
                _log(f"Prometheus at {_redacted(options.prometheus)} did not reload: {error}")
                code = 1
            else:
                health.add("cf_discovery_reloads_total", "result", "success")
                try:
                    fleet.reloaded()
                except OSError as error:
                    _log(f"cannot write into {fleet.output}: {error.strerror}")
                    code = 1
        health.set("cf_discovery_reload_pending", int(fleet.reload_pending))
        if options.once:
            return code
        time.sleep(max(0.0, wait - (time.monotonic() - started)))
