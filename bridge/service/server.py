"""The service's endpoints on the standard library's threading HTTP server: ``/healthz``,
``/readyz``, ``/metrics``, ``/report`` and ``/report.json`` (``DESIGN.md``, "The service").
GET and HEAD only; nothing here can change anything."""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError
from .loop import ServiceLoop
from .metrics import CONTENT_TYPE

log = logging.getLogger(__name__)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "teams-bridge"
    sys_version = ""

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        loop = self.server.loop
        path = urlsplit(self.path).path
        if path == "/healthz":
            ok = loop.healthy()
            self._send(200 if ok else 503, _json({"alive": ok, **loop.status()}), body)
        elif path == "/readyz":
            ok = loop.ready()
            self._send(200 if ok else 503, _json({"ready": ok, **loop.status()}), body)
        elif path == "/metrics":
            self._send(200, loop.metrics.render(), body, CONTENT_TYPE)
        elif path.startswith("/report/") and hasattr(loop, "tenant_report"):
            # A fleet: one tenant's last report, /report/NAME or /report/NAME.json.
            name = path[len("/report/") :]
            fmt = "json" if name.endswith(".json") else "html"
            report = loop.tenant_report(name.removesuffix(".json"), fmt)
            if report is None:
                self._send(404, _json({"error": "no such tenant, or no report yet"}), body)
            else:
                kind = "application/json" if fmt == "json" else "text/html; charset=utf-8"
                self._send(200, report, body, kind)
        elif path in ("/report", "/report.json"):
            fmt = "json" if path.endswith(".json") else "html"
            report = loop.report(fmt)
            if report is None:
                self._send(
                    404, _json({"error": "no report yet: the first run has not ended"}), body
                )
            else:
                kind = "application/json" if fmt == "json" else "text/html; charset=utf-8"
                self._send(200, report, body, kind)
        else:
            known = "/healthz, /readyz, /metrics, /report, /report.json"
            self._send(404, _json({"error": f"not found; try {known}"}), body)

    def _send(self, status: int, data: bytes, body: bool, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    loop: ServiceLoop  # or a FleetService: the same answers, for many tenants


class _Server6(_Server):
    address_family = socket.AF_INET6


def _json(data: Any) -> bytes:
    return json.dumps(data).encode() + b"\n"


class StatusServer:
    """Serves ``loop``'s state on ``(host, port)`` from a background thread."""

    def __init__(self, loop: ServiceLoop, host: str, port: int):
        kind = _Server6 if ":" in host else _Server
        try:
            self._server = kind((host, port), _Handler)
        except OSError as exc:
            raise ConfigError(
                f"--listen {host}:{port}: cannot listen there ({exc.strerror or exc}); pick "
                "another port or address"
            ) from None
        self._server.loop = loop
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="teams-bridge-http", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> StatusServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
