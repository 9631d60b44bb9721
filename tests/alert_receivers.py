"""Stand-ins, on loopback, for the endpoints Alertmanager notifies: a generic webhook,
a Slack incoming webhook, PagerDuty's Events API v2, Opsgenie's Alert API and an SMTP
relay. Each checks what arrives against its vendor's documented format, answers as the
vendor does, and keeps each notification as a `Notification`; what breaks the format
goes to `rejected` (with a 400 or an SMTP error, as the vendor would answer), which a
test expects to stay empty.

The documents each follows:
- webhook: prometheus.io/docs/alerting/latest/configuration/#webhook_config
- Slack: docs.slack.dev/messaging/sending-messages-using-incoming-webhooks and
  docs.slack.dev/legacy/legacy-messaging/legacy-secondary-message-attachments
- PagerDuty: developer.pagerduty.com/docs/events-api-v2/trigger-events and
  .../resolve-events
- Opsgenie: docs.opsgenie.com/docs/alert-api (Create Alert, Close Alert)
- SMTP: RFC 5321, RFC 3207 (STARTTLS), RFC 4954 (AUTH), RFC 4616 (PLAIN)
"""

import base64
import contextlib
import email
import email.policy
import json
import re
import socketserver
import ssl
import threading
from dataclasses import dataclass, field

from standins.loopback import StandIn, serving


@dataclass
class Notification:
    """What a person is told: firing or resolved, which alert, of which service, the
    alert's summary and its runbook's link, as each vendor's payload carries them."""

    status: str
    alertname: str
    job: str
    text: str
    runbook_url: str
    urgent: bool | None = None  # the vendor's severity or priority, where it has one
    slo: str | None = None
    raw: object = field(default=None, repr=False)


class Received:
    def __init__(self):
        self.notifications = []
        self.rejected = []
        self.lock = threading.Lock()

    def keep(self, notification):
        with self.lock:
            self.notifications.append(notification)

    def reject(self, why):
        with self.lock:
            self.rejected.append(why)

    def named(self, alertname, status=None):
        return [
            notification
            for notification in list(self.notifications)
            if notification.alertname == alertname and status in (None, notification.status)
        ]


def _json_handler(received, route):
    """An HTTP handler that takes JSON POSTs (and Opsgenie's PUTs) and answers with what
    `route(method, path, headers, body)` returns: (status, content type, answer body),
    or raises ValueError for a payload the vendor would refuse."""

    class Handler(StandIn):
        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(length)
            try:
                if not self.headers.get("Content-Type", "").startswith("application/json"):
                    raise ValueError(f"Content-Type {self.headers.get('Content-Type')!r}")
                status, content_type, answer = route(
                    self.command, self.path, self.headers, json.loads(body)
                )
            except (ValueError, KeyError, TypeError) as error:
                received.reject(f"{self.command} {self.path}: {error!r}: {body[:500]!r}")
                status, content_type, answer = 400, "text/plain", b"invalid_payload"
            self.answer(status, answer, [("Content-Type", content_type)])

        do_PUT = do_POST

    return Handler


def _require(condition, what):
    if not condition:
        raise ValueError(what)


def _text(value, what, limit=None):
    _require(isinstance(value, str) and value, f"{what} must be a non-empty string")
    _require(limit is None or len(value) <= limit, f"{what} is over {limit} characters")
    return value


WEBHOOK_ALERT_KEYS = {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL",
                      "fingerprint"}  # fmt: skip
WEBHOOK_KEYS = {"version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels",
                "commonLabels", "commonAnnotations", "externalURL", "alerts"}  # fmt: skip


@contextlib.contextmanager
def webhook(token):
    """Alertmanager's generic webhook, with the bearer token the receiver is given."""
    received = Received()

    def route(method, path, headers, body):
        _require(method == "POST" and path == "/hook", f"{method} {path}")
        _require(headers.get("Authorization") == f"Bearer {token}", "no or a wrong bearer token")
        _require(body.keys() >= WEBHOOK_KEYS, f"missing {WEBHOOK_KEYS - body.keys()}")
        _require(body["version"] == "4", "version")
        _require(body["status"] in ("firing", "resolved"), "status")
        for alert in body["alerts"]:
            _require(
                alert.keys() >= WEBHOOK_ALERT_KEYS, f"missing {WEBHOOK_ALERT_KEYS - alert.keys()}"
            )
            labels, annotations = alert["labels"], alert["annotations"]
            received.keep(
                Notification(
                    status=alert["status"],
                    alertname=labels["alertname"],
                    job=labels.get("job", ""),
                    text=annotations.get("summary", ""),
                    runbook_url=annotations.get("runbook_url", ""),
                    urgent={"page": True, "ticket": False}.get(body["receiver"]),
                    slo=labels.get("slo"),
                    raw=body,
                )
            )
        return 200, "text/plain", b""

    with serving(_json_handler(received, route)) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received


@contextlib.contextmanager
def slack():
    """A Slack incoming webhook: a JSON message with text, blocks or attachments (each
    attachment with its plain-text fallback), answered with a plain "ok"."""
    received = Received()
    title_pattern = re.compile(r"(FIRING|RESOLVED): (\w+) \(([\w-]+)\)")

    def route(method, path, headers, body):
        _require(method == "POST" and path.startswith("/services/"), f"{method} {path}")
        _require(
            any(body.get(key) for key in ("text", "blocks", "attachments")),
            "a message needs text, blocks or attachments",
        )
        for attachment in body.get("attachments", []):
            _text(attachment.get("fallback"), "an attachment's fallback")
            match = title_pattern.fullmatch(_text(attachment.get("title"), "title"))
            _require(match, f"title {attachment['title']!r}")
            received.keep(
                Notification(
                    status=match[1].lower(),
                    alertname=match[2],
                    job=match[3],
                    text=_text(attachment.get("text"), "text"),
                    runbook_url=attachment.get("title_link", ""),
                    raw=body,
                )
            )
        return 200, "text/plain", b"ok"

    with serving(_json_handler(received, route)) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/XXXX", received


PAGERDUTY_SEVERITIES = {"critical", "error", "warning", "info"}


@contextlib.contextmanager
def pagerduty(routing_key):
    """PagerDuty's Events API v2: trigger events with their payload's summary (at most
    1,024 characters), source and severity; resolve events by dedup_key; answered with
    202 and the event's dedup_key."""
    received = Received()
    triggered = {}

    def route(method, path, headers, body):
        _require(method == "POST" and path == "/v2/enqueue", f"{method} {path}")
        _require(body.get("routing_key") == routing_key, "routing_key")
        _require(len(routing_key) == 32, "a routing key has 32 characters")
        action = body.get("event_action")
        _require(action in ("trigger", "acknowledge", "resolve"), f"event_action {action!r}")
        dedup_key = _text(body.get("dedup_key"), "dedup_key", 255)
        if action == "trigger":
            payload = body["payload"]
            summary = _text(payload.get("summary"), "payload.summary", 1024)
            _text(payload.get("source"), "payload.source")
            _require(payload.get("severity") in PAGERDUTY_SEVERITIES, "payload.severity")
            _require(isinstance(payload.get("custom_details", {}), dict), "custom_details")
            links = body.get("links", [])
            for link in links:
                _text(link.get("href"), "a link's href")
            labels, annotations = _pagerduty_firing(payload.get("custom_details", {}))
            notification = Notification(
                status="firing",
                alertname=labels.get("alertname", ""),
                job=labels.get("job", ""),
                text=summary + "\n" + annotations.get("summary", ""),
                runbook_url=links[0]["href"] if links else "",
                urgent=payload["severity"] == "critical",
                slo=labels.get("slo"),
                raw=body,
            )
            triggered[dedup_key] = notification
        else:
            _require(dedup_key in triggered, "resolves an event never triggered")
            opened = triggered[dedup_key]
            notification = Notification(**{**opened.__dict__, "status": "resolved", "raw": body})
        received.keep(notification)
        answer = {"status": "success", "message": "Event processed", "dedup_key": dedup_key}
        return 202, "application/json", json.dumps(answer).encode()

    with serving(_json_handler(received, route)) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}/v2/enqueue", received


def _pagerduty_firing(details):
    """The first firing alert's labels and annotations, from Alertmanager's default
    custom_details: JSON alerts since 0.30, the text of its default template before."""
    firing = details.get("firing", "")
    if isinstance(firing, list):
        return firing[0]["labels"], firing[0]["annotations"]
    text = firing.partition("Annotations:")
    return (
        {name: _label(text[0], name) for name in ("alertname", "job", "slo")},
        {"summary": _label(text[2], "summary")},
    )


def _label(text, name):
    """A label's value as Alertmanager's default templates list them: ` - name = value`."""
    match = re.search(rf"^ - {name} = (.*)$", text, re.MULTILINE)
    return match[1].strip() if match else ""


@contextlib.contextmanager
def opsgenie(api_key):
    """Opsgenie's Alert API: Create Alert (a message of at most 130 characters, an alias
    of at most 512, details of strings, priority P1 to P5) and Close Alert by alias, with
    the header Authorization: GenieKey; answered with 202 and a request id."""
    received = Received()
    created = {}

    def route(method, path, headers, body):
        _require(headers.get("Authorization") == f"GenieKey {api_key}", "no or a wrong GenieKey")
        if method == "POST" and path == "/v2/alerts":
            _text(body.get("message"), "message", 130)
            alias = _text(body.get("alias"), "alias", 512)
            _require(len(body.get("description", "")) <= 15000, "description")
            _require(len(body.get("source", "")) <= 100, "source")
            _require(body.get("priority") in {"P1", "P2", "P3", "P4", "P5"}, "priority")
            details = body.get("details", {})
            _require(all(isinstance(value, str) for value in details.values()), "details")
            description = body.get("description", "")
            created[alias] = Notification(
                status="firing",
                alertname=_label(description, "alertname"),
                job=_label(description, "job"),
                text=body["message"] + "\n" + description,
                runbook_url=details.get("runbook_url", ""),
                urgent=body["priority"] == "P1",
                slo=_label(description, "slo") or None,
                raw=body,
            )
            received.keep(created[alias])
        else:
            match = re.fullmatch(r"/v2/alerts/([^/?]+)/close\?identifierType=alias", path)
            _require(method == "POST" and match, f"{method} {path}")
            _require(match[1] in created, "closes an alert never created")
            opened = created[match[1]]
            received.keep(Notification(**{**opened.__dict__, "status": "resolved", "raw": body}))
        answer = {"result": "Request will be processed", "took": 0.01, "requestId": "00000000"}
        return 202, "application/json", json.dumps(answer).encode()

    with serving(_json_handler(received, route)) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}/", received


class _SMTPHandler(socketserver.StreamRequestHandler):
    """One SMTP session: EHLO, STARTTLS (required before AUTH, as relays on 587 have it),
    AUTH PLAIN or LOGIN, then MAIL, RCPT, DATA; each message parsed as RFC 5322 mail."""

    def handle(self):
        relay = self.server.relay
        self.secure = False
        self.user = None
        self.say("220 127.0.0.1 ESMTP stand-in")
        while line := self.rfile.readline(4096):
            command, _, argument = line.decode("ascii").rstrip("\r\n").partition(" ")
            command = command.upper()
            if command in ("EHLO", "HELO"):
                extensions = ["AUTH PLAIN LOGIN"] if self.secure else ["STARTTLS"]
                self.say(*["250-127.0.0.1", *[f"250-{e}" for e in extensions[:-1]]],
                         f"250 {extensions[-1]}")  # fmt: skip
            elif command == "STARTTLS" and not self.secure:
                self.say("220 2.0.0 Ready to start TLS")
                self.connection = relay.tls.wrap_socket(self.connection, server_side=True)
                self.rfile = self.connection.makefile("rb")
                self.wfile = self.connection.makefile("wb", buffering=0)
                self.secure = True
            elif command == "AUTH" and self.secure:
                self.authenticate(argument)
            elif command in ("MAIL", "RCPT", "DATA") and self.user is None:
                relay.received.reject(f"{command} before AUTH")
                self.say("530 5.7.0 Authentication required")
            elif command == "MAIL":
                self.envelope = {"from": argument, "to": []}
                self.say("250 2.1.0 OK")
            elif command == "RCPT":
                self.envelope["to"].append(argument)
                self.say("250 2.1.5 OK")
            elif command == "DATA":
                self.say("354 End data with <CR><LF>.<CR><LF>")
                lines = []
                while (data := self.rfile.readline()) not in (b".\r\n", b""):
                    lines.append(data[1:] if data.startswith(b"..") else data)
                relay.deliver(self.envelope, b"".join(lines))
                self.say("250 2.0.0 Queued")
            elif command in ("RSET", "NOOP"):
                self.say("250 2.0.0 OK")
            elif command == "QUIT":
                self.say("221 2.0.0 Bye")
                return
            else:
                relay.received.reject(f"unexpected {line!r}")
                self.say("503 5.5.1 Bad sequence of commands")

    def authenticate(self, argument):
        mechanism, _, initial = argument.partition(" ")
        if mechanism.upper() == "PLAIN":
            if not initial:
                self.say("334 ")
                initial = self.rfile.readline().decode().strip()
            _, user, password = base64.b64decode(initial).decode().split("\0")
        elif mechanism.upper() == "LOGIN":
            if not initial:  # RFC 4954 lets the client send it with AUTH
                self.say("334 " + base64.b64encode(b"Username:").decode())
                initial = self.rfile.readline().strip()
            user = base64.b64decode(initial).decode()
            self.say("334 " + base64.b64encode(b"Password:").decode())
            password = base64.b64decode(self.rfile.readline().strip()).decode()
        else:
            self.say("504 5.5.4 Unrecognized authentication type")
            return
        if (user, password) != self.server.relay.account:
            self.server.relay.received.reject(f"AUTH as {user!r} with a wrong password")
            self.say("535 5.7.8 Authentication credentials invalid")
            return
        self.user = user
        self.say("235 2.7.0 Authentication successful")

    def say(self, *lines):
        self.wfile.write(b"".join(line.encode() + b"\r\n" for line in lines))


class _SMTPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True


@dataclass
class _Relay:
    tls: ssl.SSLContext
    account: tuple
    received: Received

    def deliver(self, envelope, data):
        message = email.message_from_bytes(data, policy=email.policy.SMTP)
        for header in ("From", "To", "Subject", "Date", "Message-Id"):
            if not message[header]:
                self.received.reject(f"a message without {header}")
                return
        match = re.match(r"\[(FIRING|RESOLVED)(?::\d+)?\] (\w+) .*\(([^)]*)\)", message["Subject"])
        if not match:
            self.received.reject(f"Subject {message['Subject']!r}")
            return
        html = message.get_body(("html",))
        body = html.get_content() if html else ""
        labels = dict(re.findall(r"(\w+) = ([^<\s]+)", body))
        runbook = re.search(r"runbook_url = (\S+?)<", body)
        self.received.keep(
            Notification(
                status=match[1].lower(),
                alertname=match[2],
                job=labels.get("job", ""),
                text=body,
                runbook_url=runbook[1] if runbook else "",
                slo=labels.get("slo"),
                raw=(envelope, message),
            )
        )


@contextlib.contextmanager
def smtp_relay(tls, account):
    """An SMTP relay on loopback that takes mail only over STARTTLS with `tls` (a server
    context) and after AUTH as `account` (user, password); yields its host:port."""
    received = Received()
    with serving(_SMTPHandler, server_class=_SMTPServer) as server:
        server.relay = _Relay(tls, account, received)
        yield f"127.0.0.1:{server.server_address[1]}", received
