"""The files Prometheus reads, kept equal to the fleet, and the lock that guards them.

Jobs go in cf-<foundation>.yml, which prometheus.yml includes with scrape_config_files,
and targets in cf-<foundation>-NN.json. Each file is written whole and renamed into place,
so Prometheus never reads half of one, and a failed pass leaves the last good files.
"""

import contextlib
import fcntl
import json
import os
import re
import tempfile
import time
from pathlib import Path

from ._errors import _DiscoveryError

# The files of the layout before foundations and shared target files: one of jobs per
# app, one of targets per instance. Removed wherever found: Prometheus would refuse
# their jobs beside the same jobs in cf-<foundation>.yml.
_LEGACY_FILE = re.compile(r"cf-[0-9a-f-]{36}(-\d+\.json|\.yml)")


def _locked(output, foundation):
    """Hold the foundation's lock in the output directory for the process's life: two
    discoveries of one foundation would undo each other's files."""
    output.mkdir(parents=True, exist_ok=True)
    handle = open(output / f".cf-{foundation}.lock", "a")  # noqa: SIM115 (held until exit)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise _DiscoveryError(
            f"another cf-discovery writes foundation {foundation!r}'s files in {output}:"
            " give each foundation its own CF_FOUNDATION"
        ) from None
    return handle


# What a YAML string may hold as itself (YAML 1.2, c-printable), less the line breaks
# YAML would fold (NEL, LS, PS) and the byte order mark; the rest is escaped, as in JSON.
# Surrogates YAML forbids even escaped (_yaml_escape).
_NOT_YAML_TEXT = re.compile(
    "[^\t\n\r\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
)


def _serialised(name, content):
    """The text of file `name`. Targets are JSON, which Prometheus reads as JSON. Jobs
    are JSON too, which is YAML as long as a character beyond the BMP is written as
    itself: JSON's escape of one, a surrogate pair, is no YAML (Prometheus refuses the
    whole configuration)."""
    if not name.endswith(".yml"):
        return json.dumps(content, indent=2, sort_keys=True) + "\n"
    text = json.dumps(content, indent=2, sort_keys=True, ensure_ascii=False)
    return _NOT_YAML_TEXT.sub(_yaml_escape, text) + "\n"


def _yaml_escape(found):
    """JSON's escape of a character YAML cannot hold as itself. A lone surrogate (which
    _selection keeps out, but a retiring job from a file of an older version may hold)
    becomes U+FFFD, which YAML takes: escaped, YAML refuses the whole file."""
    code = ord(found[0])
    return "\ufffd" if 0xD800 <= code <= 0xDFFF else f"\\u{code:04x}"


def _write_files(directory, files):
    """Write `files` (name: content) into the directory; return how many changed. Each
    is readable by its owner and its group only, since a job holds the app's GUID as its
    credential: in a set-group-ID directory, a group Prometheus can run in."""
    changed = 0
    for name, content in files.items():
        text = _serialised(name, content)
        path = directory / name
        with contextlib.suppress(FileNotFoundError, UnicodeDecodeError):
            if path.read_text(encoding="utf-8") == text:
                continue
        descriptor, staging = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
        try:
            os.fchmod(descriptor, 0o640)
            with os.fdopen(descriptor, "w", encoding="utf-8") as output:
                output.write(text)
            os.replace(staging, path)
        except BaseException:
            Path(staging).unlink(missing_ok=True)
            raise
        changed += 1
    return changed


def _remove_files(directory, keep, ours):
    """Remove the files of the directory whose names match `ours`, but those in `keep`;
    any other file stays. Return how many went."""
    gone = [path for path in directory.iterdir() if ours.fullmatch(path.name)]
    gone = [path for path in gone if path.name not in keep]
    for path in gone:
        path.unlink()
    return len(gone)


class _Fleet:
    """The files of one foundation, kept equal to its fleet from pass to pass.

    A target that goes from a file ends its series at once; a job that goes in a reload
    leaves them visible for a query's 5-minute lookback. So a job whose instance went
    keeps no target a while, then goes. A state file beside the others keeps what is
    retiring and whether a reload is due, for the next --once or a restart."""

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
                _remove_files(self.output, (), theirs)
                state_path.unlink()
                lock_path.unlink()
            removed.append(name)
        if removed:
            self.note_reload()
        return removed

    def update(self, wanted):
        """Write the files for the jobs `_instance_jobs` gave; return how many target
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
        targets_changed = _write_files(self.output, targets)
        jobs_changed = _write_files(self.output, {self.jobs_file: listed})
        jobs_changed += _remove_files(self.output, (), _LEGACY_FILE)
        targets_changed += _remove_files(self.output, targets, self.target_files)
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
        _write_files(self.output, {self.state_file.name: state})
