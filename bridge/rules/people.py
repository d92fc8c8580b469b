"""Who gets what, person by person: each user's effective policy (direct, else the best-ranked
assigned group among their direct memberships, else Global), and who the clinicians are
(``rules.clinicians``). Pure: group members come from ``TenantState.directory`` (read once, for
the assigned groups only, before the rules run)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..roles import Role, RoleMatcher
from ..state import GLOBAL, DesiredState, GroupAssignment, TenantState


@dataclass(frozen=True)
class Effective:
    policy: str
    source: str  # "direct", "group" or "global"
    group: GroupAssignment | None = None

    def through(self) -> str:
        """``directly``, ``through group Residents (rank 3)``, ``as the org-wide default``."""
        if self.source == "direct":
            return "by direct assignment"
        if self.group is not None:
            name = self.group.group_name or self.group.group_id
            return f"through group {name} (rank {self.group.rank})"
        return "as the org-wide default (Global)"


def unread_groups(current: TenantState) -> list[str]:
    """Assigned groups whose members were not read (their people cannot be placed)."""
    return sorted(
        gid
        for gid in current.group_assignments
        if (g := current.directory.groups.get(gid)) is None or g.members is None
    )


def effective_policies(current: TenantState) -> Iterator[tuple[str, Effective]]:
    """``(user id, Effective)`` for every user in the directory."""
    member_of: dict[str, list[str]] = {}
    for gid in current.group_assignments:
        group = current.directory.groups.get(gid)
        for uid in (group.members if group is not None else None) or ():
            member_of.setdefault(uid, []).append(gid)
    direct = current.user_assignments
    for uid in current.directory.users:
        a = direct.get(uid)
        if a is not None:
            yield uid, Effective(a.policy, "direct")
            continue
        groups = member_of.get(uid)
        if groups:
            best = min(
                (current.group_assignments[g] for g in groups), key=lambda g: (g.rank, g.group_id)
            )
            yield uid, Effective(best.policy, "group", best)
        else:
            yield uid, Effective(GLOBAL, "global")


def clinician_matcher(desired: DesiredState) -> RoleMatcher | None:
    """A matcher whose every role is a way of being a clinician, or None when the file has no
    ``rules.clinicians``."""
    rules = desired.rules
    if not rules.has_clinicians:
        return None
    roles = [r for r in desired.roles if r.name in rules.clinician_roles]
    if rules.clinician_where:
        roles.append(Role("rules.clinicians", GLOBAL, dict(rules.clinician_where)))
    return RoleMatcher(roles)


def clinicians(current: TenantState, desired: DesiredState) -> set[str] | None:
    """The ids of the users ``rules.clinicians`` selects (None: the file says nothing)."""
    matcher = clinician_matcher(desired)
    if matcher is None:
        return None
    matches = matcher.matches
    return {
        uid
        for uid, user in current.directory.users.items()
        if user.attributes is not None and matches(user.attributes)
    }
