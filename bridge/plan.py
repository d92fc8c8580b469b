"""Where a change is decided: ``diff(current, desired) -> Plan``, the change kinds, and the safety
checks. ``diff`` is pure: no I/O, deterministic order, so a plan can be reviewed, saved, counted
and compared.

Plan order is the order apply executes, chosen so no user is ever pointed at a policy that does
not exist: create/update policies, set group assignments, set direct user assignments, remove
user assignments, remove group assignments, delete policies.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from . import catalogue
from .errors import PlanError
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
    GroupAssignment,
    Policy,
    SafetyLimits,
    TenantState,
    User,
    UserAssignment,
    is_global,
    policy_key,
)

PLAN_SCHEMA_VERSION = 1
C = TypeVar("C", bound="Change")

# --------------------------------------------------------------------------- change kinds


@dataclass(frozen=True)
class Change(ABC):
    """One change to the tenant, which describes itself: ``data()`` is its stable JSON form
    (plans, journal) and ``from_data`` reads it back; ``symbol`` is Terraform's ``+`` create, ``~``
    update in place, ``-`` destroy; ``describe()`` says it in a few words; ``order`` is its
    place in the order apply runs; ``scope`` what it changes (a policy, a group's assignment or
    a user's direct one) and ``subject`` which (policy name, group id, user id)."""

    kind: ClassVar[str]
    order: ClassVar[int]
    scope: ClassVar[str]  # "policy", "group" or "user"

    @property
    @abstractmethod
    def symbol(self) -> str: ...

    @property
    @abstractmethod
    def subject(self) -> str: ...

    @property
    @abstractmethod
    def target(self) -> str: ...

    @abstractmethod
    def describe(self) -> str:
        """The change in a few words, for messages: ``create policy Clinical``."""

    @abstractmethod
    def data(self) -> dict[str, Any]: ...

    @classmethod
    @abstractmethod
    def from_data(cls, d: Mapping[str, Any]) -> Change:
        """The change ``data()`` wrote (may raise KeyError, TypeError, ValueError: see
        ``change_from_data``)."""

    @abstractmethod
    def simulate(self, sim: Simulation) -> None:
        """Apply this change to ``sim`` as the service would."""

    def settings_set(self) -> Mapping[str, Any] | None:
        """The settings a policy change sets (name -> new value); None for assignments."""
        return None

    def replaces(self) -> tuple[str, str] | None:
        """(old policy, new policy) of a group assignment this change replaces, or None."""
        return None


@dataclass(frozen=True)
class CreatePolicy(Change):
    kind = "create_policy"
    order = 0
    scope = "policy"
    name: str
    settings: Mapping[str, Any]

    @property
    def symbol(self) -> str:
        return "+"

    @property
    def subject(self) -> str:
        return self.name

    @property
    def target(self) -> str:
        return f"policy {self.name}"

    def describe(self) -> str:
        return f"create policy {self.name}"

    def data(self) -> dict[str, Any]:
        return {"kind": self.kind, "policy": self.name, "settings": dict(self.settings)}

    @classmethod
    def from_data(cls, d: Mapping[str, Any]) -> CreatePolicy:
        return cls(d["policy"], dict(d["settings"]))

    def simulate(self, sim: Simulation) -> None:
        sim.policies[policy_key(self.name)] = Policy(self.name, dict(self.settings))

    def settings_set(self) -> Mapping[str, Any]:
        return dict(self.settings)


@dataclass(frozen=True)
class UpdatePolicy(Change):
    kind = "update_policy"
    order = 0
    scope = "policy"
    name: str
    # setting -> (current, desired); only settings that differ
    changes: Mapping[str, tuple[Any, Any]]

    @property
    def symbol(self) -> str:
        return "~"

    @property
    def subject(self) -> str:
        return self.name

    @property
    def target(self) -> str:
        return f"policy {self.name}"

    def describe(self) -> str:
        return f"update policy {self.name}"

    def data(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "policy": self.name,
            "changes": {k: {"from": a, "to": b} for k, (a, b) in self.changes.items()},
        }

    @classmethod
    def from_data(cls, d: Mapping[str, Any]) -> UpdatePolicy:
        return cls(d["policy"], {k: (v["from"], v["to"]) for k, v in d["changes"].items()})

    def simulate(self, sim: Simulation) -> None:
        old = sim.policies.get(policy_key(self.name))
        settings = dict(old.settings) if old else {}
        settings.update(self.settings_set())
        sim.policies[policy_key(self.name)] = Policy(old.name if old else self.name, settings)

    def settings_set(self) -> Mapping[str, Any]:
        return {k: v for k, (_, v) in self.changes.items()}


@dataclass(frozen=True)
class SetGroupAssignment(Change):
    """Create a group assignment, or replace one (the service has no update: remove then add)."""

    kind = "set_group_assignment"
    order = 1
    scope = "group"
    group_id: str
    group_name: str | None
    policy: str
    rank: int  # the rank to send; the service renumbers the others around it
    existing: GroupAssignment | None = None

    @property
    def symbol(self) -> str:
        return "~" if self.existing else "+"

    @property
    def subject(self) -> str:
        return self.group_id

    @property
    def target(self) -> str:
        return f"group {self.group_name or self.group_id}"

    def describe(self) -> str:
        return f"assign {self.target} to {self.policy} (rank {self.rank})"

    def data(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "group_id": self.group_id,
            "group": self.group_name,
            "policy": self.policy,
            "rank": self.rank,
        }
        if self.existing:
            out["from"] = {"policy": self.existing.policy, "rank": self.existing.rank}
        return out

    @classmethod
    def from_data(cls, d: Mapping[str, Any]) -> SetGroupAssignment:
        frm = d.get("from")
        existing = (
            GroupAssignment(d["group_id"], frm["policy"], frm["rank"], d.get("group"))
            if frm
            else None
        )
        return cls(d["group_id"], d.get("group"), d["policy"], int(d["rank"]), existing)

    def replaces(self) -> tuple[str, str] | None:
        return (self.existing.policy, self.policy) if self.existing else None

    def simulate(self, sim: Simulation) -> None:
        if self.group_id in sim.order:
            sim.order.remove(self.group_id)
        sim.order.insert(min(self.rank - 1, len(sim.order)), self.group_id)
        sim.groups[self.group_id] = GroupAssignment(self.group_id, self.policy, 0, self.group_name)


@dataclass(frozen=True)
class SetUserAssignment(Change):
    kind = "set_user_assignment"
    order = 2
    scope = "user"
    user_id: str
    upn: str | None
    policy: str
    existing_policy: str | None = None

    @property
    def symbol(self) -> str:
        return "~" if self.existing_policy else "+"

    @property
    def subject(self) -> str:
        return self.user_id

    @property
    def target(self) -> str:
        return f"user {self.upn or self.user_id}"

    def describe(self) -> str:
        return f"assign {self.target} to {self.policy}"

    def data(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "user_id": self.user_id,
            "user": self.upn,
            "policy": self.policy,
            "from": self.existing_policy,
        }

    @classmethod
    def from_data(cls, d: Mapping[str, Any]) -> SetUserAssignment:
        return cls(d["user_id"], d.get("user"), d["policy"], d.get("from"))

    def simulate(self, sim: Simulation) -> None:
        sim.users[self.user_id] = UserAssignment(self.user_id, self.policy, self.upn)


@dataclass(frozen=True)
class RemoveUserAssignment(Change):
    kind = "remove_user_assignment"
    order = 3
    scope = "user"
    user_id: str
    upn: str | None
    policy: str

    @property
    def symbol(self) -> str:
        return "-"

    @property
    def subject(self) -> str:
        return self.user_id

    @property
    def target(self) -> str:
        return f"user {self.upn or self.user_id}"

    def describe(self) -> str:
        return f"unassign {self.target} from {self.policy}"

    def data(self) -> dict[str, Any]:
        return {"kind": self.kind, "user_id": self.user_id, "user": self.upn, "from": self.policy}

    @classmethod
    def from_data(cls, d: Mapping[str, Any]) -> RemoveUserAssignment:
        return cls(d["user_id"], d.get("user"), d["from"])

    def simulate(self, sim: Simulation) -> None:
        sim.users.pop(self.user_id, None)


@dataclass(frozen=True)
class RemoveGroupAssignment(Change):
    kind = "remove_group_assignment"
    order = 4
    scope = "group"
    group_id: str
    group_name: str | None
    policy: str
    rank: int

    @property
    def symbol(self) -> str:
        return "-"

    @property
    def subject(self) -> str:
        return self.group_id

    @property
    def target(self) -> str:
        return f"group {self.group_name or self.group_id}"

    def describe(self) -> str:
        return f"unassign {self.target} from {self.policy}"

    def data(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "group_id": self.group_id,
            "group": self.group_name,
            "from": {"policy": self.policy, "rank": self.rank},
        }

    @classmethod
    def from_data(cls, d: Mapping[str, Any]) -> RemoveGroupAssignment:
        frm = d["from"]
        return cls(d["group_id"], d.get("group"), frm["policy"], frm["rank"])

    def simulate(self, sim: Simulation) -> None:
        if self.group_id in sim.order:
            sim.order.remove(self.group_id)
        sim.groups.pop(self.group_id, None)


@dataclass(frozen=True)
class DeletePolicy(Change):
    kind = "delete_policy"
    order = 5
    scope = "policy"
    name: str

    @property
    def symbol(self) -> str:
        return "-"

    @property
    def subject(self) -> str:
        return self.name

    @property
    def target(self) -> str:
        return f"policy {self.name}"

    def describe(self) -> str:
        return f"delete policy {self.name}"

    def data(self) -> dict[str, Any]:
        return {"kind": self.kind, "policy": self.name}

    @classmethod
    def from_data(cls, d: Mapping[str, Any]) -> DeletePolicy:
        if is_global(d["policy"]):
            raise PlanError(
                "the saved plan deletes the Global policy, which teams-bridge never "
                "plans: it was edited by hand; run plan again"
            )
        return cls(d["policy"])

    def simulate(self, sim: Simulation) -> None:
        sim.policies.pop(policy_key(self.name), None)


CHANGE_KINDS: dict[str, type[Change]] = {
    c.kind: c
    for c in (
        CreatePolicy,
        UpdatePolicy,
        SetGroupAssignment,
        SetUserAssignment,
        RemoveUserAssignment,
        RemoveGroupAssignment,
        DeletePolicy,
    )
}


def change_from_data(d: Mapping[str, Any]) -> Change:
    """Rebuild a change from its ``data()`` (a saved plan). A change that is not as ``data()``
    writes it (a missing key, a wrong type) is a ``PlanError``, never a KeyError/TypeError."""
    if not isinstance(d, Mapping):
        raise PlanError(f"a change in the saved plan is not an object: {_REGENERATE}")
    try:
        change = _change_from_data(d)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise PlanError(
            f"a {d.get('kind')!r} change in the saved plan is not as plan writes it ({what}): "
            f"{_REGENERATE}"
        ) from None
    for f in dataclasses.fields(change):
        value = getattr(change, f.name)
        wanted = _FIELD_TYPES.get(str(f.type))
        if wanted is not None and (not isinstance(value, wanted) or isinstance(value, bool)):
            raise PlanError(
                f"a {d.get('kind')!r} change in the saved plan has {f.name} {value!r} of the "
                f"wrong type: {_REGENERATE}"
            )
    return change


# Field annotations (text, under ``from __future__ import annotations``) -> the types allowed.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "str | None": (str, type(None)),
    "int": (int,),
    "Mapping[str, Any]": (Mapping,),
    "Mapping[str, tuple[Any, Any]]": (Mapping,),
}


_REGENERATE = "the plan file was edited or damaged; make it again with 'plan --out'"


def _change_from_data(d: Mapping[str, Any]) -> Change:
    kind = d.get("kind")
    cls = CHANGE_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise PlanError(f"unknown change kind {kind!r} in saved plan")
    return cls.from_data(d)


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
    user_sets, user_removes = _diff_users(current, desired, problems)

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
    current: TenantState, desired: DesiredState, problems: list[str]
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
    if desired.prune.user_assignments:
        for uid in sorted(current.user_assignments):
            if uid not in declared:
                ua_cur = current.user_assignments[uid]
                removes.append(RemoveUserAssignment(uid, ua_cur.upn, ua_cur.policy))
    return sets, removes
