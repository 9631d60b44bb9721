"""gunicorn's settings and hooks, for a service's gunicorn.conf.py (README.md):

    from flask_cf_prometheus import gunicorn
    from flask_cf_prometheus.gunicorn import (  # noqa: F401 (gunicorn calls them by name)
        child_exit, on_starting, post_fork, post_worker_init, worker_abort, worker_exit,
    )

    globals().update(gunicorn.settings())

`settings()` reads gunicorn's settings from the environment and checks them, with every
other setting the kit reads: a bad value stops gunicorn in one line naming the variable,
the value and the rule. The hooks keep the workers' metric files exact
(_metrics_directory.py, _fold.py) and count each worker's exit by its reason.
"""

import logging
import mmap
import os
import struct
import sys
import time

from . import _logs, _metrics_directory
from ._settings import METRICS_DIRECTORY_VARIABLE, ConfigError, check_environ

# gunicorn's access log line, for LOG_FORMAT=text; the JSON formatter reads its fields.
ACCESS_LOG_FORMAT = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms request_id=%({service.request_id}e)s'

# The metrics directory as settings() read it, for the hooks: gunicorn runs them in the
# master that loaded the config file, and in the workers it forks.
_directory = None
# The settings the master runs with, which a reload's settings() keeps when its checks
# fail once the master serves (on_starting); and the directory's owner file, held.
_in_force = None
_serving = False
_claimed = None
# A worker that cannot allocate its metric files (a full disk) exits after this pause, at
# most: the master starts another then, rather than in a tight loop.
BOOT_RETRY_SECONDS = 10.0
# When the master last said a fold failed, and how many failures it has not said since.
_fold_failure_said_at = None
_fold_failures_unsaid = 0
# When a worker last said it cannot get its metric files (time.monotonic(), which every
# process reads alike), in memory the master shares with every worker it forks.
_allocation_said_at = mmap.mmap(-1, struct.calcsize("d"))


def settings(environ=os.environ):
    """gunicorn's settings, by gunicorn's names, from the environment; SystemExit with
    one line for a bad value, a missing metrics directory or one another service owns.
    At a reload (SIGHUP), a check that fails is logged in one line, and the settings in
    force stay: a reload never stops a serving master."""
    global _in_force
    try:
        _in_force = _checked_settings(environ)
    except (ConfigError, OSError) as error:  # OSError: a file that went as it was listed
        if not _serving:
            raise SystemExit(str(error)) from None
        logging.getLogger("gunicorn.error").warning("Reload kept the settings in force: %s", error)
    return _in_force


def _checked_settings(environ):
    global _directory, _claimed
    server = check_environ(environ)
    directory = server["metrics_directory"]
    # prometheus_client picks single- or multi-process mode when a worker first imports
    # it, so the metrics directory must be in the environment before then: the manifest
    # command sets it on Cloud Foundry, and the launcher makes a private one for a local
    # run.
    if directory is None:
        raise ConfigError(
            f"{METRICS_DIRECTORY_VARIABLE} is unset: set it, or start the service as the manifest"
            " does (python -m and the package), which gives each run a private directory"
        )
    if _serving and directory != _directory:
        raise ConfigError(f"{METRICS_DIRECTORY_VARIABLE} cannot change while serving")
    _directory = directory
    # Here, before gunicorn says it is starting: a directory that is not the service's
    # own, another service's, or too small, stops it with one line and nothing else.
    _metrics_directory.check_directory(directory)
    _metrics_directory.check_contents(directory, server["workers"])
    if _claimed is None:
        _claimed = _metrics_directory.claim(directory)
    return {
        "bind": f"0.0.0.0:{server['port']}",
        "workers": server["workers"],
        "threads": server["threads"],
        "timeout": server["timeout"],
        "graceful_timeout": server["graceful_timeout"],
        "keepalive": server["keepalive"],
        "max_requests": server["max_requests"],
        "max_requests_jitter": server["max_requests_jitter"],
        # Logs to stdout and stderr, where Cloud Foundry's loggregator collects them: json,
        # one object per line that log platforms parse as it comes (the default), or text,
        # plain lines for reading locally. Either way each request's line has its id.
        "logconfig_dict": _logs.logging_config(server["log_format"]),
        "accesslog": "-",
        "access_log_format": ACCESS_LOG_FORMAT,
        "errorlog": "-",
        # gunicorn 25+ opens a control socket under $HOME by default; unused here.
        "control_socket_disable": True,
        # No header sets SCRIPT_NAME or PATH_INFO, even from loopback (gunicorn trusts
        # it by default, and on Cloud Foundry a proxy in the container is loopback): a
        # client's SCRIPT_NAME that the path does not start with was a 500 no metric
        # counted. Such headers are dropped, as any other with an underscore.
        "forwarder_headers": "",
    }


def on_starting(server):
    """In the master, before any worker: a fresh metrics directory for this run."""
    global _serving
    from . import _fold

    _serving = True
    _fold.forget_dead_workers()
    try:
        _metrics_directory.reset_directory(_directory, server.cfg.workers)
    except ConfigError as error:
        raise SystemExit(str(error)) from None


def post_fork(server, worker):
    """Before the worker imports the app: give its metric files their disk blocks, and
    make its exit countable."""
    try:
        _metrics_directory.allocate_worker_files(worker.pid, _directory)
    except OSError as error:
        # Writing metrics into files the disk cannot back would kill the worker with
        # SIGBUS mid-request. Exit instead (not as a boot error, which would stop the
        # master): the other workers go on serving, and the master starts another after
        # a pause, rather than in a tight loop.
        # On a disk that stays full every replacement fails: one a minute says so.
        last = struct.unpack_from("d", _allocation_said_at)[0]
        if not last or time.monotonic() - last >= 60:
            struct.pack_into("d", _allocation_said_at, 0, time.monotonic())
            server.log.error("Worker %s cannot allocate its metric files: %s", worker.pid, error)
        time.sleep(min(BOOT_RETRY_SECONDS, server.cfg.timeout / 2))
        raise SystemExit(1) from error
    from . import _workers

    _workers.prepare_exit_count()


def post_worker_init(worker):
    """In a worker whose app is loaded: count it in, and make its tracer if the app
    traces (_tracing.py), here and not in the master."""
    from . import _workers

    _workers.start_worker(worker.cfg.workers)
    # Imported by the app only when it traces (_flask.py): OpenTelemetry is an extra.
    tracing = sys.modules.get(f"{__package__}._tracing")
    if tracing is not None:
        tracing.start()


def worker_abort(worker):
    """In a worker the master stops for staying silent past the timeout."""
    from . import _workers

    _workers.record_worker_exit("timeout")


def worker_exit(server, worker):
    """In a worker that exits as gunicorn asked, or as gunicorn told it to."""
    if worker.pid != os.getpid() or not worker.booted:
        # gunicorn also calls this in the master, for a worker it found gone; and a worker
        # that did not boot may have no metric files to write into.
        return
    from . import _workers

    tracing = sys.modules.get(f"{__package__}._tracing")
    if tracing is not None:
        # Within what the master allows a stopping worker (graceful_timeout) and a
        # recycled one (timeout), with time left for the rest of its exit.
        tracing.stop(min(worker.cfg.graceful_timeout, worker.cfg.timeout) / 2)
    _workers.record_worker_exit("recycled" if worker.nr >= worker.max_requests else "shutdown")


def child_exit(server, worker):
    """In the master, for every dead worker however it died: fold its metrics into the
    aggregate files."""
    from . import _fold

    try:
        _fold.mark_worker_dead(
            worker.pid,
            _directory,
            live=server.WORKERS,
            # A worker counts its own exit (worker_exit, worker_abort) unless it cannot.
            unexplained_exit=("gunicorn_worker_exits", "killed"),
        )
    except OSError as error:
        # A full disk, say: the files not yet folded stay where they are, scrapes go on
        # counting them, and the next worker exit tries again.
        _say_fold_failure(server, worker.pid, error)
    except Exception:
        # An error here would stop gunicorn's master, and with it every worker.
        server.log.exception("Could not fold the metrics of dead worker %s", worker.pid)


def _say_fold_failure(server, pid, error):
    """One line, once a minute at the most, however often workers die on a full disk:
    with how many failures went unsaid since the last."""
    global _fold_failure_said_at, _fold_failures_unsaid
    now = time.monotonic()
    if _fold_failure_said_at is not None and now - _fold_failure_said_at < 60:
        _fold_failures_unsaid += 1
        return
    more = f" ({_fold_failures_unsaid} more since)" if _fold_failures_unsaid else ""
    server.log.error("Could not fold the metrics of dead worker %s: %s%s", pid, error, more)
    _fold_failure_said_at, _fold_failures_unsaid = now, 0
