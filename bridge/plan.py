"""Where a change is decided: ``diff(current, desired) -> Plan``. ``diff`` is pure: no I/O,
deterministic order, so a plan can be reviewed, saved, counted and compared. The change kinds
live in ``changes``, the safety checks in ``safety``; both are re-exported here.

Plan order is the order apply executes, chosen so no user is ever pointed at a policy that does
not exist: create/update policies, set group assignments, set direct user assignments, remove
user assignments, remove group assignments, delete policies.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from . import catalogue
from .changes import (  # noqa: F401 (re-exported: plan was their home)
    CHANGE_KINDS,
    Change,
    CreatePolicy,
    DeletePolicy,
    RemoveGroupAssignment,
    RemoveUserAssignment,
    SetGroupAssignment,
    SetUserAssignment,
    UpdatePolicy,
    change_from_data,
)
from .changes import REGENERATE as _REGENERATE
from .errors import PlanError
from .roles import MissingAttributes, RoleOutcome
from .roles import decide as decide_roles
from .safety import (  # noqa: F401 (re-exported: plan was their home)
    CLINICAL_OFF,
    SafetyReview,
    Simulation,
    policies_in_use,
    share_over_limit,
    simulate,
    user_count,
)
from .state import (
    BUILTIN_POLICIES,
    MAX_GROUP_ASSIGNMENTS,
    DesiredGroupAssignment,
    DesiredState,
    DesiredUserAssignment,
    SafetyLimits,
    TenantState,
    User,
    is_global,
    policy_key,
)

PLAN_SCHEMA_VERSION = 1
C = TypeVar("C", bound="Change")

# --------------------------------------------------------------------------- plan


def state_checksum(state: TenantState) -> str:
    """A checksum of everything a plan depends on, to refuse a saved plan that went stale."""
    h = hashlib.sha256()
    h.update(f"t\0{(state.tenant_id or '').casefold()}\n".encode())
    for key in sorted(state.policies):
        p = state.policies[key]
        h.update(json.dumps([p.name, dict(p.settings)], sort_keys=True, default=str).encode())
    for g in state.ranked_groups():
        h.update(f"g\0{g.group_id}\0{policy_key(g.policy)}\0{g.rank}\n".encode())
    for uid in sorted(state.user_assignments):
        h.update(f"u\0{uid}\0{policy_key(state.user_assignments[uid].policy)}\n".encode())
    return h.hexdigest()


@dataclass
class Plan:
    changes: list[Change]
    tenant_id: str | None = None
    state_checksum: str = ""
    desired_sha256: str = ""
    notes: list[str] = field(default_factory=list)
    # The desired file's safety limits, kept in a saved plan so 'apply --plan' honours them.
    safety: SafetyLimits = field(default_factory=SafetyLimits)
    # What assignments.roles decided (views group the user changes by role); None: no roles.
    roles: RoleOutcome | None = field(default=None, compare=False)

    def __bool__(self) -> bool:
        return bool(self.changes)

    def __len__(self) -> int:
        return len(self.changes)

    def of(self, *kinds: type[C]) -> list[C]:
        return [c for c in self.changes if isinstance(c, kinds)]

    @property
    def summary(self) -> dict[str, int]:
        counts = {"+": 0, "~": 0, "-": 0}
        for c in self.changes:
            counts[c.symbol] += 1
        return {"add": counts["+"], "change": counts["~"], "destroy": counts["-"]}

    @property
    def data(self) -> dict[str, Any]:
        """The plan's stable JSON form (``plan --format json``, ``plan --out``)."""
        return {
            "schema_version": PLAN_SCHEMA_VERSION,
            "tenant_id": self.tenant_id,
            "state_checksum": self.state_checksum,
            "desired_sha256": self.desired_sha256,
            "summary": self.summary,
            "changes": [c.data() for c in self.changes],
            "notes": list(self.notes),
            "safety": dataclasses.asdict(self.safety),
            **(self.roles.data() if self.roles is not None else {}),
        }

    @classmethod
    def from_data(cls, d: Mapping[str, Any]) -> Plan:
        if d.get("schema_version") != PLAN_SCHEMA_VERSION:
            raise PlanError(
                f"saved plan has schema version {d.get('schema_version')!r}; this teams-bridge "
                f"reads version {PLAN_SCHEMA_VERSION}: run plan again"
            )
        changes = d.get("changes", [])
        if not isinstance(changes, list):
            raise PlanError(f"the saved plan's changes are not a list: {_REGENERATE}")
        return cls(
            changes=[change_from_data(c) for c in changes],
            tenant_id=d.get("tenant_id"),
            state_checksum=d.get("state_checksum", ""),
            desired_sha256=d.get("desired_sha256", ""),
            notes=list(d.get("notes", [])),
            safety=_safety_from_data(d.get("safety")),
        )

    # ---------------------------------------------------------------- safety (see safety.py)

    def affected_users(self, current: TenantState) -> set[str]:
        """User ids whose *effective* policy this plan changes (``SafetyReview.moved``)."""
        return SafetyReview(self, current).moved

    def policy_moves(self, current: TenantState) -> dict[str, tuple[str, str]]:
        """user id -> (policy before, policy after) (``SafetyReview.moves``)."""
        return SafetyReview(self, current).moves

    def unsafe_reasons(self, current: TenantState, limits: SafetyLimits) -> list[str]:
        """Every safety limit this plan is over, with the numbers (``SafetyReview.reasons``);
        to check against more than one set of limits, make one ``SafetyReview``."""
        return SafetyReview(self, current).reasons(limits)

    def raise_if_unsafe(self, current: TenantState, limits: SafetyLimits, force: bool) -> None:
        SafetyReview(self, current).raise_if_unsafe(limits, force)


def _safety_from_data(data: Any) -> SafetyLimits:
    if not isinstance(data, dict):
        return SafetyLimits()
    known = {f.name for f in dataclasses.fields(SafetyLimits)}
    try:
        return SafetyLimits(**{k: v for k, v in data.items() if k in known})
    except TypeError as exc:
        raise PlanError(f"saved plan has unreadable safety limits: {exc}") from exc


# --------------------------------------------------------------------------- diff


def diff(current: TenantState, desired: DesiredState) -> Plan:
    """The changes that turn ``current`` into what ``desired`` asks for. Pure and deterministic.

    Raises ``PlanError`` (listing every problem) when names cannot be resolved or a deletion would
    leave assignments pointing at a missing policy.
    """
    problems: list[str] = []
    policy_changes, deletes = _diff_policies(current, desired)
    group_sets, group_removes = _diff_groups(current, desired, problems)
    roles: list[RoleOutcome] = []
    user_sets, user_removes = _diff_users(current, desired, problems, roles)

    deleted = {policy_key(d.name) for d in deletes}
    if deleted:
        removed_groups = {c.group_id for c in group_removes}
        reassigned_groups = {c.group_id: c.policy for c in group_sets}
        for g in current.ranked_groups():
            final = reassigned_groups.get(g.group_id, g.policy)
            if g.group_id not in removed_groups and policy_key(final) in deleted:
                problems.append(
                    f"policy {final} is to be deleted but group {g.group_name or g.group_id} "
                    "is still assigned to it: remove or change that assignment in the file"
                )
        removed_users = {c.user_id for c in user_removes}
        reassigned_users = {c.user_id: c.policy for c in user_sets}
        stuck = [
            u.upn or u.user_id
            for u in current.user_assignments.values()
            if u.user_id not in removed_users
            and policy_key(reassigned_users.get(u.user_id, u.policy)) in deleted
        ]
        if stuck:
            shown = ", ".join(sorted(stuck)[:10]) + (" ..." if len(stuck) > 10 else "")
            problems.append(
                f"{len(stuck)} user(s) are still directly assigned to a policy to be deleted "
                f"({shown}): assign them elsewhere, or switch on prune.user_assignments"
            )
    if problems:
        raise PlanError("cannot make a plan:\n  - " + "\n  - ".join(problems))

    changes: list[Change] = [
        *policy_changes,
        *group_sets,
        *user_sets,
        *user_removes,
        *group_removes,
        *deletes,
    ]
    return Plan(
        changes=changes,
        tenant_id=current.tenant_id,
        state_checksum=state_checksum(current),
        desired_sha256=desired.sha256,
        safety=desired.safety,
        notes=roles[0].warnings() if roles else [],
        roles=roles[0] if roles else None,
    )


def _diff_policies(
    current: TenantState, desired: DesiredState
) -> tuple[list[Change], list[DeletePolicy]]:
    changes: list[Change] = []
    deletes: list[DeletePolicy] = []
    for key in sorted(desired.policies, key=lambda k: (k != "global", k)):
        want = desired.policies[key]
        have = current.policies.get(key)
        if want.absent:
            if have is not None:
                deletes.append(DeletePolicy(have.name))
            continue
        if have is None:
            if is_global(want.name):
                # Global always exists; a snapshot without it still gets its settings written.
                changes.append(
                    UpdatePolicy("Global", {k: (None, v) for k, v in want.settings.items()})
                )
            else:
                changes.append(CreatePolicy(want.name, dict(want.settings)))
            continue
        delta = {}
        for name, value in want.settings.items():
            # A setting under extra: is sent with the service's spelling when it has one, so a
            # case difference neither drifts forever nor creates a second setting.
            if name not in have.settings and catalogue.lookup(name) is None:
                name = _service_spelling(have.settings, name)
            if not catalogue.values_equal(name, have.settings.get(name), value):
                delta[name] = (have.settings.get(name), value)
        if delta:
            changes.append(UpdatePolicy(have.name, delta))
    if desired.prune.policies:
        for key in sorted(current.policies):
            if key not in desired.policies and key not in BUILTIN_POLICIES:
                deletes.append(DeletePolicy(current.policies[key].name))
    return changes, deletes


def _service_spelling(settings: Mapping[str, Any], name: str) -> str:
    folded = name.casefold()
    return next((k for k in settings if k.casefold() == folded), name)


def _resolve_group(current: TenantState, ref: str, problems: list[str]) -> str | None:
    found = current.directory.groups_by_ref(ref)
    if len(found) == 1:
        return found[0].id
    if not found:
        # A group deleted from the directory can still hold an assignment (an orphan): its id
        # is enough to remove or replace that assignment.
        orphan = _orphan_group(current, ref)
        if orphan is not None:
            return orphan
        if ref in current.directory.searched_groups:
            problems.append(f"no group named or with id {ref!r} in the tenant")
        else:
            problems.append(
                f"group {ref!r} is not in the state that was read (a snapshot holds only the "
                "groups it was taken with; against the tenant: no such group)"
            )
    else:
        ids = ", ".join(f"{g.display_name} ({g.id})" for g in sorted(found, key=lambda g: g.id))
        problems.append(
            f"group name {ref!r} matches {len(found)} groups: {ids}; use the object id instead"
        )
    return None


def _orphan_group(current: TenantState, ref: str) -> str | None:
    """The id of an assigned group missing from the directory that ``ref`` names by id."""
    folded = ref.casefold()
    return next(
        (
            gid
            for gid in current.group_assignments
            if gid.casefold() == folded and gid not in current.directory.groups
        ),
        None,
    )


def _diff_groups(
    current: TenantState, desired: DesiredState, problems: list[str]
) -> tuple[list[SetGroupAssignment], list[RemoveGroupAssignment]]:
    # Desired precedence order: by rank as written, ties by declaration order.
    wanted: list[tuple[str, str, str]] = []  # (group id, name, policy) in precedence order
    absent: set[str] = set()
    written_rank: dict[str, int] = {}
    seen: dict[str, DesiredGroupAssignment] = {}
    ordered = sorted(enumerate(desired.group_assignments), key=lambda e: (e[1].rank, e[0]))
    for _, ga in ordered:
        gid = _resolve_group(current, ga.group, problems)
        if gid is None:
            continue
        if gid in seen:
            problems.append(
                f"{ga.location}: group {ga.group!r} is the same group as {seen[gid].group!r} "
                f"({seen[gid].location}); a group holds one messaging policy: keep one entry"
            )
            continue
        seen[gid] = ga
        written_rank[gid] = ga.rank
        group = current.directory.groups.get(gid)
        name = group.display_name if group else current.group_assignments[gid].group_name or gid
        if ga.absent:
            absent.add(gid)
        else:
            wanted.append((gid, name, ga.policy))

    sim = [g.group_id for g in current.ranked_groups()]  # the service's order as it will evolve
    have = current.group_assignments
    keep = _longest_ordered_subset([gid for gid, _, _ in wanted if gid in have], sim)
    sets: list[SetGroupAssignment] = []
    placed: list[str] = []
    wanted_ids = {gid for gid, _, _ in wanted}
    for gid, name, policy in wanted:
        existing = have.get(gid)
        same_policy = existing is not None and policy_key(existing.policy) == policy_key(policy)
        if gid in keep and same_policy:
            placed.append(gid)
            continue
        if gid in sim:
            sim.remove(gid)
        if placed:
            pos = sim.index(placed[-1]) + 1
        else:
            # First in precedence. Ranks compare by order among the declared groups only, so any
            # place above the other declared groups is right; when the group has to be (re)added
            # anyway, the rank written in the file decides among the undeclared ones.
            declared_at = [i for i, g in enumerate(sim) if g in wanted_ids]
            pos = min([*declared_at, written_rank[gid] - 1, len(sim)])
        sim.insert(pos, gid)
        placed.append(gid)
        sets.append(
            SetGroupAssignment(gid, name, _policy_name(current, desired, policy), pos + 1, existing)
        )

    removes: list[RemoveGroupAssignment] = []
    for g in current.ranked_groups():
        gone = g.group_id in absent or (
            desired.prune.group_assignments and g.group_id not in wanted_ids
        )
        if gone and g.group_id not in wanted_ids:
            removes.append(RemoveGroupAssignment(g.group_id, g.group_name, g.policy, g.rank))
    held = len(sim) - len(removes)
    if held > MAX_GROUP_ASSIGNMENTS and sets:
        # Apply would fail midway, at the first assignment past the limit.
        problems.append(
            f"after this plan the tenant would hold {held} group assignments of messaging "
            f"policies, over the service's limit of {MAX_GROUP_ASSIGNMENTS}: remove some "
            "(ensure: absent, or prune: group_assignments)"
        )
    return sets, removes


def _longest_ordered_subset(wanted: list[str], current_order: list[str]) -> set[str]:
    """The largest set of ``wanted`` (desired order) already in the same relative order in
    ``current_order``: those need not move (longest increasing subsequence, O(n log n))."""
    pos = {gid: i for i, gid in enumerate(current_order)}
    seq = [pos[g] for g in wanted]
    tails: list[int] = []  # tails[k] = index into seq of the smallest tail of a run of length k+1
    tail_values: list[int] = []  # seq[tails[k]], kept alongside for bisect
    prev = [-1] * len(seq)
    for i, value in enumerate(seq):
        k = bisect.bisect_left(tail_values, value)
        if k > 0:
            prev[i] = tails[k - 1]
        if k == len(tails):
            tails.append(i)
            tail_values.append(value)
        else:
            tails[k] = i
            tail_values[k] = value
    keep: set[str] = set()
    i = tails[-1] if tails else -1
    while i >= 0:
        keep.add(wanted[i])
        i = prev[i]
    return keep


def _policy_name(current: TenantState, desired: DesiredState, name: str) -> str:
    """The spelling to send: the desired file's, else the tenant's, else as written."""
    want = desired.policy(name)
    if want is not None:
        return want.name
    have = current.policy(name)
    return have.name if have else name


def _diff_users(
    current: TenantState,
    desired: DesiredState,
    problems: list[str],
    roles_out: list[RoleOutcome] | None = None,
) -> tuple[list[SetUserAssignment], list[RemoveUserAssignment]]:
    sets: list[SetUserAssignment] = []
    removes: list[RemoveUserAssignment] = []
    directory = current.directory
    declared: set[str] = set()
    seen_users: dict[str, DesiredUserAssignment] = {}
    unknown: list[str] = []
    orphans: dict[str, str] | None = None  # ids and UPNs of assigned users not in the directory
    for ua in desired.user_assignments:
        user = directory.user_by_ref(ua.user)
        if user is None:
            # A user gone from the directory can still hold a direct assignment (an orphan):
            # found by the id (or the UPN) that assignment carries.
            if orphans is None:
                orphans = {}
                for a in current.user_assignments.values():
                    if a.user_id not in directory.users:
                        if a.upn:
                            orphans[a.upn.casefold()] = a.user_id
                        orphans[a.user_id.casefold()] = a.user_id
            oid = orphans.get(ua.user.casefold())
            if oid is not None:
                user = User(oid, current.user_assignments[oid].upn or oid)
        if user is None:
            unknown.append(ua.user)
            continue
        if user.id in declared:
            first = seen_users[user.id]
            problems.append(
                f"{ua.location}: user {ua.user!r} is the same user as {first.user!r} "
                f"({first.location}): keep one entry"
            )
            continue
        declared.add(user.id)
        seen_users[user.id] = ua
        existing = current.user_assignments.get(user.id)
        if ua.absent or ua.policy is None:
            if existing is not None:
                removes.append(RemoveUserAssignment(user.id, user.upn, existing.policy))
            continue
        if existing is None or policy_key(existing.policy) != policy_key(ua.policy):
            sets.append(
                SetUserAssignment(
                    user.id,
                    user.upn,
                    _policy_name(current, desired, ua.policy),
                    existing.policy if existing else None,
                )
            )
    if unknown:
        shown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        problems.append(f"{len(unknown)} user(s) not found in the tenant: {shown}")
    if desired.roles:
        # Roles decide everyone users: entries do not (DESIGN.md, "Roles"), as direct
        # assignments; a role's policy held by nobody a role selects is released.
        try:
            outcome = decide_roles(
                desired.roles, directory.users, current.user_assignments, declared
            )
        except MissingAttributes as exc:
            problems.append(f"{exc}: read the tenant again (a snapshot: take it again)")
            return sets, removes
        if roles_out is not None:
            roles_out.append(outcome)
        policy_of = {r.name: r.policy for r in desired.roles}
        # Per role, once (100,000 people share a handful of policies): the key and the spelling.
        want_key = {r.name: policy_key(r.policy) for r in desired.roles}
        send = {r.name: _policy_name(current, desired, r.policy) for r in desired.roles}
        users = directory.users
        # In UPN order, whatever order the directory was read in (a snapshot's, the pages').
        selected = sorted(outcome.selection.by_user.items(), key=lambda i: (users[i[0]].upn, i[0]))
        for uid, role in selected:
            declared.add(uid)
            existing = current.user_assignments.get(uid)
            if is_global(policy_of[role]):  # the role's people get no direct assignment
                if existing is not None:
                    removes.append(RemoveUserAssignment(uid, existing.upn, existing.policy))
            elif existing is None:
                sets.append(SetUserAssignment(uid, users[uid].upn, send[role], None))
            elif policy_key(existing.policy) != want_key[role]:
                sets.append(SetUserAssignment(uid, users[uid].upn, send[role], existing.policy))
        for uid, policy in sorted(outcome.released.items()):
            declared.add(uid)
            removes.append(RemoveUserAssignment(uid, outcome.upns.get(uid), policy))
    if desired.prune.user_assignments:
        for uid in sorted(current.user_assignments):
            if uid not in declared:
                ua_cur = current.user_assignments[uid]
                removes.append(RemoveUserAssignment(uid, ua_cur.upn, ua_cur.policy))
    return sets, removes
