"""The PowerShell transport: the same ``Backend`` contract as the REST transport, carried out by the
MicrosoftTeams module in one long-lived ``pwsh`` process per run.

How it talks to pwsh. ``pwsh -NoLogo -NoProfile -NonInteractive -Command -`` is started once (at
the first call, not at construction). One line goes in on stdin: a bootstrap that decodes and runs
``powershell_driver.ps1`` (shipped beside this module). The driver answers a ``hello`` with the
PowerShell and module versions, then reads one JSON request per line,
``{"id", "cmdlet", "params", "select"?}``, splats ``params`` into the cmdlet (an allow-list of
cmdlets; request values never become script text) and writes each answer as one compressed
``ConvertTo-Json`` line between ``<<<teams-bridge:begin:ID>>>`` (preceded by a newline, and found
anywhere in its line: host output may lack one) and ``<<<teams-bridge:end:ID>>>``:
``{"ok": true, "result": [...], "warnings": [...]}`` or ``{"ok": false, "error": {"category",
"message", "fqid"}}``. Anything else pwsh prints (banners, host output) is logged at debug level.

Tokens. ``Connect-MicrosoftTeams -AccessTokens @(graph, teams)`` gets both tokens from the
``TokenProvider`` inside a stdin request: never on a command line, never in a log line (request
parameters are logged by name only, and every text pwsh sends back is redacted of them).
Tokens last an hour or so and a run that polls batch operations can last hours: before each
call, when either token has less than ``TOKEN_REFRESH_MARGIN`` seconds left (its ``exp``), the
session is connected again with fresh tokens from the provider.

Errors. Error records map to the REST transport's types by category: ``ObjectNotFound`` ->
``NotFoundError``, ``ResourceExists``/``ResourceBusy`` -> ``ConflictError``, ``PermissionDenied``
-> ``ForbiddenError`` with the directory-role hint, ``AuthenticationError`` ->
``UnauthorizedError``, ``LimitsExceeded`` -> ``ThrottledError``; other categories (the module's
AutoRest functions say ``NotSpecified``/``InvalidOperation``) by ``Forbidden``/``403``,
``Unauthorized``/``401`` or ``TooManyRequests``/``429`` in the error id or message; anything
else -> ``ApiError``. A
missing cmdlet or module, a pwsh that exits (EOF on stdout) or one that does not answer within
``timeout`` seconds raises ``TransportError`` saying what it was doing; the process is then gone
and every later call raises too.

Groups. The MicrosoftTeams module cannot look up an arbitrary group by display name, so group
names (the ``Wanted`` refs, and the names of assigned groups for reports) and a user's groups come
from Microsoft Graph through the same ``GraphClient`` the REST transport uses, with the Graph token
already at hand. A ref that is a GUID is looked up by id, a name by ``displayName``; every match is
kept, so an ambiguous name is reported by the plan, never resolved to the first match.

Users. The directory (every user: id, UPN, display name, department) is paged from Graph
``/users`` while pwsh reads the policies, as the REST transport pages ``/Teams.User/users``: the
safety limit's share of users and a snapshot's directory count the whole tenant through either
transport. ``Get-CsOnlineUser -Filter "TeamsMessagingPolicy -ne $null"`` gives every direct
assignment (with UPN and object id) in one call; the users ``Wanted`` names that are in neither are
looked up with ``UserPrincipalName -eq`` / ``Identity -eq`` filters, a few dozen per call (each
name a single-quoted literal with every character PowerShell reads as a single quote doubled),
and what is still missing is recorded as searched-but-absent.

Versions. The driver's hello reports PowerShell's and MicrosoftTeams' versions; before signing in,
PowerShell older than 7.2 (MicrosoftTeams supports nothing older since 6.3.0) or a module older
than app-only sign-in needs in the configured cloud (4.7.1; 5.0.1 in GCC High and DoD) raises
``TransportError`` with the version found, the version needed and the fix; ``doctor`` reports the
same (``requirements``).

Bulk (``powershell_bulk``). Up to ``GRANT_ONE_BY_ONE_MAX`` users of one policy are granted one
by one (``Grant-CsTeamsMessagingPolicy``; ``-PolicyName $null`` removes); more go through
``New-CsBatchPolicyAssignmentOperation`` in batches of 5,000, at most ``BATCHES_IN_FLIGHT`` at a
time, each polled with ``Get-CsBatchPolicyAssignmentOperation`` until ``Completed``; users whose
``UserState`` result is not ``Success`` come back as ``BulkResult.failures``.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

from .. import catalogue
from ..auth import TEAMS_RESOURCE, decode_claims, is_guid
from ..errors import (
    BridgeError,
    InvalidResponseError,
    PlanError,
    TransportError,
)
from ..http import HttpClient
from ..state import (
    Directory,
    Group,
    GroupAssignment,
    Policy,
    TenantState,
    User,
    UserAssignment,
    bare_name,
    policy_key,
)
from .base import POLICY_TYPE, BulkResult, Wanted, WriteReceipt
from .graph import GraphClient, Organization
from .powershell_bulk import (  # noqa: F401 (re-exported: defined here first)
    BATCH_SIZE,
    BATCHES_IN_FLIGHT,
    GRANT_ONE_BY_ONE_MAX,
    assign,
)
from .pwsh import (
    INSTALL_HINT,
    PWSH_ARGS,
    PWSH_INSTALL_HINT,
    ROLE_HINT,
    UPDATE_HINT,
    PwshSession,
    _dotted,
    best_module,
    error_from_record,
    min_module_version,
    requirements,
)
from .snapshot import policy_from_service

if TYPE_CHECKING:
    from ..auth import TokenProvider
    from ..settings import Settings

log = logging.getLogger(__name__)

USER_FILTER_CHUNK = 40  # names per Get-CsOnlineUser -Filter
USER_FIELDS = ("Identity", "UserPrincipalName", "DisplayName", "Department", POLICY_TYPE)
_NOTHING_WANTED = Wanted()
# Reconnect when a token has less than this left; MSAL hands out a new token from 5 min before.
TOKEN_REFRESH_MARGIN = 300.0


class GroupDirectory(Protocol):
    """What this transport needs from Graph; ``bridge.backends.graph.GraphClient`` provides it."""

    def resolve_groups(self, refs: Iterable[str]) -> dict[str, list[Group]]:
        """Every group each ref names (GUID: by id; else by display name); [] when none."""
        ...

    def list_users(self, attributes: Sequence[str] = ()) -> list[User]:
        """Every user in the directory (with ``attributes``, the roles' user properties)."""
        ...

    def member_of(self, user_id: str) -> list[Group]: ...

    def group_members(self, group_id: str) -> list[str]: ...

    def organization(self) -> Organization:
        """The tenant's verified domains (for a domain ``tenant:`` guard)."""
        ...


# --------------------------------------------------------------------------- the backend


class PowerShellBackend:
    """``Backend`` over the MicrosoftTeams module (see the module docstring)."""

    name = "powershell"

    def __init__(
        self,
        settings: Settings,
        token_provider: TokenProvider,
        *,
        pwsh: str = "pwsh",
        timeout: float = 120.0,
        graph: GroupDirectory | None = None,
        poll_interval: float = 10.0,
        batch_timeout: float = 4 * 3600.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ):
        self.settings = settings
        self.token_provider = token_provider
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.batch_timeout = batch_timeout
        self._sleep = sleep
        self._clock = clock  # wall-clock seconds, to compare with the tokens' exp
        self._tokens_expire: float | None = None  # the earlier exp of the two tokens
        self._graph = graph
        self._http: HttpClient | None = None  # only when this backend made the Graph client
        self._session = PwshSession(pwsh, timeout=timeout)
        self._connected = False
        self.tenant_id: str | None = None

    def __enter__(self) -> PowerShellBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ session

    def _call(
        self,
        cmdlet: str,
        params: Mapping[str, Any] | None = None,
        *,
        select: Sequence[str] | None = None,
    ) -> list[Any]:
        if not self._connected:
            self._connect()
        elif self._tokens_expiring():
            self._reconnect()
        return self._session.call(cmdlet, params, select=select)

    def _tokens_expiring(self) -> bool:
        expire = self._tokens_expire
        return expire is not None and expire - self._clock() < TOKEN_REFRESH_MARGIN

    def _fresh_tokens(self) -> tuple[str, str]:
        graph_token = self.token_provider.get_token(self.settings.graph_url)
        teams_token = self.token_provider.get_token(TEAMS_RESOURCE)
        self._session.add_secret(graph_token)
        self._session.add_secret(teams_token)
        expiries = [e for e in (_expiry_of(graph_token), _expiry_of(teams_token)) if e]
        self._tokens_expire = min(expiries) if expiries else None
        return graph_token, teams_token

    def _reconnect(self) -> None:
        """Connect the running session again with fresh tokens (the old ones are expiring)."""
        left = (self._tokens_expire or 0.0) - self._clock()
        log.info("the access tokens expire in %.0fs: connecting pwsh again with fresh ones", left)
        graph_token, teams_token = self._fresh_tokens()
        if self._tokens_expiring():
            log.warning(
                "the token provider handed out tokens that expire within %.0fs",
                (self._tokens_expire or 0.0) - self._clock(),
            )
        self._session.call("Connect-MicrosoftTeams", {"AccessTokens": [graph_token, teams_token]})

    def _connect(self) -> None:
        if self._session.started:
            # Started before but never connected: that start failed, and a second pwsh would
            # fail the same way.
            raise TransportError("the pwsh session failed to start earlier in this run")
        graph_token, teams_token = self._fresh_tokens()
        hello = self._session.start()
        cloud = self.settings.cloud
        for requirement in requirements(hello, cloud):
            if not requirement.ok:
                raise TransportError(requirement.error())
        log.info("pwsh %s, MicrosoftTeams %s", hello.get("PSVersion"), best_module(hello))
        self._session.call(
            "Import-Module",
            {"Name": "MicrosoftTeams", "MinimumVersion": _dotted(min_module_version(cloud))},
        )
        self._session.call("Connect-MicrosoftTeams", {"AccessTokens": [graph_token, teams_token]})
        # Never AZURE_TENANT_ID as a stand-in: the tenant guard would compare it with itself.
        self.tenant_id = _tenant_of(teams_token)
        if self.tenant_id is None:
            log.warning("cannot verify the token's tenant: the Teams token has no readable tid")
        self._connected = True

    def last_write(self) -> WriteReceipt:
        return WriteReceipt()  # cmdlets have no correlation id; batches carry operation ids

    def take_warnings(self) -> list[str]:
        return []

    def organization(self) -> Organization:
        return self.graph.organization()

    def domains(self) -> tuple[str, ...]:
        return tuple(self.graph.organization().verified_domains)  # from Graph, as REST does

    def request_stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        """Disconnect and end pwsh. Safe to call twice, and after a crash."""
        if self._connected:
            try:
                self._session.call("Disconnect-MicrosoftTeams")
            except BridgeError as exc:
                log.debug("Disconnect-MicrosoftTeams failed while closing: %s", exc)
            self._connected = False
        self._session.close()
        if self._http is not None:
            self._http.close()
            self._http = None

    @property
    def graph(self) -> GroupDirectory:
        if self._graph is None:
            self._http = HttpClient(self.token_provider, self.settings)
            client = GraphClient(self._http, self.settings.graph_url)
            self._graph = client
            return client
        return self._graph

    # ------------------------------------------------------------------ reads

    def read(self, wanted: Wanted = _NOTHING_WANTED) -> TenantState:
        graph = self.graph
        # The directory pages from Graph (HTTP) while pwsh answers; pwsh is one process taking
        # one request at a time, so the cmdlets stay in this thread.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bridge-graph-users") as pool:
            # The attributes only when roles need them (a GroupDirectory may take none). In this
            # context: the run's scoped request observers see Graph's pages too.
            extra = (wanted.attributes,) if wanted.attributes else ()
            listing = pool.submit(contextvars.copy_context().run, graph.list_users, *extra)
            policies, rows, direct = self._read_pwsh()
            users = listing.result()
        directory = Directory()
        for user in users:
            directory.add_user(user)
        assignments: list[UserAssignment] = []
        for user, policy in direct:
            listed = directory.users.get(user.id)
            if listed is not None and listed.attributes is not None:
                # Graph's entry carries the role attributes; the cmdlet row does not.
                user = dataclasses.replace(user, attributes=listed.attributes)
            directory.add_user(user)
            assignments.append(UserAssignment(user.id, policy, user.upn))
        self._resolve_users(wanted.users, directory)

        rows = [_group_row(r) for r in rows if _is_messaging(r)]
        group_ids = [str(r["GroupId"]) for r in rows]
        refs = list(dict.fromkeys([*group_ids, *wanted.groups]))
        found = self.graph.resolve_groups(refs) if refs else {}
        for ref, matches in found.items():
            if not matches:
                directory.searched_groups.add(ref)
            for group in matches:
                directory.add_group(group)
        groups = []
        for r in rows:
            gid = str(r["GroupId"])
            known = directory.groups.get(gid)
            groups.append(
                GroupAssignment(
                    gid,
                    bare_name(str(r["PolicyName"])),
                    int(r["Rank"]),
                    known.display_name if known else None,
                )
            )
        log.info(
            "read %d policies, %d group assignments, %d direct assignments through pwsh, "
            "%d users from Graph",
            len(policies),
            len(groups),
            len(assignments),
            len(users),
        )
        return TenantState.build(self.tenant_id, policies, groups, assignments, directory)

    def _read_pwsh(self) -> tuple[list[Policy], list[Any], list[tuple[User, str]]]:
        """The policies, the group assignment rows and the direct assignments (user, policy)."""
        policies = []
        for obj in self._call("Get-CsTeamsMessagingPolicy"):
            try:
                policies.append(policy_from_service(obj))
            except (ValueError, AttributeError) as exc:
                raise InvalidResponseError(
                    f"Get-CsTeamsMessagingPolicy returned an object without an Identity: {exc}"
                ) from exc
        rows = self._call("Get-CsGroupPolicyAssignment", {"PolicyType": POLICY_TYPE})
        direct = []
        for row in self._call(
            "Get-CsOnlineUser", {"Filter": f"{POLICY_TYPE} -ne $null"}, select=USER_FIELDS
        ):
            user = _user(row)
            policy = _policy_name(row.get(POLICY_TYPE))
            if policy:
                direct.append((user, policy))
        return policies, rows, direct

    def _resolve_users(self, refs: Sequence[str], directory: Directory) -> None:
        missing = [r for r in dict.fromkeys(refs) if directory.user_by_ref(r) is None]
        for chunk in _chunks(missing, USER_FILTER_CHUNK):
            clauses = [
                f"{'Identity' if is_guid(r) else 'UserPrincipalName'} -eq {_quote(r)}"
                for r in chunk
            ]
            rows = self._call(
                "Get-CsOnlineUser", {"Filter": " -or ".join(clauses)}, select=USER_FIELDS
            )
            for row in rows:
                directory.add_user(_user(row))
        directory.searched_users.update(r for r in missing if directory.user_by_ref(r) is None)

    def group_members(self, group_id: str) -> list[str]:
        return self.graph.group_members(group_id)

    def user_groups(self, user_id: str) -> list[Group]:
        return self.graph.member_of(user_id)

    # ------------------------------------------------------------------ writes

    def create_policy(self, name: str, settings: Mapping[str, Any]) -> None:
        self._call("New-CsTeamsMessagingPolicy", _policy_params(name, settings))

    def update_policy(self, name: str, settings: Mapping[str, Any]) -> None:
        self._call("Set-CsTeamsMessagingPolicy", _policy_params(name, settings))

    def delete_policy(self, name: str) -> None:
        self._call("Remove-CsTeamsMessagingPolicy", {"Identity": bare_name(name)})

    def add_group_assignment(self, group_id: str, policy: str, rank: int) -> None:
        self._call(
            "New-CsGroupPolicyAssignment",
            {
                "GroupId": group_id,
                "PolicyType": POLICY_TYPE,
                "PolicyName": bare_name(policy),
                "Rank": rank,
            },
        )

    def remove_group_assignment(self, group_id: str) -> None:
        self._call(
            "Remove-CsGroupPolicyAssignment", {"GroupId": group_id, "PolicyType": POLICY_TYPE}
        )

    def group_assignment(self, group_id: str) -> GroupAssignment | None:
        rows = self._call(
            "Get-CsGroupPolicyAssignment", {"GroupId": group_id, "PolicyType": POLICY_TYPE}
        )
        want = group_id.casefold()
        for r in rows:
            if _is_messaging(r) and str(_group_row(r)["GroupId"]).casefold() == want:
                return GroupAssignment(
                    str(r["GroupId"]), bare_name(str(r["PolicyName"])), int(r["Rank"])
                )
        return None

    def assign_users(self, assignments: Sequence[tuple[str, str]]) -> BulkResult:
        by_policy: dict[str, tuple[str, list[str]]] = {}
        for uid, policy in assignments:
            name = bare_name(policy)
            by_policy.setdefault(policy_key(name), (name, []))[1].append(uid)
        result = BulkResult()
        for name, users in by_policy.values():
            self._assign(users, name, result)
        return result

    def unassign_users(self, user_ids: Sequence[str]) -> BulkResult:
        result = BulkResult()
        self._assign(list(user_ids), None, result)
        return result

    def _assign(self, user_ids: list[str], policy: str | None, result: BulkResult) -> None:
        assign(
            self._call,
            user_ids,
            policy,
            result,
            poll_interval=self.poll_interval,
            batch_timeout=self.batch_timeout,
            sleep=self._sleep,
        )


# --------------------------------------------------------------------------- doctor


# --------------------------------------------------------------------------- helpers


def _tenant_of(token: str) -> str | None:
    try:
        tid = decode_claims(token).get("tid")
    except BridgeError:
        return None
    return str(tid) if tid else None


def _expiry_of(token: str) -> float | None:
    """The token's ``exp`` (epoch seconds), or None when it cannot be read."""
    try:
        exp = decode_claims(token).get("exp")
    except BridgeError:
        return None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


# Every character PowerShell's tokenizer reads as a single quote: ' and the typographic
# U+2018, U+2019, U+201A, U+201B. Any of them ends a single-quoted literal, so a name written
# with a typographic apostrophe (O\u2019Brien) left alone would end the literal early: a filter
# error, or, with a clause after it, a filter that selects other users. Doubled, each is itself.
_SINGLE_QUOTES = re.compile("['\u2018\u2019\u201a\u201b]")


def _quote(value: str) -> str:
    """A single-quoted filter literal, with every kind of single quote doubled."""
    return "'" + _SINGLE_QUOTES.sub(lambda m: m.group(0) * 2, value) + "'"


def _policy_params(name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of New-/Set-CsTeamsMessagingPolicy: the policy's name and its settings.
    Validation refuses a setting PowerShell would bind as a parameter (a common one, -Identity,
    -Force, ...); a saved plan is not validated again, so it is refused here too, before
    anything is sent: an ``identity`` setting would otherwise re-aim the write at another policy
    (PowerShell's hashtables ignore case, and the later key wins)."""
    for key in settings:
        parameter = catalogue.reserved_parameter(key)
        if parameter:
            raise PlanError(
                f"policy {bare_name(name)!r}: setting {key!r} is read by PowerShell as the "
                f"parameter -{parameter}, not a setting, and is not sent; remove it from the "
                "desired file (teams-bridge validate names it) and make the plan again"
            )
    return {"Identity": bare_name(name), **settings}


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _is_messaging(row: Any) -> bool:
    return isinstance(row, dict) and str(row.get("PolicyType", POLICY_TYPE)) == POLICY_TYPE


def _group_row(row: dict[str, Any]) -> dict[str, Any]:
    """A Get-CsGroupPolicyAssignment row with its GroupId, PolicyName and integer Rank."""
    try:
        int(row["Rank"])
        if not row["GroupId"] or not row["PolicyName"]:
            raise ValueError("empty GroupId or PolicyName")
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidResponseError(
            f"Get-CsGroupPolicyAssignment returned a row that cannot be read ({exc!r}): "
            f"{str(row)[:120]}"
        ) from None
    return row


def _policy_name(value: Any) -> str | None:
    """``TeamsMessagingPolicy`` of a user: a name, ``Tag:Name``, or an object with ``Name``."""
    if isinstance(value, dict):
        value = value.get("Name")
    if not value or not isinstance(value, str):
        return None
    return bare_name(value)


def _user(row: Any) -> User:
    if not isinstance(row, dict) or not row.get("Identity") or not row.get("UserPrincipalName"):
        raise InvalidResponseError(
            f"Get-CsOnlineUser returned a user without Identity or UserPrincipalName: {row!r}"
        )
    return User(
        str(row["Identity"]),
        str(row["UserPrincipalName"]),
        row.get("DisplayName"),
        row.get("Department"),
    )


__all__ = [  # the pwsh names are re-exported: they were defined here first
    "INSTALL_HINT",
    "PWSH_ARGS",
    "PWSH_INSTALL_HINT",
    "ROLE_HINT",
    "UPDATE_HINT",
    "GroupDirectory",
    "PowerShellBackend",
    "PwshSession",
    "error_from_record",
]
