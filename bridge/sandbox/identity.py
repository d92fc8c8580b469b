"""The sandbox's identity side: its TLS certificate, the app's client certificate, the tokens it
issues (JWT-shaped, HMAC-signed by the sandbox) and the checks Entra makes on client assertions.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TEAMS_RESOURCE = "48ac35b8-9aa8-4d74-927d-1f4a14a0b239"
GRAPH_RESOURCE = "https://graph.microsoft.com"
TOKEN_LIFETIME = 3599
CLOCK_SKEW = 300
# Graph application permissions the sandbox app holds (the ``roles`` claim).
GRAPH_APP_ROLES = (
    "Organization.Read.All",
    "User.Read.All",
    "Group.Read.All",
    "GroupMember.Read.All",
    "TeamsPolicyUserAssign.ReadWrite.All",
    "TeamsUserConfiguration.Read.All",
)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "teams-bridge sandbox"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def write_tls_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed server certificate for 127.0.0.1 and localhost that is its own CA (so its
    PEM serves as ``REQUESTS_CA_BUNDLE``); returns (certificate path, key path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    name = _name("teams-bridge sandbox CA")
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "sandbox-ca.pem", directory / "sandbox-server-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def write_client_certificate(directory: Path, client_id: str) -> tuple[Path, x509.Certificate]:
    """The app registration's certificate credential: one PEM holding the certificate and its
    RSA private key (what ``AZURE_CLIENT_CERTIFICATE_PATH`` points at)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.timezone.utc)
    name = _name(f"teams-bridge app {client_id}")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    path = directory / "app-certificate.pem"
    path.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path, cert


class IdentityError(Exception):
    """An Entra token-endpoint error: HTTP status, OAuth error, AADSTS number, description."""

    def __init__(self, status: int, error: str, code: int, description: str):
        super().__init__(f"AADSTS{code}: {description}")
        self.status = status
        self.error = error
        self.code = code
        self.description = description

    def body(self) -> dict[str, Any]:
        trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        return {
            "error": self.error,
            "error_description": f"AADSTS{self.code}: {self.description} Trace ID: {trace} "
            f"Correlation ID: {correlation} Timestamp: {stamp}",
            "error_codes": [self.code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": "https://login.microsoftonline.com/error?code=" + str(self.code),
        }


def _thumbprint(cert: x509.Certificate, algorithm: hashes.HashAlgorithm) -> str:
    return b64url(cert.fingerprint(algorithm))


def verify_client_assertion(
    assertion: str,
    cert: x509.Certificate,
    client_id: str,
    audiences: set[str],
    now: float | None = None,
) -> None:
    """The checks Entra makes on a ``private_key_jwt`` client assertion; ``IdentityError``
    with Entra's code when one fails."""
    now = time.time() if now is None else now
    try:
        head_b64, body_b64, sig_b64 = assertion.split(".")
        header = json.loads(b64url_decode(head_b64))
        claims = json.loads(b64url_decode(body_b64))
        signature = b64url_decode(sig_b64)
    except ValueError as exc:
        raise IdentityError(
            400, "invalid_request", 50027, "JWT token is invalid or malformed."
        ) from exc
    thumbs = {
        "x5t": _thumbprint(cert, hashes.SHA1()),
        "x5t#S256": _thumbprint(cert, hashes.SHA256()),
    }
    for header_name, expected in thumbs.items():
        # Compared without base64 padding: MSAL pads, RFC 7515 does not.
        if header_name in header and str(header[header_name]).rstrip("=") != expected:
            raise IdentityError(
                401,
                "invalid_client",
                700027,
                "Client assertion failed signature validation. [Reason - The key was not "
                f"found., Thumbprint of key used by client: '{header[header_name]}']",
            )
    public_key = cert.public_key()
    signed = f"{head_b64}.{body_b64}".encode()
    alg = header.get("alg")
    try:
        if not isinstance(public_key, rsa.RSAPublicKey) or alg not in ("RS256", "PS256"):
            raise InvalidSignature(f"unsupported algorithm {alg!r}")
        if alg == "RS256":
            public_key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
        else:
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
            public_key.verify(signature, signed, pss, hashes.SHA256())
    except InvalidSignature as exc:
        raise IdentityError(
            401,
            "invalid_client",
            700027,
            "Client assertion failed signature validation. [Reason - The provided signature "
            "value did not match the expected signature value.]",
        ) from exc
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise IdentityError(
            401,
            "invalid_client",
            700021,
            f"Client assertion application identifier doesn't match 'client_id' parameter. "
            f"Review the documentation at https://learn.microsoft.com/entra/identity-platform/"
            f"certificate-credentials . [iss: '{claims.get('iss')}', sub: "
            f"'{claims.get('sub')}', client_id: '{client_id}']",
        )
    if str(claims.get("aud", "")).casefold() not in {a.casefold() for a in audiences}:
        raise IdentityError(
            401,
            "invalid_client",
            700212,
            f"No matching federated identity record found for presented assertion audience "
            f"'{claims.get('aud')}'.",
        )
    exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat", 0))
    if not isinstance(exp, (int, float)) or exp + CLOCK_SKEW < now or nbf - CLOCK_SKEW > now:
        raise IdentityError(
            401, "invalid_client", 700024, "Client assertion is not within its valid time range."
        )


class TokenIssuer:
    """Issues access tokens (``header.payload.signature``, HS256 with a per-sandbox key) and
    checks the ones API requests present."""

    def __init__(self, issuer: str):
        self.issuer = issuer
        self._key = secrets.token_bytes(32)

    def _sign(self, data: bytes) -> str:
        return b64url(hmac.new(self._key, data, hashlib.sha256).digest())

    def issue(self, claims: dict[str, Any], lifetime: int = TOKEN_LIFETIME) -> str:
        now = int(time.time())
        payload = {
            "iss": self.issuer,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "uti": b64url(secrets.token_bytes(16)),
            "ver": "1.0",
            **claims,
        }
        head = b64url(json.dumps({"typ": "JWT", "alg": "HS256", "kid": "sandbox"}).encode())
        body = b64url(json.dumps(payload, separators=(",", ":")).encode())
        return f"{head}.{body}.{self._sign(f'{head}.{body}'.encode())}"

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a token this sandbox issued; ``ValueError`` saying why not."""
        parts = token.split(".")
        if len(parts) != 3:
            raise ValueError("the token is not a JWT")
        expected = self._sign(f"{parts[0]}.{parts[1]}".encode())
        if not hmac.compare_digest(expected, parts[2]):
            raise ValueError("the token's signature is invalid")
        try:
            claims: dict[str, Any] = json.loads(b64url_decode(parts[1]))
        except ValueError as exc:
            raise ValueError("the token's payload is not JSON") from exc
        if claims.get("exp", 0) < time.time():
            raise ValueError("the token has expired")
        return claims
