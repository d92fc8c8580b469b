"""apply.replace: a group's remove-then-add, the old row put back (``RestoreOutcome``), the 409
and 404 paths and holding back, unit by unit on the memory backend (the whole runs are in
test_apply.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from test_apply import LaggingBackend, Wrapper, hospital

from bridge.apply.replace import GroupWrites, RestoreOutcome
from bridge.apply.result import ApplyResult
from bridge.backends.snapshot import MemoryBackend
from bridge.errors import ConflictError, NotFoundError, ServerError
from bridge.journal import Journal, RunJournal
from bridge.plan import SetGroupAssignment
from bridge.state import GroupAssignment

NOW = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.timezone.utc)
# Facilities (rank 2, Kitchen) moved to Support Staff at rank 2: a replacement.
MOVE = SetGroupAssignment(
    "g-fac", "Facilities", "Support Staff", 2, GroupAssignment("g-fac", "Kitchen", 2, "Facilities")
)


def writes(backend, journal=None, sent=None):
    current = backend.read()
    return GroupWrites(
        backend,
        RunJournal(journal, "run-1", current.tenant_id),
        ApplyResult(run_id="run-1", total=1),
        current,
        sent=sent or {},
        sleep=lambda _s: None,
        receipt=lambda: None,
    )


class AddsFail(Wrapper):
    def __init__(self, inner, error) -> None:
        super().__init__(inner)
        self.error = error

    def add_group_assignment(self, group_id, policy, rank):
        raise self.error


def test_a_restore_that_goes_through_leaves_the_group_with_its_old_policy():
    mem = MemoryBackend(hospital())
    w = writes(mem)
    w.remove_for_replacement(MOVE)
    outcome = w.restore(MOVE)
    assert outcome == RestoreOutcome(
        "; its old assignment (Kitchen) was put back at rank 2, where it was before this step"
    )
    assert mem.state.group_assignments["g-fac"].policy == "Kitchen"
    assert w.result.write_requests == 2  # the removal and the add back


def test_a_restore_that_keeps_failing_says_the_group_has_none_after_every_attempt():
    mem = MemoryBackend(hospital())
    backend = AddsFail(mem, ServerError("503", status=503))
    w = writes(backend)
    mem.remove_group_assignment("g-fac")
    outcome = w.restore(MOVE, attempts=2)
    assert outcome.left_without_policy and not outcome.removal_pending
    assert "back failed too, 2 time(s)" in outcome.note
    assert w.result.write_requests == 2


def test_a_409_on_the_restore_with_the_old_row_on_reads_is_a_removal_still_to_land():
    mem = MemoryBackend(hospital())  # reads still show Kitchen at rank 2
    outcome = writes(AddsFail(mem, ConflictError("409", status=409))).restore(MOVE)
    assert outcome.left_without_policy and outcome.removal_pending
    assert "once the removal takes effect the group has NO messaging policy" in outcome.note


def test_a_removal_that_404s_is_the_removal_already_done():
    class Gone(Wrapper):
        def remove_group_assignment(self, group_id):
            raise NotFoundError("404: no assignment", status=404)

    why = writes(Gone(MemoryBackend(hospital()))).remove("g-fac")
    assert why == "already removed (reads still show it): 404: no assignment"


def test_a_409_whose_group_holds_another_policy_quotes_who_answered():
    mem = MemoryBackend(hospital())
    lag = LaggingBackend(mem)  # adds to a group holding a row answer 409
    add = SetGroupAssignment("g-fac", "Facilities", "Clinical", 2)
    with pytest.raises(ConflictError, match=r"^409 from the service: group Facilities already"):
        writes(lag).add(add)

    said = ConflictError("x", status=409, said_by="New-CsGroupPolicyAssignment")

    class Said(LaggingBackend):
        def add_group_assignment(self, group_id, policy, rank):
            raise said

    with pytest.raises(
        ConflictError, match=r"^New-CsGroupPolicyAssignment: group Facilities"
    ) as err:
        writes(Said(mem)).add(add)
    assert err.value.said_by == "New-CsGroupPolicyAssignment"


def test_an_add_sent_by_an_earlier_run_and_not_shown_yet_is_held_back(tmp_path):
    journal = Journal(tmp_path / "j.jsonl", now=lambda: NOW)
    earlier = {
        "g-fac": {
            "run_id": "run-0",
            "time": (NOW - dt.timedelta(minutes=15)).isoformat(),
            "result": "pending",
            "change": MOVE.data(),
        }
    }
    w = writes(MemoryBackend(hospital()), journal, earlier)
    held = w.held_back(MOVE, "run-1")
    assert held is not None and held.waited == 900.0
    assert held.why.startswith("run run-0 sent it at")
    # The same run, another rank, or another group's state since: sent again.
    assert w.held_back(MOVE, "run-0") is None
    other_rank = SetGroupAssignment("g-fac", "Facilities", "Support Staff", 1, MOVE.existing)
    assert w.held_back(other_rank, "run-1") is None
    assert (
        w.held_back(SetGroupAssignment("g-fac", "Facilities", "Support Staff", 2), "run-1") is None
    )
