"""The seeded hospital and the tenant's rules, without a server."""

from __future__ import annotations

import time

import pytest

from bridge.sandbox import SandboxConfig, ServiceError, build_hospital
from bridge.sandbox.tenant import MESSAGING


def messaging_assignments(tenant):
    return [a for a in tenant.list_group_assignments() if a["PolicyType"] == MESSAGING]


def test_same_seed_builds_the_same_tenant_and_another_seed_does_not():
    a = build_hospital(SandboxConfig(users=500, seed=7))
    b = build_hospital(SandboxConfig(users=500, seed=7))
    c = build_hospital(SandboxConfig(users=500, seed=8))
    assert a.digest() == b.digest()
    assert a.tenant_id == b.tenant_id != c.tenant_id
    assert a.digest() != c.digest()


def test_seed_has_the_hospital_shape():
    t = build_hospital(SandboxConfig(users=400, seed=7))
    names = t.policy_names()
    assert names[:4] == ["Global", "Default", "EduFaculty", "EduStudent"]
    for name in ("Clinical", "Nursing", "Pharmacy", "Support Staff", "Kitchen", "Students"):
        assert name in names
    kitchen = t.get_policy("Tag:Kitchen")
    assert kitchen["AllowGiphy"] is False and kitchen["AllowPriorityMessages"] is False
    assert t.get_policy("Nursing")["ReadReceiptsEnabledType"] == "UserPreference"
    assert len(t.groups_named("Volunteers")) == 2
    assert t.user_count == 400
    assert all(
        u.endswith(("@northwind-health.org", "#EXT#@northwind-health.onmicrosoft.com"))
        for u in t.upns
    )
    assert any("#EXT#" in u for u in t.upns)
    assert len(t.direct_assignments()) == 5
    # Other policy types are there too, for readers to filter out.
    assert {a["PolicyType"] for a in t.list_group_assignments()} == {
        MESSAGING,
        "TeamsMeetingPolicy",
    }
    ranks = [a["Rank"] for a in messaging_assignments(t)]
    assert ranks == list(range(1, len(ranks) + 1))


def test_overrides_reach_the_requested_counts():
    t = build_hospital(
        SandboxConfig(users=2000, seed=3, policies=50, group_assignments=60, direct_share=0.05)
    )
    assert len(t.policy_names()) == 50
    assert "Policy 001" in t.policy_names()
    assert len(messaging_assignments(t)) == 60
    assert len(t.direct_assignments()) == 100


@pytest.mark.parametrize(
    "knobs, message",
    [
        ({"group_assignments": 65}, "at most|<= 64"),
        ({"roles": ("owner",)}, "unknown role"),
        ({"fault_rate": 1.5}, "fault_rate"),
        ({"throttle_rps": 0}, "throttle_rps"),
    ],
)
def test_config_rejects_nonsense(knobs, message):
    with pytest.raises(ValueError, match=message):
        SandboxConfig(**knobs)


def test_effective_policy_direct_then_best_ranked_group_then_global():
    t = build_hospital(SandboxConfig(users=50, seed=7))
    ed, physicians = t.groups_named("Emergency Department")[0], t.groups_named("Physicians")[0]
    both = next(
        uid
        for uid in t.user_ids
        if {g["id"] for g in t.member_of(uid)} >= {ed["id"], physicians["id"]}
    )
    direct = set(t.direct_assignments())
    assert both not in direct
    # ED is ranked above Physicians, so its policy wins.
    assert t.effective_policy(both) == ("Emergency Department", "group", ed["id"])
    t.remove_group_assignment(ed["id"], MESSAGING)
    assert t.effective_policy(both) == ("Clinical", "group", physicians["id"])
    t.grant(both, "kitchen")
    assert t.effective_policy(both) == ("Kitchen", "direct", None)
    loner = next(uid for uid in t.user_ids if not t.member_of(uid) and uid not in direct)
    assert t.effective_policy(loner) == ("Global", "default", None)


def test_deleting_a_policy_drops_its_direct_assignments():
    t = build_hospital(SandboxConfig(users=50, seed=7))
    uid = t.user_ids[0]
    t.create_policy({"Identity": "Tag:Night Shift"})
    t.grant(uid, "Night Shift")
    t.delete_policy("Tag:Night Shift")
    assert uid not in t.direct_assignments()
    with pytest.raises(ServiceError) as err:
        t.grant(uid, "Night Shift")
    assert err.value.status == 404


def test_bulk_assign_is_all_or_nothing_and_names_the_first_bad_user():
    t = build_hospital(SandboxConfig(users=50, seed=7))
    pid = t.policy_id("Kitchen")
    good, bad = t.user_ids[1], "00000000-0000-0000-0000-00000000dead"
    before = t.direct_assignments()
    with pytest.raises(ServiceError, match=bad):
        t.assign_by_ids([(good, pid), (bad, pid)])
    assert t.direct_assignments() == before


def test_100k_users_build_in_a_few_seconds():
    started = time.perf_counter()
    t = build_hospital(SandboxConfig(users=100_000, seed=7))
    elapsed = time.perf_counter() - started
    print(f"\n100,000-user tenant built in {elapsed:.2f} s")
    assert t.user_count == 100_000
    assert len(set(t.upns)) == 100_000
    assert elapsed < 30  # generous: a shared 2-core machine; the print is the measurement
