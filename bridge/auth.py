"""Tokens through MSAL: one provider per run, one token per resource (cached by MSAL).

``build_token_provider(settings)`` picks the credential ``settings.credential_kind()`` names:
a certificate (PEM with key and certificate, or PFX with a password), a client secret, a federated
token file (re-read on every token request: Kubernetes rotates it), a CI pipeline's own OIDC token
(GitHub Actions or Azure Pipelines, fetched fresh for every token request; ``pipeline_oidc``),
device code sign-in (the prompt
goes to a callback; the library never prints) or a managed identity.

Resources: the Teams admin API is an app id (``TEAMS_RESOURCE``); Graph is its base URL. Scopes
are ``<resource>/.default``. A failed acquisition raises ``AuthError`` naming the credential and
the AADSTS code, never a secret.
"""

from __future__ import annotations

import base64
import inspect
import json
import logging
import os
import re
import threading
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import msal
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from .errors import AuthError, ConfigError, LoginUnreachableError, connection_failure
from .files import write_text_atomic
from .observers import observe_before, observe_done
from .redact import register_secret
from .settings import Settings, redact
from .state import is_guid as is_guid  # re-exported: backends import it from here

log = logging.getLogger(__name__)

TEAMS_RESOURCE = "48ac35b8-9aa8-4d74-927d-1f4a14a0b239"

# Hosts where MSAL's instance discovery is meaningful; anything else (a simulator) skips it.
MICROSOFT_LOGIN_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoftonline.us",
        "login.microsoft.com",
        "login.windows.net",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
        "login.sts.microsoft.com",
    }
)

# What to try for the AADSTS codes people actually hit.
_AADSTS_HINTS = {
    "7000215": "the client secret is wrong: check AZURE_CLIENT_SECRET (the secret's value, "
    "not its id)",
    "7000222": "the client secret has expired: create a new one in the app registration",
    "700016": "no app with AZURE_CLIENT_ID in this tenant: check AZURE_CLIENT_ID, "
    "AZURE_TENANT_ID and BRIDGE_CLOUD",
    "90002": "tenant not found: check AZURE_TENANT_ID and BRIDGE_CLOUD",
    "700027": "the certificate is not registered on the app: upload it under Certificates & "
    "secrets",
    "700024": "the federated token has expired: check the token file is being refreshed",
    "70021": "no federated credential on the app matches the token's issuer and subject",
    "50049": "unknown or invalid authority: check AZURE_AUTHORITY_HOST",
}


class TokenProvider(Protocol):
    def get_token(self, resource: str) -> str: ...


def scope_for(resource: str) -> str:
    return f"{resource.rstrip('/')}/.default"


def resource_label(resource: str) -> str:
    return "the Teams admin API" if resource == TEAMS_RESOURCE else f"Graph ({resource})"


# --------------------------------------------------------------------------- certificates


def load_certificate(path: str, password: str | None = None) -> tuple[str, str, str, str]:
    """``(private key PEM, certificate PEM, SHA-256 thumbprint, SHA-1 thumbprint)`` from a PEM
    holding key and certificate, or a PFX/P12 (with ``password`` when it has one)."""
    env = "AZURE_CLIENT_CERTIFICATE_PATH"
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{env}={path!r}: cannot read: {exc.strerror or exc}") from None
    secret = password.encode() if password else None
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_private_key(data, secret)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"{env}={path!r}: no usable private key in the PEM ({_short(exc)}); the file "
                "must hold the key and the certificate (and AZURE_CLIENT_CERTIFICATE_PASSWORD "
                "if the key is encrypted)"
            ) from None
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError:
            raise ConfigError(
                f"{env}={path!r}: no certificate in the PEM: append the certificate to the key"
            ) from None
    else:
        try:
            pfx_key, pfx_cert, extra = pkcs12.load_key_and_certificates(data, secret)
        except (ValueError, TypeError):
            raise ConfigError(
                f"{env}={path!r}: not a readable PFX: wrong or missing "
                "AZURE_CLIENT_CERTIFICATE_PASSWORD, or not a PEM/PFX file"
            ) from None
        if pfx_key is None or pfx_cert is None:
            raise ConfigError(f"{env}={path!r}: the PFX must contain the key and the certificate")
        key, certs = pfx_key, [pfx_cert, *extra]
    # A chain may list the CA first: the app's certificate is the one of the private key.
    cert = _certificate_of(key, certs)
    if cert is None:
        raise ConfigError(
            f"{env}={path!r}: none of the {len(certs)} certificate(s) in the file belongs to its "
            "private key: put the app's certificate (the one uploaded to the app registration) "
            "in the file with its key"
        )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    sha256 = cert.fingerprint(hashes.SHA256()).hex().upper()
    sha1 = cert.fingerprint(hashes.SHA1()).hex().upper()  # MSAL < 1.35 needs SHA-1
    return key_pem, cert_pem, sha256, sha1


def _public_der(public_key: Any) -> bytes:
    return bytes(
        public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _certificate_of(key: Any, certs: list[x509.Certificate]) -> x509.Certificate | None:
    """The certificate whose public key is ``key``'s, or None."""
    wanted = _public_der(key.public_key())
    return next((c for c in certs if _public_der(c.public_key()) == wanted), None)


def _origin(url: str) -> str:
    """Scheme, host and port of an endpoint (settings refuse anything more in one)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else url


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _msal_computes_sha256() -> bool:
    # MSAL 1.35+ derives the SHA-256 thumbprint from "public_certificate"; older ones need SHA-1.
    parts = re.findall(r"\d+", msal.__version__)[:2]
    return tuple(int(p) for p in parts) >= (1, 35)


# --------------------------------------------------------------------------- the provider


class PinnedSession(requests.Session):
    """A session whose ``verify`` and ``timeout`` hold for every request. ``requests`` lets the
    process's REQUESTS_CA_BUNDLE override ``Session.verify``, and MSAL passes neither, so the
    configured CA (e.g. the sandbox's, given as an override) would otherwise be ignored."""

    def __init__(self, verify: str | bool, timeout: tuple[float, float]):
        super().__init__()
        self.verify = verify
        self._timeout = timeout
        # Called with (method, url) before each request: the HTTP client counts MSAL's too.
        self.observers: list[Callable[[str, str], None]] = []

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        for observe in self.observers:
            observe(str(method), str(url))
        if kwargs.get("verify") is None:
            kwargs["verify"] = self.verify
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout

        # MSAL's token requests are requests to an API too: serve counts them as api="login".
        observe_before("login")
        try:
            response = super().request(method, url, *args, **kwargs)
        except requests.RequestException:
            observe_done("login", None)
            raise
        observe_done("login", response.status_code)
        return response


class _Observer:
    """A request observer; a bound method only as long as its object lives."""

    def __init__(self, fn: Callable[[str, str], None]):
        self._ref = weakref.WeakMethod(fn) if inspect.ismethod(fn) else None
        self._fn = None if self._ref is not None else fn

    @property
    def alive(self) -> bool:
        return self._ref is None or self._ref() is not None

    def __call__(self, method: str, url: str) -> None:
        fn = self._ref() if self._ref is not None else self._fn
        if fn is not None:
            fn(method, url)


class MsalTokenProvider:
    """``get_token(resource)`` through one MSAL application; thread-safe."""

    def __init__(
        self,
        settings: Settings,
        kind: str,
        *,
        prompt: Callable[[str], None] | None = None,
        session: requests.Session | None = None,
    ):
        self.settings = settings
        self.kind = kind
        self._prompt = prompt
        self._session = session
        self._lock = threading.RLock()
        self._app: Any = None
        self._observers: list[Callable[[str, str], None]] = []
        self._cache = msal.SerializableTokenCache()
        self._cache_path = settings.token_cache
        self.thumbprint: str | None = None  # SHA-256 of the certificate, for doctor
        if self._cache_path and os.path.isfile(self._cache_path):
            try:
                self._cache.deserialize(Path(self._cache_path).read_text("utf-8"))
            except (OSError, ValueError) as exc:
                log.warning("ignoring unreadable token cache %s: %s", self._cache_path, exc)

    def describe(self) -> str:
        s = self.settings
        who = f"app {s.client_id}" if s.client_id else "the managed identity"
        return f"{self.kind.replace('_', ' ')} credential ({who}, tenant {s.tenant_id or '?'})"

    def observe(self, observer: Callable[[str, str], None]) -> None:
        """``observer(method, url)`` before every request MSAL sends (authority discovery,
        tokens), so the HTTP client's request counts include them. A bound method is held
        weakly: a client that is gone stops being told (and is not kept alive)."""
        with self._lock:
            self._observers[:] = [o for o in self._observers if getattr(o, "alive", True)]
            self._observers.append(_Observer(observer))

    def get_token(self, resource: str) -> str:
        with self._lock:
            try:
                result = self._acquire(resource)
            except (AuthError, ConfigError):
                raise
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise LoginUnreachableError(
                    f"could not reach the login endpoint {_origin(self.settings.authority_host)} "
                    f"for a token for {resource_label(resource)}: {connection_failure(exc)}; "
                    "check the network and any proxy (HTTPS_PROXY), that AZURE_AUTHORITY_HOST "
                    "(or --cloud / BRIDGE_CLOUD) names the right login host, and "
                    "BRIDGE_TIMEOUT_CONNECT/BRIDGE_TIMEOUT_READ"
                ) from None
            except (ValueError, requests.RequestException, msal.ManagedIdentityError) as exc:
                # MSAL raises for an unreachable or invalid authority before any token request.
                raise AuthError(
                    f"could not get a token for {resource_label(resource)} with the "
                    f"{self.describe()}: {redact(_short(exc), self.settings.secrets())}"
                ) from None
            self._persist()
        if "access_token" not in result:
            raise AuthError(self._failure_message(resource, result))
        token = str(result["access_token"])
        register_secret(token)
        return token

    # ------------------------------------------------------------------ MSAL

    def _acquire(self, resource: str) -> dict[str, Any]:
        scopes = [scope_for(resource)]
        if self.kind == "managed_identity":
            return self._application().acquire_token_for_client(resource=resource)
        if self.kind == "device_code":
            return self._device_code(scopes)
        return self._application().acquire_token_for_client(scopes=scopes)

    def _device_code(self, scopes: list[str]) -> dict[str, Any]:
        app = self._application()
        accounts = app.get_accounts()
        if accounts:
            silent = app.acquire_token_silent(scopes, account=accounts[0])
            if silent and "access_token" in silent:
                return silent
        if self._prompt is None:
            raise ConfigError(
                "BRIDGE_AUTH=device_code needs an interactive terminal to show the sign-in code"
            )
        flow = app.initiate_device_flow(scopes=scopes)
        if "user_code" not in flow:
            return flow
        self._prompt(str(flow["message"]))
        return app.acquire_token_by_device_flow(flow)

    def _application(self) -> Any:
        # Built on first use: building fetches the authority's metadata over the network.
        if self._app is None:
            self._app = self._build()
        return self._app

    def _build(self) -> Any:
        s = self.settings
        session = self._session or PinnedSession(s.verify, s.timeout)
        if isinstance(session, PinnedSession):
            session.observers = self._observers
        if self.kind == "managed_identity":
            identity: Any = (
                msal.UserAssignedManagedIdentity(client_id=s.client_id)
                if s.client_id
                else msal.SystemAssignedManagedIdentity()
            )
            return msal.ManagedIdentityClient(
                identity, http_client=session, token_cache=self._cache
            )
        host = s.authority_host.split("://", 1)[-1].lower()
        common: dict[str, Any] = {
            "authority": s.authority,
            "token_cache": self._cache,
            "http_client": session,
            "instance_discovery": host in MICROSOFT_LOGIN_HOSTS,
        }
        if self.kind == "device_code":
            return msal.PublicClientApplication(s.client_id, **common)
        return msal.ConfidentialClientApplication(
            s.client_id, client_credential=self._credential(), **common
        )

    def _credential(self) -> Any:
        s = self.settings
        if self.kind == "secret":
            assert s.client_secret is not None  # credential_kind() checked
            return s.client_secret.get_secret_value()
        if self.kind in PIPELINE_KINDS:
            return {"client_assertion": pipeline_assertion(self.kind, self._session_for_oidc())}
        if self.kind == "federated":
            path = s.federated_token_file
            assert path is not None

            def assertion() -> str:
                # Re-read every time: the platform rotates the file (about hourly on AKS).
                try:
                    return Path(path).read_text("utf-8").strip()
                except OSError as exc:
                    raise AuthError(
                        f"AZURE_FEDERATED_TOKEN_FILE={path!r}: cannot read: {exc.strerror or exc}"
                    ) from None

            return {"client_assertion": assertion}
        assert s.client_certificate_path is not None
        password = s.client_certificate_password
        key_pem, cert_pem, sha256, sha1 = load_certificate(
            s.client_certificate_path, password.get_secret_value() if password else None
        )
        self.thumbprint = sha256
        log.info("using certificate with SHA-256 thumbprint %s", sha256)
        if _msal_computes_sha256():
            return {"private_key": key_pem, "public_certificate": cert_pem}
        return {"private_key": key_pem, "thumbprint": sha1}

    def _session_for_oidc(self) -> requests.Session:
        s = self.settings
        return self._session or PinnedSession(s.verify, s.timeout)

    def _persist(self) -> None:
        if not self._cache_path or not self._cache.has_state_changed:
            return
        # Private (0600, its temporary file too): the cache holds access and refresh tokens.
        write_text_atomic(
            self._cache_path, self._cache.serialize(), private=True, hint="check BRIDGE_TOKEN_CACHE"
        )
        self._cache.has_state_changed = False

    def _failure_message(self, resource: str, result: Mapping[str, Any]) -> str:
        error = result.get("error", "unknown_error")
        description = str(result.get("error_description") or "").splitlines()
        first = description[0] if description else ""
        codes = [str(c) for c in result.get("error_codes") or []]
        codes += re.findall(r"AADSTS(\d+)", first)
        hint = next((_AADSTS_HINTS[c] for c in codes if c in _AADSTS_HINTS), "")
        text = (
            f"could not get a token for {resource_label(resource)} with the {self.describe()}: "
            f"{error}: {first}" + (f"; {hint}" if hint else "")
        )
        return redact(text, self.settings.secrets())


def build_token_provider(
    settings: Settings,
    *,
    prompt: Callable[[str], None] | None = None,
    session: requests.Session | None = None,
) -> MsalTokenProvider:
    """The provider for the configured credential (``ConfigError`` if none is configured).
    ``prompt`` receives the device-code sign-in instructions for the CLI to print."""
    kind: str
    try:
        kind = settings.credential_kind()
    except ConfigError:
        # No credential configured: in a pipeline that can hand out its OIDC token, use it.
        pipeline = pipeline_kind()
        if pipeline is None or not (settings.tenant_id and settings.client_id):
            raise
        kind = pipeline
    if kind == "certificate":
        # Fail now, with the variable's name, rather than on the first request.
        password = settings.client_certificate_password
        assert settings.client_certificate_path is not None
        load_certificate(
            settings.client_certificate_path, password.get_secret_value() if password else None
        )
    log.info("credential: %s; cloud: %s", kind, settings.cloud)
    return MsalTokenProvider(settings, kind, prompt=prompt, session=session)


# --------------------------------------------------------------------------- claims and guard


def decode_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, without verifying it (for doctor and the tenant guard only)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise AuthError("the access token is not a JWT; its claims cannot be read")
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, UnicodeDecodeError):
        raise AuthError("the access token's payload is not valid JSON") from None
    if not isinstance(claims, dict):
        raise AuthError("the access token's payload is not a JSON object")
    return claims


# --------------------------------------------------------------------------- pipeline OIDC

# The audience Entra expects on a federated credential's token.
FEDERATION_AUDIENCE = "api://AzureADTokenExchange"
PIPELINE_KINDS = ("github_oidc", "azure_pipelines_oidc")
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def pipeline_kind(environ: Mapping[str, str] | None = None) -> str | None:
    """``github_oidc`` in a GitHub Actions job with ``permissions: id-token: write``
    (``ACTIONS_ID_TOKEN_REQUEST_URL`` and ``_TOKEN``); ``azure_pipelines_oidc`` in Azure Pipelines
    with ``SYSTEM_OIDCREQUESTURI`` and ``SYSTEM_ACCESSTOKEN`` mapped into the step; else None."""
    env = os.environ if environ is None else environ
    if env.get("ACTIONS_ID_TOKEN_REQUEST_URL") and env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN"):
        return "github_oidc"
    if env.get("SYSTEM_OIDCREQUESTURI") and env.get("SYSTEM_ACCESSTOKEN"):
        return "azure_pipelines_oidc"
    return None


def _check_oidc_url(url: str, name: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK):
        return
    raise ConfigError(f"{name}: not an https URL; the pipeline sets it, check the job's settings")


def pipeline_assertion(
    kind: str, session: requests.Session, environ: Mapping[str, str] | None = None
) -> Callable[[], str]:
    """A callable MSAL calls for every token request: it asks the pipeline for a fresh OIDC token
    (they live minutes) and returns it as the client assertion."""
    env = os.environ if environ is None else environ

    def github() -> str:
        url, bearer = env["ACTIONS_ID_TOKEN_REQUEST_URL"], env["ACTIONS_ID_TOKEN_REQUEST_TOKEN"]
        _check_oidc_url(url, "ACTIONS_ID_TOKEN_REQUEST_URL")
        register_secret(bearer)
        return _fetch(
            session,
            "GET",
            url,
            params={"audience": FEDERATION_AUDIENCE},
            bearer=bearer,
            key="value",
            what="GitHub Actions OIDC token (does the job have permissions: id-token: write?)",
        )

    def azure_pipelines() -> str:
        url, bearer = env["SYSTEM_OIDCREQUESTURI"], env["SYSTEM_ACCESSTOKEN"]
        _check_oidc_url(url, "SYSTEM_OIDCREQUESTURI")
        register_secret(bearer)
        connection = env.get("AZURE_SERVICE_CONNECTION_ID") or env.get(
            "AZURESUBSCRIPTION_SERVICE_CONNECTION_ID"
        )
        if not connection:
            raise ConfigError(
                "Azure Pipelines OIDC needs the service connection's id: set "
                "AZURE_SERVICE_CONNECTION_ID"
            )
        return _fetch(
            session,
            "POST",
            url,
            params={"api-version": "7.1", "serviceConnectionId": connection},
            bearer=bearer,
            key="oidcToken",
            what="Azure Pipelines OIDC token (is SYSTEM_ACCESSTOKEN mapped into the step?)",
        )

    return github if kind == "github_oidc" else azure_pipelines


def _fetch(
    session: requests.Session,
    method: str,
    url: str,
    *,
    params: dict[str, str],
    bearer: str,
    key: str,
    what: str,
) -> str:
    try:
        response = session.request(
            method,
            url,
            params=params,
            headers={"Authorization": f"Bearer {bearer}", "Accept": "application/json"},
            json={} if method == "POST" else None,
        )
    except requests.RequestException as exc:
        raise AuthError(f"could not get the {what}: {redact(_short(exc))}") from None
    token = None
    if response.status_code == 200:
        try:
            token = response.json().get(key)
        except (ValueError, AttributeError):
            token = None
    if not isinstance(token, str) or not token:
        raise AuthError(
            f"could not get the {what}: the pipeline answered {response.status_code} without "
            f"a token under {key!r}"
        )
    register_secret(token)
    return token
