"""Policies by role on the sandbox hospital, through the CLI: the first apply, then a joiner, a
mover, a leaver (disabled account) and a users: override, each handled by the next run with no
change to the file; the residents' clinical-coverage error; roles planned offline from a
snapshot."""

from __future__ import annotations

import json
import uuid

import pytest
from e2e_support import REPO
from report_schema import check_report

from bridge.sandbox.tenant import MESSAGING

pytestmark = pytest.mark.e2e

ROLES = """\
policies:
  Pharmacy:
    ReadReceiptsEnabledType: Everyone
    AllowPriorityMessages: true
assignments:
  roles:
    - role: Pharmacists
      policy: Pharmacy
      where: {department: Pharmacy}
{users}"""
NO_CHANGES = "No changes. The tenant matches the desired state.\n"


def _direct(sb, upn: str) -> str | None:
    sb.tenant.settle()
    return sb.tenant.direct_assignments().get(sb.tenant.user_ids[sb.tenant.find_user(upn)])


def _people(sb, department: str) -> list[str]:
    t = sb.tenant
    return [
        t.upns[pos]
        for pos in range(t.user_count)
        if t.department_names[t.departments[pos]] == department
        and not t.user_flags[pos] & 1  # enabled
    ]


def test_joiner_mover_leaver_and_users_override_by_the_next_run(fresh, cli_for, tmp_path):
    cli = cli_for(fresh)
    desired = tmp_path / "roles.yaml"
    desired.write_text(ROLES.replace("{users}", ""))
    pharmacists = sorted(_people(fresh, "Pharmacy"))
    assert len(pharmacists) >= 5

    first = cli("plan", str(desired))
    assert first.code == 0, first
    line = f"+ {len(pharmacists)} people -> 'Pharmacy' by role Pharmacists (department: Pharmacy)"
    assert line in first.out, first
    assert pharmacists[0] not in first.out.replace(f": {pharmacists[0]},", "")  # a few names only
    listed = json.loads(cli("plan", str(desired), "--format", "json").out)
    assert sorted(u["user"] for u in listed["roles"][0]["users"]) == pharmacists

    assert cli("apply", str(desired), "--auto-approve").code == 0
    assert {_direct(fresh, upn) for upn in pharmacists} == {"Pharmacy"}
    assert cli("plan", str(desired)).out == NO_CHANGES

    # A joiner: a new pharmacist in the directory.
    t = fresh.tenant
    pos = t.add_user(str(uuid.uuid4()), "new.pharmacist@northwind-health.org", "New", "Pharmacy")
    t.describe_user(pos, "Pharmacist")
    # A mover: a pharmacist moves to Finance. A leaver: an account disabled.
    mover, leaver = pharmacists[0], pharmacists[1]
    t.set_user_attributes(mover, department="Finance")
    t.set_user_attributes(leaver, accountEnabled=False)
    plan = cli("plan", str(desired))
    assert "+ 1 person -> 'Pharmacy' by role Pharmacists" in plan.out, plan
    assert (
        "- 2 people lose 'Pharmacy': no role and no users: entry selects them any more" in plan.out
    ), plan
    assert cli("apply", str(desired), "--auto-approve").code == 0
    assert _direct(fresh, "new.pharmacist@northwind-health.org") == "Pharmacy"
    assert _direct(fresh, mover) is None and _direct(fresh, leaver) is None
    assert cli("plan", str(desired)).out == NO_CHANGES

    # A users: entry wins over the role.
    override = pharmacists[2]
    desired.write_text(
        ROLES.replace("{users}", f"  users:\n    - user: {override}\n      ensure: absent\n")
    )
    plan = cli("plan", str(desired))
    assert f"user {override} will lose the direct assignment of 'Pharmacy'" in plan.out, plan
    assert cli("apply", str(desired), "--auto-approve").code == 0
    assert _direct(fresh, override) is None
    assert cli("plan", str(desired)).out == NO_CHANGES
    assert t.effective_policy(override)[1] == "group"  # the Pharmacy group decides again

    explained = cli("explain", leaver, "--desired", str(desired), "--format", "json")
    data = json.loads(explained.out)
    assert data["role"] is None
    assert "the account is disabled" in data["role_reasons"][0]


def test_the_residents_are_a_clinical_coverage_error(ro, cli_for, tmp_path):
    cli = cli_for(ro)
    drift = cli(
        "drift", str(REPO / "examples" / "roles.yaml"), "--report-dir", "r", "--format", "json,html"
    )
    assert drift.code == 2, drift
    report = check_report(json.loads((tmp_path / "r" / "drift.json").read_text()))
    found = [
        f
        for f in report["findings"]
        if f["rule_id"] == "clinical-coverage" and f["policies"] == ["Students"]
    ]
    assert len(found) == 1 and found[0]["severity"] == "error"
    residents = [
        pos
        for pos in range(ro.tenant.user_count)
        if ro.tenant.department_names[ro.tenant.departments[pos]] == "Graduate Medical Education"
        and not ro.tenant.user_flags[pos] & 1
    ]
    assert found[0]["title"] == (
        f"{len(residents)} clinicians get Students through group Residents (rank 3)"
    )
    assert ro.tenant.list_group_assignments()  # the sandbox assigns groups as seeded
    rows = {(w["policy"], w["department"]): w for w in report["who_gets_what"]}
    assert rows[("Students", "Graduate Medical Education")]["priority_notifications"] is False
    assert "Who gets what" in (tmp_path / "r" / "drift.html").read_text()


def test_roles_plan_offline_from_a_snapshot(ro, cli_for, tmp_path):
    cli = cli_for(ro)
    assert cli("snapshot", "--out", "s.json").code == 0
    online = cli("plan", str(REPO / "examples" / "roles.yaml"), "--format", "json")
    offline = cli(
        "--snapshot", "s.json", "plan", str(REPO / "examples" / "roles.yaml"), "--format", "json"
    )
    assert offline.code == 0, offline
    assert json.loads(offline.out)["roles"] == json.loads(online.out)["roles"]
    assert json.loads(offline.out)["changes"] == json.loads(online.out)["changes"]
    assert MESSAGING


def test_suggest_roles_proposes_what_people_already_get(ro, cli_for):
    result = cli_for(ro)("suggest-roles")
    assert result.code == 0, result
    assert '  - role: "Nursing"' in result.out
    assert '    where: {department: "Pharmacy"}' in result.out
    assert ro.stats()["writes"] == 0
