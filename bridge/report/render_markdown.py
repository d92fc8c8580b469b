"""The drift report as Markdown for a pull-request comment or a pipeline summary: the verdict,
one table of what differs, the findings. Short by design; the HTML report has the detail."""

from __future__ import annotations

import re

from .model import DriftReport, format_value, utc
from .render_text import printable

DEFAULT_MAX_ITEMS = 30


def md(text: object) -> str:
    """``text`` safe inside a Markdown table cell: no HTML, no cell breaks, no code spans, no
    links, mentions or emphasis made of tenant text."""
    out = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return escape_markdown(out).replace("|", "\\|")


def escape_markdown(text: object) -> str:
    """Tenant text as literal Markdown on one line, shared by the Markdown report and the Teams
    card: whitespace runs become one space, control characters a visible ``\\xNN``, Markdown
    punctuation is backslash-escaped, and what renderers turn into links or notifications after
    escapes are resolved (``@mention``, ``name@host`` mail links, ``https://`` and ``www.``
    autolinks) is broken with an invisible zero-width space."""
    out = printable(" ".join(str(text).split()))
    for ch in "\\*_[]`~":
        out = out.replace(ch, "\\" + ch)
    return _ZWSP_AFTER.sub(lambda m: m.group() + "\u200b", out)


# "@" (mentions, mail autolinks), "https:" before "//" and "www" before "." (GFM autolinks).
_ZWSP_AFTER = re.compile(r"@|(?<=:)(?=//)|(?i:\bwww)(?=\.)")


def code(text: object, *, cell: bool = False) -> str:
    """``text`` as a code span, written raw (backslashes show as typed): one line, no control
    characters, a fence longer than any backtick run inside; in a table ``cell``, ``|`` is
    escaped (GitHub reads ``\\|`` inside a code span in a table as ``|``)."""
    raw = printable(" ".join(str(text).split()))
    if cell:
        raw = raw.replace("|", "\\|")
    longest = max((len(run) for run in re.findall(r"`+", raw)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if raw.startswith("`") or raw.endswith("`") else ""
    return f"{fence}{pad}{raw}{pad}{fence}"


def render_markdown(report: DriftReport, *, max_items: int = DEFAULT_MAX_ITEMS) -> str:
    s = report.summary()
    lines: list[str] = []
    add = lines.append
    verdict = "✅ In sync" if report.in_sync else "❌ Drift detected"
    add(f"### Teams messaging policies: {verdict}")
    add("")
    add(
        f"Tenant {md(report.tenant_name) + ' ' if report.tenant_name else ''}"
        f"{code(report.tenant_domain or report.tenant_id or 'unknown')} · "
        f"{utc(report.generated_at):%Y-%m-%d %H:%M} UTC"
        + (
            f" (tenant state of {utc(report.observed):%Y-%m-%d %H:%M} UTC)"
            if report.observed_earlier()
            else ""
        )
        + f" · desired {code(report.desired_path)} "
        f"(sha256 {code(report.desired_sha256[:12] or '-')}) · teams-bridge "
        f"{md(report.tool_version)}"
    )
    add("")
    if report.run_by is not None:
        add(f"Run {md(report.run_by.describe())}")
        add("")
    add("| | Not in sync | Drifted | Missing | Not wanted | In sync |")
    add("|---|---:|---:|---:|---:|---:|")
    for label, key in (
        ("Policies", "policies"),
        ("Group assignments", "group_assignments"),
        ("User assignments", "user_assignments"),
    ):
        c = s[key]
        off = c["drifted"] + c["missing"] + c["extra"]
        add(
            f"| {label} | **{off}** | {c['drifted']} | {c['missing']} | {c['extra']} | "
            f"{c['in_sync']} |"
        )
    f = s["findings"]
    add("")
    add(f"Rule findings: **{f['error']}** error, **{f['warning']}** warning, {f['info']} info.")

    items = report.drift_items()
    objects = [i for i in items if i.kind != "rule"]
    if objects:
        add("")
        add("| Object | Setting / status | Expected | Actual | First seen |")
        add("|---|---|---|---|---|")
        for i in objects[:max_items]:
            t = report.first_seen.get(i.key)
            add(
                f"| {_object(i.object, i.key, cell=True)} | {md(i.setting or i.status)} | "
                f"{md(_short(i.expected))} | "
                f"{md(_short(i.actual))} | {f'{utc(t):%Y-%m-%d}' if t else ''} |"
            )
        if len(objects) > max_items:
            add(f"| ... and {len(objects) - max_items} more | | | | |")

    if report.findings:
        add("")
        add("| Severity | Rule | Finding | Policies |")
        add("|---|---|---|---|")
        for finding in report.findings:
            add(
                f"| {finding.severity} | {code(finding.rule_id, cell=True)} | "
                f"{md(finding.title)} | {md(', '.join(finding.policies))} |"
            )
    if report.role_lines:
        add("")
        add("Roles:")
        add("")
        for r in report.role_lines:
            add(f"- {code(r.symbol)} {md(r.text)}")
    if report.who_gets_what is not None:
        add("")
        add("| Policy | Department | People | Read receipts | Priority notifications |")
        add("|---|---|---|---|---|")
        for w in report.who_gets_what:
            add(
                f"| {md(w.policy)} | {md(w.department or '(none)')} | {w.people} | "
                f"{md(w.read_receipts or '(not reported)')} | "
                f"{'yes' if w.priority_notifications else 'no'} |"
            )
    if report.resolved:
        add("")
        add(f"Resolved since the previous run: {len(report.resolved)} item(s).")
        add("")
        for done in report.resolved[:max_items]:
            change = done.describe().removeprefix(f"{done.object}: ")
            add(
                f"- {_object(done.object, done.key)}"
                + (f": {md(change)}" if done.object and change != done.object else "")
                + f" (first seen {utc(done.first_seen):%Y-%m-%d %H:%M} UTC, resolved "
                f"{utc(done.resolved_at):%Y-%m-%d %H:%M} UTC)"
            )
    add("")
    return "\n".join(lines)


def _object(obj: str | None, key: str, *, cell: bool = False) -> str:
    """What people call a drift item; a user's UPN as a code span (copied whole, never a mail
    link, no invisible character in it), the key when history did not keep the name."""
    if obj is None:
        return code(key, cell=cell)
    kind, _, name = obj.partition(" ")
    if kind == "user" and name:
        return f"user {code(name, cell=cell)}"
    return md(obj)


def _short(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return f"{value.get('policy')} (rank {value.get('rank')})"
    text = format_value(value)
    return text if len(text) <= 80 else text[:77] + "..."
