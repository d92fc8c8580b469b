"""``doctor``: checks configuration, credentials, tokens, directory roles and one read per API,
and says in plain words what to fix. The CLI prints the checks; nothing here prints.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .auth import TEAMS_RESOURCE, TokenProvider, build_token_provider, decode_claims
from .backends.graph import GraphClient
from .backends.pwsh import PWSH_INSTALL_HINT, PwshSession, requirements
from .backends.teams_api import TeamsAdminClient
from .errors import BridgeError, LoginUnreachableError, TransportError
from .http import HttpClient
from .settings import Settings

log = logging.getLogger(__name__)

# Directory role template ids (the "wids" claim) that matter to the Teams admin API.
WRITE_ROLES = {
    "69091246-20e8-4a56-aa4d-066075b2a7a8": "Teams Administrator",
    "62e90394-69f5-4237-9190-012177145e10": "Global Administrator",
}
READ_ROLES = {
    "f2ef992c-3afb-46b9-b7cf-a126ee74c451": "Global Reader",
}
ROLE_FIX = (
    "Entra admin center > Roles and administrators > Teams Administrator > Add assignments > "
    "select the app's service principal (Global Reader is enough for plan, drift and export)"
)

# Graph application permissions teams-bridge uses; Directory.Read.All covers the read ones.
GRAPH_READ_PERMISSIONS = ("Group.Read.All", "User.Read.All", "Organization.Read.All")
GRAPH_ASSIGN_PERMISSION = "TeamsPolicyUserAssign.ReadWrite.All"
_DIRECTORY_WIDE = {"Directory.Read.All", "Directory.ReadWrite.All"}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def run_doctor(
    settings: Settings,
    *,
    token_provider: TokenProvider | None = None,
    http: HttpClient | None = None,
) -> list[Check]:
    """Every check, in order; a failed step skips only the checks that depend on it."""
    checks: list[Check] = []
    try:
        provider = token_provider or build_token_provider(settings)
        # The provider's kind: it may be a pipeline's OIDC token, which settings do not know.
        kind = str(getattr(provider, "kind", "") or settings.credential_kind())
    except BridgeError as exc:
        checks.append(configuration_failed(exc))
        return checks
    who = f"app {settings.client_id}" if settings.client_id else "managed identity"
    checks.append(
        Check(
            "configuration",
            True,
            f"{kind.replace('_', ' ')} credential for {who} in tenant {settings.tenant_id}; "
            f"cloud {settings.cloud}; login {settings.authority_host}; Graph "
            f"{settings.graph_url}; Teams admin API {settings.teams_url}",
        )
    )
    client = http or HttpClient(provider, settings)

    teams_claims = _token_checks(checks, provider, TEAMS_RESOURCE, "Teams admin API")
    if teams_claims is not None:
        checks.append(_role_check(teams_claims))
        checks.append(
            _read_check(
                "read: Teams admin API",
                lambda: (
                    f"{len(TeamsAdminClient(client, settings.teams_url).list_policies())} "
                    "messaging policies"
                ),
            )
        )

    graph_claims = _token_checks(checks, provider, settings.graph_url, "Graph")
    if graph_claims is not None:
        checks.append(_graph_permission_check(graph_claims, settings.graph_policy_assignment))

        def organization() -> str:
            org = GraphClient(client, settings.graph_url).organization()
            return (
                f"organization {org.display_name} ({org.id}); default domain {org.default_domain}"
            )

        checks.append(_read_check("read: Graph", organization))
    return checks


def configuration_failed(exc: BaseException) -> Check:
    """The failed "configuration" row for settings or a credential that cannot be built."""
    return Check("configuration", False, str(exc), _config_fix(str(exc)))


def _config_fix(message: str) -> str:
    if "no credential" in message:
        return "set the variables named above in the environment or in .env"
    return "correct the variable named above"


def _token_checks(
    checks: list[Check], provider: TokenProvider, resource: str, label: str
) -> Mapping[str, Any] | None:
    try:
        token = provider.get_token(resource)
    except BridgeError as exc:
        text = str(exc)
        if "SSL" in text or "CERTIFICATE_VERIFY_FAILED" in text or "TLS" in text:
            # Not the credential: the login host's certificate is not trusted.
            fix = (
                "the login host's TLS certificate is not trusted: point REQUESTS_CA_BUNDLE at a "
                "bundle holding its CA (a proxy's or a simulator's); check that the variable is "
                "not already set system-wide to another bundle"
            )
        elif isinstance(exc, LoginUnreachableError):
            fix = (
                "the login endpoint did not answer: check the network, any proxy (HTTPS_PROXY) "
                "and AZURE_AUTHORITY_HOST / BRIDGE_CLOUD; the credential was not tried"
            )
        else:
            fix = "fix the credential named above"
        checks.append(Check(f"token: {label}", False, text, fix))
        return None
    try:
        claims = decode_claims(token)
    except BridgeError as exc:
        checks.append(Check(f"token: {label}", True, f"acquired; {exc}"))
        return None
    roles = ", ".join(claims.get("roles") or []) or "none"
    app = claims.get("appid") or claims.get("azp", "?")
    detail = f"acquired for tenant {claims.get('tid', '?')}, app {app}; app roles: {roles}"
    if claims.get("scp"):
        detail += f"; delegated scopes: {claims['scp']}"
    checks.append(Check(f"token: {label}", True, detail))
    return claims


def _role_check(claims: Mapping[str, Any]) -> Check:
    wids = [str(w).lower() for w in claims.get("wids") or []]
    subject = "the signed-in user" if claims.get("scp") else "the app"
    writers = [WRITE_ROLES[w] for w in wids if w in WRITE_ROLES]
    readers = [READ_ROLES[w] for w in wids if w in READ_ROLES]
    if writers:
        return Check(
            "directory role",
            True,
            f"{subject} has {', '.join(writers)}: can read and write messaging policies",
        )
    if readers:
        return Check(
            "directory role",
            True,
            f"{subject} has {', '.join(readers)} only: plan, drift and export work, apply will "
            "be refused (403)",
            f"to apply changes, assign Teams Administrator: {ROLE_FIX}",
        )
    return Check(
        "directory role",
        False,
        f"{subject} has no directory role that the Teams admin API accepts: assign Teams "
        "Administrator",
        ROLE_FIX,
    )


def _graph_permission_check(claims: Mapping[str, Any], assignment: bool) -> Check:
    granted = set(claims.get("roles") or [])
    if claims.get("scp"):
        granted |= set(str(claims["scp"]).split())
    missing = [
        p for p in GRAPH_READ_PERMISSIONS if p not in granted and not granted & _DIRECTORY_WIDE
    ]
    if assignment and GRAPH_ASSIGN_PERMISSION not in granted:
        missing.append(GRAPH_ASSIGN_PERMISSION)
    if not missing:
        return Check("Graph permissions", True, f"granted: {', '.join(sorted(granted))}")
    return Check(
        "Graph permissions",
        False,
        f"the app lacks the Graph application permission(s) {', '.join(missing)}",
        "Entra admin center > App registrations > the app > API permissions > Add a permission "
        f"> Microsoft Graph > Application permissions: {', '.join(missing)}; then Grant admin "
        "consent",
    )


def _read_check(name: str, read: Callable[[], str]) -> Check:
    try:
        return Check(name, True, read())
    except BridgeError as exc:
        return Check(name, False, str(exc), _fix_for(exc))


def _fix_for(exc: BridgeError) -> str:
    status = getattr(exc, "status", None)
    if status == 403:
        return "grant what the message names, then run doctor again"
    if status == 401:
        return "check BRIDGE_CLOUD, AZURE_TENANT_ID and AZURE_CLIENT_ID"
    return "see the message; run with -v for the request log"


def powershell_checks(
    pwsh: str = "pwsh", *, timeout: float = 60.0, cloud: str | None = None
) -> list[Check]:
    """Is pwsh on PATH, which PowerShell, which MicrosoftTeams module (without signing in),
    against what ``cloud`` needs (None: the configuration could not be read): the PowerShell
    transport's part of ``doctor``."""
    exe = shutil.which(pwsh)
    if exe is None:
        return [Check("pwsh on PATH", False, f"{pwsh!r} not found on PATH", PWSH_INSTALL_HINT)]
    checks = [Check("pwsh on PATH", True, exe)]
    session = PwshSession(pwsh, timeout=timeout)
    try:
        hello = session.start()
    except TransportError as exc:
        return [*checks, Check("PowerShell", False, str(exc), PWSH_INSTALL_HINT)]
    finally:
        session.close()
    return [
        *checks,
        *(Check(r.name, r.ok, r.detail, "" if r.ok else r.fix) for r in requirements(hello, cloud)),
    ]
