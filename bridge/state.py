"""Value objects for the two sides of a diff: what the tenant has (``TenantState``) and what the
desired-state file asks for (``DesiredState``).

Identities (as in octoDNS, one per object):
- a policy is identified by its case-folded bare name (``Tag:Clinical`` == ``clinical``);
- a group assignment by its group id; a user assignment by its user id.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import Location

if TYPE_CHECKING:
    from .roles import Role

GLOBAL = "Global"
NOWHERE = Location("<memory>")  # the location of objects built in code, not read from a file
# Built-in custom instances seen in real tenants; pruning never touches them unless named.
BUILTIN_POLICIES = frozenset({"global", "default", "edufaculty", "edustudent"})
# The service holds at most this many group assignments per policy type.
MAX_GROUP_ASSIGNMENTS = 64


_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


def is_guid(text: str) -> bool:
    """An object id (tenant, user, group), as opposed to a name."""
    return bool(_GUID.match(text))


def bare_name(identity: str) -> str:
    """``Tag:Clinical`` -> ``Clinical``; ``global`` -> ``Global``."""
    name = identity[4:] if identity[:4].casefold() == "tag:" else identity
    return GLOBAL if name.casefold() == "global" else name


def policy_key(name: str) -> str:
    return bare_name(name).casefold()


def wire_identity(name: str) -> str:
    """The identity the Teams admin API uses: ``Global`` or ``Tag:<Name>``."""
    bare = bare_name(name)
    return GLOBAL if bare == GLOBAL else f"Tag:{bare}"


def is_global(name: str) -> bool:
    return policy_key(name) == "global"


# --------------------------------------------------------------------------- tenant side


@dataclass(frozen=True)
class Policy:
    name: str  # bare name, the service's casing
    settings: Mapping[str, Any]  # every setting the service returned, normalised
    # The object exactly as the service returned it (snapshots keep it); never compared.
    raw: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> str:
        return policy_key(self.name)


@dataclass(frozen=True)
class GroupAssignment:
    group_id: str
    policy: str  # bare name
    rank: int  # 1 = highest
    group_name: str | None = None


@dataclass(frozen=True)
class UserAssignment:
    user_id: str
    policy: str  # bare name
    upn: str | None = None


@dataclass(frozen=True, slots=True)  # slots: a million of them read in a large tenant
class User:
    id: str
    upn: str
    display_name: str | None = None
    department: str | None = None
    # The attributes roles and rules use (``roles.ATTRIBUTES`` spelling), when they were read;
    # None: not read (no role needed them).
    attributes: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Group:
    id: str
    display_name: str
    # Direct members' user ids, when they were read (only ``explain`` needs them).
    members: tuple[str, ...] | None = None


@dataclass
class Directory:
    """Who is who, as much of it as was read: enough to resolve the names the desired file uses."""

    users: dict[str, User] = field(default_factory=dict)  # by id
    groups: dict[str, Group] = field(default_factory=dict)  # by id
    _upn_index: dict[str, str] = field(default_factory=dict, repr=False)
    _group_index: dict[str, list[str]] = field(default_factory=dict, repr=False)
    _group_ids: dict[str, str] = field(default_factory=dict, repr=False)
    # Names that were looked up and found nothing (so "unknown" is a fact, not a missing read).
    searched_groups: set[str] = field(default_factory=set)
    searched_users: set[str] = field(default_factory=set)

    def add_user(self, user: User) -> None:
        self.users[user.id] = user
        # Keys are the user's own strings when already folded (most are): no copy per user.
        upn, uid = user.upn.casefold(), user.id.casefold()
        self._upn_index[user.upn if upn == user.upn else upn] = user.id
        self._upn_index[user.id if uid == user.id else uid] = user.id  # object ids in any case

    def add_group(self, group: Group) -> None:
        if group.id not in self.groups:
            self._group_index.setdefault(group.display_name.casefold(), []).append(group.id)
            self._group_ids[group.id.casefold()] = group.id
        self.groups[group.id] = group

    def user_by_ref(self, ref: str) -> User | None:
        """A user by object id or UPN (case-insensitive)."""
        if ref in self.users:
            return self.users[ref]
        uid = self._upn_index.get(ref.casefold())
        return self.users[uid] if uid else None

    def groups_by_ref(self, ref: str) -> list[Group]:
        """Every group whose id is ``ref`` or whose display name is ``ref`` (case-insensitive)."""
        if ref in self.groups:
            return [self.groups[ref]]
        by_id = self._group_ids.get(ref.casefold())
        if by_id is not None:
            return [self.groups[by_id]]
        return [self.groups[g] for g in self._group_index.get(ref.casefold(), [])]


@dataclass
class TenantState:
    tenant_id: str | None
    policies: dict[str, Policy] = field(default_factory=dict)  # by key
    group_assignments: dict[str, GroupAssignment] = field(default_factory=dict)  # by group id
    user_assignments: dict[str, UserAssignment] = field(default_factory=dict)  # by user id
    directory: Directory = field(default_factory=Directory)
    # The tenant's verified domains, when the source knows them (for a domain ``tenant:`` guard).
    domains: tuple[str, ...] = ()
    # When this state was read from the tenant, if not just now: a snapshot's ``taken_at``.
    observed_at: dt.datetime | None = None
    # The organization's display name and default domain (Graph ``/organization``), when read:
    # what people call the tenant in plan, apply's prompt and the reports.
    display_name: str | None = None
    default_domain: str | None = None

    @property
    def label(self) -> str:
        """The tenant as people name it: ``Northwind Regional Health (northwind.example)``;
        the id alone when the name was not read (an older snapshot)."""
        where = self.default_domain or self.tenant_id
        if self.display_name:
            return f"{self.display_name} ({where})" if where else self.display_name
        return where or "unknown tenant"

    @classmethod
    def build(
        cls,
        tenant_id: str | None,
        policies: Iterable[Policy],
        group_assignments: Iterable[GroupAssignment] = (),
        user_assignments: Iterable[UserAssignment] = (),
        directory: Directory | None = None,
    ) -> TenantState:
        return cls(
            tenant_id=tenant_id,
            policies={p.key: p for p in policies},
            group_assignments={g.group_id: g for g in group_assignments},
            user_assignments={u.user_id: u for u in user_assignments},
            directory=directory or Directory(),
        )

    def ranked_groups(self) -> list[GroupAssignment]:
        """Group assignments in precedence order (rank 1 first)."""
        return sorted(self.group_assignments.values(), key=lambda g: (g.rank, g.group_id))

    def policy(self, name: str) -> Policy | None:
        return self.policies.get(policy_key(name))

    def effective(
        self, user_id: str, member_of: Iterable[str]
    ) -> tuple[str, str, GroupAssignment | None]:
        """The policy a user gets and where it comes from: ``(policy, source, group assignment)``
        with source ``direct`` (a direct assignment wins), ``group`` (the best-ranked assignment
        among the groups ``member_of``, the user's *direct* memberships), or ``global``."""
        direct = self.user_assignments.get(user_id)
        if direct is not None:
            return direct.policy, "direct", None
        ranked = [self.group_assignments[g] for g in member_of if g in self.group_assignments]
        if ranked:
            best = min(ranked, key=lambda g: (g.rank, g.group_id))
            return best.policy, "group", best
        return GLOBAL, "global", None


# --------------------------------------------------------------------------- desired side


@dataclass(frozen=True)
class DesiredPolicy:
    name: str  # bare name as written (Tag: stripped)
    settings: Mapping[str, Any]  # managed settings, canonical values (catalogue and extra)
    absent: bool = False
    location: Location = NOWHERE

    @property
    def key(self) -> str:
        return policy_key(self.name)


@dataclass(frozen=True)
class DesiredGroupAssignment:
    group: str  # display name or object id, as written
    policy: str
    rank: int
    absent: bool = False
    location: Location = NOWHERE


class DesiredUserAssignment(NamedTuple):
    """A tuple, like ``Location``: a desired file can hold 100,000 of these, and a frozen
    dataclass costs three times as much to build."""

    user: str  # UPN or object id, as written
    policy: str | None  # None with absent=True: remove the direct assignment
    absent: bool = False
    location: Location = NOWHERE


@dataclass(frozen=True)
class Prune:
    policies: bool = False
    group_assignments: bool = False
    user_assignments: bool = False


@dataclass(frozen=True)
class SafetyLimits:
    """Named defaults; the file's ``safety:`` block and the command line can change them."""

    max_policy_deletes: int = 3
    max_user_change_share: float = 0.10  # share of users whose effective policy would change
    # Turning off read receipts or priority notifications in a policy in use needs --force.
    protect_clinical_settings: bool = True
    # The share limit applies only when more users than this move: moving a handful of people
    # (11 of a 60-user clinic) is routine, moving most of a hospital is not (as octoDNS skips
    # its thresholds below a minimum number of records). Last, so positional use keeps its
    # meaning.
    user_change_floor: int = 50


# The built-in test for a clinical policy name. It is matched against each *word* of the name
# (``rules.base.name_words``: split on spaces, ``_``, ``-``, ``/``, ``&``, digits and CamelCase, so
# "ICU_Nurses", "NICU Staff", "DoctorsOnCall", "Med/Surg" and "MedSurg" are all seen; a letter, "&"
# and a letter stay one word: "A&E", "L&D"), the whole word, so "Lab" is not found in
# "Collaboration" nor "OR" in "Orange". Case is ignored except for the short acronyms (ED, ER, OR,
# RN, NP, ...) that would otherwise hit ordinary words or names. Missing a clinical policy is worse
# than a false finding, so the list leans wide: "Lab Equipment Vendors", "Innovation Lab" and
# "Psychometrics" count as clinical (a file's own clinical_pattern can be narrower). A word right
# after "non"/"not" does not count ("Non-Clinical Staff", "NonClinical").
DEFAULT_CLINICAL_PATTERN = (
    r"(?i:"
    # People and roles.
    r"clinic\w*|physician\w*|doctor\w*|nurs\w*|(?:para)?medic\w*|midwi\w*|"
    r"surgeon\w*|an(?:a)?esth\w*|resident\w*|interns?|registrars?|housestaff|"
    r"consultants?|hospitalists?|phlebotom\w*|"
    # Places, services and teams.
    r"[cmnprst]?icus?|ccus?|pacus?|scbus?|emergency|trauma|triage|ambulance\w*|resus\w*|"
    r"wards?|inpatients?|outpatients?|theatres?|periop\w*|telemetry|stepdown|labs?|"
    r"meds?|surg(?:er\w*|ical\w*|s)?|"
    # Specialties.
    r"oncolog\w*|cardiolog\w*|cardiac|radiolog\w*|patholog\w*|neurolog\w*|psych\w*|"
    r"p(?:a)?ediatric\w*|p(?:a)?eds|obstetric\w*|obs|gyn(?:a)?ecolog\w*|gyn(?:ae)?|obgyn|"
    r"maternity|neonat\w*|orthop(?:a)?edic\w*|urolog\w*|h(?:a)?ematolog\w*|nephrolog\w*|"
    r"geriatric\w*|endoscop\w*|"
    r"pharmac\w*|physio\w*|respiratory|dialysis|renal|palliative|hospice"
    r")|(?-i:"
    r"ED|ER|OR|OB|ITU|HDU|AMU|MAU|EMS|HCA|CNA|LPN|NP|APP|RN|[A-Z]{1,3}ICU|"
    r"[Aa]&[Ee]|[Ll]&[Dd]|[Oo]&[Gg]"
    r")"
)
# Names of more than one word the word list alone would miss or would have to guess at (compared
# ignoring case; "Labour & Delivery" is the words "Labour", "Delivery").
CLINICAL_PHRASES: tuple[tuple[str, ...], ...] = (
    ("critical", "care"),
    ("intensive", "care"),
    ("high", "dependency"),
    ("allied", "health"),
    ("mental", "health"),
    ("behavioral", "health"),
    ("behavioural", "health"),
    ("labor", "delivery"),
    ("labour", "delivery"),
    ("labor", "and", "delivery"),
    ("labour", "and", "delivery"),
    ("cath", "lab"),
    ("rapid", "response"),
    ("code", "team"),
    ("code", "blue"),
    ("crash", "team"),
    ("house", "staff"),
    ("step", "down"),
)


@dataclass(frozen=True)
class RulesConfig:
    """Healthcare secure-messaging checks; each can be switched off in the file's ``rules:``."""

    enabled: Mapping[str, bool] = field(default_factory=dict)
    clinical_policies: tuple[str, ...] = ()
    # The default is the built-in word list above, used together with ``clinical_policies``. A
    # pattern the file sets replaces it (searched in the whole name; a match right after
    # "non"/"not" does not count); "" (or ``clinical_pattern: false`` in the file) switches name
    # matching off, leaving the list alone to decide.
    clinical_pattern: str = DEFAULT_CLINICAL_PATTERN

    # Who the clinicians are (``rules.clinicians``): role names and/or a where-clause. When set,
    # clinical coverage is checked on people, not policy names.
    clinician_roles: tuple[str, ...] = ()
    clinician_where: Mapping[str, tuple[Any, ...]] | None = None

    def is_enabled(self, rule_id: str) -> bool:
        return self.enabled.get(rule_id, True)

    @property
    def has_clinicians(self) -> bool:
        return bool(self.clinician_roles) or self.clinician_where is not None


@dataclass
class DesiredState:
    tenant: str | None = None
    policies: dict[str, DesiredPolicy] = field(default_factory=dict)  # by key
    group_assignments: list[DesiredGroupAssignment] = field(default_factory=list)
    user_assignments: list[DesiredUserAssignment] = field(default_factory=list)
    roles: list[Role] = field(default_factory=list)  # assignments.roles, in file order
    prune: Prune = field(default_factory=Prune)
    safety: SafetyLimits = field(default_factory=SafetyLimits)
    rules: RulesConfig = field(default_factory=RulesConfig)
    source: str = "<memory>"
    sha256: str = ""
    notes: list[str] = field(default_factory=list)  # non-fatal remarks from validation

    def policy(self, name: str) -> DesiredPolicy | None:
        return self.policies.get(policy_key(name))

    def group_refs(self) -> list[str]:
        return [g.group for g in self.group_assignments]

    def user_refs(self) -> list[str]:
        return [u.user for u in self.user_assignments]

    def user_attributes(self) -> list[str]:
        """The user attributes the roles and ``rules.clinicians`` use (to read with the
        directory); empty when nothing needs them."""
        names: set[str] = set()
        for role in self.roles:
            names |= role.attributes()
        if self.rules.clinician_where:
            names |= set(self.rules.clinician_where)
        if self.rules.has_clinicians or names:
            names |= {"accountEnabled", "department"}
        return sorted(names)
