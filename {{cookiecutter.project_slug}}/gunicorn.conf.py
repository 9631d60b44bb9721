"""Gunicorn settings: each value comes from an environment variable, with a default."""

import os
import shutil
import tempfile

from {{ cookiecutter.package_name }} import logs


def _whole_number(name, default, minimum, maximum=None):
    """The whole number in environment variable `name`, or `default` when it is unset.

    A value outside the rule stops gunicorn with one line that names the variable, the
    value and the rule, rather than a traceback or a server that starts and cannot serve.
    """
    value = os.environ.get(name, "").strip() or default
    number = int(value) if value.isascii() and value.isdigit() else None
    if number is None or number < minimum or (maximum is not None and number > maximum):
        rule = f"from {minimum} to {maximum}" if maximum is not None else f"{minimum} or more"
        raise SystemExit(f"{name}={value!r} must be a whole number, {rule}")
    return number


def _choice(name, default, choices):
    """The value of environment variable `name`, one of `choices` (any case), or `default`."""
    value = os.environ.get(name, "").strip() or default
    if value.lower() not in choices:
        raise SystemExit(f"{name}={value!r} must be one of: {', '.join(choices)}")
    return value.lower()


# Cloud Foundry sends the app's traffic to $PORT on the container's interface.
bind = f"0.0.0.0:{_whole_number('PORT', '8000', 1, 65535)}"
# Worker processes; WEB_CONCURRENCY is the name Cloud Foundry and Heroku buildpacks use.
workers = _whole_number("WEB_CONCURRENCY", "2", 1)
# Threads per worker; more than 1 switches gunicorn to its gthread worker.
threads = _whole_number("GUNICORN_THREADS", "1", 1)
# Seconds a worker may stay silent before the master kills and replaces it.
timeout = _whole_number("GUNICORN_TIMEOUT", "30", 1)
# Seconds to finish requests on shutdown: Cloud Foundry kills the app 10 s after SIGTERM.
graceful_timeout = _whole_number("GUNICORN_GRACEFUL_TIMEOUT", "8", 1)
# Seconds an idle keep-alive connection from the router stays open.
keepalive = _whole_number("GUNICORN_KEEPALIVE", "5", 1)
# Recycle a worker after this many requests (plus up to the jitter); 0 never recycles.
max_requests = _whole_number("GUNICORN_MAX_REQUESTS", "0", 0)
max_requests_jitter = _whole_number("GUNICORN_MAX_REQUESTS_JITTER", "0", 0)
# Logs to stdout and stderr, where Cloud Foundry's loggregator collects them: json, one
# object per line that log platforms parse as it comes (the default), or text, plain
# lines for reading locally. Either way each request's line has its request id.
logconfig_dict = logs.logging_config(_choice("LOG_FORMAT", "json", logs.LOG_FORMATS))
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms request_id=%({service.request_id}e)s'
errorlog = "-"
# gunicorn 25+ opens a control socket under $HOME by default; this service never uses it.
control_socket_disable = True

# prometheus_client picks single- or multi-process mode when a worker first imports it,
# so the metrics directory must be in the environment before then. On Cloud Foundry the
# manifest command sets it; locally each run gets a private directory of its own.
_private_metrics_directory = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
if _private_metrics_directory:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="prometheus-multiproc-")


def on_starting(server):
    from {{ cookiecutter.package_name }} import multiprocess

    multiprocess.reset_directory(os.environ["PROMETHEUS_MULTIPROC_DIR"])


def post_fork(server, worker):
    """Before the worker imports the app: give its metric files their disk blocks, and
    make its exit countable."""
    from {{ cookiecutter.package_name }} import multiprocess

    try:
        multiprocess.allocate_worker_files(worker.pid, os.environ["PROMETHEUS_MULTIPROC_DIR"])
    except OSError as error:
        # Writing metrics into files the disk cannot back would kill the worker with
        # SIGBUS mid-request. Exit instead (not as a boot error, which would stop the
        # master): the other workers go on serving, and the master starts another.
        server.log.error("Worker %s cannot allocate its metric files: %s", worker.pid, error)
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
    from {{ cookiecutter.package_name }} import multiprocess

    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    try:
        multiprocess.mark_worker_dead(
            worker.pid,
            directory,
            live=server.WORKERS,
            # A worker counts its own exit (worker_exit, worker_abort) unless it cannot.
            unexplained_exit=("gunicorn_worker_exits", "killed"),
        )
    except Exception:
        # An error here would stop gunicorn's master, and with it every worker. The files
        # not yet folded stay where they are, scrapes go on counting them, and the next
        # worker exit tries again (a full disk may have room by then).
        server.log.exception("Could not fold the metrics of dead worker %s", worker.pid)


def on_exit(server):
    if _private_metrics_directory:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
