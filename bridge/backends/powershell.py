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

Bulk. Up to ``GRANT_ONE_BY_ONE_MAX`` users of one policy are granted one by one
(``Grant-CsTeamsMessagingPolicy``; ``-PolicyName $null`` removes); more go through
``New-CsBatchPolicyAssignmentOperation`` in batches of 5,000, at most ``BATCHES_IN_FLIGHT`` at a
time, each polled with ``Get-CsBatchPolicyAssignmentOperation`` until ``Completed``; users whose
``UserState`` result is not ``Success`` come back as ``BulkResult.failures``.
"""

from __future__ import annotations

import base64
import contextvars
import importlib.resources
import itertools
import json
import logging
import queue
import re
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from .. import catalogue
from ..auth import TEAMS_RESOURCE, decode_claims, is_guid
from ..doctor import Check
from ..errors import (
    ApiError,
    BridgeError,
    ConflictError,
    ForbiddenError,
    InvalidResponseError,
    NotFoundError,
    PlanError,
    ThrottledError,
    TransportError,
    UnauthorizedError,
)
from ..http import HttpClient
from ..settings import redact
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
from .base import BulkResult, ChunkResult, UserFailure, Wanted
from .graph import GraphClient
from .snapshot import policy_from_service

if TYPE_CHECKING:
    from ..auth import TokenProvider
    from ..settings import Settings

log = logging.getLogger(__name__)

POLICY_TYPE = "TeamsMessagingPolicy"
MIN_PWSH_VERSION = (7, 2)  # MicrosoftTeams supports nothing older since 6.3.0
# The first MicrosoftTeams with app-only sign-in (-AccessTokens): commercial and GCC ...
MIN_MODULE_VERSION = (4, 7, 1)
# ... and GCC High and DoD, where app-only sign-in came later.
MIN_MODULE_VERSION_SOVEREIGN = (5, 0, 1)
SOVEREIGN_CLOUDS = ("gcchigh", "dod")
_CLOUD_NAMES = {"commercial": "commercial", "gcc": "GCC", "gcchigh": "GCC High", "dod": "DoD"}
INSTALL_HINT = "Install-Module MicrosoftTeams -Scope CurrentUser"
UPDATE_HINT = f"Update-Module MicrosoftTeams (or {INSTALL_HINT})"
PWSH_INSTALL_HINT = (
    "install PowerShell 7.2 or later (https://learn.microsoft.com/powershell/scripting/install/"
    "installing-powershell) and make sure `pwsh` is on PATH"
)
ROLE_HINT = (
    "the app's service principal needs the Teams Administrator directory role (or Global Reader "
    "for read-only commands): Entra admin center > Roles and administrators"
)
PWSH_ARGS = ("-NoLogo", "-NoProfile", "-NonInteractive", "-Command", "-")
BATCH_SIZE = 5000  # the service's limit per batch operation
BATCHES_IN_FLIGHT = 3  # "do not submit more than a few batches at a time"
GRANT_ONE_BY_ONE_MAX = 20  # below this, one Grant per user beats a batch that takes minutes
USER_FILTER_CHUNK = 40  # names per Get-CsOnlineUser -Filter
USER_FIELDS = ("Identity", "UserPrincipalName", "DisplayName", "Department", POLICY_TYPE)
_NOTHING_WANTED = Wanted()
_BEGIN = "<<<teams-bridge:begin:"
_END = "<<<teams-bridge:end:"
# Parameters whose values may appear in logs and error messages (never AccessTokens).
_SHOWN_PARAMS = ("Identity", "GroupId", "PolicyName", "Name", "Filter")
_FORBIDDEN_RE = re.compile(r"\b(Forbidden|403)\b", re.IGNORECASE)
_UNAUTHORIZED_RE = re.compile(r"\b(Unauthorized|401)\b", re.IGNORECASE)
_THROTTLED_RE = re.compile(r"\b(TooManyRequests|429)\b", re.IGNORECASE)
# Reconnect when a token has less than this left; MSAL hands out a new token from 5 min before.
TOKEN_REFRESH_MARGIN = 300.0


class GroupDirectory(Protocol):
    """What this transport needs from Graph; ``bridge.backends.graph.GraphClient`` provides it."""

    def resolve_groups(self, refs: Iterable[str]) -> dict[str, list[Group]]:
        """Every group each ref names (GUID: by id; else by display name); [] when none."""
        ...

    def list_users(self) -> list[User]:
        """Every user in the directory."""
        ...

    def member_of(self, user_id: str) -> list[Group]: ...

    def group_members(self, group_id: str) -> list[str]: ...


# --------------------------------------------------------------------------- the pwsh process


def _driver_bootstrap() -> str:
    """One line of PowerShell that decodes and runs the driver: sent as data, so the driver's
    multi-line text never meets the interactive line reader of ``-Command -``."""
    text = (
        importlib.resources.files(__package__)
        .joinpath("powershell_driver.ps1")
        .read_text(encoding="utf-8")
    )
    encoded = base64.b64encode(text.encode("utf-8")).decode("ascii")
    return (
        "& ([ScriptBlock]::Create([Text.Encoding]::UTF8.GetString("
        f"[Convert]::FromBase64String('{encoded}'))))"
    )


def describe(cmdlet: str, params: Mapping[str, Any] | None = None) -> str:
    """``cmdlet -Identity X`` with only the parameters that are safe to show."""
    shown = []
    for name, value in (params or {}).items():
        if name in _SHOWN_PARAMS and isinstance(value, str | type(None)):
            shown.append(f"-{name} {'$null' if value is None else repr(value)}")
        elif isinstance(value, list):
            shown.append(f"-{name} <{len(value)} values>")
    return " ".join([cmdlet, *shown])


class PwshSession:
    """One pwsh process speaking the driver protocol; one request at a time (callers on several
    threads take turns)."""

    def __init__(self, pwsh: str = "pwsh", *, timeout: float = 120.0):
        self.pwsh = pwsh
        self.timeout = timeout
        self.hello: dict[str, Any] = {}
        self._proc: subprocess.Popen[str] | None = None
        self._answers: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self._stderr: deque[str] = deque(maxlen=20)
        self._secrets: list[str] = []
        self._ids = itertools.count(1)
        self._dead: str | None = None
        self._turn = threading.Lock()
        self._stderr_reader: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._proc is not None

    def add_secret(self, value: str) -> None:
        """A value to redact from everything pwsh sends back (the tokens)."""
        self._secrets.append(value)

    def redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def start(self) -> dict[str, Any]:
        """Start pwsh, send the driver, return its hello (``PSVersion``, ``MicrosoftTeams``)."""
        exe = shutil.which(self.pwsh)
        if exe is None:
            raise TransportError(f"{self.pwsh!r} was not found on PATH: {PWSH_INSTALL_HINT}")
        try:
            self._proc = subprocess.Popen(
                [exe, *PWSH_ARGS],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                errors="replace",  # answers are ASCII; host chatter in another code page is not
                bufsize=1,
                # Its own session: Ctrl+C at the terminal (or a signal to our process group) must
                # not kill pwsh mid-apply, so an interrupted re-rank can still be put back.
                start_new_session=True,
            )
        except OSError as exc:
            raise TransportError(f"cannot start {exe}: {exc.strerror or exc}") from exc
        log.debug("started pwsh (pid %s)", self._proc.pid)
        threading.Thread(target=self._read_stdout, daemon=True).start()
        self._stderr_reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr_reader.start()
        self._send(_driver_bootstrap(), "starting the teams-bridge driver")
        answer = self._wait("hello", "starting the teams-bridge driver")
        result = answer.get("result")
        if not answer.get("ok") or not isinstance(result, dict):
            raise TransportError(f"the teams-bridge driver did not start: {answer!r}")
        self.hello = result
        return result

    def call(
        self,
        cmdlet: str,
        params: Mapping[str, Any] | None = None,
        *,
        select: Sequence[str] | None = None,
    ) -> list[Any]:
        """Run one cmdlet; its output objects, or the mapped exception for its error record."""
        what = describe(cmdlet, params)
        # json.dumps escapes non-ASCII: the request line survives any console code page.
        request: dict[str, Any] = {
            "id": str(next(self._ids)),
            "cmdlet": cmdlet,
            "params": dict(params or {}),
        }
        if select:
            request["select"] = list(select)
        started = time.monotonic()
        with self._turn:
            self._send(json.dumps(request), what)
            answer = self._wait(request["id"], what)
        log.debug(
            "%s: %s in %.2fs",
            what,
            "ok" if answer.get("ok") else "error",
            time.monotonic() - started,
        )
        for warning in answer.get("warnings") or ():
            log.warning("%s: %s", what, self.redact(str(warning)))
        if not answer.get("ok"):
            raise error_from_record(answer.get("error"), what, self.redact)
        result = answer.get("result")
        if result is None:
            return []
        return result if isinstance(result, list) else [result]

    def close(self, timeout: float = 10.0) -> None:
        """Close stdin (the driver's loop ends, pwsh exits); kill it if it lingers."""
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.stdin and not proc.stdin.closed:
                proc.stdin.close()
        except OSError:
            pass  # already gone: nothing left to tell it
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._dead = self._dead or "the pwsh session was closed"

    # ------------------------------------------------------------------ plumbing

    def _send(self, line: str, what: str) -> None:
        if self._dead:
            raise TransportError(f"cannot run {what}: {self._dead}")
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(line + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._crashed(what) from None

    def _wait(self, request_id: str, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                item = self._answers.get(timeout=max(remaining, 0.001))
            except queue.Empty:
                raise self._hung(what) from None
            if item is None:
                raise self._crashed(what)
            answer_id, text = item
            if answer_id != request_id:
                log.debug("pwsh: ignoring an answer to request %s", answer_id)
                continue
            try:
                answer = json.loads(text)
            except json.JSONDecodeError:
                raise TransportError(
                    f"pwsh answered {what} with text that is not JSON: {self.redact(text)[:200]}"
                ) from None
            if not isinstance(answer, dict):
                raise TransportError(f"pwsh answered {what} with {type(answer).__name__}")
            return answer

    def _hung(self, what: str) -> TransportError:
        self._kill()
        self._dead = f"pwsh did not answer {what} within {self.timeout:g}s and was stopped"
        return TransportError(
            f"{self._dead}; run the same cmdlet in pwsh by hand to see where it waits, or raise "
            "the timeout"
        )

    def _crashed(self, what: str) -> TransportError:
        assert self._proc is not None
        try:
            code: int | None = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._kill()
            code = None
        if self._stderr_reader is not None:
            self._stderr_reader.join(timeout=2)  # the process is gone: stderr is at its end
        tail = self.redact(" | ".join(self._stderr)) or "(nothing on stderr)"
        self._dead = f"pwsh exited (exit code {code}) while running {what}"
        return TransportError(f"{self._dead}; its last words: {tail}")

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        current: str | None = None
        body: list[str] = []
        for raw in self._proc.stdout:
            line = raw.rstrip("\r\n")
            # The marker may follow host output that lacked a newline ("WARNING: ...<<<...").
            start = line.find(_BEGIN) if current is None else -1
            if start >= 0 and line.endswith(">>>"):
                if line[:start].strip():
                    log.debug("pwsh: %s", self.redact(line[:start]))
                current, body = line[start + len(_BEGIN) : -3], []
            elif current is not None and line == f"{_END}{current}>>>":
                self._answers.put((current, "".join(body)))
                current = None
            elif current is not None:
                body.append(line)
            elif line.strip():
                log.debug("pwsh: %s", self.redact(line))
        self._answers.put(None)

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for raw in self._proc.stderr:
            line = raw.rstrip("\r\n")
            if line.strip():
                self._stderr.append(line)
                log.debug("pwsh stderr: %s", self.redact(line))


def error_from_record(
    record: Any, what: str, clean: Callable[[str], str] = lambda s: s
) -> BridgeError:
    """The exception for a PowerShell error record ``{"category", "message", "fqid"}``."""
    if not isinstance(record, dict):
        return TransportError(f"pwsh answered {what} with a failure but no error record")
    category = str(record.get("category") or "")
    fqid = str(record.get("fqid") or "")
    message = clean(str(record.get("message") or "(no message)"))
    text = f"{what}: {message}"
    if fqid.startswith("CommandNotFoundException"):
        return TransportError(
            f"{text}; the MicrosoftTeams module is missing or too old: {INSTALL_HINT}"
        )
    if fqid.startswith("Modules_"):
        return TransportError(f"{text}; {INSTALL_HINT}")
    if category == "ObjectNotFound":
        return NotFoundError(text, status=404)
    if category in ("ResourceExists", "ResourceBusy"):
        return ConflictError(text, status=409)
    if category == "PermissionDenied":
        return ForbiddenError(f"{text}; {ROLE_HINT}", status=403)
    if category in ("AuthenticationError", "SecurityError"):
        return UnauthorizedError(
            f"{text}; the access token was refused: check the app registration and "
            "that AZURE_TENANT_ID is the tenant you mean",
            status=401,
        )
    if category == "LimitsExceeded":
        return ThrottledError(f"{text}; the service is throttling: try again later", status=429)
    # The module's AutoRest functions report HTTP failures as NotSpecified/InvalidOperation
    # with the status only in the error id or the message ("Forbidden,Microsoft.Teams...").
    said = f"{fqid} {message}"
    if _FORBIDDEN_RE.search(said):
        return ForbiddenError(f"{text}; {ROLE_HINT}", status=403)
    if _UNAUTHORIZED_RE.search(said):
        return UnauthorizedError(
            f"{text}; the access token was refused: check the app registration and "
            "that AZURE_TENANT_ID is the tenant you mean",
            status=401,
        )
    if _THROTTLED_RE.search(said):
        return ThrottledError(f"{text}; the service is throttling: try again later", status=429)
    return ApiError(f"{text} ({category or 'no category'}, {fqid or 'no error id'})")


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
            # In this context: the run's scoped request observers see Graph's pages too.
            listing = pool.submit(contextvars.copy_context().run, graph.list_users)
            policies, rows, direct = self._read_pwsh()
            users = listing.result()
        directory = Directory()
        for user in users:
            directory.add_user(user)
        assignments: list[UserAssignment] = []
        for user, policy in direct:
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
        """Direct assignment of ``policy`` (None removes) to ``user_ids``, into ``result``; an
        error that stops it is raised with ``result`` attached (``BulkResult.attach_to``)."""
        user_ids = list(dict.fromkeys(user_ids))
        result.requested += len(user_ids)
        if not user_ids:
            return
        if len(user_ids) <= GRANT_ONE_BY_ONE_MAX:
            for uid in user_ids:
                result.write_requests += 1
                try:
                    self._call(
                        "Grant-CsTeamsMessagingPolicy", {"Identity": uid, "PolicyName": policy}
                    )
                except BridgeError as exc:
                    result.failures.append(UserFailure(uid, str(exc)))
                    result.chunks.append(ChunkResult((uid,), error=str(exc)))
                    if isinstance(exc, ForbiddenError | UnauthorizedError) or not isinstance(
                        exc, ApiError
                    ):
                        result.attach_to(exc)
                        raise
                else:
                    result.succeeded += 1
                    result.chunks.append(ChunkResult((uid,)))
            return
        label = policy or "(no direct policy)"
        batches = list(_chunks(user_ids, BATCH_SIZE))
        for wave_start in range(0, len(batches), BATCHES_IN_FLIGHT):
            wave = batches[wave_start : wave_start + BATCHES_IN_FLIGHT]
            submitted: list[tuple[str, list[str]]] = []
            batch: list[str] = []
            try:
                for i, batch in enumerate(wave, start=wave_start + 1):
                    out = self._call(
                        "New-CsBatchPolicyAssignmentOperation",
                        {
                            "PolicyType": POLICY_TYPE,
                            "PolicyName": policy,
                            "Identity": batch,
                            "OperationName": f"teams-bridge: {label} ({i}/{len(batches)})",
                        },
                    )
                    result.write_requests += 1
                    op_id = _operation_id(out)
                    result.operation_ids.append(op_id)
                    submitted.append((op_id, batch))
                    log.info("batch %s: %d users -> %s", op_id, len(batch), label)
                while submitted:
                    op_id, batch = submitted[0]
                    self._collect(op_id, batch, result)
                    submitted.pop(0)
            except BridgeError as exc:
                # The batch in hand failed (its submission, or reading its outcome); the others
                # of this wave were submitted and run on in the tenant, outcome not read.
                failed_op = submitted[0][0] if submitted and submitted[0][1] is batch else None
                result.chunks.append(
                    ChunkResult(
                        tuple(batch), failed_op, error=str(exc), unknown=failed_op is not None
                    )
                )
                for op_id, other in submitted:
                    if other is not batch:
                        result.chunks.append(ChunkResult(tuple(other), op_id, unknown=True))
                if failed_op is None:
                    result.failures.extend(UserFailure(uid, str(exc)) for uid in batch)
                result.attach_to(exc)
                raise

    def _collect(self, op_id: str, batch: list[str], result: BulkResult) -> None:
        deadline = time.monotonic() + self.batch_timeout
        while True:
            out = self._call("Get-CsBatchPolicyAssignmentOperation", {"Identity": op_id})
            status = out[0] if out and isinstance(out[0], dict) else {}
            overall = str(status.get("OverallStatus") or "")
            if overall.casefold() == "completed":
                break
            if time.monotonic() >= deadline:
                raise ApiError(
                    f"batch operation {op_id} is still {overall or 'not reported'} after "
                    f"{self.batch_timeout:g}s; it keeps running in the tenant: check it with "
                    f"Get-CsBatchPolicyAssignmentOperation -Identity {op_id} and run plan again"
                )
            self._sleep(self.poll_interval)
        states = {
            str(s.get("Id", "")).casefold(): s
            for s in status.get("UserState") or ()
            if isinstance(s, dict)
        }
        for uid in batch:
            state = states.get(uid.casefold())
            outcome = str(state.get("Result") or "") if state else ""
            if outcome.casefold() == "success":
                result.succeeded += 1
            else:
                result.failures.append(
                    UserFailure(
                        uid, outcome or f"batch operation {op_id} reported no result for this user"
                    )
                )
        result.chunks.append(ChunkResult(tuple(batch), op_id))


# --------------------------------------------------------------------------- doctor


def doctor_checks(
    pwsh: str = "pwsh", *, timeout: float = 60.0, cloud: str | None = None
) -> list[Check]:
    """Is pwsh on PATH, which PowerShell, which MicrosoftTeams module (without signing in),
    against what ``cloud`` needs (None: the configuration could not be read): the PowerShell
    transport's part of ``doctor``, as ``bridge.doctor.Check`` rows."""
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
    return [*checks, *(r.check() for r in requirements(hello, cloud))]


class Requirement(NamedTuple):
    """One version teams-bridge needs from the PowerShell side, and what pwsh reported."""

    name: str  # the doctor row: "PowerShell version", "MicrosoftTeams module"
    what: str  # in a sentence: "PowerShell (pwsh)", "the MicrosoftTeams PowerShell module"
    found: str | None  # None: not installed
    needed: tuple[int, ...]
    why: str  # "for ...": completes "teams-bridge needs 7.2 or later"
    fix: str

    @property
    def ok(self) -> bool:
        return self.found is not None and version_tuple(self.found) >= self.needed

    def check(self) -> Check:
        needed = _dotted(self.needed)
        if self.ok:
            return Check(self.name, True, f"{self.found} (minimum {needed}) {self.why}")
        found = f"{self.found} installed" if self.found else "not installed"
        return Check(
            self.name, False, f"{found}; teams-bridge needs {needed} or later {self.why}", self.fix
        )

    def error(self) -> str:
        found = f"version {self.found}" if self.found else "not installed"
        return (
            f"{self.what} is {found}; teams-bridge needs {_dotted(self.needed)} or later "
            f"{self.why}: {self.fix}"
        )


def requirements(hello: Mapping[str, Any], cloud: str | None) -> list[Requirement]:
    """PowerShell 7.2+, and the MicrosoftTeams module that signs in app-only in ``cloud``
    (4.7.1+; 5.0.1+ in GCC High and DoD; None: judged as commercial, both named), against the
    versions the driver's hello reported."""
    ps = hello.get("PSVersion")
    module = min_module_version(cloud)
    if cloud is None:
        sovereign = _dotted(MIN_MODULE_VERSION_SOVEREIGN)
        where = f"for app-only sign-in ({sovereign} in GCC High and DoD)"
    else:
        where = f"for app-only sign-in in the {_CLOUD_NAMES.get(cloud, cloud)} cloud"
    best = best_module(hello)
    return [
        Requirement(
            "PowerShell version",
            "PowerShell (pwsh)",
            str(ps) if ps else None,
            MIN_PWSH_VERSION,
            "for the MicrosoftTeams module, which supports nothing older since 6.3.0",
            PWSH_INSTALL_HINT,
        ),
        Requirement(
            "MicrosoftTeams module",
            "the MicrosoftTeams PowerShell module",
            best,
            module,
            where,
            UPDATE_HINT if best else INSTALL_HINT,
        ),
    ]


def min_module_version(cloud: str | None) -> tuple[int, ...]:
    """The oldest MicrosoftTeams that signs in app-only in ``cloud``."""
    return MIN_MODULE_VERSION_SOVEREIGN if cloud in SOVEREIGN_CLOUDS else MIN_MODULE_VERSION


def best_module(hello: Mapping[str, Any]) -> str | None:
    """The newest MicrosoftTeams version the hello lists, or None."""
    versions = [v for v in hello.get("MicrosoftTeams") or () if isinstance(v, str)]
    return max(versions, key=version_tuple, default=None)


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


# --------------------------------------------------------------------------- helpers


def version_tuple(text: str) -> tuple[int, ...]:
    """``"7.9.0"`` -> ``(7, 9, 0)``; a pre-release suffix is ignored."""
    parts = []
    for piece in text.split("-")[0].split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


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


def _operation_id(out: list[Any]) -> str:
    first = out[0] if out else None
    if isinstance(first, dict):
        first = first.get("OperationId")
    if not isinstance(first, str) or not first:
        raise InvalidResponseError(
            f"New-CsBatchPolicyAssignmentOperation returned no operation id: {out!r}"
        )
    return first


__all__ = [
    "Check",
    "GroupDirectory",
    "PowerShellBackend",
    "PwshSession",
    "doctor_checks",
    "error_from_record",
]
