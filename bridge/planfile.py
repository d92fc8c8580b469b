"""Saved plan files (``plan --out``, ``apply --plan``): where a plan is written and read, and its
integrity check.

A saved plan is the plan's stable JSON (``Plan.data``) plus ``created_at`` (UTC, when it was made)
and ``digest``: a SHA-256 over everything ``apply --plan`` acts on (schema version, tenant id,
state checksum, changes, safety limits, desired-file hash, creation time). ``read_plan`` refuses a
file whose digest does not match, so a plan that was edited after review (by hand, by a merge, by a
broken copy) is never applied.

What the digest does not do: it is not a signature. Whoever can write the file can also recompute
the digest, so it detects accidental or careless edits, not a determined attacker. A keyed HMAC
would need a secret kept away from the plan's author, which teams-bridge does not have. The limits
that matter most are therefore not taken on trust from the file: ``effective_limits`` never lets a
saved plan's safety limits be looser than the built-in defaults (``SafetyLimits()``); only
options given to ``apply`` itself (``--max-policy-deletes``, ``--max-user-change-share``,
``--user-change-floor``, ``--force``) can loosen them. A higher floor is looser (the share limit
applies to fewer changes), so the saved floor is clamped down to the default.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import PlanError
from .plan import Plan
from .state import SafetyLimits

DIGEST_PREFIX = "sha256:"
# What the digest covers; the rest of the file (summary, notes) is derived or informational.
_COVERED = (
    "schema_version",
    "tenant_id",
    "state_checksum",
    "desired_sha256",
    "changes",
    "safety",
    "created_at",
)
EDITED = "the plan file was changed after it was made: run plan --out again"


@dataclass(frozen=True)
class SavedPlan:
    plan: Plan
    created_at: dt.datetime  # aware, UTC


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def digest(data: Mapping[str, Any]) -> str:
    """The digest of a saved plan's JSON (``data`` as parsed from, or about to go to, the file)."""
    covered = {key: data.get(key) for key in _COVERED}
    text = json.dumps(covered, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return DIGEST_PREFIX + hashlib.sha256(text.encode("utf-8")).hexdigest()


def dumps(plan: Plan, *, now: Callable[[], dt.datetime] = _utc_now) -> str:
    """The text of a saved plan file for ``plan``, made now."""
    created = now().astimezone(dt.timezone.utc).isoformat(timespec="milliseconds")
    # Through JSON once, so the digest is over exactly what a reader will parse back.
    data: dict[str, Any] = json.loads(json.dumps({**plan.data, "created_at": created}, default=str))
    data["digest"] = digest(data)
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def loads(text: str, source: str = "<plan>") -> SavedPlan:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanError(f"{source}:{exc.lineno}:{exc.colno}: not a saved plan: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise PlanError(f"{source}: not a saved plan (expected a JSON object)")
    stored = data.get("digest")
    if not isinstance(stored, str):
        raise PlanError(
            f"{source}: the plan file has no digest (made by an older teams-bridge, or not by "
            "'plan --out'): run plan --out again"
        )
    if stored != digest(data):
        raise PlanError(f"{source}: {EDITED}")
    try:
        created = dt.datetime.fromisoformat(str(data["created_at"]))
    except (KeyError, ValueError) as exc:
        raise PlanError(f"{source}: the plan file has no readable created_at: {exc}") from exc
    if created.tzinfo is None:
        created = created.replace(tzinfo=dt.timezone.utc)
    try:
        plan = Plan.from_data(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PlanError(
            f"{source}: the saved plan cannot be read ({exc!r}): run plan again"
        ) from exc
    return SavedPlan(plan, created.astimezone(dt.timezone.utc))


def read_plan(path: str | Path) -> SavedPlan:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"{path}: cannot read the saved plan: {exc.strerror or exc}") from exc
    return loads(text, str(path))


def effective_limits(
    saved: SafetyLimits,
    *,
    max_policy_deletes: int | None = None,
    max_user_change_share: float | None = None,
    user_change_floor: int | None = None,
) -> SafetyLimits:
    """The limits ``apply --plan`` enforces: the saved plan's, but never looser than the built-in
    defaults (a digest can be recomputed by whoever edits the file), then the apply command line's
    explicit overrides, which may loosen them."""
    default = SafetyLimits()
    try:
        deletes, share = int(saved.max_policy_deletes), float(saved.max_user_change_share)
    except (TypeError, ValueError) as exc:
        raise PlanError(f"the saved plan has unreadable safety limits ({exc}): {EDITED}") from exc
    limits = SafetyLimits(
        max_policy_deletes=min(deletes, default.max_policy_deletes),
        max_user_change_share=min(share, default.max_user_change_share),
        protect_clinical_settings=bool(saved.protect_clinical_settings)
        or default.protect_clinical_settings,
        user_change_floor=min(_whole(saved.user_change_floor), default.user_change_floor),
    )
    if max_policy_deletes is not None:
        limits = dataclasses.replace(limits, max_policy_deletes=max_policy_deletes)
    if max_user_change_share is not None:
        limits = dataclasses.replace(limits, max_user_change_share=max_user_change_share)
    if user_change_floor is not None:
        limits = dataclasses.replace(limits, user_change_floor=user_change_floor)
    return limits


def _whole(value: object) -> int:
    """A saved floor: a whole number from 0, else the plan file was edited (a higher floor, or
    one that cannot compare, would loosen the share limit)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PlanError(
            f"the saved plan's safety.user_change_floor {value!r} is not valid: {EDITED}"
        )
    return value


def looser_than_applied(saved: SafetyLimits) -> list[str]:
    """Notes for ``plan --out``: each safety limit of the file that ``apply --plan`` will not use
    because it is looser than the default (``effective_limits`` clamps it), with the ``apply``
    option that gives it back, so a reviewer is not surprised by a refusal the plan did not show."""
    default, notes = SafetyLimits(), []
    why = (
        "a saved plan's limits are never looser than the built-in defaults, as its digest can "
        "be recomputed"
    )
    if saved.max_policy_deletes > default.max_policy_deletes:
        notes.append(
            f"note: apply --plan will not use the file's safety.max_policy_deletes "
            f"({saved.max_policy_deletes}) but the default {default.max_policy_deletes} ({why}); "
            f"to keep it, run apply --plan PLAN --max-policy-deletes {saved.max_policy_deletes}"
        )
    if saved.max_user_change_share > default.max_user_change_share:
        notes.append(
            f"note: apply --plan will not use the file's safety.max_user_change_share "
            f"({saved.max_user_change_share:g}) but the default "
            f"{default.max_user_change_share:g} ({why}); to keep it, run apply --plan PLAN "
            f"--max-user-change-share {saved.max_user_change_share:g}"
        )
    if saved.user_change_floor > default.user_change_floor:
        notes.append(
            f"note: apply --plan will not use the file's safety.user_change_floor "
            f"({saved.user_change_floor}) but the default {default.user_change_floor} ({why}); "
            f"to keep it, run apply --plan PLAN --user-change-floor {saved.user_change_floor}"
        )
    if not saved.protect_clinical_settings and default.protect_clinical_settings:
        notes.append(
            "note: apply --plan will not use the file's safety.protect_clinical_settings: false "
            f"but protects clinical settings ({why}); a plan that turns read receipts or "
            "priority notifications off needs apply --plan PLAN --force (no narrower option)"
        )
    return notes
