"""drift's exit codes and report files, errors that must never read as drift (a missing directory
role, group names that do not resolve), and assignments the service shows late."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET

import pytest
from e2e_support import NORTHWIND, NORTHWIND_CHANGES
from report_schema import check_report

pytestmark = pytest.mark.e2e

DRIFT_FOOTER = (
    "Drift: 8 objects not in sync (5 policies, 1 group assignment, 2 user assignments); "
    "findings: 0 error(s), 2 warning(s), 1 info."
)
GUESTS = (
    "locum.cardio_gmail.com#EXT#@northwind-health.onmicrosoft.com",
    "agency.nurse_outlook.com#EXT#@northwind-health.onmicrosoft.com",
)


def test_drift_exits_2_with_reports_then_0_once_applied(fresh, cli_for, tmp_path):
    cli = cli_for(fresh)
    drift = cli(
        "drift",
        str(NORTHWIND),
        "--report-dir",
        "reports",
        "--ticket",
        "CHG123",
        "--reason",
        "audit",
    )
    assert drift.code == 2, drift
    assert drift.out.rstrip().endswith(DRIFT_FOOTER), drift
    reports = tmp_path / "reports"
    assert sorted(p.name for p in reports.iterdir()) == [
        "drift.html",
        "drift.json",
        "drift.junit.xml",
        "drift.md",
    ]
    for name in ("drift.json", "drift.html", "drift.md", "drift.junit.xml"):
        assert f"report written: reports/{name}" in drift.err

    data = check_report(json.loads((reports / "drift.json").read_text()))
    assert (data["schema_version"], data["tenant_id"]) == (1, fresh.tenant_id)
    # The tenant by name, and who ran the report and why, in every format.
    assert data["tenant"] == {
        "id": fresh.tenant_id,
        "display_name": "Northwind Regional Health",
        "default_domain": "northwind-health.org",
    }
    run = data["run"]
    assert (run["ticket"], run["reason"]) == ("CHG123", "audit") and run["operator"], run
    assert run["app_id"] == cli._env(None)["AZURE_CLIENT_ID"] and run["host"], run
    for name in ("drift.html", "drift.md", "drift.junit.xml"):
        text = (reports / name).read_text()
        assert "Northwind Regional Health" in text and "CHG123" in text, name
        assert run["operator"] in text, name
    assert "Northwind Regional Health (northwind-health.org)" in drift.out
    assert "ticket CHG123: audit" in drift.out
    assert (data["in_sync"], data["exit_code"], data["drift_count"]) == (False, 2, 8)
    assert data["summary"]["policies"] == {
        "total": 9,
        "in_sync": 4,
        "drifted": 4,
        "missing": 1,
        "extra": 0,
    }
    kitchen = next(p for p in data["policies"] if p["name"] == "Kitchen")
    receipts = next(s for s in kitchen["settings"] if s["name"] == "ReadReceiptsEnabledType")
    assert (receipts["expected"], receipts["actual"], receipts["in_sync"]) == (
        "Everyone",
        "None",
        False,
    )
    assert kitchen["unmanaged_settings"]["AudioMessageEnabledType"] == "ChatsOnly"

    html = (reports / "drift.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and fresh.tenant_id in html
    assert "Palliative Care" in html and "agency.nurse_outlook.com#EXT#" in html
    md = (reports / "drift.md").read_text()
    assert '| policy Kitchen | ReadReceiptsEnabledType | "Everyone" | "None" |' in md
    suite = ET.parse(reports / "drift.junit.xml").getroot()
    assert suite.tag == "testsuites" and int(suite.get("failures", "0")) >= 8
    failed = {
        case.get("name") for case in suite.iter("testcase") if case.find("failure") is not None
    }
    assert any("Palliative Care" in str(name) for name in failed), failed

    applied = cli("apply", str(NORTHWIND), "--auto-approve", "--journal", "j.jsonl")
    assert applied.code == 0, applied
    again = cli("drift", str(NORTHWIND), "--report-dir", "reports", "--output", "json")
    assert again.code == 0, again
    assert json.loads(again.out)["in_sync"] is True
    assert check_report(json.loads((reports / "drift.json").read_text()))["drift_count"] == 0


def test_missing_directory_role_fails_the_run_without_a_drift_report(ro, cli_for, tmp_path):
    ro.configure(roles=())  # tokens issued from now on carry no directory role
    result = cli_for(ro)("drift", str(NORTHWIND), "--report-dir", "reports")
    assert result.code == 1, result
    assert result.out == "", result  # no report saying policies or assignments are missing
    assert not (tmp_path / "reports").exists()
    [error] = [line for line in result.err.splitlines() if line.startswith("error:")]
    # A read was refused: the roles that can read, not only the one that writes.
    assert error.startswith(
        "error: 403 from Teams admin API: the app's service principal needs a directory role "
        "that can read Teams settings: Global Reader or Teams Reader (or Teams Administrator, "
        "which apply needs)"
    ), error
    assert "missing" not in result.err


def test_global_reader_may_drift_but_not_apply(ro, cli_for):
    ro.configure(roles=("global_reader",))
    cli = cli_for(ro)
    assert cli("drift", str(NORTHWIND)).code == 2
    refused = cli("apply", str(NORTHWIND), "--auto-approve", "--journal", "j.jsonl")
    assert refused.code == 1, refused
    # A write was refused: the role that writes, said once (not in every line that lists the
    # failure), and no read-only roles.
    hint = "service principal needs the Teams Administrator directory role to make changes"
    assert refused.err.count(hint) == 1, refused
    assert "Teams Reader" not in refused.err and "for read-only" not in refused.err, refused
    assert ro.stats()["writes"] == 0


def test_unknown_and_ambiguous_group_names_fail_listing_the_candidates(ro, cli_for, tmp_path):
    volunteers = sorted(g["id"] for g in ro.tenant.groups() if g["displayName"] == "Volunteers")
    assert len(volunteers) == 2
    (tmp_path / "groups.yaml").write_text(
        "policies:\n"
        "  Clinical:\n"
        "    AllowGiphy: false\n"
        "assignments:\n"
        "  groups:\n"
        "    - {group: Volunteers, policy: Clinical, rank: 1}\n"
        "    - {group: Locum Pool, policy: Clinical, rank: 2}\n"
    )
    cli = cli_for(ro)
    for command in ("plan", "drift"):
        result = cli(command, "groups.yaml")
        assert result.code == 1, result
        assert result.out == ""
        assert result.err == (
            "error: cannot make a plan:\n"
            "  - group name 'Volunteers' matches 2 groups: "
            f"Volunteers ({volunteers[0]}), Volunteers ({volunteers[1]}); "
            "use the object id instead\n"
            "  - no group named or with id 'Locum Pool' in the tenant\n"
        ), result
    # By object id the same file resolves.
    (tmp_path / "groups.yaml").write_text(
        (tmp_path / "groups.yaml")
        .read_text()
        .replace("group: Volunteers", f"group: {volunteers[1]}")
        .replace("    - {group: Locum Pool, policy: Clinical, rank: 2}\n", "")
    )
    plan = cli("plan", "groups.yaml", "--format", "json")
    assert plan.code == 0, plan
    [change] = [c for c in json.loads(plan.out)["changes"] if c["kind"] == "set_group_assignment"]
    assert change["group_id"] == volunteers[1]


def test_assignments_the_service_shows_late_are_pending_then_in_sync(fresh, cli_for):
    cli = cli_for(fresh)
    fresh.configure(propagation_delay=3)
    started = time.monotonic()
    result = cli(
        "apply", str(NORTHWIND), "--auto-approve", "--verify-timeout", "1", "--journal", "j.jsonl"
    )
    assert result.code == 0, result
    pending = NORTHWIND_CHANGES - 5  # the group re-rank and the two guests; policies show at once
    assert (
        f"Apply pending: 5 applied (verified), {pending} pending, 0 failed, 0 not attempted, "
        f"of {NORTHWIND_CHANGES}"
    ) in result.out, result
    assert "  pending: assign group Nursing to Nursing (rank 3) (not visible after 1 s;" in (
        result.out
    )
    for upn in GUESTS:
        assert f"  pending: assign user {upn} to " in result.out
    assert "Run plan again in a while to confirm." in result.out
    applied_at = time.monotonic()  # every write was made before this

    # Writes show no sooner than 3 s after ``started``: a drift done by then still sees drift.
    early = cli("drift", str(NORTHWIND))
    if time.monotonic() < started + 3:
        assert early.code == 2, early
    time.sleep(max(0.0, applied_at + 3.05 - time.monotonic()))
    late = cli("drift", str(NORTHWIND))
    assert late.code == 0, late


@pytest.mark.parametrize(
    "route",
    [r"/Teams\.User/users", r"/Skype\.Policy/groupPolicyAssignments/", r"/v1\.0/\$batch"],
)
def test_a_read_that_keeps_failing_is_an_error_never_drift(ro, cli_for, tmp_path, route):
    # 503 on every attempt: after the retries the run fails. Reading "no users", "no group
    # assignments" or "no groups" instead would report everything as missing (false drift).
    ro.inject(method=None, path=route, status=503, times=None)
    drift = cli_for(ro)("drift", str(NORTHWIND), "--report-dir", "reports")
    assert drift.code == 1, drift
    assert "503" in drift.err and "after" in drift.err, drift
    assert drift.out == ""
    assert not (tmp_path / "reports").exists()
