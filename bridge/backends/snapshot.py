"""Snapshots: the tenant's state saved as JSON for offline review, and read back with
``--snapshot FILE``. Also ``MemoryBackend``, a writable in-memory tenant for tests.

Snapshot format (version 1)::

    {
      "format": "teams-bridge-snapshot", "version": 1,
      "tenant_id": "<guid>", "domains": ["contoso.onmicrosoft.com"],
      "taken_at": "<ISO 8601>", "source": "rest",
      "policies": [ <policy objects as the service returned them: Identity "Tag:X", settings...> ],
      "group_assignments": [ {"GroupId", "GroupName", "PolicyName", "Rank"} ],
      "user_assignments": [ {"UserId", "UserPrincipalName", "PolicyName"} ],
      "groups": [ {"id", "displayName", "members": [<user ids>]} ],   # members optional
      "users": [ {"id", "userPrincipalName", "displayName", "department"} ]
    }
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import catalogue
from ..errors import NotFoundError, SnapshotError
from ..files import write_text_atomic
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
    wire_identity,
)
from .base import BulkResult, ChunkResult, Wanted

FORMAT = "teams-bridge-snapshot"
_NOTHING = Wanted()
VERSION = 1


def policy_from_service(obj: Mapping[str, Any]) -> Policy:
    """A ``Policy`` from an object as the Teams admin API (or the module) returns it."""
    identity = obj.get("Identity")
    if not isinstance(identity, str) or not identity:
        raise ValueError("policy object has no Identity")
    return Policy(bare_name(identity), catalogue.settings_from_service(obj), raw=dict(obj))


def policy_to_service(policy: Policy) -> dict[str, Any]:
    if policy.raw is not None:
        return dict(policy.raw)
    return {"Identity": wire_identity(policy.name), **policy.settings}


def state_to_snapshot(state: TenantState, source: str, now: dt.datetime | None = None) -> dict:
    now = now or dt.datetime.now(dt.timezone.utc)
    return {
        "format": FORMAT,
        "version": VERSION,
        "tenant_id": state.tenant_id,
        "domains": list(state.domains),
        "taken_at": now.isoformat(timespec="seconds"),
        "source": source,
        "policies": [policy_to_service(state.policies[k]) for k in sorted(state.policies)],
        "group_assignments": [
            {
                "GroupId": g.group_id,
                "GroupName": g.group_name,
                "PolicyName": g.policy,
                "Rank": g.rank,
            }
            for g in state.ranked_groups()
        ],
        "user_assignments": [
            {"UserId": u.user_id, "UserPrincipalName": u.upn, "PolicyName": u.policy}
            for _, u in sorted(state.user_assignments.items())
        ],
        "groups": [
            {
                "id": g.id,
                "displayName": g.display_name,
                **({"members": list(g.members)} if g.members is not None else {}),
            }
            for _, g in sorted(state.directory.groups.items())
        ],
        "users": [
            {
                "id": u.id,
                "userPrincipalName": u.upn,
                "displayName": u.display_name,
                "department": u.department,
            }
            for _, u in sorted(state.directory.users.items())
        ],
    }


def snapshot_to_state(data: Any, source: str = "<snapshot>") -> TenantState:
    """Parse a snapshot; every malformed entry is reported with its place in the file."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SnapshotError(f'{source}: not a teams-bridge snapshot (no "format": "{FORMAT}")')
    if data.get("version") != VERSION:
        raise SnapshotError(
            f"{source}: snapshot version {data.get('version')!r} is not supported "
            f"(this teams-bridge reads version {VERSION})"
        )
    missing = [k for k in ("policies", "group_assignments", "user_assignments") if k not in data]
    if missing:
        # A section left out must not read as "the tenant has none" (false drift).
        raise SnapshotError(
            f"{source}: the snapshot has no {', '.join(missing)} section(s); take it again with "
            "teams-bridge snapshot"
        )
    try:
        directory = Directory()
        for u in data.get("users", []):
            directory.add_user(
                User(u["id"], u["userPrincipalName"], u.get("displayName"), u.get("department"))
            )
        for g in data.get("groups", []):
            members = g.get("members")
            directory.add_group(
                Group(g["id"], g["displayName"], tuple(members) if members is not None else None)
            )
        policies = [policy_from_service(p) for p in data["policies"]]
        groups = [
            GroupAssignment(
                a["GroupId"],
                bare_name(a["PolicyName"]),
                int(a["Rank"]),
                a.get("GroupName") or _group_name(directory, a["GroupId"]),
            )
            for a in data["group_assignments"]
        ]
        users = []
        for a in data["user_assignments"]:
            upn = a.get("UserPrincipalName")
            if not upn and a["UserId"] in directory.users:
                upn = directory.users[a["UserId"]].upn
            users.append(UserAssignment(a["UserId"], bare_name(a["PolicyName"]), upn))
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"{source}: malformed snapshot entry ({exc!r})") from exc
    state = TenantState.build(data.get("tenant_id"), policies, groups, users, directory)
    state.domains = tuple(data.get("domains", ()))
    state.observed_at = _taken_at(data.get("taken_at"), source)
    return state


def _taken_at(value: Any, source: str) -> dt.datetime | None:
    """A snapshot's ``taken_at`` (UTC when it names no zone): reports describe the tenant as it
    was then, and history orders runs by it."""
    if value is None:
        return None
    try:
        taken = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise SnapshotError(
            f"{source}: taken_at {value!r} is not an ISO 8601 time ({exc}); take the snapshot "
            "again with teams-bridge snapshot, or correct the time"
        ) from exc
    return taken if taken.tzinfo else taken.replace(tzinfo=dt.timezone.utc)


def _all_done(user_ids: Sequence[str]) -> BulkResult:
    """A bulk call carried out in one step (memory has no requests to fail part-way)."""
    n = len(user_ids)
    chunks = [ChunkResult(tuple(user_ids))] if n else []
    return BulkResult(requested=n, succeeded=n, write_requests=1 if n else 0, chunks=chunks)


def _group_name(directory: Directory, group_id: str) -> str | None:
    group = directory.groups.get(group_id)
    return group.display_name if group else None


def load_snapshot(path: str | os.PathLike[str]) -> TenantState:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SnapshotError(f"{p}: cannot read snapshot: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SnapshotError(f"{p}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from exc
    return snapshot_to_state(data, str(p))


def write_snapshot(state: TenantState, path: str | os.PathLike[str], source: str) -> None:
    """Write atomically (a half-written snapshot would be read back as a smaller tenant); a
    path that cannot be written is a ``BridgeError`` naming it, with no temporary file left.
    Private (0600): it lists every user's assignment."""
    text = json.dumps(state_to_snapshot(state, source), indent=2) + "\n"
    write_text_atomic(path, text, private=True)


class MemoryBackend:
    """A tenant held in memory, with the service's behaviour for writes (``Tag:``-free names,
    case-insensitive identities, rank renumbering). Reads from a snapshot use it read-only."""

    name = "snapshot"

    def __init__(self, state: TenantState, *, read_only: bool = False, source: str = "memory"):
        self.state = state
        self.read_only = read_only
        self.source = source
        self.writes: list[tuple[str, tuple[Any, ...]]] = []

    def read(self, wanted: Wanted = _NOTHING) -> TenantState:
        s = self.state
        state = TenantState.build(
            s.tenant_id,
            s.policies.values(),
            s.group_assignments.values(),
            s.user_assignments.values(),
            s.directory,
        )
        state.domains = s.domains
        state.observed_at = s.observed_at
        return state

    # ------------------------------------------------------------------ writes

    def _write(self, op: str, *args: Any) -> None:
        if self.read_only:
            raise SnapshotError(
                f"{self.source}: a snapshot is read-only; apply needs a tenant (drop --snapshot)"
            )
        self.writes.append((op, args))

    def create_policy(self, name: str, settings: Mapping[str, Any]) -> None:
        self._write("create_policy", name, dict(settings))
        self.state.policies[policy_key(name)] = Policy(bare_name(name), dict(settings))

    def update_policy(self, name: str, settings: Mapping[str, Any]) -> None:
        self._write("update_policy", name, dict(settings))
        old = self.state.policies.get(policy_key(name))
        if old is None:
            raise NotFoundError(f"policy {name} not found", status=404)
        merged = {**old.settings, **settings}
        self.state.policies[old.key] = Policy(old.name, merged)

    def delete_policy(self, name: str) -> None:
        self._write("delete_policy", name)
        if self.state.policies.pop(policy_key(name), None) is None:
            raise NotFoundError(f"policy {name} not found", status=404)

    def _renumber(self, order: list[str], assignments: dict[str, GroupAssignment]) -> None:
        self.state.group_assignments = {
            gid: GroupAssignment(gid, assignments[gid].policy, i + 1, assignments[gid].group_name)
            for i, gid in enumerate(order)
        }

    def add_group_assignment(self, group_id: str, policy: str, rank: int) -> None:
        self._write("add_group_assignment", group_id, policy, rank)
        order = [g.group_id for g in self.state.ranked_groups() if g.group_id != group_id]
        current = dict(self.state.group_assignments)
        name = _group_name(self.state.directory, group_id)
        current[group_id] = GroupAssignment(group_id, bare_name(policy), rank, name)
        order.insert(max(0, min(rank - 1, len(order))), group_id)
        self._renumber(order, current)

    def remove_group_assignment(self, group_id: str) -> None:
        self._write("remove_group_assignment", group_id)
        if group_id not in self.state.group_assignments:
            raise NotFoundError(f"group {group_id} has no messaging policy assignment", status=404)
        order = [g.group_id for g in self.state.ranked_groups() if g.group_id != group_id]
        self._renumber(order, self.state.group_assignments)

    def group_assignment(self, group_id: str) -> GroupAssignment | None:
        return self.state.group_assignments.get(group_id)

    def assign_users(self, assignments: Sequence[tuple[str, str]]) -> BulkResult:
        self._write("assign_users", tuple(assignments))
        for uid, policy in assignments:
            user = self.state.directory.users.get(uid)
            self.state.user_assignments[uid] = UserAssignment(
                uid, bare_name(policy), user.upn if user else None
            )
        return _all_done([uid for uid, _ in assignments])

    def unassign_users(self, user_ids: Sequence[str]) -> BulkResult:
        self._write("unassign_users", tuple(user_ids))
        for uid in user_ids:
            self.state.user_assignments.pop(uid, None)
        return _all_done(user_ids)

    def group_members(self, group_id: str) -> list[str]:
        group = self.state.directory.groups.get(group_id)
        if group is None or group.members is None:
            raise SnapshotError(
                f"{self.source}: the members of group {group_id} are not in this snapshot"
            )
        return list(group.members)

    def user_groups(self, user_id: str) -> list[Group]:
        groups = self.state.directory.groups
        # Membership not saved is unknown, not "not a member": a group holding an assignment
        # without its members would make explain answer Global with confidence.
        unread = sorted(
            (groups[gid].display_name if gid in groups else gid)
            for gid in self.state.group_assignments
            if gid not in groups or groups[gid].members is None
        )
        if unread:
            shown = ", ".join(unread[:5]) + (
                f" and {len(unread) - 5} more" if len(unread) > 5 else ""
            )
            raise SnapshotError(
                f"{self.source}: the snapshot has no group members for {len(unread)} group(s) "
                f"holding a messaging policy assignment ({shown}); it was taken with an older "
                "teams-bridge or without members: take it again with teams-bridge snapshot"
            )
        return [g for g in groups.values() if g.members is not None and user_id in g.members]

    def close(self) -> None:
        return None
