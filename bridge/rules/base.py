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
    CLINICAL_PHRASES,
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
_NEGATIONS = ("non", "not")
# Runs of letters, runs of digits, and a letter "&" a letter ("A&E", "L & D"); everything else
# (spaces, _, -, /, a "&" between longer words, punctuation) separates.
_CHUNK = re.compile(r"(?<![^\W\d_])[^\W\d_]\s*&\s*[^\W\d_](?![^\W\d_])|[^\W\d_]+|\d+")
_DEFAULT_WORD = re.compile(DEFAULT_CLINICAL_PATTERN)


def _camel_split(chunk: str) -> list[str]:
    """ "DoctorsOnCall" -> Doctors, On, Call; "NICUStaff" -> NICU, Staff; "EDs" stays one word."""
    words: list[str] = []
    start = 0
    for i in range(1, len(chunk)):
        c, prev = chunk[i], chunk[i - 1]
        if not c.isupper():
            continue
        if prev.islower():
            pass  # "doctorsOn": a capital after a small letter starts a word
        elif prev.isupper() and i + 1 < len(chunk) and chunk[i + 1].islower():
            # The last capital of an acronym starts the next word ("NICUStaff"), unless what
            # follows is only a plural "s" ("EDs", "ICUsOnCall").
            if chunk[i + 1] == "s" and (i + 2 == len(chunk) or not chunk[i + 2].islower()):
                continue
        else:
            continue
        words.append(chunk[start:i])
        start = i
    words.append(chunk[start:])
    return words


def name_words(name: str) -> list[str]:
    """The words of a policy name as the default clinical test sees them: split on whitespace,
    ``_``, ``-`` and other punctuation, digits and CamelCase; an acronym's plural "s" dropped
    ("ICUs" -> "ICU"); a letter "&" a letter kept whole ("A&E", "L&D").
    ``name_words("ICU_Nurses2")`` is ICU, Nurses, 2."""
    words: list[str] = []
    for m in _CHUNK.finditer(name):
        chunk = m.group()
        if "&" in chunk:
            words.append(re.sub(r"\s+", "", chunk))
            continue
        for word in _camel_split(chunk):
            if len(word) >= 3 and word.endswith("s") and word[:-1].isupper():
                word = word[:-1]
            words.append(word)
    return words


def default_clinical_match(name: str) -> str | None:
    """The word (or phrase, ``state.CLINICAL_PHRASES``) of ``name`` that makes it clinical under
    the built-in test, or None. A word right after "non"/"not" does not count."""
    words = name_words(name)
    folded = [w.casefold() for w in words]
    for i, word in enumerate(words):
        if i and folded[i - 1] in _NEGATIONS:
            continue
        if _DEFAULT_WORD.fullmatch(word):
            return word
        for phrase in CLINICAL_PHRASES:
            if tuple(folded[i : i + len(phrase)]) == phrase:
                return " ".join(words[i : i + len(phrase)])
    return None


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
    _clinical: re.Pattern[str] | None = None  # a pattern the file sets
    by_default: bool = False  # the built-in word test (``default_clinical_match``) is in force

    @classmethod
    def build(cls, current: TenantState, desired: DesiredState) -> RuleContext:
        used = policies_in_use(current)
        in_use = sorted(
            (p for k, p in current.policies.items() if k in used),
            key=lambda p: (not is_global(p.name), p.key),
        )
        pattern = desired.rules.clinical_pattern
        # The built-in test applies alongside a clinical_policies list: listing one policy must
        # not switch detection off for every other. Only an explicit "" (or false) does that.
        if pattern == DEFAULT_CLINICAL_PATTERN or not pattern:
            return cls(current, desired, in_use, None, by_default=bool(pattern))
        try:
            compiled = re.compile(pattern)
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

    def clinical_match(self, name: str) -> str | None:
        """What in ``name`` matches ``rules.clinical_pattern`` (not negated by a "non"/"not"
        just before it), or None: a word of the name under the built-in test, the matched
        text under a pattern the file sets, None when the file sets it to "" or false."""
        if self.by_default:
            return default_clinical_match(name)
        if self._clinical is None:
            return None
        for m in self._clinical.finditer(name):
            if not _NEGATED.search(name[: m.start()]):
                return m.group()
        return None

    def is_clinical(self, name: str) -> bool:
        """Named in ``rules.clinical_policies`` (any casing, ``Tag:`` optional) or matching
        ``rules.clinical_pattern`` (``clinical_match``); the two are used together."""
        return self.is_named_clinical(name) or self.clinical_match(name) is not None

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
