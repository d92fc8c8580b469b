"""A group's assignment written: the add with its 409 paths, the removal with its 404, and the
replacement (remove, then add at once: the service has no update), with the old row put back
when the add fails. Also which adds an earlier run sent and the service does not show yet, so
they are held back rather than sent again."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..backends.base import Backend
from ..errors import BridgeError, ConflictError, NotFoundError
from ..journal import RunJournal, entry_time
from ..plan import Plan, RemoveGroupAssignment, SetGroupAssignment, simulate
from ..state import TenantState, policy_key
from .result import ApplyResult

log = logging.getLogger(__name__)

# A group assignment teams-bridge sent and the service did not show yet is not sent again for this
# long (assignments can take up to 24 h to show): a scheduled apply every 15 minutes would
# otherwise remove and re-add a re-ranked group each time, and never let it settle.
PENDING_WINDOW = dt.timedelta(hours=24)
# Attempts at putting back a group assignment a failed replacement removed.
RESTORE_ATTEMPTS = 3

_NONE_NOW = "has NO messaging policy now (its members get another group's policy or Global)"


@dataclass(frozen=True)
class RestoreOutcome:
    """Putting back the row a failed replacement removed. ``note``: what the failure message
    adds; ``left_without_policy``: the group has no policy now, or ``removal_pending``: will
    have none once the removal accepted in this step takes effect (reads show the old row)."""

    note: str
    left_without_policy: bool = False
    removal_pending: bool = False


@dataclass(frozen=True)
class HeldBack:
    """An add an earlier run sent that the service does not show yet: not sent again."""

    why: str
    waited: float


class GroupWrites:
    """The writes of group assignments for one run. ``sent``: what earlier runs sent per group
    (``Journal.group_writes``); ``receipt``: the correlation id of the request just sent."""

    def __init__(
        self,
        backend: Backend,
        journal: RunJournal,
        result: ApplyResult,
        current: TenantState,
        *,
        sent: dict[str, dict[str, Any]],
        sleep: Callable[[float], None],
        receipt: Callable[[], str | None],
    ):
        self.backend = backend
        self.journal = journal
        self.result = result
        self.current = current
        self.sent = sent
        self.sleep = sleep
        self.receipt = receipt

    # ------------------------------------------------------------------ removal and replacement

    def remove(self, group_id: str) -> str | None:
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

    def remove_for_replacement(self, c: SetGroupAssignment) -> None:
        """The first half of a replacement, journaled on its own line: the removal took effect
        whatever happens to the add."""
        assert c.existing is not None
        self.result.write_requests += 1
        gone = self.remove(c.group_id)
        removal = RemoveGroupAssignment(
            c.group_id, c.group_name, c.existing.policy, c.existing.rank
        ).data()
        removal["part_of"] = c.kind
        if gone is not None:
            removal["already_removed"] = True
        self.journal.ok(removal, gone, correlation_id=self.receipt())

    # ------------------------------------------------------------------ the add and its 409

    def add(self, c: SetGroupAssignment) -> str | None:
        """The add. Returns why it is pending rather than done when the service answered 409
        because the group already holds that very assignment (see ``_conflict``)."""
        try:
            self.backend.add_group_assignment(c.group_id, c.policy, c.rank)
        except ConflictError as exc:
            return self._conflict(c, exc)
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
                log.info("%s: 409, then reads showed no row and the add went in", c.describe())
                return None
        if held is None:
            return (
                "the service says the group already has a messaging policy assignment, but "
                "reads do not show it yet (a write still propagating)"
            )
        if policy_key(held.policy) == policy_key(c.policy) and held.rank == c.rank:
            log.info(
                "%s: 409, the group already holds %s at rank %d: done",
                c.describe(),
                held.policy,
                held.rank,
            )
            return None
        if old is not None and policy_key(held.policy) == policy_key(old.policy):
            log.warning(
                "%s: 409, the group still holds its old row (%s, rank %d): pending",
                c.describe(),
                held.policy,
                held.rank,
            )
            return (
                f"the service accepted the removal of its old assignment but still holds that "
                f"row ({held.policy}, rank {held.rank}), so it refused the add: the group keeps "
                "its old policy until the removal takes effect, then has none until apply runs "
                "again, which adds it (run apply again once plan shows it as an add)"
            )
        said_by = exc.said_by or f"{exc.status or 409} from the service"
        raise ConflictError(
            f"{said_by}: group {c.group_name or c.group_id} already holds policy "
            f"{held.policy} (rank {held.rank}), not {c.policy} at rank {c.rank}: somebody else "
            "changed it, run plan again",
            status=exc.status,
            correlation_id=exc.correlation_id,
            said_by=exc.said_by,
        )

    # ------------------------------------------------------------------ putting the old row back

    def rank_before(self, c: SetGroupAssignment) -> int:
        """Where ``c``'s group was just before its replacement: its position after the changes
        done so far (earlier steps renumber it), not its rank when the plan was made."""
        assert c.existing is not None
        before = simulate(self.current, Plan(list(self.result.done), self.current.tenant_id))
        for g in before.ranked_groups():
            if g.group_id == c.group_id:
                return g.rank
        return c.existing.rank

    def restore(self, c: SetGroupAssignment, attempts: int = RESTORE_ATTEMPTS) -> RestoreOutcome:
        """Put back the assignment a failed replacement removed, so its members are not left
        on Global (and a re-run is again only the replacement, not a mass change)."""
        old = c.existing
        assert old is not None
        rank = self.rank_before(c)
        error: BaseException | None = None
        for attempt in range(1, attempts + 1):
            self.result.write_requests += 1
            try:
                self.backend.add_group_assignment(c.group_id, old.policy, rank)
            except ConflictError as exc:
                # The service holds an assignment for the group: read which, rather than assume.
                return self._restore_conflict(c, exc, rank, resent=attempt > 1)
            except BridgeError as exc:
                error = exc
                log.error(
                    "restoring the assignment of group %s failed (attempt %d of %d): %s",
                    c.group_id,
                    attempt,
                    attempts,
                    exc,
                )
                self.journal.restore(c.group_id, c.group_name, old.policy, rank, exc)
                if attempt < attempts:
                    self.sleep(2.0 * attempt)
                continue
            self.journal.restore(
                c.group_id, c.group_name, old.policy, rank, correlation_id=self.receipt()
            )
            return RestoreOutcome(
                f"; its old assignment ({old.policy}) was put back at rank {rank}, where it was "
                "before this step"
            )
        return RestoreOutcome(
            f"; putting its old assignment ({old.policy}, rank {rank}) back failed too, "
            f"{attempts} time(s) ({error}): {c.target} {_NONE_NOW}",
            left_without_policy=True,
        )

    def _restore_conflict(
        self, c: SetGroupAssignment, exc: ConflictError, rank: int, *, resent: bool
    ) -> RestoreOutcome:
        """A 409 on putting the old assignment back: the group holds an assignment on the write
        side, but which (if any) reads show decides whether its members have a policy. The old
        row itself is no comfort: the removal sent in this step was accepted, so unless it is
        the row put back by an earlier attempt here (``resent``: its answer lost), it is the
        row that removal takes away once it is in effect."""
        old = c.existing
        assert old is not None

        def journal_failed(why: str) -> None:
            self.journal.restore(c.group_id, c.group_name, old.policy, rank, f"{exc}; {why}")

        try:
            held = self.backend.group_assignment(c.group_id)
        except BridgeError as read_error:
            journal_failed("reading it back failed too")
            return RestoreOutcome(
                f"; putting its old assignment back answered 409 ({exc}) and reading the group "
                f"back failed ({read_error}): {c.target} may have NO messaging policy now (its "
                "members get another group's policy or Global)",
                left_without_policy=True,
            )
        if held is None:
            journal_failed("reads show no assignment")
            return RestoreOutcome(
                f"; putting its old assignment back answered 409, but reads show no assignment: "
                f"{c.target} {_NONE_NOW}",
                left_without_policy=True,
            )
        shows = f"reads show policy {held.policy} at rank {held.rank}"
        journal_failed(shows)
        if policy_key(held.policy) == policy_key(old.policy) and held.rank in (old.rank, rank):
            maybe = (
                "; if an earlier attempt to put it back went through (its answer was lost), "
                "that is the row reads show"
                if resent
                else ""
            )
            return RestoreOutcome(
                f"; putting its old assignment back answered 409: {shows} for {c.target}, the "
                "old row, but the service accepted its removal in this step: once the removal "
                f"takes effect the group has NO messaging policy (its members get another "
                f"group's policy or Global){maybe}",
                left_without_policy=True,
                removal_pending=True,
            )
        return RestoreOutcome(
            f"; putting its old assignment back answered 409: {shows} for {c.target}"
        )

    # ------------------------------------------------------------------ held back

    def held_back(self, c: SetGroupAssignment, run_id: str) -> HeldBack | None:
        """Why ``c`` is not sent again, or None. It is held back when an earlier run sent this
        very assignment (same policy and rank) within ``PENDING_WINDOW`` and the service has not
        shown it since, while the tenant still shows what that write replaced: the write is
        propagating, and removing and re-adding the group again would only restart the wait."""
        entry = self.sent.get(c.group_id)
        if entry is None or entry.get("run_id") == run_id or entry.get("result") != "pending":
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
        age = (self.journal.now() - entry_time(entry)).total_seconds()
        why = (
            f"run {entry.get('run_id')} sent it at {entry.get('time')} and the service does not "
            f"show it yet; not sent again within {PENDING_WINDOW.total_seconds() / 3600:.0f} h"
        )
        return HeldBack(why, max(age, 0.0))
