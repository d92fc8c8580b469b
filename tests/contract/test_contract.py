"""The Backend contract: every case runs against both transports (``backend`` ids ``rest`` and
``powershell``), which start from the same sandbox tenant. A transport passes when it behaves
exactly like the other: same names, same casing, same renumbering, same exception types."""

from __future__ import annotations

import pytest

from bridge.apply import apply_plan
from bridge.backends.base import Backend, Wanted
from bridge.errors import ConflictError, NotFoundError
from bridge.plan import diff, state_checksum
from bridge.state import (
    DesiredGroupAssignment,
    DesiredPolicy,
    DesiredState,
    DesiredUserAssignment,
    Prune,
    TenantState,
    policy_key,
)

QUOTED = 'Ward 7 "quotes" and $(Get-Date); `whoami`'


def _unassigned_groups(state: TenantState) -> list[str]:
    return sorted(g for g in state.directory.groups if g not in state.group_assignments)


def _unassigned_users(state: TenantState, n: int) -> list[str]:
    return sorted(u for u in state.directory.users if u not in state.user_assignments)[:n]


@pytest.mark.wire("read")
def test_read_gives_bare_names_and_the_tenant_as_rest_reads_it(backend: Backend, initial, world):
    state = backend.read(world.wanted)

    assert state.tenant_id == initial.tenant_id == world.sandbox.tenant_id
    assert {p.name for p in state.policies.values()} == {p.name for p in initial.policies.values()}
    assert all(not p.name.lower().startswith("tag:") for p in state.policies.values())
    assert state.policy("global") is not None and state.policy("CLINICAL") is not None
    assert state_checksum(state) == state_checksum(initial)
    assert state.ranked_groups() == initial.ranked_groups()
    assert state.user_assignments == initial.user_assignments
    # Every user, not only those with a direct assignment (the safety limit counts them all).
    assert state.directory.users == initial.directory.users
    volunteers = state.directory.groups_by_ref("Volunteers")
    assert len(volunteers) == 2  # an ambiguous name keeps every match


@pytest.mark.wire("policy_writes")
def test_create_update_delete_policy_with_enum_casing_and_quoted_text(backend: Backend):
    backend.create_policy("Night Shift", {"Description": QUOTED, "GiphyRatingType": "STRICT"})
    backend.update_policy(
        "night shift", {"ReadReceiptsEnabledType": "everyone", "AllowPriorityMessages": True}
    )
    policy = backend.read().policy("Night Shift")
    assert policy is not None and policy.name == "Night Shift"
    assert policy.settings["Description"] == QUOTED
    assert policy.settings["GiphyRatingType"] == "Strict"
    assert policy.settings["ReadReceiptsEnabledType"] == "Everyone"
    assert policy.settings["AllowPriorityMessages"] is True

    backend.delete_policy("NIGHT SHIFT")
    assert backend.read().policy("Night Shift") is None


@pytest.mark.wire("groups")
def test_group_assignment_insert_and_remove_renumber(backend: Backend, initial, world):
    before = [g.group_id for g in initial.ranked_groups()]
    new = _unassigned_groups(initial)[0]
    backend.add_group_assignment(new, "Kitchen", 2)
    state = backend.read(world.wanted)
    assert [g.group_id for g in state.ranked_groups()] == [before[0], new, *before[1:]]
    assert [g.rank for g in state.ranked_groups()] == list(range(1, len(before) + 2))
    assert state.group_assignments[new].policy == "Kitchen"

    backend.remove_group_assignment(before[0])
    state = backend.read(world.wanted)
    assert [(g.group_id, g.rank) for g in state.ranked_groups()] == [
        (gid, i) for i, gid in enumerate([new, *before[1:]], start=1)
    ]


@pytest.mark.wire("users")
def test_grant_and_remove_direct_assignments(backend: Backend, initial):
    users = _unassigned_users(initial, 3)
    result = backend.assign_users([(u, "Kitchen") for u in users])
    assert (result.requested, result.succeeded, result.failures) == (3, 3, [])
    assert {u: backend.read().user_assignments[u].policy for u in users} == dict.fromkeys(
        users, "Kitchen"
    )

    result = backend.unassign_users(users[:2])
    assert result.succeeded == 2
    after = backend.read().user_assignments
    assert users[0] not in after and users[1] not in after and users[2] in after


def test_bulk_assign(backend: Backend, initial):
    users = _unassigned_users(initial, 150)
    result = backend.assign_users([(u, "Support Staff") for u in users])
    assert (result.requested, result.succeeded, result.failures) == (150, 150, [])
    assert result.write_requests >= 1
    direct = backend.read().user_assignments
    assert all(direct[u].policy == "Support Staff" for u in users)


def test_not_found_and_conflict_map_to_the_same_types(backend: Backend, initial):
    with pytest.raises(NotFoundError):
        backend.update_policy("No Such Policy", {"AllowGiphy": False})
    with pytest.raises(NotFoundError):
        backend.delete_policy("No Such Policy")
    with pytest.raises(ConflictError):
        backend.create_policy("clinical", {"AllowGiphy": False})
    in_use = initial.ranked_groups()[0]
    with pytest.raises(ConflictError):
        backend.delete_policy(in_use.policy)
    with pytest.raises(ConflictError):
        backend.add_group_assignment(in_use.group_id, "Kitchen", 1)
    with pytest.raises(NotFoundError):
        backend.remove_group_assignment(_unassigned_groups(initial)[0])


def _desired(initial: TenantState) -> DesiredState:
    spare = _unassigned_groups(initial)[0]
    users = _unassigned_users(initial, 2)
    assigned = sorted(initial.user_assignments.values(), key=lambda a: a.user_id)[0]
    first = initial.ranked_groups()[0]
    return DesiredState(
        policies={
            policy_key(p.name): p
            for p in [
                DesiredPolicy(
                    "Global", {"AllowPriorityMessages": True, "ReadReceiptsEnabledType": "Everyone"}
                ),
                DesiredPolicy(
                    "Night Shift",
                    {"Description": QUOTED, "AllowGiphy": False, "GiphyRatingType": "Strict"},
                ),
                DesiredPolicy("Kitchen", {"AllowGiphy": True}),
            ]
        },
        group_assignments=[
            DesiredGroupAssignment(spare, "Night Shift", 1),
            DesiredGroupAssignment(first.group_id, first.policy, 2),
        ],
        user_assignments=[
            *[DesiredUserAssignment(initial.directory.users[u].upn, "Night Shift") for u in users],
            DesiredUserAssignment(assigned.upn or assigned.user_id, None, absent=True),
        ],
        prune=Prune(),
    )


def test_a_plan_is_identical_through_either_transport_and_applies_identically(world):
    desired = _desired(world.initial)
    wanted = Wanted(groups=world.wanted.groups, users=desired.user_refs())
    plans, after = {}, {}
    for transport in ("rest", "powershell"):
        backend = world.open(transport)
        try:
            current = backend.read(wanted)
            plan = diff(current, desired)
            plans[transport] = plan.data
            result = apply_plan(
                plan, backend, current, journal=None, run_id=transport, verify=False
            )
            assert result.ok, transport
            after[transport] = backend.read(wanted)
            assert not diff(after[transport], desired), f"{transport} did not converge"
        finally:
            backend.close()

    assert plans["rest"] == plans["powershell"]
    assert plans["rest"]["summary"]["add"] > 0
    assert state_checksum(after["rest"]) == state_checksum(after["powershell"])
