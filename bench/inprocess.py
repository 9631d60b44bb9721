"""Instructions per request of /, in-process: the WSGI app called directly, with no
server, so that no timing-dependent loop (gunicorn's heartbeat, say) adds to the count.

Run by bench.py under callgrind with the baked project's Python, in its directory:
    python inprocess.py PACKAGE APP REQUESTS
APP is `service` (create_app(), metrics in multiprocess mode as under gunicorn),
`bare` (the service's views and request ids, no metrics) or `no-ids` (its views alone).
"""

import io
import os
import sys
import tempfile


def main():
    package, which, requests = sys.argv[1], sys.argv[2], int(sys.argv[3])
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bench-inprocess-")
    from prometheus_client import values

    values.ValueClass = values.MultiProcessValue()  # as in a gunicorn worker
    from flask import Flask

    factory = __import__(package, fromlist=["create_app", "logs", "views", "config"])
    if which == "service":
        app = factory.create_app()
    else:
        app = Flask(package)
        app.config.from_mapping(factory.config.settings_from_environ())
        if which == "bare":
            factory.logs.init_app(app)
        app.register_blueprint(factory.views.bp)

    def start_response(status, headers, exc_info=None):
        return None

    for _ in range(requests):
        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": "/",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(),
            "wsgi.errors": sys.stderr,
        }
        b"".join(app(environ, start_response))


if __name__ == "__main__":
    main()
