"""The healthcare secure-messaging baseline.

Guidance the rules cite (Microsoft's "secure messaging for healthcare" guidance and the Teams
messaging-policy reference):
- read receipts show a sender that a message was read; they work in 1:1 chats and in group chats
  of 20 people or fewer;
- "On for everyone" (``Everyone``) only holds tenant-wide when every messaging policy in use agrees
  on the read-receipts setting, or there is only the Global policy;
- priority notifications re-notify the recipient every 2 minutes for up to 20 minutes until the
  message is read; clinicians need them for urgent messages.
"""

from __future__ import annotations

from typing import Any

from .base import Finding, Rule, RuleContext
from .people import clinicians, effective_policies, unread_groups

READ_RECEIPTS = "ReadReceiptsEnabledType"
PRIORITY = "AllowPriorityMessages"

_RR_LABEL = {
    "Everyone": "On for everyone",
    "UserPreference": "User controlled",
    "None": "Off for everyone",
}


def _rr(value: Any) -> str:
    """A read-receipts value as the admin center names it, for people reading a report."""
    if value is None:
        return "not reported by the service"
    label = _RR_LABEL.get(str(value))
    return f"{label} ({value})" if label else repr(value)


def _is(value: Any, want: str) -> bool:
    return isinstance(value, str) and value.casefold() == want.casefold()


def _why_clinical(ctx: RuleContext, name: str) -> str:
    if ctx.is_named_clinical(name):
        return "is listed in rules.clinical_policies"
    return f"has a name that matches rules.clinical_pattern: {ctx.clinical_match(name)!r}"


def _unused(ctx: RuleContext, name: str, severity: str) -> tuple[str, str]:
    """A clinical policy nobody has yet is worth knowing about, not worth failing a run for:
    ``info``, and the explanation says why."""
    if ctx.is_in_use(name):
        return severity, ""
    return "info", (
        f" It is not assigned to anyone yet, so this is shown for information only (it becomes "
        f"a{'n' if severity == 'error' else ''} {severity} once the policy is in use)."
    )


def read_receipts_consistency(ctx: RuleContext) -> list[Finding]:
    everyone = [p for p in ctx.in_use if _is(p.settings.get(READ_RECEIPTS), "Everyone")]
    others = [p for p in ctx.in_use if not _is(p.settings.get(READ_RECEIPTS), "Everyone")]
    if not everyone or not others:
        return []
    listing = "; ".join(f"{p.name}: {_rr(p.settings.get(READ_RECEIPTS))}" for p in others)
    return [
        Finding(
            "read-receipts-consistency",
            RULE_SEVERITY["read-receipts-consistency"],
            "Read receipts are not on for everyone across the tenant",
            f"{', '.join(p.name for p in everyone)} set read receipts to 'On for everyone', but "
            f"other policies in use differ ({listing}). The guidance is that 'On for everyone' "
            "only holds tenant-wide when every messaging policy in use has the same "
            "read-receipts setting (or there is only the Global policy): people under the other "
            "policies do not send read receipts, so a clinician cannot rely on seeing that a "
            "message was read. Give every policy in use the same ReadReceiptsEnabledType.",
            tuple(p.name for p in others),
        )
    ]


def clinical_read_receipts(ctx: RuleContext) -> list[Finding]:
    if ctx.desired.rules.has_clinicians:
        return []  # clinical-coverage checks the people themselves
    findings = []
    for p in ctx.clinical_policies():
        value = p.settings.get(READ_RECEIPTS)
        if _is(value, "Everyone"):
            continue
        off = _is(value, "None")
        severity, unused = _unused(ctx, p.name, "error" if off else "warning")
        findings.append(
            Finding(
                "clinical-read-receipts",
                severity,
                f"Read receipts are not on for everyone in clinical policy {p.name}",
                f"Policy {p.name} is meant for clinicians (it {_why_clinical(ctx, p.name)}) and "
                f"its read receipts are {_rr(value)}. The guidance for clinical messaging is "
                "'On for everyone', so a sender knows an urgent message was read; with "
                f"{'read receipts off' if off else 'user-controlled receipts'}, "
                "a sender cannot tell. Set ReadReceiptsEnabledType: Everyone in this policy."
                + unused,
                (p.name,),
                per_policy=True,
            )
        )
    return findings


def clinical_priority(ctx: RuleContext) -> list[Finding]:
    if ctx.desired.rules.has_clinicians:
        return []  # clinical-coverage checks the people themselves
    findings = []
    for p in ctx.clinical_policies():
        value = p.settings.get(PRIORITY)
        if value is True:
            continue
        severity, unused = _unused(ctx, p.name, "error" if value is False else "warning")
        shown = "off" if value is False else f"not reported by the service ({value!r})"
        findings.append(
            Finding(
                "clinical-priority",
                severity,
                f"Priority notifications are not allowed in clinical policy {p.name}",
                f"Policy {p.name} is meant for clinicians (it {_why_clinical(ctx, p.name)}) and "
                f"priority notifications are {shown}. A priority message re-notifies the "
                "recipient every 2 minutes for up to 20 minutes until it is read; clinicians "
                "need it for urgent messages. Set AllowPriorityMessages: true in this policy."
                + unused,
                (p.name,),
                per_policy=True,
            )
        )
    return findings


def no_priority_anywhere(ctx: RuleContext) -> list[Finding]:
    if any(p.settings.get(PRIORITY) is True for p in ctx.in_use):
        return []
    names = [p.name for p in ctx.in_use]
    return [
        Finding(
            "no-priority-anywhere",
            RULE_SEVERITY["no-priority-anywhere"],
            "No policy in use allows priority notifications",
            f"None of the policies in use ({', '.join(names) or 'none'}) allows priority "
            "notifications, so nobody in the tenant can mark a message urgent. A priority "
            "message re-notifies the recipient every 2 minutes for up to 20 minutes until it is "
            "read, which is how urgent clinical messages get attention. Set "
            "AllowPriorityMessages: true at least in the policies clinicians use.",
            tuple(names),
        )
    ]


def read_receipts_group_size(ctx: RuleContext) -> list[Finding]:
    managed = any(
        READ_RECEIPTS in p.settings and not p.absent for p in ctx.desired.policies.values()
    )
    enabled = [
        p.name
        for p in ctx.in_use
        if not _is(p.settings.get(READ_RECEIPTS), "None")
        and p.settings.get(READ_RECEIPTS) is not None
    ]
    if not managed and not enabled:
        return []
    return [
        Finding(
            "read-receipts-group-size",
            RULE_SEVERITY["read-receipts-group-size"],
            "Read receipts only work in 1:1 chats and group chats of 20 people or fewer",
            "Read receipts are managed or enabled in this tenant. Even with 'On for everyone', "
            "Teams shows read receipts only in 1:1 chats and group chats of 20 people or fewer; "
            "in larger group chats and in channels a sender cannot see who read a message. "
            "Urgent clinical messages to a larger group need another way to confirm receipt "
            "(priority notifications, or a 1:1 follow-up).",
        )
    ]


def _priority_off(settings: Any) -> bool:
    return settings.get(PRIORITY) is False


def _receipts_off(settings: Any) -> bool:
    return _is(settings.get(READ_RECEIPTS), "None")


def clinical_coverage(ctx: RuleContext) -> list[Finding]:
    """Every clinician (``rules.clinicians``) on their *effective* policy: one who cannot send
    priority notifications, or whose read receipts are off for everyone, is an error. One
    finding per policy, saying how many people get it and through what."""
    who = clinicians(ctx.current, ctx.desired)
    if who is None:
        return []
    findings: list[Finding] = []
    if not who:
        return [
            Finding(
                "clinical-coverage",
                "warning",
                "rules.clinicians selects nobody",
                "The roles and where-clause under rules.clinicians select no user in the "
                "directory, so no clinician's policy was checked. Check the attribute values "
                "(teams-bridge explain USER shows a user's).",
            )
        ]
    unread = unread_groups(ctx.current)
    # policy key -> (policy name, {through: count})
    short: dict[str, tuple[str, dict[str, int]]] = {}
    for uid, eff in effective_policies(ctx.current):
        if uid not in who:
            continue
        policy = ctx.current.policy(eff.policy)
        if policy is None or not (_priority_off(policy.settings) or _receipts_off(policy.settings)):
            continue
        entry = short.setdefault(policy.key, (policy.name, {}))
        through = eff.through()
        entry[1][through] = entry[1].get(through, 0) + 1
    for _key, (name, sources) in sorted(short.items()):
        settings = ctx.current.policies[_key].settings
        total = sum(sources.values())
        ranked = sorted(sources.items(), key=lambda s: (-s[1], s[0]))
        main, main_count = ranked[0]
        lacks = []
        if _priority_off(settings):
            lacks.append("cannot send priority notifications (AllowPriorityMessages: false)")
        if _receipts_off(settings):
            lacks.append("have read receipts off for everyone (ReadReceiptsEnabledType: None)")
        title = f"{main_count} clinician{'s get' if main_count != 1 else ' gets'} {name} {main}"
        if len(ranked) > 1:
            title += f" (and {total - main_count} more clinicians get it otherwise)"
        detail = "; ".join(f"{count} {through}" for through, count in ranked)
        findings.append(
            Finding(
                "clinical-coverage",
                RULE_SEVERITY["clinical-coverage"],
                title,
                f"{total} of the {len(who)} people rules.clinicians selects get policy {name} "
                f"({detail}), so they {' and '.join(lacks)}. A priority message re-notifies "
                "every 2 minutes for up to 20 minutes until read, and read receipts tell a "
                "nurse the doctor read the message: clinicians need both. Give these people a "
                "clinical policy (a role, or a better-ranked group assignment), or change "
                f"{name}.",
                (name,),
                per_policy=True,
            )
        )
    if unread:
        findings.append(
            Finding(
                "clinical-coverage",
                "warning",
                f"The members of {len(unread)} assigned group(s) were not read",
                "Clinicians in those groups were counted as getting Global or their direct "
                "assignment; read the tenant (not an older snapshot) to check them all.",
            )
        )
    return findings


HEALTHCARE_RULES = (
    Rule(
        "read-receipts-consistency",
        "warning",
        "Read receipts agree across policies in use",
        read_receipts_consistency,
    ),
    Rule(
        "clinical-read-receipts",
        "error",
        "Clinical policies have read receipts on for everyone",
        clinical_read_receipts,
    ),
    Rule(
        "clinical-priority",
        "error",
        "Clinical policies allow priority notifications",
        clinical_priority,
    ),
    Rule(
        "clinical-coverage",
        "error",
        "Every clinician can send priority notifications and sends read receipts",
        clinical_coverage,
    ),
    Rule(
        "no-priority-anywhere",
        "warning",
        "Some policy in use allows priority notifications",
        no_priority_anywhere,
    ),
    Rule(
        "read-receipts-group-size",
        "info",
        "Read receipts: the group-size limit",
        read_receipts_group_size,
    ),
)
RULE_SEVERITY = {r.id: r.severity for r in HEALTHCARE_RULES}
