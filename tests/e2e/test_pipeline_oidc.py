"""Sign-in from CI pipelines without a secret: the CLI asks a local token-request endpoint (as
GitHub Actions' or Azure Pipelines' would answer) for an OIDC token on every token request and
signs in to the sandbox with it as the client assertion.

The sandbox checks an assertion as Entra checks a certificate-signed one (issuer, subject,
audience of its token endpoint, signature); the local endpoint mints such a token with the
sandbox app's certificate, and checks what the pipeline's endpoint checks: the request token and
the audience (``api://AzureADTokenExchange``) or the service connection."""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from e2e_support import BRIDGE, NORTHWIND, child_env

from bridge.sandbox import Sandbox

pytestmark = pytest.mark.e2e
REQUEST_TOKEN = "pipeline-request-token-0123456789"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(sb: Sandbox) -> str:
    key: Any = serialization.load_pem_private_key(Path(sb.client_cert_path).read_bytes(), None)
    now = int(time.time())
    claims = {
        "iss": sb.client_id,
        "sub": sb.client_id,
        "aud": f"{sb.base_url}/{sb.tenant_id}/oauth2/v2.0/token",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
    }
    head = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    sig = key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{head}.{body}.{_b64(sig)}"


class TokenEndpoint:
    def __init__(self, sb: Sandbox, kind: str):
        calls: list[dict[str, Any]] = []
        self.calls = calls

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                calls.append({"method": self.command, "query": query,
                              "auth": self.headers.get("Authorization")})  # fmt: skip
                if self.headers.get("Authorization") != f"Bearer {REQUEST_TOKEN}":
                    self.send_response(401)
                    self.end_headers()
                    return
                if kind == "github":
                    ok = query.get("audience") == ["api://AzureADTokenExchange"]
                    payload = {"value": mint(sb)}
                else:
                    ok = query.get("serviceConnectionId") == ["conn-1"]
                    payload = {"oidcToken": mint(sb)}
                data = json.dumps(payload).encode()
                self.send_response(200 if ok else 400)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/token?api-version=2.0"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(params=["github", "azure_pipelines"])
def endpoint(request: pytest.FixtureRequest, ro: Sandbox) -> Iterator[TokenEndpoint]:
    ep = TokenEndpoint(ro, request.param)
    ep.kind = request.param  # type: ignore[attr-defined]
    yield ep
    ep.close()


def test_drift_signs_in_with_the_pipelines_oidc_token(
    ro: Sandbox, endpoint: TokenEndpoint, tmp_path: Path
) -> None:
    env = child_env(ro)
    del env["AZURE_CLIENT_SECRET"]
    if endpoint.kind == "github":  # type: ignore[attr-defined]
        env |= {"ACTIONS_ID_TOKEN_REQUEST_URL": endpoint.url,
                "ACTIONS_ID_TOKEN_REQUEST_TOKEN": REQUEST_TOKEN}  # fmt: skip
    else:
        env |= {"SYSTEM_OIDCREQUESTURI": endpoint.url, "SYSTEM_ACCESSTOKEN": REQUEST_TOKEN,
                "AZURE_SERVICE_CONNECTION_ID": "conn-1"}  # fmt: skip
    done = subprocess.run(
        [*BRIDGE, "-v", "drift", str(NORTHWIND)], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr  # drift found: signed in and read the tenant
    # A fresh OIDC token for each token request (one per API), never one kept from before.
    assert len(endpoint.calls) >= 2
    assert {c["method"] for c in endpoint.calls} == (
        {"GET"} if endpoint.kind == "github" else {"POST"}  # type: ignore[attr-defined]
    )
    assert REQUEST_TOKEN not in done.stdout + done.stderr
    assert "eyJ" not in done.stdout + done.stderr
    doctor = subprocess.run(
        [*BRIDGE, "doctor"], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "oidc credential" in doctor.stdout


def test_without_the_pipeline_nor_a_credential_the_error_says_what_to_set(
    ro: Sandbox, tmp_path: Path
) -> None:
    env = child_env(ro)
    del env["AZURE_CLIENT_SECRET"]
    done = subprocess.run(
        [*BRIDGE, "drift", str(NORTHWIND)], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 1
    assert "no credential configured" in done.stderr
