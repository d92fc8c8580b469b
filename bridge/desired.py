"""Load and validate the desired-state file (YAML; JSON is YAML too).

Validation collects every problem before failing, each at ``file:line:column`` with what to do
about it. Notes (a stripped ``Tag:`` prefix, an ``extra:`` setting sent as written) are kept on the
result and shown by the CLI, but do not fail the file.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from . import catalogue, limits, roles
from .errors import DesiredStateError, Location, Problem
from .rules import RULE_IDS
from .state import (
    MAX_GROUP_ASSIGNMENTS,
    DesiredGroupAssignment,
    DesiredPolicy,
    DesiredState,
    DesiredUserAssignment,
    Prune,
    RulesConfig,
    SafetyLimits,
    bare_name,
    is_global,
    policy_key,
)
from .yamlloc import (
    LocList,
    LocMap,
    Pos,
    UserRows,
    described,
    load_desired_text,
    load_json,
    shown,
)

TOP_KEYS = ("tenant", "policies", "assignments", "prune", "safety", "rules")
POLICY_META_KEYS = ("ensure", "extra")
_new_tuple = tuple.__new__  # skips NamedTuple's Python-level __new__ on the hot path


class _Checker:
    """Walks the loaded document, collecting problems with their positions."""

    def __init__(self, source: str):
        self.source = source
        self.problems: list[Problem] = []

    def loc(self, pos: Pos) -> Location:
        return _new_tuple(Location, (self.source, *pos))

    def error(self, pos: Pos, message: str) -> None:
        self.problems.append(Problem(self.loc(pos), message))

    def note(self, pos: Pos, message: str) -> None:
        self.problems.append(Problem(self.loc(pos), message, severity="note"))

    def mapping(self, value: Any, pos: Pos, what: str) -> LocMap | None:
        if value is None:
            return None
        if not isinstance(value, LocMap):
            self.error(pos, f"{what} must be a mapping, not {_kind(value)}")
            return None
        return value

    def sequence(self, value: Any, pos: Pos, what: str) -> LocList | None:
        if value is None:
            return None
        if not isinstance(value, LocList):
            self.error(pos, f"{what} must be a list, not {_kind(value)}")
            return None
        return value

    def only_keys(self, m: LocMap, allowed: tuple[str, ...], where: str) -> None:
        for key in m:
            if key not in allowed:
                hint = _did_you_mean(str(key), allowed)
                self.error(
                    m.key_pos[key],
                    f"unknown key {key!r} in {where}{hint}; allowed: {', '.join(allowed)}",
                )


def _plain_value(value: Any) -> bool:
    """What a policy setting can hold on the wire: text, a boolean, a finite number, or null."""
    if value is None or isinstance(value, str | bool | int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def _kind(value: Any) -> str:
    return described(value)


def _did_you_mean(name: str, choices: Any) -> str:
    import difflib

    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.7)
    return f" (did you mean {match[0]!r}?)" if match else ""


def load_desired(path: str | os.PathLike[str]) -> DesiredState:
    """Read and validate ``path``. Raises ``DesiredStateError`` listing every problem. A file
    over ``limits.DESIRED_MAX_BYTES`` or one that is not a regular file (``/dev/zero``) is
    refused before it is read into memory."""
    p = Path(path)
    try:
        raw = limits.read_bounded(p, limits.DESIRED_MAX_BYTES)
    except OSError as exc:
        raise DesiredStateError(
            [Problem(Location(str(p)), f"cannot read the file: {exc.strerror or exc}")]
        ) from exc
    return parse_desired(raw, str(p))


def parse_desired(raw: bytes | str, source: str = "<desired>") -> DesiredState:
    # A large file builds hundreds of thousands of small containers and none of them form
    # cycles: the cyclic garbage collector would rescan them again and again for nothing.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _parse_desired(raw, source)
    finally:
        if enabled:
            gc.enable()


def _parse_desired(raw: bytes | str, source: str) -> DesiredState:
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    sha = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DesiredStateError([_not_utf8(data, exc, source)]) from None
    doc: Any = None
    parsed = False
    is_json = source.casefold().endswith(".json")
    if text.strip() and (is_json or text.lstrip()[:1] == "{"):
        # JSON by JSON's rules (surrogate-pair escapes, 1e5 as a number). Text that merely
        # starts like JSON but is YAML flow style ({policies: ...}) still reads as YAML.
        try:
            doc, yaml_problems = load_json(text)
            parsed = True
        except json.JSONDecodeError as exc:
            if is_json:
                raise DesiredStateError(
                    [Problem(Location(source, exc.lineno, exc.colno), f"not valid JSON: {exc.msg}")]
                ) from None
    try:
        if not parsed:
            doc, yaml_problems = load_desired_text(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise DesiredStateError(
            [Problem(Location(source, line, col), f"not valid YAML: {exc.problem or exc}")]
        ) from exc
    except yaml.reader.ReaderError as exc:
        # A character YAML does not allow (a control character, NUL): say where it is.
        index = text.find(chr(exc.character)) if isinstance(exc.character, int) else -1
        line, col = _line_col(text, index) if index >= 0 else (0, 0)
        raise DesiredStateError(
            [
                Problem(
                    Location(source, line, col),
                    f"character U+{exc.character:04X} is not allowed in YAML ({exc.reason}): "
                    f"remove it, or write it inside double quotes as \\u{exc.character:04X}",
                )
            ]
        ) from None
    except yaml.YAMLError as exc:
        raise DesiredStateError([Problem(Location(source), f"not valid YAML: {exc}")]) from exc

    c = _Checker(source)
    for yp in yaml_problems:
        c.error(yp.pos, yp.message)
    state = DesiredState(source=source, sha256=sha)
    if doc is None:
        c.note((1, 1), "the file is empty: nothing is managed")
    else:
        top = c.mapping(doc, (1, 1), "the desired-state file")
        if top is not None:
            _validate(c, top, state)
    errors = [p for p in c.problems if p.severity == "error"]
    if errors:
        raise DesiredStateError(c.problems)
    state.notes = [str(p) for p in c.problems]
    return state


def _line_col(text: str, index: int) -> tuple[int, int]:
    line_start = text.rfind("\n", 0, index) + 1
    return text.count("\n", 0, index) + 1, index - line_start + 1


def _not_utf8(data: bytes, exc: UnicodeDecodeError, source: str) -> Problem:
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return Problem(Location(source, 1, 1), "the file is UTF-16 text: save it as UTF-8")
    start = exc.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)  # offsets skip the BOM
    before = data[:start].decode("utf-8", "replace")
    line, col = _line_col(before, len(before))
    return Problem(
        Location(source, line, col),
        f"not UTF-8 text (byte 0x{data[start]:02x}: {exc.reason}): save the file as UTF-8",
    )


def _validate(c: _Checker, top: LocMap, state: DesiredState) -> None:
    c.only_keys(top, TOP_KEYS, "the top level")
    tenant = top.get("tenant")
    if tenant is not None:
        if isinstance(tenant, str) and tenant.strip():
            state.tenant = tenant.strip()
        else:
            c.error(top.value_pos["tenant"], "tenant must be a tenant id or a domain name")

    policies = c.mapping(top.get("policies"), top.value_pos.get("policies", top.pos), "policies")
    if policies is not None:
        _validate_policies(c, policies, state)

    assignments = c.mapping(
        top.get("assignments"), top.value_pos.get("assignments", top.pos), "assignments"
    )
    if assignments is not None:
        c.only_keys(assignments, ("groups", "users", "roles"), "assignments")
        groups = c.sequence(
            assignments.get("groups"),
            assignments.value_pos.get("groups", (0, 0)),
            "assignments.groups",
        )
        if groups is not None:
            _validate_groups(c, groups, state)
        users = c.sequence(
            assignments.get("users"),
            assignments.value_pos.get("users", (0, 0)),
            "assignments.users",
        )
        if users is not None:
            _validate_users(c, users, state)
        roles = c.sequence(
            assignments.get("roles"),
            assignments.value_pos.get("roles", (0, 0)),
            "assignments.roles",
        )
        if roles is not None:
            _validate_roles(c, roles, state)

    state.prune = _validate_flags(
        c, top, "prune", Prune, ("policies", "group_assignments", "user_assignments")
    )
    state.safety = _validate_safety(c, top)
    state.rules = _validate_rules(c, top, state)


def _validate_policies(c: _Checker, policies: LocMap, state: DesiredState) -> None:
    seen: dict[str, str] = {}
    for raw_name, body in policies.items():
        kpos = policies.key_pos[raw_name]
        if not isinstance(raw_name, str) or not raw_name.strip():
            c.error(kpos, f"policy name must be text, not {_kind(raw_name)}")
            continue
        name = bare_name(raw_name.strip())
        if not name.strip():
            c.error(kpos, f"policy name {raw_name!r} is empty once the Tag: prefix is removed")
            continue
        if name != raw_name and raw_name[:4].casefold() == "tag:":
            c.note(kpos, f"{raw_name!r}: the Tag: prefix is a wire detail; read as {name!r}")
        key = policy_key(name)
        if key in seen:
            c.error(
                kpos,
                f"policy {raw_name!r} differs from {seen[key]!r} only in case (or a Tag: prefix); "
                "Teams treats them as one policy: keep one",
            )
            continue
        seen[key] = raw_name
        vpos = policies.value_pos[raw_name]
        m = c.mapping(body, vpos, f"policy {name!r}")
        if body is not None and m is None:
            # Still declared: assignments to it are not errors of their own.
            state.policies[key] = DesiredPolicy(name, {}, False, c.loc(kpos))
            continue
        settings: dict[str, Any] = {}
        absent = False
        if m is not None:
            absent = _ensure(c, m, f"policy {name!r}")
            for setting, value in m.items():
                spos = m.key_pos[setting]
                if setting in POLICY_META_KEYS:
                    continue
                if not isinstance(setting, str):
                    c.error(spos, f"setting name must be text, not {_kind(setting)}")
                    continue
                _check_setting(c, setting, value, m.value_pos[setting], spos, settings)
            extra = c.mapping(m.get("extra"), m.value_pos.get("extra", m.pos), "extra")
            if extra is not None:
                extra_seen: dict[str, str] = {}
                for setting, value in extra.items():
                    spos = extra.key_pos[setting]
                    if isinstance(setting, str) and catalogue.is_service_field(setting):
                        c.error(spos, _service_field_message(setting, "under 'extra:'"))
                        continue
                    if isinstance(setting, str) and setting.casefold() in POLICY_META_KEYS:
                        c.error(
                            spos,
                            f"{setting!r} is not a setting: write it on the policy itself, "
                            "not under extra:",
                        )
                        continue
                    if not isinstance(setting, str) or not re.fullmatch(
                        r"[A-Za-z][A-Za-z0-9]*", setting
                    ):
                        c.error(spos, f"extra setting name {setting!r} is not a setting name")
                        continue
                    parameter = catalogue.reserved_parameter(setting)
                    if parameter:
                        c.error(spos, _reserved_parameter_message(setting, parameter))
                        continue
                    first = extra_seen.setdefault(setting.casefold(), setting)
                    if first != setting:
                        c.error(
                            spos,
                            f"extra setting {setting!r} differs from {first!r} only in case; "
                            "setting names are one setting in any casing: keep one",
                        )
                        continue
                    known = catalogue.lookup_folded(setting)
                    if known:
                        c.error(
                            spos,
                            f"{setting!r} is a known setting ({known.name}): put it with the "
                            "other settings, not under extra:",
                        )
                        continue
                    if not _plain_value(value):
                        c.error(
                            extra.value_pos[setting],
                            f"extra setting {setting!r} takes a plain value (text, true/false, "
                            f"a whole or finite number), not {_kind(value)}; quote a date or "
                            "other text",
                        )
                        continue
                    c.note(
                        spos,
                        f"{setting!r} is not in teams-bridge's catalogue; it is compared and sent "
                        "exactly as written (check the spelling against "
                        "Get-CsTeamsMessagingPolicy)",
                    )
                    settings[setting] = value
            if absent:
                if is_global(name):
                    c.error(
                        m.value_pos["ensure"],
                        "Global cannot be deleted (it is the org-wide default; the service only "
                        "resets it): remove 'ensure: absent' and list the settings Global should "
                        "have",
                    )
                if settings:
                    c.error(
                        m.pos,
                        f"policy {name!r} is marked 'ensure: absent' and also lists settings: "
                        "remove the settings or the ensure line",
                    )
        state.policies[key] = DesiredPolicy(name, settings, absent, c.loc(kpos))


def _check_setting(
    c: _Checker, name: str, value: Any, vpos: Pos, kpos: Pos, out: dict[str, Any]
) -> None:
    setting = catalogue.lookup(name)
    if name == "<<":
        c.error(kpos, "YAML merge keys (<<: *anchor) are not supported: write the settings out")
        return
    if setting is None and catalogue.is_service_field(name):
        c.error(kpos, _service_field_message(name, "in a policy"))
        return
    if setting is None:
        suggestion = catalogue.suggest(name)
        hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
        c.error(
            kpos,
            f"unknown setting {name!r}{hint}; a setting newer than teams-bridge's catalogue can "
            "be set under 'extra:'",
        )
        return
    if setting.deprecated:
        c.note(kpos, f"{name} is deprecated: {setting.deprecated}")
    try:
        out[name] = setting.normalize(value)
    except ValueError as exc:
        c.error(vpos, str(exc))


def _service_field_message(name: str, where: str) -> str:
    return (
        f"{name!r} cannot be set {where}: {catalogue.SERVICE_FIELDS_TEXT} are service fields, "
        "not settings (the policy's name is its key under policies:): remove it"
    )


def _reserved_parameter_message(name: str, parameter: str) -> str:
    common = parameter in catalogue.COMMON_PARAMETERS
    if name.casefold() == parameter.casefold():
        how = "is PowerShell's common parameter" if common else "is the policy cmdlets' parameter"
    else:  # an alias or a prefix, which PowerShell binds to the whole name
        how = f"is read by PowerShell as the {'common' if common else 'cmdlet'} parameter"
    return (
        f"extra setting {name!r} {how} -{parameter}, not a setting: the PowerShell "
        "transport splats settings into the cmdlet, where it would change the call itself "
        "(-WhatIf writes nothing, -OutVariable overwrites the driver's variables); remove it"
    )


def _ensure(c: _Checker, m: LocMap, what: str) -> bool:
    ensure = m.get("ensure", "present")
    if ensure in ("present", "absent"):
        return ensure == "absent"
    c.error(
        m.value_pos["ensure"],
        f"ensure of {what} must be 'present' or 'absent', not {shown(ensure)}",
    )
    return False


def _policy_ref(
    c: _Checker, m: LocMap, state: DesiredState, what: str, declared: dict[str, DesiredPolicy]
) -> str | None:
    policy = m.get("policy")
    pos = m.value_pos.get("policy", m.pos)
    if not isinstance(policy, str) or not policy.strip():
        c.error(pos, f"{what} needs 'policy: <name>'")
        return None
    name = bare_name(policy.strip())
    if is_global(name):
        return "Global"
    want = declared.get(policy_key(name))
    if want is None:
        known = ", ".join(sorted(p.name for p in declared.values() if not p.absent)) or "none"
        c.error(
            pos,
            f"{what} names policy {policy!r}, which is neither declared under policies: nor "
            f"Global; declared: {known}",
        )
        return None
    if want.absent:
        c.error(pos, f"{what} names policy {want.name!r}, which is marked 'ensure: absent'")
        return None
    return want.name


def _validate_groups(c: _Checker, groups: LocList, state: DesiredState) -> None:
    seen: dict[str, Pos] = {}
    assigned = 0  # entries that assign a policy (not 'ensure: absent')
    # No rank means lowest, as with the service: after every ranked entry, in file order. (A
    # rank from the list position could put Kitchen above a 'rank: 5' Physicians entry.)
    lowest = max(
        (
            r
            for item in groups
            if isinstance(item, LocMap)
            and isinstance(r := _whole(item.get("rank")), int)
            and not isinstance(r, bool)
            and r >= 1
        ),
        default=0,
    )
    unranked = 0
    for i, item in enumerate(groups):
        ipos = groups.item_pos[i]
        m = c.mapping(item, ipos, f"group assignment #{i + 1}")
        if m is None:
            if item is None:
                c.error(ipos, "empty group assignment: give group, policy and rank")
            continue
        c.only_keys(m, ("group", "policy", "rank", "ensure"), "a group assignment")
        group = m.get("group")
        if not isinstance(group, str) or not group.strip():
            c.error(
                m.value_pos.get("group", m.pos),
                "group assignment needs 'group: <display name or object id>'",
            )
            continue
        group = group.strip()
        folded = group.casefold()
        if folded in seen:
            c.error(
                m.value_pos["group"],
                f"group {group!r} is assigned twice (also at line {seen[folded][0]}); a group "
                "holds one messaging policy: keep one entry",
            )
            continue
        seen[folded] = m.value_pos["group"]
        absent = _ensure(c, m, f"group {group!r}")
        if "rank" in m:
            rank = _whole(m["rank"])
        else:
            unranked += 1
            rank = lowest + unranked
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            c.error(
                m.value_pos.get("rank", m.pos),
                f"rank of group {group!r} must be a whole number from 1 (highest), "
                f"not {shown(rank)}",
            )
            if not absent:
                _policy_ref(c, m, state, f"group {group!r}", state.policies)  # report it too
            continue
        if absent:
            state.group_assignments.append(
                DesiredGroupAssignment(group, m.get("policy") or "", rank, True, c.loc(m.pos))
            )
            continue
        policy = _policy_ref(c, m, state, f"group {group!r}", state.policies)
        assigned += 1
        if assigned == MAX_GROUP_ASSIGNMENTS + 1:
            c.error(
                m.pos,
                f"group {group!r} is assignment #{assigned}: the service holds at most "
                f"{MAX_GROUP_ASSIGNMENTS} group assignments of messaging policies; assign "
                "policies to fewer, larger groups (or to users directly)",
            )
        if policy is not None:
            state.group_assignments.append(
                DesiredGroupAssignment(group, policy, rank, False, c.loc(m.pos))
            )


def _whole(value: Any) -> Any:
    """A whole number written as 1.0 (JSON's 1E0) is the whole number 1."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _validate_user_rows(c: _Checker, users: UserRows, state: DesiredState) -> bool:
    """The regular list (``yamlloc.UserRows``) checked in one tight loop: True when every entry
    holds (each user once, each policy declared, none Global), and the assignments are added.
    False at the first entry that does not, with nothing added or reported: the full checker
    then reads the list and says where and what."""
    added, reported = len(state.user_assignments), len(c.problems)
    seen: set[str] = set()
    policies: dict[str, str] = {}  # policy as written -> as checked
    append = state.user_assignments.append
    source, new_tuple, line, col = c.source, _new_tuple, users.first_line, users.indent + 3
    ok = True
    for k, (user, raw_policy) in enumerate(users.rows):
        name = user.strip()
        folded = name.casefold()
        if not name or folded in seen:
            ok = False
            break
        seen.add(folded)
        policy = policies.get(raw_policy)
        if policy is None:
            if is_global(bare_name(raw_policy.strip())):
                ok = False
                break
            checked = _policy_ref(c, users.entry(k), state, f"user {user!r}", state.policies)
            if checked is None or len(c.problems) > reported:
                ok = False
                break
            policy = policies[raw_policy] = checked
        location = new_tuple(Location, (source, line + 2 * k, col))
        append(new_tuple(DesiredUserAssignment, (name, policy, False, location)))
    if not ok:
        del state.user_assignments[added:]
        del c.problems[reported:]
    return ok


def _validate_users(c: _Checker, users: LocList, state: DesiredState) -> None:
    # Hot path: a hospital can list 100,000 users here.
    if type(users) is UserRows:
        if _validate_user_rows(c, users, state):
            return
        users.materialize()
    seen: dict[str, Pos] = {}  # case-folded user -> where it was first written
    policy_names: dict[str, str | None] = {}
    bad_policy: dict[str, list[int]] = {}  # policy name -> [index of its problem, other users]
    append = state.user_assignments.append
    source, new_tuple = c.source, _new_tuple
    for i, item in enumerate(users):
        if type(item) is not LocMap:
            c.error(
                users.item_pos[i],
                "a user assignment is a mapping: '- user: <UPN or id>' and 'policy: <name>'",
            )
            continue
        if len(item) != 2 or "user" not in item or "policy" not in item:
            c.only_keys(item, ("user", "policy", "ensure"), "a user assignment")
        user = item.get("user")
        name = user.strip() if type(user) is str else ""
        if not name:
            c.error(
                item.value_pos.get("user", item.pos),
                "user assignment needs 'user: <UPN or object id>'",
            )
            continue
        folded = name.casefold()
        if folded in seen:
            c.error(
                item.value_pos["user"],
                f"user {user!r} is listed twice (also at line {seen[folded][0]}): keep one entry",
            )
            continue
        seen[folded] = item.value_pos["user"]
        if "ensure" in item and _ensure(c, item, f"user {user!r}"):
            append(DesiredUserAssignment(name, None, True, c.loc(item.pos)))
            continue
        raw_policy = item.get("policy")
        if type(raw_policy) is str and raw_policy in policy_names:
            policy = policy_names[raw_policy]
            if policy is None and raw_policy in bad_policy:
                bad_policy[raw_policy][1] += 1
        else:
            if isinstance(raw_policy, str) and is_global(bare_name(raw_policy.strip())):
                c.error(
                    item.value_pos["policy"],
                    f"user {user!r}: Global cannot be assigned directly; to take away a direct "
                    "assignment (so groups, then Global, apply) write 'ensure: absent'",
                )
                continue
            reported = len(c.problems)
            policy = _policy_ref(c, item, state, f"user {user!r}", state.policies)
            if isinstance(raw_policy, str):
                policy_names[raw_policy] = policy
                if policy is None and len(c.problems) > reported:
                    bad_policy[raw_policy] = [reported, 0]
        if policy is not None:
            location = new_tuple(Location, (source, *item.pos))
            append(new_tuple(DesiredUserAssignment, (name, policy, False, location)))
    # One message per bad policy name, saying how many other users name it too.
    for index, more in bad_policy.values():
        if more:
            first = c.problems[index]
            others = f"(and {more} more user{'s' if more > 1 else ''})"
            c.problems[index] = Problem(first.location, f"{first.message} {others}")


def _validate_flags(
    c: _Checker, top: LocMap, key: str, factory: Callable[..., Any], names: tuple[str, ...]
) -> Any:
    m = c.mapping(top.get(key), top.value_pos.get(key, top.pos), key)
    if m is None:
        return factory()
    c.only_keys(m, names, key)
    values = {}
    for name in names:
        if name in m:
            if isinstance(m[name], bool):
                values[name] = m[name]
            else:
                c.error(
                    m.value_pos[name], f"{key}.{name} takes true or false, not {shown(m[name])}"
                )
    return factory(**values)


def _validate_safety(c: _Checker, top: LocMap) -> SafetyLimits:
    m = c.mapping(top.get("safety"), top.value_pos.get("safety", top.pos), "safety")
    if m is None:
        return SafetyLimits()
    names = (
        "max_policy_deletes",
        "max_user_change_share",
        "user_change_floor",
        "protect_clinical_settings",
    )
    c.only_keys(m, names, "safety")
    values: dict[str, Any] = {}
    deletes = m.get("max_policy_deletes")
    if deletes is not None:
        why = limits.COUNT.problem(deletes)
        if why is not None or not isinstance(deletes, int):
            c.error(
                m.value_pos["max_policy_deletes"],
                f"max_policy_deletes takes a whole number: {why or f'{shown(deletes)} is not one'}",
            )
        else:
            values["max_policy_deletes"] = deletes
    share = m.get("max_user_change_share")
    if share is not None:
        number = share
        if isinstance(share, str) and share.endswith("%"):
            with contextlib.suppress(ValueError):
                number = float(share[:-1]) / 100
        why = limits.SHARE.problem(number)
        if why is not None:
            c.error(
                m.value_pos["max_user_change_share"],
                f"max_user_change_share takes a share from 0 to 1 (or a percentage such as "
                f"'10%'): {shown(share)} is not one",
            )
        else:
            values["max_user_change_share"] = float(number)
    floor = m.get("user_change_floor")
    if floor is not None:
        why = limits.FLOOR.problem(floor)
        if why is not None:
            c.error(
                m.value_pos["user_change_floor"],
                f"user_change_floor: {why} (0: the share limit always applies)",
            )
        else:
            values["user_change_floor"] = int(floor)
    protect = m.get("protect_clinical_settings")
    if protect is not None:
        if isinstance(protect, bool):
            values["protect_clinical_settings"] = protect
        else:
            c.error(
                m.value_pos["protect_clinical_settings"],
                "protect_clinical_settings takes true or false",
            )
    return SafetyLimits(**values)


_ROLE_EXAMPLE = "e.g. 'where: {department: Nursing}' or 'where: {jobTitle: \"*Nurse*\"}'"


def _validate_clause(c: _Checker, value: Any, pos: Pos, what: str) -> dict[str, tuple[Any, ...]]:
    """A where/except clause: attribute -> values (a list is any of). Empty: an error."""
    m = c.mapping(value, pos, what)
    if m is None:
        if value is None:
            c.error(pos, f"{what} is empty: name the attributes to match, {_ROLE_EXAMPLE}")
        return {}
    if not m:
        c.error(pos, f"{what} is empty: name the attributes to match, {_ROLE_EXAMPLE}")
        return {}
    out: dict[str, tuple[Any, ...]] = {}
    for key, raw in m.items():
        kpos, vpos = m.key_pos[key], m.value_pos[key]
        name = roles.canonical_attribute(key) if isinstance(key, str) else None
        if name is None:
            hint = _did_you_mean(str(key), roles.ATTRIBUTES)
            if not hint and isinstance(key, str) and key.startswith("extensionAttribute"):
                hint = f" (did you mean 'onPremisesExtensionAttributes.{key}'?)"
            c.error(
                kpos,
                f"unknown user attribute {key!r} in {what}{hint}; attributes are Microsoft Graph "
                f"user properties: {', '.join(roles.ATTRIBUTES[:13])}, "
                "onPremisesExtensionAttributes.extensionAttribute1..15",
            )
            continue
        if name in out:
            c.error(kpos, f"attribute {name!r} is written twice in {what}: keep one")
            continue
        values = list(raw) if isinstance(raw, LocList) else [raw]
        if not values:
            c.error(vpos, f"{what}.{name} is an empty list: give at least one value")
            continue
        good = True
        for v in values:
            if name == roles.ACCOUNT_ENABLED:
                if not isinstance(v, bool):
                    c.error(vpos, f"{what}.accountEnabled takes true or false, not {shown(v)}")
                    good = False
            elif isinstance(v, bool) or not isinstance(v, str | int | float) or v == "":
                c.error(
                    vpos,
                    f"{what}.{name} takes text (or a list of text), not {shown(v)}; "
                    "* and ? are wildcards",
                )
                good = False
        if good:
            out[name] = tuple(v if isinstance(v, bool | str) else str(v) for v in values)
    return out


def _validate_roles(c: _Checker, items: LocList, state: DesiredState) -> None:
    seen: dict[str, Pos] = {}
    for i, item in enumerate(items):
        ipos = items.item_pos[i]
        m = c.mapping(item, ipos, f"role #{i + 1}")
        if m is None:
            if item is None:
                c.error(ipos, "empty role: give role, policy and where")
            continue
        c.only_keys(m, ("role", "policy", "where", "except"), "a role")
        name = m.get("role")
        if not isinstance(name, str) or not name.strip():
            c.error(m.value_pos.get("role", m.pos), "a role needs 'role: <name>' (for plans)")
            continue
        name = name.strip()
        npos = m.value_pos["role"]
        duplicate = name.casefold() in seen
        if duplicate:
            c.error(
                npos,
                f"role {name!r} is named twice (also at line {seen[name.casefold()][0]}): "
                "give each role its own name",
            )
        seen.setdefault(name.casefold(), npos)
        policy = _policy_ref(c, m, state, f"role {name!r}", state.policies)
        where = _validate_clause(
            c, m.get("where"), m.value_pos.get("where", m.pos), f"role {name!r} where"
        )
        excluded: dict[str, tuple[Any, ...]] = {}
        if "except" in m:
            excluded = _validate_clause(
                c, m.get("except"), m.value_pos["except"], f"role {name!r} except"
            )
        if policy is not None and where and not duplicate:
            state.roles.append(roles.Role(name, policy, where, excluded, c.loc(m.pos)))


def _validate_clinicians(
    c: _Checker, value: Any, pos: Pos, state: DesiredState
) -> tuple[tuple[str, ...], dict[str, tuple[Any, ...]] | None]:
    m = c.mapping(value, pos, "rules.clinicians")
    if m is None:
        if value is None:
            c.error(pos, "rules.clinicians is empty: give roles: [...] and/or where: {...}")
        return (), None
    c.only_keys(m, ("roles", "where"), "rules.clinicians")
    if "roles" not in m and "where" not in m:
        c.error(pos, "rules.clinicians needs roles: [...] and/or where: {...}")
    names: list[str] = []
    if "roles" in m:
        rpos = m.value_pos["roles"]
        raw = m["roles"]
        listed = list(raw) if isinstance(raw, LocList) else [raw]
        known = {r.name.casefold(): r.name for r in state.roles}
        for v in listed:
            if not isinstance(v, str) or v.strip().casefold() not in known:
                hint = _did_you_mean(str(v), [r.name for r in state.roles])
                c.error(
                    rpos,
                    f"rules.clinicians names role {shown(v)}{hint}, which is not under "
                    f"assignments.roles; roles: {', '.join(known.values()) or 'none'}",
                )
            else:
                names.append(known[v.strip().casefold()])
    where = None
    if "where" in m:
        where = _validate_clause(c, m["where"], m.value_pos["where"], "rules.clinicians where")
    return tuple(names), where


def _validate_rules(c: _Checker, top: LocMap, state: DesiredState | None = None) -> RulesConfig:
    m = c.mapping(top.get("rules"), top.value_pos.get("rules", top.pos), "rules")
    if m is None:
        return RulesConfig()
    enabled: dict[str, bool] = {}
    clinical: tuple[str, ...] = ()
    pattern = RulesConfig().clinical_pattern
    clinician_roles: tuple[str, ...] = ()
    clinician_where: dict[str, tuple[Any, ...]] | None = None
    for key, value in m.items():
        vpos = m.value_pos[key]
        if key == "clinicians":
            clinician_roles, clinician_where = _validate_clinicians(
                c, value, vpos, state or DesiredState()
            )
        elif key == "clinical_policies":
            seq = c.sequence(value, vpos, "rules.clinical_policies")
            if seq is not None:
                if all(isinstance(v, str) for v in seq):
                    clinical = tuple(bare_name(v) for v in seq)
                else:
                    c.error(vpos, "rules.clinical_policies is a list of policy names")
        elif key == "clinical_pattern":
            if value is False:
                pattern = ""  # name matching off: rules.clinical_policies alone decides
                continue
            if not isinstance(value, str):
                c.error(
                    vpos,
                    "rules.clinical_pattern is a regular expression (text), "
                    'or false (or "") to match no names',
                )
                continue
            try:
                re.compile(value)
                pattern = value
            except re.error as exc:
                c.error(vpos, f"rules.clinical_pattern is not a valid regular expression: {exc}")
        elif key in RULE_IDS:
            if isinstance(value, bool):
                enabled[key] = value
            else:
                c.error(vpos, f"rules.{key} takes true (check on) or false (check off)")
        else:
            allowed = (*RULE_IDS, "clinicians", "clinical_policies", "clinical_pattern")
            c.error(
                m.key_pos[key],
                f"unknown rule {key!r}{_did_you_mean(str(key), allowed)}; "
                f"known: {', '.join(allowed)}",
            )
    return RulesConfig(
        enabled=enabled,
        clinical_policies=clinical,
        clinical_pattern=pattern,
        clinician_roles=clinician_roles,
        clinician_where=clinician_where or None,
    )
