"""The drift report model: statuses, counts, ordering, JSON form and its schema, scale.

``scenario()`` (a realistic hospital tenant and a desired state that differs from it in every
way a report can show) is shared by the other report tests.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from pathlib import Path

import jsonschema
import pytest
from report_schema import check_report, report_errors

from bridge.backends.snapshot import load_snapshot
from bridge.plan import diff
from bridge.report.model import DriftReport, ResolvedItem, WhoGetsWhat, build_drift_report
from bridge.roles import RoleChangeLine
from bridge.rules import Finding, run_rules
from bridge.runby import RunBy
from bridge.state import (
    DesiredGroupAssignment,
    DesiredPolicy,
    DesiredState,
    DesiredUserAssignment,
    Directory,
    Policy,
    TenantState,
    User,
    UserAssignment,
)

FIXTURES = Path(__file__).parent / "fixtures" / "reports"
SCHEMA = Path(__file__).parent.parent / "bridge" / "report" / "drift-report.schema.json"
NOW = dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.timezone.utc)
TENANT = "6f1c2d3e-0000-4000-8000-00000000c0de"


def desired_state(**overrides: object) -> DesiredState:
    d = DesiredState(
        tenant=TENANT,
        policies={
            p.key: p
            for p in [
                DesiredPolicy(
                    "Global", {"ReadReceiptsEnabledType": "Everyone", "AllowPriorityMessages": True}
                ),
                DesiredPolicy(
                    "Clinical",
                    {
                        "Description": "Doctors and nurses",
                        "ReadReceiptsEnabledType": "Everyone",
                        "AllowPriorityMessages": True,
                    },
                ),
                DesiredPolicy(
                    "Support Staff",
                    {
                        "ReadReceiptsEnabledType": "Everyone",
                        "AllowPriorityMessages": False,
                        "AllowGiphy": False,
                    },
                ),
                DesiredPolicy(
                    "Pharmacy",
                    {"ReadReceiptsEnabledType": "Everyone", "AllowPriorityMessages": True},
                ),
                DesiredPolicy("Old Pilot", {}, absent=True),
            ]
        },
        group_assignments=[
            DesiredGroupAssignment("Clinicians", "Clinical", 1),
            DesiredGroupAssignment("Facilities", "Support Staff", 2),
            DesiredGroupAssignment("Pharmacists", "Pharmacy", 3),
        ],
        user_assignments=[
            DesiredUserAssignment("night.charge@contoso.org", "Clinical"),
            DesiredUserAssignment("locum.doctor@contoso.org", "Clinical"),
            DesiredUserAssignment("new.nurse@contoso.org", "Clinical"),
            DesiredUserAssignment("temp.porter@contoso.org", None, absent=True),
        ],
        source="desired.yaml",
        sha256="ab" * 32,
    )
    for k, v in overrides.items():
        setattr(d, k, v)
    return d


def current_state() -> TenantState:
    return load_snapshot(FIXTURES / "tenant-snapshot.json")


def make_report(
    current: TenantState | None = None,
    desired: DesiredState | None = None,
    findings: list[Finding] | None = None,
) -> DriftReport:
    current = current or current_state()
    desired = desired or desired_state()
    return build_drift_report(
        current,
        desired,
        diff(current, desired),
        findings=run_rules(current, desired) if findings is None else findings,
        tool_version="0.1.0",
        desired_path="desired.yaml",
        now=NOW,
    )


def scenario() -> DriftReport:
    return make_report()


def in_sync_report() -> DriftReport:
    """The scenario after apply: the tenant is what the file asks for."""
    from bridge.plan import simulate

    current = current_state()
    desired = desired_state()
    after = simulate(current, diff(current, desired))
    return make_report(after, desired)


# --------------------------------------------------------------------------- tests


def test_policy_statuses_and_settings() -> None:
    r = scenario()
    by_name = {p.name: p for p in r.policies}
    assert [p.name for p in r.policies] == [
        "Global",
        "Clinical",
        "Old Pilot",
        "Pharmacy",
        "Support Staff",
    ]
    assert {n: p.status for n, p in by_name.items()} == {
        "Global": "drifted",
        "Clinical": "drifted",
        "Old Pilot": "extra",
        "Pharmacy": "missing",
        "Support Staff": "drifted",
    }
    clinical = by_name["Clinical"]
    rows = {row.name: row for row in clinical.managed}
    assert rows["ReadReceiptsEnabledType"].expected == "Everyone"
    assert rows["ReadReceiptsEnabledType"].actual == "UserPreference"
    assert not rows["ReadReceiptsEnabledType"].in_sync
    assert rows["AllowPriorityMessages"].in_sync
    # Unmanaged settings are context, the unknown one is reported separately.
    assert "AllowGiphy" in {row.name for row in clinical.unmanaged}
    assert [(row.name, row.actual) for row in clinical.unknown] == [("AllowFutureThing", True)]
    assert clinical.in_use and by_name["Global"].in_use and not by_name["Pharmacy"].in_use
    assert all(not row.in_sync and row.actual is None for row in by_name["Pharmacy"].managed)
    assert r.unmanaged_policies == ["Default", "EduFaculty", "EduStudent"]


def test_group_assignments_relative_rank() -> None:
    r = scenario()
    groups = [(g.label, g.status) for g in r.group_assignments]
    assert groups == [
        ("Clinicians", "drifted"),
        ("Facilities", "in_sync"),
        ("Pharmacists", "missing"),
    ]
    clin = r.group_assignments[0]
    assert (clin.expected_policy, clin.expected_rank) == ("Clinical", 1)
    assert (clin.actual_policy, clin.actual_rank) == ("Clinical", 2)
    assert clin.detail == "ranked below Facilities; the file puts it above"


def test_group_policy_change_detail() -> None:
    desired = desired_state()
    desired.group_assignments[1] = DesiredGroupAssignment("Facilities", "Default", 2)
    r = make_report(desired=desired)
    fac = next(g for g in r.group_assignments if g.label == "Facilities")
    assert fac.status == "drifted"
    assert "policy is Support Staff, expected Default" in fac.detail


def test_user_assignments_counted_and_listed() -> None:
    r = scenario()
    assert r.user_counts == {
        "declared": 4,
        "in_sync": 1,
        "drifted": 1,
        "missing": 1,
        "extra": 1,
    }
    listed = [(u.label, u.status, u.actual_policy, u.expected_policy) for u in r.users_listed]
    assert listed == [
        ("locum.doctor@contoso.org", "drifted", "Support Staff", "Clinical"),
        ("new.nurse@contoso.org", "missing", None, "Clinical"),
        ("temp.porter@contoso.org", "extra", "Default", None),
    ]


def test_verdict_counts_and_exit_code() -> None:
    r = scenario()
    # 5 policies (3 drifted, 1 missing, 1 extra) + 2 group + 3 user assignments
    assert r.drift_count == 10
    assert not r.in_sync and r.exit_code == 2
    s = r.summary()
    assert s["policies"] == {"total": 5, "in_sync": 0, "drifted": 3, "missing": 1, "extra": 1}
    assert s["user_assignments"]["total"] == 4


def test_in_sync_after_apply_and_findings_that_count() -> None:
    r = in_sync_report()
    assert r.drift_count == 0
    assert [f.severity for f in r.findings] == ["info"]  # info never fails a report
    assert r.in_sync and r.exit_code == 0
    warned = make_report(
        current=None, desired=None, findings=[Finding("x", "warning", "t", "e", ("Global",))]
    )
    assert warned.failing_findings
    only_findings = build_drift_report(
        TenantState.build(TENANT, [Policy("Global", {"AllowPriorityMessages": False})]),
        DesiredState(),
        diff(TenantState.build(TENANT, [Policy("Global", {})]), DesiredState()),
        findings=[Finding("no-priority-anywhere", "warning", "t", "e")],
        tool_version="0.1.0",
        desired_path="d.yaml",
        now=NOW,
    )
    assert only_findings.drift_count == 0 and only_findings.exit_code == 2
    lenient = build_drift_report(
        TenantState.build(TENANT, [Policy("Global", {})]),
        DesiredState(),
        diff(TenantState.build(TENANT, [Policy("Global", {})]), DesiredState()),
        findings=[Finding("no-priority-anywhere", "warning", "t", "e")],
        tool_version="0.1.0",
        desired_path="d.yaml",
        now=NOW,
        fail_on={"error"},
    )
    assert lenient.in_sync


def test_unknown_fail_on_severity_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown severities"):
        build_drift_report(
            TenantState.build(TENANT, []),
            DesiredState(),
            diff(TenantState.build(TENANT, []), DesiredState()),
            findings=[],
            tool_version="0.1.0",
            desired_path="d.yaml",
            now=NOW,
            fail_on={"critical"},
        )


def test_drift_items_have_stable_keys() -> None:
    keys = [i.key for i in scenario().drift_items()]
    assert keys[:3] == [
        "policy:global:ReadReceiptsEnabledType",
        "policy:clinical:Description",
        "policy:clinical:ReadReceiptsEnabledType",
    ]
    assert "policy:oldpilot" not in keys and "policy:old pilot" in keys
    assert "policy:pharmacy" in keys and "group:g-clin" in keys and "user:u-locum" in keys
    assert "rule:clinical-read-receipts:clinical" in keys
    assert len(keys) == len(set(keys))
    assert keys == [i.key for i in scenario().drift_items()]


def test_to_dict_is_versioned_and_valid_against_schema() -> None:
    data = scenario().to_dict()
    assert data["schema_version"] == 1
    assert data["desired"] == {"path": "desired.yaml", "sha256": "ab" * 32}
    assert data["generated_at"] == "2024-05-01T08:00:00Z"
    assert data["tenant_id"] == TENANT
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    check_report(data)  # with the format checker: dates are RFC 3339
    check_report(in_sync_report().to_dict())
    broken = dict(data, schema_version=2)
    assert report_errors(broken)


def test_every_date_in_a_full_report_is_rfc3339() -> None:
    """A report with every optional part (history, a snapshot's time, who ran it, roles, who gets
    what) keeps the schema's formats; a date that is not RFC 3339 is caught."""
    r = scenario()
    naive = dt.datetime(2024, 4, 28, 8, 0, 0)  # a snapshot's taken_at without a zone
    full = dataclasses.replace(
        r,
        observed_at=naive,
        first_seen={p.key: NOW - dt.timedelta(days=1) for p in r.policies},
        resolved=[ResolvedItem("policy:x", naive, NOW, "policy X", "a", "b")],
        run_by=RunBy("alice", "ward-pc", "app-1", reason="audit", ticket="CHG123"),
        role_lines=[RoleChangeLine("+", "Clinicians", "Clinical", 2, ("a", "b"), "2 people")],
        who_gets_what=[WhoGetsWhat("Clinical", "Nursing", 3, "Everyone", True)],
        tenant_name="Northwind",
        tenant_domain="northwind.example",
        notification={"format": "teams", "sent": True, "error": None},
    )
    data = check_report(full.to_dict())
    assert data["observed_at"] == "2024-04-28T08:00:00Z"
    assert data["resolved"][0]["first_seen"] == "2024-04-28T08:00:00Z"
    for bad in ("2024-05-01 08:00:00", "2024-05-01T08:00:00", "2024-13-01T08:00:00Z"):
        errors = report_errors(dict(data, generated_at=bad))
        assert errors == [f"['generated_at']: '{bad}' is not a 'date-time'"], errors


def test_hundred_thousand_users_stay_cheap() -> None:
    n = 100_000
    directory = Directory()
    users = []
    for i in range(n):
        directory.add_user(User(f"u{i:06d}", f"user{i:06d}@contoso.org"))
        users.append(UserAssignment(f"u{i:06d}", "Clinical", f"user{i:06d}@contoso.org"))
    current = TenantState.build(
        TENANT,
        [
            Policy("Global", {"AllowPriorityMessages": True}),
            Policy("Clinical", {"AllowPriorityMessages": True}),
            Policy("Other", {}),
        ],
        (),
        users,
        directory,
    )
    wanted = [DesiredUserAssignment(f"user{i:06d}@contoso.org", "Clinical") for i in range(n)]
    for i in (5, 50, 500):
        wanted[i] = DesiredUserAssignment(f"user{i:06d}@contoso.org", "Other")
    desired = DesiredState(user_assignments=wanted, sha256="00" * 32)
    plan = diff(current, desired)
    started = time.perf_counter()
    r = build_drift_report(
        current, desired, plan, findings=[], tool_version="0", desired_path="d", now=NOW
    )
    data = r.to_dict()
    elapsed = time.perf_counter() - started
    assert r.user_counts["in_sync"] == n - 3 and r.user_counts["drifted"] == 3
    assert [u.user_id for u in r.users_listed] == ["u000005", "u000050", "u000500"]
    assert len(data["user_assignments"]["listed"]) == 3
    assert elapsed < 3.0, f"report for {n} users took {elapsed:.2f}s"
