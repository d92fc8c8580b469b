"""A plan as text, in Terraform's style: ``+`` create, ``~`` update in place, ``-`` destroy, and a
footer ``Plan: 2 to add, 1 to change, 0 to destroy.``

Names, UPNs and values come from the tenant (or the file): every line a change describes goes
through ``printable`` in ``render_plan`` before colour is added, so no control character, line
break or bidi override in tenant text reaches the terminal (the confirmation prompt of ``apply``
shows this text: an escape sequence there could hide a line from the reviewer)."""

from __future__ import annotations

import json
from typing import Any

from .plan import (
    Change,
    CreatePolicy,
    DeletePolicy,
    Plan,
    RemoveGroupAssignment,
    RemoveUserAssignment,
    SetGroupAssignment,
    SetUserAssignment,
    UpdatePolicy,
)
from .report.render_text import printable
from .roles import RoleChangeLine, summarize

_COLOURS = {"+": "\033[32m", "~": "\033[33m", "-": "\033[31m"}
_RESET = "\033[0m"
# Past this many direct-assignment lines, the rest are counted, not listed.
USER_LINES = 50


def _v(value: Any) -> str:
    # JSON quoting: a quote or line break inside a string cannot end it early.
    return json.dumps(value, ensure_ascii=False)


def _lines(change: Change) -> list[str]:
    """What one change does, in a line (and the settings it writes); its symbol is its own."""
    if isinstance(change, CreatePolicy):
        body = [f"    {k} = {_v(v)}" for k, v in sorted(change.settings.items())]
        return [f"policy {change.name!r} will be created", *body]
    if isinstance(change, UpdatePolicy):
        body = [f"    {k}: {_v(a)} -> {_v(b)}" for k, (a, b) in sorted(change.changes.items())]
        return [f"policy {change.name!r} will be updated in place", *body]
    if isinstance(change, DeletePolicy):
        return [f"policy {change.name!r} will be deleted"]
    if isinstance(change, SetGroupAssignment):
        name = change.group_name or change.group_id
        if change.existing is None:
            return [f"group {name!r} will be assigned {change.policy!r} at rank {change.rank}"]
        old = change.existing
        if old.policy.casefold() != change.policy.casefold():
            return [
                f"group {name!r} assignment will be replaced: policy {old.policy!r} -> "
                f"{change.policy!r}, rank {old.rank} -> {change.rank}"
            ]
        return [
            f"group {name!r} will be re-ranked: rank {old.rank} now, sent as rank "
            f"{change.rank} to restore the file's order (removed and re-added; the "
            "service renumbers the others)"
        ]
    if isinstance(change, RemoveGroupAssignment):
        name = change.group_name or change.group_id
        return [f"group {name!r} will lose its assignment of {change.policy!r}"]
    if isinstance(change, SetUserAssignment):
        user = change.upn or change.user_id
        if change.existing_policy:
            return [
                f"user {user} direct assignment: {change.existing_policy!r} -> {change.policy!r}"
            ]
        return [f"user {user} will be assigned {change.policy!r} directly"]
    assert isinstance(change, RemoveUserAssignment)
    user = change.upn or change.user_id
    return [f"user {user} will lose the direct assignment of {change.policy!r}"]


def role_summary(plan: Plan) -> tuple[list[RoleChangeLine], set[str]]:
    """The plan's user changes that roles made, one line per role and kind (never one per
    person), and the user ids those lines cover."""
    if plan.roles is None:
        return [], set()
    return summarize(
        plan.roles,
        [(c.user_id, c.upn, c.policy, c.existing_policy) for c in plan.of(SetUserAssignment)],
        [(c.user_id, c.upn, c.policy) for c in plan.of(RemoveUserAssignment)],
    )


def render_plan(plan: Plan, *, color: bool = False) -> str:
    if not plan.changes:
        return "No changes. The tenant matches the desired state.\n"
    out = ["teams-bridge will perform the following actions:", ""]
    user_lines = 0
    hidden = 0
    role_lines, by_role = role_summary(plan)
    for change in plan.changes:
        if change.scope == "user":
            if change.subject in by_role:
                continue  # counted per role below
            user_lines += 1
            if user_lines > USER_LINES:
                hidden += 1
                continue
        symbol, described = change.symbol, _lines(change)
        # The one place a change's text is made safe for a terminal (see the module docstring).
        lines = [printable(line) for line in described]
        head = f"  {symbol} {lines[0]}"
        if color:
            head = f"{_COLOURS[symbol]}{head}{_RESET}"
        out.append(head)
        out.extend(lines[1:])
    for line in role_lines:
        head = f"  {line.symbol} {printable(line.text)}"
        out.append(f"{_COLOURS[line.symbol]}{head}{_RESET}" if color else head)
    if hidden:
        out.append(
            f"  ... and {hidden} more direct user assignment change(s) "
            "(plan --format json lists all)"
        )
    s = plan.summary
    out += ["", f"Plan: {s['add']} to add, {s['change']} to change, {s['destroy']} to destroy."]
    return "\n".join(out) + "\n"
