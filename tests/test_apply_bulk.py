"""apply.bulk: a bulk call's outcome per user, from what the backend reported. Pure: no backend,
no journal."""

from __future__ import annotations

import pytest

from bridge.apply.bulk import UserOutcome, bulk_note, bulk_outcomes
from bridge.backends.base import BulkResult, ChunkResult, UserFailure
from bridge.errors import ForbiddenError, ServerError
from bridge.plan import RemoveUserAssignment, SetGroupAssignment, SetUserAssignment


def users(*ids: str) -> list[SetUserAssignment]:
    return [SetUserAssignment(u, f"{u}@contoso.org", "Clinical") for u in ids]


def test_every_user_of_a_call_that_went_through_is_ok_with_its_requests_ids():
    step = users("u1", "u2", "u3")
    result = BulkResult(
        requested=3,
        succeeded=3,
        write_requests=2,
        chunks=[ChunkResult(("u1", "u2"), "op-1", "c-1"), ChunkResult(("u3",), "op-2", "c-2")],
    )
    out = bulk_outcomes(step, result, None, one_request_id="ignored: two requests")
    assert [(o.change.user_id, o.result, o.correlation_id, o.operation_id) for o in out] == [
        ("u1", "ok", "c-1", "op-1"),
        ("u2", "ok", "c-1", "op-1"),
        ("u3", "ok", "c-2", "op-2"),
    ]
    assert bulk_note("assign", out, result, None) is None


def test_one_request_without_chunk_ids_gives_its_id_to_every_user():
    step = [RemoveUserAssignment("u1", None, "Kitchen"), RemoveUserAssignment("u2", None, "X")]
    result = BulkResult(requested=2, succeeded=2, write_requests=1)
    out = bulk_outcomes(step, result, None, one_request_id="c-only")
    assert [o.correlation_id for o in out] == ["c-only", "c-only"]


def test_per_user_failures_fail_those_users_only():
    step = users("u1", "u2")
    result = BulkResult(
        requested=2, succeeded=1, write_requests=1, failures=[UserFailure("u2", "not licensed")]
    )
    out = bulk_outcomes(step, result, None)
    assert [(o.result, o.why) for o in out] == [("ok", None), ("failed", "not licensed")]
    assert bulk_note("assign", out, result, None) == "1 of 2 user(s) failed"


def test_a_call_stopped_by_a_403_gives_the_role_advice_to_that_requests_users_only():
    step = users("u1", "u2", "u3")
    stop = ForbiddenError("403: ADVICE [PUT /x]", hint="ADVICE", brief="403 [PUT /x]")
    result = BulkResult(
        requested=3,
        write_requests=2,
        chunks=[
            ChunkResult(("u1",), "op-1", "c-1"),
            ChunkResult(("u2",), "op-2", "c-2", str(stop)),
        ],
    )
    out = bulk_outcomes(step, result, stop)
    assert out == [
        UserOutcome(step[0], "ok", None, "c-1", "op-1"),
        UserOutcome(
            step[1], "failed", "403 [PUT /x]", "c-2", "op-2", forbidden=True, hint="ADVICE"
        ),
        UserOutcome(step[2], "not_attempted", f"not sent: the call stopped ({stop})"),
    ]
    assert bulk_note("assign", out, result, stop) == (
        f"assign stopped after 2 request(s): {stop}; 1 user(s) failed, 1 not attempted"
    )


def test_a_batch_whose_outcome_was_not_read_is_started_with_how_to_check_it():
    step = users("u1")
    stop = ServerError("reading op-7 failed")
    chunk = ChunkResult(("u1",), "op-7", error=str(stop), unknown=True, check="look at op-7")
    out = bulk_outcomes(step, BulkResult(requested=1, write_requests=1, chunks=[chunk]), stop)
    assert out[0].result == "started" and out[0].operation_id == "op-7"
    assert out[0].why == (
        "sent in batch operation op-7, but the run stopped before its outcome was read "
        "(reading op-7 failed): check it with look at op-7"
    )


def test_only_user_changes_are_bulk():
    with pytest.raises(TypeError, match="not a user change"):
        bulk_outcomes([SetGroupAssignment("g", None, "Clinical", 1)], BulkResult(), None)
