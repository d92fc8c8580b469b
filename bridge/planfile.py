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
applies to fewer changes), so the saved floor is clamped down to the default. Every number in the
file is checked finite and in range first (``limits``): a NaN limit would otherwise make ``min``
keep the NaN and the check never trip.

Reading never ends in a traceback: a file that is not UTF-8, not JSON (``NaN``, ``Infinity``
included), nested too deeply, or holds a field of the wrong type or out of range is a
``PlanError`` naming the file, the line and column where known, and the field.
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

from . import limits
from .errors import PlanError
from .plan import Plan
from .state import SafetyLimits
from .yamlloc import (
    JsonFileError,
    decode_utf8,
    json_position,
    parse_json,
    too_deep,
    too_nested,
)

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
# A plan made on another machine may carry that machine's clock; later than this is not a time a
# plan was made, and would make the journal's "written since the plan" check see nothing.
CLOCK_SKEW = dt.timedelta(hours=1)
_SAFETY_RANGES = {"max_policy_deletes": limits.COUNT, "max_user_change_share": limits.SHARE}
# A saved plan is 5 levels deep (changes, a change, its settings, a value); far more is not one.
_MAX_NESTING = 32


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


def loads(
    text: str | bytes,
    source: str = "<plan>",
    *,
    now: Callable[[], dt.datetime] = _utc_now,
) -> SavedPlan:
    if isinstance(text, bytes):
        decoded, (line, column, byte) = decode_utf8(text)
        if decoded is None:
            raise PlanError(
                f"{source}:{line}:{column}: not a saved plan: not UTF-8 text (byte 0x{byte:02x})"
            )
        text = decoded
    try:
        data = parse_json(text)
    except JsonFileError as exc:
        raise PlanError(f"{exc.where(source)}: not a saved plan: {exc.message}") from None
    if not isinstance(data, dict):
        raise PlanError(f"{source}: not a saved plan (expected a JSON object)")
    try:
        return _from_data(data, text, source, now())
    except RecursionError:
        where = too_deep(text).where(source)
        raise PlanError(f"{where}: not a saved plan: nested too deeply") from None


def _from_data(data: dict[str, Any], text: str, source: str, now: dt.datetime) -> SavedPlan:
    deep = too_nested(data, _MAX_NESTING)
    if deep is not None:
        pos = json_position(text, deep)
        where = f"{source}:{pos[0]}:{pos[1]}" if pos else source
        raise PlanError(
            f"{where}: not a saved plan: nested more than {_MAX_NESTING} levels deep: {EDITED}"
        )
    stored = data.get("digest")
    if not isinstance(stored, str):
        raise PlanError(
            f"{source}: the plan file has no digest (made by an older teams-bridge, or not by "
            "'plan --out'): run plan --out again"
        )
    if stored != digest(data):
        raise PlanError(f"{source}: {EDITED}")

    def bad(path: tuple[Any, ...], what: str) -> PlanError:
        pos = json_position(text, path)
        where = f"{source}:{pos[0]}:{pos[1]}" if pos else source
        field = ".".join(str(p) for p in path)
        return PlanError(f"{where}: the saved plan's {field} {what}: {EDITED}")

    if data.get("tenant_id") is not None and not isinstance(data["tenant_id"], str):
        raise bad(("tenant_id",), "is not text")
    for key in ("state_checksum", "desired_sha256"):
        if not isinstance(data.get(key, ""), str):
            raise bad((key,), "is not text")
    notes = data.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise bad(("notes",), "is not a list of text")
    safety = data.get("safety")
    if safety is not None:
        if not isinstance(safety, dict):
            raise bad(("safety",), "is not an object")
        for name, rng in _SAFETY_RANGES.items():
            if name in safety:
                why = rng.problem(safety[name])
                if why is not None:
                    raise bad(("safety", name), f"is not valid ({why})")
        protect = safety.get("protect_clinical_settings", True)
        if not isinstance(protect, bool):
            raise bad(("safety", "protect_clinical_settings"), "is not true or false")
    changes = data.get("changes")
    for i, change in enumerate(changes if isinstance(changes, list) else ()):
        for path in (("rank",), ("from", "rank")):
            value: Any = change
            for step in path:
                value = value.get(step) if isinstance(value, dict) else None
            if value is not None:
                why = limits.RANK.problem(value)
                if why is not None or not isinstance(value, int):
                    why = why or f"{value!r} is not a whole number"
                    raise bad(("changes", i, *path), f"is not a rank ({why})")
    created = _created_at(data.get("created_at"), now)
    if isinstance(created, str):
        raise bad(("created_at",), created)
    try:
        plan = Plan.from_data(data)
    except PlanError as exc:
        raise PlanError(f"{source}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise PlanError(
            f"{source}: the saved plan cannot be read ({exc!r}): run plan again"
        ) from exc
    return SavedPlan(plan, created)


def _created_at(value: Any, now: dt.datetime) -> dt.datetime | str:
    """The plan's creation time (aware, UTC), or why it is not one."""
    if not isinstance(value, str):
        return "is missing or not text (an ISO 8601 time)"
    try:
        created = dt.datetime.fromisoformat(value)
        if created.tzinfo is None:
            created = created.replace(tzinfo=dt.timezone.utc)
        created = created.astimezone(dt.timezone.utc)
    except (ValueError, OverflowError) as exc:
        return f"{value[:40]!r} is not a time ({exc})"
    why = limits.time_problem(created, now, CLOCK_SKEW)
    if why is not None:
        # A plan dated in the future would pass the journal's freshness check unchecked.
        return f"{value[:40]!r} {why}; a saved plan is dated when plan --out made it"
    return created


def read_plan(path: str | Path) -> SavedPlan:
    try:
        data = limits.read_bounded(path, limits.PLAN_MAX_BYTES)
    except OSError as exc:
        raise PlanError(f"{path}: cannot read the saved plan: {exc.strerror or exc}") from exc
    return loads(data, str(path))


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
        # NaN would survive min() below (every comparison with it is false) and switch the
        # limit off; infinities and wrong types are as wrong.
        deletes = limits.check(saved.max_policy_deletes, limits.COUNT, "safety.max_policy_deletes")
        share = limits.check(
            saved.max_user_change_share, limits.SHARE, "safety.max_user_change_share"
        )
        floor = limits.check(saved.user_change_floor, limits.FLOOR, "safety.user_change_floor")
    except limits.NumberError as exc:
        raise PlanError(f"the saved plan has unreadable safety limits ({exc}): {EDITED}") from None
    effective = SafetyLimits(
        max_policy_deletes=min(deletes, default.max_policy_deletes),
        max_user_change_share=min(share, default.max_user_change_share),
        protect_clinical_settings=bool(saved.protect_clinical_settings)
        or default.protect_clinical_settings,
        user_change_floor=min(floor, default.user_change_floor),
    )
    if max_policy_deletes is not None:
        deletes = limits.check(max_policy_deletes, limits.COUNT, "--max-policy-deletes")
        effective = dataclasses.replace(effective, max_policy_deletes=deletes)
    if max_user_change_share is not None:
        share = limits.check(max_user_change_share, limits.SHARE, "--max-user-change-share")
        effective = dataclasses.replace(effective, max_user_change_share=share)
    if user_change_floor is not None:
        floor = limits.check(user_change_floor, limits.FLOOR, "--user-change-floor")
        effective = dataclasses.replace(effective, user_change_floor=floor)
    return effective


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
