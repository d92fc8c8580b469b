"""A tenant's state written back as a desired-state file that validates and, planned against the
same state, gives no changes."""

from __future__ import annotations

import re
from typing import Any

import yaml

from . import catalogue
from .state import TenantState, is_global

_HEADER = """\
# Desired state exported by teams-bridge from tenant {tenant}.
# Every setting of every policy is listed; delete the lines you do not want to manage (only the
# settings named here are managed). Ranks: 1 = highest precedence.
"""


class _Dumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def export_document(state: TenantState) -> dict[str, Any]:
    policies: dict[str, Any] = {}
    ordered = sorted(state.policies.values(), key=lambda p: (not is_global(p.name), p.key))
    for policy in ordered:
        known: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for name in sorted(policy.settings):
            value = policy.settings[name]
            setting = catalogue.lookup(name)
            if setting is not None:
                if setting.deprecated:
                    continue
                known[name] = value
            elif isinstance(value, str | int | float | bool) or value is None:
                extra[name] = value
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


def _group_name(state: TenantState, group_id: str) -> str | None:
    assignment = state.group_assignments.get(group_id)
    if assignment and assignment.group_name:
        return assignment.group_name
    group = state.directory.groups.get(group_id)
    return group.display_name if group else None


def export_yaml(state: TenantState) -> str:
    body = yaml.dump(
        export_document(state), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100
    )

    def with_name(match: re.Match[str]) -> str:
        name = _group_name(state, match.group(2))
        return match.group(0) + (f"  # {' '.join(name.split())}" if name else "")

    body = re.sub(r"^(\s*- group: )(\S+)$", with_name, body, flags=re.M)
    return _HEADER.format(tenant=state.tenant_id or "(unknown)") + body
