"""The exception tree. Every error a user can cause is a ``BridgeError``; the CLI prints its
message and exits with its ``exit_code`` (always 1: exit code 2 means "changes or drift present"
and nothing else).

BridgeError
├── ConfigError            configuration / environment is missing or contradictory
├── DesiredStateError      the desired-state file is invalid (carries every problem found)
├── SnapshotError          a snapshot file cannot be read
├── PlanError              the plan cannot be made (unresolved names, unsafe deletes...)
│   └── UnsafePlanError    the plan is over a safety limit; ``--force`` lifts it
├── StalePlanError         a saved plan no longer matches the tenant
├── TenantMismatchError    the token's tenant is not the desired file's ``tenant:``
├── AuthError              a token could not be acquired (names the credential used)
│   └── LoginUnreachableError  the login endpoint could not be reached at all
├── ApiError               a request to a Microsoft API failed (after retries)
│   ├── UnauthorizedError  401
│   ├── ForbiddenError     403: almost always a missing directory role or permission
│   ├── NotFoundError      404
│   ├── ConflictError      409
│   ├── ThrottledError     429 still after every retry
│   ├── ServerError        5xx still after every retry, or the connection kept failing
│   └── InvalidResponseError  the body was not the JSON the API promises
├── TransportError         the PowerShell transport failed (pwsh missing, crashed, hung)
├── ApplyError             a change failed mid-apply (says what was done and what was not)
│   └── ApplyFailed        (bridge.apply) ``result``: the ApplyResult, what was done and not
└── LockError              another run holds the tenant's apply lock

Any ``BridgeError`` may carry ``partial``: what a call that stopped part-way had done (a bulk
call's ``BulkResult``), so its caller can still journal which users' requests went through.

Interrupted (a KeyboardInterrupt: not a BridgeError, nothing catches it by accident)
└── Terminated             SIGTERM (a scheduler stopping the job), handled like ^C
An ``Interrupted`` raised out of apply carries ``result``: what that apply had done.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple


class BridgeError(Exception):
    exit_code = 1
    # What a call that stopped part-way had done (a bulk call's ``BulkResult``), or None.
    partial: Any = None


class ConfigError(BridgeError):
    pass


class Location(NamedTuple):
    """Where something was written: ``file:line:column`` (1-based). A tuple, because a large
    desired file creates one per entry."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if not self.line:
            return self.file
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Problem:
    location: Location
    message: str
    severity: str = "error"  # "error" fails validation, "note" is only shown

    def __str__(self) -> str:
        return f"{self.location}: {self.severity}: {self.message}"


class DesiredStateError(BridgeError):
    """Carries every problem found, so one run shows all of them."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = sorted(problems, key=lambda p: p.location)
        errors = [p for p in self.problems if p.severity == "error"]
        lines = [str(p) for p in self.problems]
        super().__init__("\n".join(lines) + f"\n{len(errors)} error(s) in the desired-state file")


class SnapshotError(BridgeError):
    pass


class PlanError(BridgeError):
    pass


class UnsafePlanError(PlanError):
    pass


class StalePlanError(BridgeError):
    pass


class TenantMismatchError(BridgeError):
    pass


class AuthError(BridgeError):
    pass


class LoginUnreachableError(AuthError):
    """The login endpoint did not answer (refused, unresolved, timed out): the network or the
    endpoint, not the credential, is what to check."""


def connection_failure(exc: BaseException) -> str:
    """Why a connection failed, in a few words instead of urllib3's text (which repeats the URL
    and pool internals): for the messages of the HTTP choke point and of sign-in alike."""
    import requests

    text = repr(exc)
    if isinstance(exc, requests.exceptions.ProxyError):
        return "the proxy failed the connection"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connecting timed out"
    if isinstance(exc, requests.Timeout):
        return "it did not answer in time"
    if "NameResolution" in text or "getaddrinfo" in text or "not known" in text:
        return "its name could not be resolved"
    if "refused" in text.casefold():
        return "the connection was refused"
    if "reset" in text.casefold() or "RemoteDisconnected" in text or "aborted" in text:
        return "the connection was closed before an answer"
    return type(exc).__name__


class ApiError(BridgeError):
    """``hint``: what to do about it (a 403's role or permission), also kept apart so a report
    that lists the failure more than once says it once: ``brief`` is the message without it.
    ``said_by``: who answered, in the transport's words (``409 from Teams admin API``, or the
    cmdlet), so code above the transport can quote it without knowing the wire."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        correlation_id: str | None = None,
        url: str | None = None,
        hint: str | None = None,
        brief: str | None = None,
        said_by: str | None = None,
    ):
        self.status = status
        self.said_by = said_by
        self.correlation_id = correlation_id
        self.url = url
        self.hint = hint
        suffix = f" (correlation id {correlation_id})" if correlation_id else ""
        self.brief = (brief or message) + suffix
        super().__init__(message + suffix)


def brief(exc: BaseException) -> str:
    """``exc`` without its hint, for lines that are followed by the hint said once."""
    return exc.brief if isinstance(exc, ApiError) else str(exc)


class UnauthorizedError(ApiError):
    pass


class ForbiddenError(ApiError):
    pass


class NotFoundError(ApiError):
    pass


class ConflictError(ApiError):
    pass


class ThrottledError(ApiError):
    pass


class ServerError(ApiError):
    pass


class InvalidResponseError(ApiError):
    pass


class TransportError(BridgeError):
    pass


class ApplyError(BridgeError):
    pass


class LockError(BridgeError):
    pass


class Interrupted(KeyboardInterrupt):
    """^C (or SIGTERM: ``Terminated``) during a run; the process exits 128 + the signal.
    ``result``: what the interrupted apply had done (an ``ApplyResult``), when it was one."""

    exit_code = 130

    def __init__(self, message: str = "interrupted", result: Any = None):
        super().__init__(message)
        self.result = result


class Terminated(Interrupted):
    """SIGTERM (a scheduler stopping the job), handled like ^C; the process exits 128 + 15."""

    exit_code = 143
