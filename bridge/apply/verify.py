"""Verification: read the tenant back until every change the service accepted shows as the plan
says it should, or the time is up (then it is pending, never failed)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..backends.base import Backend, Wanted
from ..errors import BridgeError
from ..plan import Change
from ..state import TenantState
from .kinds import kind_of
from .result import ApplyFailed, ApplyResult, PendingChange


def mismatches(
    changes: Sequence[Change], expected: TenantState, observed: TenantState
) -> list[tuple[Change, str]]:
    """Each of ``changes`` whose outcome ``observed`` does not show, with what it shows."""
    out = []
    for c in changes:
        why = kind_of(c).mismatch(c, expected, observed)
        if why is not None:
            out.append((c, why))
    return out


def verify(
    backend: Backend,
    result: ApplyResult,
    expected: TenantState,
    held: Sequence[PendingChange],
    *,
    wanted: Wanted,
    timeout: float,
    poll_interval: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    progress: Callable[[str], None],
) -> list[PendingChange]:
    """Fills ``result.applied`` and ``result.pending``; returns the changes verification left
    pending (``held``: accepted earlier, not polled). Raises ``ApplyFailed`` when a read fails."""
    r = result
    # Everything the service accepted is polled until it shows or the time is up; writes
    # surface on reads after 30-45 s (policies) up to hours (assignments), so what has not
    # shown by then is pending, never failed.
    held_ids = {id(p.change) for p in held}
    still_open = [c for c in r.done if id(c) not in held_ids]
    pending: list[PendingChange] = []
    start = clock()
    while still_open:
        try:
            observed = backend.read(wanted)
        except BridgeError as exc:
            message = (
                f"all {len(r.done)} changes were accepted but reading the tenant back "
                f"failed: {exc}; run plan to see where it stands"
            )
            r.applied = list(r.done)
            raise ApplyFailed(message, r) from exc
        wrong = mismatches(still_open, expected, observed)
        still_open = [c for c, _ in wrong]
        waited = clock() - start
        if wrong and waited >= timeout:
            pending.extend(PendingChange(c, waited, why) for c, why in wrong)
            still_open = []
        if not still_open:
            break
        progress(f"verifying: {len(still_open)} change(s) not visible yet after {waited:.0f} s")
        sleep(max(min(poll_interval, timeout - waited), 0.0))

    unverified = {id(p.change) for p in pending} | held_ids
    r.applied = [c for c in r.done if id(c) not in unverified]
    r.pending = list(held) + pending
    r.verified = True
    return pending
