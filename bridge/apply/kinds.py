"""What apply does per change kind, in one table: how a change is written (one request, or one
bulk call for a run of user changes) and how verification tells whether the service shows it.
Everything else about a change it asks the change itself (``describe``, ``data``, ``order``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import catalogue
from ..backends.base import Backend, BulkResult
from ..plan import (
    Change,
    CreatePolicy,
    DeletePolicy,
    RemoveGroupAssignment,
    RemoveUserAssignment,
    SetGroupAssignment,
    SetUserAssignment,
    UpdatePolicy,
)
from ..state import TenantState, is_global, policy_key
from .replace import GroupWrites

# A single write: returns why the change is pending rather than done (a 409 the group holds), or
# None when it is done.
Write = Callable[[GroupWrites, Any], str | None]
# A run of user changes in one backend call (the backend chunks), and the verb that says it.
BulkWrite = Callable[[Backend, Sequence[Any]], BulkResult]
Mismatch = Callable[[Any, TenantState, TenantState], str | None]


@dataclass(frozen=True)
class Kind:
    write: Write | BulkWrite
    mismatch: Mismatch  # what reads show instead of the change's outcome; None when they show it
    bulk: str | None = None  # the verb of a bulk write ("assign"); None: a single write


def _create(w: GroupWrites, c: CreatePolicy) -> None:
    w.backend.create_policy(c.name, c.settings)


def _update(w: GroupWrites, c: UpdatePolicy) -> None:
    w.backend.update_policy(c.name, {k: new for k, (_, new) in c.changes.items()})


def _delete(w: GroupWrites, c: DeletePolicy) -> None:
    w.backend.delete_policy(c.name)


def _unassign_group(w: GroupWrites, c: RemoveGroupAssignment) -> None:
    w.remove(c.group_id)


def _policy_shows(
    c: CreatePolicy | UpdatePolicy, want: TenantState, got: TenantState
) -> str | None:
    have = got.policy(c.name)
    expected = want.policy(c.name)
    if have is None or expected is None:
        return f"no policy {c.name}"
    names = c.settings if isinstance(c, CreatePolicy) else c.changes
    for name in names:
        if not catalogue.values_equal(name, have.settings.get(name), expected.settings.get(name)):
            return (
                f"{name} = {have.settings.get(name)!r} in policy {c.name}, "
                f"expected {expected.settings.get(name)!r}"
            )
    return None


def _deleted(c: DeletePolicy, want: TenantState, got: TenantState) -> str | None:
    # Deleting Global resets it to defaults: it is still there afterwards.
    if is_global(c.name) or got.policy(c.name) is None:
        return None
    return f"policy {c.name} still present"


def _group_shows(
    c: SetGroupAssignment | RemoveGroupAssignment, want: TenantState, got: TenantState
) -> str | None:
    have = got.group_assignments.get(c.group_id)
    expected = want.group_assignments.get(c.group_id)
    shows = f"policy {have.policy} at rank {have.rank}" if have else "no assignment"
    if expected is None:
        return None if have is None else f"it still shows {shows}"
    if (
        have is not None
        and policy_key(have.policy) == policy_key(expected.policy)
        and (have.rank == expected.rank)
    ):
        return None
    return f"it shows {shows}, expected policy {expected.policy} at rank {expected.rank}"


def _user_shows(
    c: SetUserAssignment | RemoveUserAssignment, want: TenantState, got: TenantState
) -> str | None:
    have = got.user_assignments.get(c.user_id)
    expected = want.user_assignments.get(c.user_id)
    if expected is None:
        return None if have is None else f"it still shows policy {have.policy}"
    if have is not None and policy_key(have.policy) == policy_key(expected.policy):
        return None
    return f"it shows {f'policy {have.policy}' if have else 'no direct assignment'}"


def _assign_group(w: GroupWrites, c: SetGroupAssignment) -> str | None:
    return w.add(c)


def _assign_users(b: Backend, step: Sequence[SetUserAssignment]) -> BulkResult:
    return b.assign_users([(c.user_id, c.policy) for c in step])


def _unassign_users(b: Backend, step: Sequence[RemoveUserAssignment]) -> BulkResult:
    return b.unassign_users([c.user_id for c in step])


KINDS: dict[type[Change], Kind] = {
    CreatePolicy: Kind(_create, _policy_shows),
    UpdatePolicy: Kind(_update, _policy_shows),
    SetGroupAssignment: Kind(_assign_group, _group_shows),
    SetUserAssignment: Kind(_assign_users, _user_shows, bulk="assign"),
    RemoveUserAssignment: Kind(_unassign_users, _user_shows, bulk="unassign"),
    RemoveGroupAssignment: Kind(_unassign_group, _group_shows),
    DeletePolicy: Kind(_delete, _deleted),
}


def kind_of(c: Change) -> Kind:
    try:
        return KINDS[type(c)]
    except KeyError:
        raise TypeError(f"unknown change {c!r}") from None
