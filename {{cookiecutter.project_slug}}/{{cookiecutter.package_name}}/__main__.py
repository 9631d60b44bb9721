"""Serve the app under gunicorn, as manifest.yml's command does: `python -m` the package.

Every setting is checked first, before gunicorn's own import reads WEB_CONCURRENCY, and
the app is built once, in a child process, for what only the app can check (another
route on the metrics path): a bad value stops start-up with one line (README.md,
Settings), before gunicorn starts workers that would each fail. Arguments go to gunicorn,
after gunicorn.conf.py: `--bind 127.0.0.1:8000`, say.
Without PROMETHEUS_MULTIPROC_DIR, as in a local run, the run gets a private metrics
directory, removed when gunicorn exits.
"""

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from .config import METRICS_DIRECTORY, ConfigError, check_environ

GUNICORN_CONF = Path(__file__).resolve().parents[1] / "gunicorn.conf.py"


def main(arguments):
    try:
        settings = check_environ()
    except ConfigError as error:
        sys.exit(str(error))
    if not app_builds():
        sys.exit(1)
    # gunicorn's import reads WEB_CONCURRENCY with int(): give it the value as read here,
    # where blank means the default.
    os.environ["WEB_CONCURRENCY"] = str(settings["workers"])
    master = os.getpid()
    private = None
    if settings["metrics_directory"] is None:
        private = tempfile.mkdtemp(prefix="prometheus-multiproc-")
        os.environ[METRICS_DIRECTORY] = private

    from gunicorn.app.wsgiapp import run

    sys.argv = [sys.argv[0], "--config", str(GUNICORN_CONF), *arguments, "wsgi:app"]
    try:
        run(prog=f"python -m {__package__}")
    finally:
        # Workers leave through here too; only the master removes the directory.
        if private is not None and os.getpid() == master:
            shutil.rmtree(private, ignore_errors=True)


def app_builds():
    """Build the app in a child process, its metrics in a directory of their own; False,
    with the one line said, when a setting stops it."""
    with tempfile.TemporaryDirectory(prefix="app-check-") as directory:
        child = os.fork()
        if child == 0:
            os.environ[METRICS_DIRECTORY] = directory
            logging.disable()  # the workers say what the app has to say, once gunicorn runs
            try:
                from . import create_app

                create_app()
            except ConfigError as error:
                print(error, file=sys.stderr, flush=True)
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    if code < 0:  # it said nothing: the out-of-memory killer, say
        print(f"Building the app was stopped by signal {-code}", file=sys.stderr)
    return code == 0


if __name__ == "__main__":
    main(sys.argv[1:])
