"""The journal's line format, pinned: every kind of line apply writes, byte for byte (the time,
host and pid aside). ``Journal.group_writes`` and ``Journal.writes_after`` read these lines back
(a later run holds a propagating re-rank back, a saved plan is refused as stale), and auditors
read them, so a refactor of how lines are built must not change one.

The golden files are ``tests/fixtures/journal/*.jsonl``, one line per journal line; a failing
assertion prints the scenario's lines. ``UPDATE_GOLDEN=1`` rewrites them: only for a format
change that is meant, and its readers (``group_writes``, ``writes_after``) checked."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
from test_apply import (
    ChunkedBackend,
    DelayedBackend,
    FailingAddBackend,
    FakeTime,
    LaggingBackend,
    LostBatchBackend,
    PartialBulkBackend,
    RemovedBeforeBackend,
    Wrapper,
    desired,
    five_user_plan,
    fresh,
    hospital,
    rerank_desired,
    rerank_facilities,
    run,
    user_plan,
)

from bridge.apply import ApplyFailed
from bridge.backends.base import WriteReceipt
from bridge.backends.snapshot import MemoryBackend
from bridge.errors import ServerError
from bridge.journal import Journal
from bridge.plan import diff

GOLDEN = Path(__file__).parent / "fixtures" / "journal"
NOW = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.timezone.utc)


class WarnedBackend(Wrapper):
    """An HTTP transport: each write has its correlation id, and the service warns about the
    update of policy Global (as the header carries it)."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.n = 0
        self.warnings: list[str] = []

    def last_write(self):
        return WriteReceipt(f"corr-{self.n}" if self.n else None)

    def take_warnings(self):
        said, self.warnings = self.warnings, []
        return said

    def _call(self, op, fn, *args):
        self.n += 1
        if op == "update_policy" and args[0] == "Global":
            self.warnings.append("Setting AllowGiphy is deprecated")
        return fn(*args)


class FailOnceAddBackend(Wrapper):
    """The add of a replacement fails once (a 503 with its correlation id): the old row goes
    back."""

    def __init__(self, inner, group_id: str) -> None:
        super().__init__(inner)
        self.group_id = group_id
        self.failed = False

    def _call(self, op, fn, *args):
        if op == "add_group_assignment" and args[0] == self.group_id and not self.failed:
            self.failed = True
            raise ServerError("503 from Teams admin API on add", status=503, correlation_id="c-9")
        return fn(*args)


def _lines(path: Path) -> list[dict]:
    out = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        # The time first: reading back finds a line's time without parsing it.
        assert raw.startswith('{"time": "'), raw
        entry = json.loads(raw)
        if entry.get("event") == "run_started":
            assert isinstance(entry.pop("host"), str) and isinstance(entry.pop("pid"), int)
        out.append(entry)
    return out


def _clean(path):
    mem, current, plan = fresh()
    run(plan, WarnedBackend(mem), current, journal=Journal(path, now=lambda: NOW))


def _restored(path):
    mem, current, plan = fresh()
    with pytest.raises(ApplyFailed):
        run(plan, FailOnceAddBackend(mem, "g-fac"), current, journal=Journal(path, now=lambda: NOW))


def _not_restored(path):
    mem, current, plan = fresh()
    with pytest.raises(ApplyFailed):
        run(plan, FailingAddBackend(mem, "g-fac"), current, journal=Journal(path, now=lambda: NOW))


def _bulk_partial(path):
    mem = MemoryBackend(hospital())
    current = mem.read()
    with pytest.raises(ApplyFailed):
        run(
            diff(current, desired()),
            PartialBulkBackend(mem, {"u3"}),
            current,
            journal=Journal(path, now=lambda: NOW),
        )


def _bulk_stopped(path):
    mem, current, plan = five_user_plan()
    with pytest.raises(ApplyFailed):
        run(plan, ChunkedBackend(mem, deny_at=2), current, journal=Journal(path, now=lambda: NOW))


def _batch_lost(path):
    mem, current, plan = user_plan()
    with pytest.raises(ApplyFailed):
        run(plan, LostBatchBackend(mem), current, journal=Journal(path, now=lambda: NOW))


def _pending_after_verification(path):
    mem, current, plan = user_plan()
    time = FakeTime()
    run(
        plan,
        DelayedBackend(mem, time, delay=600),
        current,
        time=time,
        verify_timeout=60,
        journal=Journal(path, now=lambda: NOW),
    )


def _conflict_then_held_back(path):
    """Re-ranks whose adds answer 409 while the service propagates (pending), then a run that
    holds them back (not sent again)."""
    mem = MemoryBackend(hospital())
    lagging = LaggingBackend(mem)
    journal = Journal(path, now=lambda: NOW)
    t = FakeTime()
    for n in (1, 2):
        state = lagging.read()
        run(
            diff(state, rerank_desired()),
            lagging,
            state,
            time=t,
            journal=journal,
            run_id=f"run-{n}",
            verify_timeout=10,
        )


def _removed_before(path):
    """A re-rank whose removal answers 404: an earlier run removed it and was killed."""
    mem, _, want, _ = rerank_facilities()
    backend = RemovedBeforeBackend(mem)
    mem.remove_group_assignment("g-fac")
    state = backend.read()
    run(
        diff(state, want), backend, state, journal=Journal(path, now=lambda: NOW), verify_timeout=10
    )


SCENARIOS = {
    "clean": _clean,
    "restored": _restored,
    "not_restored": _not_restored,
    "bulk_partial": _bulk_partial,
    "bulk_stopped": _bulk_stopped,
    "batch_lost": _batch_lost,
    "pending_after_verification": _pending_after_verification,
    "conflict_then_held_back": _conflict_then_held_back,
    "removed_before": _removed_before,
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_journal_lines_are_as_pinned(name, tmp_path):
    path = tmp_path / "j.jsonl"
    SCENARIOS[name](path)
    got = _lines(path)
    golden = GOLDEN / f"{name}.jsonl"
    if os.environ.get("UPDATE_GOLDEN") == "1":  # pragma: no cover (writes today's lines)
        golden.write_text("".join(json.dumps(e) + "\n" for e in got))
    want = [json.loads(x) for x in golden.read_text(encoding="utf-8").splitlines()]
    assert got == want, json.dumps(got, indent=1)
    assert [list(e) for e in got] == [list(e) for e in want]  # and the order of the keys


def test_every_result_and_line_shape_is_pinned_somewhere():
    """The golden files hold every result a change line can have, and each optional field."""
    seen: set[str] = set()
    fields: set[str] = set()
    for path in GOLDEN.glob("*.jsonl"):
        for raw in path.read_text(encoding="utf-8").splitlines():
            e = json.loads(raw)
            seen.add(f"{e['event']}:{e.get('result')}")
            fields |= set(e) | {f"change.{k}" for k in e.get("change") or {}}
    assert {
        "run_started:None",
        "run_finished:ok",
        "run_finished:failed",
        "run_finished:pending",
        "change:started",
        "change:ok",
        "change:failed",
        "change:pending",
        "change:not_attempted",
    } <= seen
    assert {
        "operation_id",
        "verification",
        "warnings",
        "change.part_of",
        "change.not_sent",
        "change.already_removed",
        "change.operation_ids",
    } <= fields
