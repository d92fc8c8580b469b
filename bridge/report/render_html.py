"""The drift report as one self-contained HTML file for a compliance reviewer: inline CSS, no
script, no network, printable. Rendered from Jinja2 templates (``templates/drift.html``) with
autoescape on, so every value a template prints is escaped unless it is built markup.

A hospital can brand the report: ``BRIDGE_REPORT_TEMPLATES`` names a directory searched before
the package's templates (a ``drift.html`` or ``drift.css`` there replaces the shipped one)."""

from __future__ import annotations

import datetime as dt
import html
import os
import re
from functools import lru_cache
from pathlib import Path

import jinja2
from markupsafe import Markup

from ..errors import ConfigError
from .model import DriftReport, format_value, utc

DEFAULT_MAX_ITEMS = 500
TEMPLATES_ENV = "BRIDGE_REPORT_TEMPLATES"

_STATUS_LABEL = {
    "in_sync": "In sync",
    "drifted": "Drifted",
    "missing": "Missing",
    "extra": "Not wanted",
}


# C0 and C1 control characters but tab and line feed: not valid in HTML, shown as \x1b.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _escape(value: object) -> Markup:
    """Every printed value: markup the templates built stays as it is; anything else is escaped
    the way ``html.escape`` does (quotes as ``&quot;``/``&#x27;``), control characters shown as
    ``\\x1b``. Bidi overrides stay: the templates isolate tenant text in ``<bdi>``."""
    if isinstance(value, Markup):
        return value
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))
    return Markup(html.escape(text, quote=True))


def _utc(value: dt.datetime, fmt: str) -> str:
    return utc(value).strftime(fmt)


@lru_cache(maxsize=1)
def _shipped() -> jinja2.Environment:
    return _environment(None)


def _environment(custom: str | None) -> jinja2.Environment:
    """The templates of ``custom`` (a branding directory) first, then the package's. A
    branding directory is read afresh on every report: a file added there is used next time."""
    loaders: list[jinja2.BaseLoader] = []
    if custom:
        loaders.append(jinja2.FileSystemLoader(custom))
    loaders.append(jinja2.PackageLoader("bridge.report", "templates"))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        finalize=_escape,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["utc"] = _utc
    env.globals.update(format_value=format_value, status_label=_STATUS_LABEL)
    return env


def _templates_dir() -> str | None:
    custom = os.environ.get(TEMPLATES_ENV, "").strip()
    if not custom:
        return None
    if not Path(custom).is_dir():
        raise ConfigError(
            f"{TEMPLATES_ENV}={custom} is not a directory: point it at a directory holding your "
            "drift.html or drift.css, or unset it to use the shipped templates"
        )
    return str(Path(custom).resolve())


def render_html(report: DriftReport, *, max_items: int = DEFAULT_MAX_ITEMS) -> str:
    """The whole report as one HTML document; at most ``max_items`` user assignments are listed
    (the counts stay exact)."""
    custom = _templates_dir()

    def seen(key: str) -> str:
        t = report.first_seen.get(key)
        return f"{utc(t):%Y-%m-%d %H:%M} UTC" if t else ""

    reasons = []
    if report.drift_count:
        reasons.append(f"{report.drift_count} managed object(s) differ from the desired state")
    if report.failing_findings:
        reasons.append(f"{len(report.failing_findings)} rule finding(s) need attention")
    try:
        env = _environment(custom) if custom else _shipped()
        template = env.get_template("drift.html")
        out = template.render(
            report=report,
            summary=report.summary(),
            seen=seen,
            reasons=reasons,
            max_items=max_items,
            in_sync_policies=[
                p.name for p in report.policies if p.status == "in_sync" and not p.drifted
            ],
            users_by_role=sum(1 for u in report.users_listed if u.user_id in report.role_user_ids),
        )
    except jinja2.TemplateError as exc:
        if custom is None:
            raise  # the shipped templates are ours: a bug, not a user error
        where = (
            f"{exc.filename}:{exc.lineno}" if isinstance(exc, jinja2.TemplateSyntaxError) else ""
        )
        raise ConfigError(
            f"the drift report template in {TEMPLATES_ENV}={custom} failed"
            f"{' at ' + where if where else ''}: {exc.message or exc}; fix it or unset "
            f"{TEMPLATES_ENV}"
        ) from exc
    return out
