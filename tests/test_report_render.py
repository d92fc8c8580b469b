"""Every renderer, checked for content: names, settings, expected/actual values, counts."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from test_report_model import NOW, in_sync_report, make_report, scenario

from bridge.errors import ConfigError
from bridge.report.model import DriftReport, UserAssignmentReport
from bridge.report.notify import build_teams_card
from bridge.report.render import (
    parse_formats,
    render_html,
    render_json,
    render_junit,
    render_markdown,
    render_text,
    write_reports,
)
from bridge.rules import Finding

SCRIPT = "<script>alert(1)</script>"


def many_users(n: int) -> object:
    r = scenario()
    listed = [
        UserAssignmentReport(
            f"u{i:05d}", f"user{i:05d}@contoso.org", "drifted", "Clinical", "Default"
        )
        for i in range(n)
    ]
    counts = dict(r.user_counts, drifted=n, missing=0, extra=0)
    return dataclasses.replace(r, users_listed=listed, user_counts=counts)


# --------------------------------------------------------------------------- text


def test_text_shows_policies_settings_values_and_counts() -> None:
    out = render_text(scenario())
    assert "~ Global" in out
    assert '~ ReadReceiptsEnabledType: "UserPreference" -> "Everyone"' in out
    assert "+ Pharmacy" in out and '+ ReadReceiptsEnabledType = "Everyone"' in out
    assert "- Old Pilot" in out
    assert "~ AllowGiphy: true -> false" in out
    assert "AllowFutureThing=true" in out
    assert "Clinicians" in out and "ranked below Facilities; the file puts it above" in out
    assert "4 declared, 1 in sync, 1 drifted, 1 missing, 1 extra" in out
    assert "locum.doctor@contoso.org  Support Staff -> Clinical" in out
    assert "WARNING clinical-read-receipts" in out
    # The verdict is for people; the exit code is for pipelines (and the process's own).
    assert "10 objects not in sync" in out and "Exit code" not in out
    assert "not managed: Default, EduFaculty, EduStudent" in out


def test_text_colour_only_when_asked() -> None:
    plain = render_text(scenario())
    coloured = render_text(scenario(), color=True)
    assert "\x1b[" not in plain
    assert "\x1b[33m~\x1b[0m" in coloured and "\x1b[31;1m" in coloured


def test_text_strips_terminal_control_characters_from_tenant_data() -> None:
    r = dataclasses.replace(make_report(), tenant_id="evil\x1b[2Jtenant")
    out = render_text(r)
    assert "\x1b" not in out and "evil\\x1b[2Jtenant" in out


def test_text_caps_user_listing_but_keeps_counts() -> None:
    out = render_text(many_users(120), max_items=50)
    assert "... and 70 more" in out
    assert "120 drifted" in out
    assert out.count("Default -> Clinical") == 50


def test_text_in_sync() -> None:
    out = render_text(in_sync_report())
    assert "In sync." in out and "Drift:" not in out
    assert "INFO    read-receipts-group-size" in out


# --------------------------------------------------------------------------- JSON


def test_json_round_trips_to_dict() -> None:
    r = scenario()
    data = json.loads(render_json(r))
    assert data == json.loads(json.dumps(r.to_dict()))
    clinical = next(p for p in data["policies"] if p["name"] == "Clinical")
    rr = next(s for s in clinical["settings"] if s["name"] == "ReadReceiptsEnabledType")
    assert rr == {
        "name": "ReadReceiptsEnabledType",
        "expected": "Everyone",
        "actual": "UserPreference",
        "in_sync": False,
        "known": True,
        "first_seen": None,
    }
    assert clinical["unknown_settings"] == {"AllowFutureThing": True}
    assert data["user_assignments"]["counts"]["in_sync"] == 1
    assert data["exit_code"] == 2 and data["in_sync"] is False


# --------------------------------------------------------------------------- HTML


def test_html_is_self_contained_and_has_the_content() -> None:
    out = render_html(scenario())
    assert out.startswith("<!DOCTYPE html>")
    assert "<script" not in out.lower().replace("&lt;script", "")
    assert "http://" not in out and "https://" not in out and "<link" not in out
    assert "@media print" in out
    assert "Drift detected" in out and "6f1c2d3e-0000-4000-8000-00000000c0de" in out
    for text in (
        "Global",
        "Clinical",
        "Pharmacy",
        "Old Pilot",
        "Support Staff",
        "Clinicians",
        "locum.doctor@contoso.org",
        "ReadReceiptsEnabledType",
        "&quot;UserPreference&quot;",
        "AllowFutureThing",
        "Read receipts are not on for everyone",
    ):
        assert text in out, text
    assert "10 managed object(s) differ" in out


def test_html_escapes_tenant_text() -> None:
    out = render_html(scenario())
    assert SCRIPT not in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Doctors &amp; nurses" in out
    evil = dataclasses.replace(scenario(), desired_path='"><img src=x onerror=alert(1)>.yaml')
    assert "<img" not in render_html(evil)


def test_html_caps_user_listing() -> None:
    out = render_html(many_users(600), max_items=500)
    assert "... and 100 more" in out
    assert out.count("user0") == 500


def test_html_in_sync() -> None:
    out = render_html(in_sync_report())
    assert "In sync" in out and "Drift detected" not in out


# --------------------------------------------------------------------------- Markdown


def test_markdown_tables() -> None:
    out = render_markdown(scenario())
    assert out.startswith("### Teams messaging policies: ❌ Drift detected")
    assert "| Policies | **5** | 3 | 1 | 1 | 0 |" in out
    assert "| User assignments | **3** | 1 | 1 | 1 | 1 |" in out
    assert '| policy Global | ReadReceiptsEnabledType | "Everyone" | "UserPreference" |  |' in out
    assert "| warning | `clinical-read-receipts` |" in out
    assert SCRIPT not in out and "&lt;script&gt;" in out
    capped = render_markdown(many_users(100), max_items=30)
    # 8 policy and group items first, then 22 of the 100 users: 30 rows in all.
    assert "| ... and 78 more |" in capped and capped.count("| user `user") == 22
    assert "✅ In sync" in render_markdown(in_sync_report())


def test_markdown_upns_are_code_spans_a_reader_can_copy() -> None:
    """A UPN copied from the report is the UPN: in a code span, no zero-width space in it, and
    no mail link a renderer could make of it."""
    user = UserAssignmentReport("u-m", "maria.lopez@contoso.org", "missing", "Clinical", None)
    out = render_markdown(dataclasses.replace(scenario(), users_listed=[user]))
    assert "| user `maria.lopez@contoso.org` |" in out
    row = next(line for line in out.splitlines() if "maria.lopez" in line)
    assert "\u200b" not in row


def test_markdown_cells_cannot_break_the_table() -> None:
    r = dataclasses.replace(scenario(), desired_path="a|b`c.yaml")
    out = render_markdown(r)
    # A code span is written raw, fenced by more backticks than it holds (no table here).
    assert "desired ``a|b`c.yaml`` (sha256" in out
    user = UserAssignmentReport("u-p", "pipe|user@x.org", "missing", "Clinical", None)
    cells = render_markdown(dataclasses.replace(scenario(), users_listed=[user]))
    row = next(line for line in cells.splitlines() if "pipe" in line)
    assert "pipe\\|user" in row and row.count(" | ") == 4


def test_markdown_code_spans_show_text_as_typed() -> None:
    r = dataclasses.replace(
        scenario(), desired_path="C:\\policies\\north_prod_v2.yaml", tenant_id="``t``"
    )
    out = render_markdown(r)
    assert "desired `C:\\policies\\north_prod_v2.yaml` (sha256" in out
    assert "Tenant ``` ``t`` ``` ·" in out


def test_markdown_defuses_mentions_autolinks_and_control_characters() -> None:
    from bridge.report.render_markdown import code, md

    z = "\u200b"
    assert md("@channel ping") == f"@{z}channel ping"
    assert md("night.charge@contoso.org") == f"night.charge@{z}contoso.org"
    assert md("see https://evil.example and www.evil.example") == (
        f"see https:{z}//evil.example and www{z}.evil.example"
    )
    assert md("a\x1b[2J\x07b\nc") == "a\\\\x1b\\[2J\\\\x07b c"
    assert md("~~gone~~") == "\\~\\~gone\\~\\~"
    assert code("a\x1b`b") == "``a\\x1b`b``"
    # The Teams card uses the same escape.
    user = UserAssignmentReport("u-m", "@team https://x.example", "missing", "Clinical", None)
    card = build_teams_card(dataclasses.replace(scenario(), users_listed=[user]))
    text = json.dumps(card, ensure_ascii=False)
    assert f"@{z}team https:{z}//x.example" in text


# --------------------------------------------------------------------------- JUnit


def _junit(report: object) -> ET.Element:
    return ET.fromstring(render_junit(report))  # type: ignore[arg-type]


def _check_junit_schema(root: ET.Element) -> ET.Element:
    """The rules of the Ant JUnit schema that CI tools enforce."""
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    suite = suites[0]
    for attr in ("name", "tests", "failures", "errors", "skipped", "time", "timestamp", "hostname"):
        assert suite.get(attr), attr
    cases = suite.findall("testcase")
    assert int(suite.get("tests", "-1")) == len(cases) == int(root.get("tests", "-1"))
    failing = [c for c in cases if c.find("failure") is not None]
    assert int(suite.get("failures", "-1")) == len(failing) == int(root.get("failures", "-1"))
    assert int(suite.get("errors", "-1")) == sum(1 for c in cases if c.find("error") is not None)
    assert int(suite.get("skipped", "-1")) == sum(1 for c in cases if c.find("skipped") is not None)
    float(suite.get("time", "x"))
    assert len(suite.get("timestamp", "")) == 19 and suite.get("timestamp", "")[10] == "T"
    for c in cases:
        assert c.get("name") and c.get("classname") and c.get("time") is not None
        for f in c.findall("failure"):
            assert f.get("message") and f.get("type")
    assert suite.find("properties") is not None
    return suite


def test_junit_structure_and_failures() -> None:
    suite = _check_junit_schema(_junit(scenario()))
    cases = {(c.get("classname"), c.get("name")): c for c in suite.findall("testcase")}
    assert {k[0] for k in cases} == {"policy", "group_assignment", "user_assignment", "rule"}
    clinical = cases[("policy", "Clinical")].find("failure")
    assert clinical is not None
    assert clinical.get("message") == "2 setting(s) differ: Description, ReadReceiptsEnabledType"
    assert 'ReadReceiptsEnabledType: expected "Everyone", actual "UserPreference"' in (
        clinical.text or ""
    )
    assert cases[("group_assignment", "Facilities")].find("failure") is None
    assert cases[("user_assignment", "1 user assignment(s) in sync")].find("failure") is None
    assert cases[("user_assignment", "locum.doctor@contoso.org")].find("failure") is not None
    info = cases[("rule", "read-receipts-group-size")]
    assert info.find("failure") is None and info.find("system-out") is not None
    assert suite.get("tests") == "15" and suite.get("failures") == "12"
    assert suite.get("timestamp") == NOW.strftime("%Y-%m-%dT%H:%M:%S")


def test_junit_in_sync_has_no_failures() -> None:
    suite = _check_junit_schema(_junit(in_sync_report()))
    assert suite.get("failures") == "0"
    assert int(suite.get("tests", "0")) == len(suite.findall("testcase")) > 0


HOSTILE = "Ward\x1b[31m\x00\x07 \ud800\ufffe end"


def hostile_report() -> DriftReport:
    """The scenario with control characters, a lone surrogate and a non-character in tenant text
    (names, settings, findings) and in the desired path."""
    r = scenario()
    user = UserAssignmentReport("u-h", f"{HOSTILE}@contoso.org", "missing", "Clinical", None)
    finding = Finding(
        "clinical-priority", "error", f"title {HOSTILE}", f"why {HOSTILE}", (HOSTILE,)
    )
    policies = [dataclasses.replace(r.policies[0], name=HOSTILE), *r.policies[1:]]
    return dataclasses.replace(
        r,
        policies=policies,
        users_listed=[user, *r.users_listed],
        findings=[finding, *r.findings],
        desired_path=f"dir/{HOSTILE}.yaml",
        tenant_id=f"t{HOSTILE}",
    )


def test_junit_is_well_formed_with_control_characters_in_tenant_text() -> None:
    text = render_junit(hostile_report())
    # expat (what ET and most CI tools use) refuses any character XML 1.0 forbids.
    suite = _check_junit_schema(ET.fromstring(text.encode("utf-8")))
    names = [c.get("name") or "" for c in suite.findall("testcase")]
    assert "Ward\\x1b[31m\\x00\\x07 \\ud800\\ufffe end" in names
    assert any(n.startswith("Ward\\x1b") and n.endswith("@contoso.org") for n in names)
    rule = next(
        c for c in suite.findall("testcase") if (c.get("name") or "").startswith("clinical-")
    )
    failure = rule.find("failure")
    assert failure is not None and "\\x1b" in (failure.get("message") or "")
    assert "\\ud800" in (failure.text or "")
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["desired_path"] == "dir/Ward\\x1b[31m\\x00\\x07 \\ud800\\ufffe end.yaml"
    assert suite.get("hostname", "").startswith("tWard\\x1b")


# --------------------------------------------------------------------------- files


def test_write_reports_writes_each_format(tmp_path: Path) -> None:
    paths = write_reports(scenario(), tmp_path / "out", ["json", "html", "md", "junit"])
    assert [p.name for p in paths] == ["drift.json", "drift.html", "drift.md", "drift.junit.xml"]
    assert json.loads(paths[0].read_text())["drift_count"] == 10
    assert "Drift detected" in paths[1].read_text()
    assert "| Policies | **5**" in paths[2].read_text()
    _check_junit_schema(ET.parse(paths[3]).getroot())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths)


def test_formats_are_validated(tmp_path: Path) -> None:
    assert parse_formats("json, HTML,json") == ["json", "html"]
    with pytest.raises(ConfigError, match=r"unknown report format.*xml.*choose from json, html"):
        parse_formats("json,xml")
    with pytest.raises(ConfigError, match="unknown report format"):
        write_reports(scenario(), tmp_path, ["pdf"])


def test_write_reports_unwritable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot write drift reports"):
        write_reports(scenario(), blocker / "sub", ["json"])


def test_markdown_keeps_tenant_text_literal() -> None:
    from bridge.report.render_markdown import md

    assert md("[click](http://evil) <b>x</b> | a_b") == (
        "\\[click\\](http:\u200b//evil) &lt;b&gt;x&lt;/b&gt; \\| a\\_b"
    )


def test_text_escapes_unknown_setting_names_and_values() -> None:
    r = scenario()
    clinical = next(p for p in r.policies if p.unknown)
    row = dataclasses.replace(clinical.unknown[0], name="Allow\x1b[2JThing")
    hostile = dataclasses.replace(clinical, unknown=(row,))
    r = dataclasses.replace(r, policies=[hostile if p is clinical else p for p in r.policies])
    out = render_text(r)
    assert "\x1b" not in out and "Allow\\x1b[2JThing=true" in out


def test_reports_with_a_lone_surrogate_are_written_readable(tmp_path: Path) -> None:
    paths = write_reports(hostile_report(), tmp_path, ["json", "html", "md", "junit"])
    assert json.loads(paths[0].read_text(encoding="utf-8"))["tenant_id"].startswith("tWard\x1b")
    assert "\\ud800" in paths[1].read_text(encoding="utf-8")
    paths[2].read_text(encoding="utf-8")
    ET.parse(paths[3])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)


def test_a_failing_write_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.report import render

    def broken(report: object) -> str:
        raise ValueError("cannot render this")

    write_reports(scenario(), tmp_path, ["json"])
    before = (tmp_path / "drift.json").read_bytes()
    monkeypatch.setitem(render.RENDERERS, "md", broken)
    with pytest.raises(ConfigError, match=r"cannot render the drift reports.*cannot render this"):
        write_reports(in_sync_report(), tmp_path, ["json", "md"])
    # Nothing is written until every file is rendered: the old set stays whole.
    assert [p.name for p in tmp_path.iterdir()] == ["drift.json"]
    assert (tmp_path / "drift.json").read_bytes() == before

    def no_rename(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(render.os, "replace", no_rename)
    with pytest.raises(ConfigError, match="No space left on device"):
        write_reports(scenario(), tmp_path, ["html"])
    assert [p.name for p in tmp_path.iterdir()] == ["drift.json"]


def test_reports_carry_when_the_tenant_state_was_observed() -> None:
    taken = NOW - dt.timedelta(days=3)
    r = dataclasses.replace(scenario(), observed_at=taken)
    assert r.to_dict()["observed_at"] == "2024-04-28T08:00:00Z"
    assert "observed   2024-04-28 08:00:00Z (the tenant state shown)" in render_text(r)
    assert "(tenant state of 2024-04-28 08:00 UTC)" in render_markdown(r)
    assert "Tenant state of 2024-04-28 08:00:00 UTC" in render_html(r)
    props = {p.get("name"): p.get("value") for p in _junit(r).iter("property")}
    assert props["observed_at"] == "2024-04-28T08:00:00Z"
    # A live read: observed when generated, and the headers say nothing more.
    live = scenario()
    assert live.to_dict()["observed_at"] == live.to_dict()["generated_at"]
    assert "observed " not in render_text(live) and "tenant state of" not in render_markdown(live)


def test_html_collapses_unmanaged_settings_and_isolates_bidi_text() -> None:
    """Unmanaged settings are context: collapsed on screen, not printed (issue 15: the sandbox
    hospital printed on 19 pages)."""
    r = scenario()
    rtl = "\u202eevil"
    user = UserAssignmentReport("u-b", f"{rtl}@contoso.org", "missing", "Clinical", None)
    out = render_html(dataclasses.replace(r, users_listed=[user]))
    assert "<details><summary>" in out and "<details open" not in out
    assert "details, .screen-only" in out  # the print stylesheet hides them
    assert "Exit code" not in out  # the verdict is for people; the exit code is for pipelines
    assert f"<td><bdi>{rtl}@contoso.org</bdi></td>" in out
    assert "<h3><bdi>Clinical</bdi></h3>" in out


def test_a_report_set_is_all_or_nothing(tmp_path: Path) -> None:
    first = write_reports(scenario(), tmp_path, ["json", "html"])
    before = {p.name: p.read_bytes() for p in first}
    (tmp_path / "drift.md").mkdir()  # this one cannot be written
    with pytest.raises(ConfigError, match=r"drift\.md: it is a directory"):
        write_reports(in_sync_report(), tmp_path, ["json", "html", "md"])
    assert {p.name: p.read_bytes() for p in first} == before  # not a mix of two runs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drift.html", "drift.json", "drift.md"]
