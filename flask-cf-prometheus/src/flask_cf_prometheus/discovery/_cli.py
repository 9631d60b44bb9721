"""The command line: options, the environment's settings, checked once, and `main`.

A setting that cannot work stops it before it asks anything, with one line and exit
status 2; a failed pass is status 1 with --once, and otherwise the loop goes on.
"""

import argparse
import ipaddress
import os
import re
import urllib.parse
from pathlib import Path

from ._api import _Api, _api_url
from ._errors import _DiscoveryError
from ._files import _Fleet, _locked
from ._http import _redacted, _secure_url, _tls_context
from ._jobs import _foundation_name, _Settings
from ._passes import _log, _run
from ._uaa import _grant

_DESCRIPTION = "Keep Prometheus's scrape jobs equal to the Cloud Foundry fleet."
_ENVIRONMENT = """\
environment:
  CF_API                  the API's URL, e.g. https://api.example.com (required)
  CF_CLIENT_ID            a UAA client with the client_credentials grant, and
  CF_CLIENT_SECRET        its secret, or CF_CLIENT_SECRET_FILE, a file holding it
  CF_USERNAME             or a technical user (UAA's password grant, through the cf CLI's
  CF_PASSWORD             client "cf"), and the password, or CF_PASSWORD_FILE
  CF_UAA_URL              UAA's URL, where the API's root document names another
  CF_CA_CERT              a PEM file of the CAs to trust for the API and UAA
                          (default: the system's, or SSL_CERT_FILE)
  CF_FOUNDATION           the cf_foundation label and the files' names (default: the
                          API's host name)
  HTTPS_PROXY, NO_PROXY   a proxy for the API and UAA; never for the reload, which goes
                          straight to --prometheus
"""


def _prometheus_url(text):
    """--prometheus: an http or https URL with a host and no credentials (urllib would
    not send them, and a log would show them), for argparse."""
    if "@" in text:
        raise argparse.ArgumentTypeError("the URL must not hold credentials (user:password@)")
    return _http_url(text)


def _http_url(text):
    """An http or https URL with a host, for argparse."""
    try:
        parts = urllib.parse.urlsplit(text)
        valid = parts.scheme in ("http", "https") and parts.hostname and parts.port != 0
    except ValueError:
        valid = False
    if not valid:
        raise argparse.ArgumentTypeError(f"{_redacted(text)!r} is not an http:// or https:// URL")
    return text


def _host_and_port(text):
    """HOST:PORT, [IPv6]:PORT, for argparse: an address and a port, never a port alone
    (which would listen on every address)."""
    host, _, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        try:
            valid = bool(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            valid = False
    else:
        valid = bool(host) and not set(host) & set("[]:")
    if not valid or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return text


def _shard(text):
    """I/N, a shard and how many there are, for argparse."""
    match = re.fullmatch(r"([0-9]{1,6})/([0-9]{1,6})", text)
    if not match or int(match[1]) >= int(match[2]):
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N with 0 <= I < N, e.g. 0/2")
    return int(match[1]), int(match[2])


def _seconds(minimum):
    """A number of seconds from `minimum` to a day, for argparse."""

    def seconds(text):
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is None or not minimum <= value <= 86400:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a number of seconds from {minimum:g} to 86400"
            )
        return value

    return seconds


def _arguments(argv):
    """The options, parsed: argparse's own error (status 2) for a bad one."""
    parser = argparse.ArgumentParser(
        prog="cf-discovery",
        description=_DESCRIPTION,
        epilog=_ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--once", action="store_true", help="one pass (and reload), then exit: for cron"
    )
    parser.add_argument(
        "--interval",
        type=_seconds(0.1),
        default=30,
        help="seconds between passes (default 30)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("cf-targets"),
        help="directory of the files (default: cf-targets/ in the working directory)",
    )
    parser.add_argument(
        "--prometheus",
        type=_prometheus_url,
        default="http://127.0.0.1:9090",
        help="Prometheus to ask to reload when a job came or went (default %(default)s)",
    )
    parser.add_argument(
        "--no-reload",
        action="store_true",
        help="never ask Prometheus to reload: it reloads by itself"
        " (--enable-feature=auto-reload-config)",
    )
    parser.add_argument(
        "--metrics-address",
        type=_host_and_port,
        default="127.0.0.1:9188",
        help="HOST:PORT to serve cf-discovery's own metrics at (default %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds(0.1),
        default=10,
        help="seconds to wait for each read of an answer (default 10)",
    )
    parser.add_argument(
        "--pass-timeout",
        type=_seconds(1),
        default=300,
        help="seconds a whole pass may take, or it fails and the files stay (default 300)",
    )
    parser.add_argument(
        "--scheme",
        choices=("https", "http"),
        default="https",
        help="how Prometheus reaches the routes (default https)",
    )
    parser.add_argument(
        "--instance-header",
        choices=("app", "process"),
        default="app",
        help="app: X-CF-APP-INSTANCE, which every router honours, a job per index;"
        " process: X-CF-PROCESS-INSTANCE (gorouter from 2025), a job per instance of each"
        " web process, so both processes of a deploy are scraped (default app)",
    )
    parser.add_argument(
        "--scrape-ca-file",
        type=lambda text: Path(text).resolve(),
        help="CA file the jobs trust for the routes' TLS",
    )
    parser.add_argument(
        "--shard",
        type=_shard,
        help="I/N: only the instances of shard I of N (from 0), for N agents that share"
        " a fleet, each with its own --output",
    )
    proxy = parser.add_mutually_exclusive_group()
    proxy.add_argument("--scrape-proxy-url", type=_http_url, help="a proxy for the jobs")
    proxy.add_argument(
        "--scrape-proxy-from-environment",
        action="store_true",
        help="the jobs use the proxy of Prometheus's environment (HTTPS_PROXY, NO_PROXY)",
    )
    return parser.parse_args(argv)


def main(argv=None):
    """Run cf-discovery with `argv` (default: the command line); return its exit status."""
    options = _arguments(argv)
    try:
        url = _api_url(os.environ.get("CF_API", "").strip())
        uaa = os.environ.get("CF_UAA_URL", "").strip()
        uaa = _secure_url(uaa, "CF_UAA_URL") if uaa else None
        api = _Api(url, _grant(os.environ), options.timeout, _tls_context(os.environ), uaa)
        foundation = _foundation_name(os.environ, url)
        lock = _locked(options.output, foundation)
    except _DiscoveryError as error:
        _log(str(error))
        return 2
    except OSError as error:
        _log(f"cannot use --output={options.output}: {error.strerror}")
        return 2
    with lock:
        fleet = _Fleet(options.output, _Settings(options, foundation), url, not options.no_reload)
        try:
            for name in fleet.remove_former_names():
                _log(f"removed the files of foundation {name!r}, this API's former CF_FOUNDATION")
        except OSError as error:
            _log(f"cannot use --output={options.output}: {error.strerror}")
            return 2
        return _run(options, api, fleet)
