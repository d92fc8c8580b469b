"""diff() and Plan: identities, ranks, ordering, deletion safety, and the round trip property."""

from __future__ import annotations

import pytest
from factories import desired, gid, tenant, uid
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.desired import parse_desired
from bridge.errors import PlanError
from bridge.export import export_yaml
from bridge.plan import (
    CreatePolicy,
    DeletePolicy,
    Plan,
    RemoveGroupAssignment,
    SetGroupAssignment,
    SetUserAssignment,
    UpdatePolicy,
    diff,
    simulate,
    state_checksum,
)
from bridge.roles import Role
from bridge.state import Policy, Prune, TenantState


def test_enum_case_and_tag_prefix_are_not_drift() -> None:
    current = tenant({"Tag:Clinical": {"GiphyRatingType": "Strict", "Key": {"x": 1}}})
    want = desired({"clinical": {"GiphyRatingType": "STRICT"}})
    assert not diff(current, want)


def test_only_named_settings_are_managed() -> None:
    current = tenant({"Clinical": {"AllowGiphy": True, "AllowMemes": True}})
    plan = diff(current, desired({"Clinical": {"AllowGiphy": False}}))
    (change,) = plan.changes
    assert isinstance(change, UpdatePolicy)
    assert dict(change.changes) == {"AllowGiphy": (True, False)}


def test_ranks_compare_by_relative_order() -> None:
    current = tenant({"A": {}, "B": {}, "C": {}}, groups=[(1, "A"), (2, "B"), (3, "C")])
    want = desired(
        {"A": {}, "B": {}, "C": {}},
        groups=[("Group 1", "A", 1), ("Group 2", "B", 5), ("Group 3", "C", 10)],
    )
    assert not diff(current, want)


def test_reordering_moves_the_fewest_groups_and_converges() -> None:
    current = tenant({"A": {}, "B": {}, "C": {}}, groups=[(1, "A"), (2, "B"), (3, "C")])
    want = desired(
        {"A": {}, "B": {}, "C": {}},
        groups=[("Group 3", "C", 1), ("Group 1", "A", 2), ("Group 2", "B", 3)],
    )
    plan = diff(current, want)
    assert [type(c) for c in plan.changes] == [SetGroupAssignment]
    assert plan.changes[0].rank == 1  # type: ignore[attr-defined]
    assert not diff(simulate(current, plan), want)


def test_undeclared_assignments_keep_their_place_and_order_still_converges() -> None:
    # An undeclared group at rank 1: a static "rank = position in the file" would misplace A.
    current = tenant(
        {"A": {}, "B": {}, "C": {}, "U": {}},
        groups=[(9, "U"), (1, "A"), (2, "B"), (3, "C")],
    )
    want = desired(
        {"A": {}, "B": {}, "C": {}},
        groups=[("Group 2", "B", 1), ("Group 3", "C", 2), ("Group 1", "A", 3)],
    )
    plan = diff(current, want)
    after = simulate(current, plan)
    assert [g.group_id for g in after.ranked_groups()] == [gid(9), gid(2), gid(3), gid(1)]
    assert not diff(after, want)


def test_policies_are_created_before_assignment_and_deleted_after_removal() -> None:
    current = tenant({"Old": {}}, groups=[(1, "Old")], users={1: "Old"})
    want = desired(
        {"New": {"AllowGiphy": False}, "Old": None},
        groups=[("Group 1", "New", 1)],
        users=[("user1@northwind-health.org", None)],
    )
    plan = diff(current, want)
    kinds = [c.kind for c in plan.changes]
    assert kinds == [
        "create_policy",
        "set_group_assignment",
        "remove_user_assignment",
        "delete_policy",
    ]
    assert not diff(simulate(current, plan), want)


def test_deleting_a_policy_still_assigned_is_a_plan_error_naming_them() -> None:
    current = tenant({"Old": {}}, groups=[(4, "Old")], users={2: "Old"})
    with pytest.raises(PlanError) as info:
        diff(current, desired({"Old": None}))
    text = str(info.value)
    assert "group Group 4 is still assigned to it" in text
    assert "user2@northwind-health.org" in text


def test_prune_never_touches_global_or_builtins() -> None:
    current = tenant({"Default": {}, "EduStudent": {}, "Stray": {}})
    plan = diff(current, desired({}, prune=Prune(policies=True)))
    assert [(c.kind, c.name) for c in plan.changes] == [("delete_policy", "Stray")]  # type: ignore[attr-defined]


def test_unknown_and_ambiguous_groups_list_candidates() -> None:
    current = tenant({"A": {}})
    from bridge.state import Group

    current.directory.add_group(Group("dup-1", "Volunteers"))
    current.directory.add_group(Group("dup-2", "Volunteers"))
    want = desired({"A": {}}, groups=[("Volunteers", "A", 1), ("Nobody", "A", 2)])
    with pytest.raises(PlanError) as info:
        diff(current, want)
    text = str(info.value)
    assert (
        "group name 'Volunteers' matches 2 groups: Volunteers (dup-1), Volunteers (dup-2)" in text
    )
    assert "group 'Nobody' is not in the state that was read" in text
    current.directory.searched_groups.add("Nobody")  # a live read looked it up and found none
    with pytest.raises(PlanError, match="no group named or with id 'Nobody' in the tenant"):
        diff(current, want)


def test_the_same_group_or_user_by_name_and_by_id_is_refused() -> None:
    current = tenant({"A": {}, "B": {}}, users={1: "A"})
    want = desired({"A": {}, "B": {}}, groups=[("Group 1", "A", 1), (gid(1), "B", 2)])
    with pytest.raises(PlanError, match="is the same group as 'Group 1'"):
        diff(current, want)
    want = desired(
        {"A": {}, "B": {}}, users=[("user1@northwind-health.org", "A"), (uid(1).upper(), "B")]
    )
    with pytest.raises(PlanError, match=r"is the same user as 'user1@northwind-health\.org'"):
        diff(current, want)


def test_unknown_users_fail_the_plan() -> None:
    with pytest.raises(PlanError, match=r"1 user\(s\) not found in the tenant: ghost@x.org"):
        diff(tenant({"A": {}}), desired({"A": {}}, users=[("ghost@x.org", "A")]))


def test_user_changes_and_summary() -> None:
    current = tenant({"A": {}, "B": {}}, users={1: "A"})
    plan = diff(
        current,
        desired({"A": {}, "B": {}}, users=[("user1@northwind-health.org", "b"), (uid(2), "A")]),
    )
    assert [type(c) for c in plan.changes] == [SetUserAssignment, SetUserAssignment]
    assert plan.summary == {"add": 1, "change": 1, "destroy": 0}
    assert plan.changes[0].policy == "B"  # type: ignore[attr-defined]


def test_plan_data_round_trips() -> None:
    current = tenant({"Old": {}, "A": {"AllowGiphy": True}}, groups=[(1, "A"), (2, "Old")])
    want = desired(
        {"A": {"AllowGiphy": False}, "N": {"AllowMemes": False}, "Old": None},
        groups=[("Group 1", "A", 1), ("Group 2", "N", 2)],
    )
    plan = diff(current, want)
    again = Plan.from_data(plan.data)
    assert again.data == plan.data
    assert {type(c) for c in again.changes} >= {CreatePolicy, UpdatePolicy, DeletePolicy}


def test_checksum_follows_the_state() -> None:
    a = tenant({"A": {"AllowGiphy": True}})
    b = tenant({"A": {"AllowGiphy": False}})
    assert state_checksum(a) == state_checksum(tenant({"A": {"AllowGiphy": True}}))
    assert state_checksum(a) != state_checksum(b)


def test_group_removal_on_prune() -> None:
    current = tenant({"A": {}}, groups=[(1, "A"), (2, "A")])
    plan = diff(
        current,
        desired({"A": {}}, groups=[("Group 1", "A", 1)], prune=Prune(group_assignments=True)),
    )
    assert [type(c) for c in plan.changes] == [RemoveGroupAssignment]


# --------------------------------------------------------------------------- properties

NAMES = ["Clinical", "Nursing", "Kitchen", "Support", "Pilot"]
VALUES = st.fixed_dictionaries(
    {},
    optional={
        "AllowGiphy": st.booleans(),
        "AllowPriorityMessages": st.booleans(),
        "ReadReceiptsEnabledType": st.sampled_from(["Everyone", "None", "UserPreference"]),
    },
)


@st.composite
def states(draw: st.DrawFn) -> tuple[TenantState, object]:
    cur_names = draw(st.lists(st.sampled_from(NAMES), unique=True))
    cur_policies = {n: draw(VALUES) for n in cur_names}
    cur_groups = draw(st.lists(st.integers(0, 7), unique=True, max_size=6))
    cur = tenant(
        cur_policies,
        groups=[(g, draw(st.sampled_from(cur_names))) for g in cur_groups] if cur_names else [],
        users={
            u: draw(st.sampled_from(cur_names))
            for u in draw(st.lists(st.integers(0, 9), unique=True, max_size=5))
        }
        if cur_names
        else {},
    )
    want_names = draw(st.lists(st.sampled_from(NAMES), unique=True, min_size=1))
    want_policies: dict[str, dict | None] = {n: draw(VALUES) for n in want_names}
    want_groups = draw(st.lists(st.integers(0, 7), unique=True, max_size=6))
    ranks = draw(st.lists(st.integers(1, 20), min_size=len(want_groups), max_size=len(want_groups)))
    groups = [
        (f"Group {g}", draw(st.sampled_from(want_names)), r)
        for g, r in zip(want_groups, ranks, strict=True)
    ]
    users = [
        (f"user{u}@northwind-health.org", draw(st.sampled_from([*want_names, None])))
        for u in draw(st.lists(st.integers(0, 9), unique=True, max_size=6))
    ]
    prune = Prune(
        policies=draw(st.booleans()),
        group_assignments=draw(st.booleans()),
        user_assignments=draw(st.booleans()),
    )
    # Only prune what is consistent: policies still assigned cannot be deleted (a plan error).
    return cur, desired(want_policies, groups, users, prune)


@settings(max_examples=300, deadline=None)
@given(states())
def test_applying_the_plan_converges(pair: tuple[TenantState, object]) -> None:
    current, want = pair
    try:
        plan = diff(current, want)  # type: ignore[arg-type]
    except PlanError as exc:
        assert "still" in str(exc)  # only deletions blocked by assignments may refuse
        return
    after = simulate(current, plan)
    assert not diff(after, want).changes  # type: ignore[arg-type]


DEPARTMENTS = ["Nursing", "Medicine", "Kitchen", "Facilities"]


@st.composite
def states_with_roles(draw: st.DrawFn) -> tuple[TenantState, object]:
    """``states`` plus who people are (department, enabled) and a few roles over them."""
    current, want = draw(states())
    attributes = {
        i: {
            "department": draw(st.sampled_from(DEPARTMENTS)),
            "accountEnabled": draw(st.booleans()),
        }
        for i in range(10)
    }
    current = tenant(
        {p.name: dict(p.settings) for p in current.policies.values()},
        groups=[(int(g.group_id[-12:]), g.policy) for g in current.ranked_groups()],
        users={int(u.user_id[-12:]): u.policy for u in current.user_assignments.values()},
        attributes=attributes,
    )
    usable = [p.name for p in want.policies.values() if not p.absent] + ["Global"]
    roles = []
    for n in range(draw(st.integers(0, 3))):
        where: dict[str, tuple[object, ...]] = {
            "department": tuple(draw(st.lists(st.sampled_from(DEPARTMENTS), min_size=1)))
        }
        if draw(st.booleans()):
            where["accountEnabled"] = (draw(st.booleans()),)
        roles.append(Role(f"Role {n}", draw(st.sampled_from(usable)), where))
    want.roles = roles
    return current, want


@settings(max_examples=200, deadline=None)
@given(states_with_roles())
def test_applying_a_plan_with_roles_converges(pair: tuple[TenantState, object]) -> None:
    """Roles (first match, users: entries winning, disabled skipped, released assignments)
    reach a fixed point: after the plan, the same file plans nothing. Budget: 200 examples."""
    current, want = pair
    try:
        plan = diff(current, want)  # type: ignore[arg-type]
    except PlanError as exc:
        assert "still" in str(exc)
        return
    after = simulate(current, plan)
    assert not diff(after, want).changes  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(states())
def test_export_of_a_state_plans_to_nothing(pair: tuple[TenantState, object]) -> None:
    current, _ = pair
    exported = parse_desired(export_yaml(current), "export.yaml")
    assert not diff(current, exported).changes


def test_policy_raw_is_not_compared() -> None:
    assert Policy("A", {"x": 1}, raw={"Identity": "Tag:A"}) == Policy("A", {"x": 1})


def test_saved_plan_keeps_the_files_safety_limits() -> None:
    from dataclasses import replace

    want = desired({"A": {"AllowGiphy": False}})
    want.safety = replace(want.safety, max_policy_deletes=0, max_user_change_share=0.5)
    plan = diff(tenant({"A": {"AllowGiphy": True}}), want)
    again = Plan.from_data(plan.data)
    assert again.safety == want.safety
    assert plan.data["safety"]["max_policy_deletes"] == 0


def test_extra_settings_match_the_services_spelling() -> None:
    current = tenant({"A": {"AllowBrandNewThing": True}})
    assert not diff(current, desired({"A": {"allowbrandnewthing": True}}))
    (change,) = diff(current, desired({"A": {"ALLOWBRANDNEWTHING": False}})).changes
    assert isinstance(change, UpdatePolicy)
    assert dict(change.changes) == {"AllowBrandNewThing": (True, False)}


def test_a_saved_plan_that_deletes_global_is_refused() -> None:
    with pytest.raises(PlanError, match="deletes the Global policy"):
        Plan.from_data(
            {"schema_version": 1, "changes": [{"kind": "delete_policy", "policy": "global"}]}
        )


def test_export_leaves_out_what_a_file_cannot_hold_and_says_so() -> None:
    current = tenant(
        {"Clinical": {"AllowGiphy": None, "GiphyRatingType": "Extreme", "AllowMemes": False}},
        users={1: "Global", 2: "Clinical"},
    )
    text = export_yaml(current)
    exported = parse_desired(text, "export.yaml")  # loads back
    assert not diff(current, exported).changes
    assert "AllowGiphy is null in the tenant, which teams-bridge cannot write" in text
    assert "GiphyRatingType is 'Extreme' in the tenant, a value teams-bridge does not know" in text
    assert "user user1@northwind-health.org: directly assigned Global" in text
    clinical = exported.policy("Clinical")
    assert clinical is not None and dict(clinical.settings) == {"AllowMemes": False}


def test_assignments_of_principals_gone_from_the_directory_resolve_by_id() -> None:
    # Group 20 and user 30 hold assignments but are not in the directory (deleted objects).
    current = tenant({"Clinical": {}}, groups=[(20, "Clinical")], users={30: "Clinical"})
    assert not diff(current, parse_desired(export_yaml(current), "export.yaml")).changes
    plan = diff(
        current,
        desired(
            {"Clinical": {}},
            groups=[(gid(20).upper(), "Clinical", 1)],
            users=[(uid(30), None)],
        ),
    )
    assert [type(c).__name__ for c in plan.changes] == ["RemoveUserAssignment"]
    plan = diff(current, desired({"Clinical": {}}, groups=[(gid(20), "Global", 1)]))
    (change,) = plan.changes
    assert isinstance(change, SetGroupAssignment) and change.group_id == gid(20)


def test_a_plan_past_the_services_64_group_assignments_is_refused() -> None:
    policies = {f"P{i}": {} for i in range(70)}
    current = tenant(policies, groups=[(i, f"P{i}") for i in range(60)], n_groups=70)
    at_limit = [(f"Group {i}", f"P{i}", i + 1) for i in range(60, 64)]
    assert len(diff(current, desired(policies, groups=at_limit)).changes) == 4
    with pytest.raises(PlanError, match="would hold 65 group assignments of messaging policies"):
        diff(current, desired(policies, groups=[*at_limit, ("Group 64", "P64", 65)]))
    # Pruning the undeclared ones makes room.
    pruned = desired(policies, groups=at_limit, prune=Prune(group_assignments=True))
    assert diff(current, pruned).changes


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "create_policy", "settings": {}},  # no policy
        {"kind": "update_policy", "policy": "A", "changes": {"AllowGiphy": True}},
        {"kind": "set_group_assignment", "group_id": gid(1), "policy": "A", "rank": "x"},
        {"kind": "set_user_assignment", "user_id": 7, "policy": "A"},
        {"kind": "remove_group_assignment", "group_id": gid(1), "from": None},
        {"kind": "delete_policy", "policy": ["A"]},
        "delete_policy",
    ],
)
def test_a_hand_edited_saved_plan_is_a_clear_error(change: object) -> None:
    data = {**diff(tenant(), desired({"A": {}})).data, "changes": [change]}
    with pytest.raises(PlanError, match="make it again with 'plan --out'"):
        Plan.from_data(data)


# --------------------------------------------------------------------------- plan's safety check


def _plan_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from bridge.cli import main

    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_plan_counts_the_members_apply_counts_and_says_what_apply_refuses(
    capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    """Against a snapshot holding members: Nursing to the Kitchen policy moves the group's
    members, and plan lists the share-of-users refusal apply would give."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    snap = root / "examples" / "northwind-snapshot.json"
    text = (root / "examples" / "northwind.yaml").read_text()
    kitchen = tmp_path / "kitchen.yaml"
    kitchen.write_text(
        text.replace(
            "{group: Nursing, policy: Nursing, rank: 3}",
            "{group: Nursing, policy: Kitchen, rank: 3}",
        )
    )
    code, out, err = _plan_cli(
        capsys, "--snapshot", str(snap), "plan", str(kitchen), "--format", "json"
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["users_moved"] > 0 and data["users_total"] > data["users_moved"]
    assert any("would get a different policy" in r for r in data["needs_force"]), data
    assert f"this plan gives {data['users_moved']} of {data['users_total']} users" in err

    # An older snapshot without members: plan still plans, and says what it could not count.
    bare = json.loads(snap.read_text())
    for group in bare["groups"]:
        group.pop("members", None)
    old = tmp_path / "old-snapshot.json"
    old.write_text(json.dumps(bare))
    code, out, err = _plan_cli(capsys, "--snapshot", str(old), "plan", str(kitchen))
    assert code == 0, err
    assert "are not in this snapshot; the share of users this plan moves counts only" in err
