"""Executes a ``Plan`` against a ``Backend``: in the safe order, direct user assignments in bulk,
every step journaled, stopping at the first failure, then verified against what the plan says the
tenant should look like.

Resuming is re-planning: after a failure, ``apply`` run again reads the tenant, diffs, and sends
only what is still missing, so nothing that succeeded is sent twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import catalogue
from .backends.base import Backend, BulkResult, Wanted, partial_result
from .errors import (
    ApplyError,
    BridgeError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    StalePlanError,
    TenantMismatchError,
    brief,
)
from .journal import Journal, change_entry, entry_time
from .plan import (
    Change,
    CreatePolicy,
    DeletePolicy,
    Plan,
    RemoveGroupAssignment,
    RemoveUserAssignment,
    SetGroupAssignment,
    SetUserAssignment,
    UpdatePolicy,
    share_over_limit,
    simulate,
    state_checksum,
    user_count,
)
from .state import SafetyLimits, TenantState, is_global, policy_key

log = logging.getLogger(__name__)

# Reads of a written policy before a mismatch is a failure: the service shows writes late, but
# policy writes within seconds (assignments can take far longer and are polled to the timeout).
# Entries listed per category in messages and summaries; the journal has all of them.
SHOWN = 10
# A group assignment teams-bridge sent and the service did not show yet is not sent again for this
# long (assignments can take up to 24 h to show): a scheduled apply every 15 minutes would
# otherwise remove and re-add a re-ranked group each time, and never let it settle.
PENDING_WINDOW = dt.timedelta(hours=24)
# Attempts at putting back a group assignment a failed replacement removed.
RESTORE_ATTEMPTS = 3

_ALL = Wanted()
_ASSIGNMENTS = (SetGroupAssignment, SetUserAssignment, RemoveUserAssignment, RemoveGroupAssignment)
_POLICIES = (CreatePolicy, UpdatePolicy, DeletePolicy)


def describe(change: Change) -> str:
    """A change in a few words, for messages: ``create policy Clinical``."""
    if isinstance(change, CreatePolicy):
        return f"create policy {change.name}"
    if isinstance(change, UpdatePolicy):
        return f"update policy {change.name}"
    if isinstance(change, DeletePolicy):
        return f"delete policy {change.name}"
    if isinstance(change, SetGroupAssignment):
        return f"assign {change.target} to {change.policy} (rank {change.rank})"
    if isinstance(change, RemoveGroupAssignment):
        return f"unassign {change.target} from {change.policy}"
    if isinstance(change, SetUserAssignment):
        return f"assign {change.target} to {change.policy}"
    if isinstance(change, RemoveUserAssignment):
        return f"unassign {change.target} from {change.policy}"
    raise TypeError(f"unknown change {change!r}")


@dataclass(frozen=True)
class FailedChange:
    change: Change
    error: str
    correlation_id: str | None = None
    forbidden: bool = False  # a 403: the app lacks a directory role
    # A replacement removed the group's assignment and putting it back failed: the group has
    # no messaging policy now, and re-assigning it moves its members back (see rerun_advice).
    left_without_policy: bool = False
    # Of those: the service accepted the removal but still shows the old row (the removal not in
    # effect yet), so the group loses its policy when the removal lands, not at once.
    removal_pending: bool = False
    # What to do about it (a 403's role or permission), said once for the run, not per change.
    hint: str | None = None

    def __str__(self) -> str:
        return f"{describe(self.change)} ({self.error})"


@dataclass(frozen=True)
class PendingChange:
    """Accepted by the service, not visible on its reads after ``waited`` seconds."""

    change: Change
    waited: float
    shows: str  # what the service showed instead

    def __str__(self) -> str:
        return f"{describe(self.change)} (not visible after {self.waited:.0f} s; {self.shows})"


@dataclass(frozen=True)
class ServiceWarning:
    """What the service warned when it took a change (it is also in the change's journal line)."""

    change: Change
    message: str


@dataclass
class ApplyResult:
    """``done``: accepted by the service; of those, ``applied`` (verified, or not checked when
    verification is off), ``pending`` or ``failed`` (failed verification). ``failed`` also holds
    the write that stopped the run; ``not_attempted`` is everything after it."""

    run_id: str
    total: int
    done: list[Change] = field(default_factory=list)
    applied: list[Change] = field(default_factory=list)
    pending: list[PendingChange] = field(default_factory=list)
    failed: list[FailedChange] = field(default_factory=list)
    not_attempted: list[Change] = field(default_factory=list)
    write_requests: int = 0
    duration: float = 0.0
    verified: bool = False
    interrupted: bool = False  # stopped by ^C, SIGTERM or a bug (see ApplyResult.outcome)
    # For a group left with no policy: how to run apply again so that it is assigned again, with
    # the least override of the safety limits that re-run needs (see _Run._rerun_advice).
    rerun_advice: str | None = None
    warnings: list[ServiceWarning] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.not_attempted

    @property
    def outcome(self) -> str:
        if self.interrupted:
            return "interrupted"
        if not self.ok:
            return "failed"
        return "pending" if self.pending else "ok"

    def failure_summary(self) -> str:
        """What was done and what failed, without the advice (``failure_message`` adds it)."""
        failed = ", ".join(str(f) for f in self.failed[:SHOWN])
        if len(self.failed) > SHOWN:
            failed += f" and {len(self.failed) - SHOWN} more (see the journal)"
        return (
            f"{len(self.applied)} of {self.total} changes applied; failed: {failed}; "
            f"not attempted: {len(self.not_attempted)}"
        )

    def failure_message(self) -> str:
        # A missing directory role does not go away by running again.
        forbidden = [f for f in self.failed if f.forbidden]
        bare = [f for f in self.failed if f.left_without_policy]
        if forbidden:
            hints = dict.fromkeys(f.hint for f in forbidden if f.hint)
            fix = "; ".join(hints) or (
                "give the app's service principal the Teams Administrator directory role"
            )
            then = f"{fix}; wait a few minutes, then run apply again"
        elif bare:
            now = ", ".join(f.change.target for f in bare if not f.removal_pending)
            later = ", ".join(f.change.target for f in bare if f.removal_pending)
            advice = self.rerun_advice or "run 'teams-bridge apply FILE' again to assign it"
            if not later:
                then = f"{now} has no messaging policy now: {advice}"
            else:
                # Re-run before the removal lands and the plan is the same refused replacement.
                then = (f"{now} has no messaging policy now; " if now else "") + (
                    f"{later} will have no messaging policy once the accepted removal takes "
                    "effect (reads show the old row until then): when 'teams-bridge plan' shows "
                    f"it as an add, {advice}"
                )
        else:
            then = "run apply again to converge"
        return f"{self.failure_summary()}; {then}"

    def summary_lines(self) -> list[str]:
        checked = "verified" if self.verified else "not verified"
        lines = [
            f"Apply {self.outcome}: {len(self.applied)} applied ({checked}), "
            f"{len(self.pending)} pending, {len(self.failed)} failed, "
            f"{len(self.not_attempted)} not attempted, of {self.total} "
            f"({self.write_requests} write requests, {self.duration:.1f} s)."
        ]
        for label, items in (("pending", self.pending), ("failed", self.failed)):
            lines.extend(f"  {label}: {item}" for item in items[:SHOWN])
            if len(items) > SHOWN:
                lines.append(f"  ... and {len(items) - SHOWN} more {label} (see the journal)")
        if self.pending:
            lines.append(
                "  Pending changes were accepted; the service shows them later. "
                "Run plan again in a while to confirm."
            )
        # Each text once, with every change it came with (a warning repeated per write is noise).
        said: dict[str, list[str]] = {}
        for w in self.warnings:
            said.setdefault(w.message, []).append(describe(w.change))
        for message, changes in said.items():
            lines.append(f"  service warning ({', '.join(changes)}): {message}")
        return lines


class ApplyFailed(ApplyError):
    """An apply that stopped or did not verify; ``result`` says what was done and what was not."""

    def __init__(self, message: str, result: ApplyResult):
        super().__init__(message)
        self.result = result


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
) -> ApplyResult:
    """Apply ``plan`` (made against ``current``, checked with ``check_fresh``) through ``backend``.

    ``limits``: the safety limits the plan was checked against (the defaults when not given);
    used only to tell, when a group is left with no policy, what a re-run needs to pass them.

    Raises ``ApplyFailed`` (an ``ApplyError``) after journaling when a write fails (nothing after
    it is attempted) or a written policy does not read back; assignments that do not show within
    ``verify_timeout`` seconds are returned as ``pending``, not raised.
    """
    if verify and poll_interval <= 0:
        raise ValueError("poll_interval must be positive: verification would read in a busy loop")
    check_fresh(plan, current)
    run = _Run(plan, backend, journal, run_id, current, clock, sleep, on_progress)
    run.limits = limits or SafetyLimits()
    return run.execute(current, verify, verify_timeout, poll_interval, wanted, sleep)


class _Run:
    def __init__(
        self,
        plan: Plan,
        backend: Backend,
        journal: Journal | None,
        run_id: str,
        current: TenantState,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        on_progress: Callable[[str], None] | None,
    ):
        # Stable sort: a hand-edited saved plan still runs in the safe order, and changes of one
        # kind (group ranks) keep their relative order.
        self.changes = sorted(plan.changes, key=lambda c: c.order)
        self.plan = Plan(
            self.changes, plan.tenant_id, plan.state_checksum, plan.desired_sha256, plan.notes
        )
        self.backend = backend
        self.journal = journal
        self.run_id = run_id
        self.current = current
        self.tenant = current.tenant_id
        self.clock = clock
        self.sleep = sleep
        # What earlier runs sent per group and the service may not show yet (see _held_back).
        self.sent: dict[str, dict[str, Any]] = {}
        if journal is not None:
            self.sent = journal.group_writes(self.tenant, journal.now() - PENDING_WINDOW)
        # Accepted earlier (or by the service already) but not visible: pending, not verified.
        self.held: list[PendingChange] = []
        self.started = clock()
        self.progress = on_progress or (lambda _msg: None)
        self.result = ApplyResult(run_id=run_id, total=len(self.changes))
        self.limits = SafetyLimits()

    # ------------------------------------------------------------------ journal

    def _journal(self, entries: Sequence[Mapping[str, Any]]) -> None:
        if self.journal is not None:
            self.journal.write_many(entries)

    def _entry(
        self,
        change: Mapping[str, Any],
        result: str,
        error: BaseException | str | None = None,
        user_count: int | None = None,
        correlation_id: str | None = None,
        operation_id: str | None = None,
        verification: bool = False,
        warnings: Sequence[str] = (),
    ) -> dict[str, Any]:
        return change_entry(
            self.run_id,
            self.tenant,
            change,
            result,
            error=error,
            user_count=user_count,
            correlation_id=correlation_id,
            operation_id=operation_id,
            verification=verification,
            warnings=warnings,
        )

    def _correlation_id(self) -> str | None:
        """The id of the request just sent, so a compliance reviewer can trace a change in
        Microsoft's logs (transports without HTTP writes have none)."""
        http = getattr(self.backend, "http", None)
        cid = getattr(http, "last_correlation_id", None)
        return cid if isinstance(cid, str) else None

    def _warnings(self, change: Change | None = None) -> list[str]:
        """What the service warned since the last call (already logged by the HTTP client),
        recorded for the summary against ``change``; None drops them (leftovers of reads)."""
        take = getattr(getattr(self.backend, "http", None), "take_warnings", None)
        said = list(dict.fromkeys(take())) if callable(take) else []
        if change is not None:
            self.result.warnings.extend(ServiceWarning(change, w) for w in said)
        return said

    def _finish(self, outcome: str | None = None) -> None:
        r = self.result
        r.duration = self.clock() - self.started
        if self.journal is not None:
            self.journal.run_finished(
                self.run_id,
                self.tenant,
                outcome or r.outcome,
                applied=len(r.applied),
                pending=len(r.pending),
                failed=len(r.failed),
                not_attempted=len(r.not_attempted),
                write_requests=r.write_requests,
                duration=round(r.duration, 3),
            )

    # ------------------------------------------------------------------ run

    def execute(
        self,
        current: TenantState,
        verify: bool,
        verify_timeout: float,
        poll_interval: float,
        wanted: Wanted,
        sleep: Callable[[float], None],
    ) -> ApplyResult:
        if self.journal is not None:
            self.journal.run_started(
                self.run_id,
                self.tenant,
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
                        self._verify(current, verify_timeout, poll_interval, wanted, sleep)
                    else:
                        self._settle_unverified()
        except ApplyFailed:
            raise  # verification could not read back; it closed the run itself
        except BaseException as exc:
            # Not a BridgeError (a bug, ^C, SIGTERM): close the run in the journal, then let it
            # through, carrying what was done (the CLI says if a group was left with no policy).
            r.interrupted = True
            if at is not None:  # stopped while writing: the rest of the plan was not sent
                done = {id(c) for c in r.done} | {id(f.change) for f in r.failed}
                r.not_attempted += [c for later in steps[at:] for c in later if id(c) not in done]
            self._settle_unverified()
            self._finish("interrupted")
            r.rerun_advice = self._rerun_advice()
            exc.apply_result = r  # type: ignore[attr-defined]
            raise
        if r.failed and not r.verified:
            self._settle_unverified()
            self._finish()
            r.rerun_advice = self._rerun_advice()
            # The advice is the CLI's error line: said once.
            log.error("apply stopped: %s", r.failure_summary())
            raise ApplyFailed(r.failure_message(), r)
        self._finish()
        if r.failed:
            raise ApplyFailed(r.failure_message(), r)
        return r

    def _rerun_advice(self) -> str | None:
        """For groups a failed replacement left with no policy: the command that assigns them
        again, with the least override the re-run needs. Putting the members back moves them
        (they have fallen back to another policy), so the share-of-users limit may refuse the
        re-run; ``--force`` is named only when another limit would refuse it too, as it lifts
        every check for the whole plan."""
        bare = [
            f.change
            for f in self.result.failed
            if f.left_without_policy and isinstance(f.change, SetGroupAssignment)
        ]
        if not bare:
            return None
        r = self.result
        removed = [RemoveGroupAssignment(c.group_id, c.group_name, c.policy, c.rank) for c in bare]
        now = simulate(self.current, Plan([*r.done, *removed], self.tenant))
        rerun = Plan(
            [*(dataclasses.replace(c, existing=None) for c in bare), *r.not_attempted],
            self.tenant,
        )
        limits, flags, why = self.limits, [], []
        moved = rerun.affected_users(now)
        total = user_count(now, moved) or 1
        share = len(moved) / total
        if share_over_limit(now, moved, limits):
            needed = math.ceil(share * 1000) / 1000  # exactly at the limit passes
            flags.append(f"--max-user-change-share {needed:g}")
            why.append(
                f"the re-run moves {len(moved)} of {total} users ({share:.1%}), over the limit "
                f"of {limits.max_user_change_share * 100:g}%: among them the group's members, "
                "who have fallen back to another policy"
            )
            limits = dataclasses.replace(limits, max_user_change_share=needed)
        deletes = len(rerun.of(DeletePolicy))
        if deletes > limits.max_policy_deletes:
            flags.append(f"--max-policy-deletes {deletes}")
            why.append(f"it still deletes {deletes} policies")
            limits = dataclasses.replace(limits, max_policy_deletes=deletes)
        others = rerun.unsafe_reasons(now, limits)
        if others:
            return (
                "run 'teams-bridge apply FILE --force' to assign it again: the re-run is over "
                f"a limit no narrower option lifts ({'; '.join(others)}); --force lifts every "
                "safety check for the whole plan, so review it with plan first"
            )
        if not flags:
            return "run 'teams-bridge apply FILE' again to assign it (within the safety limits)"
        return (
            f"run 'teams-bridge apply FILE {' '.join(flags)}' to assign it again ({'; '.join(why)})"
        )

    def _settle_unverified(self) -> None:
        """Without verification: what was sent counts as applied, what was held back or is only
        known to the service (a 409) stays pending."""
        r = self.result
        held = {id(p.change) for p in self.held}
        r.applied = [c for c in r.done if id(c) not in held]
        r.pending = list(self.held)

    def _step(self, step: list[Change]) -> bool:
        """One write (or one bulk call); False when the run must stop."""
        first = step[0]
        if isinstance(first, SetUserAssignment | RemoveUserAssignment):
            return self._bulk(step)
        if isinstance(first, SetGroupAssignment):
            held = self._held_back(first)
            if held is not None:
                self._hold(first, *held)
                return True
        self.progress(describe(first))
        self._journal([self._entry(first.data(), "started")])
        self._warnings()
        replaced = False
        try:
            if isinstance(first, SetGroupAssignment) and first.existing is not None:
                # The service has no update for a group assignment: remove, then add at once.
                self.result.write_requests += 1
                gone = self._remove(first.group_id)
                replaced = True
                # Its own line: the removal took effect whatever happens to the add.
                self._journal([self._removal_entry(first, gone)])
            conflict = self._write(first)
        except BridgeError as exc:
            error = brief(exc)  # a 403's advice is said once, in the run's message
            left_without = later = False
            if replaced and isinstance(first, SetGroupAssignment):
                note, left_without, later = self._restore(first)
                error += note
            self.result.failed.append(
                FailedChange(
                    first,
                    error,
                    getattr(exc, "correlation_id", None),
                    isinstance(exc, ForbiddenError),
                    left_without,
                    later,
                    getattr(exc, "hint", None),
                )
            )
            said = self._warnings(first)
            self._journal([self._entry(first.data(), "failed", exc, warnings=said)])
            log.warning("%s failed: %s", describe(first), error)
            return False
        except BaseException as exc:
            # ^C or SIGTERM between the removal and the add: nobody may be left on Global.
            why = f"interrupted ({type(exc).__name__}) before its answer was read"
            left_without = later = False
            if replaced and isinstance(first, SetGroupAssignment):
                note, left_without, later = self._restore(first, attempts=1)
                why += note
                log.error("%s interrupted%s", describe(first), note)
            self.result.failed.append(
                FailedChange(first, why, left_without_policy=left_without, removal_pending=later)
            )
            raise
        self.result.done.append(first)
        said = self._warnings(first)
        if conflict is not None:
            self.held.append(PendingChange(first, 0.0, conflict))
            self._journal([self._entry(first.data(), "pending", conflict, warnings=said)])
            log.info("%s: pending (%s)", describe(first), conflict)
            return True
        cid = self._correlation_id()
        self._journal([self._entry(first.data(), "ok", correlation_id=cid, warnings=said)])
        log.info("%s: ok", describe(first))
        return True

    def _removal_entry(self, c: SetGroupAssignment, gone: str | None) -> dict[str, Any]:
        assert c.existing is not None
        removal = RemoveGroupAssignment(
            c.group_id, c.group_name, c.existing.policy, c.existing.rank
        ).data()
        removal["part_of"] = c.kind
        if gone is not None:
            removal["already_removed"] = True
        return self._entry(removal, "ok", gone, correlation_id=self._correlation_id())

    def _remove(self, group_id: str) -> str | None:
        """Remove the group's assignment. A 404 (the group holds none on the write side) is the
        removal already done, by an earlier run stopped before its add (``kill -9``) or by
        someone else, while reads still show the row (they lag, 30 s to hours): what the removal
        is for holds, so it is done, and returns why; None when this request removed it.
        Refusing here instead would fail every re-run until reads caught up, leaving the group
        with no policy all that time."""
        try:
            self.backend.remove_group_assignment(group_id)
        except NotFoundError as exc:
            log.info("group %s: removal answered 404, already removed: %s", group_id, exc)
            return f"already removed (reads still show it): {exc}"
        return None

    def _held_back(self, c: SetGroupAssignment) -> tuple[str, float] | None:
        """Why ``c`` is not sent again, or None. It is held back when an earlier run sent this
        very assignment (same policy and rank) within ``PENDING_WINDOW`` and the service has not
        shown it since, while the tenant still shows what that write replaced: the write is
        propagating, and removing and re-adding the group again would only restart the wait."""
        entry = self.sent.get(c.group_id)
        if entry is None or entry.get("run_id") == self.run_id or entry.get("result") != "pending":
            return None
        sent = entry.get("change") or {}
        if sent.get("kind") != "set_group_assignment":
            return None
        if policy_key(str(sent.get("policy"))) != policy_key(c.policy) or sent.get("rank") != (
            c.rank
        ):
            return None
        was = sent.get("from")
        now = c.existing
        if (was is None) != (now is None):
            return None  # somebody changed the group since: send again
        if (
            was is not None
            and now is not None
            and policy_key(str(was.get("policy"))) != (policy_key(now.policy))
        ):
            return None
        assert self.journal is not None
        age = (self.journal.now() - entry_time(entry)).total_seconds()
        why = (
            f"run {entry.get('run_id')} sent it at {entry.get('time')} and the service does not "
            f"show it yet; not sent again within {PENDING_WINDOW.total_seconds() / 3600:.0f} h"
        )
        return why, max(age, 0.0)

    def _hold(self, c: SetGroupAssignment, why: str, waited: float) -> None:
        self.progress(f"{describe(c)}: pending from an earlier run")
        self.result.done.append(c)
        self.held.append(PendingChange(c, waited, why))
        self._journal([self._entry({**c.data(), "not_sent": True}, "pending", why)])
        log.info("%s: held back (%s)", describe(c), why)

    def _rank_before_this_step(self, c: SetGroupAssignment) -> int:
        """Where ``c``'s group was just before its replacement: its position after the changes
        done so far (earlier steps renumber it), not its rank when the plan was made."""
        assert c.existing is not None
        before = simulate(self.current, Plan(list(self.result.done), self.tenant))
        for g in before.ranked_groups():
            if g.group_id == c.group_id:
                return g.rank
        return c.existing.rank

    def _restore(
        self, c: SetGroupAssignment, attempts: int = RESTORE_ATTEMPTS
    ) -> tuple[str, bool, bool]:
        """Put back the assignment a failed replacement removed, so its members are not left
        on Global (and a re-run is again only the replacement, not a mass change). Returns the
        note for the message, whether the group was left without a policy, and whether that
        happens only once the accepted removal takes effect (see FailedChange)."""
        old = c.existing
        assert old is not None
        rank = self._rank_before_this_step(c)
        restore = {
            "kind": "restore_group_assignment",
            "group_id": c.group_id,
            "group": c.group_name,
            "policy": old.policy,
            "rank": rank,
        }
        error: BaseException | None = None
        for attempt in range(1, attempts + 1):
            self.result.write_requests += 1
            try:
                self.backend.add_group_assignment(c.group_id, old.policy, rank)
            except ConflictError as exc:
                # The service holds an assignment for the group: read which, rather than assume.
                return self._restore_conflict(c, exc, rank, restore, resent=attempt > 1)
            except BridgeError as exc:
                error = exc
                log.error(
                    "restoring the assignment of group %s failed (attempt %d of %d): %s",
                    c.group_id,
                    attempt,
                    attempts,
                    exc,
                )
                self._journal([self._entry(restore, "failed", exc)])
                if attempt < attempts:
                    self.sleep(2.0 * attempt)
                continue
            self._journal([self._entry(restore, "ok", correlation_id=self._correlation_id())])
            return (
                f"; its old assignment ({old.policy}) was put back at rank {rank}, where it was "
                "before this step",
                False,
                False,
            )
        return (
            f"; putting its old assignment ({old.policy}, rank {rank}) back failed too, "
            f"{attempts} time(s) ({error}): {c.target} has NO messaging policy now (its members "
            "get another group's policy or Global)",
            True,
            False,
        )

    def _restore_conflict(
        self,
        c: SetGroupAssignment,
        exc: ConflictError,
        rank: int,
        restore: dict[str, Any],
        *,
        resent: bool,
    ) -> tuple[str, bool, bool]:
        """A 409 on putting the old assignment back: the group holds an assignment on the write
        side, but which (if any) reads show decides whether its members have a policy. The old
        row itself is no comfort: the removal sent in this step was accepted, so unless it is
        the row put back by an earlier attempt here (``resent``: its answer lost), it is the
        row that removal takes away once it is in effect."""
        old = c.existing
        assert old is not None
        try:
            held = self.backend.group_assignment(c.group_id)
        except BridgeError as read_error:
            self._journal([self._entry(restore, "failed", f"{exc}; reading it back failed too")])
            return (
                f"; putting its old assignment back answered 409 ({exc}) and reading the group "
                f"back failed ({read_error}): {c.target} may have NO messaging policy now (its "
                "members get another group's policy or Global)",
                True,
                False,
            )
        if held is None:
            self._journal([self._entry(restore, "failed", f"{exc}; reads show no assignment")])
            return (
                f"; putting its old assignment back answered 409, but reads show no assignment: "
                f"{c.target} has NO messaging policy now (its members get another group's "
                "policy or Global)",
                True,
                False,
            )
        shows = f"reads show policy {held.policy} at rank {held.rank}"
        self._journal([self._entry(restore, "failed", f"{exc}; {shows}")])
        if policy_key(held.policy) == policy_key(old.policy) and held.rank in (old.rank, rank):
            maybe = (
                "; if an earlier attempt to put it back went through (its answer was lost), "
                "that is the row reads show"
                if resent
                else ""
            )
            return (
                f"; putting its old assignment back answered 409: {shows} for {c.target}, the "
                "old row, but the service accepted its removal in this step: once the removal "
                f"takes effect the group has NO messaging policy (its members get another "
                f"group's policy or Global){maybe}",
                True,
                True,
            )
        return (
            f"; putting its old assignment back answered 409: {shows} for {c.target}",
            False,
            False,
        )

    def _write(self, c: Change) -> str | None:
        """One write. Returns why a group add is pending rather than done when the service
        answered 409 because the group already holds that very assignment (an earlier write, or
        a retried request whose first answer was lost); None otherwise."""
        self.result.write_requests += 1
        b = self.backend
        if isinstance(c, CreatePolicy):
            b.create_policy(c.name, c.settings)
        elif isinstance(c, UpdatePolicy):
            b.update_policy(c.name, {k: new for k, (_, new) in c.changes.items()})
        elif isinstance(c, DeletePolicy):
            b.delete_policy(c.name)
        elif isinstance(c, SetGroupAssignment):
            try:
                b.add_group_assignment(c.group_id, c.policy, c.rank)
            except ConflictError as exc:
                return self._conflict(c, exc)
        elif isinstance(c, RemoveGroupAssignment):
            self._remove(c.group_id)
        else:
            raise TypeError(f"not a single write: {c!r}")
        return None

    def _conflict(self, c: SetGroupAssignment, exc: ConflictError) -> str | None:
        """A 409 on a group add: read what the group holds. This very assignment (policy and
        rank): the add is done. Nothing on reads: the service holds an assignment it does not
        show yet (a write propagating), so the add is pending; in a replacement that may be the
        removal just landed, so the add is sent once more first. The old row of a replacement
        (the removal accepted, not in effect yet, so the add was refused): pending too, as
        failing would fail every re-run until the removal lands; once it has, the next run
        adds the group. Anything else (another policy): the 409 stands."""
        # One group's read, not the whole tenant's (policies, every user page, Graph lookups).
        held = self.backend.group_assignment(c.group_id)
        old = c.existing
        if held is None and old is not None:
            self.result.write_requests += 1
            try:
                self.backend.add_group_assignment(c.group_id, c.policy, c.rank)
            except ConflictError:
                pass
            else:
                log.info("%s: 409, then reads showed no row and the add went in", describe(c))
                return None
        if held is None:
            return (
                "the service says the group already has a messaging policy assignment, but "
                "reads do not show it yet (a write still propagating)"
            )
        if policy_key(held.policy) == policy_key(c.policy) and held.rank == c.rank:
            log.info(
                "%s: 409, the group already holds %s at rank %d: done",
                describe(c),
                held.policy,
                held.rank,
            )
            return None
        if old is not None and policy_key(held.policy) == policy_key(old.policy):
            log.warning(
                "%s: 409, the group still holds its old row (%s, rank %d): pending",
                describe(c),
                held.policy,
                held.rank,
            )
            return (
                f"the service accepted the removal of its old assignment but still holds that "
                f"row ({held.policy}, rank {held.rank}), so it refused the add: the group keeps "
                "its old policy until the removal takes effect, then has none until apply runs "
                "again, which adds it (run apply again once plan shows it as an add)"
            )
        raise ConflictError(
            f"409 from Teams admin API: group {c.group_name or c.group_id} already holds policy "
            f"{held.policy} (rank {held.rank}), not {c.policy} at rank {c.rank}: somebody else "
            "changed it, run plan again",
            status=exc.status,
            correlation_id=exc.correlation_id,
        )

    def _bulk(self, step: list[Change]) -> bool:
        """Every direct user assignment (or removal) in one backend call; the backend chunks."""
        first = step[0]
        assign = isinstance(first, SetUserAssignment)
        verb = "assign" if assign else "unassign"
        kind = first.kind
        self.progress(f"{verb} {len(step)} user(s)")
        self._journal([self._entry({"kind": kind, "bulk": True}, "started", user_count=len(step))])
        stopped: BridgeError | None = None
        try:
            if assign:
                pairs = [(c.user_id, c.policy) for c in step if isinstance(c, SetUserAssignment)]
                bulk: BulkResult = self.backend.assign_users(pairs)
            else:
                bulk = self.backend.unassign_users([_user_id(c) for c in step])
        except BridgeError as exc:
            partial = partial_result(exc)
            if partial is None:
                self._bulk_lost(step, verb, exc)
                return False
            # The backend stopped part-way and says which requests went through.
            stopped, bulk = exc, partial
        self.result.write_requests += bulk.write_requests
        failures: dict[str, str] = {}
        for f in bulk.failures:
            failures.setdefault(f.user_id, f.message)
        chunks = {uid: chunk for chunk in bulk.chunks for uid in chunk.user_ids}
        # A backend that reports no chunk correlation id but sent one request: its id is every
        # user's.
        one_cid = self._correlation_id() if bulk.write_requests == 1 else None
        forbidden = isinstance(stopped, ForbiddenError)
        entries: list[dict[str, Any]] = []
        unsent = 0
        for c in step:
            uid = _user_id(c)
            chunk = chunks.get(uid)
            cid = (chunk.correlation_id if chunk else None) or one_cid
            op = chunk.operation_id if chunk else None
            if chunk is not None and chunk.unknown:
                # First: a batch submitted and not read back may still run, whatever error the
                # call that stopped polling it carries; it is not known to have failed.
                lost = f" ({chunk.error})" if chunk.error else ""
                why = (
                    f"sent in batch operation {op}, but the run stopped before its outcome was "
                    f"read{lost}: check it with Get-CsBatchPolicyAssignmentOperation -Identity {op}"
                )
                self.result.failed.append(FailedChange(c, why, cid))
                entries.append(self._entry(c.data(), "started", why, operation_id=op))
            elif uid in failures or (chunk is not None and chunk.error is not None):
                why = failures.get(uid) or (chunk.error if chunk else None) or "failed"
                # The request that raised a 403 gets the role advice (its users' chunk error),
                # once for the run rather than in every user's reason.
                denied = forbidden and chunk is not None and chunk.error is not None
                hint = getattr(stopped, "hint", None) if denied else None
                if denied and stopped is not None and why == str(stopped):
                    why = brief(stopped)
                self.result.failed.append(FailedChange(c, why, cid, denied, hint=hint))
                entries.append(
                    self._entry(c.data(), "failed", why, correlation_id=cid, operation_id=op)
                )
            elif chunk is None and stopped is not None:
                unsent += 1
                self.result.not_attempted.append(c)
                entries.append(
                    self._entry(
                        c.data(), "not_attempted", f"not sent: the call stopped ({stopped})"
                    )
                )
            else:
                self.result.done.append(c)
                entries.append(self._entry(c.data(), "ok", correlation_id=cid, operation_id=op))
        n_failed = sum(1 for e in entries if e["result"] != "ok")
        if stopped is not None:
            note: str | None = (
                f"{verb} stopped after {len(bulk.chunks)} request(s): {stopped}; "
                f"{n_failed - unsent} user(s) failed, {unsent} not attempted"
            )
        elif n_failed:
            note = f"{n_failed} of {len(step)} user(s) failed"
        else:
            note = None
        summary = {
            "kind": kind,
            "bulk": True,
            "operation_ids": list(bulk.operation_ids),
            "write_requests": bulk.write_requests,
        }
        self._journal(
            [
                self._entry(
                    summary,
                    "failed" if note else "ok",
                    note,
                    user_count=len(step),
                    correlation_id=self._correlation_id(),
                ),
                *entries,
            ]
        )
        log.log(
            logging.WARNING if note else logging.INFO,
            "%s %d user(s): %d ok, %d failed, %d not attempted, operations %s%s",
            verb,
            len(step),
            len(step) - n_failed,
            n_failed - unsent,
            unsent,
            bulk.operation_ids or "-",
            f"; stopped: {stopped}" if stopped is not None else "",
        )
        return not n_failed

    def _bulk_lost(self, step: list[Change], verb: str, exc: BridgeError) -> None:
        """A bulk call raised without saying which of its requests went through: every user is
        failed here, and the re-run's plan shows what is still missing."""
        error = f"{verb} {len(step)} user(s): {brief(exc)}"
        cid = getattr(exc, "correlation_id", None)
        forbidden = isinstance(exc, ForbiddenError)
        hint = getattr(exc, "hint", None)
        self.result.write_requests += 1
        self.result.failed.extend(FailedChange(c, error, cid, forbidden, hint=hint) for c in step)
        note = f"{exc} (earlier requests of this bulk call may have been applied)"
        self._journal([self._entry(c.data(), "failed", note) for c in step])
        log.warning("bulk %s failed: %s", verb, exc)

    # ------------------------------------------------------------------ verification

    def _verify(
        self,
        current: TenantState,
        timeout: float,
        poll_interval: float,
        wanted: Wanted,
        sleep: Callable[[float], None],
    ) -> None:
        r = self.result
        expected = simulate(current, self.plan)
        # Everything the service accepted is polled until it shows or the time is up; writes
        # surface on reads after 30-45 s (policies) up to hours (assignments), so what has not
        # shown by then is pending, never failed.
        held = {id(p.change) for p in self.held}
        still_open: list[Change] = [
            c for c in r.done if isinstance(c, _POLICIES + _ASSIGNMENTS) and id(c) not in held
        ]
        pending: list[PendingChange] = []
        start = self.clock()
        while still_open:
            try:
                observed = self.backend.read(wanted)
            except BridgeError as exc:
                message = (
                    f"all {len(r.done)} changes were accepted but reading the tenant back "
                    f"failed: {exc}; run plan to see where it stands"
                )
                r.applied = list(r.done)
                self._finish()
                raise ApplyFailed(message, r) from exc
            wrong = _mismatches(still_open, expected, observed)
            still_open = [c for c, _ in wrong]
            waited = self.clock() - start
            if wrong and waited >= timeout:
                pending.extend(PendingChange(c, waited, why) for c, why in wrong)
                still_open = []
            if not still_open:
                break
            self.progress(
                f"verifying: {len(still_open)} change(s) not visible yet after {waited:.0f} s"
            )
            sleep(max(min(poll_interval, timeout - waited), 0.0))

        unverified = {id(p.change) for p in pending} | held
        r.applied = [c for c in r.done if id(c) not in unverified]
        r.pending = list(self.held) + pending
        r.verified = True
        # Not sends of their own: each re-records a write journaled when it was sent.
        self._journal(
            [self._entry(p.change.data(), "pending", str(p), verification=True) for p in pending]
        )


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler stopping the job), handled like ^C; the process exits 128 + 15."""

    exit_code = 143


def interrupted_result(exc: BaseException) -> ApplyResult | None:
    """What an apply stopped by ``exc`` (^C, SIGTERM) had done, when it was one."""
    result = getattr(exc, "apply_result", None)
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


def _user_id(c: Change) -> str:
    if not isinstance(c, SetUserAssignment | RemoveUserAssignment):
        raise TypeError(f"not a user change: {c!r}")
    return c.user_id


def _steps(changes: Sequence[Change]) -> list[list[Change]]:
    """Ordered changes grouped into steps: one per single write, one per run of user changes."""
    steps: list[list[Change]] = []
    for c in changes:
        bulk = isinstance(c, SetUserAssignment | RemoveUserAssignment)
        if bulk and steps and type(steps[-1][0]) is type(c):
            steps[-1].append(c)
        else:
            steps.append([c])
    return steps


def _mismatches(
    changes: Sequence[Change], expected: TenantState, observed: TenantState
) -> list[tuple[Change, str]]:
    out = []
    for c in changes:
        why = _mismatch(c, expected, observed)
        if why is not None:
            out.append((c, why))
    return out


def _mismatch(c: Change, expected: TenantState, observed: TenantState) -> str | None:
    """What the service shows instead of ``c``'s outcome, or None when it shows the outcome."""
    if isinstance(c, CreatePolicy | UpdatePolicy):
        have = observed.policy(c.name)
        want = expected.policy(c.name)
        if have is None or want is None:
            return f"no policy {c.name}"
        names = c.settings if isinstance(c, CreatePolicy) else c.changes
        for name in names:
            if not catalogue.values_equal(name, have.settings.get(name), want.settings.get(name)):
                return (
                    f"{name} = {have.settings.get(name)!r} in policy {c.name}, "
                    f"expected {want.settings.get(name)!r}"
                )
        return None
    if isinstance(c, DeletePolicy):
        # Deleting Global resets it to defaults: it is still there afterwards.
        if is_global(c.name) or observed.policy(c.name) is None:
            return None
        return f"policy {c.name} still present"
    if isinstance(c, SetGroupAssignment | RemoveGroupAssignment):
        got = observed.group_assignments.get(c.group_id)
        exp = expected.group_assignments.get(c.group_id)
        shows = f"policy {got.policy} at rank {got.rank}" if got else "no assignment"
        if exp is None:
            return None if got is None else f"it still shows {shows}"
        if (
            got is not None
            and policy_key(got.policy) == policy_key(exp.policy)
            and (got.rank == exp.rank)
        ):
            return None
        return f"it shows {shows}, expected policy {exp.policy} at rank {exp.rank}"
    if isinstance(c, SetUserAssignment | RemoveUserAssignment):
        got_u = observed.user_assignments.get(c.user_id)
        exp_u = expected.user_assignments.get(c.user_id)
        if exp_u is None:
            return None if got_u is None else f"it still shows policy {got_u.policy}"
        if got_u is not None and policy_key(got_u.policy) == policy_key(exp_u.policy):
            return None
        return f"it shows {f'policy {got_u.policy}' if got_u else 'no direct assignment'}"
    raise TypeError(f"unknown change {c!r}")
