"""The HTML drift report is built from autoescaped Jinja2 templates: hostile tenant text in every
field the report shows comes out as text, never as markup; hospitals can brand the templates."""

from __future__ import annotations

import dataclasses
import datetime as dt
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from test_report_model import NOW, scenario

from bridge.errors import ConfigError
from bridge.report.model import DriftReport, ResolvedItem, WhoGetsWhat
from bridge.report.render import render_html, write_reports
from bridge.roles import RoleChangeLine
from bridge.runby import RunBy

HOSTILE = "<script>alert(1)</script>\"' onmouseover=alert(2) x='&amp;\x00\x1b[2J\x7f\u202e\u2066"
# Fields whose value the model itself reads (statuses are counted, keys are looked up).
KEEP = {"status", "severity", "kind", "key", "fail_on", "first_seen", "user_counts", "known"}


def poison(obj: Any) -> Any:
    """``obj`` with HOSTILE put in front of every string it holds, at any depth."""
    if isinstance(obj, str):
        return HOSTILE + obj
    if isinstance(obj, list | tuple):
        return type(obj)(poison(x) for x in obj)
    if isinstance(obj, dict):
        return {k: poison(v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {
            f.name: poison(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if f.init and f.name not in KEEP
        }
        return dataclasses.replace(obj, **changes)
    return obj


def hostile_report() -> DriftReport:
    r = scenario()
    full = dataclasses.replace(
        r,
        tenant_name="Northwind",
        tenant_domain="northwind.example",
        run_by=RunBy("alice", "ward-pc", "app-1", reason="monthly check", ticket="CHG123"),
        role_lines=[RoleChangeLine("+", "Clinicians", "Clinical", 2, ("a", "b"), "2 people")],
        who_gets_what=[WhoGetsWhat("Clinical", "Nursing", 3, "Everyone", True)],
        resolved=[ResolvedItem("policy:x", NOW - dt.timedelta(days=2), NOW, "policy X", "a", "b")],
        first_seen={p.key: NOW for p in r.policies},
    )
    return poison(full)


class Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_hostile_tenant_text_in_every_field_comes_out_as_text() -> None:
    report = hostile_report()
    out = render_html(report)
    parsed = Elements()
    parsed.feed(out)
    parsed.close()
    assert "script" not in parsed.tags and "img" not in parsed.tags
    names = {name for name, _ in parsed.attrs}
    assert not names - {
        "lang",
        "charset",
        "name",
        "content",
        "http-equiv",
        "class",
        "id",
        "style",
        "colspan",
    }, names  # no onmouseover, no x
    assert "\x00" not in out and "\x1b" not in out and "\x7f" not in out
    text = "".join(parsed.text)
    # The hostile text is there, as text, in every field the report shows (and isolated).
    shown = text.count("<script>alert(1)</script>\"' onmouseover=alert(2) x='&amp;\\x00\\x1b[2J")
    assert shown >= 30, shown
    for field in (
        "Northwind",
        "alice",
        "CHG123",
        "desired.yaml",
        "Nursing",
        "Clinicians",
        "policy X",
        "ReadReceiptsEnabledType",
        "Old Pilot",
    ):
        assert field in text, field
    assert "\\x7f" in text  # DEL, escaped too
    assert out.count("<bdi>") >= shown
    assert "<bdi>\u202e" not in out  # the hostile text starts every value, escaped
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#x27; onmouseover" in out


def test_a_branding_directory_is_searched_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "drift.css").write_text("header { background:#006241; }\n", encoding="utf-8")
    monkeypatch.setenv("BRIDGE_REPORT_TEMPLATES", str(tmp_path))
    out = render_html(hostile_report())
    assert "header { background:#006241; }" in out and "--brand:#243b53" not in out
    assert "Teams messaging policy drift report" in out  # drift.html: still the package's

    (tmp_path / "drift.html").write_text(
        "<h1>St Mary's</h1>{{ report.tenant_label }}", encoding="utf-8"
    )
    out = render_html(hostile_report())
    assert out.startswith("<h1>St Mary's</h1>&lt;script&gt;") and "<script>" not in out


def test_a_broken_branding_template_is_a_user_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "drift.html").write_text("line one\n{% if %}\n", encoding="utf-8")
    monkeypatch.setenv("BRIDGE_REPORT_TEMPLATES", str(tmp_path))
    with pytest.raises(ConfigError, match=r"BRIDGE_REPORT_TEMPLATES=.*drift.html:2"):
        write_reports(scenario(), tmp_path / "out", ["html"])
    (tmp_path / "drift.html").write_text("{{ report.no_such_field }}", encoding="utf-8")
    with pytest.raises(ConfigError, match="no_such_field"):
        render_html(scenario())
    monkeypatch.setenv("BRIDGE_REPORT_TEMPLATES", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"BRIDGE_REPORT_TEMPLATES=.*is not a directory"):
        render_html(scenario())


def test_serve_goes_on_when_the_branding_template_breaks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from test_service_loop import make_loop

    from bridge.service.loop import RunRecord

    report = scenario()
    loop, _, _ = make_loop([RunRecord("drift", "drift", report=report)] * 2)
    loop.run_once()
    shipped = loop.report("html")
    assert shipped is not None and b"Drift detected" in shipped
    (tmp_path / "drift.html").write_text("{% if %}", encoding="utf-8")
    monkeypatch.setenv("BRIDGE_REPORT_TEMPLATES", str(tmp_path))
    loop.run_once()
    assert loop.runs == 2 and loop.healthy() and loop.report("html") == shipped
    assert loop.report("json") is not None
    assert "BRIDGE_REPORT_TEMPLATES=" in caplog.text
