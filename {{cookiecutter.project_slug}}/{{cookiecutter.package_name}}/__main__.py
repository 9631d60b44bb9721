"""Serve the app under gunicorn, as manifest.yml's command does: `python -m` the package.

Every setting is checked first, before gunicorn's own import reads WEB_CONCURRENCY, so
that a bad value stops start-up with one line (README.md, Settings). Arguments go to
gunicorn, after gunicorn.conf.py: `--bind 127.0.0.1:8000`, say.
Without PROMETHEUS_MULTIPROC_DIR, as in a local run, the run gets a private metrics
directory, removed when gunicorn exits.
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

from .config import METRICS_DIRECTORY, ConfigError, check_environ, server_settings_from_environ

GUNICORN_CONF = Path(__file__).resolve().parents[1] / "gunicorn.conf.py"


def main(arguments):
    try:
        check_environ()
        settings = server_settings_from_environ()
    except ConfigError as error:
        sys.exit(str(error))
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


if __name__ == "__main__":
    main(sys.argv[1:])
