"""Gunicorn settings, each from an environment variable with a default (README.md,
Settings): the kit reads and checks them, with every other setting the service reads,
before gunicorn starts a worker, and a bad value stops gunicorn with one line that names
the variable, the value and the rule. Its hooks keep the workers' metrics exact.
"""

from flask_cf_prometheus import gunicorn
from flask_cf_prometheus.gunicorn import (  # noqa: F401 (gunicorn calls each by its name)
    child_exit,
    on_starting,
    post_fork,
    post_worker_init,
    worker_abort,
    worker_exit,
)

# bind, workers, threads, timeouts, logging. To fix one for this service, set it after
# this line: `timeout = 60`, say.
globals().update(gunicorn.settings())
