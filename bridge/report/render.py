"""One entry point for every drift-report format: ``render(report, fmt)`` and
``write_reports(report, directory, formats)``. The renderers are pure functions returning text.

Formats and file names: ``json`` drift.json, ``html`` drift.html, ``md`` drift.md,
``junit`` drift.junit.xml (``text`` is for the terminal only)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import ConfigError
from ..files import write_set_atomic
from .model import DriftReport
from .render_html import render_html
from .render_junit import render_junit
from .render_markdown import render_markdown
from .render_text import render_text

log = logging.getLogger(__name__)


def render_json(report: DriftReport) -> str:
    """The versioned JSON form (``drift-report.schema.json``), keys in a stable order."""
    return json.dumps(report.to_dict(), indent=2, ensure_ascii=False, default=str) + "\n"


RENDERERS: dict[str, Callable[[DriftReport], str]] = {
    "json": render_json,
    "html": render_html,
    "md": render_markdown,
    "junit": render_junit,
}
FILE_NAMES = {
    "json": "drift.json",
    "html": "drift.html",
    "md": "drift.md",
    "junit": "drift.junit.xml",
}


def parse_formats(value: str) -> list[str]:
    """``"json,html"`` -> ``["json", "html"]``; ``ConfigError`` naming the valid ones."""
    formats = [f.strip().lower() for f in value.split(",") if f.strip()]
    unknown = [f for f in formats if f not in RENDERERS]
    if unknown or not formats:
        raise ConfigError(
            f"unknown report format(s) {', '.join(unknown) or '(none given)'}: "
            f"choose from {', '.join(RENDERERS)} (comma-separated)"
        )
    return list(dict.fromkeys(formats))


def write_reports(
    report: DriftReport, directory: str | os.PathLike[str], formats: Iterable[str]
) -> list[Path]:
    """Write one file per format into ``directory`` (created if needed), all or nothing: every
    file goes to a temporary name first, then all are renamed, so a reader never sees half a
    report and a set never mixes two runs. Returns the paths."""
    wanted = list(dict.fromkeys(formats))
    unknown = [f for f in wanted if f not in RENDERERS]
    if unknown:
        raise ConfigError(
            f"unknown report format(s) {', '.join(unknown)}: choose from {', '.join(RENDERERS)}"
        )
    out_dir = Path(directory)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot write drift reports to {out_dir}: {exc.strerror or exc}; "
            "choose a writable --report-dir"
        ) from exc
    rendered: list[tuple[Path, bytes]] = []
    for fmt in wanted:
        try:
            # Tenant text can hold what UTF-8 cannot encode (a lone surrogate read back from a
            # snapshot): it is written as a visible escape such as \ud800 (in JSON, a valid escape).
            data = RENDERERS[fmt](report).encode("utf-8", errors="backslashreplace")
        except (UnicodeError, ValueError) as exc:
            raise ConfigError(f"cannot render the drift reports for {out_dir}: {exc}") from exc
        rendered.append((out_dir / FILE_NAMES[fmt], data))
    # One set, all or nothing: if one file cannot be written, the others keep the previous
    # run's report rather than a mix of two runs (each file is renamed into place whole).
    write_set_atomic(rendered, hint="choose a writable --report-dir")
    paths = []
    for fmt, (path, _data) in zip(wanted, rendered, strict=True):
        log.info("wrote %s report to %s", fmt, path)
        paths.append(path)
    return paths


__all__ = [
    "FILE_NAMES",
    "RENDERERS",
    "parse_formats",
    "render_html",
    "render_json",
    "render_junit",
    "render_markdown",
    "render_text",
    "write_reports",
]
