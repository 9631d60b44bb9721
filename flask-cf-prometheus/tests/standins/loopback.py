"""HTTP stand-ins on loopback: a server in a thread of its own, and a handler base that
answers in one call and logs nothing."""

import contextlib
import http.server
import socket
import threading


class _LoopbackServer(http.server.ThreadingHTTPServer):
    # A fleet's scrapes, or discovery's requests, arriving at once wait in the backlog
    # rather than being refused.
    request_queue_size = 256


@contextlib.contextmanager
def serving(handler, tls=None, server_class=_LoopbackServer):
    """An HTTP server on a free loopback port, answering with `handler` in a thread of its
    own (HTTPS with the `tls` server context, if any), for the duration of the block;
    the server is yielded. Another socketserver class serves another protocol."""
    server = server_class(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


class StandIn(http.server.BaseHTTPRequestHandler):
    """A request handler for a stand-in server: `answer` sends a whole response, and no
    request is logged."""

    def answer(self, status, body=b"", headers=()):
        """Send `status`, the `headers` ((name, value) pairs) in order, a Content-Length,
        and `body`."""
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


_handed_out = set()


def free_loopback_port():
    """A loopback port nothing listens on, for a server a test starts in another process.

    The kernel may offer the port it offered a moment ago once that probe is closed (CI
    once gave a Prometheus and its Alertmanager the same one), so no port is handed out
    twice by one test process.
    """
    for _ in range(1000):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise AssertionError("no loopback port left that this process has not handed out")
