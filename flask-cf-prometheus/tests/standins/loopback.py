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


def free_loopback_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
