"""Gunicorn settings: each value comes from an environment variable, with a default."""

import os
import shutil
import tempfile

# prometheus_client picks single- or multi-process mode when a worker first imports it,
# so the metrics directory must be in the environment before then. On Cloud Foundry the
# manifest command sets it; locally each run gets a private directory of its own.
_private_metrics_directory = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
if _private_metrics_directory:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="prometheus-multiproc-")

# Cloud Foundry sends the app's traffic to $PORT on the container's interface.
bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
# Worker processes; WEB_CONCURRENCY is the name Cloud Foundry and Heroku buildpacks use.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Threads per worker; more than 1 switches gunicorn to its gthread worker.
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
# Seconds a worker may stay silent before the master kills and replaces it.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
# Seconds to finish requests on shutdown: Cloud Foundry kills the app 10 s after SIGTERM.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "8"))
# Seconds an idle keep-alive connection from the router stays open.
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
# Recycle a worker after this many requests (plus up to the jitter); 0 never recycles.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))
max_requests_jitter = int(os.environ.get("GUNICORN_MAX_REQUESTS_JITTER", "0"))
# Logs to stdout and stderr, where Cloud Foundry's loggregator collects them.
accesslog = "-"
errorlog = "-"
# gunicorn 25+ opens a control socket under $HOME by default; this service never uses it.
control_socket_disable = True


def on_starting(server):
    from {{ cookiecutter.package_name }} import multiprocess

    multiprocess.reset_directory(os.environ["PROMETHEUS_MULTIPROC_DIR"])


def post_worker_init(worker):
    from {{ cookiecutter.package_name }} import metrics

    metrics.start_process_sampler()


def child_exit(server, worker):
    """Every dead worker, however it died: fold its metrics into the aggregate files."""
    from {{ cookiecutter.package_name }} import multiprocess

    try:
        multiprocess.mark_worker_dead(worker.pid, os.environ["PROMETHEUS_MULTIPROC_DIR"])
    except Exception:
        # An error here would stop gunicorn's master, and with it every worker. The files
        # not yet folded stay where they are, and scrapes go on counting them.
        server.log.exception("Could not fold the metrics of dead worker %s", worker.pid)


def on_exit(server):
    if _private_metrics_directory:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
