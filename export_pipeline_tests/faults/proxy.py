"""A fault-injecting HTTP reverse proxy for the local cloud (test-only).

Why a proxy: moto and bqemulator always answer correctly; no local server can
be told "fail the next two GetObject calls with SlowDown" or "drop the
connection half-way through this response". Real AWS and Google do exactly
that now and then, and the pipeline promises to survive it (retries) or to
fail cleanly. This module is the one deliberate stand-in of the test suite:
a real HTTP server on 127.0.0.1 that forwards every request unchanged to the
real local cloud, except those matching a rule, which get a fault instead.

How it works
------------
`FaultProxy(upstream_host, upstream_port)` listens on a free loopback port
(a `ThreadingHTTPServer`, HTTP/1.1 keep-alive, one thread per connection).
For each request it reads the whole request (Content-Length or chunked),
then walks its rules in order; the first rule whose `method`, `path`
(regex over path + query string), `target` (regex over the `X-Amz-Target`
header, DynamoDB's operation name) and `body` (regex over the request body,
e.g. `Action=DescribeExportTasks` for the RDS query protocol) all match
*and* that has not yet fired `times` times, fires:

- `respond(status, body, headers)`: answer without forwarding (the request
  never reaches the cloud) — the protocol's own error shapes come from
  `s3_error`, `dynamodb_error`, `rds_error`, `bigquery_error`;
- `reset(...)`: a TCP RST (SO_LINGER 0 then close). `when="before"` drops the
  request before forwarding; `when="after"` forwards it (the cloud *did* the
  work) and drops the response — the case that tests idempotency;
  `when="mid_body"` forwards it, sends the status line, headers and the
  first `after_bytes` bytes of the body, then resets;
- `delay(seconds)`: waits, then forwards normally;
- `hold(when)`: keeps the request and tells the test (`Hold.wait`), until
  the test calls `Hold.release()`; then resets the connection. `when="before"`
  never forwards it (not even after the release: the client is gone by then),
  `when="after"` forwards it (the cloud did the work) and keeps the answer.
  This is how the worker-kill tests catch a run at a chosen stage from the
  outside and SIGKILL it there;
- `rewrite_json(edit)` / `rewrite_text(pattern, replacement)`: forwards, then
  edits the answer (e.g. DescribeExport saying FAILED, or an RDS export
  task's WarningMessage listing a skipped table): states a local server
  cannot be put in on demand, written the way AWS writes them.

Matching can also look at request headers (`headers={"Range": "^$"}`: only
requests without a Range header) and skip the first `skip` matching
requests, so that faults land on different calls instead of piling up on
one call's retries. A `mid_body` reset never sends a whole body: a body
shorter than `after_bytes` is cut in half.

Requests that match no (live) rule are forwarded with their headers intact
(the `Host` header too, so SigV4 signatures and the URLs the emulators build
from it, such as a resumable upload's session URL, stay valid); the answer's
status, headers and body are relayed unchanged, only re-framed with a
Content-Length (hop-by-hop headers dropped). A rewritten answer also loses
the headers that vouch for the old bytes (DynamoDB's x-amz-crc32, ETag).
Every request is recorded in `proxy.log` (`ProxiedRequest`, with its body) with the action
taken, so a test can assert that its faults really fired.

How tests use it
----------------
Fixtures (faults/conftest.py): `aws_proxy` and `bigquery_proxy`, one fresh
proxy per test in front of the session cloud's AWS and BigQuery ports.

The `cloud` resource must keep pointing at the real local cloud (its set-up
calls `control.ensure_running`, which would try to *start* a cloud on the
proxy's ports if the EXPORT_PIPELINE_LOCAL_*_PORT variables were pointed at
the proxy). So instead of changing the environment, `resources_through`
takes the resources `build_resources(config)` made and rebuilds only the
client resources (`s3`, `dynamodb`, `rds`: `endpoint_url`; `bigquery`:
`api_endpoint`) with the proxy's URL, every other field unchanged (retry
settings included: the point is to test the production retry behaviour).
"""

from __future__ import annotations

import http.client
import io
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

# Headers that describe one hop, not the message: never forwarded as they are.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "content-length",
}

# Headers that vouch for the exact body bytes: dropped when the proxy rewrites it.
_DIGEST_HEADERS = {"x-amz-crc32", "content-md5", "etag", "x-amz-checksum-crc32"}

ResetWhen = Literal["before", "after", "mid_body"]
HoldWhen = Literal["before", "after"]
# A held request is let go after this long even if the test forgot to release it.
_HOLD_LIMIT_SECONDS = 300.0


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Respond:
    """Answer with this status/body instead of forwarding."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        return f"respond {self.status}"


@dataclass(frozen=True)
class Reset:
    """Reset the TCP connection (see the module docstring for `when`)."""

    when: ResetWhen = "before"
    after_bytes: int = 0

    def describe(self) -> str:
        return f"reset {self.when}" + (
            f" after {self.after_bytes} bytes" if self.when == "mid_body" else ""
        )


@dataclass(frozen=True)
class Delay:
    """Forward after waiting `seconds`."""

    seconds: float

    def describe(self) -> str:
        return f"delay {self.seconds}s"


@dataclass(frozen=True)
class Rewrite:
    """Forward, then replace the answer's body with `transform(body)` (status kept).

    For states no local server can be put in on demand, e.g. an export that
    DynamoDB reports FAILED: the real answer is edited the way AWS would
    have written it.
    """

    transform: Callable[[bytes], bytes]
    label: str = "rewrite"

    def describe(self) -> str:
        return self.label


class Hold:
    """Keep a request until the test releases it (see `hold`); then reset the connection."""

    def __init__(self, when: HoldWhen = "before") -> None:
        self.when = when
        self._reached = threading.Event()
        self._released = threading.Event()

    def describe(self) -> str:
        return f"hold {self.when}"

    def wait(self, timeout: float) -> bool:
        """True once a request is being held (False if none came within `timeout` s)."""
        return self._reached.wait(timeout)

    @property
    def reached(self) -> bool:
        return self._reached.is_set()

    def release(self) -> None:
        self._released.set()

    def block(self) -> None:
        """Called by the proxy's handler thread: signal, then wait for the release."""
        self._reached.set()
        self._released.wait(_HOLD_LIMIT_SECONDS)


Action = Respond | Reset | Delay | Rewrite | Hold


def respond(status: int, body: bytes | str, content_type: str, **headers: str) -> Respond:
    raw = body.encode() if isinstance(body, str) else body
    extra = tuple((k.replace("_", "-"), v) for k, v in headers.items())
    return Respond(status, raw, (("Content-Type", content_type), *extra))


def reset(when: ResetWhen = "before", after_bytes: int = 0) -> Reset:
    return Reset(when, after_bytes)


def delay(seconds: float) -> Delay:
    return Delay(seconds)


def hold(when: HoldWhen = "before") -> Hold:
    return Hold(when)


def rewrite_json(edit: Callable[[Any], None], label: str = "rewrite json") -> Rewrite:
    """Forward, then let `edit` change the parsed JSON answer in place."""

    def transform(body: bytes) -> bytes:
        document = json.loads(body)
        edit(document)
        return json.dumps(document).encode()

    return Rewrite(transform, label)


def rewrite_text(pattern: str, replacement: str, label: str = "rewrite text") -> Rewrite:
    """Forward, then `re.sub(pattern, replacement)` over the (UTF-8) answer."""

    def transform(body: bytes) -> bytes:
        return re.sub(pattern, replacement, body.decode()).encode()

    return Rewrite(transform, label)


def s3_error(
    status: int = 503, code: str = "SlowDown", message: str = "Please reduce your request rate."
) -> Respond:
    """An S3 REST error document, as S3 sends it (e.g. 503 SlowDown, 500 InternalError)."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>FAULTPROXY0000001</RequestId><HostId>faultproxy</HostId></Error>"
    )
    return respond(status, body, "application/xml", x_amz_request_id="FAULTPROXY0000001")


def dynamodb_error(
    status: int = 400,
    error_type: str = "ThrottlingException",
    message: str = "Rate of requests exceeds the allowed throughput.",
) -> Respond:
    """A DynamoDB JSON-protocol error (`__type` carries the error code)."""
    body = json.dumps(
        {"__type": f"com.amazonaws.dynamodb.v20120810#{error_type}", "message": message}
    )
    return respond(status, body, "application/x-amz-json-1.0", x_amzn_RequestId="FAULTPROXY0001")


def rds_error(
    status: int = 400, code: str = "Throttling", message: str = "Rate exceeded"
) -> Respond:
    """An RDS query-protocol error document (XML `ErrorResponse`)."""
    body = (
        '<ErrorResponse xmlns="http://rds.amazonaws.com/doc/2014-10-31/">'
        f"<Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
        "<RequestId>faultproxy-0001</RequestId></ErrorResponse>"
    )
    return respond(status, body, "text/xml")


def bigquery_error(
    status: int = 503, reason: str = "backendError", message: str = "Backend error"
) -> Respond:
    """A Google API JSON error (`{"error": {"code", "message", "errors": [{"reason"}]}}`)."""
    body = json.dumps(
        {
            "error": {
                "code": status,
                "message": message,
                "errors": [{"message": message, "domain": "global", "reason": reason}],
                "status": "UNAVAILABLE" if status == 503 else "INTERNAL",
            }
        }
    )
    return respond(status, body, "application/json; charset=UTF-8")


# --------------------------------------------------------------------------- rules


@dataclass
class Rule:
    """Fire `action` on the first `times` requests that match every given pattern."""

    action: Action
    method: str | None = None
    path: str | None = None
    target: str | None = None
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)  # name -> regex ("" if absent)
    times: int = 1
    skip: int = 0
    name: str = ""
    fired: int = 0
    seen: int = 0

    def matches(
        self, method: str, path: str, target: str, body: bytes, headers: Any = None
    ) -> bool:
        """Whether the request matches every pattern (whether it fires is `take_rule`'s call)."""
        if self.method is not None and method.upper() != self.method.upper():
            return False
        if self.path is not None and not re.search(self.path, path):
            return False
        if self.target is not None and not re.search(self.target, target):
            return False
        for name, pattern in self.headers.items():
            if not re.search(pattern, (headers.get(name) if headers else None) or ""):
                return False
        return self.body is None or re.search(self.body.encode(), body) is not None

    @property
    def label(self) -> str:
        return self.name or f"{self.method or '*'} {self.path or ''} {self.target or ''}".strip()


@dataclass(frozen=True)
class ProxiedRequest:
    method: str
    path: str
    target: str
    action: str  # "forward" or the fault's description
    rule: str = ""
    status: int | None = None
    body: bytes = b""  # the request body as the client sent it


# --------------------------------------------------------------------------- server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def log_message(self, format: str, *args: Any) -> None:
        return  # the proxy's own record is `FaultProxy.log`

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        body = self._read_body()
        target = self.headers.get("X-Amz-Target") or ""
        proxy = self.server.owner
        rule = proxy.take_rule(self.command, self.path, target, body, self.headers)
        action = rule.action if rule else None
        record = lambda label, status=None: proxy.record(  # noqa: E731
            ProxiedRequest(
                self.command, self.path, target, label, rule.label if rule else "", status, body
            )
        )
        if isinstance(action, Respond):
            record(action.describe(), action.status)
            self._send(action.status, list(action.headers), action.body)
            return
        if isinstance(action, Reset) and action.when == "before":
            record(action.describe())
            self._reset()
            return
        if isinstance(action, Hold) and action.when == "before":
            record(action.describe())
            action.block()
            self._reset()  # never forwarded: the client that sent it is gone
            return
        if isinstance(action, Delay):
            time.sleep(action.seconds)
        status, reason, headers, payload = self._forward(body)
        if isinstance(action, Hold):
            record(action.describe(), status)
            action.block()
            self._reset()
            return
        if isinstance(action, Rewrite):
            payload = action.transform(payload)
            headers = [(k, v) for k, v in headers if k.lower() not in _DIGEST_HEADERS]
        if isinstance(action, Reset):
            record(action.describe(), status)
            if action.when == "mid_body":
                # Never the whole body: a short one is cut in half.
                cut = min(action.after_bytes, len(payload) // 2)
                self._send(status, headers, payload, reason, stop_after=cut)
            self._reset()
            return
        record(action.describe() if action else "forward", status)
        self._send(status, headers, payload, reason)

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        host, port = self.server.owner.upstream
        connection = http.client.HTTPConnection(host, port, timeout=120)
        try:
            connection.putrequest(
                self.command, self.path, skip_host=True, skip_accept_encoding=True
            )
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    connection.putheader(name, value)
            if body or self.command in ("POST", "PUT", "PATCH"):
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body or None)
            response = connection.getresponse()
            payload = response.read()
            headers = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            if self.command == "HEAD" and response.getheader("Content-Length") is not None:
                headers.append(("Content-Length", response.getheader("Content-Length") or "0"))
            return response.status, response.reason, headers, payload
        finally:
            connection.close()

    def _send(
        self,
        status: int,
        headers: list[tuple[str, str]],
        payload: bytes,
        reason: str | None = None,
        stop_after: int | None = None,
    ) -> None:
        self.send_response_only(status, reason)
        for name, value in headers:
            self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD" and status not in (204, 304):
            self.wfile.write(payload if stop_after is None else payload[:stop_after])
        self.wfile.flush()

    def _reset(self) -> None:
        """Abort the connection with a TCP RST (what a crashed load balancer does)."""
        self.close_connection = True
        with suppress(OSError):
            self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.wfile.close()
        self.rfile.close()
        self.connection.close()
        # The base class flushes wfile after every request: give it something harmless.
        self.wfile = io.BytesIO()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _handle


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: FaultProxy


@dataclass
class FaultProxy:
    """A running proxy in front of `upstream` (host, port); see the module docstring."""

    upstream: tuple[str, int]
    rules: list[Rule] = field(default_factory=list)
    log: list[ProxiedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = _ProxyServer(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(
        self,
        action: Action,
        *,
        times: int = 1,
        skip: int = 0,
        name: str = "",
        headers: dict[str, str] | None = None,
        **match: str,
    ) -> Rule:
        """Add a rule (`method`, `path`, `target`, `body` regexes); returns it.

        The rule lets the first `skip` matching requests through (counted
        from the start, including those another rule faulted), then fires on
        the next `times` ones it is the first live rule for, then never again.
        """
        rule = Rule(
            action=action, times=times, skip=skip, name=name, headers=headers or {}, **match
        )
        with self._lock:
            self.rules.append(rule)
        return rule

    def hold(
        self,
        when: HoldWhen = "before",
        *,
        skip: int = 0,
        name: str = "",
        headers: dict[str, str] | None = None,
        **match: str,
    ) -> Hold:
        """Hold the first matching request (after `skip`); returns the `Hold` to wait on."""
        gate = Hold(when)
        self.add(gate, skip=skip, name=name, headers=headers, **match)
        return gate

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.log.clear()

    def take_rule(
        self, method: str, path: str, target: str, body: bytes, headers: Any = None
    ) -> Rule | None:
        with self._lock:
            chosen = None
            for rule in self.rules:
                if rule.matches(method, path, target, body, headers):
                    rule.seen += 1  # every matching request counts towards `skip`
                    if chosen is None and rule.seen > rule.skip and rule.fired < rule.times:
                        chosen = rule
            if chosen is not None:
                chosen.fired += 1
            return chosen

    def record(self, request: ProxiedRequest) -> None:
        with self._lock:
            self.log.append(request)

    def faults(self) -> list[ProxiedRequest]:
        with self._lock:
            return [r for r in self.log if r.action != "forward"]

    def close(self) -> None:
        with self._lock:
            holds = [r.action for r in self.rules if isinstance(r.action, Hold)]
        for held in holds:
            held.release()
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def fault_proxy(host: str, port: int) -> Iterator[FaultProxy]:
    proxy = FaultProxy((host, port))
    try:
        yield proxy
    finally:
        proxy.close()


# --------------------------------------------------------------------------- resources


def resources_through(
    resources: dict[str, Any],
    *,
    aws: FaultProxy | str | None,
    bigquery: FaultProxy | str | None,
    gcs: FaultProxy | str | None = None,
) -> dict[str, Any]:
    """`resources` with the AWS clients sent through `aws` and BigQuery through `bigquery`.

    Each is a proxy or its URL (a worker process knows only the URL). Each
    client resource is rebuilt from its own field values with only the
    endpoint changed; `cloud` (and anything else) is passed on untouched.
    """
    rebuilt = dict(resources)
    for key in ("s3", "dynamodb", "rds"):
        if aws is not None and key in resources:
            rebuilt[key] = _with_fields(resources[key], endpoint_url=_url(aws))
    if bigquery is not None and "bigquery" in resources:
        rebuilt["bigquery"] = _with_fields(resources["bigquery"], api_endpoint=_url(bigquery))
    if gcs is not None and "gcs" in resources:
        rebuilt["gcs"] = _with_fields(resources["gcs"], api_endpoint=_url(gcs))
    return rebuilt


def _url(endpoint: FaultProxy | str) -> str:
    return endpoint if isinstance(endpoint, str) else endpoint.url


def _with_fields(resource: Any, **changes: Any) -> Any:
    values = {
        name: getattr(resource, name)
        for name in type(resource).model_fields
        if getattr(resource, name, None) is not None
    }
    values.update(changes)
    return type(resource)(**values)
