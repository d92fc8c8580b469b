"""The steps of an apply, in order: each single write (or bulk call) journaled, the run stopped
at the first failure, then handed to verification. SIGTERM, like ^C, closes the run in the
journal wherever it lands."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

from ..backends.base import Backend, Wanted, partial_result
from ..errors import (
    BridgeError,
    ForbiddenError,
    Interrupted,
    StalePlanError,
    TenantMismatchError,
    Terminated,
    brief,
)
from ..journal import Journal, RunJournal
from ..plan import Change, Plan, SetGroupAssignment, simulate, state_checksum
from ..state import SafetyLimits, TenantState
from .advice import rerun_advice
from .bulk import bulk_outcomes, record_lost, record_outcomes
from .kinds import BulkWrite, Kind, Write, kind_of
from .replace import PENDING_WINDOW, GroupWrites, RestoreOutcome
from .result import ApplyFailed, ApplyResult, FailedChange, PendingChange, ServiceWarning
from .verify import verify as verify_writes

log = logging.getLogger(__name__)

_ALL = Wanted()


def check_fresh(plan: Plan, current: TenantState, *, saved: bool = False) -> None:
    """Refuses a plan made for another tenant, or against a tenant that has changed since.

    ``saved``: the plan comes from a file (apply --plan), so its tenant must be verified, not
    assumed: a tenant that cannot be read (None, on either side) refuses it.
    """
    if saved and current.tenant_id is None:
        raise TenantMismatchError(
            f"cannot verify the token's tenant (the Teams token has no readable tenant claim), "
            f"so this saved plan, made for tenant {plan.tenant_id or 'unknown'}, may be applied "
            "to another tenant: refusing it; check the credentials with teams-bridge doctor"
        )
    if saved and plan.tenant_id is None:
        raise TenantMismatchError(
            "this saved plan does not record the tenant it was made for (its tenant could not "
            f"be verified then), so it cannot be checked against tenant {current.tenant_id}: "
            "run plan --out again"
        )
    if (
        plan.tenant_id
        and current.tenant_id
        and plan.tenant_id.casefold() != current.tenant_id.casefold()
    ):
        raise TenantMismatchError(
            f"this plan was made for tenant {plan.tenant_id} but the credentials reach tenant "
            f"{current.tenant_id}: run plan against {current.tenant_id}"
        )
    if state_checksum(current) != plan.state_checksum:
        raise StalePlanError("the tenant changed since this plan was made: run plan again")


def apply_plan(
    plan: Plan,
    backend: Backend,
    current: TenantState,
    *,
    journal: Journal | None,
    run_id: str,
    verify: bool = True,
    verify_timeout: float = 60.0,
    poll_interval: float = 5.0,
    wanted: Wanted = _ALL,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    on_progress: Callable[[str], None] | None = None,
    limits: SafetyLimits | None = None,
    fresh: bool = False,
) -> ApplyResult:
    """Apply ``plan`` (made against ``current``) through ``backend``.

    ``fresh``: the caller made ``plan`` from ``current`` or ran ``check_fresh`` on the two
    already; otherwise it runs here. ``limits``: the safety limits the plan was checked against
    (the defaults when not given); used only to tell, when a group is left with no policy, what
    a re-run needs to pass them.

    Raises ``ApplyFailed`` (an ``ApplyError``) after journaling when a write fails (nothing after
    it is attempted) or a written policy does not read back; assignments that do not show within
    ``verify_timeout`` seconds are returned as ``pending``, not raised.
    """
    if verify and poll_interval <= 0:
        raise ValueError("poll_interval must be positive: verification would read in a busy loop")
    if not fresh:
        check_fresh(plan, current)
    run = Executor(
        plan,
        backend,
        current,
        RunJournal(journal, run_id, current.tenant_id),
        limits=limits or SafetyLimits(),
        clock=clock,
        sleep=sleep,
        progress=on_progress or (lambda _msg: None),
    )
    return run.execute(
        verify=verify, timeout=verify_timeout, poll_interval=poll_interval, wanted=wanted
    )


class Executor:
    """One apply run. Everything it needs is given once, here."""

    def __init__(
        self,
        plan: Plan,
        backend: Backend,
        current: TenantState,
        journal: RunJournal,
        *,
        limits: SafetyLimits,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        progress: Callable[[str], None],
    ):
        self.plan = plan
        # Stable sort: a hand-edited saved plan still runs in the safe order, and changes of one
        # kind (group ranks) keep their relative order.
        self.changes = sorted(plan.changes, key=lambda c: c.order)
        self.backend = backend
        self.current = current
        self.journal = journal
        self.limits = limits
        self.clock = clock
        self.sleep = sleep
        self.progress = progress
        self.result = ApplyResult(run_id=journal.run_id, total=len(self.changes))
        # Accepted earlier (or by the service already) but not visible: pending, not verified.
        self.held: list[PendingChange] = []
        # What earlier runs sent per group and the service may not show yet (see held_back).
        sent: dict[str, dict[str, Any]] = {}
        if journal.journal is not None:
            sent = journal.journal.group_writes(
                journal.tenant, journal.journal.now() - PENDING_WINDOW
            )
        self.groups = GroupWrites(
            backend,
            journal,
            self.result,
            current,
            sent=sent,
            sleep=sleep,
            receipt=self._correlation_id,
        )
        self.started = clock()

    # ------------------------------------------------------------------ what the backend said

    def _correlation_id(self) -> str | None:
        """The id of the request just sent, so a compliance reviewer can trace a change in
        Microsoft's logs (transports without HTTP writes have none)."""
        return self.backend.last_write().correlation_id

    def _warnings(self, change: Change | None = None) -> list[str]:
        """What the service warned since the last call (already logged by the transport),
        recorded for the summary against ``change``; None drops them (leftovers of reads)."""
        said = list(dict.fromkeys(self.backend.take_warnings()))
        if change is not None:
            self.result.warnings.extend(ServiceWarning(change, w) for w in said)
        return said

    # ------------------------------------------------------------------ run

    def execute(
        self, *, verify: bool, timeout: float, poll_interval: float, wanted: Wanted
    ) -> ApplyResult:
        self.journal.run_started(
            changes=len(self.changes),
            summary=self.plan.summary,
            state_checksum=self.plan.state_checksum,
            desired_sha256=self.plan.desired_sha256,
        )
        r = self.result
        steps = _steps(self.changes)
        at: int | None = None  # the step being written
        try:
            # Writes and verification alike: SIGTERM (a scheduler stopping the job) must close
            # the run in the journal wherever it lands.
            with _sigterm_as_interrupt():
                for at, step in enumerate(steps):
                    if not self._step(step):
                        r.not_attempted += [c for later in steps[at + 1 :] for c in later]
                        break
                else:
                    at = None
                if not r.failed:
                    if verify and r.done:
                        self._verify(timeout, poll_interval, wanted)
                    else:
                        self._settle_unverified()
        except ApplyFailed:
            self._finish()  # verification could not read back
            raise
        except BaseException as exc:
            # Not a BridgeError (a bug, ^C, SIGTERM): close the run in the journal, then let it
            # through, carrying what was done (the CLI says if a group was left with no policy).
            r.interrupted = True
            if at is not None:  # stopped while writing: the rest of the plan was not sent
                done = {id(c) for c in r.done} | {id(f.change) for f in r.failed}
                r.not_attempted += [c for later in steps[at:] for c in later if id(c) not in done]
            self._settle_unverified()
            self._finish("interrupted")
            r.rerun_advice = rerun_advice(r, self.current, self.limits)
            if isinstance(exc, Interrupted):
                exc.result = r
            elif isinstance(exc, KeyboardInterrupt):
                raise Interrupted(str(exc) or "interrupted", r) from exc
            raise
        if r.failed and not r.verified:
            self._settle_unverified()
            self._finish()
            r.rerun_advice = rerun_advice(r, self.current, self.limits)
            # The advice is the CLI's error line: said once.
            log.error("apply stopped: %s", r.failure_summary())
            raise ApplyFailed(r.failure_message(), r)
        self._finish()
        if r.failed:
            raise ApplyFailed(r.failure_message(), r)
        return r

    def _finish(self, outcome: str | None = None) -> None:
        r = self.result
        r.duration = self.clock() - self.started
        self.journal.finished(outcome or r.outcome, **r.counts())

    def _settle_unverified(self) -> None:
        """Without verification: what was sent counts as applied, what was held back or is only
        known to the service (a 409) stays pending."""
        r = self.result
        held = {id(p.change) for p in self.held}
        r.applied = [c for c in r.done if id(c) not in held]
        r.pending = list(self.held)

    def _verify(self, timeout: float, poll_interval: float, wanted: Wanted) -> None:
        pending = verify_writes(
            self.backend,
            self.result,
            simulate(self.current, self.plan),
            self.held,
            wanted=wanted,
            timeout=timeout,
            poll_interval=poll_interval,
            clock=self.clock,
            sleep=self.sleep,
            progress=self.progress,
        )
        # Not sends of their own: each re-records a write journaled when it was sent.
        j = self.journal
        j.write([j.line(p.change.data(), "pending", str(p), verification=True) for p in pending])

    # ------------------------------------------------------------------ one step

    def _step(self, step: list[Change]) -> bool:
        """One write (or one bulk call); False when the run must stop."""
        first = step[0]
        kind = kind_of(first)
        if kind.bulk is not None:
            return self._bulk(step, kind)
        group = first if isinstance(first, SetGroupAssignment) else None
        if group is not None:
            held = self.groups.held_back(group, self.journal.run_id)
            if held is not None:
                self._hold(group, held.why, held.waited)
                return True
        self.progress(first.describe())
        self.journal.started(first.data())
        self._warnings()
        removed = False
        try:
            if group is not None and group.existing is not None:
                self.groups.remove_for_replacement(group)
                removed = True
            self.result.write_requests += 1
            conflict = cast(Write, kind.write)(self.groups, first)
        except BridgeError as exc:
            error = brief(exc)  # a 403's advice is said once, in the run's message
            restored = self.groups.restore(group) if removed and group else RestoreOutcome("")
            self.result.failed.append(
                FailedChange(
                    first,
                    error + restored.note,
                    getattr(exc, "correlation_id", None),
                    forbidden=isinstance(exc, ForbiddenError),
                    left_without_policy=restored.left_without_policy,
                    removal_pending=restored.removal_pending,
                    hint=getattr(exc, "hint", None),
                )
            )
            self.journal.failed(first.data(), exc, warnings=self._warnings(first))
            log.warning("%s failed: %s", first.describe(), error + restored.note)
            return False
        except BaseException as exc:
            # ^C or SIGTERM between the removal and the add: nobody may be left on Global.
            why = f"interrupted ({type(exc).__name__}) before its answer was read"
            restored = RestoreOutcome("")
            if removed and group is not None:
                restored = self.groups.restore(group, attempts=1)
                log.error("%s interrupted%s", first.describe(), restored.note)
            self.result.failed.append(
                FailedChange(
                    first,
                    why + restored.note,
                    left_without_policy=restored.left_without_policy,
                    removal_pending=restored.removal_pending,
                )
            )
            raise
        self.result.done.append(first)
        said = self._warnings(first)
        if conflict is not None:
            self.held.append(PendingChange(first, 0.0, conflict))
            self.journal.pending(first.data(), conflict, warnings=said)
            log.info("%s: pending (%s)", first.describe(), conflict)
            return True
        self.journal.ok(first.data(), correlation_id=self._correlation_id(), warnings=said)
        log.info("%s: ok", first.describe())
        return True

    def _hold(self, c: SetGroupAssignment, why: str, waited: float) -> None:
        self.progress(f"{c.describe()}: pending from an earlier run")
        self.result.done.append(c)
        self.held.append(PendingChange(c, waited, why))
        self.journal.pending({**c.data(), "not_sent": True}, why)
        log.info("%s: held back (%s)", c.describe(), why)

    # ------------------------------------------------------------------ a bulk step

    def _bulk(self, step: list[Change], kind: Kind) -> bool:
        """Every direct user assignment (or removal) in one backend call; the backend chunks."""
        verb = kind.bulk or "write"
        self.progress(f"{verb} {len(step)} user(s)")
        self.journal.started({"kind": step[0].kind, "bulk": True}, user_count=len(step))
        stopped: BridgeError | None = None
        try:
            bulk = cast(BulkWrite, kind.write)(self.backend, step)
        except BridgeError as exc:
            partial = partial_result(exc)
            if partial is None:
                record_lost(self.result, self.journal, step, verb, exc)
                return False
            # The backend stopped part-way and says which requests went through.
            stopped, bulk = exc, partial
        self.result.write_requests += bulk.write_requests
        outcomes = bulk_outcomes(step, bulk, stopped, one_request_id=self._correlation_id())
        return record_outcomes(
            self.result, self.journal, verb, outcomes, bulk, stopped, self._correlation_id()
        )


def interrupted_result(exc: BaseException) -> ApplyResult | None:
    """What an apply stopped by ``exc`` (^C, SIGTERM) had done, when it was one."""
    result = exc.result if isinstance(exc, Interrupted) else None
    return result if isinstance(result, ApplyResult) else None


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While writing and verifying, SIGTERM raises ``Terminated`` so the run is closed in the
    journal and a group half-way through a replacement is put back (signals reach only the main
    thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise Terminated(f"stopped by signal {signum}")

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _steps(changes: Sequence[Change]) -> list[list[Change]]:
    """Ordered changes grouped into steps: one per single write, one per run of user changes."""
    steps: list[list[Change]] = []
    for c in changes:
        if kind_of(c).bulk is not None and steps and type(steps[-1][0]) is type(c):
            steps[-1].append(c)
        else:
            steps.append([c])
    return steps
