"""Direct user assignments through the MicrosoftTeams module: up to ``GRANT_ONE_BY_ONE_MAX``
users one ``Grant-CsTeamsMessagingPolicy`` each, more in batch operations of ``BATCH_SIZE``
(``New-CsBatchPolicyAssignmentOperation``), at most ``BATCHES_IN_FLIGHT`` at a time, each polled
with ``Get-CsBatchPolicyAssignmentOperation`` until it completes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from ..errors import ApiError, BridgeError, ForbiddenError, InvalidResponseError, UnauthorizedError
from .base import POLICY_TYPE, BulkResult, ChunkResult, UserFailure

log = logging.getLogger(__name__)

BATCH_SIZE = 5000  # the service's limit per batch operation
BATCHES_IN_FLIGHT = 3  # "do not submit more than a few batches at a time"
GRANT_ONE_BY_ONE_MAX = 20  # below this, one Grant per user beats a batch that takes minutes

# One cmdlet call through the backend's pwsh session: (cmdlet, parameters) -> its output.
Call = Callable[[str, Mapping[str, Any]], list[Any]]


def assign(
    call: Call,
    user_ids: list[str],
    policy: str | None,
    result: BulkResult,
    *,
    poll_interval: float,
    batch_timeout: float,
    sleep: Callable[[float], None],
) -> None:
    """Direct assignment of ``policy`` (None removes) to ``user_ids``, into ``result``; an
    error that stops it is raised with ``result`` as its ``partial``."""
    user_ids = list(dict.fromkeys(user_ids))
    result.requested += len(user_ids)
    if not user_ids:
        return
    if len(user_ids) <= GRANT_ONE_BY_ONE_MAX:
        for uid in user_ids:
            result.write_requests += 1
            try:
                call("Grant-CsTeamsMessagingPolicy", {"Identity": uid, "PolicyName": policy})
            except BridgeError as exc:
                result.failures.append(UserFailure(uid, str(exc)))
                result.chunks.append(ChunkResult((uid,), error=str(exc)))
                if isinstance(exc, ForbiddenError | UnauthorizedError) or not isinstance(
                    exc, ApiError
                ):
                    exc.partial = result
                    raise
            else:
                result.succeeded += 1
                result.chunks.append(ChunkResult((uid,)))
        return
    label = policy or "(no direct policy)"
    batches = list(_chunks(user_ids, BATCH_SIZE))
    for wave_start in range(0, len(batches), BATCHES_IN_FLIGHT):
        wave = batches[wave_start : wave_start + BATCHES_IN_FLIGHT]
        submitted: list[tuple[str, list[str]]] = []
        batch: list[str] = []
        try:
            for i, batch in enumerate(wave, start=wave_start + 1):
                out = call(
                    "New-CsBatchPolicyAssignmentOperation",
                    {
                        "PolicyType": POLICY_TYPE,
                        "PolicyName": policy,
                        "Identity": batch,
                        "OperationName": f"teams-bridge: {label} ({i}/{len(batches)})",
                    },
                )
                result.write_requests += 1
                op_id = _operation_id(out)
                result.operation_ids.append(op_id)
                submitted.append((op_id, batch))
                log.info("batch %s: %d users -> %s", op_id, len(batch), label)
            while submitted:
                op_id, batch = submitted[0]
                _collect(call, op_id, batch, result, poll_interval, batch_timeout, sleep)
                submitted.pop(0)
        except BridgeError as exc:
            # The batch in hand failed (its submission, or reading its outcome); the others
            # of this wave were submitted and run on in the tenant, outcome not read.
            failed_op = submitted[0][0] if submitted and submitted[0][1] is batch else None
            result.chunks.append(
                ChunkResult(
                    tuple(batch),
                    failed_op,
                    error=str(exc),
                    unknown=failed_op is not None,
                    check=_check(failed_op) if failed_op else None,
                )
            )
            for op_id, other in submitted:
                if other is not batch:
                    result.chunks.append(
                        ChunkResult(tuple(other), op_id, unknown=True, check=_check(op_id))
                    )
            if failed_op is None:
                result.failures.extend(UserFailure(uid, str(exc)) for uid in batch)
            exc.partial = result
            raise


def _collect(
    call: Call,
    op_id: str,
    batch: list[str],
    result: BulkResult,
    poll_interval: float,
    batch_timeout: float,
    sleep: Callable[[float], None],
) -> None:
    deadline = time.monotonic() + batch_timeout
    while True:
        out = call("Get-CsBatchPolicyAssignmentOperation", {"Identity": op_id})
        status = out[0] if out and isinstance(out[0], dict) else {}
        overall = str(status.get("OverallStatus") or "")
        if overall.casefold() == "completed":
            break
        if time.monotonic() >= deadline:
            raise ApiError(
                f"batch operation {op_id} is still {overall or 'not reported'} after "
                f"{batch_timeout:g}s; it keeps running in the tenant: check it with "
                f"Get-CsBatchPolicyAssignmentOperation -Identity {op_id} and run plan again"
            )
        sleep(poll_interval)
    states = {
        str(s.get("Id", "")).casefold(): s
        for s in status.get("UserState") or ()
        if isinstance(s, dict)
    }
    for uid in batch:
        state = states.get(uid.casefold())
        outcome = str(state.get("Result") or "") if state else ""
        if outcome.casefold() == "success":
            result.succeeded += 1
        else:
            result.failures.append(
                UserFailure(
                    uid, outcome or f"batch operation {op_id} reported no result for this user"
                )
            )
    result.chunks.append(ChunkResult(tuple(batch), op_id))


def _check(op_id: str) -> str:
    """How an admin reads a batch operation's outcome."""
    return f"Get-CsBatchPolicyAssignmentOperation -Identity {op_id}"


def _operation_id(out: list[Any]) -> str:
    first = out[0] if out else None
    if isinstance(first, dict):
        first = first.get("OperationId")
    if not isinstance(first, str) or not first:
        raise InvalidResponseError(
            f"New-CsBatchPolicyAssignmentOperation returned no operation id: {out!r}"
        )
    return first


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
