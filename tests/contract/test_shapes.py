"""Every answer shape end to end through the backend: the REST transport reads, plans, applies and
verifies against the sandbox answering in each shape of ``SHAPES`` (docs/wire.md), and must
behave exactly as it does against the default shape."""

from __future__ import annotations

import json

import pytest
from test_contract import _desired
from wire_shapes import SHAPES, WARNING

from bridge.apply import apply_plan, describe
from bridge.backends.base import Wanted
from bridge.journal import Journal
from bridge.plan import diff, state_checksum


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_plan_through_each_shape_is_the_default_plan_and_applies_and_verifies(world, shape):
    desired = _desired(world.initial)
    wanted = Wanted(groups=world.wanted.groups, users=desired.user_refs())
    default = world.open("rest")
    try:
        expected = diff(default.read(wanted), desired).data
    finally:
        default.close()

    world.sandbox.configure(**SHAPES[shape].knobs)
    backend = world.open("rest")
    try:
        current = backend.read(wanted)
        assert state_checksum(current) == state_checksum(world.initial)
        plan = diff(current, desired)
        assert plan.data == expected
        result = apply_plan(
            plan, backend, current, journal=None, run_id=shape, verify=True, verify_timeout=5
        )
        assert result.ok and result.verified, result.failure_message()
        assert not diff(backend.read(wanted), desired)
    finally:
        backend.close()


def test_service_warnings_reach_the_result_once_and_the_journal_line_of_their_change(
    world, tmp_path
):
    world.sandbox.configure(warning=WARNING)
    desired = _desired(world.initial)
    wanted = Wanted(groups=world.wanted.groups, users=desired.user_refs())
    backend = world.open("rest")
    journal_path = tmp_path / "journal.jsonl"
    try:
        current = backend.read(wanted)
        plan = diff(current, desired)
        result = apply_plan(
            plan, backend, current, journal=Journal(journal_path), run_id="w", verify=False
        )
    finally:
        backend.close()
    assert result.ok
    # Every Teams admin API write carries the header: the policy writes and the group adds
    # (direct assignments go through Graph, which sends none).
    teams_writes = [c for c in result.done if c.kind not in ("set_user_assignment",)]
    teams_writes = [c for c in teams_writes if c.kind != "remove_user_assignment"]
    assert sorted(describe(w.change) for w in result.warnings) == sorted(
        describe(c) for c in teams_writes
    )
    lines = result.summary_lines()
    assert sum(WARNING in line for line in lines) == 1  # one line, naming every change
    (said,) = [line for line in lines if WARNING in line]
    assert all(describe(c) in said for c in teams_writes)

    changes = [
        json.loads(line)
        for line in journal_path.read_text(encoding="utf-8").splitlines()
        if '"event": "change"' in line
    ]
    ok = [c for c in changes if c["result"] == "ok" and "part_of" not in c["change"]]
    warned = {c["change"]["kind"] + ":" + str(c["change"]) for c in ok if c.get("warnings")}
    assert len(warned) == len(teams_writes)
    assert all(c["warnings"] == [WARNING] for c in ok if c.get("warnings"))
    assert not any(c.get("warnings") for c in ok if c["change"]["kind"].endswith("user_assignment"))
