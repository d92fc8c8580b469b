"""Plan safety limits: each limit passes exactly at its value, refuses one past it, and --force
lifts every refusal."""

import pytest

from bridge.errors import UnsafePlanError
from bridge.plan import (
    CreatePolicy,
    DeletePolicy,
    Plan,
    RemoveGroupAssignment,
    RemoveUserAssignment,
    SetGroupAssignment,
    SetUserAssignment,
    UpdatePolicy,
    policies_in_use,
)
from bridge.state import (
    Directory,
    Group,
    GroupAssignment,
    Policy,
    SafetyLimits,
    TenantState,
    User,
    UserAssignment,
)

# No floor: these tests are about the share; the floor has its own below.
LIMITS = SafetyLimits(max_policy_deletes=3, max_user_change_share=0.10, user_change_floor=0)


def tenant(n_policies=12, n_users=100, members=(), direct=()):
    d = Directory()
    for i in range(n_users):
        d.add_user(User(f"u{i}", f"user{i}@contoso.org"))
    d.add_group(Group("g-clin", "Clinicians", tuple(members)))
    d.add_group(Group("g-unknown", "Unknown members", None))
    policies = [Policy("Global", {})] + [Policy(f"P{i}", {}) for i in range(n_policies - 1)]
    return TenantState.build(
        "tenant-1",
        policies,
        [GroupAssignment("g-clin", "P0", 1, "Clinicians")],
        [UserAssignment(uid, "P1") for uid in direct],
        d,
    )


def assert_refused(plan, current, limits, message):
    assert plan.unsafe_reasons(current, limits) == [message]
    with pytest.raises(UnsafePlanError) as err:
        plan.raise_if_unsafe(current, limits, force=False)
    assert message in str(err.value)
    assert "re-run with --force" in str(err.value)
    plan.raise_if_unsafe(current, limits, force=True)


def assert_allowed(plan, current, limits):
    assert plan.unsafe_reasons(current, limits) == []
    plan.raise_if_unsafe(current, limits, force=False)


# ------------------------------------------------------------------ policy deletions


def test_deletes_at_the_limit_pass():
    assert_allowed(Plan([DeletePolicy(f"P{i}") for i in range(2, 5)]), tenant(), LIMITS)


def test_deletes_one_past_the_limit_refused_with_numbers():
    plan = Plan([DeletePolicy(f"P{i}") for i in range(2, 6)])
    assert_refused(
        plan, tenant(), LIMITS, "4 policy deletions is over the limit of 3 (4/12 policies)"
    )


def test_zero_deletes_allowed_means_none():
    limits = SafetyLimits(max_policy_deletes=0)
    assert_refused(
        Plan([DeletePolicy("P2")]),
        tenant(),
        limits,
        "1 policy deletions is over the limit of 0 (1/12 policies)",
    )


# ------------------------------------------------------------------ share of users


def direct_changes(n):
    return [SetUserAssignment(f"u{i}", None, "P2") for i in range(n)]


def test_user_share_at_the_limit_passes():
    assert_allowed(Plan(direct_changes(10)), tenant(), LIMITS)


def test_user_share_one_past_the_limit_refused_with_numbers():
    assert_refused(
        Plan(direct_changes(11)),
        tenant(),
        LIMITS,
        "11 of 100 users (11.0%) would get a different policy, over the limit of 10% (it "
        "applies when more than 0 users move)",
    )


def test_group_members_count_and_direct_assignments_shield_them():
    members = [f"u{i}" for i in range(20)]
    # 12 of the 20 members keep a direct assignment, which wins over any group.
    current = tenant(members=members, direct=[f"u{i}" for i in range(12)])
    plan = Plan(
        [SetGroupAssignment("g-clin", "Clinicians", "P3", 1, current.group_assignments["g-clin"])]
    )
    assert plan.affected_users(current) == {f"u{i}" for i in range(12, 20)}
    assert_allowed(plan, current, LIMITS)
    # A member whose direct assignment is removed in the same plan is affected again.
    plan.changes.append(RemoveUserAssignment("u0", None, "P1"))
    plan.changes.append(RemoveUserAssignment("u1", None, "P1"))
    plan.changes.append(RemoveUserAssignment("u2", None, "P1"))
    assert len(plan.affected_users(current)) == 11
    assert_refused(
        plan,
        current,
        LIMITS,
        "11 of 100 users (11.0%) would get a different policy, over the limit of 10% (it "
        "applies when more than 0 users move)",
    )


def test_group_removal_counts_members_and_unknown_membership_counts_nobody():
    current = tenant(members=[f"u{i}" for i in range(11)])
    removal = RemoveGroupAssignment("g-clin", "Clinicians", "P0", 1)
    assert len(Plan([removal]).affected_users(current)) == 11
    unknown = SetGroupAssignment("g-unknown", "Unknown members", "P0", 2)
    assert Plan([unknown]).affected_users(current) == set()


def test_members_outside_the_directory_keep_the_share_at_most_whole():
    current = tenant(n_users=0, members=["x1", "x2"])
    plan = Plan([RemoveGroupAssignment("g-clin", "Clinicians", "P0", 1)])
    assert_refused(
        plan,
        current,
        LIMITS,
        "2 of 2 users (100.0%) would get a different policy, over the limit of 10% (it applies "
        "when more than 0 users move)",
    )


def test_fractional_limit_is_shown_exactly():
    limits = SafetyLimits(max_user_change_share=0.125, user_change_floor=0)
    assert_refused(
        Plan(direct_changes(13)),
        tenant(),
        limits,
        "13 of 100 users (13.0%) would get a different policy, over the limit of 12.5% (it "
        "applies when more than 0 users move)",
    )


# ------------------------------------------------------------------ the floor under the share


def test_a_small_clinic_assigning_the_pharmacists_group_needs_no_force():
    """11 of 60 users (18%) move: a routine change, under the default floor of 50 users."""
    members = [f"u{i}" for i in range(11)]
    current = tenant(n_users=60, members=members)
    plan = Plan([RemoveGroupAssignment("g-clin", "Clinicians", "P0", 1)])
    assert len(plan.affected_users(current)) == 11
    assert SafetyLimits().user_change_floor == 50
    assert_allowed(plan, current, SafetyLimits())


def test_the_share_limit_passes_exactly_at_the_floor():
    limits = SafetyLimits(max_user_change_share=0.10, user_change_floor=50)
    assert_allowed(Plan(direct_changes(50)), tenant(n_users=100), limits)


@pytest.mark.parametrize(
    ("moved", "users", "message"),
    [
        # One past the floor: the share counts, and the refusal names the floor.
        (51, 100, "51 of 100 users (51.0%)"),
        # Moving most of a hospital (Nursing to the Kitchen policy) still needs --force.
        (524, 2000, "524 of 2000 users (26.2%)"),
    ],
)
def test_above_the_floor_the_share_limit_refuses_with_the_floor_in_the_message(
    moved, users, message
):
    assert_refused(
        Plan(direct_changes(moved)),
        tenant(n_users=users),
        SafetyLimits(),
        f"{message} would get a different policy, over the limit of 10% (it applies when more "
        "than 50 users move)",
    )


def test_above_the_floor_within_the_share_passes():
    limits = SafetyLimits(max_user_change_share=0.10, user_change_floor=50)
    assert_allowed(Plan(direct_changes(60)), tenant(n_users=1000), limits)


# ------------------------------------------------------------------ clinical settings


def test_turning_off_read_receipts_in_a_used_policy_needs_force():
    plan = Plan([UpdatePolicy("P0", {"ReadReceiptsEnabledType": ("Everyone", "None")})])
    assert_refused(
        plan,
        tenant(),
        LIMITS,
        "turns ReadReceiptsEnabledType off ('None') in policy P0, which is in use",
    )


def test_turning_off_priority_in_global_needs_force():
    plan = Plan([UpdatePolicy("Global", {"AllowPriorityMessages": (True, False)})])
    assert_refused(
        plan,
        tenant(),
        LIMITS,
        "turns AllowPriorityMessages off (False) in policy Global, which is in use",
    )


def test_policy_in_use_through_a_direct_assignment():
    current = tenant(direct=["u5"])
    plan = Plan([UpdatePolicy("p1", {"AllowPriorityMessages": (True, False)})])
    assert policies_in_use(current) == {"global", "p0", "p1"}
    assert plan.unsafe_reasons(current, LIMITS) == [
        "turns AllowPriorityMessages off (False) in policy p1, which is in use"
    ]
    assert_allowed(plan, tenant(), LIMITS)  # nobody has P1 there


def test_unused_policy_and_harmless_values_pass():
    plan = Plan(
        [
            UpdatePolicy("P7", {"ReadReceiptsEnabledType": ("Everyone", "None")}),
            UpdatePolicy("P0", {"ReadReceiptsEnabledType": ("None", "UserPreference")}),
            UpdatePolicy("Global", {"AllowPriorityMessages": (False, True)}),
        ]
    )
    assert_allowed(plan, tenant(), LIMITS)


def test_new_policy_without_priority_assigned_in_the_same_plan_needs_force():
    create = CreatePolicy("Kitchen", {"AllowPriorityMessages": False})
    assert_allowed(Plan([create]), tenant(), LIMITS)
    plan = Plan([create, SetUserAssignment("u1", None, "kitchen")])
    assert plan.unsafe_reasons(tenant(), LIMITS) == [
        "creates policy Kitchen with AllowPriorityMessages off (False) and assigns it in this plan",
        "1 user(s) would lose AllowPriorityMessages (moving from Global to Kitchen)",
    ]
    with pytest.raises(UnsafePlanError):
        plan.raise_if_unsafe(tenant(), LIMITS, force=False)
    plan.raise_if_unsafe(tenant(), LIMITS, force=True)


def test_protection_can_be_switched_off_in_the_file():
    plan = Plan([UpdatePolicy("Global", {"ReadReceiptsEnabledType": ("Everyone", "None")})])
    limits = SafetyLimits(protect_clinical_settings=False)
    assert_allowed(plan, tenant(), limits)


def test_every_reason_is_listed_and_force_lifts_them_all():
    plan = Plan(
        [UpdatePolicy("Global", {"AllowPriorityMessages": (True, False)})]
        + direct_changes(11)
        + [DeletePolicy(f"P{i}") for i in range(2, 6)]
    )
    reasons = plan.unsafe_reasons(tenant(), LIMITS)
    assert len(reasons) == 3
    with pytest.raises(UnsafePlanError) as err:
        plan.raise_if_unsafe(tenant(), LIMITS, force=False)
    assert all(r in str(err.value) for r in reasons)
    plan.raise_if_unsafe(tenant(), LIMITS, force=True)


def test_moving_a_group_or_users_to_a_policy_with_priority_off_needs_force():
    from factories import desired as make_desired
    from factories import tenant as make_tenant

    from bridge.plan import diff
    from bridge.state import SafetyLimits

    on = {"AllowPriorityMessages": True, "ReadReceiptsEnabledType": "Everyone"}
    off = {"AllowPriorityMessages": False, "ReadReceiptsEnabledType": "Everyone"}
    current = make_tenant(
        {"Clinical": on, "Kitchen": off},
        groups=[(1, "Clinical")],
        users={2: "Clinical", 3: "Clinical"},
    )
    want = make_desired(
        {"Clinical": on, "Kitchen": off},
        groups=[("Group 1", "Kitchen", 1)],
        users=[
            ("user2@northwind-health.org", "Kitchen"),
            ("user3@northwind-health.org", "Kitchen"),
        ],
    )
    plan = diff(current, want)
    reasons = plan.unsafe_reasons(current, SafetyLimits(max_user_change_share=1.0))
    assert "moves group Group 1 from Clinical to Kitchen, which has AllowPriorityMessages off" in (
        reasons
    )
    assert "2 user(s) would lose AllowPriorityMessages (moving from Clinical to Kitchen)" in (
        reasons
    )
    limits = SafetyLimits(max_user_change_share=1.0, protect_clinical_settings=False)
    assert plan.unsafe_reasons(current, limits) == []


def test_a_new_assignment_that_takes_priority_away_needs_force():
    from factories import desired as make_desired
    from factories import tenant as make_tenant

    from bridge.plan import diff
    from bridge.state import SafetyLimits

    on = {"AllowPriorityMessages": True}
    off = {"AllowPriorityMessages": False}
    # Users 1 and 2 get Global (priority on); a new group assignment and a new direct one move
    # them to Kitchen, which has it off.
    current = make_tenant({"Global": on, "Kitchen": off}, members={5: [1]})
    want = make_desired(
        {"Kitchen": off},
        groups=[("Group 5", "Kitchen", 1)],
        users=[("user2@northwind-health.org", "Kitchen")],
    )
    reasons = diff(current, want).unsafe_reasons(current, SafetyLimits(max_user_change_share=1.0))
    assert reasons == ["2 user(s) would lose AllowPriorityMessages (moving from Global to Kitchen)"]


# --------------------------------------------------------------------------- saved plan files


def saved_plan(safety=None):
    import datetime as dt

    from bridge import planfile

    plan = Plan(
        [DeletePolicy("P1"), DeletePolicy("P2")],
        "tenant-1",
        "checksum-1",
        "desired-1",
        safety=safety or SafetyLimits(),
    )
    made = dt.datetime(2025, 3, 1, 6, 0, tzinfo=dt.timezone.utc)
    return planfile.dumps(plan, now=lambda: made)


def test_a_saved_plan_reads_back_with_its_time_and_digest():
    import json

    from bridge import planfile

    text = saved_plan()
    data = json.loads(text)
    assert data["digest"].startswith("sha256:") and data["created_at"] == (
        "2025-03-01T06:00:00.000+00:00"
    )
    saved = planfile.loads(text)
    assert [c.kind for c in saved.plan.changes] == ["delete_policy", "delete_policy"]
    assert saved.created_at.isoformat() == "2025-03-01T06:00:00+00:00"


@pytest.mark.parametrize(
    "field, value",
    [
        ("safety", {"max_policy_deletes": 100, "max_user_change_share": 1.0}),
        ("changes", [{"kind": "delete_policy", "policy": "P9"}]),
        ("state_checksum", "another"),
        ("tenant_id", "tenant-2"),
        ("desired_sha256", "other-file"),
        ("created_at", "2030-01-01T00:00:00+00:00"),
        ("schema_version", 1.0),
    ],
)
def test_an_edited_plan_file_is_refused(field, value):
    import json

    from bridge import planfile
    from bridge.errors import PlanError

    data = json.loads(saved_plan())
    data[field] = value
    with pytest.raises(
        PlanError, match="the plan file was changed after it was made: run plan --out again"
    ):
        planfile.loads(json.dumps(data), "reviewed.plan")


def test_a_plan_file_without_a_digest_is_refused():
    import json

    from bridge import planfile
    from bridge.errors import PlanError

    data = json.loads(saved_plan())
    del data["digest"]
    with pytest.raises(PlanError, match="has no digest"):
        planfile.loads(json.dumps(data))


def test_saved_limits_never_looser_than_the_defaults_unless_apply_says_so():
    from bridge import planfile

    loose = SafetyLimits(
        max_policy_deletes=50, max_user_change_share=0.9, protect_clinical_settings=False
    )
    assert planfile.effective_limits(loose) == SafetyLimits()
    strict = SafetyLimits(max_policy_deletes=1, max_user_change_share=0.05)
    assert planfile.effective_limits(strict) == strict
    assert planfile.effective_limits(
        loose, max_policy_deletes=7, max_user_change_share=0.5
    ) == SafetyLimits(7, 0.5, True)


def test_a_saved_floor_only_gets_stricter_unless_apply_says_so():
    """A higher floor is looser (the share limit applies to fewer changes): clamped down to the
    default; a lower one is kept; only apply's own option raises it."""
    from bridge import planfile

    assert planfile.effective_limits(SafetyLimits(user_change_floor=10**7)).user_change_floor == 50
    assert planfile.effective_limits(SafetyLimits(user_change_floor=51)).user_change_floor == 50
    assert planfile.effective_limits(SafetyLimits(user_change_floor=50)).user_change_floor == 50
    assert planfile.effective_limits(SafetyLimits(user_change_floor=0)).user_change_floor == 0
    raised = planfile.effective_limits(SafetyLimits(user_change_floor=0), user_change_floor=500)
    assert raised.user_change_floor == 500


@pytest.mark.parametrize(
    "floor", [-1, 1.5, float("nan"), float("inf"), "50", True, None, 10**7 + 1]
)
def test_a_saved_floor_that_is_not_a_whole_number_is_refused(floor):
    from bridge import planfile
    from bridge.errors import PlanError

    with pytest.raises(PlanError, match=r"user_change_floor: .*: the plan file was"):
        planfile.effective_limits(SafetyLimits(user_change_floor=floor))


def test_a_saved_plan_with_a_raised_floor_still_refuses_what_the_default_floor_refuses():
    import json

    from bridge import planfile
    from bridge.errors import UnsafePlanError
    from bridge.planfile import digest

    plan = Plan(direct_changes(51), safety=SafetyLimits(user_change_floor=100))
    data = json.loads(planfile.dumps(plan))
    data["digest"] = digest(data)  # whoever edits the file can recompute it
    saved = planfile.loads(json.dumps(data))
    limits = planfile.effective_limits(saved.plan.safety)
    with pytest.raises(UnsafePlanError, match=r"51 of 100 users .* more than 50 users move"):
        saved.plan.raise_if_unsafe(tenant(), limits, force=False)


def test_plan_out_names_each_limit_apply_plan_will_not_use_and_its_option():
    from bridge import planfile

    assert planfile.looser_than_applied(SafetyLimits()) == []
    assert planfile.looser_than_applied(SafetyLimits(1, 0.05, True)) == []
    notes = planfile.looser_than_applied(SafetyLimits(5, 0.25, False, 200))
    assert len(notes) == 4
    assert "safety.max_policy_deletes (5) but the default 3" in notes[0]
    assert notes[0].endswith("apply --plan PLAN --max-policy-deletes 5")
    assert "safety.max_user_change_share (0.25) but the default 0.1" in notes[1]
    assert notes[1].endswith("--max-user-change-share 0.25")
    assert "safety.user_change_floor (200) but the default 50" in notes[2]
    assert notes[2].endswith("apply --plan PLAN --user-change-floor 200")
    assert "safety.protect_clinical_settings: false" in notes[3] and "--force" in notes[3]
    assert planfile.looser_than_applied(SafetyLimits(user_change_floor=0)) == []


# ------------------------------------------------------------------ the floor in the file


def test_the_file_sets_the_floor_and_validation_refuses_a_bad_one(tmp_path):
    from bridge.desired import load_desired
    from bridge.errors import DesiredStateError

    good = tmp_path / "good.yaml"
    good.write_text("safety:\n  user_change_floor: 100\n")
    assert load_desired(str(good)).safety.user_change_floor == 100
    bad = tmp_path / "bad.yaml"
    bad.write_text("safety:\n  user_change_floor: -3\n")
    with pytest.raises(DesiredStateError) as err:
        load_desired(str(bad))
    assert (
        f"{bad}:2:22: error: user_change_floor: -3 is out of range; give a whole number of users "
        "from 0 to 10,000,000 (0: the share limit always applies)"
    ) in str(err.value)


def test_a_refusal_shows_tenant_names_escaped_one_reason_per_line():
    """The refusal names groups from the tenant: an escape sequence or a line break in a group's
    name must not hide a reason or forge one."""
    from factories import TENANT, gid, uid
    from factories import desired as make_desired

    from bridge.plan import diff
    from bridge.state import Directory, Group, GroupAssignment, Policy, TenantState, User

    hostile = "Group 1\x1b[2K\r\n  - nothing else"
    on = {"AllowPriorityMessages": True, "ReadReceiptsEnabledType": "Everyone"}
    off = {"AllowPriorityMessages": False, "ReadReceiptsEnabledType": "Everyone"}
    directory = Directory()
    directory.add_user(User(uid(0), "user0@northwind-health.org"))
    directory.add_group(Group(gid(1), hostile, (uid(0),)))
    current = TenantState.build(
        TENANT,
        [Policy("Global", {}), Policy("Clinical", on), Policy("Kitchen", off)],
        [GroupAssignment(gid(1), "Clinical", 1, hostile)],
        [],
        directory,
    )
    want = make_desired({"Clinical": on, "Kitchen": off}, groups=[(gid(1), "Kitchen", 1)])
    plan = diff(current, want)
    limits = SafetyLimits(max_user_change_share=1.0)
    with pytest.raises(UnsafePlanError) as err:
        plan.raise_if_unsafe(current, limits, force=False)
    message = str(err.value)
    assert "\x1b" not in message and "\r" not in message
    reasons = [line for line in message.splitlines() if line.startswith("  - ")]
    assert len(reasons) == len(plan.unsafe_reasons(current, limits))
    assert any("Group 1\\x1b[2K\\x0d\\x0a  - nothing else" in line for line in reasons)
