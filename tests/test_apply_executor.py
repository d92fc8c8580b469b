"""apply.executor and apply.kinds: what the run is given it uses as given (the plan, the
freshness check), an interrupt carries its result in a declared place, every change kind has
its entry in the one table. Whole runs are in test_apply.py."""

from __future__ import annotations

import json

import pytest
from test_apply import TENANT, FakeTime, Wrapper, fresh, run

from bridge.apply import ApplyResult, interrupted_result
from bridge.apply.executor import Executor, _steps
from bridge.apply.kinds import KINDS, kind_of
from bridge.errors import Interrupted, StalePlanError
from bridge.journal import Journal, RunJournal
from bridge.plan import CHANGE_KINDS, Plan, UpdatePolicy
from bridge.state import SafetyLimits


def test_every_change_kind_has_its_entry_in_the_one_table():
    assert set(KINDS) == set(CHANGE_KINDS.values())
    with pytest.raises(TypeError, match="unknown change"):
        kind_of(object())  # type: ignore[arg-type]


def test_user_changes_of_one_kind_are_one_step_every_other_change_its_own():
    _, _, plan = fresh()
    steps = _steps(sorted(plan.changes, key=lambda c: c.order))
    assert [(s[0].kind, len(s)) for s in steps] == [
        ("update_policy", 1),
        ("update_policy", 1),
        ("create_policy", 1),
        ("set_group_assignment", 1),
        ("set_group_assignment", 1),
        ("set_user_assignment", 2),
        ("remove_user_assignment", 1),
        ("remove_group_assignment", 1),
        ("delete_policy", 1),
    ]


def test_the_executor_keeps_the_plan_it_is_given_with_its_safety_limits():
    mem, current, plan = fresh()
    plan.safety = SafetyLimits(max_policy_deletes=0)
    t = FakeTime()
    run_ = Executor(
        plan,
        mem,
        current,
        RunJournal(None, "run-1", TENANT),
        limits=SafetyLimits(),
        clock=t.clock,
        sleep=t.sleep,
        progress=lambda _m: None,
    )
    assert run_.plan is plan and run_.plan.safety.max_policy_deletes == 0


def test_a_plan_the_caller_checked_is_not_checked_again():
    mem, current, _ = fresh()
    stale = Plan([UpdatePolicy("Clinical", {"Description": ("Doctors", "x")})], TENANT, "old")
    with pytest.raises(StalePlanError):
        run(stale, mem, current)
    assert mem.writes == []
    # fresh=True: the caller made the plan from ``current``, or ran check_fresh already.
    assert run(stale, mem, current, fresh=True).ok


class CtrlC(Wrapper):
    def _call(self, op, fn, *args):
        if op == "create_policy":
            raise KeyboardInterrupt
        return fn(*args)


def test_ctrl_c_mid_apply_is_raised_as_interrupted_carrying_what_was_done(tmp_path):
    mem, current, plan = fresh()
    path = tmp_path / "j.jsonl"
    with pytest.raises(Interrupted) as err:
        run(plan, CtrlC(mem), current, journal=Journal(path))
    assert isinstance(err.value, KeyboardInterrupt) and err.value.exit_code == 130
    result = interrupted_result(err.value)
    assert isinstance(result, ApplyResult) and result.outcome == "interrupted"
    # The write in hand is failed (its answer never read), the rest not attempted.
    assert (len(result.applied), len(result.failed), len(result.not_attempted)) == (2, 1, 7)
    assert json.loads(path.read_text().splitlines()[-1])["result"] == "interrupted"


def test_a_bug_is_not_an_interrupt_and_carries_no_result():
    assert interrupted_result(KeyError("bug")) is None
    assert interrupted_result(KeyboardInterrupt()) is None


def test_a_run_without_a_journal_writes_no_line(tmp_path):
    j = RunJournal(None, "run-1", TENANT)
    j.run_started(changes=1, summary={}, state_checksum="x", desired_sha256="")
    j.ok({"kind": "delete_policy", "policy": "X"})
    j.restore("g", "G", "Kitchen", 1)
    j.finished("ok")
    assert list(tmp_path.iterdir()) == []
