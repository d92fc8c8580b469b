"""Matching user attributes against roles (bridge/roles.py): lists, wildcards, case, except,
first match in file order, disabled accounts, guests, missing and dotted attributes."""

from __future__ import annotations

from typing import Any

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
