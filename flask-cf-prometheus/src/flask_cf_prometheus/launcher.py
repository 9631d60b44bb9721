"""Serve a service under gunicorn: what its `python -m`, and so its manifest's command,
runs. A service's __main__.py:

    from flask_cf_prometheus import launcher

    if __name__ == "__main__":
        launcher.main("payments_api:create_app")

Every setting is checked before gunicorn starts: a bad value stops start-up in one line,
not in every worker. The app is built once, in a child process, for what only the app
can check (another route on the metrics path). Arguments go to gunicorn, after the
service's gunicorn.conf.py: `--bind 127.0.0.1:8000`, say. A local run without
PROMETHEUS_MULTIPROC_DIR gets a private metrics directory, removed when gunicorn exits.
"""

import importlib
import logging
import os
import shutil
import sys
import tempfile

from ._settings import (
    METRICS_DIRECTORY_VARIABLE,
    NOTICES_SAID_VARIABLE,
    ConfigError,
    check_environ,
    notices,
)


def main(factory, arguments=None, *, config="gunicorn.conf.py", app="wsgi:app"):
    """Check the settings, build the app once with `factory` ("package:function"), then
    run gunicorn with `config` and `app`; `arguments` (sys.argv's, by default) go to
    gunicorn after the config file."""
    if arguments is None:
        arguments = sys.argv[1:]
    try:
        settings = check_environ()
    except ConfigError as error:
        sys.exit(str(error))
    if not app_builds(factory):
        sys.exit(1)
    os.environ[NOTICES_SAID_VARIABLE] = "1"  # said as the app was built: not by each worker
    # gunicorn's import reads WEB_CONCURRENCY with int(): give it the value as read here,
    # where blank means the default.
    os.environ["WEB_CONCURRENCY"] = str(settings["workers"])
    master = os.getpid()
    private = None
    if settings["metrics_directory"] is None:
        private = tempfile.mkdtemp(prefix="prometheus-multiproc-")
        # Into the environment, not passed on: prometheus_client reads it there, in every
        # worker, and so does gunicorn.settings() when gunicorn loads the config file.
        os.environ[METRICS_DIRECTORY_VARIABLE] = private

    from gunicorn.app.wsgiapp import run

    package = factory.partition(":")[0]
    sys.argv = [sys.argv[0], "--config", str(config), *arguments, app]
    try:
        run(prog=f"python -m {package}")
    finally:
        # Workers leave through here too; only the master removes the directory.
        if private is not None and os.getpid() == master:
            shutil.rmtree(private, ignore_errors=True)


def app_builds(factory):
    """Build the app with `factory` in a child process, its metrics in a directory of
    their own; False, with the one line said, when a setting stops it. What the app
    says of its settings that is not an error (notice()) is said here, once."""
    with tempfile.TemporaryDirectory(prefix="app-check-") as directory:
        child = os.fork()
        if child == 0:
            # prometheus_client reads it from the environment as the app imports it.
            os.environ[METRICS_DIRECTORY_VARIABLE] = directory
            logging.disable()  # the workers say what the app has to say, once gunicorn runs
            module, _, function = factory.partition(":")
            try:
                getattr(importlib.import_module(module), function)()
            except ConfigError as error:
                print(error, file=sys.stderr, flush=True)
                os._exit(1)
            for message in notices():
                print(message, file=sys.stderr, flush=True)
            os._exit(0)
        _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    if code < 0:  # it said nothing: the out-of-memory killer, say
        print(f"Building the app was stopped by signal {-code}", file=sys.stderr)
    return code == 0
