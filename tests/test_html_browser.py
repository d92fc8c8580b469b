"""The HTML report opened in headless Chromium: it renders, the page text has the content, the
injected script stays text, and a screenshot is produced (kept in the pytest tmp dir to look at).

Skipped only on a developer machine without Chromium; CI (CI set) installs it and must run this.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_report_model import scenario

from bridge.report.render import write_reports

CHROMIUM = shutil.which("chromium")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="chromium is not installed (apt-get install -y chromium); CI always runs this test",
)


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None, "chromium must be installed in CI (see .ci/run)"
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1280,2000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_html_report_in_headless_chromium(tmp_path: Path) -> None:
    (html_path,) = write_reports(scenario(), tmp_path / "report", ["html"])
    url = html_path.resolve().as_uri()

    png = tmp_path / "drift.png"
    shot = _chromium(tmp_path, f"--screenshot={png}", url)
    assert shot.returncode == 0, shot.stderr[-2000:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a real page, not blank

    dom = _chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    assert "Drift detected" in page
    assert "Teams messaging policy drift report" in page
    for text in (
        "Clinical",
        "Pharmacy",
        "ReadReceiptsEnabledType",
        "UserPreference",
        "locum.doctor@contoso.org",
        "ranked below Facilities",
    ):
        assert text in page, text
    # The tenant's Description is text in the page, never an element the browser created.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page.lower()


def test_who_gets_what_in_headless_chromium(tmp_path: Path) -> None:
    """The compliance officer's view: per effective policy and department, people, read
    receipts, priority notifications (issue 11), as the browser lays it out."""
    import datetime as dt

    from test_coverage import _current

    from bridge.plan import diff
    from bridge.report.model import build_drift_report
    from bridge.state import DesiredState

    current = _current()
    report = build_drift_report(
        current,  # type: ignore[arg-type]
        DesiredState(),
        diff(current, DesiredState()),  # type: ignore[arg-type]
        findings=[],
        tool_version="t",
        desired_path="roles.yaml",
        now=dt.datetime(2026, 1, 1),
    )
    (html_path,) = write_reports(report, tmp_path / "report", ["html"])
    dom = _chromium(tmp_path, "--dump-dom", html_path.resolve().as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    assert '<h2 id="who-gets-what">Who gets what</h2>' in page
    row = (
        "<tr><td><bdi>Students</bdi></td><td><bdi>Graduate Medical Education</bdi></td>"
        "<td>3</td><td><bdi>Everyone</bdi></td><td>no</td></tr>"
    )
    assert row in page


def _pdf_pages(pdf: bytes) -> int:
    """Pages in a PDF Chromium wrote: its page objects (``/Type /Page``, not ``/Pages``)."""
    import re

    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", pdf))


@pytest.mark.parametrize("desired", ["northwind.yaml", "roles.yaml"])
def test_the_sandbox_hospitals_report_prints_on_three_pages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], desired: str
) -> None:
    """A compliance file: findings, what is out of sync and who gets what print; context
    (unmanaged settings, objects in sync, each person a role moves) stays on screen. Before:
    19 and 20 pages."""
    from bridge.cli import main

    root = Path(__file__).resolve().parents[1]
    with pytest.raises(SystemExit) as info:
        main(
            [
                "--sandbox",
                "drift",
                str(root / "examples" / desired),
                "--report-dir",
                str(tmp_path / "report"),
                "--format",
                "html",
            ]
        )
    assert info.value.code == 2, capsys.readouterr()
    html_path = tmp_path / "report" / "drift.html"
    page = html_path.read_text(encoding="utf-8")
    assert "<details open" not in page and "<details>" in page  # collapsed, still there
    pdf = tmp_path / "drift.pdf"
    printed = _chromium(
        tmp_path, "--no-pdf-header-footer", f"--print-to-pdf={pdf}", html_path.resolve().as_uri()
    )
    assert printed.returncode == 0, printed.stderr[-2000:]
    pages = _pdf_pages(pdf.read_bytes())
    assert 1 <= pages <= 3, pages
