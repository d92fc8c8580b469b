"""The shapes every rule shares: ``Finding`` (one problem found), ``Rule`` (an id, a default
severity and a check) and ``RuleContext`` (what a check looks at)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import DesiredStateError, Location, Problem
from ..plan import policies_in_use
from ..state import (
    DEFAULT_CLINICAL_PATTERN,
    DesiredState,
    Policy,
    TenantState,
    is_global,
    policy_key,
)

SEVERITIES = ("info", "warning", "error")

# "Non-Clinical Staff", "Not clinical", "non_clinical": a pattern match negated by the word before.
_NEGATED = re.compile(r"(?i)\b(?:non|not)[\s_-]*$")


@dataclass(frozen=True)
class Finding:
    rule_id: str
    severity: str  # one of SEVERITIES
    title: str
    explanation: str  # plain words for a compliance reviewer, citing the guidance
    policies: tuple[str, ...] = ()  # bare policy names concerned
    # True when the finding is about one policy (``clinical-*``); False for a tenant-wide finding,
    # whose policies are only the evidence of the moment.
    per_policy: bool = False

    @property
    def key(self) -> str:
        """A stable identity across runs (history uses it). A tenant-wide finding is the rule
        alone: its list of policies changes as the tenant does while the problem stays open.
        A per-policy finding is the rule and its policy."""
        if not self.per_policy or not self.policies:
            return f"rule:{self.rule_id}"
        return f"rule:{self.rule_id}:" + ",".join(sorted(policy_key(p) for p in self.policies))

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "severity": self.severity,
            "title": self.title,
            "explanation": self.explanation,
            "policies": list(self.policies),
        }


@dataclass
class RuleContext:
    current: TenantState
    desired: DesiredState
    # Policies that apply to somebody and exist in the tenant: Global first, then by name.
    in_use: list[Policy] = field(default_factory=list)
    _clinical: re.Pattern[str] | None = None

    @classmethod
    def build(cls, current: TenantState, desired: DesiredState) -> RuleContext:
        used = policies_in_use(current)
        in_use = sorted(
            (p for k, p in current.policies.items() if k in used),
            key=lambda p: (not is_global(p.name), p.key),
        )
        rules = desired.rules
        # A clinical_policies list says exactly which policies are clinical: the built-in
        # guess would only add false findings. A pattern the file sets itself still applies.
        explicit = rules.clinical_pattern != DEFAULT_CLINICAL_PATTERN
        pattern = rules.clinical_pattern if explicit or not rules.clinical_policies else ""
        try:
            compiled = re.compile(pattern) if pattern else None
        except re.error as exc:
            raise DesiredStateError(
                [
                    Problem(
                        Location(desired.source),
                        f"rules.clinical_pattern {pattern!r} is not a valid regular expression "
                        f"({exc}); fix it or list the policies in rules.clinical_policies",
                    )
                ]
            ) from exc
        return cls(current, desired, in_use, compiled)

    def is_clinical(self, name: str) -> bool:
        """Named in ``rules.clinical_policies`` (any casing, ``Tag:`` optional) or matching
        ``rules.clinical_pattern`` somewhere not negated by a "non"/"not" just before it. The
        pattern is not used when the file lists ``clinical_policies`` and keeps the default
        pattern."""
        if self.is_named_clinical(name):
            return True
        if self._clinical is None:
            return False
        return any(not _NEGATED.search(name[: m.start()]) for m in self._clinical.finditer(name))

    def is_in_use(self, name: str) -> bool:
        return any(p.key == policy_key(name) for p in self.in_use)

    def is_named_clinical(self, name: str) -> bool:
        return policy_key(name) in {policy_key(n) for n in self.desired.rules.clinical_policies}

    def clinical_policies(self) -> list[Policy]:
        """Clinical policies that exist in the tenant, by name."""
        return sorted(
            (p for p in self.current.policies.values() if self.is_clinical(p.name)),
            key=lambda p: p.key,
        )


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str  # the default; a check may lower it for a milder case
    title: str
    check: Callable[[RuleContext], list[Finding]]
