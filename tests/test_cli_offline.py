"""The CLI against the example snapshot: commands, output and exit codes (no network)."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
import responses
from responses import matchers

from bridge.cli import main

ROOT = Path(__file__).parents[1]
SNAP = str(ROOT / "examples" / "northwind-snapshot.json")
DESIRED = str(ROOT / "examples" / "northwind.yaml")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_validate_ok_and_invalid(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate", DESIRED)
    assert code == 0 and "is valid: 9 policies, 8 group assignments, 2 user assignments" in out
    bad = str(ROOT / "tests" / "fixtures" / "invalid" / "unknown_setting.yaml")
    code, _, err = run(capsys, "validate", bad)
    assert code == 1
    assert f"{bad}:3:5: error: unknown setting 'AllowGiphys'" in err


def test_plan_text_shows_terraform_style(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--snapshot", SNAP, "plan", DESIRED)
    assert "tenant: Northwind Regional Health (northwind-health.org)\n" in err
    assert code == 0
    assert "~ policy 'Nursing' will be updated in place" in out
    assert 'ReadReceiptsEnabledType: "UserPreference" -> "Everyone"' in out
    assert "+ policy 'Palliative Care' will be created" in out
    assert "~ group 'Nursing' will be re-ranked: rank 4 now, sent as rank 3" in out
    assert "+ user locum.cardio_gmail.com#EXT#@northwind-health.onmicrosoft.com" in out
    assert out.rstrip().endswith("Plan: 3 to add, 5 to change, 0 to destroy.")


def test_plan_detailed_exitcode_and_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    saved = tmp_path / "plan.json"
    code, out, err = run(
        capsys,
        "--snapshot",
        SNAP,
        "plan",
        DESIRED,
        "--format",
        "json",
        "--detailed-exitcode",
        "--out",
        str(saved),
    )
    assert code == 2
    data = json.loads(out)
    assert data["schema_version"] == 1
    assert data["summary"] == {"add": 3, "change": 5, "destroy": 0}
    assert data["state_checksum"] and data["desired_sha256"]
    # Shown by plan; not part of the saved plan.
    assert data.pop("needs_force") == []
    assert (data.pop("users_moved"), data.pop("users_total")) == (0, 200)
    # The tenant as people name it, from the snapshot (not part of the saved plan).
    assert data.pop("tenant") == {
        "id": "69995da0-2510-5c82-97a9-9c00e322160a",
        "display_name": "Northwind Regional Health",
        "default_domain": "northwind-health.org",
    }
    on_disk = json.loads(saved.read_text())
    # A saved plan adds when it was made and its digest (see bridge/planfile.py).
    assert on_disk.pop("digest").startswith("sha256:") and on_disk.pop("created_at")
    assert on_disk == data
    assert "apply --plan" in err
    if sys.platform != "win32":  # tenant data: the saved plan is private
        assert stat.S_IMODE(saved.stat().st_mode) == 0o600


def test_export_plans_to_no_changes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    exported = tmp_path / "exported.yaml"
    code, _, _ = run(capsys, "--snapshot", SNAP, "export", "--out", str(exported))
    assert code == 0
    if sys.platform != "win32":  # every user's direct assignment: private, like a snapshot
        assert stat.S_IMODE(exported.stat().st_mode) == 0o600
    text = exported.read_text()
    assert "AllowProactiveSummaries" in text  # a setting the service returns is kept
    code, out, _ = run(capsys, "--snapshot", SNAP, "plan", str(exported), "--detailed-exitcode")
    assert code == 0, out
    assert "No changes" in out


def test_explain_direct_group_and_global(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--snapshot", SNAP, "explain", "lucia.kowalski@northwind-health.org")
    assert code == 0 and "Emergency Department  (from direct assignment)" in out
    code, out, _ = run(
        capsys,
        "--snapshot",
        SNAP,
        "explain",
        "victor.gonzalez@northwind-health.org",
        "--format",
        "json",
    )
    data = json.loads(out)
    assert (data["policy"], data["source"], data["group"], data["rank"]) == (
        "Nursing",
        "group",
        "Nursing",
        4,
    )
    assert data["ReadReceiptsEnabledType"] == "UserPreference"
    code, out, _ = run(capsys, "--snapshot", SNAP, "explain", "zara.alvarez@northwind-health.org")
    assert "Global  (from the Global policy)" in out
    code, _, err = run(capsys, "--snapshot", SNAP, "explain", "nobody@northwind-health.org")
    assert code == 1 and "no user 'nobody@northwind-health.org'" in err


def test_usage_errors_exit_1_never_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "plan")
    assert code == 1 and "Missing argument" in err
    code, _, _ = run(capsys, "frobnicate")
    assert code == 1
    code, _, _ = run(capsys, "drift", DESIRED, "--format", "pdf")
    assert code == 1


def test_bad_snapshot_is_an_error_not_an_empty_tenant(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "teams-bridge-snapshot", "version": 1, "policies": [')
    code, _, err = run(capsys, "--snapshot", str(broken), "plan", DESIRED)
    assert code == 1 and "invalid JSON" in err and str(broken) in err
    code, _, err = run(capsys, "--snapshot", str(tmp_path / "missing.json"), "plan", DESIRED)
    assert code == 1 and "cannot read snapshot" in err


def test_apply_refuses_a_snapshot(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--snapshot", SNAP, "apply", DESIRED, "--auto-approve")
    assert code == 1 and "snapshot is read-only" in err


def test_tenant_guard(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text("tenant: 00000000-0000-0000-0000-000000000001\npolicies: {}\n")
    code, _, err = run(capsys, "--snapshot", SNAP, "plan", str(other))
    assert code == 1 and "the file is for tenant" in err
    assert f"but the snapshot {SNAP} is of tenant 69995da0-" in err  # not "the credentials"
    assert "use a snapshot of that tenant, or the file's tenant: line" in err
    by_domain = tmp_path / "domain.yaml"
    by_domain.write_text("tenant: NORTHWIND-health.onmicrosoft.com\npolicies: {}\n")
    code, _, err = run(capsys, "--snapshot", SNAP, "plan", str(by_domain))
    assert code == 0, err


def test_schema_lists_settings(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "schema")
    assert code == 0
    schema = json.loads(out)
    policy = schema["properties"]["policies"]["additionalProperties"]
    assert policy["properties"]["ReadReceiptsEnabledType"]["enum"] == [
        "UserPreference",
        "Everyone",
        "None",
    ]


def test_snapshot_round_trip(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_file = tmp_path / "again.json"
    code, out, _ = run(capsys, "--snapshot", SNAP, "snapshot", "--out", str(out_file))
    assert code == 0 and "written to" in out
    if sys.platform != "win32":  # every user's assignment: private
        assert stat.S_IMODE(out_file.stat().st_mode) == 0o600
    code, a, _ = run(capsys, "--snapshot", SNAP, "plan", DESIRED, "--format", "json")
    code, b, _ = run(capsys, "--snapshot", str(out_file), "plan", DESIRED, "--format", "json")
    assert json.loads(a)["changes"] == json.loads(b)["changes"]


def test_drift_fail_on_decides_whether_findings_count(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    exported = tmp_path / "exported.yaml"
    run(capsys, "--snapshot", SNAP, "export", "--out", str(exported))
    # The tenant as it is: no object drifts, but the healthcare checks warn (read receipts).
    # By default a warning is reported and does not count: a deliberate choice the guidance
    # allows must not make a scheduled job alert forever.
    code, out, _ = run(capsys, "--snapshot", SNAP, "drift", str(exported))
    assert code == 0 and "In sync. 0 objects drifted" in out and "WARNING" in out, out
    code, out, _ = run(capsys, "--snapshot", SNAP, "drift", str(exported), "--fail-on", "warning")
    assert code == 2 and "0 objects not in sync" in out and "WARNING" in out, out
    code, out, _ = run(capsys, "--snapshot", SNAP, "drift", str(exported), "--fail-on", "error")
    assert code == 0, out
    code, _, _ = run(capsys, "--snapshot", SNAP, "drift", str(exported), "--fail-on", "never")
    assert code == 0


def test_plan_says_when_apply_would_refuse(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    risky = tmp_path / "risky.yaml"
    risky.write_text("policies:\n  Global:\n    AllowPriorityMessages: false\n")
    code, out, err = run(capsys, "--snapshot", SNAP, "plan", str(risky), "--format", "json")
    assert code == 0
    assert "warning: apply will refuse this plan without --force" in err
    assert json.loads(out)["needs_force"] == [
        "turns AllowPriorityMessages off (False) in policy Global, which is in use"
    ]


def test_dotenv_feeds_command_line_settings(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert "BRIDGE_HISTORY" not in os.environ
    db = tmp_path / "from-dotenv.db"
    (tmp_path / ".env").write_text(f"BRIDGE_HISTORY={db}\nBRIDGE_LOCK_DIR=\n")
    try:
        code, _, _ = run(capsys, "--snapshot", SNAP, "drift", DESIRED)
        assert code == 2
        assert db.exists()
        assert "BRIDGE_LOCK_DIR" not in os.environ  # empty values are skipped
    finally:
        os.environ.pop("BRIDGE_HISTORY", None)


def test_drift_format_without_report_dir_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run(capsys, "--snapshot", SNAP, "drift", DESIRED, "--format", "json")
    assert code == 1 and "use --output json" in err


def test_doctor_refuses_a_snapshot(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--snapshot", SNAP, "doctor")
    assert code == 1 and "drop --snapshot" in err


def test_out_that_cannot_be_written_is_an_error_without_a_stray_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "--snapshot", SNAP, "export", "--out", str(tmp_path))
    assert code == 1 and f"cannot write {tmp_path}: it is a directory" in err
    assert "Traceback" not in err
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    under_a_file = blocker / "export.yaml"
    code, _, err = run(capsys, "--snapshot", SNAP, "export", "--out", str(under_a_file))
    assert code == 1 and f"cannot write {under_a_file}: " in err
    assert "choose a file path in a directory you can write to" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


HOOK = "https://hooks.example.org/in/SECRETPART"


def test_drift_notify_posts_card_with_summary(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(
            HOOK,
            status=200,
            match=[
                matchers.json_params_matcher({"type": "message"}, strict_match=False),
                matchers.header_matcher({"Authorization": "Basic Ym90OnB3"}),
            ],
        )
        code, out, err = run(
            capsys,
            "--snapshot",
            SNAP,
            "drift",
            DESIRED,
            "--notify",
            "https://bot:pw@hooks.example.org/in/SECRETPART",
            "--output",
            "json",
        )
        body = json.loads(rsps.calls[0].request.body)
    assert code == 2, err
    assert body["attachments"][0]["contentType"] == "application/vnd.microsoft.card.adaptive"
    summary = body["teamsBridgeSummary"]
    assert "summary" not in body  # a MessageCard's "summary" is a string: never a clash
    assert summary["exit_code"] == 2 and summary["drift_count"] > 0
    assert json.loads(out)["notification"] == {"format": "teams", "sent": True, "error": None}
    assert "pw@" not in err and "SECRETPART" not in err


def test_drift_notify_json_format_posts_only_the_summary(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(HOOK, status=204)
        code, _, err = run(
            capsys, "--snapshot", SNAP, "drift", DESIRED, "--notify", HOOK,
            "--notify-format", "json",
        )  # fmt: skip
        body = json.loads(rsps.calls[0].request.body)
    assert code == 2, err
    assert "attachments" not in body and body["schema_version"] == 1 and body["in_sync"] is False


def test_drift_failed_notification_exits_1_after_writing_reports(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    reports = tmp_path / "reports"
    history = tmp_path / "h.db"
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(HOOK, status=400, json={"error": "bad card"})
        code, out, err = run(
            capsys, "--snapshot", SNAP, "drift", DESIRED, "--notify", HOOK, "--output", "json",
            "--report-dir", str(reports), "--history", str(history),
        )  # fmt: skip
    assert code == 1
    assert "drift was found (exit 2 otherwise) and the notification to the webhook failed" in err
    assert "SECRETPART" not in err
    assert sorted(p.name for p in reports.iterdir()) == [
        "drift.html", "drift.json", "drift.junit.xml", "drift.md",
    ]  # fmt: skip
    outcome = json.loads(out)["notification"]
    assert outcome["sent"] is False and "400" in outcome["error"]
    from bridge.report.history import HistoryStore

    with HistoryStore(history) as store:
        assert [r.exit_code for r in store.runs()] == [1]  # what the job really exited with


def test_drift_bad_notify_url_fails_before_reading(capsys: pytest.CaptureFixture[str]) -> None:
    # The snapshot does not exist: a read would fail with another message.
    code, _, err = run(
        capsys, "--snapshot", "/nonexistent/snap.json", "drift", DESIRED, "--notify", "hooks/x"
    )
    assert code == 1 and "--notify: not a webhook URL" in err and "snap.json" not in err


def test_explain_keeps_control_characters_off_the_terminal(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = json.loads(Path(SNAP).read_text())
    evil = "\x1b]0;owned\x07\x1b[2J"
    for u in data["users"]:
        if u["userPrincipalName"] == "victor.gonzalez@northwind-health.org":
            u["userPrincipalName"] = f"victor{evil}@northwind-health.org"
    for g in data["groups"]:
        if g["displayName"] == "Nursing":
            g["displayName"] = f"Nursing{evil}"
    snap = tmp_path / "evil.json"
    snap.write_text(json.dumps(data))
    user = f"victor{evil}@northwind-health.org"
    code, out, err = run(capsys, "--snapshot", str(snap), "explain", user)
    assert code == 0, err
    assert "\x1b" not in out and "\x07" not in out
    assert "victor\\x1b]0;owned\\x07\\x1b[2J@northwind-health.org: Nursing" in out
    assert "group Nursing\\x1b]0;owned" in out


def test_drift_report_says_when_the_snapshot_was_taken(capsys: pytest.CaptureFixture[str]) -> None:
    taken = json.loads(Path(SNAP).read_text())["taken_at"]
    code, out, _ = run(capsys, "--snapshot", SNAP, "drift", DESIRED, "--output", "json")
    assert code == 2
    data = json.loads(out)
    assert data["observed_at"] == taken.replace("+00:00", "Z")
    assert data["generated_at"] != data["observed_at"]


def test_history_of_a_missing_file_is_an_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "typo" / "none.db"
    code, out, err = run(capsys, "history", "--history", str(missing))
    assert code == 1 and f"{missing}: no history there" in err and out == ""
    assert not (tmp_path / "typo").exists()


def test_drift_whose_reports_cannot_be_written_is_not_in_history(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    history = tmp_path / "h.db"
    code, _, err = run(
        capsys, "--snapshot", SNAP, "drift", DESIRED, "--history", str(history),
        "--report-dir", str(blocker / "reports"),
    )  # fmt: skip
    assert code == 1 and "cannot write drift reports" in err
    code, out, _ = run(capsys, "history", "--history", str(history), "--format", "json")
    assert code == 0 and json.loads(out)["runs"] == []


def test_tenant_guard_with_an_unverifiable_token_says_so_not_tenant_unknown() -> None:
    from types import SimpleNamespace

    from bridge.commands import check_tenant_guard
    from bridge.errors import TenantMismatchError
    from bridge.state import DesiredState, TenantState

    desired = DesiredState(tenant="00000000-0000-0000-0000-000000000001", source="d.yaml")
    current = TenantState.build(None, [], [], [])
    options = SimpleNamespace(snapshot=None, sandbox=False)
    session = SimpleNamespace(options=options, tenant_domains=lambda: [])
    with pytest.raises(TenantMismatchError) as err:
        check_tenant_guard(desired, current, session)  # type: ignore[arg-type]
    assert "the token's tenant could not be verified" in str(err.value)
    assert "unknown" not in str(err.value)
    options.snapshot = "old.json"
    with pytest.raises(TenantMismatchError, match=r"the snapshot old\.json does not record its"):
        check_tenant_guard(desired, current, session)  # type: ignore[arg-type]


def test_explain_refuses_a_snapshot_without_group_members(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = json.loads(Path(SNAP).read_text(encoding="utf-8"))
    for group in data["groups"]:
        group.pop("members", None)  # a snapshot of an older teams-bridge
    old = tmp_path / "old-snapshot.json"
    old.write_text(json.dumps(data), encoding="utf-8")
    code, out, err = run(
        capsys, "--snapshot", str(old), "explain", "zara.alvarez@northwind-health.org"
    )
    assert code == 1 and out == ""
    assert f"{old}: the snapshot has no group members" in err
    assert "take it again with teams-bridge snapshot" in err
    assert "Traceback" not in err


def test_snapshot_out_that_cannot_be_written_is_an_error_without_a_stray_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "snaps"
    folder.mkdir()
    code, _, err = run(capsys, "--snapshot", SNAP, "snapshot", "--out", str(folder))
    assert code == 1 and f"cannot write {folder}: it is a directory" in err
    assert "Traceback" not in err
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    under_a_file = blocker / "snap.json"
    code, _, err = run(capsys, "--snapshot", SNAP, "snapshot", "--out", str(under_a_file))
    assert code == 1 and f"cannot write {under_a_file}: " in err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "snaps"]  # no .tmp left
