"""One function per command: read, decide, act, and return what the CLI prints. No printing here."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, runby
from .desired import load_desired
from .errors import BridgeError, SnapshotError, StalePlanError, TenantMismatchError
from .plan import (
    Plan,
    SetGroupAssignment,
    diff,
    user_count,
)
from .safety import SafetyReview
from .session import Session, tenant_matches
from .state import DesiredState, TenantState, is_guid

if TYPE_CHECKING:
    from .planfile import SavedPlan

log = logging.getLogger(__name__)


def check_tenant_guard(desired: DesiredState, current: TenantState, session: Session) -> None:
    """Refuse to act on a tenant other than the one the desired file names (an id, compared with
    the token's tenant, or a domain, compared with the tenant's verified domains)."""
    if not desired.tenant:
        return
    if not tenant_matches(desired.tenant, current.tenant_id, list(current.domains)):
        known = current.tenant_id or "unknown"
        if current.domains:
            known += " (" + ", ".join(current.domains) + ")"
        unverified = current.tenant_id is None and is_guid(desired.tenant)
        if session.options.snapshot:
            if unverified:
                reached = f"the snapshot {session.options.snapshot} does not record its tenant"
                fix = "take the snapshot again with teams-bridge snapshot"
            else:
                reached = f"the snapshot {session.options.snapshot} is of tenant {known}"
                fix = "use a snapshot of that tenant"
        elif unverified:
            # None is "cannot tell", not another tenant: say so, and where to look.
            reached = "the token's tenant could not be verified (no readable tenant claim)"
            fix = "check the credentials with teams-bridge doctor"
        elif session.options.sandbox:
            reached = f"the sandbox is tenant {known}"
            fix = "drop --sandbox"
        else:
            reached = f"the credentials reach tenant {known}"
            fix = "check AZURE_TENANT_ID"
        raise TenantMismatchError(
            f"{desired.source}: the file is for tenant {desired.tenant!r}, but {reached}: "
            f"{fix}, or the file's tenant: line"
        )


def _log_requests(session: Session) -> None:
    stats = session.request_stats()
    if stats:
        log.info("requests so far: %s", json.dumps(stats, sort_keys=True))


# --------------------------------------------------------------------------- plan


@dataclass
class PlanResult:
    plan: Plan
    current: TenantState
    desired: DesiredState
    notes: list[str] = field(default_factory=list)
    # Why apply would refuse this plan without --force: the same check on the same reads
    # (group members included) as apply, so the same inputs get the same verdict.
    needs_force: list[str] = field(default_factory=list)
    # People whose effective policy the plan changes, of all users (None: not checked).
    users_moved: int | None = None
    users_total: int | None = None


def read_members_for_safety(
    session: Session, current: TenantState, plan: Plan, *, force: bool = False
) -> bool:
    """Read what the share-of-users limit needs: whose effective policy an assignment change
    moves depends on every assigned group a user is in (a direct assignment may restate what a
    group gives), so the members of every assigned group and of every group the plan assigns.
    ``plan`` and ``apply`` both call this, so they reach the same verdict. The groups are read
    side by side (``Session.fill_group_members``).

    ``force``: the limits are lifted, so only a group assignment change still needs them (a
    failed replacement's re-run advice counts the members it moves); without one nothing is
    read (at 100,000 users, 141 member pages). Whether the members were read."""
    if force and not plan.of(SetGroupAssignment):
        return False
    if any(c.scope != "policy" for c in plan.changes):
        session.fill_group_members(
            current,
            {*current.group_assignments, *(c.group_id for c in plan.of(SetGroupAssignment))},
        )
        return True
    return False


def read_assigned_members(session: Session, result: PlanResult) -> None:
    """The members of every assigned group, once: who gets what, person by person (clinical
    coverage, the reports' "who gets what"). An older snapshot without them: a note."""
    try:
        session.fill_group_members(result.current, result.current.group_assignments)
    except SnapshotError as exc:
        result.notes.append(f"warning: {exc}; people in those groups are counted as on Global")


def make_plan(
    session: Session, desired_file: str, *, saving: bool = False, check_safety: bool = True
) -> PlanResult:
    """``saving``: the plan is saved for ``apply --plan`` (``plan --out``), which enforces the
    file's safety limits only where they are no looser than the defaults: notes say which are
    not, and what ``apply --plan`` would refuse that the file's limits let through.
    ``check_safety``: read group members and check the safety limits as apply will (``drift``
    needs only the changes)."""
    desired = load_desired(desired_file)
    current = session.read(desired, organization=True)
    check_tenant_guard(desired, current, session)
    plan = diff(current, desired)
    notes = [*desired.notes, *plan.notes]
    if plan.roles is not None:
        for uid, names in plan.roles.selection.several.items():
            log.info(
                "%s is selected by roles %s: %s decides (the first in the file)",
                plan.roles.upns.get(uid, uid),
                ", ".join(names),
                names[0],
            )
    if not check_safety:
        _log_requests(session)
        return PlanResult(plan, current, desired, notes)
    needs_force: list[str] = []
    moved: set[str] = set()
    if plan:
        try:
            read_members_for_safety(session, current, plan)
        except SnapshotError as exc:
            # An older snapshot without members: plan still shows the changes; apply reads them.
            notes.append(
                f"warning: {exc}; the share of users this plan moves counts only the members "
                "the snapshot holds (apply reads them all from the tenant and may refuse)"
            )
        # One review (the after-state and the users moved computed once) for every check.
        review = SafetyReview(plan, current)
        moved = review.moved
        needs_force = review.reasons(plan.safety)
    _log_requests(session)
    if saving:
        from .planfile import effective_limits, looser_than_applied

        notes += looser_than_applied(plan.safety)
        if plan:
            shown = set(needs_force)
            more = [
                reason
                for reason in review.reasons(effective_limits(plan.safety))
                if reason not in shown
            ]
            if more:
                from .report.render_text import printable  # one line per reason, names escaped

                notes.append(
                    "warning: apply --plan will refuse this saved plan unless given the option "
                    "above:\n  - " + "\n  - ".join(printable(reason) for reason in more)
                )
    if not plan:
        return PlanResult(plan, current, desired, notes)
    return PlanResult(
        plan, current, desired, notes, needs_force, len(moved), user_count(current, moved)
    )


# --------------------------------------------------------------------------- apply


@dataclass(frozen=True)
class ApplyRequest:
    desired_file: str | None
    plan_file: str | None
    force: bool = False
    journal_path: str | None = None
    lock_dir: str | None = None
    lock_timeout: float = 60.0
    verify_timeout: float = 60.0
    max_policy_deletes: int | None = None  # command-line overrides of the file's safety limits
    max_user_change_share: float | None = None
    user_change_floor: int | None = None
    reason: str | None = None  # why, and the change-control reference: into the journal
    ticket: str | None = None


@dataclass
class ApplyOutcome:
    lines: list[str]
    # Declined at the confirmation prompt: nothing was applied, so the run did not do what it
    # was asked (the CLI exits 1, as Terraform does).
    cancelled: bool = False
    # What apply did (the apply module's result: applied, pending, failed, not_attempted), for
    # serve's change counts; None when there was nothing to apply.
    result: Any = None


def default_lock_dir() -> str:
    """Per user (never the world-writable temp dir, where anyone could hold the lock):
    ``$XDG_STATE_HOME/teams-bridge`` or ``~/.local/state/teams-bridge``."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    path = os.path.join(base, "teams-bridge")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def default_journal_path() -> str:
    """Where the apply journal goes when BRIDGE_JOURNAL/--journal do not say: the user's state
    directory (platformdirs: ``$XDG_STATE_HOME/teams-bridge`` or ``~/.local/state/teams-bridge``
    on Linux, ``~/Library/Application Support/teams-bridge`` on macOS, ``%LOCALAPPDATA%``
    on Windows), never the working directory, where a checkout would pick it up."""
    from platformdirs import user_state_path

    base = user_state_path("teams-bridge", appauthor=False)
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    return str(base / "teams-bridge-journal.jsonl")


def _load_plan_file(path: str) -> SavedPlan:
    """A saved plan, its digest checked (see ``planfile``)."""
    from .planfile import read_plan

    return read_plan(path)


def _check_no_writes_since(saved: SavedPlan, tenant: str | None, journal_path: str | None) -> None:
    """Refuse a saved plan made before a later apply to the same tenant. The service shows writes
    late (seconds for policies, up to hours for assignments), so the tenant checksum may still
    match while that apply's writes propagate, and applying this plan would silently undo them.
    The rule: any write in the local journal after the plan was made refuses it."""
    if not journal_path:
        return
    from .journal import Journal

    later = Journal(journal_path).writes_after(tenant, saved.created_at)
    if later is None:
        return
    made = saved.created_at.isoformat(timespec="seconds")
    raise StalePlanError(
        f"this plan was made at {made}, but the journal {journal_path} shows a later apply to "
        f"this tenant (run {later.get('run_id')} at {later.get('time')}); the service can take "
        "hours to show its writes, so the plan may undo them even though the tenant reads the "
        "same: run plan --out again (the new plan starts from that apply)"
    )


def run_apply(
    session: Session,
    request: ApplyRequest,
    *,
    confirm: Callable[[Plan, str], bool],  # the plan, and the tenant as people name it
    progress: Callable[[str], None] | None = None,
) -> ApplyOutcome:
    from .apply import apply_plan, check_fresh
    from .journal import Journal
    from .lock import TenantLock

    if session.is_offline:
        raise BridgeError("apply needs a tenant: a snapshot is read-only (drop --snapshot)")
    desired: DesiredState | None = None
    if request.desired_file:
        desired = load_desired(request.desired_file)
    # The lock is named after the tenant the token is for: AZURE_TENANT_ID may be a domain in one
    # job and the id in another, and both must take the same lock.
    tenant = session.token_tenant_id() or "unknown"
    lock_dir = request.lock_dir or default_lock_dir()
    run_id = uuid.uuid4().hex[:12]
    # One writer per tenant from the read to the last verification (as Terraform locks its
    # state for plan and apply): what was reviewed is what the tenant still is when written.
    with TenantLock(lock_dir, tenant, timeout=request.lock_timeout):
        current = session.read(desired, organization=True)
        if desired is not None:
            check_tenant_guard(desired, current, session)
            plan = diff(current, desired)
        else:
            assert request.plan_file
            saved = _load_plan_file(request.plan_file)
            plan = saved.plan
            check_fresh(plan, current, saved=True)
            _check_no_writes_since(saved, current.tenant_id, request.journal_path)
        if not plan:
            return ApplyOutcome(["No changes. The tenant matches the desired state."])
        if desired is not None:
            limits = plan.safety
            if request.max_policy_deletes is not None:
                limits = dataclasses.replace(limits, max_policy_deletes=request.max_policy_deletes)
            if request.max_user_change_share is not None:
                limits = dataclasses.replace(
                    limits, max_user_change_share=request.max_user_change_share
                )
            if request.user_change_floor is not None:
                limits = dataclasses.replace(limits, user_change_floor=request.user_change_floor)
        else:
            from .planfile import effective_limits

            # A saved plan's limits may only tighten the defaults: its digest can be recomputed.
            limits = effective_limits(
                plan.safety,
                max_policy_deletes=request.max_policy_deletes,
                max_user_change_share=request.max_user_change_share,
                user_change_floor=request.user_change_floor,
            )
        read_members_for_safety(session, current, plan, force=request.force)
        if not request.force:  # --force lifts every limit: nothing to review
            SafetyReview(plan, current).raise_if_unsafe(limits, False)
        if not confirm(plan, current.label):
            return ApplyOutcome(["Apply cancelled; nothing was changed."], cancelled=True)
        journal = None
        if request.journal_path:
            run_by = runby.current(
                session.token_app_id(), reason=request.reason, ticket=request.ticket
            )
            journal = Journal(request.journal_path, run_by=run_by)
        result = apply_plan(
            plan,
            session.backend(),
            current,
            journal=journal,
            run_id=run_id,
            verify_timeout=request.verify_timeout,
            on_progress=progress,
            limits=limits,
            fresh=True,  # made from ``current`` just now, or check_fresh above
        )
    _log_requests(session)
    lines = list(result.summary_lines())
    if request.journal_path:
        lines.append(f"journal: {request.journal_path} (run {run_id})")
    return ApplyOutcome(lines, result=result)


# --------------------------------------------------------------------------- drift


@dataclass(frozen=True)
class DriftRequest:
    desired_file: str
    report_dir: str | None = None
    formats: tuple[str, ...] = ("json", "html", "md", "junit")
    history_file: str | None = None
    notify_url: str | None = None
    notify_format: str = "teams"  # teams: the card plus the JSON summary; json: the summary
    color: bool = False
    fail_on: tuple[str, ...] = ("error",)  # finding severities that count as drift
    reason: str | None = None  # why it was run, and the change-control reference: in the reports
    ticket: str | None = None


@dataclass
class DriftOutcome:
    report: Any
    text: str
    exit_code: int
    written: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    changes: int = 0  # what apply would change (serve's pending changes)


def run_drift(session: Session, request: DriftRequest) -> DriftOutcome:
    """Read, compare, then in this order: first-seen dates from history, report files, the
    notification, and last the history record with the run's real exit code (a run whose
    reports could not be written is not in history; one whose notification failed is recorded
    with exit 1).

    The exit code is the report's (0 in sync, 2 drift), or 1 when drift was found and the
    notification failed: a scheduled job must hear that nobody was told."""
    from .report.notify import FORMATS, check_webhook_url

    if request.notify_url:
        # Before any read: a typo in the URL must not cost a tenant read to find.
        check_webhook_url(request.notify_url)
        if request.notify_format not in FORMATS:
            raise BridgeError(
                f"--notify-format {request.notify_format!r}: choose from {', '.join(FORMATS)}"
            )
    if not request.history_file:
        return _drift(session, request, None)
    from .report.history import HistoryStore

    with HistoryStore(request.history_file) as store:  # opened first: a bad path fails early
        return _drift(session, request, store)


def _drift(session: Session, request: DriftRequest, store: Any) -> DriftOutcome:
    from .report.model import build_drift_report
    from .report.notify import notify
    from .report.render import render_text, write_reports
    from .rules import run_rules

    result = make_plan(session, request.desired_file, check_safety=False)
    if result.desired.rules.has_clinicians:
        # Clinical coverage places every clinician: the assigned groups' members, once.
        read_assigned_members(session, result)
    findings = run_rules(result.current, result.desired)
    report = build_drift_report(
        result.current,
        result.desired,
        result.plan,
        findings=findings,
        tool_version=__version__,
        desired_path=request.desired_file,
        now=dt.datetime.now(dt.timezone.utc),
        fail_on=request.fail_on,
        observed_at=result.current.observed_at,
        run_by=runby.current(session.token_app_id(), reason=request.reason, ticket=request.ticket),
    )
    if store is not None:
        store.annotate(report)  # first-seen dates for the reports; recorded below
    written: list[Path] = []
    if request.report_dir:
        written = write_reports(report, Path(request.report_dir), request.formats)
    warnings: list[str] = list(result.notes)
    exit_code = report.exit_code
    if request.notify_url and not report.in_sync:
        try:
            notify(
                request.notify_url,
                report,
                post=_webhook_poster(session),
                fmt=request.notify_format,
            )
            report.notification = {"format": request.notify_format, "sent": True, "error": None}
        except BridgeError as exc:
            # The reports stand (written above); the job still fails, so someone hears of it.
            report.notification = {
                "format": request.notify_format,
                "sent": False,
                "error": str(exc),
            }
            warnings.append(
                f"error: drift was found (exit {report.exit_code} otherwise) and the "
                f"notification to the webhook failed: {exc}"
            )
            exit_code = 1
    if store is not None:
        store.record(report, exit_code=exit_code)
    return DriftOutcome(
        report,
        render_text(report, color=request.color),
        exit_code,
        written,
        warnings,
        changes=len(result.plan.changes),
    )


def _webhook_poster(session: Session) -> Callable[[str, dict[str, Any], dict[str, str]], None]:
    from .report.notify import webhook_poster

    return webhook_poster(session.settings)  # never follows a redirect to another host


def history_view(history_file: str, limit: int) -> tuple[str, dict[str, Any]]:
    from .errors import ConfigError
    from .report.history import HistoryOutdatedError, HistoryStore, render_history

    # Reading must not create: a typo would otherwise show an empty history and exit 0.
    try:
        found = Path(history_file).is_file()
    except OSError as exc:  # a directory on the way the user may not enter
        raise ConfigError(f"{history_file}: cannot read the history: {exc.strerror}") from None
    if not found:
        raise ConfigError(
            f"{history_file}: no history there (drift --history {history_file} creates it); "
            "check the path"
        )
    # Read-only: a reader may not be allowed to write the file. An older file is upgraded first,
    # which needs write access (and says so when it is missing).
    try:
        store = HistoryStore(history_file, read_only=True)
    except HistoryOutdatedError:
        store = HistoryStore(history_file)
    with store:
        return render_history(store, limit)


# --------------------------------------------------------------------------- explain / doctor


def explain_user(session: Session, user_ref: str, desired_file: str | None = None) -> Any:
    """``desired_file``: also say which of its roles decides the user, from the attribute
    values read with the directory."""
    import dataclasses

    from .backends.base import Wanted
    from .explain import explain, find_user
    from .roles import explain_user as explain_roles

    desired = load_desired(desired_file) if desired_file else None
    attributes = tuple(desired.user_attributes()) if desired else ()
    current = session.backend().read(Wanted(users=(user_ref,), attributes=attributes))
    user = find_user(current, user_ref)
    groups = session.backend().user_groups(user.id)
    result = explain(current, user, groups)
    if desired is None or not desired.roles:
        return result
    entry = next(
        (
            ua
            for ua in desired.user_assignments
            if current.directory.user_by_ref(ua.user) is not None
            and current.directory.user_by_ref(ua.user) == user
        ),
        None,
    )
    role, reasons = explain_roles(
        desired.roles, user.attributes, str(entry.location) if entry else None
    )
    return dataclasses.replace(result, role=role, role_reasons=reasons)


def suggest_roles(session: Session, threshold: float, min_people: int) -> str:
    """A ``roles:`` block for the tenant as it is (``bridge.suggest``): the directory with the
    attributes roles would use, and the assigned groups' members (effective policies)."""
    from .suggest import ATTRIBUTES, render, suggest

    current = session.read(attributes=ATTRIBUTES)
    session.fill_group_members(current, current.group_assignments)
    return render(suggest(current, threshold, min_people), threshold)


def run_doctor_checks(session: Session) -> list[Any]:
    from .doctor import configuration_failed, run_doctor

    if session.is_offline:
        raise BridgeError("doctor checks credentials and a live tenant: drop --snapshot")
    try:
        session.backend()  # builds settings and credentials (and starts the sandbox if asked)
    except BridgeError as exc:
        # What doctor is for: a missing or bad credential is its failed first row, not a crash.
        checks = [configuration_failed(exc)]
    else:
        checks = list(run_doctor(session.settings, token_provider=session.token_provider))
    if session.options.transport == "powershell":
        from .doctor import powershell_checks

        # The module version app-only sign-in needs depends on the cloud (unknown: both named).
        settings = session.settings
        checks.extend(
            powershell_checks(cloud=settings.cloud if settings else session.options.cloud)
        )
    return checks
