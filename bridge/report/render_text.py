"""The drift report for a terminal: Terraform's symbols (``~`` differs, ``+`` missing from the
tenant, ``-`` in the tenant but not wanted), values as ``current -> desired``, ANSI colour only
when the caller asks (the CLI decides from isatty and NO_COLOR)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable

from ..text import printable, printable_lines
from .model import DriftReport, format_value, utc

__all__ = ["printable", "printable_lines", "render_text"]

SYMBOL = {"in_sync": " ", "drifted": "~", "missing": "+", "extra": "-"}
_STATUS_COLOR = {"in_sync": "32", "drifted": "33", "missing": "32", "extra": "31"}
_SEVERITY_COLOR = {"error": "31;1", "warning": "33;1", "info": "36"}
_SYMBOL_COLOR = {"~": "33", "+": "32", "-": "31", " ": ""}
DEFAULT_MAX_ITEMS = 50


def render_text(
    report: DriftReport, *, color: bool = False, max_items: int = DEFAULT_MAX_ITEMS
) -> str:
    """The report as a terminal table; at most ``max_items`` user assignments are listed (the
    counts stay exact)."""

    def c(code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if color and code else text

    def sym(status: str) -> str:
        s = SYMBOL[status]
        return c(_SYMBOL_COLOR[s], s)

    def first_seen(key: str) -> str:
        # Only drift older than this run is worth a date; new drift would repeat the header's.
        t = report.first_seen.get(key)
        if t is None or utc(t) >= utc(report.generated_at):
            return ""
        return c("2", f"  (first seen {utc(t):%Y-%m-%d %H:%M}Z)")

    out: list[str] = []
    add = out.append
    add(c("1", "teams-bridge drift report"))
    tenant_id = report.tenant_id or "(unknown)"
    label = report.tenant_label
    add(f"  tenant     {printable(label if tenant_id in label else f'{label}, id {tenant_id}')}")
    if report.run_by is not None:
        add(f"  run        {printable(report.run_by.describe())}")
    add(
        f"  generated  {utc(report.generated_at):%Y-%m-%d %H:%M:%S}Z by teams-bridge "
        f"{printable(report.tool_version)}"
    )
    if report.observed_earlier():
        add(f"  observed   {utc(report.observed):%Y-%m-%d %H:%M:%S}Z (the tenant state shown)")
    sha = report.desired_sha256[:12] or "-"
    add(f"  desired    {printable(report.desired_path)} (sha256 {sha})")
    add("")
    add(
        c(
            "2",
            "  ~ differs (current -> desired)   + missing from the tenant   "
            "- in the tenant, not wanted",
        )
    )

    add("")
    add(c("1", "Policies"))
    width = max([len(printable(p.name)) for p in report.policies] + [10])
    for p in report.policies:
        tags = p.status.replace("_", " ") + (", in use" if p.in_use else "")
        if p.status == "in_sync":
            tags += f" ({len(p.managed)} managed settings)"
        add(
            f"  {sym(p.status)} {printable(p.name):<{width}}  {c(_STATUS_COLOR[p.status], tags)}"
            + first_seen(p.key)
        )
        for r in p.managed:
            if p.status == "missing":
                add(
                    f"      {sym('missing')} {printable(r.name)} = "
                    f"{printable(format_value(r.expected))}"
                )
            elif not r.in_sync:
                add(
                    f"      {sym('drifted')} {printable(r.name)}: "
                    f"{printable(format_value(r.actual))} -> "
                    f"{printable(format_value(r.expected))}" + first_seen(p.setting_key(r.name))
                )
        if p.unknown:
            shown = ", ".join(
                f"{printable(r.name)}={printable(format_value(r.actual))}" for r in p.unknown
            )
            add(c("2", f"      settings unknown to teams-bridge (kept, not managed): {shown}"))
    if not report.policies:
        add("  (the file manages no policies)")
    if report.unmanaged_policies:
        add(c("2", "  not managed: " + ", ".join(printable(n) for n in report.unmanaged_policies)))

    if report.group_assignments:
        add("")
        add(c("1", "Group assignments") + c("2", " (precedence order; rank 1 is highest)"))
        gw = max(len(printable(g.label)) for g in report.group_assignments)
        for g in report.group_assignments:
            want = f"{g.expected_policy} #{g.expected_rank}" if g.expected_policy else "(none)"
            have = f"{g.actual_policy} #{g.actual_rank}" if g.actual_policy else "(none)"
            line = f"  {sym(g.status)} {printable(g.label):<{gw}}  "
            if g.status == "in_sync":
                line += c(_STATUS_COLOR["in_sync"], f"{printable(have)}  in sync")
            else:
                same_policy = g.status == "drifted" and g.actual_policy == g.expected_policy
                # Only the order differs: "#3 -> #3" would say nothing, the detail says it all.
                line += (
                    printable(have) if same_policy else f"{printable(have)} -> {printable(want)}"
                )
                if g.detail:
                    line += c("2", f"  ({printable(g.detail)})")
            add(line + first_seen(g.key))

    counts = report.user_counts
    if counts["declared"] or report.users_listed:
        add("")
        add(
            c("1", "User assignments") + f": {counts['declared']} declared, "
            f"{counts['in_sync']} in sync, {counts['drifted']} drifted, "
            f"{counts['missing']} missing, {counts['extra']} extra"
        )
        for role_line in report.role_lines:
            add(
                f"  {sym({'+': 'missing', '~': 'drifted', '-': 'extra'}[role_line.symbol])} "
                f"{printable(role_line.text)}"
            )
        # Role changes are counted per role above, the other changes listed one by one.
        listed = [u for u in report.users_listed if u.user_id not in report.role_user_ids]
        uw = max([len(printable(u.label)) for u in listed[:max_items]] + [1])
        for u in listed[:max_items]:
            add(
                f"  {sym(u.status)} {printable(u.label):<{uw}}  "
                f"{printable(u.actual_policy or '(none)')} -> "
                f"{printable(u.expected_policy or '(none)')}" + first_seen(u.key)
            )
        hidden = len(listed) - max_items
        if hidden > 0:
            add(f"  ... and {hidden} more")

    if report.who_gets_what is not None:
        add("")
        add(c("1", "Who gets what") + c("2", " (effective policy per department)"))
        rows = [
            (
                w.policy,
                w.department or "(none)",
                str(w.people),
                str(w.read_receipts or "-"),
                "yes" if w.priority_notifications else "no",
            )
            for w in report.who_gets_what
        ]
        head = ("Policy", "Department", "People", "Read receipts", "Priority")
        widths = [max(len(printable(r[i])) for r in [head, *rows]) for i in range(5)]
        for row in [head, *rows]:
            add("  " + "  ".join(printable(v).ljust(widths[i]) for i, v in enumerate(row)).rstrip())

    if report.findings:
        add("")
        add(c("1", "Findings") + c("2", " (healthcare secure-messaging rules)"))
        for f in report.findings:
            label = c(_SEVERITY_COLOR[f.severity], f"{f.severity.upper():<7}")
            add(f"  {label} {printable(f.rule_id)}: {printable(f.title)}" + first_seen(f.key))
            for line in textwrap.wrap(printable(f.explanation), width=92):
                add(f"          {c('2', line)}")

    if report.resolved:
        add("")
        add(c("1", "Resolved since the previous run"))
        for done in report.resolved:
            seen, gone = utc(done.first_seen), utc(done.resolved_at)
            add(
                f"  {c('32', 'v')} {printable(done.describe())}  (first seen "
                f"{seen:%Y-%m-%d %H:%M} UTC, resolved {gone:%Y-%m-%d %H:%M} UTC)"
            )

    add("")
    add(_verdict(report, c))
    return "\n".join(out) + "\n"


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _verdict(report: DriftReport, c: Callable[[str, str], str]) -> str:
    s = report.summary()
    findings = s["findings"]
    found = (
        f"findings: {findings['error']} error(s), {findings['warning']} warning(s), "
        f"{findings['info']} info"
    )
    not_in_sync = ("drifted", "missing", "extra")
    objects = ", ".join(
        _count(sum(s[key][k] for k in not_in_sync), one, many)
        for key, one, many in (
            ("policies", "policy", "policies"),
            ("group_assignments", "group assignment", "group assignments"),
            ("user_assignments", "user assignment", "user assignments"),
        )
    )
    if report.in_sync:
        return c("32;1", "In sync.") + f" 0 objects drifted; {found}."
    return c("31;1", "Drift:") + f" {report.drift_count} objects not in sync ({objects}); {found}."
