"""A bulk step's outcome user by user, from what the backend reported: pure, no backend, no
journal (the executor records the outcomes)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..backends.base import BulkResult
from ..errors import BridgeError, ForbiddenError, brief
from ..plan import Change, RemoveUserAssignment, SetUserAssignment


@dataclass(frozen=True)
class UserOutcome:
    """One user of a bulk step. ``result``: ``ok``, ``failed``, ``not_attempted`` (never sent:
    the call stopped first) or ``started`` (sent in a batch whose outcome was not read: it may
    still run, so it is failed for the run but not known to have failed)."""

    change: Change
    result: str
    why: str | None = None
    correlation_id: str | None = None
    operation_id: str | None = None
    forbidden: bool = False
    hint: str | None = None


def user_id(c: Change) -> str:
    if not isinstance(c, SetUserAssignment | RemoveUserAssignment):
        raise TypeError(f"not a user change: {c!r}")
    return c.user_id


def bulk_outcomes(
    step: Sequence[Change],
    result: BulkResult,
    stopped: BridgeError | None,
    *,
    one_request_id: str | None = None,
) -> list[UserOutcome]:
    """Each user of ``step`` with its outcome in ``result``; ``stopped``: the error the call
    stopped on part-way. ``one_request_id``: the correlation id of the call's one request,
    every user's when the backend reports no chunk ids."""
    failures: dict[str, str] = {}
    for f in result.failures:
        failures.setdefault(f.user_id, f.message)
    chunks = {uid: chunk for chunk in result.chunks for uid in chunk.user_ids}
    one_cid = one_request_id if result.write_requests == 1 else None
    forbidden = isinstance(stopped, ForbiddenError)
    out: list[UserOutcome] = []
    for c in step:
        uid = user_id(c)
        chunk = chunks.get(uid)
        cid = (chunk.correlation_id if chunk else None) or one_cid
        op = chunk.operation_id if chunk else None
        if chunk is not None and chunk.unknown:
            # First: a batch submitted and not read back may still run, whatever error the
            # call that stopped polling it carries; it is not known to have failed.
            lost = f" ({chunk.error})" if chunk.error else ""
            why = (
                f"sent in batch operation {op}, but the run stopped before its outcome was "
                f"read{lost}: check it with {chunk.check or 'the service'}"
            )
            out.append(UserOutcome(c, "started", why, cid, op))
        elif uid in failures or (chunk is not None and chunk.error is not None):
            why = failures.get(uid) or (chunk.error if chunk else None) or "failed"
            # The request that raised a 403 gets the role advice (its users' chunk error),
            # once for the run rather than in every user's reason.
            denied = forbidden and chunk is not None and chunk.error is not None
            hint = getattr(stopped, "hint", None) if denied else None
            if denied and stopped is not None and why == str(stopped):
                why = brief(stopped)
            out.append(UserOutcome(c, "failed", why, cid, op, denied, hint))
        elif chunk is None and stopped is not None:
            out.append(UserOutcome(c, "not_attempted", f"not sent: the call stopped ({stopped})"))
        else:
            out.append(UserOutcome(c, "ok", None, cid, op))
    return out


def bulk_note(
    verb: str, outcomes: Sequence[UserOutcome], result: BulkResult, stopped: BridgeError | None
) -> str | None:
    """The error of the bulk step's summary line, None when every user went through."""
    n_failed = sum(1 for o in outcomes if o.result != "ok")
    unsent = sum(1 for o in outcomes if o.result == "not_attempted")
    if stopped is not None:
        return (
            f"{verb} stopped after {len(result.chunks)} request(s): {stopped}; "
            f"{n_failed - unsent} user(s) failed, {unsent} not attempted"
        )
    if n_failed:
        return f"{n_failed} of {len(outcomes)} user(s) failed"
    return None
