"""Clinical coverage (rules.clinicians checked on each clinician's effective policy) and the
reports' "who gets what"."""

from __future__ import annotations

import datetime as dt

from factories import desired, tenant, uid

from bridge.plan import diff
from bridge.report.model import build_drift_report, who_gets_what
from bridge.roles import Role
from bridge.rules import run_rules
from bridge.state import RulesConfig

POLICIES = {
    "Global": {"ReadReceiptsEnabledType": "Everyone", "AllowPriorityMessages": True},
    "Clinical": {"ReadReceiptsEnabledType": "Everyone", "AllowPriorityMessages": True},
    "Students": {"ReadReceiptsEnabledType": "Everyone", "AllowPriorityMessages": False},
    "Quiet": {"ReadReceiptsEnabledType": "None", "AllowPriorityMessages": True},
}
PEOPLE = {
    0: {"department": "Graduate Medical Education", "jobTitle": "Resident Physician"},
    1: {"department": "Graduate Medical Education", "jobTitle": "Resident Physician"},
    2: {
        "department": "Graduate Medical Education",
        "jobTitle": "Resident Physician",
        "accountEnabled": False,
    },
    3: {"department": "Nursing", "jobTitle": "Registered Nurse"},
    4: {"department": "Nursing", "jobTitle": "Registered Nurse"},
    5: {"department": "Food Services", "jobTitle": "Cook"},
}


def _current(**kw: object) -> object:
    # Group 1 (Residents) -> Students at rank 1; group 2 -> Clinical at rank 2; user 4 is in
    # both (rank 1 wins); user 3 has a direct Quiet assignment.
    return tenant(
        POLICIES,
        groups=[(1, "Students"), (2, "Clinical")],
        users={3: "Quiet"},
        members={1: [0, 1, 2, 4], 2: [4, 5]},
        attributes=PEOPLE,
        **kw,  # type: ignore[arg-type]
    )


def _clinicians(**rules: object) -> object:
    want = desired({})
    want.rules = RulesConfig(**rules)  # type: ignore[arg-type]
    return want


def test_each_clinician_is_checked_on_the_policy_they_really_get() -> None:
    want = _clinicians(clinician_where={"jobTitle": ("*Physician*", "*Nurse*")})
    found = [f for f in run_rules(_current(), want) if f.rule_id == "clinical-coverage"]  # type: ignore[arg-type]
    assert [(f.severity, f.title) for f in found] == [
        ("error", "1 clinician gets Quiet by direct assignment"),
        # user 2 is disabled: not counted; user 4 gets Students (rank 1 beats Clinical)
        ("error", "3 clinicians get Students through group Group 1 (rank 1)"),
    ]
    assert "have read receipts off for everyone" in found[0].explanation
    assert "cannot send priority notifications" in found[1].explanation
    assert found[1].policies == ("Students",)


def test_clinicians_by_role_and_name_rules_stay_off() -> None:
    want = _clinicians(clinician_roles=("Nurses",))
    want.roles = [Role("Nurses", "Clinical", {"department": ("Nursing",)})]  # type: ignore[attr-defined]
    ids = [f.rule_id for f in run_rules(_current(), want)]  # type: ignore[arg-type]
    assert "clinical-priority" not in ids and "clinical-read-receipts" not in ids
    titles = [f.title for f in run_rules(_current(), want) if f.rule_id == "clinical-coverage"]  # type: ignore[arg-type]
    assert titles == [
        "1 clinician gets Quiet by direct assignment",
        "1 clinician gets Students through group Group 1 (rank 1)",
    ]


def test_without_clinicians_the_name_based_rules_decide() -> None:
    ids = [f.rule_id for f in run_rules(_current(), desired({}))]  # type: ignore[arg-type]
    assert "clinical-coverage" not in ids


def test_unread_group_members_are_said_not_taken_for_global() -> None:
    current = tenant(POLICIES, groups=[(1, "Students")], attributes=PEOPLE)  # members unread
    want = _clinicians(clinician_where={"jobTitle": ("*",)})
    found = [f for f in run_rules(current, want) if f.rule_id == "clinical-coverage"]  # type: ignore[arg-type]
    assert [f.title for f in found] == ["The members of 1 assigned group(s) were not read"]


def test_who_gets_what_per_policy_and_department() -> None:
    rows = who_gets_what(_current())  # type: ignore[arg-type]
    assert rows is not None
    got = {
        (r.policy, r.department): (r.people, r.read_receipts, r.priority_notifications)
        for r in rows
    }
    assert got[("Students", "Graduate Medical Education")] == (3, "Everyone", False)
    assert got[("Students", "Nursing")] == (1, "Everyone", False)
    assert got[("Quiet", "Nursing")] == (1, "None", True)
    assert got[("Clinical", "Food Services")] == (1, "Everyone", True)
    assert rows[0].policy == "Global"  # users 6..9: no department
    assert uid(0)
    report = build_drift_report(
        _current(),  # type: ignore[arg-type]
        desired({}),
        diff(_current(), desired({})),  # type: ignore[arg-type]
        findings=[],
        tool_version="t",
        desired_path="d.yaml",
        now=dt.datetime(2026, 1, 1),
    )
    assert report.to_dict()["who_gets_what"][0] == {
        "policy": "Global",
        "department": None,
        "people": 4,
        "read_receipts": "Everyone",
        "priority_notifications": True,
    }
    assert who_gets_what(tenant(POLICIES, groups=[(1, "Students")])) is None  # type: ignore[arg-type]


def test_the_report_json_with_roles_and_who_gets_what_meets_its_schema() -> None:
    from report_schema import check_report

    want = desired({"Clinical": {}, "Students": {}})
    want.roles = [Role("Residents", "Clinical", {"department": ("Graduate Medical Education",)})]
    current = _current()
    plan = diff(current, want)  # type: ignore[arg-type]
    report = build_drift_report(
        current,  # type: ignore[arg-type]
        want,
        plan,
        findings=[],
        tool_version="t",
        desired_path="d.yaml",
        now=dt.datetime(2026, 1, 1),
    )
    data = check_report(report.to_dict())  # the schema, formats (dates) included
    assert data["roles"][0]["text"].startswith("2 people -> 'Clinical' by role Residents")
    assert {u["role"] for u in data["user_assignments"]["listed"]} == {"Residents"}


def test_the_desired_file_schema_covers_roles() -> None:
    import json
    from pathlib import Path

    import jsonschema
    import yaml

    from bridge.schema import desired_state_schema

    schema = json.loads(json.dumps(desired_state_schema()))
    example = yaml.safe_load(
        (Path(__file__).parents[1] / "examples" / "roles.yaml").read_text(encoding="utf-8")
    )
    jsonschema.validate(example, schema)
    example["assignments"]["roles"][0]["where"] = {"jobtitel": "x"}
    with __import__("pytest").raises(jsonschema.ValidationError):
        jsonschema.validate(example, schema)


def test_who_gets_what_in_text_markdown_and_html() -> None:
    from bridge.report.render_html import render_html
    from bridge.report.render_markdown import render_markdown
    from bridge.report.render_text import render_text

    current = _current()
    report = build_drift_report(
        current,  # type: ignore[arg-type]
        desired({}),
        diff(current, desired({})),  # type: ignore[arg-type]
        findings=[],
        tool_version="t",
        desired_path="d.yaml",
        now=dt.datetime(2026, 1, 1),
    )
    text = render_text(report)
    assert "Who gets what" in text
    assert any(
        line.split() == ["Students", "Graduate", "Medical", "Education", "3", "Everyone", "no"]
        for line in text.splitlines()
    ), text
    assert "| Students | Graduate Medical Education | 3 | Everyone | no |" in render_markdown(
        report
    )
    assert (
        "<td><bdi>Graduate Medical Education</bdi></td><td>3</td><td><bdi>Everyone</bdi></td>"
        "<td>no</td>" in render_html(report)
    )
