"""Certificates for the tests' TLS servers, made with openssl on the spot."""

from .baking import run
from .tools import require


def certificates(directory):
    """A CA, and a certificate it signs for 127.0.0.1 and localhost: the paths of the
    CA's certificate, and of the server's certificate and key."""
    openssl = str(require("openssl"))
    ca_key, ca, key, request, certificate = (
        directory / name for name in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=cf-discovery test CA", "-keyout", ca_key, "-out", ca,
        ],
        cwd=directory,
    )  # fmt: skip
    run(
        [
            openssl, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", key, "-out", request,
        ],
        cwd=directory,
    )  # fmt: skip
    extensions = directory / "san.cnf"
    extensions.write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    run(
        [
            openssl, "x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key,
            "-CAcreateserial", "-days", "2", "-extfile", extensions, "-out", certificate,
        ],
        cwd=directory,
    )  # fmt: skip
    return ca, certificate, key
