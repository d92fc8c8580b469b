"""Small builders for tenant and desired states used across tests."""

from __future__ import annotations

from typing import Any

from bridge.state import (
    DesiredGroupAssignment,
    DesiredPolicy,
    DesiredState,
    DesiredUserAssignment,
    Directory,
    Group,
    GroupAssignment,
    Policy,
    Prune,
    TenantState,
    User,
    UserAssignment,
    policy_key,
)

TENANT = "3f1c2b7e-8a4d-4e6f-9b21-5d7c0a9e4b12"


def gid(n: int) -> str:
    return f"00000000-0000-0000-0000-{n:012d}"


def uid(n: int) -> str:
    return f"11111111-0000-0000-0000-{n:012d}"


def tenant(
    policies: dict[str, dict[str, Any]] | None = None,
    groups: list[tuple[int, str]] | None = None,  # (group number, policy) in rank order
    users: dict[int, str] | None = None,  # user number -> policy
    n_users: int = 10,
    n_groups: int = 10,
    members: dict[int, list[int]] | None = None,
    attributes: dict[int, dict[str, Any]] | None = None,  # user number -> role attributes
) -> TenantState:
    """``attributes``: when given, every user's attributes were read (a user not in it has
    none set)."""
    directory = Directory()
    for i in range(n_users):
        attrs = None if attributes is None else dict(attributes.get(i, {}))
        department = attrs.get("department") if attrs else None
        directory.add_user(User(uid(i), f"user{i}@northwind-health.org", None, department, attrs))
    for i in range(n_groups):
        mem = tuple(uid(m) for m in (members or {}).get(i, []))
        directory.add_group(Group(gid(i), f"Group {i}", mem if members is not None else None))
    pols = [Policy("Global", {"AllowGiphy": True, "ReadReceiptsEnabledType": "UserPreference"})]
    for name, settings in (policies or {}).items():
        if policy_key(name) == "global":
            pols[0] = Policy("Global", settings)
        else:
            pols.append(Policy(name, settings))
    ga = [GroupAssignment(gid(g), p, i + 1, f"Group {g}") for i, (g, p) in enumerate(groups or [])]
    ua = [
        UserAssignment(uid(u), p, f"user{u}@northwind-health.org") for u, p in (users or {}).items()
    ]
    return TenantState.build(TENANT, pols, ga, ua, directory)


def desired(
    policies: dict[str, dict[str, Any] | None] | None = None,
    groups: list[tuple[str, str, int]] | None = None,  # (group ref, policy, rank)
    users: list[tuple[str, str | None]] | None = None,
    prune: Prune | None = None,
) -> DesiredState:
    state = DesiredState(prune=prune or Prune())
    for name, settings in (policies or {}).items():
        if settings is None:
            state.policies[policy_key(name)] = DesiredPolicy(name, {}, absent=True)
        else:
            state.policies[policy_key(name)] = DesiredPolicy(name, settings)
    state.group_assignments = [DesiredGroupAssignment(g, p, r) for g, p, r in groups or []]
    state.user_assignments = [DesiredUserAssignment(u, p, absent=p is None) for u, p in users or []]
    return state
