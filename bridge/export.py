"""A tenant's state written back as a desired-state file that validates and, planned against the
same state, gives no changes."""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

from . import catalogue
from .report.render_text import printable
from .state import TenantState, bare_name, is_global
from .yamlloc import shown

_HEADER = """\
# Desired state exported by teams-bridge from tenant {tenant}.
# Every setting of every policy is listed; delete the lines you do not want to manage (only the
# settings named here are managed). Ranks: 1 = highest precedence.
"""


def _hostile(text: str) -> bool:
    """Holds a character a terminal could act on (control, bidi override, line separator...)
    other than a plain line break."""
    return any(not ch.isprintable() for ch in text.replace("\n", ""))


class _Dumper(yaml.SafeDumper):
    """Tenant text reaches the terminal when the file goes to stdout: a string with a character
    a terminal could act on is written double-quoted with every such character escaped (YAML
    escapes a control character there, but with allow_unicode would keep a bidi override)."""

    def write_double_quoted(self, text: str, split: bool = True) -> None:
        if not _hostile(text):
            super().write_double_quoted(text, split)
            return
        keep = self.allow_unicode
        self.allow_unicode = False  # every non-ASCII character of this one scalar as \uXXXX
        try:
            super().write_double_quoted(text, split)
        finally:
            self.allow_unicode = keep


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    if _hostile(data):
        style: str | None = '"'
    else:
        style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


def _comment(text: object) -> str:
    """Text for a YAML comment: one line (whitespace runs, line breaks included, become one
    space) and nothing a terminal or a YAML reader would act on (``printable`` escapes it)."""
    return printable(" ".join(str(text).split()))


_Dumper.add_representer(str, _str_presenter)


def service_defaults() -> tuple[dict[str, Any], dict[str, Any]]:
    """The service's defaults: Global's settings in a new tenant, and a new policy's (the
    built-in policies as observed in a real tenant, which the sandbox serves too)."""
    from .sandbox.tenant import load_builtin_policies

    builtins = load_builtin_policies()
    return builtins[0], builtins[1]


def export_document(
    state: TenantState, left_out: list[str] | None = None, *, minimal: bool = False
) -> dict[str, Any]:
    """The desired-state document for ``state``. What a desired-state file cannot hold (a null
    for a boolean, an enum value newer than the catalogue, a direct Global assignment) is left
    out, so the file still loads back and plans no changes; ``left_out`` receives one line of
    explanation for each. ``minimal``: only the settings that differ from the service's
    defaults (Global's for Global, a new policy's for the others), so a first file is short
    enough to review; planned against the same state, it still gives no changes."""
    skipped: list[str] = [] if left_out is None else left_out
    global_defaults, new_defaults = service_defaults() if minimal else ({}, {})
    policies: dict[str, Any] = {}
    ordered = sorted(state.policies.values(), key=lambda p: (not is_global(p.name), p.key))
    for policy in ordered:
        known: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        where = f"policy {policy.name!r}"
        for name in sorted(policy.settings):
            value = policy.settings[name]
            setting = catalogue.lookup(name)
            if setting is not None:
                if setting.deprecated:
                    continue
                try:
                    known[name] = setting.normalize(value)
                except ValueError:
                    if setting.kind == "enum":
                        known_values = ", ".join(setting.values)
                        why = f"a value teams-bridge does not know (known: {known_values})"
                    else:
                        why = f"which teams-bridge cannot write (it takes {_takes(setting)})"
                    skipped.append(f"{where}: {name} is {_show(value)} in the tenant, {why}")
            elif not _EXTRA_NAME.fullmatch(name):
                skipped.append(f"{where}: {name!r} is not a name extra: accepts")
            elif isinstance(value, str | int | bool) or value is None or _finite(value):
                extra[name] = value
            else:
                skipped.append(
                    f"{where}: {name} holds {_show(value)}; extra: takes plain values only"
                )
        if minimal:
            defaults = global_defaults if is_global(policy.name) else new_defaults
            known = {k: v for k, v in known.items() if _differs(defaults, k, v)}
            extra = {k: v for k, v in extra.items() if _differs(defaults, k, v)}
        # Description first: it reads like a title.
        body = {k: known[k] for k in sorted(known, key=lambda k: (k != "Description", k))}
        if extra:
            body["extra"] = extra
        policies[policy.name] = body

    # Groups by object id: a display name that looks unique among the groups read may not be
    # unique in the tenant (export_yaml writes the name as a comment).
    groups = [
        {"group": g.group_id, "policy": g.policy, "rank": g.rank} for g in state.ranked_groups()
    ]

    users = []
    for uid in sorted(
        state.user_assignments, key=lambda u: (state.user_assignments[u].upn or u).casefold()
    ):
        ua = state.user_assignments[uid]
        if is_global(bare_name(ua.policy)):
            # A direct Global assignment is something a file cannot ask for; unmentioned, the
            # user keeps it (without prune).
            skipped.append(
                f"user {ua.upn or uid}: directly assigned Global (write 'ensure: absent' for "
                "this user to take the direct assignment away)"
            )
            continue
        users.append({"user": ua.upn or uid, "policy": ua.policy})

    doc: dict[str, Any] = {}
    if state.tenant_id:
        doc["tenant"] = state.tenant_id
    doc["policies"] = policies
    assignments: dict[str, Any] = {}
    if groups:
        assignments["groups"] = groups
    if users:
        assignments["users"] = users
    if assignments:
        doc["assignments"] = assignments
    doc["prune"] = {"policies": False, "group_assignments": False, "user_assignments": False}
    return doc


_EXTRA_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")


def _differs(defaults: dict[str, Any], name: str, value: Any) -> bool:
    """Whether ``value`` differs from the service's default for ``name`` (a setting without a
    known default is kept)."""
    if name not in defaults:
        return True
    default = defaults[name]
    setting = catalogue.lookup(name)
    if setting is not None:
        try:
            default = setting.normalize(default)
        except ValueError:
            return True
    return bool(value != default)


def _finite(value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def _takes(setting: catalogue.Setting) -> str:
    return "true or false" if setting.kind == "bool" else "text"


def _show(value: Any) -> str:
    return "null" if value is None else shown(value)


def _group_name(state: TenantState, group_id: str) -> str | None:
    assignment = state.group_assignments.get(group_id)
    if assignment and assignment.group_name:
        return assignment.group_name
    group = state.directory.groups.get(group_id)
    return group.display_name if group else None


def export_yaml(state: TenantState, *, minimal: bool = False) -> str:
    left_out: list[str] = []
    body = yaml.dump(
        export_document(state, left_out, minimal=minimal),
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        width=100,
    )

    def with_name(match: re.Match[str]) -> str:
        name = _group_name(state, match.group(2))
        return match.group(0) + (f"  # {_comment(name)}" if name else "")

    # Exactly the entries of assignments.groups: a line of a multi-line string is indented deeper.
    body = re.sub(r"^(  - group: )(\S+)$", with_name, body, flags=re.M)
    header = _HEADER.format(tenant=_comment(state.tenant_id or "(unknown)"))
    if minimal:
        header = _SCHEMA_LINE + header.replace(_EVERY_SETTING, _ONLY_CHANGED)
    if left_out:
        header += _LEFT_OUT + "".join(f"#   - {_comment(line)}\n" for line in left_out)
    return header + body


_SCHEMA_LINE = "# yaml-language-server: $schema=teams-bridge.schema.json\n"
_EVERY_SETTING = (
    "# Every setting of every policy is listed; delete the lines you do not want to manage "
    "(only the\n# settings named here are managed)."
)
_ONLY_CHANGED = (
    "# Only the settings that differ from the service's defaults are listed (write the schema\n"
    "# with: teams-bridge schema --out teams-bridge.schema.json; only settings named are "
    "managed).\n#"
)

_LEFT_OUT = """\
# Left out, so that this file loads back and plans no changes (manage these in the tenant, or
# after upgrading teams-bridge):
"""
