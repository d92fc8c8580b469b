"""For groups a failed replacement left with no policy: the command that assigns them again,
with the least override of the safety limits the re-run needs."""

from __future__ import annotations

import dataclasses
import math

from ..plan import DeletePolicy, Plan, RemoveGroupAssignment, SetGroupAssignment
from ..safety import SafetyReview, share_over_limit, simulate, user_count
from ..state import SafetyLimits, TenantState
from .result import ApplyResult


def rerun_advice(result: ApplyResult, current: TenantState, limits: SafetyLimits) -> str | None:
    """Putting the members back moves them (they have fallen back to another policy), so the
    share-of-users limit may refuse the re-run; ``--force`` is named only when another limit
    would refuse it too, as it lifts every check for the whole plan."""
    bare = [
        f.change
        for f in result.failed
        if f.left_without_policy and isinstance(f.change, SetGroupAssignment)
    ]
    if not bare:
        return None
    tenant = current.tenant_id
    removed = [RemoveGroupAssignment(c.group_id, c.group_name, c.policy, c.rank) for c in bare]
    now = simulate(current, Plan([*result.done, *removed], tenant))
    rerun = Plan(
        [*(dataclasses.replace(c, existing=None) for c in bare), *result.not_attempted], tenant
    )
    flags: list[str] = []
    why: list[str] = []
    review = SafetyReview(rerun, now)
    moved = review.moved
    total = user_count(now, moved) or 1
    share = len(moved) / total
    if share_over_limit(now, moved, limits):
        needed = math.ceil(share * 1000) / 1000  # exactly at the limit passes
        flags.append(f"--max-user-change-share {needed:g}")
        why.append(
            f"the re-run moves {len(moved)} of {total} users ({share:.1%}), over the limit "
            f"of {limits.max_user_change_share * 100:g}%: among them the group's members, "
            "who have fallen back to another policy"
        )
        limits = dataclasses.replace(limits, max_user_change_share=needed)
    deletes = len(rerun.of(DeletePolicy))
    if deletes > limits.max_policy_deletes:
        flags.append(f"--max-policy-deletes {deletes}")
        why.append(f"it still deletes {deletes} policies")
        limits = dataclasses.replace(limits, max_policy_deletes=deletes)
    others = review.reasons(limits)
    if others:
        return (
            "run 'teams-bridge apply FILE --force' to assign it again: the re-run is over "
            f"a limit no narrower option lifts ({'; '.join(others)}); --force lifts every "
            "safety check for the whole plan, so review it with plan first"
        )
    if not flags:
        return "run 'teams-bridge apply FILE' again to assign it (within the safety limits)"
    return f"run 'teams-bridge apply FILE {' '.join(flags)}' to assign it again ({'; '.join(why)})"
