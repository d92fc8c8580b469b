"""Configuration from the environment and ``.env``, with the variable names Azure tooling uses.

``Settings.load()`` is the only constructor callers need: it reads the environment (and ``.env``
when present), applies ``overrides`` (command-line options win), fills the endpoints from the
cloud table, and raises ``ConfigError`` naming the variable and the fix for anything invalid or
contradictory. Which credential to use is decided by ``credential_kind()``, only when a token is
needed, so commands that never touch the tenant (``validate``, ``--snapshot``) need no credential.

Secrets are ``SecretStr`` (never in ``repr``); ``redact()`` removes them and anything token-shaped
from text before it is logged or raised. An endpoint URL with a user name or password in it is
refused without echoing it (it would reach logs, errors and the login endpoint).

Numbers are checked by ``limits`` (finite and in range, naming the variable); ``.env`` is read by
``read_dotenv`` alone, which turns an unreadable or non-UTF-8 file into a ``ConfigError`` with the
line and column.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import SplitResult, urlsplit

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from . import limits
from .errors import ConfigError
from .redact import redact, register_secret

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cloud:
    name: str
    login_host: str
    graph_url: str
    teams_url: str
    # Graph's admin/teams/policy/userAssignments (bulk assign) exists only in the commercial cloud.
    graph_policy_assignment: bool


CLOUDS: dict[str, Cloud] = {
    "commercial": Cloud(
        "commercial",
        "https://login.microsoftonline.com",
        "https://graph.microsoft.com",
        "https://api.interfaces.records.teams.microsoft.com",
        True,
    ),
    "gcc": Cloud(
        "gcc",
        "https://login.microsoftonline.com",
        "https://graph.microsoft.com",
        "https://api.interfaces.records.teams.microsoft.com",
        False,
    ),
    "gcchigh": Cloud(
        "gcchigh",
        "https://login.microsoftonline.us",
        "https://graph.microsoft.us",
        "https://api.interfaces.records.gov.teams.microsoft.us",
        False,
    ),
    # Sources disagree on the DoD Teams host; BRIDGE_TEAMS_URL overrides it.
    "dod": Cloud(
        "dod",
        "https://login.microsoftonline.us",
        "https://dod-graph.microsoft.us",
        "https://api.interfaces.records.dod.teams.microsoft.us",
        False,
    ),
}

CredentialKind = Literal["certificate", "secret", "federated", "device_code", "managed_identity"]
AuthChoice = Literal[
    "auto", "certificate", "secret", "federated", "device_code", "managed_identity"
]

# Field name -> environment variable, for messages and for overrides given by variable name.
ENV_NAMES: dict[str, str] = {
    "tenant_id": "AZURE_TENANT_ID",
    "client_id": "AZURE_CLIENT_ID",
    "client_certificate_path": "AZURE_CLIENT_CERTIFICATE_PATH",
    "client_certificate_password": "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "client_secret": "AZURE_CLIENT_SECRET",
    "federated_token_file": "AZURE_FEDERATED_TOKEN_FILE",
    "authority_host": "AZURE_AUTHORITY_HOST",
    "cloud": "BRIDGE_CLOUD",
    "graph_url": "BRIDGE_GRAPH_URL",
    "teams_url": "BRIDGE_TEAMS_URL",
    "ca_bundle": "REQUESTS_CA_BUNDLE",
    "timeout_connect": "BRIDGE_TIMEOUT_CONNECT",
    "timeout_read": "BRIDGE_TIMEOUT_READ",
    "retry_attempts": "BRIDGE_RETRY_ATTEMPTS",
    "retry_max_seconds": "BRIDGE_RETRY_MAX_SECONDS",
    "concurrency": "BRIDGE_CONCURRENCY",
    "max_rps": "BRIDGE_MAX_RPS",
    "token_cache": "BRIDGE_TOKEN_CACHE",
    "auth": "BRIDGE_AUTH",
}
_FIELD_BY_ENV = {env: field for field, env in ENV_NAMES.items()}
# The numeric settings and their ranges (checked by ``limits``, naming the variable).
NUMBER_RANGES: dict[str, limits.Range] = {
    "timeout_connect": limits.TIMEOUT_SECONDS,
    "timeout_read": limits.TIMEOUT_SECONDS,
    "retry_attempts": limits.RETRY_ATTEMPTS,
    "retry_max_seconds": limits.RETRY_SECONDS,
    "concurrency": limits.CONCURRENCY,
    "max_rps": limits.RATE,
}
# A .env is a few lines; anything this large is not one (and is not read into memory).
DOTENV_MAX_BYTES = 1 << 20


def _env(field: str) -> Any:
    return Field(None, validation_alias=ENV_NAMES[field])


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        extra="ignore",
        populate_by_name=True,
        env_ignore_empty=True,
        case_sensitive=False,
    )

    tenant_id: str | None = _env("tenant_id")
    client_id: str | None = _env("client_id")
    client_certificate_path: str | None = _env("client_certificate_path")
    client_certificate_password: SecretStr | None = _env("client_certificate_password")
    client_secret: SecretStr | None = _env("client_secret")
    federated_token_file: str | None = _env("federated_token_file")
    authority_host: str = Field("", validation_alias="AZURE_AUTHORITY_HOST")
    cloud: Literal["commercial", "gcc", "gcchigh", "dod"] = Field(
        "commercial", validation_alias="BRIDGE_CLOUD"
    )
    graph_url: str = Field("", validation_alias="BRIDGE_GRAPH_URL")
    teams_url: str = Field("", validation_alias="BRIDGE_TEAMS_URL")
    ca_bundle: str | None = _env("ca_bundle")
    # Ranges: NUMBER_RANGES, checked in ``_check_numbers`` (NaN and infinities refused).
    timeout_connect: float = Field(10.0, validation_alias="BRIDGE_TIMEOUT_CONNECT")
    timeout_read: float = Field(60.0, validation_alias="BRIDGE_TIMEOUT_READ")
    retry_attempts: int = Field(5, validation_alias="BRIDGE_RETRY_ATTEMPTS")
    retry_max_seconds: float = Field(120.0, validation_alias="BRIDGE_RETRY_MAX_SECONDS")
    concurrency: int = Field(4, validation_alias="BRIDGE_CONCURRENCY")
    max_rps: float | None = Field(None, validation_alias="BRIDGE_MAX_RPS")
    token_cache: str | None = _env("token_cache")
    auth: AuthChoice = Field("auto", validation_alias="BRIDGE_AUTH")

    @classmethod
    def load(
        cls, env_file: str | None = ".env", overrides: Mapping[str, Any] | None = None
    ) -> Settings:
        """Environment, then ``env_file`` (if it exists) under it, then ``overrides`` over both.

        ``overrides`` keys are field names (``cloud``) or variable names (``BRIDGE_CLOUD``);
        ``None`` values are ignored, so unset command-line options do not mask the environment.
        """
        given: dict[str, Any] = {}
        for key, value in (overrides or {}).items():
            if value is None:
                continue
            field = _FIELD_BY_ENV.get(key.upper(), key)
            if field not in ENV_NAMES:
                raise ConfigError(
                    f"unknown setting {key!r}; known: {', '.join(sorted(ENV_NAMES.values()))}"
                )
            given[field] = value
        # .env under the environment: a variable set (non-empty) in the environment wins.
        from_file: dict[str, Any] = {}
        if env_file is not None and os.path.isfile(env_file):
            in_env = {k.upper() for k, v in os.environ.items() if v}
            for name, text in read_dotenv(env_file).items():
                known = _FIELD_BY_ENV.get(name.upper())
                if known is not None and text and name.upper() not in in_env:
                    from_file[known] = text
        try:
            settings = cls(**{**from_file, **given})
        except ValidationError as exc:
            raise ConfigError(_validation_message(exc)) from None
        settings._check_numbers()
        settings._strip_ids()
        settings._resolve_endpoints()
        settings._check()
        for secret in settings.secrets():
            register_secret(secret)
        return settings

    # ------------------------------------------------------------------ derived values

    @property
    def cloud_info(self) -> Cloud:
        return CLOUDS[self.cloud]

    @property
    def graph_policy_assignment(self) -> bool:
        """Whether Graph's bulk user assignment can be used (commercial cloud only)."""
        return self.cloud_info.graph_policy_assignment

    @property
    def verify(self) -> str | bool:
        """``requests``' ``verify``: the extra CA bundle when set; never ``False``."""
        return self.ca_bundle or True

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.timeout_connect, self.timeout_read)

    @property
    def authority(self) -> str:
        if not self.tenant_id:
            raise ConfigError("AZURE_TENANT_ID is not set: set it to the tenant's id or domain")
        return f"{self.authority_host}/{self.tenant_id}"

    def credential_kind(self) -> CredentialKind:
        """The credential to use, or ``ConfigError`` saying which variables to set."""
        cert, secret = self.client_certificate_path, self.client_secret
        federated = self.federated_token_file
        kind: CredentialKind
        if self.auth == "auto":
            if cert:
                if secret:
                    log.info(
                        "both AZURE_CLIENT_CERTIFICATE_PATH and AZURE_CLIENT_SECRET are set: "
                        "using the certificate"
                    )
                kind = "certificate"
            elif secret:
                kind = "secret"
            elif federated:
                kind = "federated"
            else:
                raise ConfigError(
                    "no credential configured: set AZURE_CLIENT_CERTIFICATE_PATH (preferred), "
                    "AZURE_CLIENT_SECRET or AZURE_FEDERATED_TOKEN_FILE, together with "
                    "AZURE_TENANT_ID and AZURE_CLIENT_ID; or set BRIDGE_AUTH=device_code "
                    "(interactive sign-in) or BRIDGE_AUTH=managed_identity"
                )
        else:
            kind = self.auth
            needed = {
                "certificate": ("AZURE_CLIENT_CERTIFICATE_PATH", cert),
                "secret": ("AZURE_CLIENT_SECRET", secret),
                "federated": ("AZURE_FEDERATED_TOKEN_FILE", federated),
            }.get(kind)
            if needed and not needed[1]:
                raise ConfigError(f"BRIDGE_AUTH={kind} needs {needed[0]}: set it")
        if kind != "managed_identity":
            missing = [ENV_NAMES[f] for f in ("tenant_id", "client_id") if not getattr(self, f)]
            if missing:
                raise ConfigError(
                    f"{' and '.join(missing)} not set: the {kind.replace('_', ' ')} credential "
                    "needs the tenant (id or domain) and the app registration's client id"
                )
        return kind

    # ------------------------------------------------------------------ redaction

    def secrets(self) -> list[str]:
        values = [self.client_secret, self.client_certificate_password]
        return [v.get_secret_value() for v in values if v is not None]

    def redact(self, text: str) -> str:
        """``text`` without this configuration's secrets or anything token-shaped."""
        return redact(text, self.secrets())

    # ------------------------------------------------------------------ checks

    def _check_numbers(self) -> None:
        for field, rng in NUMBER_RANGES.items():
            value = getattr(self, field)
            if value is None:
                continue
            try:
                limits.check(value, rng, ENV_NAMES[field])
            except limits.NumberError as exc:
                raise ConfigError(f"invalid configuration: {exc}") from None

    def _resolve_endpoints(self) -> None:
        cloud = self.cloud_info
        for field, default in (
            ("authority_host", cloud.login_host),
            ("graph_url", cloud.graph_url),
            ("teams_url", cloud.teams_url),
        ):
            var = ENV_NAMES[field]
            value = (getattr(self, field) or default).rstrip("/")
            parts = _split_endpoint(var, value, default)
            # Only scheme and host are ever echoed: whatever else an endpoint carries (a
            # query, a fragment, a path) may hold a secret, and errors reach logs and CI output.
            shown = _origin(parts)
            # TLS is never switched off; MSAL also refuses a non-https authority.
            if parts.scheme != "https" or not parts.netloc:
                raise ConfigError(
                    f"{var} ({shown}) is not an https URL: give scheme and host, e.g. {default}"
                )
            if parts.query or parts.fragment or value.endswith(("?", "#")):
                raise ConfigError(
                    f"{var} ({shown}?...) has a query string or fragment (not shown): give "
                    f"scheme and host only, e.g. {default}"
                )
            if parts.path:
                raise ConfigError(
                    f"{var} ({shown}/...) has a path (not shown): {_path_hint(field, default)}"
                )
            _warn_other_cloud(var, parts.netloc, field, self.cloud)
            setattr(self, field, value)

    def _strip_ids(self) -> None:
        # " <guid> " pasted from a portal would otherwise end up in the authority URL.
        for field in ("tenant_id", "client_id"):
            value = getattr(self, field)
            if value is not None:
                setattr(self, field, value.strip() or None)

    def _check(self) -> None:
        if self.client_certificate_password and not self.client_certificate_path:
            raise ConfigError(
                "AZURE_CLIENT_CERTIFICATE_PASSWORD is set but AZURE_CLIENT_CERTIFICATE_PATH is "
                "not: set the certificate path, or unset the password"
            )
        for field in ("ca_bundle", "federated_token_file", "client_certificate_path"):
            path = getattr(self, field)
            if path and not os.path.isfile(path):
                raise ConfigError(f"{ENV_NAMES[field]}={path!r}: no such file")


def _split_endpoint(var: str, value: str, default: str) -> SplitResult:
    """``value`` split, or ``ConfigError``: not a URL (``https://[::1``, a port that is not one),
    or a URL carrying a user name or password. Credentials are never echoed: the message shows
    the URL with them cut out. They would otherwise reach logs, errors and reports, and be sent
    to the login endpoint; teams-bridge authenticates with the app's credential only."""
    if "@" in value:
        # Scheme and host only, so an "@" anywhere is a user name or password (or junk).
        scheme, sep, rest = value.partition("://")
        shown = f"{scheme}{sep}***@{rest.rsplit('@', 1)[1]}" if sep else "***"
        raise ConfigError(
            f"{var} has a user name or password in it ({shown}): endpoint URLs carry no "
            f"credentials; give scheme and host only, e.g. {default}, and the credential in "
            "AZURE_CLIENT_CERTIFICATE_PATH or AZURE_CLIENT_SECRET"
        )
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - validates the port (ValueError when it is not one)
    except ValueError:
        raise ConfigError(
            f"{var} is not a valid URL (not shown: it may hold a secret; a bracket or port that "
            f"does not close or parse?): give scheme and host, e.g. {default}"
        ) from None
    return parts


def _origin(parts: SplitResult) -> str:
    """``scheme://host[:port]`` of an endpoint that carries no credentials (checked before)."""
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme else (parts.netloc or "...")


def read_dotenv(path: str | os.PathLike[str]) -> dict[str, str]:
    """The variables a ``.env`` file sets (``None`` values, ``KEY`` without ``=``, dropped).
    An unreadable, oversized or non-UTF-8 file is a ``ConfigError`` naming the file (and the
    line and column of the first byte that is not UTF-8), never a traceback."""
    from dotenv import dotenv_values

    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read(DOTENV_MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            f"{name}: cannot read the .env file: {exc.strerror or exc}; fix its permissions or "
            "remove it"
        ) from None
    if len(data) > DOTENV_MAX_BYTES:
        raise ConfigError(
            f"{name}: larger than {DOTENV_MAX_BYTES // 1024} KB, which no .env file is: check "
            "what it is, or remove it"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = data[: exc.start].decode("utf-8", "replace")
        line = before.count("\n") + 1
        column = len(before) - (before.rfind("\n") + 1) + 1
        raise ConfigError(
            f"{name}:{line}:{column}: the .env file is not UTF-8 text (byte "
            f"0x{data[exc.start]:02x}): save it as UTF-8"
        ) from None
    values = dotenv_values(stream=io.StringIO(text))
    return {key: value for key, value in values.items() if value is not None}


def load_dotenv(path: str = ".env") -> None:
    """Put a ``.env`` file's variables into the environment (the real environment wins; empty
    values are skipped, as in ``.env.example``), so the command-line options that read
    variables (BRIDGE_JOURNAL, BRIDGE_HISTORY...) see them too. No file: nothing to do."""
    if not os.path.isfile(path):
        return
    for key, value in read_dotenv(path).items():
        if value and key not in os.environ:
            os.environ[key] = value


def _path_hint(field: str, default: str) -> str:
    if field == "authority_host":
        return f"give scheme and host only (e.g. {default}); the tenant comes from AZURE_TENANT_ID"
    if field == "graph_url":
        return (
            f"give scheme and host only, without /v1.0 (e.g. {default}): the client appends "
            "/v1.0/..., and the token's audience is the base URL"
        )
    return f"give scheme and host only (e.g. {default}): the client appends /Skype.Policy/..."


def _warn_other_cloud(var: str, host: str, field: str, cloud: str) -> None:
    """Log when ``host`` is another cloud's endpoint (a simulator's host is nobody's)."""
    owners = {
        name
        for name, c in CLOUDS.items()
        if urlsplit(getattr(c, "login_host" if field == "authority_host" else field)).netloc
        == host.lower()
    }
    if owners and cloud not in owners:
        log.warning(
            "%s points at %s, which belongs to the %s cloud, but BRIDGE_CLOUD=%s: check "
            "BRIDGE_CLOUD",
            var,
            host,
            "/".join(sorted(owners)),
            cloud,
        )


def _validation_message(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = str(err["loc"][0]) if err["loc"] else "?"
        var = ENV_NAMES.get(key, key.upper())
        if var in ("AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PASSWORD"):
            lines.append(f"{var}: {err['msg']}")
        else:
            lines.append(f"{var}={err.get('input')!r}: {err['msg']}")
    return "invalid configuration: " + "; ".join(lines)
