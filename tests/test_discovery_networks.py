"""cf-discovery on an enterprise network: the API, UAA and every instance reached only
through an HTTP CONNECT proxy, each serving a certificate of a CA the test makes, which
nothing trusts unless told to. Discovery goes through the proxy (HTTPS_PROXY) trusting
CF_CA_CERT; the jobs it writes go through it too (--scrape-proxy-url) trusting
--scrape-ca-file; the reload goes straight to Prometheus whatever the environment says."""

import contextlib
import select
import socket
import ssl
import subprocess
import threading
import time

from standins.cloudfoundry import CloudFoundry, cloudfoundry_api, fleet_router
from standins.loopback import free_loopback_port

from .baking import cf_discovery
from .prometheus_server import running_prometheus
from .tls import certificates
from .tools import require

LABELS = {"prometheus.io/scrape": "true"}


@contextlib.contextmanager
def connect_proxy():
    """An HTTP proxy on loopback that tunnels CONNECT and nothing else; the hosts it was
    asked to tunnel to. Every tunnel ends when the test does."""
    tunnelled = []
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def tunnel(client):
        with client:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = client.recv(4096)
                if not chunk:
                    return
                request += chunk
            method, target, _ = request.split(b"\r\n")[0].decode().split(" ")
            if method != "CONNECT":
                client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            tunnelled.append(target)
            host, _, port = target.rpartition(":")
            try:
                upstream = socket.create_connection((host, int(port)), timeout=5)
            except OSError:
                client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            with upstream, contextlib.suppress(OSError):  # a reset ends the tunnel
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                while not stop.is_set():
                    ready, _, _ = select.select([client, upstream], [], [], 0.5)
                    for source in ready:
                        data = source.recv(65536)
                        if not data:
                            return
                        (upstream if source is client else client).sendall(data)

    def accept():
        while not stop.is_set():
            ready, _, _ = select.select([listener], [], [], 0.5)
            if ready:
                client, _ = listener.accept()
                threading.Thread(target=tunnel, args=(client,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", tunnelled
    finally:
        stop.set()
        thread.join(10)
        listener.close()


@contextlib.contextmanager
def prometheus_scraping_every_second(tmp_path, output):
    """A real Prometheus that reads its scrape jobs from the files in `output`."""
    port = free_loopback_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(f"global: {{scrape_interval: 1s}}\nscrape_config_files: ['{output}/*.yml']\n")
    with running_prometheus(
        [
            require("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
        ],
        port,
        tmp_path / "prometheus.log",
    ) as prometheus:
        yield prometheus


def everything_through(proxy, discovery_environment):
    """Every request through the proxy: Prometheus's address too, for the reload."""
    environ = {
        **discovery_environment,
        "HTTPS_PROXY": proxy,
        "https_proxy": proxy,
        "HTTP_PROXY": proxy,
        "http_proxy": proxy,
    }
    environ.pop("NO_PROXY", None)
    environ.pop("no_proxy", None)
    return environ


def test_discovery_and_scrapes_through_a_proxy_trusting_only_the_ca_they_are_given(
    project_python, tmp_path
):
    ca, certificate, key = certificates(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(certificate, key)
    output = tmp_path / "cf-targets"
    platform = CloudFoundry()
    with contextlib.ExitStack() as stack:
        proxy, tunnelled = stack.enter_context(connect_proxy())
        stack.enter_context(cloudfoundry_api(platform, tls=tls))
        router = stack.enter_context(fleet_router(platform, tls=tls))
        space = platform.space("live", platform.organization("payments"))
        apps = [
            platform.push(f"app-{number}", space, router, 2, LABELS, {"prometheus.io/auth": "none"})
            for number in range(3)
        ]
        prometheus = stack.enter_context(prometheus_scraping_every_second(tmp_path, output))
        environ = everything_through(proxy, platform.discovery_environment(CF_FOUNDATION="lab"))
        command = [
            cf_discovery(project_python),
            "--once",
            f"--output={output}",
            f"--prometheus={prometheus.url}",
            f"--scrape-proxy-url={proxy}",
            f"--scrape-ca-file={ca}",
        ]

        untrusted = subprocess.run(
            command, env=environ, capture_output=True, text=True, timeout=60, check=False
        )
        trusted = subprocess.run(
            command,
            env={**environ, "CF_CA_CERT": str(ca)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        deadline = time.monotonic() + 60
        while len(up := prometheus.query('up{cf_app_guid!=""} == 1')) < 6:
            assert time.monotonic() < deadline, prometheus.targets()
            time.sleep(0.5)
        answered = prometheus.query("stand_in_answered")

    assert untrusted.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr, untrusted.stderr
    assert trusted.returncode == 0, trusted.stderr
    assert "did not reload" not in trusted.stderr, "the reload went straight to Prometheus"
    assert {item["metric"]["cf_app_guid"] for item in up} == set(apps)
    assert len(answered) == 6
    api = platform.url.removeprefix("https://")
    assert api in tunnelled, "discovery went through the proxy"
    assert router in tunnelled, "the scrapes went through the proxy"
    assert prometheus.url.removeprefix("http://") not in tunnelled
