"""What a plan does to a tenant, and whether that is safe: ``simulate`` (the tenant after the
plan, with the service's behaviour) and ``SafetyReview`` (the after-state and the users whose
policy moves, computed once, then held against any set of limits).

Pure: no I/O. The changes are asked what they are (``scope``, ``subject``, ``symbol``,
``settings_set``) and apply themselves to a ``Simulation``; this module never names a kind."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from typing import Any, Protocol

from . import catalogue
from .errors import UnsafePlanError
from .state import GroupAssignment, SafetyLimits, TenantState, policy_key
from .text import printable

# Values that switch off what clinicians rely on: they always need --force in a policy in use.
CLINICAL_OFF: dict[str, Any] = {"ReadReceiptsEnabledType": "None", "AllowPriorityMessages": False}


class Change(Protocol):
    """What the review asks of a change (``plan.Change`` is one): it never names a kind."""

    @property
    def scope(self) -> str: ...  # "policy", "group" or "user"

    @property
    def subject(self) -> str: ...

    @property
    def symbol(self) -> str: ...

    @property
    def target(self) -> str: ...

    def settings_set(self) -> Mapping[str, Any] | None: ...

    def replaces(self) -> tuple[str, str] | None: ...

    def simulate(self, sim: Simulation) -> None: ...


class HasChanges(Protocol):
    @property
    def changes(self) -> Sequence[Change]: ...


# --------------------------------------------------------------------------- simulation


class Simulation:
    """The tenant being changed by ``simulate``: each change applies itself (``Change.simulate``)
    with the service's behaviour (rank renumbering, merge updates)."""

    def __init__(self, current: TenantState):
        self.policies = dict(current.policies)
        self.order = [g.group_id for g in current.ranked_groups()]
        self.groups = dict(current.group_assignments)
        self.users = dict(current.user_assignments)


def simulate(current: TenantState, plan: HasChanges) -> TenantState:
    """The tenant as it would be after ``plan``, with the service's behaviour (rank renumbering,
    merge updates). Used by the safety review and by apply's verification; no I/O."""
    sim = Simulation(current)
    for c in plan.changes:
        c.simulate(sim)
    ranked = [
        GroupAssignment(gid, sim.groups[gid].policy, i + 1, sim.groups[gid].group_name)
        for i, gid in enumerate(sim.order)
    ]
    return TenantState.build(
        current.tenant_id, sim.policies.values(), ranked, sim.users.values(), current.directory
    )


# --------------------------------------------------------------------------- the review


class SafetyReview:
    """The safety checks of ``plan`` against ``current``. The after-state, the users whose policy
    moves and the clinical reasons are computed once, when first asked for (a plan of 95,000
    changes takes seconds to simulate), however many sets of limits are checked: ``plan`` checks
    the file's limits and, for ``--out``, the ones ``apply --plan`` enforces.

    Membership comes from the groups whose members were read (``Session.fill_group_members``):
    make the review after those reads."""

    def __init__(self, plan: HasChanges, current: TenantState):
        self.changes = plan.changes
        self.current = current

    @cached_property
    def after(self) -> TenantState:
        return simulate(self.current, self)

    @cached_property
    def moves(self) -> dict[str, tuple[str, str]]:
        """user id -> (policy before, policy after), for every user whose *effective* policy
        changes (a direct assignment wins; then the best-ranked assigned group the user is a
        direct member of; then Global). A re-rank or a reassignment counts only for members
        whose winning policy really changes."""
        direct = {c.subject for c in self.changes if c.scope == "user"}
        changed_groups = {c.subject for c in self.changes if c.scope == "group"}
        member_of: dict[str, list[str]] = {}
        candidates = set(direct)
        for group in self.current.directory.groups.values():
            for uid in group.members or ():
                member_of.setdefault(uid, []).append(group.id)
                if group.id in changed_groups:
                    candidates.add(uid)
        if not candidates:
            return {}
        moves = {}
        for uid in candidates:
            groups = member_of.get(uid, ())
            before_policy = self.current.effective(uid, groups)[0]
            after_policy = self.after.effective(uid, groups)[0]
            if policy_key(before_policy) != policy_key(after_policy):
                moves[uid] = (before_policy, after_policy)
        return moves

    @property
    def moved(self) -> set[str]:
        """User ids whose effective policy this plan changes."""
        return set(self.moves)

    def reasons(self, limits: SafetyLimits) -> list[str]:
        """Every safety limit this plan is over, with the numbers. Exactly at a limit is allowed."""
        reasons: list[str] = []
        deletes = sum(1 for c in self.changes if c.scope == "policy" and c.symbol == "-")
        if deletes > limits.max_policy_deletes:
            reasons.append(
                f"{deletes} policy deletions is over the limit of {limits.max_policy_deletes} "
                f"({deletes}/{len(self.current.policies)} policies)"
            )
        over = share_over_limit(self.current, self.moved, limits)
        if over:
            reasons.append(over)
        if limits.protect_clinical_settings:
            reasons.extend(self.clinical)
        return reasons

    def raise_if_unsafe(self, limits: SafetyLimits, force: bool) -> None:
        reasons = self.reasons(limits)
        if reasons and not force:
            raise UnsafePlanError(
                "the plan is over a safety limit:\n  - "
                + "\n  - ".join(printable(reason) for reason in reasons)  # they name groups
                + "\nreview it, then re-run with --force (or change the limits in the file's "
                "safety: block)"
            )

    @cached_property
    def clinical(self) -> list[str]:
        """Read receipts or priority notifications switched off for somebody: in a policy that
        applies to somebody before or after this plan (a new policy assigned in the same plan
        counts), or by moving a group or users from a policy that has them on to one that has
        them off."""
        in_use = policies_in_use(self.current) | policies_in_use(self.after)
        reasons: list[str] = []
        for c in self.changes:
            new = c.settings_set()
            if new is None:
                continue
            name = c.subject
            if policy_key(name) not in in_use:
                continue
            for setting, off in CLINICAL_OFF.items():
                if setting in new and catalogue.values_equal(setting, new[setting], off):
                    if c.symbol == "+":
                        reasons.append(
                            f"creates policy {name} with {setting} off ({off!r}) and assigns it "
                            "in this plan"
                        )
                    else:
                        reasons.append(
                            f"turns {setting} off ({off!r}) in policy {name}, which is in use"
                        )
        return reasons + self._clinical_moves()

    def _lost(self, old: str, new: str) -> list[str]:
        before_p, after_p = self.current.policy(old), self.after.policy(new)
        was = before_p.settings if before_p else {}
        now = after_p.settings if after_p else {}
        return [
            setting
            for setting, off in CLINICAL_OFF.items()
            if catalogue.values_equal(setting, now.get(setting), off)
            and not catalogue.values_equal(setting, was.get(setting), off)
        ]

    def _clinical_moves(self) -> list[str]:
        """People who lose read receipts or priority notifications because they get another
        policy: a group reassigned, a new or removed assignment, a re-rank."""
        reasons = []
        for c in self.changes:
            # Said per group as well, as it needs no member reads (plan shows it too).
            replaced = c.replaces()
            if replaced is not None:
                settings = self._lost(*replaced)
                if settings:
                    reasons.append(
                        f"moves {c.target} from {replaced[0]} to {replaced[1]}, which has "
                        f"{' and '.join(settings)} off"
                    )
        counts: dict[tuple[str, str, str], int] = {}
        for before, after_policy in self.moves.values():
            for setting in self._lost(before, after_policy):
                key = (
                    setting,
                    _spelled(self.current, before),
                    _spelled(self.after, after_policy),
                )
                counts[key] = counts.get(key, 0) + 1
        for (setting, before, after_policy), n in sorted(counts.items()):
            reasons.append(
                f"{n} user(s) would lose {setting} (moving from {before} to {after_policy})"
            )
        return reasons


# --------------------------------------------------------------------------- helpers


def user_count(current: TenantState, moved: Iterable[str]) -> int:
    """Users in the tenant, for the share of them a change moves. Members read from groups may
    include people the directory read did not list; counting them keeps the share at most 100 %."""
    return len(set(current.directory.users) | set(moved))


def share_over_limit(current: TenantState, moved: set[str], limits: SafetyLimits) -> str | None:
    """Why moving ``moved`` (user ids) is over the share-of-users limit, or None. The share
    counts only above the floor: moving ``user_change_floor`` people or fewer is routine, however
    small the tenant."""
    if len(moved) <= limits.user_change_floor:
        return None
    total = user_count(current, moved)
    share = len(moved) / total
    if share <= limits.max_user_change_share:
        return None
    return (
        f"{len(moved)} of {total} users ({share:.1%}) would get a different policy, over the "
        f"limit of {_percent(limits.max_user_change_share)} (it applies when more than "
        f"{limits.user_change_floor} users move)"
    )


def policies_in_use(state: TenantState) -> set[str]:
    """Keys of policies that apply to somebody: Global always, and every assigned one."""
    used = {"global"}
    used.update(policy_key(g.policy) for g in state.group_assignments.values())
    used.update(policy_key(u.policy) for u in state.user_assignments.values())
    return used


def _percent(share: float) -> str:
    return f"{share * 100:g}%"


def _spelled(state: TenantState, name: str) -> str:
    policy = state.policy(name)
    return policy.name if policy else name
