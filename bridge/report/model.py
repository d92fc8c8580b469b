"""The drift report: what the desired file manages, how each managed object compares with the
tenant, and what the healthcare rules found. Renderers (``bridge.report.render``) only format it.

``build_drift_report`` takes the plan ``diff`` produced, so the report and ``plan`` never disagree
on what differs; the tenant and the desired state supply the context (values in sync, unmanaged
and unknown settings).

JSON form (``DriftReport.to_dict()``, schema ``drift-report.schema.json`` beside this module)::

    schema_version    1; bumped only on an incompatible change
    tenant_id         the tenant read (null for a snapshot without one)
    tenant            {id, display_name, default_domain}: the tenant as people name it (the
                      names null when not read: an older snapshot)
    run               {operator, host, app_id, reason, ticket}: who ran it (OS user, host, the
                      token's app id, never a secret) and why (drift --reason/--ticket)
    generated_at      ISO 8601, UTC
    observed_at       when the tenant state was read (a snapshot's taken_at), ISO 8601, UTC
    tool_version      teams-bridge version that wrote the report
    desired           {path, sha256} of the desired-state file
    in_sync           no object drifted and no finding of a counting severity (fail_on)
    exit_code         0 in sync, 2 drift
    drift_count       managed objects not in sync (policies + group + user assignments)
    fail_on           finding severities that make the report fail (default warning, error)
    summary           counts per object type and status, and findings per severity (exact)
    policies[]        every managed policy (Global first, then by name):
        name, status, in_use (Global or assigned), first_seen (of the object's drift),
        settings[]          managed settings: name, expected, actual, in_sync, known, first_seen
        unmanaged_settings  {name: value} catalogue settings the file does not manage (context)
        unknown_settings    {name: value} settings the service returned that teams-bridge does
                            not know (a newer module release), not managed
    unmanaged_policies[]  names of tenant policies the file does not mention (context)
    group_assignments[]   desired precedence order, then extras by current rank:
        group_id, group, status, expected {policy, rank} | null, actual {policy, rank} | null,
        detail (what differs, e.g. relative rank order), first_seen
    user_assignments      {counts {declared, in_sync, drifted, missing, extra},
                           listed[]: every user assignment not in sync: user_id, user, status,
                           expected, actual, first_seen}   (in-sync users are only counted)
    roles[]               (a file with assignments.roles) per role and kind of change, never
                          per person: symbol (+ ~ -), role (null: released), policy, count,
                          names (a few), text
    who_gets_what[]       (when group members were read: a file with roles or rules.clinicians)
                          per effective policy and department: policy, department, people,
                          read_receipts, priority_notifications (true/false)
    findings[]            rule_id, severity, title, explanation, policies, counts, first_seen
    resolved[]            drift seen in the previous run and gone now: key, object, expected,
                          actual (as the previous run saw it), first_seen, resolved_at
                          (filled by ``HistoryStore.annotate``)
    notification          null, or the outcome of ``--notify``: {format, sent, error}. Report
                          files are written before the post, so only ``--output json`` shows
                          it filled in

Statuses: ``in_sync``; ``drifted`` (exists, differs); ``missing`` (the file wants it, the tenant
does not have it); ``extra`` (the tenant has it, the file says ``ensure: absent`` or pruning is on).

Drift keys (stable across runs, used by history): ``policy:<key>`` (missing/extra policy),
``policy:<key>:<Setting>``, ``group:<group id>``, ``user:<user id>``, ``rule:<id>`` (a tenant-wide
finding, whatever policies it lists) and ``rule:<id>:<policy key>`` (a per-policy finding).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .. import catalogue
from ..plan import (
    Change,
    CreatePolicy,
    DeletePolicy,
    Plan,
    RemoveGroupAssignment,
    RemoveUserAssignment,
    SetGroupAssignment,
    SetUserAssignment,
    UpdatePolicy,
    policies_in_use,
)
from ..roles import RoleChangeLine, summarize
from ..rules import SEVERITIES, Finding
from ..rules.people import effective_policies, unread_groups
from ..runby import RunBy
from ..state import DesiredState, Policy, TenantState, is_global, policy_key

SCHEMA_VERSION = 1
STATUSES = ("in_sync", "drifted", "missing", "extra")
DEFAULT_FAIL_ON = frozenset({"warning", "error"})
C = TypeVar("C", bound=Change)


def format_value(value: Any) -> str:
    """A setting value as people read it in every renderer: JSON spelling (``true``,
    ``"Everyone"``, ``null``)."""
    return json.dumps(value, ensure_ascii=False, default=str)


@dataclass(frozen=True)
class SettingRow:
    name: str
    expected: Any  # None when not managed
    actual: Any  # None when the tenant lacks the policy or the setting
    managed: bool
    in_sync: bool
    known: bool  # in the catalogue


@dataclass(frozen=True)
class PolicyReport:
    name: str
    status: str
    in_use: bool
    managed: tuple[SettingRow, ...] = ()
    unmanaged: tuple[SettingRow, ...] = ()
    unknown: tuple[SettingRow, ...] = ()

    @property
    def key(self) -> str:
        return f"policy:{policy_key(self.name)}"

    def setting_key(self, setting: str) -> str:
        return f"{self.key}:{setting}"

    @property
    def drifted(self) -> list[SettingRow]:
        return [r for r in self.managed if not r.in_sync]


@dataclass(frozen=True)
class GroupAssignmentReport:
    group_id: str
    group_name: str | None
    status: str
    expected_policy: str | None  # None: the file wants no assignment (ensure: absent / prune)
    expected_rank: int | None  # as written in the file: a relative precedence, not a position
    actual_policy: str | None
    actual_rank: int | None
    detail: str = ""

    @property
    def key(self) -> str:
        return f"group:{self.group_id}"

    @property
    def label(self) -> str:
        return self.group_name or self.group_id


@dataclass(frozen=True)
class UserAssignmentReport:
    user_id: str
    upn: str | None
    status: str
    expected_policy: str | None
    actual_policy: str | None
    role: str | None = None  # the role that decides this user's direct assignment

    @property
    def key(self) -> str:
        return f"user:{self.user_id}"

    @property
    def label(self) -> str:
        return self.upn or self.user_id


@dataclass(frozen=True)
class DriftItem:
    """One thing that is not as the file wants it, flattened (history, notifications, JUnit)."""

    key: str
    kind: str  # policy | policy_setting | group_assignment | user_assignment | rule
    object: str  # what a person calls it: "policy Clinical", "group Clinicians", ...
    expected: Any
    actual: Any
    setting: str | None = None
    status: str = "drifted"


@dataclass(frozen=True)
class ResolvedItem:
    key: str
    first_seen: dt.datetime
    resolved_at: dt.datetime
    # What it was in the previous run (history's drift item): what people call it, the value
    # wanted (now in place) and the value it had. None in a history written before they were.
    object: str | None = None
    expected: Any = None
    actual: Any = None

    def describe(self) -> str:
        """``policy Kitchen ReadReceiptsEnabledType: "None" -> "Everyone"`` for people; the key
        when history did not keep what it was."""
        return describe_item(self.key, self.object, self.expected, self.actual)


def describe_item(key: str, obj: str | None, expected: Any, actual: Any) -> str:
    """A recorded drift item for people: its name and the change (a finding: its title); the
    key when history did not keep the name."""
    if obj is None:
        return key
    if key.startswith("rule:"):
        return f"{obj}: {actual}" if isinstance(actual, str) else obj
    return f"{obj}: {describe_change(actual, expected)}"


def describe_change(before: Any, after: Any) -> str:
    """A change as people read it: ``"None" -> "Everyone"``; an assignment ``{policy, rank}`` as
    ``Clinical (rank 2)``; None as ``none``."""

    def one(value: Any) -> str:
        if value is None:
            return "none"
        if isinstance(value, dict) and "policy" in value:
            rank = value.get("rank")
            return f"{value['policy']}" + (f" (rank {rank})" if rank is not None else "")
        return format_value(value)

    return f"{one(before)} -> {one(after)}"


@dataclass
class DriftReport:
    tenant_id: str | None
    generated_at: dt.datetime
    tool_version: str
    desired_path: str
    desired_sha256: str
    policies: list[PolicyReport]
    unmanaged_policies: list[str]
    group_assignments: list[GroupAssignmentReport]
    users_listed: list[UserAssignmentReport]  # every user assignment not in sync
    user_counts: dict[str, int]  # declared, in_sync, drifted, missing, extra (exact)
    findings: list[Finding]
    fail_on: frozenset[str] = DEFAULT_FAIL_ON
    # Filled by HistoryStore.annotate: drift key -> when first seen; drift gone since last run.
    first_seen: dict[str, dt.datetime] = field(default_factory=dict)
    resolved: list[ResolvedItem] = field(default_factory=list)
    # Set by run_drift after posting --notify: {format, sent, error}; None when not asked.
    notification: dict[str, Any] | None = None
    # When the tenant state was read: a snapshot's taken_at; None means at generated_at.
    observed_at: dt.datetime | None = None
    # The user changes roles make, per role (a file with assignments.roles).
    role_lines: list[RoleChangeLine] = field(default_factory=list)
    role_user_ids: frozenset[str] = frozenset()  # the users role_lines count
    # Per effective policy and department; None when group members were not read.
    who_gets_what: list[WhoGetsWhat] | None = None
    # The tenant as people name it (Graph /organization, or the snapshot's), when read.
    tenant_name: str | None = None
    tenant_domain: str | None = None
    # Who ran it and why; None for a report built outside a command (tests, history).
    run_by: RunBy | None = None

    @property
    def tenant_label(self) -> str:
        """``Northwind Regional Health (northwind.example)``; the id when the name is unknown."""
        where = self.tenant_domain or self.tenant_id
        if self.tenant_name:
            return f"{self.tenant_name} ({where})" if where else self.tenant_name
        return where or "unknown tenant"

    @property
    def observed(self) -> dt.datetime:
        """When the state this report describes was observed (history orders runs by it)."""
        return utc(self.observed_at) if self.observed_at is not None else self.generated_at

    def observed_earlier(self) -> bool:
        """The state is older than the report by a minute or more (a snapshot): headers say so."""
        return (self.generated_at - self.observed).total_seconds() >= 60

    # ------------------------------------------------------------------ verdict

    def counts(self, finding: Finding) -> bool:
        """Whether ``finding``'s severity makes the report fail."""
        return finding.severity in self.fail_on

    @property
    def failing_findings(self) -> list[Finding]:
        return [f for f in self.findings if self.counts(f)]

    @property
    def drift_count(self) -> int:
        """Managed objects not in sync (exact, including users that are only counted)."""
        policies = sum(1 for p in self.policies if p.status != "in_sync")
        groups = sum(1 for g in self.group_assignments if g.status != "in_sync")
        users = self.user_counts
        return policies + groups + users["drifted"] + users["missing"] + users["extra"]

    @property
    def in_sync(self) -> bool:
        return self.drift_count == 0 and not self.failing_findings

    @property
    def exit_code(self) -> int:
        return 0 if self.in_sync else 2

    def summary(self) -> dict[str, dict[str, int]]:
        def by_status(statuses: Iterator[str]) -> dict[str, int]:
            c = Counter(statuses)
            return {"total": sum(c.values()), **{s: c.get(s, 0) for s in STATUSES}}

        users = self.user_counts
        return {
            "policies": by_status(p.status for p in self.policies),
            "group_assignments": by_status(g.status for g in self.group_assignments),
            "user_assignments": {
                "total": users["in_sync"] + users["drifted"] + users["missing"] + users["extra"],
                **{s: users[s] for s in STATUSES},
            },
            "findings": {s: sum(1 for f in self.findings if f.severity == s) for s in SEVERITIES},
        }

    # ------------------------------------------------------------------ flat view

    def drift_items(self) -> list[DriftItem]:
        """Everything not in sync, in report order, findings that count last."""
        items: list[DriftItem] = []
        for p in self.policies:
            obj = f"policy {p.name}"
            if p.status == "missing":
                items.append(DriftItem(p.key, "policy", obj, "present", "absent", status="missing"))
            elif p.status == "extra":
                items.append(DriftItem(p.key, "policy", obj, "absent", "present", status="extra"))
            for r in p.drifted if p.status == "drifted" else []:
                items.append(
                    DriftItem(
                        p.setting_key(r.name),
                        "policy_setting",
                        obj,
                        r.expected,
                        r.actual,
                        setting=r.name,
                    )
                )
        for g in self.group_assignments:
            if g.status != "in_sync":
                items.append(
                    DriftItem(
                        g.key,
                        "group_assignment",
                        f"group {g.label}",
                        _assignment(g.expected_policy, g.expected_rank),
                        _assignment(g.actual_policy, g.actual_rank),
                        status=g.status,
                    )
                )
        for u in self.users_listed:
            items.append(
                DriftItem(
                    u.key,
                    "user_assignment",
                    f"user {u.label}",
                    u.expected_policy,
                    u.actual_policy,
                    status=u.status,
                )
            )
        for f in self.failing_findings:
            items.append(
                DriftItem(f.key, "rule", f"rule {f.rule_id}", None, f.title, status=f.severity)
            )
        return items

    def history_items(self) -> list[DriftItem]:
        """What history records, whatever ``fail_on`` says: every object not in sync and every
        ``warning`` or ``error`` finding (``info`` findings explain, they are never drift)."""
        items = [i for i in self.drift_items() if i.kind != "rule"]
        for f in self.findings:
            if f.severity != "info":
                items.append(
                    DriftItem(f.key, "rule", f"rule {f.rule_id}", None, f.title, status=f.severity)
                )
        return items

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        seen = self.first_seen

        def when(key: str) -> str | None:
            t = seen.get(key)
            return _iso(t) if t else None

        users = self.user_counts
        return {
            "schema_version": SCHEMA_VERSION,
            "tenant_id": self.tenant_id,
            "tenant": {
                "id": self.tenant_id,
                "display_name": self.tenant_name,
                "default_domain": self.tenant_domain,
            },
            "run": self.run_by.to_dict() if self.run_by is not None else None,
            "generated_at": _iso(self.generated_at),
            "observed_at": _iso(self.observed),
            "tool_version": self.tool_version,
            "desired": {"path": self.desired_path, "sha256": self.desired_sha256},
            "in_sync": self.in_sync,
            "exit_code": self.exit_code,
            "drift_count": self.drift_count,
            "fail_on": sorted(self.fail_on),
            "summary": self.summary(),
            "policies": [
                {
                    "name": p.name,
                    "status": p.status,
                    "in_use": p.in_use,
                    "first_seen": _policy_first_seen(p, seen),
                    "settings": [
                        {
                            "name": r.name,
                            "expected": r.expected,
                            "actual": r.actual,
                            "in_sync": r.in_sync,
                            "known": r.known,
                            "first_seen": when(p.setting_key(r.name)),
                        }
                        for r in p.managed
                    ],
                    "unmanaged_settings": {r.name: r.actual for r in p.unmanaged},
                    "unknown_settings": {r.name: r.actual for r in p.unknown},
                }
                for p in self.policies
            ],
            "unmanaged_policies": list(self.unmanaged_policies),
            "group_assignments": [
                {
                    "group_id": g.group_id,
                    "group": g.group_name,
                    "status": g.status,
                    "expected": _assignment(g.expected_policy, g.expected_rank),
                    "actual": _assignment(g.actual_policy, g.actual_rank),
                    "detail": g.detail,
                    "first_seen": when(g.key),
                }
                for g in self.group_assignments
            ],
            "user_assignments": {
                "counts": {k: users[k] for k in ("declared", *STATUSES)},
                "listed": [
                    {
                        "user_id": u.user_id,
                        "user": u.upn,
                        "status": u.status,
                        "expected": u.expected_policy,
                        "actual": u.actual_policy,
                        "first_seen": when(u.key),
                        **({"role": u.role} if u.role else {}),
                    }
                    for u in self.users_listed
                ],
            },
            **(
                {
                    "roles": [
                        {
                            "symbol": r.symbol,
                            "role": r.role,
                            "policy": r.policy,
                            "count": r.count,
                            "names": list(r.names),
                            "text": r.text,
                        }
                        for r in self.role_lines
                    ]
                }
                if self.role_lines
                else {}
            ),
            **(
                {"who_gets_what": [w.to_dict() for w in self.who_gets_what]}
                if self.who_gets_what is not None
                else {}
            ),
            "findings": [
                {**f.to_dict(), "counts": self.counts(f), "first_seen": when(f.key)}
                for f in self.findings
            ],
            "resolved": [
                {
                    "key": r.key,
                    "object": r.object,
                    "expected": r.expected,
                    "actual": r.actual,
                    "first_seen": _iso(r.first_seen),
                    "resolved_at": _iso(r.resolved_at),
                }
                for r in self.resolved
            ],
            "notification": self.notification,
        }


def _policy_first_seen(p: PolicyReport, seen: dict[str, dt.datetime]) -> str | None:
    """A missing or unwanted policy's own first-seen time; a drifted one's is its oldest
    differing setting's (it is not in sync since then)."""
    times = [seen[k] for k in (p.key, *(p.setting_key(r.name) for r in p.drifted)) if k in seen]
    return _iso(min(times)) if times else None


def _assignment(policy: str | None, rank: int | None) -> dict[str, Any] | None:
    if policy is None:
        return None
    return {"policy": policy, "rank": rank}


def _iso(t: dt.datetime) -> str:
    return utc(t).isoformat(timespec="seconds").replace("+00:00", "Z")


def utc(t: dt.datetime) -> dt.datetime:
    """``t`` in UTC; a naive time is taken to be UTC already."""
    return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc)


# --------------------------------------------------------------------------- building


def build_drift_report(
    current: TenantState,
    desired: DesiredState,
    plan: Plan,
    *,
    findings: list[Finding],
    tool_version: str,
    desired_path: str,
    now: dt.datetime,
    fail_on: Collection[str] = DEFAULT_FAIL_ON,
    observed_at: dt.datetime | None = None,
    run_by: RunBy | None = None,
) -> DriftReport:
    """The drift report for ``plan = diff(current, desired)``. Pure; cost is linear in the number
    of objects (users in sync are counted, not listed)."""
    unknown_severity = set(fail_on) - set(SEVERITIES)
    if unknown_severity:
        raise ValueError(
            f"fail_on has unknown severities {sorted(unknown_severity)}; "
            f"choose from {', '.join(SEVERITIES)}"
        )
    policies, unmanaged = _policies(current, desired, plan)
    users_listed, user_counts = _users(current, desired, plan)
    role_lines: list[RoleChangeLine] = []
    covered: set[str] = set()
    if plan.roles is not None:
        role_lines, covered = summarize(
            plan.roles,
            [(c.user_id, c.upn, c.policy, c.existing_policy) for c in _of(plan, SetUserAssignment)],
            [(c.user_id, c.upn, c.policy) for c in _of(plan, RemoveUserAssignment)],
        )
    return DriftReport(
        tenant_id=current.tenant_id,
        tenant_name=current.display_name,
        tenant_domain=current.default_domain,
        run_by=run_by,
        generated_at=utc(now),
        tool_version=tool_version,
        desired_path=desired_path,
        desired_sha256=desired.sha256,
        policies=policies,
        unmanaged_policies=unmanaged,
        group_assignments=_groups(current, desired, plan),
        users_listed=users_listed,
        user_counts=user_counts,
        findings=sorted(findings, key=lambda f: (-SEVERITIES.index(f.severity), f.rule_id, f.key)),
        fail_on=frozenset(fail_on),
        observed_at=utc(observed_at) if observed_at is not None else None,
        role_lines=role_lines,
        role_user_ids=frozenset(covered),
        who_gets_what=who_gets_what(current),
    )


@dataclass(frozen=True)
class WhoGetsWhat:
    """How many people of one department get one effective policy, and what it gives them."""

    policy: str
    department: str | None
    people: int
    read_receipts: Any  # ReadReceiptsEnabledType of the policy (None: not reported)
    priority_notifications: bool  # AllowPriorityMessages (the service's default: true)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "department": self.department,
            "people": self.people,
            "read_receipts": self.read_receipts,
            "priority_notifications": self.priority_notifications,
        }


def who_gets_what(current: TenantState) -> list[WhoGetsWhat] | None:
    """Per effective policy (Global first, then by name) and department (by name; people
    without one last): how many people, their read receipts and priority notifications. None
    when the members of an assigned group were not read (people could not be placed)."""
    if unread_groups(current) or not current.directory.users:
        return None
    users = current.directory.users
    counts: Counter[tuple[str, str | None]] = Counter()
    for uid, eff in effective_policies(current):
        counts[(policy_key(eff.policy), users[uid].department)] += 1
    rows = []
    for (key, department), people in counts.items():
        policy = current.policies.get(key)
        settings = policy.settings if policy is not None else {}
        rows.append(
            WhoGetsWhat(
                policy.name if policy is not None else key,
                department,
                people,
                settings.get("ReadReceiptsEnabledType"),
                settings.get("AllowPriorityMessages") is not False,
            )
        )
    rows.sort(
        key=lambda r: (
            not is_global(r.policy),
            r.policy.casefold(),
            r.department is None,
            (r.department or "").casefold(),
        )
    )
    return rows


def _of(plan: Plan, kind: type[C]) -> list[C]:
    return [c for c in plan.changes if isinstance(c, kind)]


def _context_rows(
    policy: Policy | None, managed: Collection[str]
) -> tuple[tuple[SettingRow, ...], tuple[SettingRow, ...]]:
    if policy is None:
        return (), ()
    rows = [
        SettingRow(
            name, None, value, managed=False, in_sync=True, known=catalogue.lookup(name) is not None
        )
        for name, value in sorted(policy.settings.items())
        if name not in managed
    ]
    return tuple(r for r in rows if r.known), tuple(r for r in rows if not r.known)


def _policies(
    current: TenantState, desired: DesiredState, plan: Plan
) -> tuple[list[PolicyReport], list[str]]:
    policy_changes: list[CreatePolicy | UpdatePolicy | DeletePolicy] = [
        *_of(plan, CreatePolicy),
        *_of(plan, UpdatePolicy),
        *_of(plan, DeletePolicy),
    ]
    changes = {policy_key(c.name): c for c in policy_changes}
    in_use = policies_in_use(current)
    out: list[PolicyReport] = []
    for key, want in desired.policies.items():
        have = current.policies.get(key)
        change = changes.get(key)
        name = have.name if have else want.name
        if want.absent:
            status = "extra" if isinstance(change, DeletePolicy) else "in_sync"
            unmanaged, unknown = _context_rows(have, ())
            out.append(
                PolicyReport(
                    name, status, key in in_use and have is not None, (), unmanaged, unknown
                )
            )
            continue
        differing = change.changes if isinstance(change, UpdatePolicy) else {}
        rows = tuple(
            SettingRow(
                s,
                expected,
                have.settings.get(s) if have else None,
                managed=True,
                in_sync=have is not None and s not in differing,
                known=catalogue.lookup(s) is not None,
            )
            for s, expected in sorted(want.settings.items())
        )
        status = "missing" if have is None else "drifted" if differing else "in_sync"
        unmanaged, unknown = _context_rows(have, want.settings.keys())
        out.append(PolicyReport(name, status, key in in_use, rows, unmanaged, unknown))
    for d in _of(plan, DeletePolicy):  # pruned: not in the file at all
        key = policy_key(d.name)
        if key not in desired.policies:
            unmanaged, unknown = _context_rows(current.policies.get(key), ())
            out.append(PolicyReport(d.name, "extra", key in in_use, (), unmanaged, unknown))
    out.sort(key=lambda p: (not is_global(p.name), policy_key(p.name)))
    listed = {policy_key(p.name) for p in out}
    others = sorted(
        (p.name for k, p in current.policies.items() if k not in listed),
        key=lambda n: (not is_global(n), n.casefold()),
    )
    return out, others


def _groups(current: TenantState, desired: DesiredState, plan: Plan) -> list[GroupAssignmentReport]:
    sets = {c.group_id: c for c in _of(plan, SetGroupAssignment)}
    removes = {c.group_id: c for c in _of(plan, RemoveGroupAssignment)}
    have = current.group_assignments
    ordered = sorted(enumerate(desired.group_assignments), key=lambda e: (e[1].rank, e[0]))
    resolved: list[tuple[str, Any]] = []
    for _, ga in ordered:
        found = current.directory.groups_by_ref(ga.group)
        # diff() refuses unresolved or ambiguous names, so a plan implies one match.
        resolved.append((found[0].id if len(found) == 1 else ga.group, ga))
    wanted_order = [gid for gid, ga in resolved if not ga.absent]

    out: list[GroupAssignmentReport] = []
    for gid, ga in resolved:
        existing = have.get(gid)
        group = current.directory.groups.get(gid)
        name = group.display_name if group else (existing.group_name if existing else None)
        actual_policy = existing.policy if existing else None
        actual_rank = existing.rank if existing else None
        if ga.absent:
            status = "extra" if gid in removes else "in_sync"
            out.append(
                GroupAssignmentReport(
                    gid,
                    name,
                    status,
                    None,
                    None,
                    actual_policy,
                    actual_rank,
                    detail="the file says ensure: absent",
                )
            )
            continue
        change = sets.get(gid)
        if change is None:
            status, detail = "in_sync", ""
        elif existing is None:
            status, detail = "missing", "no assignment for this group in the tenant"
        else:
            status = "drifted"
            detail = _group_detail(current, wanted_order, gid, ga.policy, ga.rank)
        out.append(
            GroupAssignmentReport(
                gid, name, status, ga.policy, ga.rank, actual_policy, actual_rank, detail=detail
            )
        )
    declared = {gid for gid, _ in resolved}
    for g in current.ranked_groups():
        if g.group_id in removes and g.group_id not in declared:
            out.append(
                GroupAssignmentReport(
                    g.group_id,
                    g.group_name,
                    "extra",
                    None,
                    None,
                    g.policy,
                    g.rank,
                    detail="not in the file, and prune.group_assignments is on",
                )
            )
    return out


def _group_detail(
    current: TenantState, wanted_order: list[str], gid: str, policy: str, rank: int
) -> str:
    """What differs for an existing group assignment: its policy, or its place in precedence
    relative to the other declared groups (the service renumbers ranks, so only order counts)."""
    have = current.group_assignments
    existing = have[gid]
    parts = []
    if policy_key(existing.policy) != policy_key(policy):
        parts.append(f"policy is {existing.policy}, expected {policy}")
    i = wanted_order.index(gid)

    def label(other: str) -> str:
        return have[other].group_name or other

    above = [label(o) for o in wanted_order[i + 1 :] if o in have and have[o].rank < existing.rank]
    below = [label(o) for o in wanted_order[:i] if o in have and have[o].rank > existing.rank]
    if above:
        parts.append(f"ranked below {', '.join(above)}; the file puts it above")
    if below:
        parts.append(f"ranked above {', '.join(below)}; the file puts it below")
    if not parts:
        parts.append(f"at rank {existing.rank}; the file asks for rank {rank} or better")
    return "; ".join(parts)


def _users(
    current: TenantState, desired: DesiredState, plan: Plan
) -> tuple[list[UserAssignmentReport], dict[str, int]]:
    sets = {c.user_id: c for c in _of(plan, SetUserAssignment)}
    removes = {c.user_id: c for c in _of(plan, RemoveUserAssignment)}
    counts = dict.fromkeys(("declared", *STATUSES), 0)
    listed: list[UserAssignmentReport] = []
    declared: set[str] = set()
    directory = current.directory
    for ua in desired.user_assignments:
        user = directory.user_by_ref(ua.user)
        uid = user.id if user else ua.user
        if uid in declared:
            continue
        declared.add(uid)
        counts["declared"] += 1
        existing = current.user_assignments.get(uid)
        upn = user.upn if user else (existing.upn if existing else ua.user)
        actual = existing.policy if existing else None
        set_change = sets.get(uid)
        if set_change is not None:
            status = "drifted" if existing else "missing"
            expected: str | None = set_change.policy
        elif uid in removes:
            status, expected = "extra", None
        else:
            counts["in_sync"] += 1
            continue
        counts[status] += 1
        listed.append(UserAssignmentReport(uid, upn, status, expected, actual))
    by_role = plan.roles.selection.by_user if plan.roles is not None else {}
    for uid, role in by_role.items():
        if uid in declared:
            continue
        declared.add(uid)
        counts["declared"] += 1
        existing = current.user_assignments.get(uid)
        upn = directory.users[uid].upn
        actual = existing.policy if existing else None
        set_change = sets.get(uid)
        if set_change is not None:
            status, expected = ("drifted" if existing else "missing"), set_change.policy
        elif uid in removes:
            status, expected = "extra", None
        else:
            counts["in_sync"] += 1
            continue
        counts[status] += 1
        listed.append(UserAssignmentReport(uid, upn, status, expected, actual, role))
    for uid, rc in removes.items():
        if uid not in declared:
            counts["extra"] += 1
            listed.append(UserAssignmentReport(uid, rc.upn, "extra", None, rc.policy))
    listed.sort(key=lambda u: ((u.upn or u.user_id).casefold(), u.user_id))
    return listed, counts
