"""The drift report as one self-contained HTML file for a compliance reviewer: inline CSS, no
script, no network, printable. Everything that comes from the tenant or the desired file goes
through ``html.escape``."""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable

from .model import (
    DriftReport,
    GroupAssignmentReport,
    PolicyReport,
    SettingRow,
    format_value,
    utc,
)

DEFAULT_MAX_ITEMS = 500

_STATUS_LABEL = {
    "in_sync": "In sync",
    "drifted": "Drifted",
    "missing": "Missing",
    "extra": "Not wanted",
}

CSS = """
:root { --ink:#1f2933; --muted:#5f6b7a; --line:#d9dee5; --bg:#f4f6f9; --card:#fff;
  --ok:#1e7b45; --ok-bg:#e3f4ea; --warn:#8a5a00; --warn-bg:#fff3d6; --bad:#b42318;
  --bad-bg:#fde8e6; --info:#1d5d99; --info-bg:#e4effa; --brand:#243b53; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 "Segoe UI", system-ui, -apple-system, Roboto, "Helvetica Neue",
  Arial, sans-serif; color:var(--ink); background:var(--bg); }
header { background:var(--brand); color:#fff; padding:20px 32px; }
header h1 { margin:0 0 4px; font-size:20px; font-weight:600; }
header .meta { color:#d5dde6; font-size:13px; }
header .meta span { margin-right:18px; white-space:nowrap; }
main { max-width:1180px; margin:0 auto; padding:20px 32px 40px; }
h2 { font-size:16px; margin:28px 0 10px; padding-bottom:4px; border-bottom:2px solid var(--line); }
h3 { font-size:15px; margin:0; }
.verdict { display:flex; align-items:center; gap:14px; padding:14px 18px; border-radius:8px;
  margin-bottom:16px; font-size:15px; }
.verdict.ok { background:var(--ok-bg); color:var(--ok); border:1px solid #b7e1c6; }
.verdict.bad { background:var(--bad-bg); color:var(--bad); border:1px solid #f4c1bb; }
.verdict strong { font-size:18px; }
.cards { display:grid; grid-template-columns:repeat(4, 1fr); gap:12px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px;
  padding:12px 14px; }
.card .label { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.card .num { font-size:24px; font-weight:600; margin:2px 0; }
.card .sub { color:var(--muted); font-size:12px; }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px;
  font-weight:600; white-space:nowrap; }
.s-in_sync { background:var(--ok-bg); color:var(--ok); }
.s-drifted { background:var(--warn-bg); color:var(--warn); }
.s-missing, .s-extra, .sev-error { background:var(--bad-bg); color:var(--bad); }
.sev-warning { background:var(--warn-bg); color:var(--warn); }
.sev-info, .tag { background:var(--info-bg); color:var(--info); }
.policy, .finding { background:var(--card); border:1px solid var(--line); border-radius:8px;
  margin:0 0 14px; overflow:hidden; }
.policy > .head, .finding > .head { display:flex; align-items:center; gap:10px;
  padding:10px 14px; border-bottom:1px solid var(--line); background:#fafbfc; }
.finding > .body { padding:10px 14px; }
.finding p { margin:0 0 6px; }
.muted { color:var(--muted); }
table { width:100%; border-collapse:collapse; background:var(--card); }
table.fixed { table-layout:fixed; }
th, td { text-align:left; padding:6px 14px; border-bottom:1px solid var(--line);
  vertical-align:top; }
th { font-size:12px; color:var(--muted); font-weight:600; text-transform:uppercase;
  letter-spacing:.03em; background:#fafbfc; }
tr:last-child td { border-bottom:none; }
tr.diff td { background:#fffaf0; }
tr.diff td:first-child { box-shadow: inset 3px 0 0 #e0a400; }
td code, .value { font-family: ui-monospace, "Cascadia Mono", Consolas, monospace;
  font-size:12.5px; word-break:break-word; }
.table-card { border:1px solid var(--line); border-radius:8px; overflow:hidden; }
details { padding:6px 14px 10px; border-top:1px solid var(--line); }
details summary { cursor:pointer; color:var(--muted); font-size:13px; }
details table th, details table td { padding:3px 8px; }
.note { font-size:13px; color:var(--muted); margin:6px 0 10px; }
footer { max-width:1180px; margin:0 auto; padding:0 32px 30px; color:var(--muted); font-size:12px; }
@media (max-width: 800px) { .cards { grid-template-columns:repeat(2, 1fr); } }
@media print {
  body { background:#fff; font-size:11px; }
  header { padding:10px 0; background:#fff; color:var(--ink); border-bottom:2px solid var(--ink); }
  header .meta { color:var(--ink); }
  main, footer { max-width:none; padding:10px 0; }
  .policy, .finding, .card, tr { break-inside:avoid; }
  h2 { break-after:avoid; }
  * { -webkit-print-color-adjust:exact; print-color-adjust:exact; }
  /* The compliance file: findings, what is out of sync, who gets what. Context (unmanaged and
     unknown settings, objects and rows in sync) stays on screen, collapsed or listed. */
  details, .screen-only, .policy.in-sync, tr.in-sync, tr.by-role { display:none; }
  .print-only { display:block; }
}
.print-only { display:none; }
"""


# One column layout for every policy's settings table, so the tables line up down the page.
_COLS = (
    '<colgroup><col style="width:30%"><col style="width:22%"><col style="width:22%">'
    '<col style="width:11%"><col style="width:15%"></colgroup>'
)


def e(value: object) -> str:
    return html.escape(str(value), quote=True)


def t(value: object) -> str:
    """Tenant text, escaped and in ``<bdi>``: a right-to-left override in a name cannot reorder
    the text around it."""
    return f"<bdi>{e(value)}</bdi>"


def _value(value: object) -> str:
    return f'<span class="value">{t(format_value(value))}</span>'


def _badge(status: str) -> str:
    return f'<span class="badge s-{e(status)}">{e(_STATUS_LABEL.get(status, status))}</span>'


def render_html(report: DriftReport, *, max_items: int = DEFAULT_MAX_ITEMS) -> str:
    """The whole report as one HTML document; at most ``max_items`` user assignments are listed
    (the counts stay exact)."""

    def seen(key: str) -> str:
        t = report.first_seen.get(key)
        return f"{utc(t):%Y-%m-%d %H:%M} UTC" if t else ""

    s = report.summary()
    parts: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # No network: a reviewer may open this offline, and a report must not phone home.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">",
        f"<title>Teams messaging drift report: {e(report.tenant_label)}</title>",
        f"<style>{CSS}</style></head><body>",
        '<header><h1>Teams messaging policy drift report</h1><div class="meta">',
        f"<span>Tenant <b>{t(report.tenant_label)}</b>"
        + (
            f" (id {t(report.tenant_id)})"
            if report.tenant_id and report.tenant_id not in report.tenant_label
            else ""
        )
        + "</span>",
        (f"<span>Run {t(report.run_by.describe())}</span>" if report.run_by else ""),
        f"<span>Generated {utc(report.generated_at):%Y-%m-%d %H:%M:%S} UTC</span>",
        (
            f"<span>Tenant state of {utc(report.observed):%Y-%m-%d %H:%M:%S} UTC</span>"
            if report.observed_earlier()
            else ""
        ),
        f"<span>Desired state <b>{t(report.desired_path)}</b> "
        f"(sha256 {e(report.desired_sha256[:12] or '-')})</span>",
        f"<span>teams-bridge {e(report.tool_version)}</span></div></header><main>",
    ]
    add = parts.append

    # ---------------------------------------------------------------- summary
    if report.in_sync:
        add(
            '<div class="verdict ok" id="verdict"><strong>In sync</strong><span>The tenant '
            "matches the desired state and no rule finding needs attention.</span></div>"
        )
    else:
        reasons = []
        if report.drift_count:
            reasons.append(f"{report.drift_count} managed object(s) differ from the desired state")
        if report.failing_findings:
            reasons.append(f"{len(report.failing_findings)} rule finding(s) need attention")
        add(
            f'<div class="verdict bad" id="verdict"><strong>Drift detected</strong>'
            f"<span>{e('; '.join(reasons))}.</span></div>"
        )
    add('<section class="cards">')
    for title, key in (
        ("Policies", "policies"),
        ("Group assignments", "group_assignments"),
        ("User assignments", "user_assignments"),
    ):
        c = s[key]
        off = c["drifted"] + c["missing"] + c["extra"]
        add(
            f'<div class="card"><div class="label">{title}</div>'
            f'<div class="num">{off} <span class="muted" style="font-size:14px">of {c["total"]}'
            f' not in sync</span></div><div class="sub">{c["drifted"]} drifted · '
            f"{c['missing']} missing · {c['extra']} not wanted · {c['in_sync']} in sync</div>"
            "</div>"
        )
    f = s["findings"]
    add(
        f'<div class="card"><div class="label">Rule findings</div><div class="num">'
        f'{f["error"] + f["warning"]} <span class="muted" style="font-size:14px">to review'
        f'</span></div><div class="sub">{f["error"]} error · {f["warning"]} warning · '
        f"{f['info']} info</div></div></section>"
    )

    # ---------------------------------------------------------------- findings
    add('<h2 id="findings">Findings: healthcare secure-messaging rules</h2>')
    if not report.findings:
        add('<p class="note">No rule found anything to report.</p>')
    for finding in report.findings:
        when = seen(finding.key)
        add(
            f'<div class="finding"><div class="head"><span class="badge sev-{e(finding.severity)}">'
            f"{e(finding.severity.upper())}</span><h3>{t(finding.title)}</h3>"
            f'<span class="muted">{e(finding.rule_id)}</span></div><div class="body">'
            f"<p>{t(finding.explanation)}</p>"
        )
        if finding.policies:
            add(f'<p class="muted">Policies: {t(", ".join(finding.policies))}</p>')
        if when:
            add(f'<p class="muted">First seen {e(when)}</p>')
        add("</div></div>")

    # ---------------------------------------------------------------- policies
    add('<h2 id="policies">Policies</h2>')
    add(
        '<p class="note">Only settings named in the desired state are managed; the others are '
        "shown for context and never changed.</p>"
    )
    for p in report.policies:
        add(_policy(p, seen))
    in_sync = [p.name for p in report.policies if p.status == "in_sync" and not p.drifted]
    if in_sync:
        add(f'<p class="note print-only">In sync: {t(", ".join(in_sync))}.</p>')
    if not report.policies:
        add('<p class="note">The desired state manages no policies.</p>')
    if report.unmanaged_policies:
        add(
            f'<p class="note">Policies in the tenant the desired state does not mention: '
            f"{t(', '.join(report.unmanaged_policies))}.</p>"
        )

    # ---------------------------------------------------------------- assignments
    if report.group_assignments:
        add('<h2 id="groups">Group assignments</h2>')
        add(
            '<p class="note">Listed in the precedence the desired state asks for (rank 1 is '
            "highest). The service renumbers ranks, so what matters is the order.</p>"
        )
        add(
            '<div class="table-card"><table><thead><tr><th>Group</th><th>Status</th>'
            "<th>Expected</th><th>Actual</th><th>What differs</th><th>First seen</th></tr>"
            "</thead><tbody>"
        )
        for g in report.group_assignments:
            add(_group_row(g, seen(g.key)))
        add("</tbody></table></div>")

    counts = report.user_counts
    if counts["declared"] or report.users_listed:
        add('<h2 id="users">User assignments</h2>')
        add(
            f'<p class="note">{counts["declared"]} direct assignment(s) in the desired state: '
            f"{counts['in_sync']} in sync, {counts['drifted']} drifted, {counts['missing']} "
            f"missing, {counts['extra']} not wanted. In-sync users are counted, not listed.</p>"
        )
        if report.users_listed:
            add(
                '<div class="table-card"><table><thead><tr><th>User</th><th>Status</th>'
                "<th>Expected policy</th><th>Actual policy</th><th>First seen</th></tr></thead>"
                "<tbody>"
            )
            for u in report.users_listed[:max_items]:
                # Changes roles make are summed up per role (below); printed, only the others.
                cls = "diff by-role" if u.user_id in report.role_user_ids else "diff"
                add(
                    f'<tr class="{cls}"><td>{t(u.label)}</td><td>{_badge(u.status)}</td>'
                    f"<td>{t(u.expected_policy or '(none)')}</td>"
                    f"<td>{t(u.actual_policy or '(none)')}</td><td>{e(seen(u.key))}</td></tr>"
                )
            hidden = len(report.users_listed) - max_items
            if hidden > 0:
                add(
                    f'<tr class="screen-only"><td colspan="5" class="muted">... and {hidden} more'
                    "</td></tr>"
                )
            add("</tbody></table></div>")
            by_role = sum(1 for u in report.users_listed if u.user_id in report.role_user_ids)
            if by_role:
                add(
                    f'<p class="note print-only">{by_role} of these user assignment(s) are '
                    "made by roles: counted per role under Roles, listed person by person in "
                    "the report on screen and in drift.json.</p>"
                )

    if report.role_lines:
        add('<h2 id="roles">Roles</h2>')
        add('<ul class="roles">')
        for role_line in report.role_lines:
            add(f"<li><code>{e(role_line.symbol)}</code> {t(role_line.text)}</li>")
        add("</ul>")

    if report.who_gets_what is not None:
        add('<h2 id="who-gets-what">Who gets what</h2>')
        add(
            '<p class="note">Per effective policy (direct, else the best-ranked group, else '
            "Global) and department: how many people, their read receipts and whether they can "
            "send priority notifications.</p>"
        )
        add(
            '<div class="table-card"><table id="who-gets-what-table"><thead><tr>'
            "<th>Policy</th><th>Department</th><th>People</th><th>Read receipts</th>"
            "<th>Priority notifications</th></tr></thead><tbody>"
        )
        for w in report.who_gets_what:
            add(
                f"<tr><td>{t(w.policy)}</td><td>{t(w.department or '(none)')}</td>"
                f"<td>{w.people}</td><td>{t(w.read_receipts or '(not reported)')}</td>"
                f"<td>{'yes' if w.priority_notifications else 'no'}</td></tr>"
            )
        add("</tbody></table></div>")

    if report.resolved:
        add('<h2 id="resolved">Resolved since the previous run</h2>')
        add(
            '<div class="table-card"><table><thead><tr><th>Item</th><th>First seen</th>'
            "<th>Resolved</th></tr></thead><tbody>"
        )
        for r in report.resolved:
            add(
                f"<tr><td>{t(r.describe())}</td>"
                f"<td>{utc(r.first_seen):%Y-%m-%d %H:%M} UTC</td>"
                f"<td>{utc(r.resolved_at):%Y-%m-%d %H:%M} UTC</td></tr>"
            )
        add("</tbody></table></div>")

    add(
        "</main><footer>Generated by teams-bridge "
        f"{e(report.tool_version)} · desired state {t(report.desired_path)} sha256 "
        f"{e(report.desired_sha256 or '-')} · schema version 1</footer></body></html>"
    )
    return "\n".join(parts) + "\n"


def _policy(p: PolicyReport, seen: Callable[[str], str]) -> str:
    tags = ' <span class="badge tag">in use</span>' if p.in_use else ""
    quiet = " in-sync" if p.status == "in_sync" and not p.drifted else ""
    out = [
        f'<div class="policy{quiet}" id="policy-{e(p.key)}"><div class="head"><h3>{t(p.name)}</h3>'
        f"{_badge(p.status)}{tags}"
    ]
    when = seen(p.key)
    if when:
        out.append(f'<span class="muted">first seen {e(when)}</span>')
    out.append("</div>")
    if p.status == "extra":
        out.append(
            '<p class="note" style="padding:0 14px">The tenant has this policy; the '
            "desired state says it should not exist.</p>"
        )
    elif p.status == "missing":
        out.append(
            '<p class="note" style="padding:0 14px">The desired state asks for this '
            "policy; the tenant does not have it.</p>"
        )
    if p.managed:
        out.append(
            '<table class="fixed">' + _COLS + "<thead><tr><th>Setting</th><th>Expected</th>"
            "<th>Actual</th><th>Status</th><th>First seen</th></tr></thead><tbody>"
        )
        for r in p.managed:
            status = "in_sync" if r.in_sync else ("missing" if p.status == "missing" else "drifted")
            cls = ' class="in-sync"' if r.in_sync else ' class="diff"'
            actual = _value(r.actual) if p.status != "missing" else '<span class="muted">-</span>'
            out.append(
                f"<tr{cls}><td><code>{t(r.name)}</code></td><td>{_value(r.expected)}</td>"
                f"<td>{actual}</td><td>{_badge(status)}</td>"
                f"<td>{e(seen(p.setting_key(r.name)))}</td></tr>"
            )
        out.append("</tbody></table>")
    if p.unknown:
        out.append(
            f"<details><summary>{len(p.unknown)} setting(s) the service returned that "
            "teams-bridge does not know yet (kept as they are)"
            f"</summary>{_context_table(p.unknown)}</details>"
        )
    if p.unmanaged:
        out.append(
            # Closed, and not printed: context, on screen for whoever wants it.
            f"<details><summary>{len(p.unmanaged)} unmanaged setting(s), for context"
            f"</summary>{_context_table(p.unmanaged)}</details>"
        )
    out.append("</div>")
    return "".join(out)


def _context_table(rows: Iterable[SettingRow]) -> str:
    body = "".join(
        f"<tr><td><code>{t(r.name)}</code></td><td>{_value(r.actual)}</td></tr>" for r in rows
    )
    head = "<thead><tr><th>Setting</th><th>Value</th></tr></thead>"
    cols = '<colgroup><col style="width:30%"><col></colgroup>'
    return f'<table class="fixed">{cols}{head}<tbody>{body}</tbody></table>'


def _group_row(g: GroupAssignmentReport, when: str) -> str:
    def assignment(policy: str | None, rank: int | None) -> str:
        return t(f"{policy} (rank {rank})") if policy else '<span class="muted">none</span>'

    cls = ' class="in-sync"' if g.status == "in_sync" else ' class="diff"'
    return (
        f'<tr{cls}><td>{t(g.label)}<br><span class="muted">{e(g.group_id)}</span></td>'
        f"<td>{_badge(g.status)}</td><td>{assignment(g.expected_policy, g.expected_rank)}</td>"
        f"<td>{assignment(g.actual_policy, g.actual_rank)}</td><td>{t(g.detail)}</td>"
        f"<td>{e(when)}</td></tr>"
    )
