"""Test helpers around the fake ``pwsh`` (``fake_pwsh.py``): install it first on PATH, seed its
tenant from a ``TenantState``, and read back what it recorded."""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.backends.snapshot import snapshot_to_state, state_to_snapshot
from bridge.state import TenantState

SCRIPT = Path(__file__).with_name("fake_pwsh.py")


@dataclass
class FakePwsh:
    bin_dir: Path
    state_path: Path

    @classmethod
    def install(cls, root: Path) -> FakePwsh:
        """Write ``root/bin/pwsh``: a wrapper running the fake with this test run's Python."""
        bin_dir = root / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        exe = bin_dir / "pwsh"
        exe.write_text(
            f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(SCRIPT))} "$@"\n',
            encoding="utf-8",
        )
        exe.chmod(0o755)
        return cls(bin_dir, root / "fake-pwsh-state.json")

    def env(self) -> dict[str, str]:
        """PATH with the fake first, and the state file: for ``monkeypatch.setenv``."""
        return {
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "FAKE_PWSH_STATE": str(self.state_path),
        }

    def seed(self, state: TenantState) -> None:
        """The fake's tenant becomes ``state`` (its directory holds every user and group the
        tenant has)."""
        self.state_path.write_text(json.dumps(state_to_snapshot(state, "test")), "utf-8")

    @property
    def data(self) -> dict[str, Any]:
        return json.loads(self.state_path.read_text(encoding="utf-8"))

    def tenant(self) -> TenantState:
        return snapshot_to_state(self.data, str(self.state_path))

    @property
    def record(self) -> dict[str, Any]:
        return self.data.get("_fake", {})

    def calls(self, cmdlet: str | None = None) -> list[dict[str, Any]]:
        return [c for c in self.record.get("calls", []) if cmdlet in (None, c["cmdlet"])]


# --------------------------------------------------------------------------- a small tenant

TENANT_ID = "6b1c1d39-8a6f-4d47-9d2e-3c1f0a1b2c3d"
_OBSERVED = (
    Path(__file__).resolve().parents[2]
    / "bridge"
    / "sandbox"
    / "data"
    / "observed-builtin-policies.json"
)
_KEY = {
    "ScopeClass": "Tag",
    "SchemaId": {"XName": {"name": "TeamsMessagingPolicy"}},
    "AuthorityId": {"Class": "Host", "InstanceId": "00000000-0000-0000-0000-000000000000"},
    "DefaultXml": None,
    "XmlRoot": {"name": "TeamsMessagingPolicy"},
}


def _gid(n: int) -> str:
    return f"0000000{n}-aaaa-4bbb-8ccc-{n:012d}"


def _uid(n: int) -> str:
    return f"{n:08d}-1111-4222-8333-444455556666"


def hospital(users: int = 30) -> TenantState:
    """A small hospital tenant: the four built-in policies, Clinical and Kitchen, six groups (two
    named Volunteers), ``users`` users spread over the groups, two group assignments and three
    direct assignments."""
    from bridge.backends.snapshot import policy_from_service
    from bridge.state import Directory, Group, GroupAssignment, User, UserAssignment

    observed = json.loads(_OBSERVED.read_text(encoding="utf-8"))["policies"]
    global_ = next(p for p in observed if p["Identity"] == "Global")
    defaults = {k: v for k, v in global_.items() if k != "Identity"}
    custom = [
        {
            "Identity": "Tag:Clinical",
            **defaults,
            "Description": "Doctors and nurses",
            "ReadReceiptsEnabledType": "Everyone",
            "AllowPriorityMessages": True,
        },
        {
            "Identity": "Tag:Kitchen",
            **defaults,
            "Description": None,
            "AllowGiphy": False,
            "AllowPriorityMessages": False,
            "GiphyRatingType": "Strict",
        },
    ]
    for p in custom:
        p.update(Key=_KEY, ConfigMetadata={"Authority": "Host"}, ConfigId=p["Identity"])
    policies = [policy_from_service(p) for p in [*observed, *custom]]

    names = ["Physicians", "Nursing", "Kitchen", "Facilities", "Volunteers", "Volunteers"]
    directory = Directory()
    people = [
        User(_uid(i), f"user{i:03d}@northwind-health.org", f"User {i}", names[i % 4])
        for i in range(1, users + 1)
    ]
    for u in people:
        directory.add_user(u)
    for n, name in enumerate(names, start=1):
        members = tuple(u.id for i, u in enumerate(people) if i % len(names) == n - 1)
        directory.add_group(Group(_gid(n), name, members))
    groups = [
        GroupAssignment(_gid(1), "Clinical", 1, "Physicians"),
        GroupAssignment(_gid(3), "Kitchen", 2, "Kitchen"),
    ]
    direct = [UserAssignment(people[i].id, "Clinical", people[i].upn) for i in (0, 1, 2)]
    return TenantState.build(TENANT_ID, policies, groups, direct, directory)


class FakeGraph:
    """``GroupDirectory`` over a tenant's directory, for tests without a Graph server."""

    def __init__(self, state: TenantState):
        self.directory = state.directory
        self.lookups: list[list[str]] = []
        self.listings = 0  # list_users calls

    def resolve_groups(self, refs: Any) -> dict[str, list[Any]]:
        refs = list(dict.fromkeys(refs))
        self.lookups.append(refs)
        return {r: self.directory.groups_by_ref(r) for r in refs}

    def list_users(self) -> list[Any]:
        self.listings += 1
        return list(self.directory.users.values())

    def member_of(self, user_id: str) -> list[Any]:
        return [g for g in self.directory.groups.values() if user_id in (g.members or ())]
