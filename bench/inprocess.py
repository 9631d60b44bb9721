"""Instructions per request of /, in-process: the WSGI app called directly, with no
server, so that no timing-dependent loop (gunicorn's heartbeat, say) adds to the count.

Run by bench.py under callgrind with the baked project's Python, in its directory:
    python inprocess.py PACKAGE APP REQUESTS LAYOUT [ROUTER_ID]
APP is `service` (create_app(), metrics in multiprocess mode as under gunicorn),
`no-ids` (the same service with every statement of its middleware that makes, keeps or
returns a request id removed) or `bare` (the service's views alone). With ROUTER_ID,
each request carries it as the Cloud Foundry router's X-Vcap-Request-Id. LAYOUT, a
number, sets how much memory is taken before the app is imported: each gives the
objects other addresses, which is all that changes from one layout to another. Every
run builds all three apps, so runs of one layout differ only in the requests they serve.
"""

import ast
import importlib.util
import io
import os
import sys
import tempfile

# What the middleware calls a request's ids; a statement naming one is the ids' work.
ID_NAMES = frozenset({"request_id", "REQUEST_ID_KEY", "TRACE_ID_KEY"})
# The statements that name them in the middleware as baked: the router's id read, its
# check (or a new id), the environ entry, the trace id, and the response header.
ID_STATEMENTS = 5


def main():
    package, which, requests = sys.argv[1], sys.argv[2], int(sys.argv[3])
    layout = int(sys.argv[4])
    router_id = sys.argv[5] if len(sys.argv) > 5 else None
    taken = [bytearray(8 * (n % 61)) for n in range(layout * 40)]  # before the app's imports
    with tempfile.TemporaryDirectory(prefix="bench-inprocess-") as directory:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        serve(package, which, requests, router_id)
    del taken


def serve(package, which, requests, router_id):
    from prometheus_client import values

    values.ValueClass = values.MultiProcessValue()  # as in a gunicorn worker
    app = build(package, which)
    answered = []

    def start_response(status, headers, exc_info=None):
        answered[:] = status, headers

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
        if router_id is not None:
            environ["HTTP_X_VCAP_REQUEST_ID"] = router_id
        b"".join(app(environ, start_response))
    # The apps are what they say: an answer, with an id only where ids are made.
    status, headers = answered
    if status != "200 OK" or ("X-Request-Id" in dict(headers)) != (which == "service"):
        raise SystemExit(f"{which}: unexpected answer {answered}")


def build(package, which):
    """inprocess.py's `which` app. All three are built, in the same order, whichever is
    asked for, so that the runs compared lay out memory alike up to their requests."""
    factory = __import__(package, fromlist=["create_app", "views"])
    from flask import Flask
    from flask_cf_prometheus import _bench

    bare = Flask(package)
    bare.config.from_mapping(_bench.app_settings(), SERVICE_NAME=package)
    bare.register_blueprint(factory.views.bp)
    service = factory.create_app()
    with _bench.middleware_replaced_by(without_request_ids(_bench.MIDDLEWARE_MODULE)):
        no_ids = factory.create_app()
    return {"bare": bare, "no-ids": no_ids, "service": service}[which]


def without_request_ids(name):
    """The module `name`, imported anew with the statements of its functions that name a
    request id removed; stop if they are not the ones expected."""
    spec = importlib.util.find_spec(name)
    with open(spec.origin, encoding="utf-8") as source:
        tree = ast.parse(source.read(), spec.origin)
    removed = []
    tree.body = _without_ids(tree.body, removed)
    if len(removed) != ID_STATEMENTS:
        lines = [statement.lineno for statement in removed]
        raise SystemExit(f"{name}: expected {ID_STATEMENTS} request id statements, not at {lines}")
    module = importlib.util.module_from_spec(spec)
    exec(compile(tree, spec.origin, "exec"), module.__dict__)
    return module


def _without_ids(statements, removed):
    """These statements without those that name an id, which go to `removed`; the
    statements within those kept (a function's, a branch's) likewise."""
    kept = []
    for statement in statements:
        if _names_an_id(statement):
            removed.append(statement)
            continue
        for field in ("body", "orelse", "finalbody"):
            if isinstance(getattr(statement, field, None), list):
                setattr(statement, field, _without_ids(getattr(statement, field), removed))
        kept.append(statement)
    return kept


def _names_an_id(statement):
    if isinstance(statement, ast.FunctionDef):
        return False  # its statements are looked at one by one
    return any(isinstance(node, ast.Name) and node.id in ID_NAMES for node in ast.walk(statement))


if __name__ == "__main__":
    main()
