"""The pwsh process for the PowerShell transport: one long-lived ``pwsh`` speaking the driver
protocol (see ``powershell``'s docstring), its error records mapped to the exception tree, and
the PowerShell and MicrosoftTeams versions teams-bridge needs (``requirements``: checked before
signing in, and reported by ``doctor``)."""

from __future__ import annotations

import base64
import importlib.resources
import itertools
import json
import logging
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from ..errors import (
    ApiError,
    BridgeError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    ThrottledError,
    TransportError,
    UnauthorizedError,
)
from ..settings import redact

log = logging.getLogger(__name__)

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
_BEGIN = "<<<teams-bridge:begin:"
_END = "<<<teams-bridge:end:"
# Parameters whose values may appear in logs and error messages (never AccessTokens).
_SHOWN_PARAMS = ("Identity", "GroupId", "PolicyName", "Name", "Filter")
_FORBIDDEN_RE = re.compile(r"\b(Forbidden|403)\b", re.IGNORECASE)
_UNAUTHORIZED_RE = re.compile(r"\b(Unauthorized|401)\b", re.IGNORECASE)
_THROTTLED_RE = re.compile(r"\b(TooManyRequests|429)\b", re.IGNORECASE)


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


def detached(platform: str = sys.platform) -> dict[str, Any]:
    """How pwsh is kept out of our process group's signals (see ``PwshSession.start``)."""
    if platform == "win32":
        # subprocess has the constant only on Windows.
        return {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200)}
    return {"start_new_session": True}


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
                # Windows ignores start_new_session; a new process group keeps the console's
                # Ctrl+C away from pwsh there.
                **detached(),
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
        return ConflictError(text, status=409, said_by=what)
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

    @property
    def detail(self) -> str:
        """What was found against what is needed, for a ``doctor`` row."""
        needed = _dotted(self.needed)
        if self.ok:
            return f"{self.found} (minimum {needed}) {self.why}"
        found = f"{self.found} installed" if self.found else "not installed"
        return f"{found}; teams-bridge needs {needed} or later {self.why}"

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


def version_tuple(text: str) -> tuple[int, ...]:
    """``"7.9.0"`` -> ``(7, 9, 0)``; a pre-release suffix is ignored."""
    parts = []
    for piece in text.split("-")[0].split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)
