"""Who people are: matching Entra user attributes against the desired file's roles (pure).

A role selects a user when every ``where`` key matches (a list is any of its values; ``*`` and
``?`` are wildcards; case is ignored) and no ``except`` key does. Roles are tried in file order and
the first that selects a user decides; users listed under ``users:`` are never decided by a role.
Disabled accounts (``accountEnabled: false``) are skipped unless the role's ``where`` names
``accountEnabled``. A missing attribute matches nothing, not even ``*``.

Matching is the hot path of a large tenant (100,000 people, 20 roles): patterns are compiled once
(literals in a set, wildcards in one regular expression per attribute), and the decision is kept
per distinct combination of the attribute values the roles use, which a hospital repeats a lot.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import Location
from .state import NOWHERE

# The Microsoft Graph user properties a role may name (DESIGN.md, "Roles"); dotted names are
# properties of a complex property (employeeOrgData, onPremisesExtensionAttributes).
ATTRIBUTES: tuple[str, ...] = (
    "department",
    "jobTitle",
    "employeeType",
    "companyName",
    "officeLocation",
    "city",
    "state",
    "country",
    "usageLocation",
    "userType",
    "accountEnabled",
    "employeeOrgData.division",
    "employeeOrgData.costCenter",
    *(f"onPremisesExtensionAttributes.extensionAttribute{i}" for i in range(1, 16)),
)
_BY_FOLDED = {a.casefold(): a for a in ATTRIBUTES}
ACCOUNT_ENABLED = "accountEnabled"


def canonical_attribute(name: str) -> str | None:
    """The contract's spelling of an attribute name written in any case, or None."""
    return _BY_FOLDED.get(name.casefold())


def graph_select(attributes: Iterable[str]) -> list[str]:
    """The Graph ``$select`` names for ``attributes``: a dotted name selects its parent."""
    return list(dict.fromkeys(a.split(".", 1)[0] for a in attributes))


def attributes_from(obj: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """The values of ``names`` (contract spelling) in a user object as Graph returns it (keys in
    any case; a dotted name looked up inside its parent object). Missing values are left out."""
    folded = {str(k).casefold(): v for k, v in obj.items()}
    out: dict[str, Any] = {}
    for name in names:
        parent, _, child = name.partition(".")
        value = folded.get(parent.casefold())
        if child:
            if not isinstance(value, Mapping):
                continue
            value = {str(k).casefold(): v for k, v in value.items()}.get(child.casefold())
        if value is not None and value != "":
            out[name] = value
    return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).casefold()


@dataclass(frozen=True)
class Role:
    """One entry of ``assignments.roles``: values as written (a tuple per attribute)."""

    name: str
    policy: str
    where: Mapping[str, tuple[Any, ...]]
    except_: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    location: Location = NOWHERE

    def attributes(self) -> set[str]:
        return {*self.where, *self.except_}

    @property
    def names_account_enabled(self) -> bool:
        return ACCOUNT_ENABLED in self.where

    def describe(self) -> str:
        """``department: Nursing, jobTitle: *`` (for plans and explain)."""
        return describe_clause(self.where)


def describe_clause(clause: Mapping[str, Sequence[Any]]) -> str:
    parts = []
    for key, values in clause.items():
        shown = [_text(v) if isinstance(v, bool) else str(v) for v in values]
        parts.append(f"{key}: {shown[0] if len(shown) == 1 else '[' + ', '.join(shown) + ']'}")
    return ", ".join(parts)


class _ValueTest:
    """Any of a list of patterns, case-insensitive: literals in a set, wildcards in one regex."""

    __slots__ = ("literals", "regex")

    def __init__(self, patterns: Iterable[Any]):
        literals: set[str] = set()
        wild: list[str] = []
        for p in patterns:
            text = _text(p)
            if "*" in text or "?" in text:
                # fnmatch's translation without its [...] classes: only * and ? are wildcards.
                wild.append(fnmatch.translate(text.replace("[", "[[]")))
            else:
                literals.add(text)
        self.literals = frozenset(literals)
        self.regex = re.compile("|".join(f"(?:{w})" for w in wild), re.S) if wild else None

    def __call__(self, value: Any) -> bool:
        if value is None:
            return False
        text = _text(value)
        if text in self.literals:
            return True
        return self.regex is not None and self.regex.match(text) is not None


class _Clause:
    __slots__ = ("tests",)

    def __init__(self, clause: Mapping[str, Sequence[Any]], index: dict[str, int]):
        self.tests = [(index[k], _ValueTest(v)) for k, v in clause.items()]

    def all(self, values: Sequence[Any]) -> bool:
        return all(test(values[i]) for i, test in self.tests)

    def any(self, values: Sequence[Any]) -> bool:
        return any(test(values[i]) for i, test in self.tests)


class RoleMatcher:
    """Compiled roles. ``matches(attributes)`` -> indexes of every role that selects a user with
    those attributes, in file order (the first decides)."""

    def __init__(self, roles: Sequence[Role], extra: Iterable[str] = ()):
        self.roles = list(roles)
        names = sorted({a for r in roles for a in r.attributes()} | {ACCOUNT_ENABLED, *extra})
        self.attributes = names
        self._index = {a: i for i, a in enumerate(names)}
        self._enabled = self._index[ACCOUNT_ENABLED]
        self._where = [_Clause(r.where, self._index) for r in roles]
        self._except = [_Clause(r.except_, self._index) for r in roles]
        self._skip_disabled = [not r.names_account_enabled for r in roles]
        self._cache: dict[tuple[Any, ...], tuple[int, ...]] = {}

    def key(self, attributes: Mapping[str, Any] | None) -> tuple[Any, ...]:
        get = (attributes or {}).get
        return tuple(get(a) for a in self.attributes)

    def matches(self, attributes: Mapping[str, Any] | None) -> tuple[int, ...]:
        return self.matches_key(self.key(attributes))

    def matches_key(self, values: tuple[Any, ...]) -> tuple[int, ...]:
        found = self._cache.get(values)
        if found is None:
            disabled = values[self._enabled] is False
            found = tuple(
                i
                for i in range(len(self.roles))
                if not (disabled and self._skip_disabled[i])
                and self._where[i].all(values)
                and not self._except[i].any(values)
            )
            self._cache[values] = found
        return found

    def why_not(self, attributes: Mapping[str, Any] | None, i: int) -> str:
        """Why role ``i`` does not select a user with ``attributes`` (one short reason)."""
        role = self.roles[i]
        values = self.key(attributes)
        if values[self._enabled] is False and self._skip_disabled[i]:
            return "the account is disabled (the role does not name accountEnabled)"
        tests = zip(self._where[i].tests, role.where.items(), strict=True)
        for (index, test), (key, wanted) in tests:
            if not test(values[index]):
                have = values[index]
                shown = "missing" if have is None else repr(have)
                return f"{key} is {shown}, not {describe_clause({key: wanted}).split(': ', 1)[1]}"
        for (index, test), key in zip(self._except[i].tests, role.except_, strict=True):
            if test(values[index]):
                return f"excepted: {key} is {values[index]!r}"
        return "it selects this user"


@dataclass
class RoleSelection:
    """What the roles decided for a directory: the deciding role of each selected user, the users
    more than one role selects (every role, in file order), and the count per role."""

    roles: list[Role]
    by_user: dict[str, str] = field(default_factory=dict)  # user id -> role name
    several: dict[str, tuple[str, ...]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # role name -> users it decides
    # role name -> users its where selects before users: entries take them (for "selects nobody")
    matched: dict[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> list[str]:
        return [r.name for r in self.roles if not self.matched.get(r.name)]

    def role(self, name: str) -> Role:
        return next(r for r in self.roles if r.name == name)


def select(
    roles: Sequence[Role],
    users: Iterable[tuple[str, Mapping[str, Any] | None]],
    skip: Iterable[str] = (),
    matcher: RoleMatcher | None = None,
) -> RoleSelection:
    """Decide every ``(user id, attributes)``; ``skip``: ids decided by ``users:`` entries."""
    matcher = matcher or RoleMatcher(roles)
    skipped = set(skip)
    out = RoleSelection(list(roles))
    names = [r.name for r in roles]
    counts = [0] * len(roles)
    matched = [0] * len(roles)
    key = matcher.key
    matches = matcher.matches_key
    by_user = out.by_user
    for uid, attributes in users:
        found = matches(key(attributes))
        if not found:
            continue
        for i in found:
            matched[i] += 1
        if uid in skipped:
            continue
        counts[found[0]] += 1
        by_user[uid] = names[found[0]]
        if len(found) > 1:
            out.several[uid] = tuple(names[i] for i in found)
    out.counts = dict(zip(names, counts, strict=True))
    out.matched = dict(zip(names, matched, strict=True))
    return out


# --------------------------------------------------------------------------- planning


@dataclass
class RoleOutcome:
    """What the roles decided for one plan, kept beside it (``Plan.roles``) so views can group
    the direct assignment changes by role: the selection, and the users who lose a role's
    policy because no role and no ``users:`` entry selects them any more."""

    selection: RoleSelection
    # user id -> the role policy of the direct assignment they lose (the leaver rule)
    released: dict[str, str] = field(default_factory=dict)
    upns: dict[str, str] = field(default_factory=dict)  # user id -> UPN, for views

    def role_of(self, user_id: str) -> str | None:
        return self.selection.by_user.get(user_id)

    def warnings(self) -> list[str]:
        return [
            f"warning: role {r.name!r} selects nobody ({r.describe()}): check the attribute "
            "values against the directory (teams-bridge explain USER shows a user's)"
            for r in self.selection.roles
            if r.name in self.selection.empty
        ]

    def data(self) -> dict[str, Any]:
        """Every person each role selects (``plan --format json``), in file order."""
        upn = self.upns.get
        people: dict[str, list[dict[str, str]]] = {r.name: [] for r in self.selection.roles}
        for uid, role in self.selection.by_user.items():
            people[role].append({"user_id": uid, "user": upn(uid, uid)})
        for listed in people.values():
            listed.sort(key=lambda p: p["user"].casefold())
        return {
            "roles": [
                {
                    "role": r.name,
                    "policy": r.policy,
                    "where": {k: list(v) for k, v in r.where.items()},
                    **({"except": {k: list(v) for k, v in r.except_.items()}} if r.except_ else {}),
                    "count": len(people[r.name]),
                    "users": people[r.name],
                }
                for r in self.selection.roles
            ],
            "selected_by_several": [
                {"user_id": uid, "user": upn(uid, uid), "roles": list(names)}
                for uid, names in sorted(
                    self.selection.several.items(), key=lambda i: upn(*i[:1]) or ""
                )
            ],
            "released": [
                {"user_id": uid, "user": upn(uid, uid), "policy": policy}
                for uid, policy in sorted(self.released.items())
            ],
            "empty": self.selection.empty,
        }


class MissingAttributes(ValueError):
    """The directory was read without the attributes the roles need."""


def decide(
    roles: Sequence[Role],
    users: Mapping[str, Any],
    direct: Mapping[str, Any],
    declared: set[str],
) -> RoleOutcome:
    """The roles' decision for a directory (``users``: id -> ``state.User``) given the current
    direct assignments (``direct``: id -> ``state.UserAssignment``) and the ids ``users:``
    entries decide. A user whose attributes were not read cannot be decided: that raises
    ``MissingAttributes`` rather than taking them for people no role selects."""
    # A users: entry decides its user whatever the attributes (a user looked up by name
    # outside the listing may come without them).
    unread = [u.upn for uid, u in users.items() if u.attributes is None and uid not in declared]
    if unread and users:
        raise MissingAttributes(
            f"the directory was read without user attributes ({len(unread)} of {len(users)} "
            f"users, e.g. {unread[0]}), so the roles cannot decide who gets what"
        )
    matcher = RoleMatcher(roles)
    selection = select(roles, ((uid, u.attributes) for uid, u in users.items()), declared, matcher)
    role_policies = {r.policy.casefold() for r in roles if r.policy.casefold() != "global"}
    released = {
        uid: a.policy
        for uid, a in direct.items()
        if uid not in declared and uid not in selection.by_user and _key(a.policy) in role_policies
    }
    upns = {uid: users[uid].upn for uid in selection.by_user}
    for uid in released:
        u = users.get(uid)
        upns[uid] = u.upn if u is not None else (direct[uid].upn or uid)
    return RoleOutcome(selection, released, upns)


def _key(policy: str) -> str:
    name = policy[4:] if policy[:4].casefold() == "tag:" else policy
    return name.casefold()


NAMES_SHOWN = 3  # a few names per line of a role summary; JSON lists everyone


@dataclass(frozen=True)
class RoleChangeLine:
    """One line of a plan's role summary: ``+ 37 people -> 'Clinical' by role Clinicians
    (department: Nursing): a, b, c and 34 more``."""

    symbol: str  # "+", "~" or "-"
    role: str | None  # None: released (no role selects them any more)
    policy: str
    count: int
    names: tuple[str, ...]
    text: str


def summarize(
    outcome: RoleOutcome,
    sets: Iterable[tuple[str, str | None, str, str | None]],
    removes: Iterable[tuple[str, str | None, str]],
) -> tuple[list[RoleChangeLine], set[str]]:
    """Group the user changes the roles made, per role: ``sets`` are ``(user id, UPN, policy,
    policy before)``, ``removes`` ``(user id, UPN, policy)``. Returns the lines and the ids they
    cover (the view lists the other user changes one by one, as before)."""
    by_role = outcome.selection.by_user
    groups: dict[tuple[str, str | None, str], list[str]] = {}
    covered: set[str] = set()
    for uid, upn, policy, before in sets:
        role = by_role.get(uid)
        if role is None:
            continue
        groups.setdefault(("~" if before else "+", role, policy), []).append(upn or uid)
        covered.add(uid)
    for uid, upn, policy in removes:
        role = by_role.get(uid)
        if role is None and uid not in outcome.released:
            continue
        groups.setdefault(("-", role, policy), []).append(upn or uid)
        covered.add(uid)
    order = {r.name: i for i, r in enumerate(outcome.selection.roles)}
    lines = []
    for (symbol, role, policy), names in sorted(
        groups.items(), key=lambda g: (order.get(g[0][1] or "", len(order)), g[0][0])
    ):
        names.sort(key=str.casefold)
        shown = ", ".join(names[:NAMES_SHOWN])
        more = f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else ""
        people = f"{len(names)} {'person' if len(names) == 1 else 'people'}"
        if role is None:
            text = f"{people} lose {policy!r}: no role and no users: entry selects them any more"
        else:
            clause = outcome.selection.role(role).describe()
            if symbol == "-":
                text = (
                    f"{people} lose their direct assignment ({policy!r}) by role {role} ({clause})"
                )
            elif symbol == "~":
                text = f"{people} move to {policy!r} by role {role} ({clause})"
            else:
                text = f"{people} -> {policy!r} by role {role} ({clause})"
        lines.append(
            RoleChangeLine(
                symbol,
                role,
                policy,
                len(names),
                tuple(names[:NAMES_SHOWN]),
                f"{text}: {shown}{more}",
            )
        )
    return lines, covered


def explain_user(
    roles: Sequence[Role], attributes: Mapping[str, Any] | None, users_entry: str | None = None
) -> tuple[str | None, list[str]]:
    """Which role decides a user and why, in words: ``(role name or None, reasons)``. The
    reasons quote the attribute values that selected the user, or say per role why it did not
    (``users_entry``: where a ``users:`` entry decides the user instead)."""
    if not roles:
        return None, []
    if attributes is None:
        return None, ["the user's attributes were not read, so no role could be checked"]
    matcher = RoleMatcher(roles)
    found = matcher.matches(attributes)
    reasons: list[str] = []
    if users_entry is not None:
        reasons.append(
            f"the users: entry at {users_entry} decides this user; roles are not applied"
            + (f" (role {roles[found[0]].name} would select them)" if found else "")
        )
        return None, reasons
    decided = roles[found[0]].name if found else None
    for i, role in enumerate(roles):
        if i in found:
            values = ", ".join(
                f"{key}: {attributes.get(key)!r}" for key in role.where if key in attributes
            )
            if i == found[0]:
                reasons.append(
                    f"role {role.name} selects the user ({values}): policy {role.policy}"
                )
            else:
                reasons.append(
                    f"role {role.name} also selects the user ({values}), but {decided} comes "
                    "first in the file and decides"
                )
        else:
            reasons.append(f"role {role.name} does not: {matcher.why_not(attributes, i)}")
    if decided is None:
        reasons.append("no role selects the user: groups, then Global, decide")
    return decided, reasons
