"""Snapshots: the tenant's state saved as JSON for offline review, and read back with
``--snapshot FILE``. Also ``MemoryBackend``, a writable in-memory tenant for tests.

Snapshot format (version 1)::

    {
      "format": "teams-bridge-snapshot", "version": 1,
      "tenant_id": "<guid>", "domains": ["contoso.onmicrosoft.com"],
      "display_name": "Contoso Hospital", "default_domain": "contoso.org",   # optional
      "taken_at": "<ISO 8601>", "source": "rest",
      "policies": [ <policy objects as the service returned them: Identity "Tag:X", settings...> ],
      "group_assignments": [ {"GroupId", "GroupName", "PolicyName", "Rank"} ],
      "user_assignments": [ {"UserId", "UserPrincipalName", "PolicyName"} ],
      "groups": [ {"id", "displayName", "members": [<user ids>]} ],   # members optional
      "users": [ {"id", "userPrincipalName", "displayName", "department",
                  "attributes": {<roles.ATTRIBUTES name>: text or true/false}} ]  # optional
    }
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import catalogue, limits
from ..errors import NotFoundError, SnapshotError
from ..files import write_text_atomic
from ..roles import ACCOUNT_ENABLED, canonical_attribute
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
from ..yamlloc import (
    JsonFileError,
    decode_utf8,
    described,
    json_position,
    parse_json,
    shown,
    too_deep,
    too_nested,
)
from .base import BulkResult, ChunkResult, Wanted, WriteReceipt
from .graph import Organization

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
        "display_name": state.display_name,
        "default_domain": state.default_domain,
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
                **({"attributes": dict(u.attributes)} if u.attributes is not None else {}),
            }
            for _, u in sorted(state.directory.users.items())
        ],
    }


# Nesting no policy object as the service returns it comes near (Key.SchemaId.XName is 3 deep).
_MAX_POLICY_NESTING = 32


class _Bad(Exception):
    """A snapshot field that is missing, of the wrong type or out of range, at ``path``."""

    def __init__(self, path: tuple[Any, ...], message: str):
        super().__init__(message)
        self.path, self.message = path, message


def _field(obj: Any, path: tuple[Any, ...], key: str, kind: str, *, required: bool = True) -> Any:
    """``obj[key]`` checked: ``kind`` is "text" (non-empty), "text?" (text or null), "list"."""
    if not isinstance(obj, dict):
        raise _Bad(path, f"is {_what(obj)}, not an object")
    if key not in obj:
        if required:
            raise _Bad(path, f"has no {key!r}")
        return None
    value = obj[key]
    where = (*path, key)
    if kind == "text" and not (isinstance(value, str) and value):
        raise _Bad(where, f"is {_what(value)}, not text")
    if kind == "text?" and value is not None and not isinstance(value, str):
        raise _Bad(where, f"is {_what(value)}, not text or null")
    if kind == "list" and not isinstance(value, list):
        raise _Bad(where, f"is {_what(value)}, not a list")
    if kind == "object" and not isinstance(value, dict):
        raise _Bad(where, f"is {_what(value)}, not an object")
    return value


def _what(value: Any) -> str:
    return described(value, json_words=True)


def _items(data: dict[str, Any], key: str, *, required: bool) -> list[tuple[tuple[Any, ...], Any]]:
    """The entries of the list ``data[key]`` with their paths, each checked to be an object."""
    value = _field(data, (), key, "list", required=required) or []
    out = []
    for i, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise _Bad((key, i), f"is {_what(entry)}, not an object")
        out.append(((key, i), entry))
    return out


def snapshot_to_state(
    data: Any, source: str = "<snapshot>", text: str | None = None
) -> TenantState:
    """Parse a snapshot. Every field is checked for presence, type and range; the first that is
    wrong is a ``SnapshotError`` naming the file, the field and (given the file's ``text``) the
    line and column: never a traceback, never a smaller tenant."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SnapshotError(f'{source}: not a teams-bridge snapshot (no "format": "{FORMAT}")')
    version = data.get("version")
    if isinstance(version, bool) or version != VERSION:
        raise SnapshotError(
            f"{source}: snapshot version {version!r} is not supported "
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
        return _to_state(data, source)
    except _Bad as bad:
        pos = json_position(text, bad.path) if text is not None else None
        where = f"{source}:{pos[0]}:{pos[1]}" if pos else source
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in bad.path)
        raise SnapshotError(
            f"{where}: malformed snapshot entry: {field.lstrip('.') or 'the snapshot'} "
            f"{bad.message}; take the snapshot again with teams-bridge snapshot"
        ) from None


def _attributes(user: Any, path: tuple[Any, ...]) -> dict[str, Any] | None:
    """A user's role attributes (``roles.ATTRIBUTES`` names; text, or true/false for
    accountEnabled); None when the snapshot was taken without them."""
    attrs = _field(user, path, "attributes", "object", required=False)
    if attrs is None:
        return None
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        name = canonical_attribute(key) if isinstance(key, str) else None
        if name is None:
            raise _Bad((*path, "attributes", key), "is not a user attribute teams-bridge reads")
        if name == ACCOUNT_ENABLED:
            if not isinstance(value, bool):
                raise _Bad((*path, "attributes", key), f"is {_what(value)}, not true or false")
        elif not isinstance(value, str):
            raise _Bad((*path, "attributes", key), f"is {_what(value)}, not text")
        out[name] = value
    return out


def _to_state(data: dict[str, Any], source: str) -> TenantState:
    tenant_id = _field(data, (), "tenant_id", "text?", required=False)
    domains = _field(data, (), "domains", "list", required=False) or []
    for i, domain in enumerate(domains):
        if not isinstance(domain, str):
            raise _Bad(("domains", i), f"is {_what(domain)}, not text")
    directory = Directory()
    for path, u in _items(data, "users", required=False):
        directory.add_user(
            User(
                _field(u, path, "id", "text"),
                _field(u, path, "userPrincipalName", "text"),
                _field(u, path, "displayName", "text?", required=False),
                _field(u, path, "department", "text?", required=False),
                _attributes(u, path),
            )
        )
    for path, g in _items(data, "groups", required=False):
        members = _field(g, path, "members", "list", required=False)
        for i, member in enumerate(members or ()):
            if not isinstance(member, str):
                raise _Bad((*path, "members", i), f"is {_what(member)}, not a user id")
        directory.add_group(
            Group(
                _field(g, path, "id", "text"),
                _field(g, path, "displayName", "text?") or "",
                tuple(members) if members is not None else None,
            )
        )
    policies = []
    for path, p in _items(data, "policies", required=True):
        _field(p, path, "Identity", "text")
        deep = too_nested(p, _MAX_POLICY_NESTING)
        if deep is not None:
            raise _Bad((*path, *deep), f"is nested more than {_MAX_POLICY_NESTING} levels deep")
        policies.append(policy_from_service(p))
    groups = []
    for path, a in _items(data, "group_assignments", required=True):
        group_id = _field(a, path, "GroupId", "text")
        policy = _field(a, path, "PolicyName", "text")
        rank = _field(a, path, "Rank", "number")
        why = limits.RANK.problem(rank)
        if why is not None:
            raise _Bad((*path, "Rank"), f"is not a rank: {why}")
        name = _field(a, path, "GroupName", "text?", required=False)
        groups.append(
            GroupAssignment(
                group_id, bare_name(policy), int(rank), name or _group_name(directory, group_id)
            )
        )
    users = []
    for path, a in _items(data, "user_assignments", required=True):
        user_id = _field(a, path, "UserId", "text")
        policy = _field(a, path, "PolicyName", "text")
        upn = _field(a, path, "UserPrincipalName", "text?", required=False)
        if not upn and user_id in directory.users:
            upn = directory.users[user_id].upn
        users.append(UserAssignment(user_id, bare_name(policy), upn))
    state = TenantState.build(tenant_id, policies, groups, users, directory)
    state.domains = tuple(domains)
    state.display_name = _field(data, (), "display_name", "text?", required=False)
    state.default_domain = _field(data, (), "default_domain", "text?", required=False)
    state.observed_at = _taken_at(data.get("taken_at"), source)
    return state


# A snapshot taken on a machine whose clock runs a little ahead is still a snapshot.
_CLOCK_SKEW = dt.timedelta(days=1)


def _taken_at(value: Any, source: str) -> dt.datetime | None:
    """A snapshot's ``taken_at`` (UTC when it names no zone): reports describe the tenant as it
    was then, and history orders runs by it."""
    if value is None:
        return None
    try:
        taken = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        if taken.tzinfo is None:
            taken = taken.replace(tzinfo=dt.timezone.utc)
        # In UTC now: a time at the edge of the calendar (year 1 or 9999 with an offset)
        # cannot be, and would overflow later when a report or history converts it.
        taken = taken.astimezone(dt.timezone.utc)
    except (ValueError, OverflowError) as exc:
        raise SnapshotError(
            f"{source}: taken_at {shown(value)} is not an ISO 8601 time ({exc}); take the "
            "snapshot again with teams-bridge snapshot, or correct the time"
        ) from exc
    # History orders runs by this time: one from year 1 or 9999 would sort first or last forever.
    why = limits.time_problem(taken, dt.datetime.now(dt.timezone.utc), _CLOCK_SKEW)
    if why is not None:
        raise SnapshotError(
            f"{source}: taken_at {shown(value)} {why}; take the snapshot again with "
            "teams-bridge snapshot, or correct the time"
        )
    return taken


def _all_done(user_ids: Sequence[str]) -> BulkResult:
    """A bulk call carried out in one step (memory has no requests to fail part-way)."""
    n = len(user_ids)
    chunks = [ChunkResult(tuple(user_ids))] if n else []
    return BulkResult(requested=n, succeeded=n, write_requests=1 if n else 0, chunks=chunks)


def _group_name(directory: Directory, group_id: str) -> str | None:
    group = directory.groups.get(group_id)
    return group.display_name if group else None


def load_snapshot(path: str | os.PathLike[str]) -> TenantState:
    """Read a snapshot file. Anything wrong with it (unreadable, too large, not a regular file,
    not UTF-8, not JSON, NaN or Infinity, nested too deeply, a field missing or of the wrong
    type) is a ``SnapshotError`` naming the file and, where it can, the line and column."""
    p = Path(path)
    try:
        raw = limits.read_bounded(p, limits.SNAPSHOT_MAX_BYTES)
    except OSError as exc:
        raise SnapshotError(f"{p}: cannot read snapshot: {exc.strerror or exc}") from exc
    text, (line, column, byte) = decode_utf8(raw)
    if text is None:
        raise SnapshotError(
            f"{p}:{line}:{column}: not a snapshot: not UTF-8 text (byte 0x{byte:02x})"
        )
    try:
        data = parse_json(text)
    except JsonFileError as exc:
        raise SnapshotError(f"{exc.where(str(p))}: invalid JSON: {exc.message}") from None
    try:
        return snapshot_to_state(data, str(p), text)
    except RecursionError:
        raise SnapshotError(f"{too_deep(text).where(str(p))}: nested too deeply") from None


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
        if wanted.attributes and any(u.attributes is None for u in s.directory.users.values()):
            raise SnapshotError(
                f"{self.source}: the snapshot has no user attributes, which the desired file's "
                "roles need: take it again with this teams-bridge (teams-bridge snapshot reads "
                "them)"
            )
        state = TenantState.build(
            s.tenant_id,
            s.policies.values(),
            s.group_assignments.values(),
            s.user_assignments.values(),
            s.directory,
        )
        state.domains = s.domains
        state.observed_at = s.observed_at
        state.display_name, state.default_domain = s.display_name, s.default_domain
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

    def last_write(self) -> WriteReceipt:
        return WriteReceipt()

    def take_warnings(self) -> list[str]:
        return []

    def organization(self) -> Organization | None:
        s = self.state
        if not s.display_name:
            return None  # a snapshot taken before it recorded the name
        return Organization(s.tenant_id or "", s.display_name, s.domains, s.default_domain)

    def domains(self) -> tuple[str, ...]:
        return tuple(self.state.domains or ())

    def request_stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        return None
