"""Gunicorn settings: each value comes from an environment variable, with a default.

config.py reads and checks them, with every other setting the service reads, before
gunicorn starts a worker: a bad value stops gunicorn with one line that names the
variable, the value and the rule (README.md, Settings).
"""

import os
import time

from {{ cookiecutter.package_name }} import logs
from {{ cookiecutter.package_name }}.config import (
    ConfigError,
    check_environ,
)

try:
    _settings = check_environ()
except ConfigError as error:
    raise SystemExit(str(error)) from None

bind = f"0.0.0.0:{_settings['port']}"
workers = _settings["workers"]
threads = _settings["threads"]
timeout = _settings["timeout"]
graceful_timeout = _settings["graceful_timeout"]
keepalive = _settings["keepalive"]
max_requests = _settings["max_requests"]
max_requests_jitter = _settings["max_requests_jitter"]
# Logs to stdout and stderr, where Cloud Foundry's loggregator collects them: json, one
# object per line that log platforms parse as it comes (the default), or text, plain
# lines for reading locally. Either way each request's line has its request id.
logconfig_dict = logs.logging_config(_settings["log_format"])
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms request_id=%({service.request_id}e)s'
errorlog = "-"
# gunicorn 25+ opens a control socket under $HOME by default; this service never uses it.
control_socket_disable = True

# prometheus_client picks single- or multi-process mode when a worker first imports it,
# so the metrics directory must be in the environment before then: the manifest command
# sets it on Cloud Foundry, and the package's __main__.py makes a private one for a local
# run.
if _settings["metrics_directory"] is None:
    raise SystemExit(
        "PROMETHEUS_MULTIPROC_DIR is unset: set it, or start the service as the manifest"
        " does (python -m and the package), which gives each run a private directory"
    )
_metrics_directory = str(_settings["metrics_directory"])
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_directory  # as config.py reads it
# Seconds a worker that cannot get its metric files waits before it exits, so that the
# master does not fork replacements in a tight loop.
_ALLOCATION_RETRY_SECONDS = min(1.0, timeout / 2)

# Imported once the variable is set: prometheus_client reads it when first imported.
from {{ cookiecutter.package_name }} import multiprocess  # noqa: E402

try:
    multiprocess.check_directory(_metrics_directory)
except ConfigError as error:
    raise SystemExit(str(error)) from None


def on_starting(server):
    try:
        multiprocess.reset_directory(_metrics_directory, server.cfg.workers)
    except ConfigError as error:
        raise SystemExit(str(error)) from None


def post_fork(server, worker):
    """Before the worker imports the app: give its metric files their disk blocks, and
    make its exit countable."""
    try:
        multiprocess.allocate_worker_files(worker.pid, _metrics_directory)
    except OSError as error:
        # Writing metrics into files the disk cannot back would kill the worker with
        # SIGBUS mid-request. Exit instead (not as a boot error, which would stop the
        # master): the other workers go on serving, and the master starts another.
        server.log.error("Worker %s cannot allocate its metric files: %s", worker.pid, error)
        time.sleep(_ALLOCATION_RETRY_SECONDS)
        raise SystemExit(1) from error
    from {{ cookiecutter.package_name }} import metrics

    metrics.prepare_exit_count()


def post_worker_init(worker):
    from {{ cookiecutter.package_name }} import metrics

    metrics.start_worker(worker.cfg.workers)


def worker_abort(worker):
    """In a worker the master stops for staying silent past the timeout."""
    from {{ cookiecutter.package_name }} import metrics

    metrics.record_worker_exit("timeout")


def worker_exit(server, worker):
    """In a worker that exits as gunicorn asked, or as gunicorn told it to."""
    if worker.pid != os.getpid() or not worker.booted:
        # gunicorn also calls this in the master, for a worker it found gone; and a worker
        # that did not boot may have no metric files to write into.
        return
    from {{ cookiecutter.package_name }} import metrics

    metrics.record_worker_exit("recycled" if worker.nr >= worker.max_requests else "shutdown")


def child_exit(server, worker):
    """Every dead worker, however it died: fold its metrics into the aggregate files."""
    try:
        multiprocess.mark_worker_dead(
            worker.pid,
            _metrics_directory,
            live=server.WORKERS,
            # A worker counts its own exit (worker_exit, worker_abort) unless it cannot.
            unexplained_exit=("gunicorn_worker_exits", "killed"),
        )
    except Exception:
        # An error here would stop gunicorn's master, and with it every worker. The files
        # not yet folded stay where they are, scrapes go on counting them, and the next
        # worker exit tries again (a full disk may have room by then).
        server.log.exception("Could not fold the metrics of dead worker %s", worker.pid)
