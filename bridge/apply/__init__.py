"""Executes a ``Plan`` against a ``Backend``: in the safe order, direct user assignments in bulk,
every step journaled, stopping at the first failure, then verified against what the plan says the
tenant should look like.

Resuming is re-planning: after a failure, ``apply`` run again reads the tenant, diffs, and sends
only what is still missing, so nothing that succeeded is sent twice.

``executor``: the steps, the signal guard, stop at the first failure; ``replace``: a group's
assignment (remove-then-add, restore, the 409 and 404 paths, holding back); ``bulk``: a bulk
call's outcome per user; ``verify``: reading back; ``kinds``: what differs per change kind, in
one table; ``result``: what a run did; ``advice``: the re-run a group left with no policy needs.
"""

from ..errors import Terminated
from .executor import apply_plan, check_fresh, interrupted_result
from .replace import PENDING_WINDOW, RESTORE_ATTEMPTS, RestoreOutcome
from .result import (
    SHOWN,
    ApplyFailed,
    ApplyResult,
    FailedChange,
    PendingChange,
    ServiceWarning,
    describe,
)

__all__ = [
    "PENDING_WINDOW",
    "RESTORE_ATTEMPTS",
    "SHOWN",
    "ApplyFailed",
    "ApplyResult",
    "FailedChange",
    "PendingChange",
    "RestoreOutcome",
    "ServiceWarning",
    "Terminated",
    "apply_plan",
    "check_fresh",
    "describe",
    "interrupted_result",
]
