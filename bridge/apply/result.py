"""What an apply did: ``ApplyResult`` with its failed and pending changes, and ``ApplyFailed``,
the error that carries it. The words are the CLI's: summary lines and the failure message."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ApplyError
from ..plan import Change

# Entries listed per category in messages and summaries; the journal has all of them.
SHOWN = 10


def describe(change: Change) -> str:
    """A change in a few words, for messages: ``create policy Clinical``."""
    return change.describe()


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
        return f"{self.change.describe()} ({self.error})"


@dataclass(frozen=True)
class PendingChange:
    """Accepted by the service, not visible on its reads after ``waited`` seconds."""

    change: Change
    waited: float
    shows: str  # what the service showed instead

    def __str__(self) -> str:
        return f"{self.change.describe()} (not visible after {self.waited:.0f} s; {self.shows})"


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
    # the least override of the safety limits that re-run needs (see advice.rerun_advice).
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

    def counts(self) -> dict[str, int | float]:
        """The counts a run's last journal line records."""
        return {
            "applied": len(self.applied),
            "pending": len(self.pending),
            "failed": len(self.failed),
            "not_attempted": len(self.not_attempted),
            "write_requests": self.write_requests,
            "duration": round(self.duration, 3),
        }

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
            said.setdefault(w.message, []).append(w.change.describe())
        for message, changes in said.items():
            lines.append(f"  service warning ({', '.join(changes)}): {message}")
        return lines


class ApplyFailed(ApplyError):
    """An apply that stopped or did not verify; ``result`` says what was done and what was not."""

    def __init__(self, message: str, result: ApplyResult):
        super().__init__(message)
        self.result = result
