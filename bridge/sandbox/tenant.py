"""The simulated tenant: messaging policies, the directory (users, groups, direct membership) and
policy assignments, with the service's rules. Thread-safe: every public method holds one lock.

Writes to group and direct assignments are accepted at once (later writes are checked against
them) but reads show them only ``propagation_delay`` seconds later, as the service does. Every
rule the service enforces raises ``ServiceError`` with the status, code and message it answers.

Users are stored column-wise (parallel lists and arrays indexed by position) so that a 100,000-user
tenant builds in a few seconds and stays small.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from array import array
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from typing import Any

from .config import MAX_GROUP_ASSIGNMENTS

MESSAGING = "TeamsMessagingPolicy"
# Fields on every policy object that are not settings; a write may carry them back unchanged.
ENVELOPE_FIELDS = frozenset({"Identity", "Key", "ConfigMetadata", "ConfigId"})
NO_GROUP = -1
USER_DISABLED, USER_GUEST, USER_CONTRACTOR = 1, 2, 4
# Departments whose people are clinicians (the division and extensionAttribute2 say so).
CLINICAL_DEPARTMENTS = frozenset(
    {
        "Emergency Medicine",
        "Medicine",
        "Graduate Medical Education",
        "Nursing",
        "Pharmacy",
        "Radiology",
    }
)
# The user properties the sandbox serves beyond id, UPN, display name and department (top-level
# Graph names: a $select naming one of them asks for them).
USER_PROPERTIES = frozenset(
    p.casefold()
    for p in (
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
        "employeeOrgData",
        "onPremisesExtensionAttributes",
    )
)

# The service's allowed values of enum settings, in its casing.
ENUM_VALUES: dict[str, tuple[str, ...]] = {
    "ReadReceiptsEnabledType": ("UserPreference", "Everyone", "None"),
    "GiphyRatingType": ("Strict", "Moderate", "NoRestriction"),
    "ChannelsInChatListEnabledType": ("DisabledUserOverride", "EnabledUserOverride"),
    "AudioMessageEnabledType": ("ChatsAndChannels", "ChatsOnly", "Disabled"),
    "ChatPermissionRole": ("Full", "Limited", "Restricted"),
    "InOrganizationChatControl": ("BlockingAllowed", "BlockingDisallowed"),
    "AutoShareFilesInExternalChats": ("Enabled", "Disabled"),
    "DesignerForBackgroundsAndImages": ("Enabled", "Disabled"),
}


class ServiceError(Exception):
    """What the service answers when a request breaks one of its rules."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def load_builtin_policies() -> list[dict[str, Any]]:
    """The four built-in policies as observed in a real tenant, plus ``AllowProactiveSummaries``
    (in MicrosoftTeams 7.9.0 but not in that older export), so the service knows every setting
    the module documents."""
    text = resources.files(__package__).joinpath("data/observed-builtin-policies.json").read_text()
    policies: list[dict[str, Any]] = json.loads(text)["policies"]
    for p in policies:
        p.setdefault("AllowProactiveSummaries", True)
    return policies


def _schema(policy: Mapping[str, Any]) -> dict[str, str]:
    kinds: dict[str, str] = {}
    for name, value in policy.items():
        if name in ENVELOPE_FIELDS:
            continue
        if name in ENUM_VALUES:
            kinds[name] = "enum"
        elif isinstance(value, bool):
            kinds[name] = "bool"
        else:
            kinds[name] = "string"
    return kinds


def bare(identity: str) -> str:
    name = identity[4:] if identity[:4].casefold() == "tag:" else identity
    return "Global" if name.casefold() == "global" else name


def wire_identity(name: str) -> str:
    return "Global" if name == "Global" else f"Tag:{name}"


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class GroupRecord:
    id: str
    display_name: str
    members: array = field(default_factory=lambda: array("i"))  # user positions, in order


@dataclass
class GroupAssignmentRecord:
    group_id: str
    policy_name: str
    created_time: str
    created_by: str


class Tenant:
    """Build with ``bridge.sandbox.seed.build_hospital``; tests may inspect and change it."""

    def __init__(
        self,
        tenant_id: str,
        display_name: str,
        domains: Iterable[tuple[str, bool]],
        app_id: str,
    ):
        self.tenant_id = tenant_id
        self.display_name = display_name
        self.domains = list(domains)  # (name, is default)
        self.app_id = app_id
        self.propagation_delay = 0.0
        self.clock: Callable[[], float] = time.monotonic
        self._lock = threading.RLock()
        builtins = load_builtin_policies()
        self._global_defaults = {k: v for k, v in builtins[0].items() if k != "Identity"}
        # New policies start from the schema's defaults, which the built-in Default shows.
        self._new_policy_defaults = {k: v for k, v in builtins[1].items() if k != "Identity"}
        self.schema = _schema(builtins[0])
        self._policies: dict[str, dict[str, Any]] = {}  # folded bare name -> settings + "Identity"
        for p in builtins:
            self._policies[bare(p["Identity"]).casefold()] = dict(p)
        # Users, column-wise.
        self.user_ids: list[str] = []
        self.upns: list[str] = []
        self.display_names: list[str] = []
        self.department_names: list[str] = []  # the few distinct departments
        self.departments = array("B")  # index into department_names
        self._user_by_id: dict[str, int] = {}
        self._user_by_upn: dict[str, int] = {}
        # Who people are (Graph user properties for roles): a job title index and flags per
        # user, the rest derived from the department and position; set_user_attributes
        # overrides any of them per user.
        self.job_title_names: list[str] = []
        self.job_titles = array("H")
        self.user_flags = array("B")  # USER_DISABLED | USER_GUEST | USER_CONTRACTOR
        self._attribute_overrides: dict[int, dict[str, Any]] = {}
        # Groups and direct membership (the first group of a user is kept in an array).
        self._groups: list[GroupRecord] = []
        self._group_by_id: dict[str, int] = {}
        self._primary_group = array("i")
        self._other_groups: dict[int, list[int]] = {}
        # Assignments: what writes see, and what reads see (behind by the propagation delay).
        self._ga_written: dict[str, list[GroupAssignmentRecord]] = {}
        self._ga_visible: dict[str, list[GroupAssignmentRecord]] = {}
        self._direct_written: dict[int, str] = {}
        self._direct_visible: dict[int, str] = {}
        self._pending: deque[tuple[float, Callable[[], None]]] = deque()

    # ------------------------------------------------------------------ directory (building)

    def add_user(self, user_id: str, upn: str, display_name: str, department: str) -> int:
        with self._lock:
            if user_id in self._user_by_id or upn.casefold() in self._user_by_upn:
                raise ValueError(f"user {upn} ({user_id}) exists already")
            try:
                dept = self.department_names.index(department)
            except ValueError:
                self.department_names.append(department)
                dept = len(self.department_names) - 1
            pos = len(self.user_ids)
            self.user_ids.append(user_id)
            self.upns.append(upn)
            self.display_names.append(display_name)
            self.departments.append(dept)
            self.job_titles.append(0)
            self.user_flags.append(0)
            self._primary_group.append(NO_GROUP)
            self._user_by_id[user_id] = pos
            self._user_by_upn[upn.casefold()] = pos
            return pos

    def describe_user(self, pos: int, job_title: str, flags: int = 0) -> None:
        """Set who a user is at seeding: job title and ``USER_*`` flags."""
        with self._lock:
            try:
                title = self.job_title_names.index(job_title)
            except ValueError:
                self.job_title_names.append(job_title)
                title = len(self.job_title_names) - 1
            self.job_titles[pos] = title
            self.user_flags[pos] = flags

    def set_user_attributes(self, user_ref: str, **attributes: Any) -> None:
        """Change who a person is between runs (a joiner's title, a mover's department, a
        leaver's disabled account): Graph property names, dotted for nested ones
        (``onPremisesExtensionAttributes.extensionAttribute1``); None clears one."""
        from ..roles import ATTRIBUTES

        unknown = sorted(set(attributes) - set(ATTRIBUTES))
        if unknown:
            raise ValueError(
                f"not user attributes roles read: {', '.join(unknown)}; known: "
                f"{', '.join(ATTRIBUTES)}"
            )
        with self._lock:
            pos = self._user_pos(user_ref)
            if "department" in attributes:
                department = str(attributes.pop("department"))
                try:
                    dept = self.department_names.index(department)
                except ValueError:
                    self.department_names.append(department)
                    dept = len(self.department_names) - 1
                self.departments[pos] = dept
            self._attribute_overrides.setdefault(pos, {}).update(attributes)

    def user_attributes(self, pos: int, wanted: Collection[str] | None = None) -> dict[str, Any]:
        """Graph's user properties roles read (nested objects as Graph nests them); ``wanted``:
        only these top-level properties (case-folded names), as a ``$select`` asks."""
        overrides = self._attribute_overrides.get(pos, {})
        out: dict[str, Any] = {}
        for key, value_of in _PROPERTY_VALUES.items():
            parent, _, child = key.partition(".")
            if wanted is not None and parent.casefold() not in wanted:
                continue
            value = overrides[key] if key in overrides else value_of(self, pos)
            if child:
                out.setdefault(
                    parent,
                    dict.fromkeys((f"extensionAttribute{i}" for i in range(1, 16)), None)
                    if parent == "onPremisesExtensionAttributes"
                    else {},
                )[child] = value
            else:
                out[key] = value
        for key, value in overrides.items():  # attributes the sandbox does not derive
            parent, _, child = key.partition(".")
            if key in _PROPERTY_VALUES or (wanted is not None and parent.casefold() not in wanted):
                continue
            if child:
                out.setdefault(parent, {})[child] = value
            else:
                out[key] = value
        return out

    def _department(self, pos: int) -> str:
        return self.department_names[self.departments[pos]]

    def add_group(self, group_id: str, display_name: str) -> None:
        with self._lock:
            if group_id in self._group_by_id:
                raise ValueError(f"group {group_id} exists already")
            self._group_by_id[group_id] = len(self._groups)
            self._groups.append(GroupRecord(group_id, display_name))

    def add_member(self, group_id: str, user: str | int) -> None:
        """Make a user (position, id or UPN) a direct member of a group."""
        with self._lock:
            g = self._group_by_id[group_id]
            pos = user if isinstance(user, int) else self._user_pos(user)
            if g in self._groups_of(pos):
                return
            self._groups[g].members.append(pos)
            if self._primary_group[pos] == NO_GROUP:
                self._primary_group[pos] = g
            else:
                self._other_groups.setdefault(pos, []).append(g)

    def _groups_of(self, pos: int) -> list[int]:
        first = self._primary_group[pos]
        return [] if first == NO_GROUP else [first, *self._other_groups.get(pos, ())]

    # ------------------------------------------------------------------ directory (reading)

    @property
    def user_count(self) -> int:
        return len(self.user_ids)

    def _user_pos(self, ref: str) -> int:
        pos = self._user_by_id.get(ref)
        if pos is None:
            pos = self._user_by_upn.get(ref.casefold())
        if pos is None:
            raise ServiceError(404, "NotFound", f"User '{ref}' was not found in the tenant.")
        return pos

    def find_user(self, ref: str) -> int | None:
        """A user's position by object id or UPN (case-insensitive), or None."""
        with self._lock:
            pos = self._user_by_id.get(ref)
            return pos if pos is not None else self._user_by_upn.get(ref.casefold())

    def user(self, pos: int, attributes: Collection[str] = ()) -> dict[str, Any]:
        """Graph's view of one user (``attributes``: with these properties roles read, by
        case-folded top-level name)."""
        out = {
            "id": self.user_ids[pos],
            "userPrincipalName": self.upns[pos],
            "displayName": self.display_names[pos],
            "department": self.department_names[self.departments[pos]],
        }
        if attributes:
            out.update(self.user_attributes(pos, attributes))
        return out

    def graph_users_page(
        self, skip: int, top: int, attributes: Collection[str] = ()
    ) -> tuple[list[dict[str, Any]], bool]:
        """Graph's view of users ``skip`` .. ``skip+top``, and whether more follow."""
        with self._lock:
            end = min(skip + top, len(self.user_ids))
            page = [self.user(pos, attributes) for pos in range(skip, end)]
            return page, end < len(self.user_ids)

    def group(self, group_id: str) -> dict[str, str] | None:
        with self._lock:
            g = self._group_by_id.get(group_id)
            return None if g is None else self._group_json(g)

    def _group_json(self, g: int) -> dict[str, str]:
        return {"id": self._groups[g].id, "displayName": self._groups[g].display_name}

    def groups(self) -> list[dict[str, str]]:
        with self._lock:
            return [self._group_json(g) for g in range(len(self._groups))]

    def groups_named(self, name: str) -> list[dict[str, str]]:
        """Every group whose display name is ``name``, case-insensitively (as Graph matches)."""
        folded = name.casefold()
        with self._lock:
            return [
                self._group_json(g)
                for g, rec in enumerate(self._groups)
                if rec.display_name.casefold() == folded
            ]

    def group_members(self, group_id: str, skip: int, top: int) -> tuple[list[int], bool]:
        """Positions of members ``skip`` .. ``skip+top`` and whether more follow."""
        with self._lock:
            g = self._group_by_id.get(group_id)
            if g is None:
                raise _graph_not_found(group_id)
            members = self._groups[g].members
            return members[skip : skip + top].tolist(), skip + top < len(members)

    def member_of(self, user_ref: str) -> list[dict[str, str]]:
        with self._lock:
            pos = self.find_user(user_ref)
            if pos is None:
                raise _graph_not_found(user_ref)
            return [self._group_json(g) for g in self._groups_of(pos)]

    # ------------------------------------------------------------------ policies

    def _policy(self, identity: str) -> dict[str, Any]:
        policy = self._policies.get(bare(identity).casefold())
        if policy is None:
            raise ServiceError(
                404,
                "NotFound",
                f"Policy '{identity}' of type {MESSAGING} was not found. Check the Identity "
                "(Global or Tag:<name>).",
            )
        return policy

    def _exists(self, name: str) -> bool:
        return bare(name).casefold() in self._policies

    def policy_names(self) -> list[str]:
        with self._lock:
            return [bare(p["Identity"]) for p in self._policies.values()]

    def list_policies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [_policy_json(p) for p in self._policies.values()]

    def get_policy(self, identity: str) -> dict[str, Any]:
        with self._lock:
            return _policy_json(self._policy(identity))

    def _validated(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The settings of a write, values in the service's casing; 400 for anything unknown."""
        out: dict[str, Any] = {}
        for name, value in body.items():
            if name in ENVELOPE_FIELDS:
                continue
            kind = self.schema.get(name)
            if kind is None:
                raise ServiceError(
                    400,
                    "BadRequest",
                    f"The property '{name}' does not exist on policy type {MESSAGING}.",
                )
            if kind == "bool" and not isinstance(value, bool):
                raise ServiceError(
                    400,
                    "BadRequest",
                    f"Cannot convert value {json.dumps(value)} of property '{name}' to "
                    "System.Boolean.",
                )
            if kind == "enum":
                allowed = ENUM_VALUES[name]
                match = [
                    a
                    for a in allowed
                    if isinstance(value, str) and a.casefold() == value.casefold()
                ]
                if not match:
                    raise ServiceError(
                        400,
                        "BadRequest",
                        f"Cannot convert value {json.dumps(value)} of property '{name}'. "
                        f"Allowed values: {', '.join(allowed)}.",
                    )
                value = match[0]
            if kind == "string" and value is not None and not isinstance(value, str):
                raise ServiceError(
                    400, "BadRequest", f"The property '{name}' takes a string or null."
                )
            out[name] = value
        return out

    def create_policy(self, body: Mapping[str, Any]) -> dict[str, Any]:
        identity = body.get("Identity")
        if not isinstance(identity, str) or not bare(identity).strip():
            raise ServiceError(400, "BadRequest", "The body needs an 'Identity' (Tag:<name>).")
        name = bare(identity)
        settings = self._validated(body)
        with self._lock:
            if self._exists(name):
                raise ServiceError(
                    409,
                    "PolicyAlreadyExists",
                    f"A policy of type {MESSAGING} with Identity '{wire_identity(name)}' "
                    "already exists.",
                )
            policy = {"Identity": wire_identity(name), **self._new_policy_defaults, **settings}
            self._policies[name.casefold()] = policy
            return _policy_json(policy)

    def update_policy(self, identity: str, body: Mapping[str, Any]) -> dict[str, Any]:
        settings = self._validated(body)
        with self._lock:
            policy = self._policy(identity)
            policy.update(settings)
            return _policy_json(policy)

    def delete_policy(self, identity: str) -> None:
        with self._lock:
            policy = self._policy(identity)
            name = bare(policy["Identity"])
            if name == "Global":
                # Global cannot be removed; removing it resets it.
                policy.clear()
                policy.update({"Identity": "Global", **self._global_defaults})
                return
            in_use = [
                a.group_id for a in self._ga_written.get(MESSAGING, []) if a.policy_name == name
            ]
            if in_use:
                raise ServiceError(
                    409,
                    "PolicyInUse",
                    f"Policy '{wire_identity(name)}' is assigned to {len(in_use)} group(s) "
                    f"({', '.join(in_use)}). Remove the group policy assignments first.",
                )
            del self._policies[name.casefold()]
            # Users who had it directly fall back to their groups or Global.
            holders = [pos for pos, p in self._direct_written.items() if p == name]
            for pos in holders:
                self._set_direct(pos, None)

    def policy_id(self, name: str) -> str:
        """The stable GUID Graph uses for a policy instance."""
        return str(uuid.uuid5(uuid.UUID(self.tenant_id), f"{MESSAGING}:{bare(name).casefold()}"))

    def policies_by_id(self) -> dict[str, str]:
        """Policy names by their Graph policy id."""
        with self._lock:
            return {self.policy_id(name): name for name in self.policy_names()}

    # ------------------------------------------------------------------ propagation

    def _later(self, apply: Callable[[], None]) -> None:
        """Run ``apply`` on the read-side state now, or after the propagation delay."""
        if self.propagation_delay <= 0 and not self._pending:
            apply()
        else:
            self._pending.append((self.clock() + self.propagation_delay, apply))

    def settle(self) -> None:
        """Let due writes show on reads (in the order they were made)."""
        with self._lock:
            now = self.clock()
            while self._pending and self._pending[0][0] <= now:
                self._pending.popleft()[1]()

    # ------------------------------------------------------------------ group assignments

    def list_group_assignments(self) -> list[dict[str, Any]]:
        self.settle()
        with self._lock:
            return [
                {
                    "GroupId": a.group_id,
                    "PolicyType": ptype,
                    "PolicyName": a.policy_name,
                    "Rank": rank,
                    "Priority": rank,
                    "CreatedTime": a.created_time,
                    "CreatedBy": a.created_by,
                }
                for ptype, records in self._ga_visible.items()
                for rank, a in enumerate(records, 1)
            ]

    def add_group_assignment(
        self, group_id: str, policy_type: str, policy_name: Any, rank: Any = None
    ) -> None:
        if not isinstance(policy_name, str) or not policy_name:
            raise ServiceError(400, "BadRequest", "The body needs a 'PolicyName'.")
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
            raise ServiceError(
                400, "BadRequest", f"Rank must be a whole number >= 1, not {rank!r}."
            )
        with self._lock:
            if group_id not in self._group_by_id:
                raise ServiceError(404, "NotFound", f"Group '{group_id}' was not found.")
            name = bare(policy_name)
            if policy_type == MESSAGING:
                name = bare(self._policy(policy_name)["Identity"])
            written = self._ga_written.setdefault(policy_type, [])
            if any(a.group_id == group_id for a in written):
                raise ServiceError(
                    409,
                    "Conflict",
                    f"Group '{group_id}' already has a {policy_type} assignment. Remove it "
                    "before assigning another policy or rank.",
                )
            if len(written) >= MAX_GROUP_ASSIGNMENTS:
                raise ServiceError(
                    400,
                    "BadRequest",
                    f"A policy type can be assigned to at most {MAX_GROUP_ASSIGNMENTS} groups; "
                    f"{policy_type} already is.",
                )
            record = GroupAssignmentRecord(group_id, name, _now_iso(), self.app_id)
            index = len(written) if rank is None else min(rank - 1, len(written))
            written.insert(index, record)
            self._later(
                lambda: self._ga_visible.setdefault(policy_type, []).insert(
                    min(index, len(self._ga_visible.get(policy_type, []))), record
                )
            )

    def remove_group_assignment(self, group_id: str, policy_type: str) -> None:
        with self._lock:
            written = self._ga_written.get(policy_type, [])
            match = [a for a in written if a.group_id == group_id]
            if not match:
                raise ServiceError(
                    404, "NotFound", f"Group '{group_id}' has no {policy_type} assignment."
                )
            written.remove(match[0])

            def apply() -> None:
                visible = self._ga_visible.get(policy_type, [])
                self._ga_visible[policy_type] = [a for a in visible if a.group_id != group_id]

            self._later(apply)

    # ------------------------------------------------------------------ direct assignments

    def _set_direct(self, pos: int, name: str | None) -> None:
        def apply() -> None:
            if name is None:
                self._direct_visible.pop(pos, None)
            else:
                self._direct_visible[pos] = name

        if name is None:
            self._direct_written.pop(pos, None)
        else:
            self._direct_written[pos] = name
        self._later(apply)

    def grant(self, user_ref: str, policy_name: str | None) -> None:
        """A direct assignment (``None`` removes it); ``user_ref`` is an object id or UPN."""
        with self._lock:
            pos = self._user_pos(user_ref)
            name = None if policy_name is None else bare(self._policy(policy_name)["Identity"])
            self._set_direct(pos, name)

    def assign_by_ids(self, entries: list[tuple[str, str | None]]) -> None:
        """Graph's bulk assign/unassign: all entries valid, or nothing happens (the first bad
        user or policy id is named)."""
        with self._lock:
            by_id = self.policies_by_id()
            resolved: list[tuple[int, str | None]] = []
            for user_id, policy_id in entries:
                pos = self._user_by_id.get(user_id)
                if pos is None:
                    raise ServiceError(
                        400,
                        "BadRequest",
                        f"userId '{user_id}' is not a user of this tenant (use object ids).",
                    )
                name = None
                if policy_id is not None:
                    name = by_id.get(policy_id)
                    if name is None:
                        raise ServiceError(
                            400,
                            "BadRequest",
                            f"policyId '{policy_id}' for userId '{user_id}' is not a "
                            f"{MESSAGING} of this tenant.",
                        )
                resolved.append((pos, name))
            for pos, name in resolved:
                self._set_direct(pos, name)

    def direct_assignments(self) -> dict[str, str]:
        """Visible direct assignments by user id."""
        self.settle()
        with self._lock:
            return {self.user_ids[pos]: name for pos, name in self._direct_visible.items()}

    def users_page(
        self, skip: int, top: int, attributes: Collection[str] = ()
    ) -> tuple[list[dict[str, Any]], bool]:
        """Get-CsOnlineUser's view of users ``skip`` .. ``skip+top``, and whether more follow
        (``attributes``: with the Graph user properties roles read, under Graph's names)."""
        self.settle()
        with self._lock:
            end = min(skip + top, len(self.user_ids))
            names = self.department_names
            page = [
                {
                    "Identity": self.user_ids[pos],
                    "UserPrincipalName": self.upns[pos],
                    "DisplayName": self.display_names[pos],
                    "Department": names[self.departments[pos]],
                    "TeamsMessagingPolicy": self._direct_visible.get(pos),
                }
                for pos in range(skip, end)
            ]
            if attributes:
                for pos, row in zip(range(skip, end), page, strict=True):
                    row.update(self.user_attributes(pos, attributes))
            return page, end < len(self.user_ids)

    # ------------------------------------------------------------------ effective policy

    def effective_policy(self, user_ref: str) -> tuple[str, str, str | None]:
        """``(policy name, "direct" | "group" | "default", group id)`` as reads show it:
        direct wins, then the best-ranked group the user is a direct member of, then Global."""
        self.settle()
        with self._lock:
            pos = self.find_user(user_ref)
            if pos is None:
                raise _graph_not_found(user_ref)
            direct = self._direct_visible.get(pos)
            if direct is not None:
                return direct, "direct", None
            mine = {self._groups[g].id for g in self._groups_of(pos)}
            for a in self._ga_visible.get(MESSAGING, []):
                if a.group_id in mine:
                    return a.policy_name, "group", a.group_id
            return "Global", "default", None

    # ------------------------------------------------------------------ whole state

    def digest(self) -> str:
        """A SHA-256 over everything (for "same seed, same tenant" checks)."""
        self.settle()
        with self._lock:
            h = hashlib.sha256()
            h.update(json.dumps(list(self._policies.values()), sort_keys=True).encode())
            for pos in range(len(self.user_ids)):
                h.update(
                    f"{self.user_ids[pos]}|{self.upns[pos]}|{self.display_names[pos]}|"
                    f"{self.departments[pos]}|{self._groups_of(pos)}\n".encode()
                )
            for g in self._groups:
                h.update(f"{g.id}|{g.display_name}|{len(g.members)}\n".encode())
            for ptype, records in sorted(self._ga_visible.items()):
                for a in records:
                    h.update(f"{ptype}|{a.group_id}|{a.policy_name}\n".encode())
            h.update(json.dumps(sorted(self._direct_visible.items())).encode())
            h.update(self.job_titles.tobytes() + self.user_flags.tobytes())
            h.update(json.dumps(sorted(self._attribute_overrides.items())).encode())
            return h.hexdigest()


def _clinical(t: Tenant, pos: int) -> bool:
    return t._department(pos) in CLINICAL_DEPARTMENTS


# Every user property the sandbox derives (Graph names, dotted for nested ones): from the job
# title and flags set at seeding, the department and the position.
_PROPERTY_VALUES: dict[str, Callable[[Tenant, int], Any]] = {
    "jobTitle": lambda t, pos: t.job_title_names[t.job_titles[pos]] if t.job_title_names else None,
    "employeeType": lambda t, pos: (
        "Contractor" if t.user_flags[pos] & USER_CONTRACTOR else "Employee"
    ),
    "companyName": lambda t, pos: t.display_name,
    "officeLocation": lambda t, pos: "Main Campus" if pos % 5 else "North Clinic",
    "city": lambda t, pos: "Seattle",
    "state": lambda t, pos: "WA",
    "country": lambda t, pos: "United States",
    "usageLocation": lambda t, pos: "US",
    "userType": lambda t, pos: "Guest" if t.user_flags[pos] & USER_GUEST else "Member",
    "accountEnabled": lambda t, pos: not t.user_flags[pos] & USER_DISABLED,
    "employeeOrgData.division": lambda t, pos: (
        "Clinical Services" if _clinical(t, pos) else "Operations"
    ),
    "employeeOrgData.costCenter": lambda t, pos: f"CC-{t.departments[pos] + 100}",
    "onPremisesExtensionAttributes.extensionAttribute1": lambda t, pos: f"NW{pos + 1:06d}",
    "onPremisesExtensionAttributes.extensionAttribute2": lambda t, pos: (
        "Clinical" if _clinical(t, pos) else "Non-clinical"
    ),
}


def _policy_json(policy: Mapping[str, Any]) -> dict[str, Any]:
    identity = policy["Identity"]
    scope = "Global" if identity == "Global" else "Tag"
    return {
        **policy,
        "Key": {
            "ScopeClass": scope,
            "SchemaId": {"XName": {"name": MESSAGING}},
            "AuthorityId": {"Class": "Host", "InstanceId": "00000000-0000-0000-0000-000000000000"},
            "DefaultXml": None,
            "XmlRoot": {"name": MESSAGING},
        },
        "ConfigMetadata": {"Authority": "Host"},
        "ConfigId": identity,
    }


def _graph_not_found(ref: str) -> ServiceError:
    return ServiceError(
        404,
        "Request_ResourceNotFound",
        f"Resource '{ref}' does not exist or one of its queried reference-property objects "
        "are not present.",
    )
