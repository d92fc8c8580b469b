"""safety.SafetyReview: the after-state and the users moved are computed once per review,
however many sets of limits it is asked about, and it says what the Plan's own checks say."""

from __future__ import annotations

from factories import desired as make_desired
from factories import tenant as make_tenant

import bridge.safety as safety
from bridge.plan import diff
from bridge.planfile import effective_limits
from bridge.safety import SafetyReview
from bridge.state import SafetyLimits

ON = {"AllowPriorityMessages": True, "ReadReceiptsEnabledType": "Everyone"}
OFF = {"AllowPriorityMessages": False, "ReadReceiptsEnabledType": "Everyone"}


def moving_plan():
    current = make_tenant(
        {"Clinical": ON, "Kitchen": OFF, "Old": {}},
        groups=[(1, "Clinical")],
        users={2: "Clinical", 3: "Clinical"},
        members={1: [4, 5, 6]},
    )
    want = make_desired(
        {"Clinical": ON, "Kitchen": OFF, "Old": None},
        groups=[("Group 1", "Kitchen", 1)],
        users=[
            ("user2@northwind-health.org", "Kitchen"),
            ("user3@northwind-health.org", "Kitchen"),
        ],
    )
    return current, diff(current, want)


def test_one_review_simulates_the_plan_once_for_every_check(monkeypatch):
    current, plan = moving_plan()
    calls = []
    real = safety.simulate
    monkeypatch.setattr(safety, "simulate", lambda *a: calls.append(1) or real(*a))
    review = SafetyReview(plan, current)
    file_limits = SafetyLimits(max_user_change_share=0.5, max_policy_deletes=0)
    assert review.moved == {f"11111111-0000-0000-0000-{n:012d}" for n in (2, 3, 4, 5, 6)}
    first = review.reasons(file_limits)
    review.reasons(effective_limits(file_limits))
    review.raise_if_unsafe(file_limits, force=True)
    assert len(calls) == 1
    # The plan's own checks say the same (each its own review).
    assert plan.unsafe_reasons(current, file_limits) == first
    assert plan.affected_users(current) == review.moved
    assert plan.policy_moves(current) == review.moves


def test_the_review_says_every_limit_the_plan_is_over():
    current, plan = moving_plan()
    reasons = SafetyReview(plan, current).reasons(
        SafetyLimits(max_user_change_share=0.1, max_policy_deletes=0, user_change_floor=0)
    )
    assert reasons[0] == "1 policy deletions is over the limit of 0 (1/4 policies)"
    assert reasons[1].startswith("5 of 10 users (50.0%) would get a different policy")
    assert "moves group Group 1 from Clinical to Kitchen, which has AllowPriorityMessages off" in (
        reasons
    )
    assert "5 user(s) would lose AllowPriorityMessages (moving from Clinical to Kitchen)" in (
        reasons
    )
