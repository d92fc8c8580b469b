"""Healthcare secure-messaging checks, evaluated on what users have *now* (the tenant's current
state), so a drift report shows a compliance reviewer the risks in force today.

Each rule has an id, a default severity and a switch in the desired file's ``rules:`` block
(``RulesConfig.is_enabled``). ``run_rules(current, desired)`` returns one ``Finding`` per problem
found, in a stable order (rule order, then the policies concerned).

Severities: ``error`` and ``warning`` make a drift report fail (exit 2) by default; ``info`` is an
explanation only.

- ``read-receipts-consistency`` (warning): a policy in use has read receipts "Everyone" and
  another policy in use differs;
- ``clinical-read-receipts`` (error for "None", warning for "UserPreference"): a clinical
  policy's read receipts are not "Everyone";
- ``clinical-priority`` (error): a clinical policy has AllowPriorityMessages false;
- ``clinical-coverage`` (error): a person ``rules.clinicians`` selects gets, as their effective
  policy (direct, else best-ranked group among direct memberships, else Global), one without
  priority notifications or with read receipts off for everyone. A file with
  ``rules.clinicians`` is checked this way instead of by the two name-based rules above;
- ``no-priority-anywhere`` (warning): no policy in use allows priority notifications;
- ``read-receipts-group-size`` (info): read receipts are managed or enabled (explains the
  20-person limit).

"In use" means Global plus every policy assigned to a group or user; "clinical" means named in
``rules.clinical_policies`` or matching ``rules.clinical_pattern``, the two together. The default
pattern is a list of hospital words matched against each word of the name (split on separators,
digits and CamelCase: "ICU_Nurses", "DoctorsOnCall"); a match right after "non"/"not" does not
count, so "Non-Clinical Staff" is not clinical. ``clinical_pattern: false`` (or "") leaves the
list alone to decide. A clinical policy nobody has yet gets its clinical findings as ``info``
(shown, never failing a run).
"""

from __future__ import annotations

import logging

from ..state import DesiredState, TenantState
from .base import SEVERITIES, Finding, Rule, RuleContext
from .healthcare import HEALTHCARE_RULES

log = logging.getLogger(__name__)

RULES: dict[str, Rule] = {r.id: r for r in HEALTHCARE_RULES}
RULE_IDS = tuple(RULES)


def run_rules(current: TenantState, desired: DesiredState) -> list[Finding]:
    """Every finding of every enabled rule on ``current``, in rule order.

    Raises ``DesiredStateError`` when ``rules.clinical_pattern`` is not a valid regular expression.
    """
    ctx = RuleContext.build(current, desired)
    findings: list[Finding] = []
    for rule in RULES.values():
        if not desired.rules.is_enabled(rule.id):
            log.debug("rule %s is switched off in the desired file", rule.id)
            continue
        found = rule.check(ctx)
        log.debug("rule %s: %d finding(s)", rule.id, len(found))
        findings.extend(found)
    return findings


__all__ = ["RULES", "RULE_IDS", "SEVERITIES", "Finding", "Rule", "RuleContext", "run_rules"]
