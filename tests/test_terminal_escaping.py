"""Tenant text never reaches the terminal raw: plan, explain and export (and the plan that apply's
confirmation prompt shows) escape every control character, line break and bidi override a name or
value from the tenant carries; an exported file with such names loads back (``validate``) and
plans no changes. The sandbox apply run is in ``e2e/test_hostile_names.py``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bridge.cli import main
from bridge.export import export_yaml
from bridge.plan import SetGroupAssignment, UpdatePolicy
from bridge.plan_view import render_plan
from bridge.report.render_text import printable, printable_lines

ROOT = Path(__file__).parents[1]
SNAP = ROOT / "examples" / "northwind-snapshot.json"
NURSING_ID = "36f675cc-81e7-4ef5-a8e2-5d940ed90475"

# Erase the line, go back to its start and up one (hides what was printed before), a forged plan
# line, a right-to-left override, NUL, BEL, NEL, LINE SEPARATOR, a bidi isolate and a C1 CSI.
EVIL = "\x1b[2K\r\x1b[1A\n+ forged line\u202eevil\x00\x07\x85\u2028\u2066\x9b31m"
FORGED = "+ forged line"


def assert_terminal_safe(text: str) -> None:
    """Nothing a terminal acts on but our own line breaks, and no line a tenant name forged."""
    bad = sorted({f"U+{ord(ch):04X}" for ch in text if ch != "\n" and not ch.isprintable()})
    assert not bad, f"raw characters reach the terminal: {bad}"
    forged = [line for line in text.splitlines() if line.lstrip().startswith(FORGED)]
    assert not forged, forged


def hostile_snapshot(tmp_path: Path) -> tuple[Path, str]:
    """The example snapshot with hostile text in a group name, a policy's description, the UPN
    of a user with a direct assignment and the tenant id. Returns (path, that UPN)."""
    data = json.loads(SNAP.read_text())
    for group in data["groups"]:
        if group["id"] == NURSING_ID:
            group["displayName"] = "Nursing" + EVIL
    for row in data["group_assignments"]:
        if row["GroupId"] == NURSING_ID:
            row["GroupName"] = "Nursing" + EVIL
    for policy in data["policies"]:
        if policy["Identity"] == "Tag:Kitchen":
            policy["Description"] = "Kitchen" + EVIL
    row = data["user_assignments"][0]
    upn = "lucia" + EVIL + "@northwind-health.org"
    for user in data["users"]:
        if user["userPrincipalName"] == row["UserPrincipalName"]:
            user["userPrincipalName"] = upn
    row["UserPrincipalName"] = upn
    path = tmp_path / "hostile-snapshot.json"
    path.write_text(json.dumps(data))
    return path, upn


WANT = f"""\
policies:
  Kitchen:
    Description: Kitchen and catering
assignments:
  groups:
    - {{group: {NURSING_ID}, policy: Kitchen, rank: 4}}
prune:
  user_assignments: true
"""


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_the_shared_helpers() -> None:
    assert printable("a\x1b[2Jb\u202ec\x00") == "a\\x1b[2Jb\\u202ec\\x00"
    assert printable("one\ntwo\r") == "one\\x0atwo\\x0d"
    assert printable_lines("one\x1b\ntwo\r") == "one\\x1b\ntwo\\x0d"  # our breaks stay
    assert printable("Pédiatrie Zürich 東京") == "Pédiatrie Zürich 東京"  # text stays text


def test_plan_escapes_tenant_names_and_values(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    snap, _ = hostile_snapshot(tmp_path)
    want = tmp_path / "want.yaml"
    want.write_text(WANT)
    code, out, err = run(capsys, "--snapshot", str(snap), "plan", str(want))
    assert code == 0, err
    assert_terminal_safe(out)
    assert_terminal_safe(err)  # the reasons apply would refuse it name the group too
    assert "~ group 'Nursing\\x1b[2K\\r\\x1b[1A\\n+ forged line\\u202eevil" in out
    assert "- user lucia\\x1b[2K\\x0d\\x1b[1A\\x0a+ forged line\\u202eevil" in out
    assert 'Description: "Kitchen\\u001b[2K\\r\\u001b[1A\\n+ forged line\\u202eevil' in out
    assert "moves group Nursing\\x1b[2K\\x0d\\x1b[1A\\x0a+ forged line" in err


def test_the_plan_keeps_its_own_colours_and_nothing_else(tmp_path: Path) -> None:
    from bridge.backends.snapshot import load_snapshot

    snap, _ = hostile_snapshot(tmp_path)
    state = load_snapshot(snap)
    from bridge.desired import load_desired
    from bridge.plan import diff

    want = tmp_path / "want.yaml"
    want.write_text(WANT)
    plan = diff(state, load_desired(str(want)))
    assert plan.of(UpdatePolicy) and plan.of(SetGroupAssignment)
    coloured = render_plan(plan, color=True)
    ours = re.compile(r"\x1b\[(?:3[123]|0)m")
    assert len(ours.findall(coloured)) >= 2 * len(plan.changes)
    assert_terminal_safe(ours.sub("", coloured))
    assert ours.sub("", coloured) == render_plan(plan, color=False)


def test_explain_escapes_every_kind_of_hostile_text(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    snap, _ = hostile_snapshot(tmp_path)
    # A member of the hostile group, no direct assignment: the group is named in the answer.
    data = json.loads(snap.read_text())
    direct = {row["UserId"] for row in data["user_assignments"]}
    member = next(
        u for g in data["groups"] if g["id"] == NURSING_ID for u in g["members"] if u not in direct
    )
    code, out, err = run(capsys, "--snapshot", str(snap), "explain", member)
    assert code == 0, err
    assert_terminal_safe(out)
    assert "(from group Nursing\\x1b[2K\\x0d\\x1b[1A\\x0a+ forged line\\u202eevil\\x00" in out


def test_explain_of_a_user_with_a_hostile_upn(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    snap, upn = hostile_snapshot(tmp_path)
    code, out, err = run(capsys, "--snapshot", str(snap), "explain", upn)
    assert code == 0, err
    assert_terminal_safe(out)
    assert out.startswith("lucia\\x1b[2K\\x0d\\x1b[1A\\x0a+ forged line")


def test_export_to_the_terminal_is_safe_and_the_file_round_trips(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    snap, _ = hostile_snapshot(tmp_path)
    code, out, err = run(capsys, "--snapshot", str(snap), "export")
    assert code == 0, err
    assert_terminal_safe(out)
    # The group's name is a one-line comment; the UPN is a double-quoted YAML string.
    comment = r"  # Nursing\\x1b\[2K \\x1b\[1A \+ forged line\\u202eevil"
    assert re.search(rf"^  - group: {NURSING_ID}{comment}", out, re.M)
    assert '  - user: "lucia\\e[2K\\r\\e[1A\\n+ forged line\\u202Eevil\\0\\a\\N\\L' in out

    exported = tmp_path / "exported.yaml"
    code, _, err = run(capsys, "--snapshot", str(snap), "export", "--out", str(exported))
    assert code == 0, err
    assert exported.read_text(encoding="utf-8") == out
    code, out, err = run(capsys, "validate", str(exported))
    assert code == 0, err
    code, out, err = run(capsys, "--snapshot", str(snap), "plan", str(exported))
    assert code == 0, err
    assert "No changes." in out  # the hostile values loaded back exactly


def test_export_of_hostile_policy_names_tenant_and_left_out_notes(tmp_path: Path) -> None:
    from bridge.backends.snapshot import load_snapshot
    from bridge.desired import load_desired

    data = json.loads(SNAP.read_text())
    extra = dict(data["policies"][1])
    extra["Identity"] = "Tag:Old" + EVIL
    extra["Description"] = "two\n  - group: " + NURSING_ID + "\nlines"  # not annotated
    extra["AllowSomethingNew"] = [1, 2]  # left out: extra: takes plain values only
    data["policies"].append(extra)
    data["tenant_id"] = "tenant" + EVIL
    snap = tmp_path / "s.json"
    snap.write_text(json.dumps(data))
    state = load_snapshot(snap)
    text = export_yaml(state)
    assert_terminal_safe(text)
    header = text.split("\ntenant:")[0]
    assert "policy 'Old\\x1b[2K\\r\\x1b[1A\\n+ forged line" in header
    assert "AllowSomethingNew holds a list" in header
    assert "from tenant tenant\\x1b[2K \\x1b[1A + forged line" in header
    exported = tmp_path / "exported.yaml"
    exported.write_text(text, encoding="utf-8")
    desired = load_desired(str(exported))
    names = {p.name for p in desired.policies.values()}
    assert "Old" + EVIL in names
    old = next(p for p in desired.policies.values() if p.name == "Old" + EVIL)
    assert old.settings["Description"] == extra["Description"]


def test_doctor_details_are_shown_escaped(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import bridge.commands
    from bridge.doctor import Check

    def checks(session: object) -> list[Check]:
        return [
            Check("tenant", True, f"tenant name Contoso{EVIL}"),
            Check("roles", False, f"role {EVIL}", fix=f"assign it{EVIL}"),
        ]

    monkeypatch.setattr(bridge.commands, "run_doctor_checks", checks)
    code, out, _ = run(capsys, "doctor")
    assert code == 1
    assert_terminal_safe(out)
    assert "[ok  ] tenant: tenant name Contoso\\x1b[2K\\x0d\\x1b[1A\\x0a+ forged line" in out
