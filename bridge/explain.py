"""A user's effective messaging policy, and why: a direct assignment wins; otherwise the
best-ranked group assignment among the groups the user is a *direct* member of; otherwise Global.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import PlanError
from .report.render_text import printable
from .state import Group, TenantState, User


@dataclass(frozen=True)
class Explanation:
    user: User
    policy: str
    source: str  # "direct" | "group" | "global"
    group: Group | None = None
    rank: int | None = None
    read_receipts: Any = None
    priority_messages: Any = None
    reasons: list[str] = field(default_factory=list)
    # With a desired file (explain --desired): the role that decides the user, and why (or why
    # none does); the attribute values the roles read.
    role: str | None = None
    role_reasons: list[str] = field(default_factory=list)

    def data(self) -> dict[str, Any]:
        return {
            "user": self.user.upn,
            "user_id": self.user.id,
            "policy": self.policy,
            "source": self.source,
            "group": self.group.display_name if self.group else None,
            "group_id": self.group.id if self.group else None,
            "rank": self.rank,
            "ReadReceiptsEnabledType": self.read_receipts,
            "AllowPriorityMessages": self.priority_messages,
            "reasons": list(self.reasons),
            **(
                {
                    "role": self.role,
                    "role_reasons": list(self.role_reasons),
                    "attributes": dict(self.user.attributes or {}),
                }
                if self.role_reasons
                else {}
            ),
        }


READ_RECEIPT_WORDS = {
    "Everyone": "on for everyone",
    "None": "off for everyone",
    "UserPreference": "user controlled",
}


def render_explanation(result: Explanation) -> str:
    """The explanation for a terminal. Names, groups and reasons are tenant text: every line goes
    through ``printable`` here, the one place, so no control character reaches the terminal."""
    rr = result.read_receipts
    pm = result.priority_messages
    src = {
        "direct": "direct assignment",
        "group": f"group {result.group.display_name if result.group else ''} (rank {result.rank})",
        "global": "the Global policy",
    }[result.source]
    shown = "allowed" if pm else "not allowed" if pm is False else pm
    lines = [
        f"{result.user.upn}: {result.policy}  (from {src})",
        f"  Read receipts:          {READ_RECEIPT_WORDS.get(str(rr), rr)}",
        f"  Priority notifications: {shown}",
        "  Why:",
        *(f"    - {reason}" for reason in result.reasons),
    ]
    if result.role_reasons:
        lines.append(f"  Role: {result.role or '(none)'}")
        lines.extend(f"    - {reason}" for reason in result.role_reasons)
    return "".join(printable(line) + "\n" for line in lines)


def find_user(state: TenantState, ref: str) -> User:
    user = state.directory.user_by_ref(ref)
    if user is None:
        raise PlanError(f"no user {ref!r} in the tenant (give a UPN or an object id)")
    return user


def explain(state: TenantState, user: User, member_of: list[Group]) -> Explanation:
    reasons: list[str] = []
    member_ids = [g.id for g in member_of]
    assigned = [g for g in state.ranked_groups() if g.group_id in set(member_ids)]
    policy, source, best = state.effective(user.id, member_ids)
    group = next((g for g in member_of if best and g.id == best.group_id), None)
    rank = best.rank if best else None
    if source == "direct":
        reasons.append(
            f"{user.upn} has a direct assignment of {policy}, which wins over group assignments"
        )
        if assigned:
            reasons.append(
                "group assignments that would apply otherwise: "
                + ", ".join(
                    f"{g.group_name or g.group_id} (rank {g.rank}: {g.policy})" for g in assigned
                )
            )
    elif source == "group":
        reasons.append(
            f"no direct assignment; {user.upn} is a direct member of "
            f"{group.display_name if group else best and best.group_id}, whose assignment has "
            f"the best rank ({rank}) among the user's groups"
        )
        for other in assigned[1:]:
            reasons.append(
                f"outranked: {other.group_name or other.group_id} (rank {other.rank}: "
                f"{other.policy})"
            )
    else:
        reasons.append(
            f"no direct assignment and none of {user.upn}'s groups has a messaging "
            "policy assignment, so the org-wide Global policy applies"
        )
    reasons.append("only direct group membership counts: nested groups do not pass policies on")
    effective = state.policy(policy)
    settings = effective.settings if effective else {}
    if effective is None:
        reasons.append(f"policy {policy} was not found in the tenant's policies")
    return Explanation(
        user,
        policy,
        source,
        group,
        rank,
        settings.get("ReadReceiptsEnabledType"),
        settings.get("AllowPriorityMessages"),
        reasons,
    )
