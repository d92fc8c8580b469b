#!/usr/bin/env python3
"""Time of the safety checks that plan --out and apply run on one large plan, and how many times
the after-state is simulated for them.

Shape: 95,000 users, 64 groups of members, a plan of 95,000 changes (direct user assignments,
group re-assignments, policy updates that switch read receipts off). The checks timed are what
``make_plan(saving=True)`` runs: the users moved, the reasons against the file's limits and
against the limits ``apply --plan`` enforces.

    python scripts/bench_safety.py [--users 95000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import bridge.plan as plan_module
from bridge.plan import Plan, SetGroupAssignment, SetUserAssignment, UpdatePolicy
from bridge.planfile import effective_limits
from bridge.state import (
    Directory,
    Group,
    GroupAssignment,
    Policy,
    SafetyLimits,
    TenantState,
    User,
)

TENANT = "3f1c2b7e-8a4d-4e6f-9b21-5d7c0a9e4b12"


def build(users: int, groups: int = 64) -> tuple[TenantState, Plan]:
    directory = Directory()
    for u in range(users):
        directory.add_user(User(f"u{u:06d}", f"user{u:06d}@northwind-health.org"))
    for g in range(groups):
        members = tuple(f"u{u:06d}" for u in range(g, users, groups * 4))
        directory.add_group(Group(f"g{g:02d}", f"Group {g:02d}", members))
    policies = [Policy("Global", {"ReadReceiptsEnabledType": "UserPreference"})]
    policies += [Policy(f"P{i}", {"ReadReceiptsEnabledType": "Everyone"}) for i in range(8)]
    assignments = [
        GroupAssignment(f"g{g:02d}", f"P{g % 8}", g + 1, f"Group {g:02d}") for g in range(groups)
    ]
    current = TenantState.build(TENANT, policies, assignments, [], directory)
    changes: list = [UpdatePolicy("P1", {"ReadReceiptsEnabledType": ("Everyone", "None")})]
    changes += [
        SetGroupAssignment(f"g{g:02d}", f"Group {g:02d}", f"P{(g + 1) % 8}", g + 1, assignments[g])
        for g in range(0, groups, 2)
    ]
    n = users - len(changes)
    changes += [SetUserAssignment(f"u{u:06d}", None, f"P{u % 8}") for u in range(n)]
    return current, Plan(changes, TENANT, plan_module.state_checksum(current))


def checks(plan: Plan, current: TenantState) -> tuple[int, list[str], list[str]]:
    review_cls = getattr(plan_module, "SafetyReview", None)
    limits = SafetyLimits(max_user_change_share=1.0)
    if review_cls is not None:  # one review, asked against both sets of limits
        review = review_cls(plan, current)
        return len(review.moved), review.reasons(limits), review.reasons(effective_limits(limits))
    moved = plan.affected_users(current)
    return (
        len(moved),
        plan.unsafe_reasons(current, limits),
        plan.unsafe_reasons(current, effective_limits(limits)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=95_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    current, plan = build(args.users)
    calls = 0
    real = plan_module.simulate

    def counting(*a, **kw):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return real(*a, **kw)

    plan_module.simulate = counting
    try:  # since the safety review: simulate's home
        import bridge.safety as safety_module

        safety_module.simulate = counting
    except ImportError:
        pass
    times = []
    result = None
    for _ in range(args.repeat):
        calls = 0
        start = time.perf_counter()
        result = checks(plan, current)
        times.append(time.perf_counter() - start)
    assert result is not None
    print(
        f"{len(plan.changes)} changes, {args.users} users: safety checks "
        f"{statistics.median(times):.2f} s (median of {args.repeat}), simulate called {calls} "
        f"time(s); {result[0]} users moved, {len(result[1])} + {len(result[2])} reasons"
    )


if __name__ == "__main__":
    main()
