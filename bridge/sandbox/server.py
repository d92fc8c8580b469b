"""The sandbox: a threaded HTTPS server on 127.0.0.1 that answers docs/wire.md, with the
services' throttling, faults, latency and propagation delay as knobs.

Per API request, in this order: latency (the least time an answer takes: the sandbox's own work
on the answer, serialising and compressing included, happens within it, as a service's does
within its round trip); a scripted fault (``inject``); a random drop or 5xx;
the throttle (token bucket, 429 + Retry-After); the bearer token (401) and directory role (403);
then the route; then, for a write the route carried out, a scripted ``inject(after=True)`` or a
random ``lost_answer_rate`` fault that loses its answer (a 500 or a dropped connection after the
change was made, as when the service times out on its side). Identity endpoints get latency and
scripted faults only. A Graph ``$batch`` is not throttled itself: each inner request is, and may
answer 429 inside the batch.

Every 429 is remembered with the time its Retry-After allows the retry; a retry that comes back
sooner is counted in ``stats()["early_retries"]``. A retry is recognised by its
``x-ms-correlation-id`` (a client keeps it across the attempts of one request), an inner ``$batch``
request by its method and URL (the outer request, and so its correlation id, is new each time).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gzip
import hmac
import json
import logging
import math
import random
import re
import secrets
import shutil
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import brotli

from . import api
from .api import Request, Response, error_body
from .config import LIVE_KNOBS, READ_ROLES, ROLE_TEMPLATE_IDS, WRITE_ROLES, SandboxConfig, validate
from .identity import (
    GRAPH_APP_ROLES,
    GRAPH_RESOURCE,
    TEAMS_RESOURCE,
    IdentityError,
    TokenIssuer,
    verify_client_assertion,
    write_client_certificate,
    write_tls_certificate,
)
from .seed import build_hospital
from .tenant import ServiceError, Tenant

log = logging.getLogger(__name__)

WARNING_HEADER = "X-Ms-ConfigApi-PowerShell-WarningMessage"
_MAX_REMEMBERED = 10_000  # 429'd requests whose retry time is kept (see _check_retry)
_DROP = object()  # a handler result meaning "close the connection without answering"
_STATUS_CODES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    429: "TooManyRequests",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float, clock: Any = time.monotonic):
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens, self._last = burst, clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        """0 if a token was taken, else the seconds until one is available."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            return (1 - self._tokens) / self.rate


@dataclass
class _Injection:
    method: str | None
    path: re.Pattern[str]
    status: int
    times: int | None
    retry_after: float | None
    after: bool = False  # carry the request out, then lose its answer


def _succeeded(result: Response | object) -> bool:
    return isinstance(result, Response) and result.status < 300


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self, address: tuple[str, int], sandbox: Sandbox | SandboxFleet, context: ssl.SSLContext
    ):
        self.sandbox = sandbox
        self.ssl_context = context
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        # The TLS handshake happens here, in the connection's thread, so a slow or broken
        # client never holds up the accept loop.
        request.settimeout(30)
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            log.debug("TLS handshake with %s failed: %s", client_address, exc)
            request.close()
            return
        with self.connections_lock:
            self.connections.add(tls)
        try:
            self.finish_request(tls, client_address)
        except Exception:
            self.handle_error(tls, client_address)
        finally:
            with self.connections_lock:
                self.connections.discard(tls)
            self.shutdown_request(tls)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s failed", client_address, exc_info=True)

    def close_connections(self) -> None:
        with self.connections_lock:
            for conn in list(self.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


def _listen(owner: Any, directory: Path, name: str) -> tuple[_Server, threading.Thread, Path]:
    """A TLS server for ``owner`` (a sandbox, or a fleet of them) on its configured address,
    with a new certificate in ``directory``, and the thread to serve it (not started yet)."""
    cert_path, key_path = write_tls_certificate(directory)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    server = _Server((owner.config.host, owner.config.port), owner, context)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},  # stopping waits at most this long
        name=name,
        daemon=True,
    )
    return server, thread, cert_path


def _close(server: _Server, thread: threading.Thread | None, directory: Path | None) -> None:
    """Stop what ``_listen`` started and remove its files."""
    server.shutdown()
    server.close_connections()
    server.server_close()
    if thread:
        thread.join(timeout=5)
    if directory:
        shutil.rmtree(directory, ignore_errors=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as separate writes; with Nagle on, each answer waits ~40 ms for
    # the client's delayed ACK.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.client_address[0], *args)

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        req = Request(
            method=self.command,
            path=unquote(parts.path),
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        started = time.monotonic()
        result = self.server.sandbox.handle(req, wait=False)
        if result is _DROP:
            self._until(started)
            self.close_connection = True
            return
        assert isinstance(result, Response)
        self._send(result, req, started)

    def _until(self, started: float) -> None:
        """Wait out what is left of the latency since the request arrived."""
        left = self.server.sandbox.config.latency - (time.monotonic() - started)
        if left > 0:
            time.sleep(left)

    def _send(self, res: Response, req: Request, started: float) -> None:
        payload, encoding = self._encoded(res, req)
        self._until(started)
        self.send_response(res.status)
        correlation = req.headers.get("x-ms-correlation-id") or str(uuid.uuid4())
        self.send_header("x-ms-correlation-id", correlation)
        self.send_header("request-id", correlation)
        for name, value in res.headers.items():
            self.send_header(name, value)
        if payload is None:
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if encoding:
            self.send_header("Content-Encoding", encoding)
        content_type = res.headers.get("Content-Type", "application/json; charset=utf-8")
        if "Content-Type" not in res.headers:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _encoded(self, res: Response, req: Request) -> tuple[bytes | None, str | None]:
        """The body as sent, and its Content-Encoding (None: no body, or not compressed)."""
        if res.status == 204 or res.body is None:
            return None, None
        payload = json.dumps(res.body, separators=(",", ":")).encode()
        accepted = req.headers.get("accept-encoding", "").lower()
        compression = self.server.sandbox.config.compression
        if compression == "br-unprompted" or (compression == "br" and "br" in accepted):
            return brotli.compress(payload, quality=5), "br"
        if "gzip" in accepted:
            return gzip.compress(payload, compresslevel=5), "gzip"
        return payload, None

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch


class Sandbox:
    """A simulated tenant over HTTPS. ``with Sandbox(cfg) as sb:`` starts it in a background
    thread and stops it on exit; see the package docstring for the attributes."""

    def __init__(self, config: SandboxConfig | None = None, tenant: Tenant | None = None):
        self.config = dataclasses.replace(config) if config else SandboxConfig()
        self.tenant = tenant or build_hospital(self.config)
        self.tenant.propagation_delay = self.config.propagation_delay
        self.tenant_id = self.tenant.tenant_id
        self.client_id = self.tenant.app_id
        self.client_secret = secrets.token_urlsafe(30)
        self.service_principal_id = str(uuid.uuid5(uuid.UUID(self.client_id), "sp"))
        self.issuer = TokenIssuer(f"https://sts.windows.net/{self.tenant_id}/")
        self._rng = random.Random(self.config.seed)
        self._lock = threading.Lock()
        self._bucket: TokenBucket | None = None
        self._injections: list[_Injection] = []
        # retry key -> monotonic time before which a retry ignores the Retry-After it was given
        self._not_before: dict[str, float] = {}
        self._stats: dict[str, Any] = {}
        self.reset_stats()
        self._set_bucket()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._dir: Path | None = None
        self.base_url = ""
        self.ca_path = ""
        self.client_cert_path = ""
        self._client_cert: Any = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Sandbox:
        if self._server is not None:
            return self
        self._dir = Path(tempfile.mkdtemp(prefix="teams-bridge-sandbox-"))
        client_path, self._client_cert = write_client_certificate(self._dir, self.client_id)
        self._server, self._thread, cert_path = _listen(self, self._dir, "teams-bridge-sandbox")
        self.base_url = f"https://{self.config.host}:{self._server.server_port}"
        self.ca_path = str(cert_path)
        self.client_cert_path = str(client_path)
        self._thread.start()
        log.info("sandbox serving %s (%d users)", self.base_url, self.tenant.user_count)
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        _close(self._server, self._thread, self._dir)
        self._server = self._thread = self._dir = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def attach(self, base_url: str, ca_path: str, directory: Path) -> None:
        """Serve as one tenant of a ``SandboxFleet``: its server's URL and CA, this tenant's
        client certificate written into ``directory``."""
        self.base_url, self.ca_path = base_url, ca_path
        directory.mkdir(parents=True, exist_ok=True)
        path, self._client_cert = write_client_certificate(directory, self.client_id)
        self.client_cert_path = str(path)

    def env(self) -> dict[str, str]:
        """The environment that points teams-bridge at this sandbox."""
        return {
            "AZURE_TENANT_ID": self.tenant_id,
            "AZURE_CLIENT_ID": self.client_id,
            "AZURE_CLIENT_SECRET": self.client_secret,
            "AZURE_AUTHORITY_HOST": self.base_url,
            "BRIDGE_GRAPH_URL": self.base_url,
            "BRIDGE_TEAMS_URL": self.base_url,
            "REQUESTS_CA_BUNDLE": self.ca_path,
        }

    # ------------------------------------------------------------------ knobs

    def configure(self, **knobs: Any) -> None:
        """Change knobs while running (see ``config.LIVE_KNOBS``)."""
        unknown = set(knobs) - LIVE_KNOBS
        if unknown:
            raise ValueError(
                f"cannot change {', '.join(sorted(unknown))} while running; live knobs: "
                f"{', '.join(sorted(LIVE_KNOBS))}"
            )
        candidate = dataclasses.replace(self.config, **knobs)
        validate(candidate)
        with self._lock:
            self.config = candidate
            self.tenant.propagation_delay = candidate.propagation_delay
            if {"throttle_rps", "throttle_burst"} & set(knobs):
                self._set_bucket()

    def _set_bucket(self) -> None:
        rps = self.config.throttle_rps
        burst = self.config.throttle_burst or max(1, math.ceil(rps or 1))
        self._bucket = TokenBucket(rps, burst) if rps else None

    def inject(
        self,
        method: str | None = None,
        path: str = ".*",
        status: int = 503,
        times: int | None = 1,
        retry_after: float | None = None,
        after: bool = False,
    ) -> None:
        """Answer the next ``times`` requests (None: every one) whose method is ``method`` (None:
        any) and whose decoded path fully matches the regex ``path`` with ``status``; 0 closes
        the connection without answering. ``retry_after`` adds a Retry-After header. With
        ``after``, the request is carried out first and only its answer is replaced (a write
        that happened though the client sees a failure); requests the route refuses are
        answered as usual and do not count against ``times``."""
        with self._lock:
            self._injections.append(
                _Injection(
                    method.upper() if method else None,
                    re.compile(path),
                    status,
                    times,
                    retry_after,
                    after,
                )
            )

    def clear_injections(self) -> None:
        with self._lock:
            self._injections.clear()

    def stats(self) -> dict[str, Any]:
        """Counters since the last reset: ``requests`` by route (e.g. "GET /Teams.User/users"),
        ``status`` by code, ``throttled`` (429s from the throttle), ``faults`` (injected and
        random errors and drops), ``dropped``, ``writes`` (successful changes), ``total``,
        ``early_retries`` (retries of a 429'd request that came before its Retry-After)."""
        with self._lock:
            return {k: dict(v) if isinstance(v, Counter) else v for k, v in self._stats.items()}

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = {
                "requests": Counter(),
                "status": Counter(),
                "throttled": 0,
                "faults": 0,
                "dropped": 0,
                "writes": 0,
                "total": 0,
                "early_retries": 0,
            }

    # ------------------------------------------------------------------ identity

    def check_secret(self, secret: str) -> bool:
        return hmac.compare_digest(secret.encode(), self.client_secret.encode())

    def check_assertion(self, assertion: str, tenant_ref: str) -> None:
        audiences = {
            f"{self.base_url}/{ref}/oauth2/v2.0/token" for ref in (tenant_ref, self.tenant_id)
        }
        verify_client_assertion(assertion, self._client_cert, self.client_id, audiences)

    def role_template_ids(self) -> list[str]:
        return [ROLE_TEMPLATE_IDS[r] for r in self.config.roles]

    def graph_app_roles(self) -> list[str]:
        return list(GRAPH_APP_ROLES)

    def audiences(self, which: str) -> set[str]:
        if which == "teams":
            return {TEAMS_RESOURCE}
        return {self.base_url, GRAPH_RESOURCE}

    # ------------------------------------------------------------------ requests

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._stats[key] += n

    def handle(self, req: Request, *, wait: bool = True) -> Response | object:
        """One request from the wire: every knob applies. ``wait=False``: the caller waits out
        the latency (the HTTP handler does, after serialising the answer)."""
        route, params = api.match(req.method, req.path)
        which = route.api if route else api.api_of(req.path)
        retry_key = req.headers.get("x-ms-correlation-id", "")
        self._check_retry(retry_key, req)
        with self._lock:
            self._stats["total"] += 1
            self._stats["requests"][route.name if route else f"{req.method} <unknown>"] += 1
            latency, drop_rate, fault_rate = (
                self.config.latency,
                self.config.drop_rate,
                self.config.fault_rate,
            )
        if latency and wait:
            time.sleep(latency)
        early = self._injected(req, which)
        if early is None and which != "identity":
            early = self._random_fault(which, drop_rate, fault_rate)
            if early is None and route is not None and route.handler is not api.batch:
                early = self._throttled(which)
        result = early if early is not None else self._run(route, params, req, which)
        warning = self.config.warning
        teams_write = which == "teams" and route is not None and route.write
        if warning and teams_write and isinstance(result, Response) and _succeeded(result):
            result.headers[WARNING_HEADER] = warning
        if early is None and route is not None and route.write and _succeeded(result):
            lost = self._injected(req, which, after=True)
            if lost is None and which != "identity":
                lost = self._lost_answer(which)
            if lost is not None:
                self._count("writes")  # it happened: only its answer is lost
                result = lost
        self._record(route, result)
        self._remember_retry_after(retry_key, result)
        return result

    def handle_inner(self, inner: dict[str, Any], outer: Request) -> dict[str, Any]:
        """One request inside a Graph ``$batch``: scripted faults and the throttle apply."""
        method = str(inner.get("method", "GET")).upper()
        parts = urlsplit(str(inner.get("url", "")))
        path = "/v1.0/" + unquote(parts.path).lstrip("/")
        headers = dict(outer.headers)
        headers.update({k.lower(): str(v) for k, v in (inner.get("headers") or {}).items()})
        body = inner.get("body")
        req = Request(
            method=method,
            path=path,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers=headers,
            body=json.dumps(body).encode() if body is not None else b"",
        )
        route, params = api.match(method, path)
        retry_key = f"$batch {method} {inner.get('url', '')}"
        self._check_retry(retry_key, req)
        with self._lock:
            self._stats["requests"][route.name if route else f"{method} <unknown>"] += 1
        result = self._injected(req, "graph")
        if result is _DROP:  # a batch cannot drop one answer: the inner request fails instead
            result = self._error("graph", 503, "The service is unavailable.")
        if result is None:
            if route is None or route.api != "graph" or route.handler is api.batch:
                result = self._error("graph", 400, f"{method} {path} cannot be batched here.")
            else:
                result = self._throttled("graph") or self._run(route, params, req, "graph")
        assert isinstance(result, Response)
        self._record(route, result)
        self._remember_retry_after(retry_key, result)
        headers = {"Content-Type": "application/json", **result.headers}
        answer: dict[str, Any] = {"id": inner["id"], "status": result.status, "headers": headers}
        if result.body is not None:
            answer["body"] = result.body
        return answer

    def _check_retry(self, key: str, req: Request) -> None:
        """Count a request that retries a 429 before the Retry-After it was given."""
        if not key:
            return
        now = time.monotonic()
        with self._lock:
            not_before = self._not_before.pop(key, None)
            if not_before is None or now >= not_before:
                return
            self._stats["early_retries"] += 1
        log.warning(
            "%s %s retried %.2fs before its Retry-After (%s)",
            req.method,
            req.path,
            not_before - now,
            key,
        )

    def _remember_retry_after(self, key: str, result: Response | object) -> None:
        if not key or not isinstance(result, Response) or result.status != 429:
            return
        seconds = float(result.headers.get("Retry-After", 0))
        now = time.monotonic()
        with self._lock:
            if len(self._not_before) >= _MAX_REMEMBERED:
                # Clients that gave up never come back: forget the waits that are over.
                self._not_before = {k: t for k, t in self._not_before.items() if t > now}
            self._not_before[key] = now + seconds

    def _record(self, route: api.Route | None, result: Response | object) -> None:
        with self._lock:
            if isinstance(result, Response):
                self._stats["status"][result.status] += 1
                if route and route.write and result.status < 300:
                    self._stats["writes"] += 1

    def _error(self, which: str, status: int, message: str, code: str | None = None) -> Response:
        code = code or _STATUS_CODES.get(status, "Error")
        if which == "identity":
            if status < 429:
                return Response(
                    status, IdentityError(status, "invalid_request", 900144, message).body()
                )
            error = "temporarily_unavailable" if status in (429, 503) else "server_error"
            # AADSTS90033: "A transient error has occurred. Please try again."
            return Response(status, IdentityError(status, error, 90033, message).body())
        return Response(status, error_body(which, code, message))

    def _injected(
        self, req: Request, which: str, *, after: bool = False
    ) -> Response | object | None:
        with self._lock:
            for rule in self._injections:
                if rule.method not in (None, req.method) or not rule.path.fullmatch(req.path):
                    continue
                if rule.after != after:
                    continue
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times <= 0:
                        self._injections.remove(rule)
                self._stats["faults"] += 1
                if rule.status == 0:
                    self._stats["dropped"] += 1
                    return _DROP
                if rule.status == 429:
                    self._stats["throttled"] += 1
                res = self._error(which, rule.status, "Injected fault.")
                if rule.retry_after is not None or rule.status == 429:
                    res.headers["Retry-After"] = str(max(1, math.ceil(rule.retry_after or 1)))
                return res
        return None

    def _random_fault(
        self, which: str, drop_rate: float, fault_rate: float
    ) -> Response | object | None:
        with self._lock:
            drop = drop_rate > 0 and self._rng.random() < drop_rate
            fault = not drop and fault_rate > 0 and self._rng.random() < fault_rate
            status = self._rng.choice((500, 503)) if fault else 0
            if drop or fault:
                self._stats["faults"] += 1
            if drop:
                self._stats["dropped"] += 1
        if drop:
            return _DROP
        if fault:
            return self._error(which, status, "The service had an internal error. Try again.")
        return None

    def _lost_answer(self, which: str) -> Response | object | None:
        """A write carried out whose answer is lost, at ``lost_answer_rate`` (seeded)."""
        with self._lock:
            rate = self.config.lost_answer_rate
            if not rate or self._rng.random() >= rate:
                return None
            drop = self._rng.random() < 0.5
            self._stats["faults"] += 1
            if drop:
                self._stats["dropped"] += 1
        if drop:
            return _DROP
        return self._error(which, 500, "The service had an internal error. Try again.")

    def _throttled(self, which: str) -> Response | None:
        bucket = self._bucket
        wait = bucket.take() if bucket else 0.0
        if not wait:
            return None
        self._count("throttled")
        res = self._error(
            which,
            429,
            "Too many requests. Wait for the number of seconds in Retry-After and try again.",
            "TooManyRequests",
        )
        res.headers["Retry-After"] = str(max(1, math.ceil(wait)))
        return res

    def _authorize(self, req: Request, which: str, write: bool) -> Response | None:
        header = req.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return self._unauthorized(which, "the request has no bearer token")
        try:
            claims = self.issuer.verify(header[7:].strip())
        except ValueError as exc:
            return self._unauthorized(which, str(exc))
        if claims.get("tid") != self.tenant_id:
            return self._unauthorized(which, "the token is for another tenant")
        if str(claims.get("aud", "")).rstrip("/") not in self.audiences(which):
            return self._unauthorized(which, f"invalid audience {claims.get('aud')!r}")
        if which == "teams":
            needed = WRITE_ROLES if write else READ_ROLES
            if not needed & set(claims.get("wids", ())):
                role = "Teams Administrator" if write else "Teams Administrator or Global Reader"
                return self._error(
                    "teams",
                    403,
                    "Access denied: the caller's directory roles do not allow this operation. "
                    f"Assign the {role} role to the app's service principal.",
                    "Forbidden",
                )
        return None

    def _unauthorized(self, which: str, reason: str) -> Response:
        if which == "graph":
            res = self._error(
                "graph",
                401,
                f"Access token validation failure: {reason}.",
                "InvalidAuthenticationToken",
            )
        else:
            res = self._error("teams", 401, f"Authentication failed: {reason}.", "Unauthorized")
        res.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        return res

    def _run(
        self, route: api.Route | None, params: dict[str, str], req: Request, which: str
    ) -> Response:
        if route is None:
            return self._error(which, 404, f"No resource answers {req.method} {req.path}.")
        if which != "identity":
            denied = self._authorize(req, which, route.write)
            if denied:
                return denied
        req.params = params
        try:
            return route.handler(self, req)
        except ServiceError as exc:
            return self._error(which, exc.status, exc.message, exc.code)
        except IdentityError as exc:
            return Response(exc.status, exc.body())


# --------------------------------------------------------------------------- many tenants


class SandboxFleet:
    """``count`` hospitals behind one set of endpoints, routed as the real services route them:
    a sign-in by the tenant in its path (``/{tenant}/oauth2/v2.0/token``), an API call by the
    ``tid`` of its bearer token. Each tenant has its own app (client id), secret, client
    certificate, token signing key, knobs and stats (``member(i)``: a ``Sandbox``).

    Tenant ``i`` is seeded with ``config.seed + i`` and built on its first request (a fleet of
    300 starts at once; ids and secrets are known before)."""

    def __init__(
        self, count: int, config: SandboxConfig | None = None, template: Tenant | None = None
    ):
        """``template``: every tenant serves this one hospital's data under its own id and app
        (a shallow copy: writes would show in every tenant), for benchmarks that only read
        300 hospitals of 10,000 users without seeding 300 of them."""
        if count < 1:
            raise ValueError("a sandbox fleet needs at least one tenant")
        from .seed import client_id_for, tenant_id_for

        self.config = dataclasses.replace(config) if config else SandboxConfig()
        self.count = count
        seeds = [self.config.seed + i for i in range(count)]
        self.tenant_ids = [tenant_id_for(s) for s in seeds]
        self.client_ids = [client_id_for(s) for s in seeds]
        self.client_secrets = [secrets.token_urlsafe(30) for _ in seeds]
        self._index = {tid.casefold(): i for i, tid in enumerate(self.tenant_ids)}
        self._template = template
        self._members: list[Sandbox | None] = [None] * count
        self._building = [threading.Lock() for _ in seeds]
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._dir: Path | None = None
        self.base_url = ""
        self.ca_path = ""

    def member(self, i: int) -> Sandbox:
        """Tenant ``i``'s sandbox (built now if it was not yet)."""
        found = self._members[i]
        if found is not None:
            return found
        with self._building[i]:
            found = self._members[i]
            if found is None:
                cfg = dataclasses.replace(self.config, seed=self.config.seed + i)
                tenant = None
                if self._template is not None:
                    tenant = copy.copy(self._template)
                    tenant.tenant_id, tenant.app_id = self.tenant_ids[i], self.client_ids[i]
                found = Sandbox(cfg, tenant=tenant)
                found.client_secret = self.client_secrets[i]
                if self._dir is not None:
                    found.attach(self.base_url, self.ca_path, self._dir / f"tenant-{i}")
                self._members[i] = found
        return found

    def built(self) -> list[Sandbox]:
        return [m for m in self._members if m is not None]

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> SandboxFleet:
        if self._server is not None:
            return self
        self._dir = Path(tempfile.mkdtemp(prefix="teams-bridge-sandbox-fleet-"))
        self._server, self._thread, cert_path = _listen(
            self, self._dir, "teams-bridge-sandbox-fleet"
        )
        self.base_url = f"https://{self.config.host}:{self._server.server_port}"
        self.ca_path = str(cert_path)
        for i, m in enumerate(self._members):
            if m is not None:
                m.attach(self.base_url, self.ca_path, self._dir / f"tenant-{i}")
        self._thread.start()
        log.info("sandbox fleet of %d tenants serving %s", self.count, self.base_url)
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        _close(self._server, self._thread, self._dir)
        self._server = self._thread = self._dir = None

    def __enter__(self) -> SandboxFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """The endpoints every tenant shares (each tenant's id, app and secret: ``tenants()``)."""
        return {
            "AZURE_AUTHORITY_HOST": self.base_url,
            "BRIDGE_GRAPH_URL": self.base_url,
            "BRIDGE_TEAMS_URL": self.base_url,
            "REQUESTS_CA_BUNDLE": self.ca_path,
        }

    def secret_env(self, i: int) -> str:
        """The variable name the printed environment and the fleet file use for tenant ``i``."""
        return f"SANDBOX_TENANT_{i + 1:03d}_SECRET"

    def name(self, i: int) -> str:
        return f"hospital-{i + 1:03d}"

    def secrets_env(self) -> dict[str, str]:
        """Each tenant's secret under its ``secret_env`` name."""
        return {self.secret_env(i): self.client_secrets[i] for i in range(self.count)}

    def fleet_file_text(self, desired: str, apply_tenants: int = 1) -> str:
        """A fleet file for this sandbox: every tenant, its secret by variable name, ``desired``
        (relative to the fleet file) for each; the first ``apply_tenants`` in mode apply."""
        lines = [
            "# The sandbox's tenants (teams-bridge sandbox --tenants N --fleet-file ...).",
            "# Secrets are in the variables named by secret_env (the .env beside this file).",
            "defaults: {interval: 15m, mode: drift}",
            "tenants:",
        ]
        for i in range(self.count):
            lines += [
                f"  - name: {self.name(i)}",
                f"    tenant: {self.tenant_ids[i]}",
                f"    client_id: {self.client_ids[i]}",
                f"    credential: {{secret_env: {self.secret_env(i)}}}",
                f"    desired: {desired}",
            ]
            if i < apply_tenants:
                lines.append("    mode: apply")
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------ routing

    def _for_ref(self, ref: str) -> Sandbox | None:
        i = self._index.get(ref.casefold())
        return self.member(i) if i is not None else None

    def _for_token(self, req: Request) -> Sandbox | None:
        from .identity import b64url_decode

        header = req.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return None
        parts = header[7:].strip().split(".")
        try:
            claims = json.loads(b64url_decode(parts[1])) if len(parts) == 3 else {}
        except ValueError:
            return None
        tid = claims.get("tid") if isinstance(claims, dict) else None
        # Routing only: the tenant's own sandbox then verifies the token's signature.
        return self._for_ref(tid) if isinstance(tid, str) else None

    def handle(self, req: Request, *, wait: bool = True) -> Response | object:
        """Route ``req`` to its tenant's sandbox (``wait`` as ``Sandbox.handle``); an unknown
        tenant or token is answered here, as the services answer it."""
        if api.api_of(req.path) == "identity":
            ref = req.path.lstrip("/").split("/", 1)[0]
            target = self._for_ref(ref)
            if target is None:
                body = IdentityError(
                    400,
                    "invalid_request",
                    90002,
                    f"Tenant '{ref}' not found. Check to make sure you have the correct tenant "
                    "ID and are signing into the correct cloud.",
                ).body()
                return Response(400, body)
        else:
            target = self._for_token(req)
            if target is None:
                message = "Authentication failed: the request has no valid bearer token."
                which = api.api_of(req.path)
                code = "InvalidAuthenticationToken" if which == "graph" else "Unauthorized"
                res = Response(401, error_body(which, code, message))
                res.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
                return res
        return target.handle(req, wait=wait)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Each built tenant's ``stats()``, by tenant id."""
        return {m.tenant_id: m.stats() for m in self.built()}


# What the generated fleet file's tenants should look like: the hospital's baseline plus one new
# policy, so a first drift shows drift and a fleet apply creates it in the apply-mode tenants.
DEMO_DESIRED = """\
# Every sandbox hospital, as the clinical governance board wants it.
tenant: northwind-health.onmicrosoft.com   # guard: never touch another tenant
policies:
  Global:
    ReadReceiptsEnabledType: Everyone
    AllowPriorityMessages: true
  Clinical:
    Description: Physicians and clinical staff
    ReadReceiptsEnabledType: Everyone
    AllowPriorityMessages: true
  Palliative Care:                          # new: created by fleet apply (mode: apply tenants)
    Description: Palliative care team and chaplaincy
    ReadReceiptsEnabledType: Everyone
    AllowPriorityMessages: true
"""
