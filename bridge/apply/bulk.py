"""A bulk step's outcome user by user, from what the backend reported (``bulk_outcomes``: pure,
no backend, no journal), and how the outcomes are recorded in the run's result and journal."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from ..backends.base import BulkResult
from ..errors import BridgeError, ForbiddenError, brief
from ..journal import RunJournal
from ..plan import Change, RemoveUserAssignment, SetUserAssignment
from .result import ApplyResult, FailedChange

log = logging.getLogger(__name__)


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


def record_outcomes(
    result: ApplyResult,
    journal: RunJournal,
    verb: str,
    outcomes: Sequence[UserOutcome],
    bulk: BulkResult,
    stopped: BridgeError | None,
    correlation_id: str | None,
) -> bool:
    """Each user's outcome into ``result``, and the step's lines (a summary, then one per user)
    into the journal at once. False when any user did not go through (the run stops)."""
    for o in outcomes:
        if o.result == "ok":
            result.done.append(o.change)
        elif o.result == "not_attempted":
            result.not_attempted.append(o.change)
        else:
            why = o.why or "failed"
            result.failed.append(
                FailedChange(o.change, why, o.correlation_id, o.forbidden, hint=o.hint)
            )
    lines = [
        journal.line(
            o.change.data(),
            o.result,
            o.why,
            correlation_id=None if o.result in ("started", "not_attempted") else o.correlation_id,
            operation_id=o.operation_id,
        )
        for o in outcomes
    ]
    note = bulk_note(verb, outcomes, bulk, stopped)
    summary = {
        "kind": outcomes[0].change.kind if outcomes else None,
        "bulk": True,
        "operation_ids": list(bulk.operation_ids),
        "write_requests": bulk.write_requests,
    }
    head = journal.line(
        summary,
        "failed" if note else "ok",
        note,
        user_count=len(outcomes),
        correlation_id=correlation_id,
    )
    journal.write([head, *lines])
    n_failed = sum(1 for o in outcomes if o.result != "ok")
    unsent = sum(1 for o in outcomes if o.result == "not_attempted")
    log.log(
        logging.WARNING if note else logging.INFO,
        "%s %d user(s): %d ok, %d failed, %d not attempted, operations %s%s",
        verb,
        len(outcomes),
        len(outcomes) - n_failed,
        n_failed - unsent,
        unsent,
        bulk.operation_ids or "-",
        f"; stopped: {stopped}" if stopped is not None else "",
    )
    return not n_failed


def record_lost(
    result: ApplyResult,
    journal: RunJournal,
    step: Sequence[Change],
    verb: str,
    exc: BridgeError,
) -> None:
    """A bulk call raised without saying which of its requests went through: every user is
    failed here, and the re-run's plan shows what is still missing."""
    error = f"{verb} {len(step)} user(s): {brief(exc)}"
    cid = getattr(exc, "correlation_id", None)
    forbidden = isinstance(exc, ForbiddenError)
    hint = getattr(exc, "hint", None)
    result.write_requests += 1
    result.failed.extend(FailedChange(c, error, cid, forbidden, hint=hint) for c in step)
    note = f"{exc} (earlier requests of this bulk call may have been applied)"
    journal.write([journal.line(c.data(), "failed", note) for c in step])
    log.warning("bulk %s failed: %s", verb, exc)
