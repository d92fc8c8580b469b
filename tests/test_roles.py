"""Matching user attributes against roles (bridge/roles.py): lists, wildcards, case, except,
first match in file order, disabled accounts, guests, missing and dotted attributes."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.desired import parse_desired
from bridge.roles import Role, RoleMatcher, attributes_from, graph_select, select


def _roles(*roles: Role) -> RoleMatcher:
    return RoleMatcher(list(roles))


NURSES = Role("Nurses", "Clinical", {"department": ("Nursing", "Emergency Medicine")})
TITLED = Role("Titled", "Clinical", {"jobTitle": ("*Nurse*", "Physician ?")})


def _matches(matcher: RoleMatcher, **attributes: Any) -> list[str]:
    return [matcher.roles[i].name for i in matcher.matches(attributes)]


def test_a_list_is_any_of_and_case_is_ignored() -> None:
    m = _roles(NURSES)
    assert _matches(m, department="nursing") == ["Nurses"]
    assert _matches(m, department="EMERGENCY MEDICINE") == ["Nurses"]
    assert _matches(m, department="Nursing Admin") == []


def test_wildcards_star_and_question_mark_only() -> None:
    m = _roles(TITLED)
    assert _matches(m, jobTitle="Registered Nurse") == ["Titled"]
    assert _matches(m, jobTitle="nurse") == ["Titled"]
    assert _matches(m, jobTitle="Physician 2") == ["Titled"]
    assert _matches(m, jobTitle="Physician 22") == []
    brackets = _roles(Role("B", "P", {"jobTitle": ("[RN]*",)}))
    assert _matches(brackets, jobTitle="[RN] charge") == ["B"]
    assert _matches(brackets, jobTitle="R charge") == []


def test_every_where_key_must_match_and_except_leaves_out() -> None:
    role = Role(
        "ED nurses",
        "Clinical",
        {"department": ("Emergency Medicine",), "jobTitle": ("*",)},
        {"employeeType": ("Contractor",)},
    )
    m = _roles(role)
    assert _matches(m, department="Emergency Medicine", jobTitle="RN") == ["ED nurses"]
    assert _matches(m, department="Emergency Medicine") == []  # no job title: * needs one
    assert (
        _matches(m, department="Emergency Medicine", jobTitle="RN", employeeType="contractor") == []
    )


def test_first_match_in_file_order_decides_and_several_are_listed() -> None:
    roles = [TITLED, NURSES]
    users = [
        ("u1", {"department": "Nursing", "jobTitle": "Nurse"}),
        ("u2", {"department": "Nursing", "jobTitle": "Porter"}),
        ("u3", {"department": "Kitchen"}),
    ]
    sel = select(roles, users)
    assert sel.by_user == {"u1": "Titled", "u2": "Nurses"}
    assert sel.several == {"u1": ("Titled", "Nurses")}
    assert sel.counts == {"Titled": 1, "Nurses": 1}
    assert sel.empty == []
    assert select([*roles, Role("Nobody", "P", {"city": ("Atlantis",)})], users).empty == ["Nobody"]


def test_users_entries_win_over_roles() -> None:
    sel = select([NURSES], [("u1", {"department": "Nursing"})], skip={"u1"})
    assert sel.by_user == {}
    assert sel.matched == {"Nurses": 1}  # selected, so the role is not reported as empty


def test_disabled_accounts_are_skipped_unless_where_names_account_enabled() -> None:
    leavers = Role("Disabled", "Restricted", {"accountEnabled": (False,)})
    m = _roles(NURSES, leavers)
    assert _matches(m, department="Nursing", accountEnabled=False) == ["Disabled"]
    assert _matches(m, department="Nursing", accountEnabled=True) == ["Nurses"]
    assert _matches(m, department="Nursing") == ["Nurses"]  # not known to be disabled
    assert "disabled" in m.why_not({"department": "Nursing", "accountEnabled": False}, 0)


def test_guests_match_like_anyone_and_can_be_excepted() -> None:
    staff = Role("Staff", "Clinical", {"department": ("Nursing",)}, {"userType": ("Guest",)})
    m = _roles(NURSES, staff)
    guest = {"department": "Nursing", "userType": "Guest"}
    assert _matches(m, **guest) == ["Nurses"]
    assert _matches(_roles(staff), **guest) == []


def test_missing_attributes_match_nothing_and_why_not_says_so() -> None:
    m = _roles(NURSES)
    assert _matches(m) == []
    assert m.why_not({}, 0) == "department is missing, not [Nursing, Emergency Medicine]"
    assert m.why_not({"department": "Kitchen"}, 0).startswith("department is 'Kitchen'")


def test_dotted_attributes_read_from_graph_objects() -> None:
    obj = {
        "id": "1",
        "EmployeeOrgData": {"division": "Surgery", "costCenter": None},
        "onPremisesExtensionAttributes": {"extensionAttribute7": "RN", "extensionAttribute8": ""},
        "accountEnabled": False,
    }
    names = [
        "employeeOrgData.division",
        "employeeOrgData.costCenter",
        "onPremisesExtensionAttributes.extensionAttribute7",
        "onPremisesExtensionAttributes.extensionAttribute8",
        "accountEnabled",
        "jobTitle",
    ]
    assert attributes_from(obj, names) == {
        "employeeOrgData.division": "Surgery",
        "onPremisesExtensionAttributes.extensionAttribute7": "RN",
        "accountEnabled": False,
    }
    assert graph_select(names) == [
        "employeeOrgData",
        "onPremisesExtensionAttributes",
        "accountEnabled",
        "jobTitle",
    ]
    role = Role("X", "P", {"onPremisesExtensionAttributes.extensionAttribute7": ("rn",)})
    assert _matches(_roles(role), **{"onPremisesExtensionAttributes.extensionAttribute7": "RN"})


def test_the_desired_file_builds_roles_in_file_order() -> None:
    state = parse_desired(
        """\
policies:
  Clinical: {AllowPriorityMessages: true}
assignments:
  roles:
    - role: Clinicians
      policy: Clinical
      where: {department: [Nursing, Emergency Medicine], JobTitle: "*"}
      except: {employeeType: Contractor}
    - role: Support
      policy: Global
      where: {onpremisesextensionattributes.extensionattribute3: Facilities}
rules:
  clinicians: {roles: [clinicians], where: {jobTitle: "*Physician*"}}
"""
    )
    assert [r.name for r in state.roles] == ["Clinicians", "Support"]
    assert state.roles[0].where == {
        "department": ("Nursing", "Emergency Medicine"),
        "jobTitle": ("*",),
    }
    assert state.roles[0].except_ == {"employeeType": ("Contractor",)}
    assert state.roles[1].policy == "Global"
    assert state.rules.clinician_roles == ("Clinicians",)
    assert state.rules.clinician_where == {"jobTitle": ("*Physician*",)}
    assert state.user_attributes() == [
        "accountEnabled",
        "department",
        "employeeType",
        "jobTitle",
        "onPremisesExtensionAttributes.extensionAttribute3",
    ]


# --------------------------------------------------------------------------- planning

from factories import desired, tenant, uid  # noqa: E402

from bridge.plan import (  # noqa: E402
    RemoveUserAssignment,
    SetUserAssignment,
    diff,
)
from bridge.plan_view import render_plan  # noqa: E402

PEOPLE = {
    0: {"department": "Nursing", "jobTitle": "Registered Nurse", "accountEnabled": True},
    1: {"department": "Nursing", "jobTitle": "Charge Nurse"},
    2: {"department": "Nursing", "accountEnabled": False},  # a leaver not yet deleted
    3: {"department": "Kitchen", "jobTitle": "Cook"},
    4: {"department": "Medicine", "jobTitle": "Hospitalist"},
}


def _want(users: list[tuple[str, str | None]] | None = None) -> Any:
    want = desired({"Clinical": {}, "Support": {}}, users=users)
    want.roles = [
        Role("Clinicians", "Clinical", {"department": ("Nursing", "Medicine")}),
        Role("Support", "Support", {"department": ("Kitchen",)}),
    ]
    return want


def test_roles_become_direct_assignments_and_release_what_nobody_selects() -> None:
    # user 5 holds Clinical but no role selects them (moved to nothing); user 6 holds another
    # policy nobody's role gives: untouched (pruning is off).
    current = tenant(
        {"Clinical": {}, "Support": {}, "Other": {}},
        users={0: "Clinical", 5: "Clinical", 6: "Other", 2: "Clinical"},
        attributes=PEOPLE,
    )
    plan = diff(current, _want([("user4@northwind-health.org", "Support")]))
    sets = {c.user_id: (c.policy, c.existing_policy) for c in plan.of(SetUserAssignment)}
    removes = {c.user_id: c.policy for c in plan.of(RemoveUserAssignment)}
    assert sets == {
        uid(1): ("Clinical", None),
        uid(3): ("Support", None),
        uid(4): ("Support", None),  # the users: entry wins over role Clinicians
    }
    assert removes == {uid(5): "Clinical", uid(2): "Clinical"}  # disabled: skipped, released
    assert plan.roles is not None
    assert plan.roles.selection.by_user == {
        uid(0): "Clinicians",
        uid(1): "Clinicians",
        uid(3): "Support",
    }
    data = plan.data
    assert [r["count"] for r in data["roles"]] == [2, 1]
    assert {r["user"] for r in data["released"]} == {
        "user2@northwind-health.org",
        "user5@northwind-health.org",
    }
    text = render_plan(plan)
    assert "+ 1 person -> 'Clinical' by role Clinicians (department: [Nursing, Medicine])" in text
    assert "- 2 people lose 'Clinical': no role and no users: entry selects them any more" in text
    assert "user user4@northwind-health.org will be assigned 'Support' directly" in text
    assert "user user1@" not in text  # counted per role, never one line per person


def test_a_role_that_selects_nobody_is_a_warning() -> None:
    want = _want()
    want.roles.append(Role("Typo", "Clinical", {"department": ("Nursrng",)}))
    plan = diff(tenant({"Clinical": {}, "Support": {}}, attributes=PEOPLE), want)
    assert plan.notes == [
        "warning: role 'Typo' selects nobody (department: Nursrng): check the attribute values "
        "against the directory (teams-bridge explain USER shows a user's)"
    ]


def test_a_directory_read_without_attributes_is_refused_not_taken_for_nobody() -> None:
    from bridge.errors import PlanError

    with pytest.raises(PlanError, match="read without user attributes"):
        diff(tenant({"Clinical": {}, "Support": {}}, users={0: "Clinical"}), _want())


def test_a_global_role_takes_direct_assignments_away() -> None:
    want = _want()
    want.roles.insert(0, Role("Kitchen to groups", "Global", {"department": ("Kitchen",)}))
    plan = diff(
        tenant({"Clinical": {}, "Support": {}}, users={3: "Support"}, attributes=PEOPLE), want
    )
    assert [(c.user_id, c.policy) for c in plan.of(RemoveUserAssignment)] == [(uid(3), "Support")]


def test_role_changes_count_toward_the_safety_limits() -> None:
    from bridge.state import SafetyLimits

    plan = diff(tenant({"Clinical": {}, "Support": {}}, attributes=PEOPLE), _want())
    current = tenant({"Clinical": {}, "Support": {}}, attributes=PEOPLE)
    reasons = plan.unsafe_reasons(
        current, SafetyLimits(max_user_change_share=0.1, user_change_floor=0)
    )
    assert any("would get a different policy" in r for r in reasons)


def test_explain_names_the_role_and_the_values_or_why_not() -> None:
    from bridge.roles import explain_user

    roles = _want().roles
    role, reasons = explain_user(roles, PEOPLE[0])
    assert role == "Clinicians"
    assert reasons[0] == "role Clinicians selects the user (department: 'Nursing'): policy Clinical"
    assert reasons[1] == "role Support does not: department is 'Nursing', not Kitchen"
    role, reasons = explain_user(roles, PEOPLE[2])
    assert role is None
    assert "the account is disabled" in reasons[0]
    assert reasons[-1] == "no role selects the user: groups, then Global, decide"
    role, reasons = explain_user(roles, PEOPLE[0], "desired.yaml:9:7")
    assert role is None
    assert reasons == [
        "the users: entry at desired.yaml:9:7 decides this user; roles are not applied "
        "(role Clinicians would select them)"
    ]


def test_a_users_entry_decides_a_user_read_without_attributes() -> None:
    from dataclasses import replace

    current = tenant({"Clinical": {}, "Support": {}}, attributes=PEOPLE)
    bare = replace(current.directory.users[uid(9)], attributes=None)
    current.directory.add_user(bare)  # looked up by name, outside the listing
    plan = diff(current, _want([("user9@northwind-health.org", "Support")]))
    assert (uid(9), "Support") in [(c.user_id, c.policy) for c in plan.of(SetUserAssignment)]


def test_the_sandbox_changes_who_a_person_is_between_runs() -> None:
    from bridge.sandbox import SandboxConfig
    from bridge.sandbox.seed import build_hospital

    t = build_hospital(SandboxConfig(users=60, seed=3))
    upn = t.upns[0]
    before = t.digest()
    t.set_user_attributes(
        upn,
        department="Nursing",
        jobTitle="Charge Nurse",
        accountEnabled=False,
        **{"onPremisesExtensionAttributes.extensionAttribute9": "night"},
    )
    got = t.user(0, frozenset({"jobtitle", "accountenabled", "onpremisesextensionattributes"}))
    assert got["department"] == "Nursing" and got["jobTitle"] == "Charge Nurse"
    assert got["accountEnabled"] is False
    assert got["onPremisesExtensionAttributes"]["extensionAttribute9"] == "night"
    assert "employeeType" not in got  # only what the $select asked for
    assert t.digest() != before
    with pytest.raises(ValueError, match="not user attributes roles read: jobtitle"):
        t.set_user_attributes(upn, jobtitle="x")
