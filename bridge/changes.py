"""The change kinds: one change to the tenant each, which describes itself (its words, its
symbol, its JSON form and back, its place in the order, what it does to a tenant). ``plan``
re-exports them, as they were defined there first."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from .errors import PlanError
from .safety import Simulation
from .state import GroupAssignment, Policy, UserAssignment, is_global, policy_key

REGENERATE = "the plan file was edited or damaged; make it again with 'plan --out'"
_REGENERATE = REGENERATE


@dataclass(frozen=True)
class Change(ABC):
    """One change to the tenant, which describes itself: ``data()`` is its stable JSON form
    (plans, journal) and ``from_data`` reads it back; ``symbol`` is Terraform's ``+`` create, ``~``
    update in place, ``-`` destroy; ``describe()`` says it in a few words; ``order`` is its
    place in the order apply runs; ``scope`` what it changes (a policy, a group's assignment or
    a user's direct one) and ``subject`` which (policy name, group id, user id)."""

    kind: ClassVar[str]
    order: ClassVar[int]
    scope: ClassVar[str]  # "policy", "group" or "user"

    @property
    @abstractmethod
    def symbol(self) -> str: ...

    @property
    @abstractmethod
    def subject(self) -> str: ...

    @property
    @abstractmethod
    def target(self) -> str: ...

    @abstractmethod
    def describe(self) -> str:
        """The change in a few words, for messages: ``create policy Clinical``."""

    @abstractmethod
    def data(self) -> dict[str, Any]: ...

    @classmethod
    @abstractmethod
    def from_data(cls, d: Mapping[str, Any]) -> Change:
        """The change ``data()`` wrote (may raise KeyError, TypeError, ValueError: see
        ``change_from_data``)."""

    @abstractmethod
    def simulate(self, sim: Simulation) -> None:
        """Apply this change to ``sim`` as the service would."""

    def settings_set(self) -> Mapping[str, Any] | None:
        """The settings a policy change sets (name -> new value); None for assignments."""
        return None

    def replaces(self) -> tuple[str, str] | None:
        """(old policy, new policy) of a group assignment this change replaces, or None."""
        return None


@dataclass(frozen=True)
class CreatePolicy(Change):
    kind = "create_policy"
    order = 0
    scope = "policy"
    name: str
    settings: Mapping[str, Any]

    @property
    def symbol(self) -> str:
        return "+"

    @property
    def subject(self) -> str:
        return self.name

    @property
    def target(self) -> str:
        return f"policy {self.name}"

    def describe(self) -> str:
        return f"create policy {self.name}"

    def data(self) -> dict[str, Any]:
        return {"kind": self.kind, "policy": self.name, "settings": dict(self.settings)}

    @classmethod
    def from_data(cls, d: Mapping[str, Any]) -> CreatePolicy:
        return cls(d["policy"], dict(d["settings"]))

    def simulate(self, sim: Simulation) -> None:
        sim.policies[policy_key(self.name)] = Policy(self.name, dict(self.settings))

    def settings_set(self) -> Mapping[str, Any]:
        return dict(self.settings)


@dataclass(frozen=True)
class UpdatePolicy(Change):
    kind = "update_policy"
    order = 0
    scope = "policy"
    name: str
    # setting -> (current, desired); only settings that differ
    changes: Mapping[str, tuple[Any, Any]]

    @property
    def symbol(self) -> str:
        return "~"

    @property
    def subject(self) -> str:
        return self.name

    @property
    def target(self) -> str:
        return f"policy {self.name}"

    def describe(self) -> str:
        return f"update policy {self.name}"

    def data(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "policy": self.name,
            "changes": {k: {"from": a, "to": b} for k, (a, b) in self.changes.items()},
        }

    @classmethod
    def from_data(cls, d: Mapping[str, Any]) -> UpdatePolicy:
        return cls(d["policy"], {k: (v["from"], v["to"]) for k, v in d["changes"].items()})

    def simulate(self, sim: Simulation) -> None:
        old = sim.policies.get(policy_key(self.name))
        settings = dict(old.settings) if old else {}
        settings.update(self.settings_set())
        sim.policies[policy_key(self.name)] = Policy(old.name if old else self.name, settings)

    def settings_set(self) -> Mapping[str, Any]:
        return {k: v for k, (_, v) in self.changes.items()}


@dataclass(frozen=True)
class SetGroupAssignment(Change):
    """Create a group assignment, or replace one (the service has no update: remove then add)."""

    kind = "set_group_assignment"
    order = 1
    scope = "group"
    group_id: str
    group_name: str | None
    policy: str
    rank: int  # the rank to send; the service renumbers the others around it
    existing: GroupAssignment | None = None

    @property
    def symbol(self) -> str:
        return "~" if self.existing else "+"

    @property
    def subject(self) -> str:
        return self.group_id

    @property
    def target(self) -> str:
        return f"group {self.group_name or self.group_id}"

    def describe(self) -> str:
        return f"assign {self.target} to {self.policy} (rank {self.rank})"

    def data(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "group_id": self.group_id,
            "group": self.group_name,
            "policy": self.policy,
            "rank": self.rank,
        }
        if self.existing:
            out["from"] = {"policy": self.existing.policy, "rank": self.existing.rank}
        return out

    @classmethod
    def from_data(cls, d: Mapping[str, Any]) -> SetGroupAssignment:
        frm = d.get("from")
        existing = (
            GroupAssignment(d["group_id"], frm["policy"], frm["rank"], d.get("group"))
            if frm
            else None
        )
        return cls(d["group_id"], d.get("group"), d["policy"], int(d["rank"]), existing)

    def replaces(self) -> tuple[str, str] | None:
        return (self.existing.policy, self.policy) if self.existing else None

    def simulate(self, sim: Simulation) -> None:
        if self.group_id in sim.order:
            sim.order.remove(self.group_id)
        sim.order.insert(min(self.rank - 1, len(sim.order)), self.group_id)
        sim.groups[self.group_id] = GroupAssignment(self.group_id, self.policy, 0, self.group_name)


@dataclass(frozen=True)
class SetUserAssignment(Change):
    kind = "set_user_assignment"
    order = 2
    scope = "user"
    user_id: str
    upn: str | None
    policy: str
    existing_policy: str | None = None

    @property
    def symbol(self) -> str:
        return "~" if self.existing_policy else "+"

    @property
    def subject(self) -> str:
        return self.user_id

    @property
    def target(self) -> str:
        return f"user {self.upn or self.user_id}"

    def describe(self) -> str:
        return f"assign {self.target} to {self.policy}"

    def data(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "user_id": self.user_id,
            "user": self.upn,
            "policy": self.policy,
            "from": self.existing_policy,
        }

    @classmethod
    def from_data(cls, d: Mapping[str, Any]) -> SetUserAssignment:
        return cls(d["user_id"], d.get("user"), d["policy"], d.get("from"))

    def simulate(self, sim: Simulation) -> None:
        sim.users[self.user_id] = UserAssignment(self.user_id, self.policy, self.upn)


@dataclass(frozen=True)
class RemoveUserAssignment(Change):
    kind = "remove_user_assignment"
    order = 3
    scope = "user"
    user_id: str
    upn: str | None
    policy: str

    @property
    def symbol(self) -> str:
        return "-"

    @property
    def subject(self) -> str:
        return self.user_id

    @property
    def target(self) -> str:
        return f"user {self.upn or self.user_id}"

    def describe(self) -> str:
        return f"unassign {self.target} from {self.policy}"

    def data(self) -> dict[str, Any]:
        return {"kind": self.kind, "user_id": self.user_id, "user": self.upn, "from": self.policy}

    @classmethod
    def from_data(cls, d: Mapping[str, Any]) -> RemoveUserAssignment:
        return cls(d["user_id"], d.get("user"), d["from"])

    def simulate(self, sim: Simulation) -> None:
        sim.users.pop(self.user_id, None)


@dataclass(frozen=True)
class RemoveGroupAssignment(Change):
    kind = "remove_group_assignment"
    order = 4
    scope = "group"
    group_id: str
    group_name: str | None
    policy: str
    rank: int

    @property
    def symbol(self) -> str:
        return "-"

    @property
    def subject(self) -> str:
        return self.group_id

    @property
    def target(self) -> str:
        return f"group {self.group_name or self.group_id}"

    def describe(self) -> str:
        return f"unassign {self.target} from {self.policy}"

    def data(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "group_id": self.group_id,
            "group": self.group_name,
            "from": {"policy": self.policy, "rank": self.rank},
        }

    @classmethod
    def from_data(cls, d: Mapping[str, Any]) -> RemoveGroupAssignment:
        frm = d["from"]
        return cls(d["group_id"], d.get("group"), frm["policy"], frm["rank"])

    def simulate(self, sim: Simulation) -> None:
        if self.group_id in sim.order:
            sim.order.remove(self.group_id)
        sim.groups.pop(self.group_id, None)


@dataclass(frozen=True)
class DeletePolicy(Change):
    kind = "delete_policy"
    order = 5
    scope = "policy"
    name: str

    @property
    def symbol(self) -> str:
        return "-"

    @property
    def subject(self) -> str:
        return self.name

    @property
    def target(self) -> str:
        return f"policy {self.name}"

    def describe(self) -> str:
        return f"delete policy {self.name}"

    def data(self) -> dict[str, Any]:
        return {"kind": self.kind, "policy": self.name}

    @classmethod
    def from_data(cls, d: Mapping[str, Any]) -> DeletePolicy:
        if is_global(d["policy"]):
            raise PlanError(
                "the saved plan deletes the Global policy, which teams-bridge never "
                "plans: it was edited by hand; run plan again"
            )
        return cls(d["policy"])

    def simulate(self, sim: Simulation) -> None:
        sim.policies.pop(policy_key(self.name), None)


CHANGE_KINDS: dict[str, type[Change]] = {
    c.kind: c
    for c in (
        CreatePolicy,
        UpdatePolicy,
        SetGroupAssignment,
        SetUserAssignment,
        RemoveUserAssignment,
        RemoveGroupAssignment,
        DeletePolicy,
    )
}


def change_from_data(d: Mapping[str, Any]) -> Change:
    """Rebuild a change from its ``data()`` (a saved plan). A change that is not as ``data()``
    writes it (a missing key, a wrong type) is a ``PlanError``, never a KeyError/TypeError."""
    if not isinstance(d, Mapping):
        raise PlanError(f"a change in the saved plan is not an object: {_REGENERATE}")
    try:
        change = _change_from_data(d)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise PlanError(
            f"a {d.get('kind')!r} change in the saved plan is not as plan writes it ({what}): "
            f"{_REGENERATE}"
        ) from None
    for f in dataclasses.fields(change):
        value = getattr(change, f.name)
        wanted = _FIELD_TYPES.get(str(f.type))
        if wanted is not None and (not isinstance(value, wanted) or isinstance(value, bool)):
            raise PlanError(
                f"a {d.get('kind')!r} change in the saved plan has {f.name} {value!r} of the "
                f"wrong type: {_REGENERATE}"
            )
    return change


# Field annotations (text, under ``from __future__ import annotations``) -> the types allowed.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "str | None": (str, type(None)),
    "int": (int,),
    "Mapping[str, Any]": (Mapping,),
    "Mapping[str, tuple[Any, Any]]": (Mapping,),
}


def _change_from_data(d: Mapping[str, Any]) -> Change:
    kind = d.get("kind")
    cls = CHANGE_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise PlanError(f"unknown change kind {kind!r} in saved plan")
    return cls.from_data(d)
