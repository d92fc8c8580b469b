"""``suggest-roles``: an adoption path from per-user lists and groups to roles. Proposes a
``roles:`` block for departments (then job titles) whose people already share one effective
policy, so switching to roles moves nobody by surprise: each proposal says how many people it
would move. Pure: the tenant state comes with its attributes and the assigned groups' members.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from .rules.people import effective_policies
from .state import TenantState, is_global, policy_key

ATTRIBUTES = ("department", "jobTitle", "accountEnabled")


@dataclass(frozen=True)
class Suggestion:
    attribute: str  # department or jobTitle
    value: str
    policy: str
    people: int  # enabled people with this value
    sharing: int  # of them, those whose effective policy is ``policy`` now
    moves: int  # people whose effective policy the role would change

    @property
    def share(self) -> float:
        return self.sharing / self.people


def suggest(current: TenantState, threshold: float = 0.95, min_people: int = 5) -> list[Suggestion]:
    """Departments, then job titles of people no department proposal covers, where at least
    ``threshold`` of ``min_people`` or more enabled people share one effective policy (Global
    excepted: nobody needs a role to get the default)."""
    users = current.directory.users
    effective = {uid: policy_key(e.policy) for uid, e in effective_policies(current)}
    names = {p.key: p.name for p in current.policies.values()}
    enabled = [
        uid
        for uid, u in users.items()
        if u.attributes is not None and u.attributes.get("accountEnabled") is not False
    ]
    out: list[Suggestion] = []
    covered: set[str] = set()
    for attribute in ("department", "jobTitle"):
        groups: dict[str, list[str]] = {}
        for uid in enabled:
            if uid in covered:
                continue
            value = (users[uid].attributes or {}).get(attribute)
            if isinstance(value, str) and value.strip():
                groups.setdefault(value, []).append(uid)
        for value, people in sorted(groups.items(), key=lambda g: g[0].casefold()):
            if len(people) < min_people:
                continue
            key, sharing = Counter(effective[u] for u in people).most_common(1)[0]
            if is_global(key) or sharing / len(people) < threshold:
                continue
            out.append(
                Suggestion(
                    attribute,
                    value,
                    names.get(key, key),
                    len(people),
                    sharing,
                    len(people) - sharing,
                )
            )
            covered.update(people)
    return out


def render(suggestions: list[Suggestion], threshold: float) -> str:
    """The proposals as a ``roles:`` block to paste under ``assignments:``."""
    if not suggestions:
        return (
            f"# no department or job title has {threshold:.0%} or more of its people on one "
            "policy (Global aside): nothing to suggest\n"
        )
    lines = [
        "# Suggested by teams-bridge suggest-roles: each role keeps people on the policy they",
        f"# already get ({threshold:.0%} or more of them share it); 'moves' counts the people",
        "# whose effective policy the role would change. Review, then paste under assignments:.",
        "roles:",
    ]
    for s in suggestions:
        lines += [
            f"  - role: {json.dumps(s.value)}    # {s.people} people, {s.share:.0%} get "
            f"{s.policy} now; moves {s.moves}",
            f"    policy: {json.dumps(s.policy)}",
            f"    where: {{{s.attribute}: {json.dumps(s.value)}}}",
        ]
    return "\n".join(lines) + "\n"
