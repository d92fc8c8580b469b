"""apply: order, bulk, stop-and-report, converging re-runs, verification, journal. Runs against
``MemoryBackend`` and hand-written fakes wrapping it; time is injected, nothing really waits."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
from http_fixtures import rsps_fixture  # noqa: F401

from bridge.apply import ApplyFailed, apply_plan, check_fresh, describe
from bridge.backends.base import BulkResult, UserFailure, Wanted
from bridge.backends.snapshot import MemoryBackend
from bridge.errors import ApplyError, ConfigError, ServerError, StalePlanError, TenantMismatchError
from bridge.journal import Journal
from bridge.plan import Plan, SetUserAssignment, UpdatePolicy, diff, state_checksum
from bridge.state import (
    DesiredGroupAssignment,
    DesiredPolicy,
    DesiredState,
    DesiredUserAssignment,
    Directory,
    Group,
    GroupAssignment,
    Policy,
    SafetyLimits,
    TenantState,
    User,
    UserAssignment,
)

TENANT = "7d3c5e2a-0000-4000-8000-000000000001"
ALL = Wanted()

# --------------------------------------------------------------------------- fixtures


def hospital() -> TenantState:
    d = Directory()
    for i in range(1, 7):
        d.add_user(User(f"u{i}", f"user{i}@contoso.org"))
    d.add_group(Group("g-clin", "Clinicians", ("u4", "u5")))
    d.add_group(Group("g-fac", "Facilities", ("u6",)))
    d.add_group(Group("g-pilot", "Pilots", ()))
    d.add_group(Group("g-icu", "ICU", ()))
    return TenantState.build(
        TENANT,
        [
            Policy("Global", {"AllowGiphy": True, "AllowPriorityMessages": True}),
            Policy("Clinical", {"Description": "Doctors", "AllowPriorityMessages": True}),
            Policy("Kitchen", {"AllowPriorityMessages": True}),
            Policy("Old Pilot", {"AllowGiphy": True}),
        ],
        [
            GroupAssignment("g-clin", "Clinical", 1, "Clinicians"),
            GroupAssignment("g-fac", "Kitchen", 2, "Facilities"),
            GroupAssignment("g-pilot", "Old Pilot", 3, "Pilots"),
        ],
        [
            UserAssignment("u1", "Old Pilot", "user1@contoso.org"),
            UserAssignment("u2", "Kitchen", "user2@contoso.org"),
        ],
        d,
    )


def desired() -> DesiredState:
    return DesiredState(
        policies={
            p.key: p
            for p in [
                DesiredPolicy("Global", {"AllowGiphy": False}),
                DesiredPolicy("Clinical", {"Description": "Doctors and nurses"}),
                DesiredPolicy(
                    "Support Staff", {"AllowPriorityMessages": True, "AllowGiphy": False}
                ),
                DesiredPolicy("Old Pilot", {}, absent=True),
            ]
        },
        group_assignments=[
            DesiredGroupAssignment("Clinicians", "Clinical", 1),
            DesiredGroupAssignment("Facilities", "Support Staff", 2),
            DesiredGroupAssignment("ICU", "Clinical", 3),
            DesiredGroupAssignment("Pilots", "Old Pilot", 4, absent=True),
        ],
        user_assignments=[
            DesiredUserAssignment("user1@contoso.org", "Support Staff"),
            DesiredUserAssignment("user3@contoso.org", "Clinical"),
            DesiredUserAssignment("user2@contoso.org", None, absent=True),
        ],
    )


# Every kind of change, and the writes a clean run sends for it, in order.
EXPECTED_WRITES = [
    ("update_policy", ("Global", {"AllowGiphy": False})),
    ("update_policy", ("Clinical", {"Description": "Doctors and nurses"})),
    ("create_policy", ("Support Staff", {"AllowPriorityMessages": True, "AllowGiphy": False})),
    ("remove_group_assignment", ("g-fac",)),  # replacement: remove, then add at once
    ("add_group_assignment", ("g-fac", "Support Staff", 2)),
    ("add_group_assignment", ("g-icu", "Clinical", 3)),
    ("assign_users", ((("u1", "Support Staff"), ("u3", "Clinical")),)),
    ("unassign_users", (("u2",),)),
    ("remove_group_assignment", ("g-pilot",)),
    ("delete_policy", ("Old Pilot",)),
]


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


class Wrapper:
    """Delegates to a MemoryBackend; subclasses intercept writes through ``_call``."""

    name = "fake"

    def __init__(self, inner: MemoryBackend) -> None:
        self.inner = inner

    def _call(self, op, fn, *args):
        return fn(*args)

    def read(self, wanted=ALL):
        return self.inner.read(wanted)

    def create_policy(self, name, settings):
        return self._call("create_policy", self.inner.create_policy, name, settings)

    def update_policy(self, name, settings):
        return self._call("update_policy", self.inner.update_policy, name, settings)

    def delete_policy(self, name):
        return self._call("delete_policy", self.inner.delete_policy, name)

    def add_group_assignment(self, group_id, policy, rank):
        return self._call(
            "add_group_assignment", self.inner.add_group_assignment, group_id, policy, rank
        )

    def remove_group_assignment(self, group_id):
        return self._call("remove_group_assignment", self.inner.remove_group_assignment, group_id)

    def group_assignment(self, group_id):
        return self.read().group_assignments.get(group_id)

    def assign_users(self, assignments):
        return self._call("assign_users", self.inner.assign_users, assignments)

    def unassign_users(self, user_ids):
        return self._call("unassign_users", self.inner.unassign_users, user_ids)

    def user_groups(self, user_id):
        return self.inner.user_groups(user_id)

    def last_write(self):
        return self.inner.last_write()

    def take_warnings(self):
        return self.inner.take_warnings()

    def organization(self):
        return self.inner.organization()

    def domains(self):
        return self.inner.domains()

    def request_stats(self):
        return self.inner.request_stats()

    def close(self):
        return None


class FaultyBackend(Wrapper):
    """Raises ServerError on the ``fail_at``-th write (1-based): before the service acts on it,
    or after (the write happened but its answer was lost)."""

    def __init__(self, inner, fail_at: int, *, after: bool = False) -> None:
        super().__init__(inner)
        self.fail_at = fail_at
        self.after = after
        self.calls = 0

    def _call(self, op, fn, *args):
        self.calls += 1
        if self.calls != self.fail_at:
            return fn(*args)
        if self.after:
            fn(*args)
        raise ServerError(f"503 from Teams admin API on {op}", status=503, correlation_id="corr-9")


class PartialBulkBackend(Wrapper):
    """Bulk assigns that refuse some users, as the batch operations report them."""

    def __init__(self, inner, refuse: set[str]) -> None:
        super().__init__(inner)
        self.refuse = refuse

    def assign_users(self, assignments):
        ok = [(u, p) for u, p in assignments if u not in self.refuse]
        self.inner.assign_users(ok)
        return BulkResult(
            requested=len(assignments),
            succeeded=len(ok),
            failures=[
                UserFailure(u, "user is not licensed for Teams") for u in sorted(self.refuse)
            ],
            write_requests=1,
        )


class ChunkingBackend(Wrapper):
    """Reports the requests a real backend would send: 1,000 users per request."""

    def assign_users(self, assignments):
        result = self.inner.assign_users(assignments)
        result.write_requests = math.ceil(len(assignments) / 1000)
        return result


class DelayedBackend(Wrapper):
    """Direct user grants show on reads only ``delay`` seconds after they were written (the
    service's propagation delay); until then reads show the previous assignment."""

    def __init__(self, inner, time: FakeTime, delay: float) -> None:
        super().__init__(inner)
        self.time = time
        self.delay = delay
        self.hidden: dict[str, tuple[float, UserAssignment | None]] = {}
        self.reads = 0

    def _hide(self, user_ids):
        for uid in user_ids:
            previous = self.inner.state.user_assignments.get(uid)
            self.hidden[uid] = (self.time.now + self.delay, previous)

    def assign_users(self, assignments):
        self._hide([u for u, _ in assignments])
        return self.inner.assign_users(assignments)

    def unassign_users(self, user_ids):
        self._hide(user_ids)
        return self.inner.unassign_users(user_ids)

    def read(self, wanted=ALL):
        self.reads += 1
        state = self.inner.read(wanted)
        for uid, (visible_at, previous) in self.hidden.items():
            if self.time.now < visible_at:
                if previous is None:
                    state.user_assignments.pop(uid, None)
                else:
                    state.user_assignments[uid] = previous
        return state


class StalePolicyBackend(Wrapper):
    """Shows the policies as they were before the run for the first ``stale_reads`` reads."""

    def __init__(self, inner, stale_reads: int) -> None:
        super().__init__(inner)
        self.before = dict(inner.state.policies)
        self.stale_reads = stale_reads
        self.reads = 0

    def read(self, wanted=ALL):
        self.reads += 1
        state = self.inner.read(wanted)
        if self.reads <= self.stale_reads:
            state.policies = dict(self.before)
        return state


def run(plan, backend, current, *, time=None, journal=None, run_id="run-1", **kw):
    time = time or FakeTime()
    return apply_plan(
        plan,
        backend,
        current,
        journal=journal,
        run_id=run_id,
        sleep=time.sleep,
        clock=time.clock,
        **kw,
    )


def fresh():
    mem = MemoryBackend(hospital())
    current = mem.read()
    return mem, current, diff(current, desired())


# --------------------------------------------------------------------------- order and bulk


def test_writes_in_safe_order_with_replacement_as_remove_then_add():
    mem, current, plan = fresh()
    assert [c.kind for c in plan.changes] == [
        "update_policy",
        "update_policy",
        "create_policy",
        "set_group_assignment",
        "set_group_assignment",
        "set_user_assignment",
        "set_user_assignment",
        "remove_user_assignment",
        "remove_group_assignment",
        "delete_policy",
    ]
    result = run(plan, mem, current)
    assert mem.writes == EXPECTED_WRITES
    assert result.ok and result.verified
    assert len(result.applied) == len(plan) == result.total
    assert result.pending == [] and result.failed == [] and result.not_attempted == []
    assert result.write_requests == 10
    assert not diff(mem.read(), desired())


def test_hand_reordered_saved_plan_still_runs_in_safe_order():
    mem, current, plan = fresh()
    # Kinds reversed (deletes first), each kind's changes kept in their order.
    edited = sorted(plan.changes, key=lambda c: -c.order)
    shuffled = Plan(edited, plan.tenant_id, plan.state_checksum)
    run(Plan.from_data(shuffled.data), mem, current)
    assert mem.writes == EXPECTED_WRITES


def test_twelve_thousand_users_in_one_bulk_call():
    d = Directory()
    users = [User(f"u{i:05}", f"user{i}@contoso.org") for i in range(12_000)]
    for u in users:
        d.add_user(u)
    state = TenantState.build(TENANT, [Policy("Global", {}), Policy("Clinical", {})], (), (), d)
    want = DesiredState(
        policies={"clinical": DesiredPolicy("Clinical", {})},
        user_assignments=[DesiredUserAssignment(u.upn, "Clinical") for u in users],
    )
    mem = MemoryBackend(state)
    current = mem.read()
    plan = diff(current, want)
    assert len(plan) == 12_000
    result = run(plan, ChunkingBackend(mem), current)
    assert [op for op, _ in mem.writes] == ["assign_users"]
    assert len(mem.writes[0][1][0]) == 12_000
    assert result.write_requests == 12
    assert len(result.applied) == 12_000


# --------------------------------------------------------------------------- failures


def test_per_user_failures_named_by_upn_and_the_run_stops(tmp_path):
    mem, current, plan = fresh()
    journal_path = tmp_path / "j.jsonl"
    with pytest.raises(ApplyError) as err:
        run(plan, PartialBulkBackend(mem, {"u3"}), current, journal=Journal(journal_path))
    result = err.value.result
    assert str(err.value) == (
        "6 of 10 changes applied; failed: assign user user3@contoso.org to Clinical "
        "(user is not licensed for Teams); not attempted: 3; run apply again to converge"
    )
    assert [describe(c) for c in result.not_attempted] == [
        "unassign user user2@contoso.org from Kitchen",
        "unassign group Pilots from Old Pilot",
        "delete policy Old Pilot",
    ]
    assert mem.writes[-1][0] == "assign_users"  # nothing after the failed step
    entries = [json.loads(line) for line in journal_path.read_text().splitlines()]
    by_user = {e["change"]["user"]: e["result"] for e in entries if e.get("change", {}).get("user")}
    assert by_user == {"user1@contoso.org": "ok", "user3@contoso.org": "failed"}
    assert entries[-1]["event"] == "run_finished" and entries[-1]["result"] == "failed"
    assert entries[-1]["not_attempted"] == 3


def count_writes(mem, op):
    return Counter(args[0] for o, args in mem.writes if o == op)


@pytest.mark.parametrize("after", [False, True], ids=["lost-request", "lost-answer"])
@pytest.mark.parametrize("fail_at", range(1, len(EXPECTED_WRITES) + 1))
def test_fault_at_each_write_then_a_rerun_converges(fail_at, after, tmp_path):
    mem, current, plan = fresh()
    journal = Journal(tmp_path / "j.jsonl")
    with pytest.raises(ApplyFailed) as err:
        run(plan, FaultyBackend(mem, fail_at, after=after), current, journal=journal)
    result = err.value.result
    message = str(err.value)
    assert "503 from Teams admin API" in message and "(correlation id corr-9)" in message
    assert message.endswith("run apply again to converge")
    assert len(result.done) + len(result.failed) + len(result.not_attempted) == len(plan)
    assert result.failed[0].correlation_id == "corr-9"

    again = mem.read()
    second = run(diff(again, desired()), mem, again, journal=journal)
    assert second.ok
    assert not diff(mem.read(), desired())
    # Nothing created twice, nothing deleted twice.
    assert count_writes(mem, "create_policy") == {"Support Staff": 1}
    assert count_writes(mem, "delete_policy") == {"Old Pilot": 1}
    lines = [json.loads(line) for line in (tmp_path / "j.jsonl").read_text().splitlines()]
    assert [e["result"] for e in lines if e["event"] == "run_finished"] == ["failed", "ok"]


def test_replacement_whose_add_fails_puts_the_old_assignment_back():
    mem, current, plan = fresh()
    with pytest.raises(ApplyFailed) as err:
        run(plan, FaultyBackend(mem, 5), current)  # 4: remove g-fac, 5: add it (6: restore)
    assert "assign group Facilities to Support Staff (rank 2) (503 from Teams admin API" in str(
        err.value
    )
    assert "its old assignment (Kitchen) was put back at rank 2, where it was before" in str(
        err.value
    )
    restored = mem.state.group_assignments["g-fac"]
    assert (restored.policy, restored.rank) == ("Kitchen", 2)


def test_bulk_call_that_raises_fails_every_user_in_it():
    mem, current, plan = fresh()
    with pytest.raises(ApplyFailed) as err:
        run(plan, FaultyBackend(mem, 7), current)
    result = err.value.result
    assert [describe(f.change) for f in result.failed] == [
        "assign user user1@contoso.org to Support Staff",
        "assign user user3@contoso.org to Clinical",
    ]
    assert "assign 2 user(s): 503 from Teams admin API" in result.failed[0].error


# --------------------------------------------------------------------------- freshness


def test_stale_plan_refused_before_any_write():
    mem, _, plan = fresh()
    mem.update_policy("Kitchen", {"AllowGiphy": False})  # another admin, meanwhile
    mem.writes.clear()
    changed = mem.read()
    with pytest.raises(
        StalePlanError, match="the tenant changed since this plan was made: run plan again"
    ):
        check_fresh(plan, changed)
    with pytest.raises(StalePlanError):
        run(plan, mem, changed)
    assert mem.writes == []


def test_plan_for_another_tenant_refused():
    mem, current, plan = fresh()
    plan.tenant_id = "another-tenant"
    with pytest.raises(TenantMismatchError, match="made for tenant another-tenant"):
        run(plan, mem, current)
    assert mem.writes == []


def test_unchanged_tenant_is_fresh():
    _, current, plan = fresh()
    check_fresh(plan, current)
    check_fresh(plan, current, saved=True)


def test_a_saved_plan_is_refused_when_the_tokens_tenant_cannot_be_verified():
    _, current, plan = fresh()
    current.tenant_id = None  # the Teams token had no readable tid
    with pytest.raises(TenantMismatchError, match="cannot verify the token's tenant") as err:
        check_fresh(plan, current, saved=True)
    assert f"made for tenant {TENANT}" in str(err.value)


def test_a_saved_plan_without_a_tenant_is_refused():
    _, current, plan = fresh()
    plan.tenant_id = None
    with pytest.raises(TenantMismatchError, match="does not record the tenant it was made for"):
        check_fresh(plan, current, saved=True)


# --------------------------------------------------------------------------- verification


def user_plan():
    mem = MemoryBackend(hospital())
    current = mem.read()
    want = DesiredState(user_assignments=[DesiredUserAssignment("user3@contoso.org", "Clinical")])
    return mem, current, diff(current, want)


def test_grants_that_show_within_the_timeout_are_applied():
    mem, current, plan = user_plan()
    t = FakeTime()
    backend = DelayedBackend(mem, t, delay=12)
    result = run(plan, backend, current, time=t, verify_timeout=60, poll_interval=5)
    assert [describe(c) for c in result.applied] == ["assign user user3@contoso.org to Clinical"]
    assert result.pending == []
    assert t.sleeps == [5, 5, 5]  # read at 0, 5, 10 (hidden), 15 (shown)
    assert backend.reads == 4
    assert result.duration == 15


def test_grants_not_visible_by_the_timeout_are_pending_with_the_wait(tmp_path):
    mem, current, plan = user_plan()
    t = FakeTime()
    journal_path = tmp_path / "j.jsonl"
    result = run(
        plan,
        DelayedBackend(mem, t, delay=600),
        current,
        time=t,
        verify_timeout=60,
        poll_interval=25,
        journal=Journal(journal_path),
    )
    assert result.applied == [] and result.failed == []
    (pending,) = result.pending
    assert pending.waited == 60
    assert str(pending) == (
        "assign user user3@contoso.org to Clinical "
        "(not visible after 60 s; it shows no direct assignment)"
    )
    assert t.sleeps == [25, 25, 10]  # the last poll lands on the timeout
    assert result.outcome == "pending"
    lines = result.summary_lines()
    assert lines[0].startswith("Apply pending: 0 applied (verified), 1 pending, 0 failed")
    assert "  pending: assign user user3@contoso.org to Clinical" in lines[1]
    entries = [json.loads(line) for line in journal_path.read_text().splitlines()]
    assert [(e["event"], e.get("result")) for e in entries] == [
        ("run_started", None),
        ("change", "started"),
        ("change", "ok"),  # the bulk call
        ("change", "ok"),  # its user
        ("change", "pending"),
        ("run_finished", "pending"),
    ]


def test_policy_write_read_back_late_is_retried_then_applied():
    mem, current, plan = fresh()
    t = FakeTime()
    backend = StalePolicyBackend(mem, stale_reads=2)
    result = run(plan, backend, current, time=t, poll_interval=2)
    assert result.ok and len(result.applied) == 10
    assert backend.reads == 3


def test_policy_that_never_reads_back_is_pending_not_failed():
    # The service accepted the writes; slow propagation is not a failure (an unattended job
    # must not page someone for it), and the run says how long it waited.
    mem, current, plan = fresh()
    t = FakeTime()
    backend = StalePolicyBackend(mem, stale_reads=99)
    result = run(plan, backend, current, time=t, poll_interval=2, verify_timeout=10)
    assert backend.reads == 6  # at 0, 2, 4, 6, 8 and 10 s
    assert result.outcome == "pending" and not result.failed
    assert [describe(p.change) for p in result.pending] == [
        "update policy Global",
        "update policy Clinical",
        "create policy Support Staff",
        "delete policy Old Pilot",
    ]
    assert "AllowGiphy = True in policy Global, expected False" in str(result.pending[0])


def test_verification_off_trusts_the_writes():
    mem, current, plan = user_plan()
    t = FakeTime()
    backend = DelayedBackend(mem, t, delay=600)
    result = run(plan, backend, current, time=t, verify=False)
    assert backend.reads == 0 and not result.verified
    assert len(result.applied) == 1
    assert "applied (not verified)" in result.summary_lines()[0]


def test_empty_plan_writes_and_reads_nothing(tmp_path):
    mem = MemoryBackend(hospital())
    current = mem.read()
    backend = DelayedBackend(mem, FakeTime(), 0)
    result = run(diff(current, DesiredState()), backend, current, journal=Journal(tmp_path / "j"))
    assert result.ok and result.total == 0 and backend.reads == 0 and mem.writes == []


# --------------------------------------------------------------------------- journal


def test_journal_has_every_change_started_then_ok(tmp_path):
    mem, current, plan = fresh()
    path = tmp_path / "audit" / "j.jsonl"
    run(plan, mem, current, journal=Journal(path))
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    assert entries[0]["event"] == "run_started" and entries[0]["changes"] == 10
    assert entries[0]["state_checksum"] == plan.state_checksum
    assert entries[-1] == {
        **entries[-1],
        "event": "run_finished",
        "result": "ok",
        "applied": 10,
        "failed": 0,
        "pending": 0,
        "not_attempted": 0,
        "write_requests": 10,
    }
    changes = entries[1:-1]
    assert all(e["run_id"] == "run-1" and e["tenant"] == TENANT for e in entries)
    bulk = [
        (e["change"]["kind"], e["result"], e["user_count"])
        for e in changes
        if e["change"].get("bulk")
    ]
    assert bulk == [
        ("set_user_assignment", "started", 2),
        ("set_user_assignment", "ok", 2),
        ("remove_user_assignment", "started", 1),
        ("remove_user_assignment", "ok", 1),
    ]
    singles = [e for e in changes if not e["change"].get("bulk")]
    expected = []
    for c in plan.changes:
        if isinstance(c, SetUserAssignment) or c.kind == "remove_user_assignment":
            expected.append((c.data(), "ok"))
        elif c.kind == "set_group_assignment" and c.existing is not None:
            # A replacement's removal has its own line, between the add's started and ok.
            removal = {
                "kind": "remove_group_assignment",
                "group_id": c.group_id,
                "group": c.group_name,
                "from": {"policy": c.existing.policy, "rank": c.existing.rank},
                "part_of": "set_group_assignment",
            }
            expected += [(c.data(), "started"), (removal, "ok"), (c.data(), "ok")]
        else:
            expected += [(c.data(), "started"), (c.data(), "ok")]
    assert [(e["change"], e["result"]) for e in singles] == expected
    text = path.read_text().casefold()
    for word in ("secret", "token", "password", "assertion", "bearer", "eyj"):
        assert word not in text


def test_summary_lines_list_failures():
    mem, current, _ = fresh()
    plan = Plan(
        [UpdatePolicy("Missing", {"AllowGiphy": (None, False)})], TENANT, state_checksum(current)
    )
    with pytest.raises(ApplyFailed) as err:
        run(plan, mem, current)
    lines = err.value.result.summary_lines()
    assert lines[0].startswith("Apply failed: 0 applied (not verified), 0 pending, 1 failed")
    assert lines[1] == "  failed: update policy Missing (policy Missing not found)"


def test_long_failure_lists_are_capped_in_messages_not_in_the_result():
    d = Directory()
    for i in range(15):
        d.add_user(User(f"u{i:02}", f"user{i}@contoso.org"))
    mem = MemoryBackend(
        TenantState.build(TENANT, [Policy("Global", {}), Policy("C", {})], (), (), d)
    )
    current = mem.read()
    want = DesiredState(user_assignments=[DesiredUserAssignment(u, "C") for u in d.users])
    with pytest.raises(ApplyFailed) as err:
        run(diff(current, want), PartialBulkBackend(mem, set(d.users)), current)
    assert len(err.value.result.failed) == 15
    assert str(err.value).count("not licensed") == 10
    assert "and 5 more (see the journal); not attempted: 0" in str(err.value)
    lines = err.value.result.summary_lines()
    assert len(lines) == 12 and lines[-1] == "  ... and 5 more failed (see the journal)"


class FailingReadBackend(Wrapper):
    def read(self, wanted=ALL):
        raise ServerError("503 from Teams admin API on read", status=503)


def test_verification_read_failure_is_reported_not_hidden(tmp_path):
    mem, current, plan = user_plan()
    path = tmp_path / "j.jsonl"
    with pytest.raises(
        ApplyFailed,
        match=r"all 1 changes were accepted but reading the tenant "
        r"back failed: 503 .*run plan to see where it stands",
    ):
        run(plan, FailingReadBackend(mem), current, journal=Journal(path))
    assert json.loads(path.read_text().splitlines()[-1])["event"] == "run_finished"


class BuggyBackend(Wrapper):
    def create_policy(self, name, settings):
        raise KeyError("bug")


def test_unexpected_exception_closes_the_journal_and_propagates(tmp_path):
    mem, current, plan = fresh()
    path = tmp_path / "j.jsonl"
    with pytest.raises(KeyError):
        run(plan, BuggyBackend(mem), current, journal=Journal(path))
    last = json.loads(path.read_text().splitlines()[-1])
    assert last["event"] == "run_finished" and last["result"] == "interrupted"
    assert last["applied"] == 2


def test_unwritable_journal_stops_before_any_write(tmp_path):
    mem, current, plan = fresh()
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot write the apply journal"):
        run(plan, mem, current, journal=Journal(tmp_path / "file" / "j.jsonl"))
    assert mem.writes == []


def test_removal_that_does_not_show_is_pending_with_what_it_shows():
    mem = MemoryBackend(hospital())
    current = mem.read()
    want = DesiredState(user_assignments=[DesiredUserAssignment("user2@contoso.org", None, True)])
    t = FakeTime()
    result = run(
        diff(current, want), DelayedBackend(mem, t, 90), current, time=t, verify_timeout=30
    )
    assert [str(p) for p in result.pending] == [
        "unassign user user2@contoso.org from Kitchen "
        "(not visible after 30 s; it still shows policy Kitchen)"
    ]


def test_poll_interval_must_be_positive():
    mem, current, plan = user_plan()
    with pytest.raises(ValueError, match="poll_interval must be positive"):
        run(plan, mem, current, poll_interval=0)


class FailingAddBackend(Wrapper):
    """Every add of one group's assignment fails (the service is down for it)."""

    def __init__(self, inner, group_id: str) -> None:
        super().__init__(inner)
        self.group_id = group_id

    def _call(self, op, fn, *args):
        if op == "add_group_assignment" and args[0] == self.group_id:
            raise ServerError("503 from Teams admin API on add", status=503)
        return fn(*args)


def test_a_replacement_that_cannot_be_undone_says_the_group_has_none_now():
    mem, current, plan = fresh()
    with pytest.raises(ApplyFailed) as err:
        run(plan, FailingAddBackend(mem, "g-fac"), current)
    assert "putting its old assignment (Kitchen, rank 2) back failed too" in str(err.value)
    assert "g-fac" not in mem.state.group_assignments


class ForbiddenBackend(Wrapper):
    def _call(self, op, fn, *args):
        from bridge.errors import ForbiddenError

        raise ForbiddenError("403 from Teams admin API: needs the Teams Administrator role")


class HintedForbiddenBackend(Wrapper):
    """A 403 as ``http`` raises it: the advice in the message and apart (``hint``)."""

    def _call(self, op, fn, *args):
        from bridge.errors import ForbiddenError

        raise ForbiddenError(
            "403 from Teams admin API: ADVICE [PUT /x]",
            hint="ADVICE",
            brief="403 from Teams admin API [PUT /x]",
        )


def test_a_403s_advice_is_said_once_in_what_apply_reports():
    mem, current, plan = fresh()
    with pytest.raises(ApplyFailed) as err:
        run(plan, HintedForbiddenBackend(mem), current)
    result = err.value.result
    lines = "\n".join([*result.summary_lines(), str(err.value)])
    assert lines.count("ADVICE") == 1
    assert str(err.value).endswith("ADVICE; wait a few minutes, then run apply again")
    assert result.failed[0].error == "403 from Teams admin API [PUT /x]"


def test_a_403_says_to_assign_the_role_not_just_to_run_again():
    mem, current, plan = fresh()
    with pytest.raises(ApplyFailed) as err:
        run(plan, ForbiddenBackend(mem), current)
    assert "give the app's service principal the Teams Administrator directory role" in str(
        err.value
    )
    assert "run apply again to converge" not in str(err.value)


# --------------------------------------------------------------------------- review fixes


def ranks(mem):
    return [(g.group_id, g.policy, g.rank) for g in mem.state.ranked_groups()]


def rerank_desired() -> DesiredState:
    """ICU added on top (pushing the others down), then Facilities moved to another policy."""
    return DesiredState(
        group_assignments=[
            DesiredGroupAssignment("ICU", "Clinical", 1),
            DesiredGroupAssignment("Clinicians", "Clinical", 2),
            DesiredGroupAssignment("Facilities", "Clinical", 3),
            DesiredGroupAssignment("Pilots", "Old Pilot", 4),
        ]
    )


def test_a_failed_replacement_goes_back_where_it_was_just_before_its_step(tmp_path):
    mem = MemoryBackend(hospital())
    current = mem.read()
    plan = diff(current, rerank_desired())
    assert [describe(c) for c in plan.changes] == [
        "assign group ICU to Clinical (rank 1)",
        "assign group Facilities to Clinical (rank 3)",
    ]
    journal = Journal(tmp_path / "j.jsonl")
    with pytest.raises(ApplyFailed) as err:
        # 1: add ICU, 2: remove Facilities, 3: its add fails, 4: the undo
        run(plan, FaultyBackend(mem, 3), current, journal=journal)
    # Facilities was at rank 3 once ICU went on top, not at its plan-time rank 2.
    assert "its old assignment (Kitchen) was put back at rank 3, where it was before" in str(
        err.value
    )
    assert ranks(mem) == [
        ("g-icu", "Clinical", 1),
        ("g-clin", "Clinical", 2),
        ("g-fac", "Kitchen", 3),
        ("g-pilot", "Old Pilot", 4),
    ]
    # The removal has its own journal line, with its correlation id's place.
    lines = [json.loads(x) for x in (tmp_path / "j.jsonl").read_text().splitlines()]
    kinds = [(e["change"]["kind"], e["result"]) for e in lines if e["event"] == "change"]
    assert kinds == [
        ("set_group_assignment", "started"),
        ("set_group_assignment", "ok"),
        ("set_group_assignment", "started"),
        ("remove_group_assignment", "ok"),
        ("restore_group_assignment", "ok"),
        ("set_group_assignment", "failed"),
    ]


def test_an_undo_that_keeps_failing_is_retried_then_says_no_policy_and_force(tmp_path):
    mem, current, plan = fresh()
    t = FakeTime()
    backend = FailingAddBackend(mem, "g-fac")
    # No floor: six users stand for a hospital (the floor would let 4 moves through).
    no_floor = SafetyLimits(user_change_floor=0)
    with pytest.raises(ApplyFailed) as err:
        run(plan, backend, current, time=t, journal=Journal(tmp_path / "j.jsonl"), limits=no_floor)
    message = str(err.value)
    assert "back failed too, 3 time(s)" in message
    assert "group Facilities has NO messaging policy now" in message
    # The least override the re-run needs (u6 back, plus the three users not attempted), not
    # --force, which would lift every safety check for the whole plan.
    assert message.endswith(
        "group Facilities has no messaging policy now: run 'teams-bridge apply FILE "
        "--max-user-change-share 0.667' to assign it again (the re-run moves 4 of 6 users "
        "(66.7%), over the limit of 10%: among them the group's members, who have fallen back "
        "to another policy)"
    )
    assert "--force" not in message
    assert "run apply again to converge" not in message
    assert t.sleeps == [2.0, 4.0]
    lines = [json.loads(x) for x in (tmp_path / "j.jsonl").read_text().splitlines()]
    restores = [
        e["result"] for e in lines if e.get("change", {}).get("kind") == "restore_group_assignment"
    ]
    assert restores == ["failed", "failed", "failed"]


class LaggingBackend(Wrapper):
    """The service as it behaves while writes propagate: reads show the tenant as it was when
    ``settle`` was last called; a group add onto a group that holds an assignment (on the write
    side) answers 409, as the service does."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.visible = inner.read()

    def settle(self):
        self.visible = self.inner.read()

    def read(self, wanted=ALL):
        v = self.visible
        return TenantState.build(
            v.tenant_id,
            v.policies.values(),
            v.group_assignments.values(),
            v.user_assignments.values(),
            v.directory,
        )

    def add_group_assignment(self, group_id, policy, rank):
        from bridge.errors import ConflictError

        if group_id in self.inner.state.group_assignments:
            raise ConflictError(
                f"409 from Teams admin API: Group '{group_id}' already has a "
                "TeamsMessagingPolicy assignment",
                status=409,
            )
        return super().add_group_assignment(group_id, policy, rank)


def test_rerun_while_a_rerank_propagates_neither_repeats_it_nor_fails(tmp_path):
    mem = MemoryBackend(hospital())
    lagging = LaggingBackend(mem)
    journal = Journal(tmp_path / "j.jsonl")
    want = rerank_desired()
    t = FakeTime()

    first_state = lagging.read()
    first = run(
        diff(first_state, want), lagging, first_state, time=t, journal=journal, verify_timeout=10
    )
    assert [describe(p.change) for p in first.pending] == [
        "assign group ICU to Clinical (rank 1)",
        "assign group Facilities to Clinical (rank 3)",
    ]
    sent = list(mem.writes)

    # A scheduled run 15 minutes later: reads still show the old tenant.
    for n in (2, 3):
        state = lagging.read()
        again = run(
            diff(state, want),
            lagging,
            state,
            time=t,
            journal=journal,
            run_id=f"run-{n}",
            verify_timeout=10,
        )
        assert again.ok and again.outcome == "pending", again.summary_lines()
        assert [describe(p.change) for p in again.pending] == [
            "assign group ICU to Clinical (rank 1)",
            "assign group Facilities to Clinical (rank 3)",
        ]
        assert all("run run-1 sent it at" in p.shows for p in again.pending)
    assert mem.writes == sent  # nothing removed and re-added again
    lagging.settle()
    assert not diff(lagging.read(), want)


def test_a_409_on_an_add_the_group_already_holds_counts_as_done_or_pending():
    mem = MemoryBackend(hospital())
    want = DesiredState(group_assignments=[DesiredGroupAssignment("ICU", "Clinical", 4)])
    current = mem.read()
    plan = diff(current, want)
    # The add landed earlier (a lost answer, or another journal's run); reads show it already.
    mem.add_group_assignment("g-icu", "Clinical", 4)
    result = run(plan, LaggingBackend(mem), current, verify=False)
    assert result.ok and not result.pending
    # Reads do not show it yet: pending, not failed.
    mem2 = MemoryBackend(hospital())
    current2 = mem2.read()
    lagging = LaggingBackend(mem2)
    mem2.add_group_assignment("g-icu", "Clinical", 4)
    result2 = run(diff(current2, want), lagging, current2, verify=False)
    assert result2.ok and [p.shows for p in result2.pending] == [
        "the service says the group already has a messaging policy assignment, but reads do "
        "not show it yet (a write still propagating)"
    ]
    # Another policy there: the 409 stands, and says what the group holds.
    mem3 = MemoryBackend(hospital())
    current3 = mem3.read()
    mem3.add_group_assignment("g-icu", "Kitchen", 4)
    with pytest.raises(ApplyFailed) as err:
        run(diff(current3, want), LaggingBackend(mem3), current3, verify=False)
    assert "already holds policy Kitchen (rank 4), not Clinical" in str(err.value)


class ForbiddenBulkBackend(Wrapper):
    def assign_users(self, assignments):
        from bridge.errors import ForbiddenError

        raise ForbiddenError("403 from Graph: needs TeamsPolicyUserAssign.ReadWrite.All")


def test_a_403_in_the_bulk_step_gives_the_role_advice_and_counts_the_request():
    mem, current, plan = user_plan()
    with pytest.raises(ApplyFailed) as err:
        run(plan, ForbiddenBulkBackend(mem), current)
    assert "give the app's service principal the Teams Administrator directory role" in str(
        err.value
    )
    assert err.value.result.write_requests == 1


class CorrelatedBackend(Wrapper):
    """A transport whose last correlation id changes with every write."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.n = 0

    def last_write(self):
        from bridge.backends.base import WriteReceipt

        return WriteReceipt(f"corr-{self.n}" if self.n else None)

    def _call(self, op, fn, *args):
        self.n += 1
        return fn(*args)


def test_bulk_user_entries_carry_their_requests_correlation_id(tmp_path):
    mem, current, plan = user_plan()
    path = tmp_path / "j.jsonl"
    run(plan, CorrelatedBackend(mem), current, journal=Journal(path))
    entries = [json.loads(x) for x in path.read_text().splitlines()]
    ok = [e for e in entries if e["event"] == "change" and e["result"] == "ok"]
    assert [(e["change"].get("bulk", False), e["correlation_id"]) for e in ok] == [
        (True, "corr-1"),
        (False, "corr-1"),
    ]


class TerminatedBackend(Wrapper):
    """SIGTERM arrives while the add of ``group_id`` is on its way (a scheduler stops the job)."""

    def __init__(self, inner, group_id) -> None:
        super().__init__(inner)
        self.group_id = group_id
        self.fired = False

    def _call(self, op, fn, *args):
        import os
        import signal

        if op == "add_group_assignment" and args[0] == self.group_id and not self.fired:
            self.fired = True
            os.kill(os.getpid(), signal.SIGTERM)
        return fn(*args)


def test_sigterm_mid_replacement_puts_the_group_back_and_closes_the_journal(tmp_path):
    import signal

    from bridge.apply import Terminated

    mem, current, plan = fresh()
    path = tmp_path / "j.jsonl"
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated):
        run(plan, TerminatedBackend(mem, "g-fac"), current, journal=Journal(path))
    assert signal.getsignal(signal.SIGTERM) is before
    restored = mem.state.group_assignments["g-fac"]
    assert (restored.policy, restored.rank) == ("Kitchen", 2)
    entries = [json.loads(x) for x in path.read_text().splitlines()]
    assert entries[-1]["event"] == "run_finished" and entries[-1]["result"] == "interrupted"
    assert [
        e["result"]
        for e in entries
        if e.get("change", {}).get("kind") == "restore_group_assignment"
    ] == ["ok"]


class ChunkedBackend(Wrapper):
    """Bulk assigns in chunks of two, each its own request; the ``deny_at``-th (1-based) answers
    403 and stops the call, with the partial result attached as the backends do."""

    def __init__(self, inner, deny_at: int | None = None) -> None:
        super().__init__(inner)
        self.deny_at = deny_at

    def assign_users(self, assignments):
        from bridge.backends.base import ChunkResult
        from bridge.errors import ForbiddenError

        result = BulkResult(requested=len(assignments))
        for n, start in enumerate(range(0, len(assignments), 2), start=1):
            chunk = list(assignments[start : start + 2])
            ids = tuple(u for u, _ in chunk)
            result.write_requests += 1
            result.operation_ids.append(f"op-{n}")
            if n == self.deny_at:
                exc = ForbiddenError("403 from Graph: forbidden", correlation_id=f"corr-{n}")
                result.failures.extend(UserFailure(u, str(exc)) for u in ids)
                result.chunks.append(ChunkResult(ids, f"op-{n}", f"corr-{n}", str(exc)))
                exc.partial = result
                raise exc
            self.inner.assign_users(chunk)
            result.succeeded += len(ids)
            result.chunks.append(ChunkResult(ids, f"op-{n}", f"corr-{n}"))
        return result


def five_user_plan():
    mem = MemoryBackend(hospital())
    current = mem.read()
    want = DesiredState(
        user_assignments=[
            DesiredUserAssignment(f"user{i}@contoso.org", "Clinical") for i in (1, 2, 3, 4, 5)
        ]
    )
    return mem, current, diff(current, want)


def _user_lines(path):
    entries = [json.loads(x) for x in path.read_text().splitlines()]
    return [
        (e["change"]["user_id"], e["result"], e["correlation_id"], e.get("operation_id"))
        for e in entries
        if e["event"] == "change" and "user_id" in e["change"] and e["result"] != "started"
    ]


def test_a_bulk_call_stopped_part_way_journals_each_user_with_its_chunks_outcome(tmp_path):
    mem, current, plan = five_user_plan()
    path = tmp_path / "j.jsonl"
    with pytest.raises(ApplyFailed) as err:
        run(plan, ChunkedBackend(mem, deny_at=2), current, journal=Journal(path))
    assert _user_lines(path) == [
        ("u1", "ok", "corr-1", "op-1"),
        ("u2", "ok", "corr-1", "op-1"),
        ("u3", "failed", "corr-2", "op-2"),
        ("u4", "failed", "corr-2", "op-2"),
        ("u5", "not_attempted", None, None),
    ]
    result = err.value.result
    assert [_uid(c) for c in result.applied] == ["u1", "u2"]
    assert [(_uid(f.change), f.correlation_id) for f in result.failed] == [
        ("u3", "corr-2"),
        ("u4", "corr-2"),
    ]
    assert [_uid(c) for c in result.not_attempted] == ["u5"]
    assert result.write_requests == 2
    assert "Teams Administrator directory role" in str(err.value)
    assert "may have been applied" not in path.read_text()
    assert {u for u, a in mem.state.user_assignments.items() if a.policy == "Clinical"} >= {
        "u1",
        "u2",
    }


def test_bulk_users_of_several_requests_carry_their_own_requests_ids(tmp_path):
    mem, current, plan = five_user_plan()
    path = tmp_path / "j.jsonl"
    run(plan, ChunkedBackend(mem), current, journal=Journal(path), verify=False)
    assert [line[1:] for line in _user_lines(path)] == [
        ("ok", "corr-1", "op-1"),
        ("ok", "corr-1", "op-1"),
        ("ok", "corr-2", "op-2"),
        ("ok", "corr-2", "op-2"),
        ("ok", "corr-3", "op-3"),
    ]


def _uid(change):
    return change.user_id


class OneGroupReadBackend(LaggingBackend):
    """Answers a group's assignment on its own; a whole read would be a failure here."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.asked: list[str] = []

    def read(self, wanted=ALL):
        raise AssertionError("a 409 on one group must not read the whole tenant")

    def group_assignment(self, group_id):
        self.asked.append(group_id)
        return self.inner.state.group_assignments.get(group_id)


def test_a_409_on_a_group_add_reads_only_that_group():
    mem = MemoryBackend(hospital())
    want = DesiredState(group_assignments=[DesiredGroupAssignment("ICU", "Clinical", 4)])
    current = mem.read()
    plan = diff(current, want)
    mem.add_group_assignment("g-icu", "Clinical", 4)  # landed earlier: the add answers 409
    backend = OneGroupReadBackend(mem)
    result = run(plan, backend, current, verify=False)
    assert result.ok and backend.asked == ["g-icu"]


def test_held_back_and_verification_lines_are_not_later_writes_for_a_saved_plan(tmp_path):
    import datetime as dt

    base = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
    t = FakeTime()
    journal = Journal(tmp_path / "j.jsonl", now=lambda: base + dt.timedelta(seconds=t.now))
    mem = MemoryBackend(hospital())
    lagging = LaggingBackend(mem)
    want = rerank_desired()
    state = lagging.read()
    # Sends at 0 s, verification gives up (pending) at 10 s.
    first = run(diff(state, want), lagging, state, time=t, journal=journal, verify_timeout=10)
    assert first.pending
    assert journal.writes_after(TENANT, base + dt.timedelta(seconds=5)) is None
    # A scheduled run 15 minutes later holds the re-rank back: it sends nothing.
    t.now = 15 * 60.0
    state = lagging.read()
    again = run(
        diff(state, want), lagging, state, time=t, journal=journal, run_id="run-2", verify=False
    )
    assert again.outcome == "pending"
    assert journal.writes_after(TENANT, base + dt.timedelta(minutes=10)) is None
    # The sends themselves still count.
    assert journal.writes_after(TENANT, base - dt.timedelta(seconds=1))["run_id"] == "run-1"


class LateRemovalBackend(LaggingBackend):
    """A removal the service accepted but carries out only later: until reads of the tenant
    (or of a group) have been answered ``lands_after`` times, the group still holds its old row
    on the write side (an add answers 409) and on reads; then the removal takes effect."""

    def __init__(self, inner, lands_after: int) -> None:
        super().__init__(inner)
        self.lands_after = lands_after
        self.reads = 0
        self.removing: list[str] = []

    def remove_group_assignment(self, group_id):
        self.removing.append(group_id)  # accepted: the call returns, nothing changes yet

    def read(self, wanted=ALL):
        state = super().read(wanted)
        self.reads += 1
        if self.reads == self.lands_after:
            for group_id in self.removing:
                self.inner.remove_group_assignment(group_id)
            self.removing.clear()
            self.settle()
        return state


def planned_groups(*assignments):
    """The hospital, the desired group assignments, and the plan between them."""
    mem = MemoryBackend(hospital())
    current = mem.read()
    want = DesiredState(group_assignments=list(assignments))
    return mem, current, want, diff(current, want)


def rerank_facilities():
    mem, current, want, plan = planned_groups(
        DesiredGroupAssignment("Facilities", "Kitchen", 1),
        DesiredGroupAssignment("Clinicians", "Clinical", 2),
        DesiredGroupAssignment("Pilots", "Old Pilot", 3),
    )
    assert [describe(c) for c in plan.changes] == ["assign group Facilities to Kitchen (rank 1)"]
    return mem, current, want, plan


def _journal_results(path):
    return [
        (e["change"]["kind"], e["result"])
        for e in map(json.loads, path.read_text().splitlines())
        if e["event"] == "change"
    ]


def test_a_409_on_a_rerank_add_while_the_old_row_shows_is_pending_and_the_next_run_adds_it(
    tmp_path,
):
    """The service accepted the removal but still holds the old row, so it refuses the add:
    pending (not a failure every re-run repeats while reads lag), and the first run after the
    removal lands adds the group: it is never without its policy for longer than one run."""
    mem, current, want, plan = rerank_facilities()
    path = tmp_path / "j.jsonl"
    backend = LateRemovalBackend(mem, lands_after=3)
    result = run(plan, backend, current, journal=Journal(path), verify=False)
    assert result.ok and not result.failed
    (pending,) = result.pending
    assert "still holds that row (Kitchen, rank 2), so it refused the add" in str(pending)
    assert "then has none until apply runs again, which adds it" in str(pending)
    # Nothing put back (it would be refused too, and is not needed: the old row is there).
    assert _journal_results(path) == [
        ("set_group_assignment", "started"),
        ("remove_group_assignment", "ok"),
        ("set_group_assignment", "pending"),
    ]
    assert mem.state.group_assignments["g-fac"].policy == "Kitchen"

    # A re-run while reads still show the old row: the same replacement, held back as pending.
    state = backend.read()
    again = diff(state, want)
    assert [describe(c) for c in again.changes] == ["assign group Facilities to Kitchen (rank 1)"]
    second = run(again, backend, state, journal=Journal(path), run_id="run-2", verify=False)
    assert second.ok and len(second.pending) == 1 and second.write_requests == 0

    # The removal lands (on the third read): the group has no assignment, and the next run
    # adds it.
    assert "g-fac" in backend.read().group_assignments
    state = backend.read()
    assert "g-fac" not in state.group_assignments
    third_plan = diff(state, want)
    third = run(third_plan, backend, state, journal=Journal(path), run_id="run-3", verify=False)
    assert third.ok and not third.pending
    assert (mem.state.group_assignments["g-fac"].policy, mem.state.ranked_groups()[0].group_id) == (
        "Kitchen",
        "g-fac",
    )


class RemovalLandsBeforeReadBackend(LateRemovalBackend):
    """As ``LateRemovalBackend``, but the removal lands just before the read that counts."""

    def read(self, wanted=ALL):
        if self.reads + 1 == self.lands_after:
            for group_id in self.removing:
                self.inner.remove_group_assignment(group_id)
            self.removing.clear()
            self.settle()
        self.reads += 1
        return LaggingBackend.read(self, wanted)


def test_a_rerank_whose_removal_lands_while_its_409_is_read_back_sends_the_add_again():
    mem, current, _, plan = rerank_facilities()
    # The removal lands as the add's 409 is read back: reads show no row, so the add is sent
    # once more and goes in, instead of the group being left with none.
    backend = RemovalLandsBeforeReadBackend(mem, lands_after=1)
    result = run(plan, backend, current, verify=False)
    assert result.ok and not result.pending and result.write_requests == 3
    assert mem.state.ranked_groups()[0] == GroupAssignment("g-fac", "Kitchen", 1, "Facilities")


class RemovedBeforeBackend(LaggingBackend):
    """An earlier run removed the group's assignment and was killed (``kill -9``) before its
    add: the write side holds no row (a removal answers 404, as the service does), reads still
    show it."""

    def remove_group_assignment(self, group_id):
        from bridge.errors import NotFoundError

        if group_id not in self.inner.state.group_assignments:
            raise NotFoundError(
                f"404 from Teams admin API: Group '{group_id}' has no TeamsMessagingPolicy "
                "assignment",
                status=404,
            )
        return super().remove_group_assignment(group_id)


def test_a_rerank_killed_between_removal_and_add_completes_on_the_next_run(tmp_path):
    mem, _, want, plan = rerank_facilities()
    backend = RemovedBeforeBackend(mem)
    mem.remove_group_assignment("g-fac")  # the killed run's removal; reads do not show it
    path = tmp_path / "j.jsonl"
    state = backend.read()
    assert state.group_assignments["g-fac"].policy == "Kitchen"
    again = diff(state, want)
    assert again.changes == plan.changes
    result = run(again, backend, state, journal=Journal(path), verify_timeout=10)
    # Added at once; reads lag, so it is pending, not failed.
    assert result.ok and [describe(p.change) for p in result.pending] == [
        "assign group Facilities to Kitchen (rank 1)"
    ]
    assert mem.state.ranked_groups()[0] == GroupAssignment("g-fac", "Kitchen", 1, "Facilities")
    lines = [e for e in map(json.loads, path.read_text().splitlines()) if e["event"] == "change"]
    (removal,) = [x for x in lines if x["change"]["kind"] == "remove_group_assignment"]
    assert removal["result"] == "ok" and removal["change"]["already_removed"] is True
    assert "has no TeamsMessagingPolicy assignment" in removal["error"]
    backend.settle()
    assert not diff(backend.read(), want)


def test_a_removal_that_404s_because_it_already_happened_is_done():
    mem, current, _, plan = planned_groups(
        DesiredGroupAssignment("Facilities", "Kitchen", 2),
        DesiredGroupAssignment("Clinicians", "Clinical", 1),
        DesiredGroupAssignment("Pilots", "Old Pilot", 3, absent=True),
    )
    assert [describe(c) for c in plan.changes] == ["unassign group Pilots from Old Pilot"]
    backend = RemovedBeforeBackend(mem)
    mem.remove_group_assignment("g-pilot")
    result = run(plan, backend, current, verify=False)
    assert result.ok and result.applied == plan.changes


class AddFailsThenRestoreConflictsBackend(Wrapper):
    """The replacement's add fails; putting the old row back answers 409, though reads show the
    group with no assignment."""

    def __init__(self, inner, group_id) -> None:
        super().__init__(inner)
        self.group_id = group_id
        self.adds = 0

    def _call(self, op, fn, *args):
        from bridge.errors import ConflictError

        if op == "add_group_assignment" and args[0] == self.group_id:
            self.adds += 1
            if self.adds == 1:
                raise ServerError("503 from Teams admin API on add", status=503)
            raise ConflictError("409 from Teams admin API: already has an assignment", status=409)
        return fn(*args)


def test_a_409_on_putting_the_old_row_back_reads_the_group_before_saying_it_has_one():
    mem, current, plan = fresh()
    backend = AddFailsThenRestoreConflictsBackend(mem, "g-fac")
    with pytest.raises(ApplyFailed) as err:
        run(plan, backend, current)
    (failed,) = err.value.result.failed
    assert failed.left_without_policy
    assert "reads show no assignment: group Facilities has NO messaging policy now" in str(
        err.value
    )


class LostBatchBackend(Wrapper):
    """Submits one batch operation, then reading its outcome fails: the batch was submitted and
    may still run (unknown), and the chunk carries the error that stopped the polling, as the
    PowerShell backend reports it."""

    def assign_users(self, assignments):
        from bridge.backends.base import ChunkResult

        ids = tuple(u for u, _ in assignments)
        exc = ServerError("reading batch operation op-7 failed: pwsh exited", status=None)
        result = BulkResult(requested=len(ids), write_requests=1, operation_ids=["op-7"])
        check = "Get-CsBatchPolicyAssignmentOperation -Identity op-7"
        result.chunks.append(ChunkResult(ids, "op-7", error=str(exc), unknown=True, check=check))
        exc.partial = result
        raise exc


def test_a_submitted_batch_whose_outcome_was_not_read_stays_started_not_failed(tmp_path):
    mem, current, plan = user_plan()
    path = tmp_path / "j.jsonl"
    with pytest.raises(ApplyFailed) as err:
        run(plan, LostBatchBackend(mem), current, journal=Journal(path))
    entries = [json.loads(x) for x in path.read_text().splitlines()]
    users = [
        (e["change"]["user_id"], e["result"], e.get("operation_id"))
        for e in entries
        if e["event"] == "change" and "user_id" in e["change"]
    ]
    assert users == [("u3", "started", "op-7")]
    assert "Get-CsBatchPolicyAssignmentOperation -Identity op-7" in str(err.value)


def test_a_group_left_without_policy_gets_the_least_override_its_rerun_needs():
    mem, current, plan = fresh()
    # Within the limits: just run again.
    with pytest.raises(ApplyFailed) as err:
        run(plan, FailingAddBackend(mem, "g-fac"), current, limits=SafetyLimits(3, 0.7))
    assert str(err.value).endswith(
        "group Facilities has no messaging policy now: run 'teams-bridge apply FILE' again to "
        "assign it (within the safety limits)"
    )
    # The re-run still deletes Old Pilot: that limit's own option, still not --force.
    mem, current, plan = fresh()
    with pytest.raises(ApplyFailed) as err:
        run(plan, FailingAddBackend(mem, "g-fac"), current, limits=SafetyLimits(0, 0.7))
    assert "run 'teams-bridge apply FILE --max-policy-deletes 1' to assign it again" in str(
        err.value
    )
    assert "--force" not in str(err.value)


class TermDuringVerificationBackend(DelayedBackend):
    """SIGTERM arrives on the first read back after the writes (verification)."""

    def read(self, wanted=ALL):
        import os
        import signal

        if self.reads == 0:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().read(wanted)


class _Outside(Exception):
    pass


def test_sigterm_during_verification_closes_the_run_in_the_journal(tmp_path):
    import signal

    from bridge.apply import Terminated, interrupted_result

    def outside(signum, frame):  # without apply's handler, this one (not the default) fires
        raise _Outside("SIGTERM reached the test's handler: apply had none installed")

    mem, current, plan = user_plan()
    path = tmp_path / "j.jsonl"
    t = FakeTime()
    before = signal.signal(signal.SIGTERM, outside)
    try:
        with pytest.raises(Terminated) as err:
            run(
                plan,
                TermDuringVerificationBackend(mem, t, 90),
                current,
                time=t,
                journal=Journal(path),
            )
        assert signal.getsignal(signal.SIGTERM) is outside
    finally:
        signal.signal(signal.SIGTERM, before)
    entries = [json.loads(x) for x in path.read_text().splitlines()]
    assert entries[-1]["event"] == "run_finished" and entries[-1]["result"] == "interrupted"
    result = interrupted_result(err.value)
    assert result is not None and result.outcome == "interrupted"


def test_sigterm_exits_143_and_ctrl_c_130():
    from bridge.apply import Terminated
    from bridge.cli import _run

    def raises(exc):
        def fn():
            raise exc

        return fn

    with pytest.raises(SystemExit) as term:
        _run(raises(Terminated("stopped by signal 15")))
    assert term.value.code == 143
    with pytest.raises(SystemExit) as ctrl_c:
        _run(raises(KeyboardInterrupt()))
    assert ctrl_c.value.code == 130


class TerminatedThenUndoFailsBackend(TerminatedBackend):
    """SIGTERM while the replacement's add is on its way, and putting the old row back fails."""

    def _call(self, op, fn, *args):
        if op == "add_group_assignment" and args[0] == self.group_id and self.fired:
            raise ServerError("503 from Teams admin API on add", status=503)
        return super()._call(op, fn, *args)

    def add_group_assignment(self, group_id, policy, rank):
        import os
        import signal

        if group_id == self.group_id and not self.fired:
            self.fired = True
            os.kill(os.getpid(), signal.SIGTERM)  # arrives before the add is sent
        return self._call(
            "add_group_assignment", self.inner.add_group_assignment, group_id, policy, rank
        )


def test_an_interrupt_that_leaves_a_group_with_no_policy_says_so(tmp_path):
    from bridge.apply import Terminated, interrupted_result
    from bridge.cli import interrupted_lines

    mem, current, plan = fresh()
    with pytest.raises(Terminated) as err:
        run(
            plan,
            TerminatedThenUndoFailsBackend(mem, "g-fac"),
            current,
            journal=Journal(tmp_path / "j.jsonl"),
        )
    assert "g-fac" not in mem.state.group_assignments
    result = interrupted_result(err.value)
    assert result is not None
    (failed,) = result.failed
    assert failed.left_without_policy
    assert len(result.not_attempted) == 6  # everything after the interrupted replacement
    lines = interrupted_lines(result)
    assert lines[0].startswith("Apply interrupted:")
    assert lines[-1].startswith("error: apply interrupted: ")
    assert (
        "group Facilities has no messaging policy now: run 'teams-bridge apply FILE" in (lines[-1])
    )


def test_over_https_a_rerank_whose_removal_404s_sends_the_add(rsps):
    """The wire of the re-run after a ``kill -9`` between a re-rank's removal and its add: the
    DELETE answers 404 ("has no TeamsMessagingPolicy assignment": the killed run's removal went
    through), and the PATCH follows with the new policy and rank."""
    from http_fixtures import TEAMS, make_client
    from responses import matchers

    from bridge.backends.graph import GraphClient
    from bridge.backends.teams_api import RestBackend, TeamsAdminClient
    from bridge.settings import Settings

    client = make_client()
    settings = Settings.load(
        env_file=None, overrides={"BRIDGE_TEAMS_URL": TEAMS, "BRIDGE_GRAPH_URL": "https://g.test"}
    )
    backend = RestBackend(
        TeamsAdminClient(client, TEAMS), GraphClient(client, "https://g.test"), settings
    )
    url = f"{TEAMS}/Skype.Policy/groupPolicyAssignments/g-fac/policyTypes/TeamsMessagingPolicy"
    rsps.delete(
        url,
        status=404,
        json={
            "error": {
                "code": "NotFound",
                "message": "Group 'g-fac' has no TeamsMessagingPolicy assignment.",
            }
        },
    )
    rsps.patch(
        url,
        match=[matchers.json_params_matcher({"PolicyName": "Kitchen", "Rank": 1})],
        status=204,
    )
    _, current, _, plan = rerank_facilities()
    result = run(plan, backend, current, verify=False)
    assert result.ok and result.applied == plan.changes and result.write_requests == 2
    assert [c.request.method for c in rsps.calls] == ["DELETE", "PATCH"]
