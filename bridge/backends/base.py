"""The contract every transport implements (REST, PowerShell, a snapshot file, memory).

A backend does little: it reads the whole tenant state in as few calls as the APIs allow, and it
carries out one kind of write per method. Deciding *what* to change is ``plan.diff``'s job;
deciding *in what order* and *whether it worked* is ``apply``'s.

Names in, names out: policies are bare names (``Clinical``, never ``Tag:Clinical``); the
backend adds and strips wire prefixes. Every failure raises a ``BridgeError`` subclass; a read
that fails never returns "nothing".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..errors import BridgeError
from ..state import Group, GroupAssignment, TenantState

if TYPE_CHECKING:
    from .graph import Organization

# The policy type teams-bridge manages, as the Teams admin API and the MicrosoftTeams module
# both name it.
POLICY_TYPE = "TeamsMessagingPolicy"


@dataclass(frozen=True)
class Wanted:
    """The names the desired file uses, which ``read`` must resolve into ``TenantState.directory``
    (every group matching a display name, so ambiguity can be reported; every user by UPN or id).
    """

    groups: Sequence[str] = ()
    users: Sequence[str] = ()
    # User attributes the roles and rules use (``roles.ATTRIBUTES`` names), read with the
    # directory listing itself (no second pass); empty: none needed.
    attributes: Sequence[str] = ()


@dataclass(frozen=True)
class UserFailure:
    user_id: str
    message: str


@dataclass(frozen=True)
class ChunkResult:
    """One request (or one batch operation) of a bulk call and the users it carried.

    ``error``: the request failed, so every user of it failed (per-user failures of a request
    that went through are in ``BulkResult.failures``). ``unknown``: sent, but the call stopped
    before its outcome was read (a batch operation not polled to the end): the service may
    still carry it out; ``check`` says how an admin reads its outcome (the transport's words).
    """

    user_ids: tuple[str, ...]
    operation_id: str | None = None
    correlation_id: str | None = None
    error: str | None = None
    unknown: bool = False
    check: str | None = None


@dataclass
class BulkResult:
    """The outcome of a bulk assign or unassign, request by request in ``chunks`` (users in no
    chunk and not in ``failures`` were never sent).

    A backend that stops part-way (an error that every later request would repeat, such as a
    403, or a transport that died) raises that error with the partial result as its declared
    ``partial`` (``BridgeError.partial``), so the caller can still tell which users' requests
    went through.
    """

    requested: int = 0
    succeeded: int = 0
    failures: list[UserFailure] = field(default_factory=list)
    operation_ids: list[str] = field(default_factory=list)
    write_requests: int = 0
    chunks: list[ChunkResult] = field(default_factory=list)


@dataclass(frozen=True)
class WriteReceipt:
    """What the transport knows of the request it just sent: its correlation id, so a
    compliance reviewer can trace a change in Microsoft's logs (None where the transport has
    none: PowerShell's batch operations carry their ids in ``ChunkResult.operation_id``)."""

    correlation_id: str | None = None


def partial_result(exc: BaseException) -> BulkResult | None:
    """The partial ``BulkResult`` a bulk call stopped by ``exc`` had done, if any."""
    found = exc.partial if isinstance(exc, BridgeError) else None
    return found if isinstance(found, BulkResult) else None


@runtime_checkable
class Backend(Protocol):
    name: str

    def read(self, wanted: Wanted = Wanted()) -> TenantState:
        """The whole tenant state: policies, group assignments, direct user assignments, and the
        directory entries ``wanted`` names."""
        ...

    def create_policy(self, name: str, settings: Mapping[str, Any]) -> None: ...

    def update_policy(self, name: str, settings: Mapping[str, Any]) -> None:
        """Send only ``settings`` (the changed ones); the service merges."""
        ...

    def delete_policy(self, name: str) -> None: ...

    def add_group_assignment(self, group_id: str, policy: str, rank: int) -> None: ...

    def remove_group_assignment(self, group_id: str) -> None: ...

    def group_assignment(self, group_id: str) -> GroupAssignment | None:
        """The messaging policy assignment ``group_id`` holds as the service shows it now, or
        None when it holds none (a read that fails raises, as ``read`` does)."""
        ...

    def assign_users(self, assignments: Sequence[tuple[str, str]]) -> BulkResult:
        """Direct assignments ``(user id, policy name)``, in as few requests as the API allows."""
        ...

    def unassign_users(self, user_ids: Sequence[str]) -> BulkResult: ...

    def group_members(self, group_id: str) -> list[str]:
        """The user ids of ``group_id``'s direct members (for snapshots and the safety limit on
        the share of users a plan affects)."""
        ...

    def user_groups(self, user_id: str) -> list[Group]:
        """The groups ``user_id`` is a direct member of (for ``explain``)."""
        ...

    def last_write(self) -> WriteReceipt:
        """The request this thread sent last (a write, when called right after one)."""
        ...

    def take_warnings(self) -> list[str]:
        """The service warnings received since the last call (each already logged), in order;
        the next call returns only newer ones."""
        ...

    def organization(self) -> Organization | None:
        """The tenant's organization (display name, verified and default domains), one read;
        None when the source cannot tell (a snapshot taken without it)."""
        ...

    def domains(self) -> tuple[str, ...]:
        """The tenant's verified domains (for a domain ``tenant:`` guard); empty when the source
        cannot tell (a snapshot without them, a transport without a directory read)."""
        ...

    def request_stats(self) -> dict[str, Any]:
        """Requests made so far (``{"total", "retries", "throttled", "routes"}``); empty when
        the transport does not count them."""
        ...

    def close(self) -> None: ...
