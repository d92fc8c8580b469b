import datetime as dt
import json
import os
import re
import stat

import pytest

from bridge.errors import ConfigError, ServerError
from bridge.journal import Journal, change_entry, mask_secrets

FIXED = dt.datetime(2026, 3, 1, 12, 30, 5, 123000, tzinfo=dt.timezone.utc)
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJ0aWQiOiJ4In0.c2lnbmF0dXJl"


def lines(path):
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def test_run_lines_in_order_with_every_field(tmp_path):
    path = tmp_path / "deep" / "dir" / "journal.jsonl"
    j = Journal(path, now=lambda: FIXED)
    j.run_started(
        "run-1",
        "tenant-a",
        changes=2,
        summary={"add": 1, "change": 1, "destroy": 0},
        state_checksum="abc",
        desired_sha256="def",
    )
    j.change("run-1", "tenant-a", {"kind": "create_policy", "policy": "Clinical"}, "started")
    j.change("run-1", "tenant-a", {"kind": "create_policy", "policy": "Clinical"}, "ok")
    j.change(
        "run-1",
        "tenant-a",
        {"kind": "set_user_assignment", "bulk": True},
        "started",
        user_count=12,
    )
    j.run_finished("run-1", "tenant-a", "ok", applied=2, failed=0)

    got = lines(path)
    assert [g["event"] for g in got] == [
        "run_started",
        "change",
        "change",
        "change",
        "run_finished",
    ]
    assert all(g["time"] == "2026-03-01T12:30:05.123+00:00" for g in got)
    assert all(g["run_id"] == "run-1" and g["tenant"] == "tenant-a" for g in got)
    head = got[0]
    assert head["changes"] == 2 and head["state_checksum"] == "abc"
    assert head["pid"] == os.getpid() and head["host"]
    assert got[1] == {
        "time": "2026-03-01T12:30:05.123+00:00",
        "run_id": "run-1",
        "tenant": "tenant-a",
        "event": "change",
        "change": {"kind": "create_policy", "policy": "Clinical"},
        "result": "started",
        "error": None,
        "correlation_id": None,
        "user_count": None,
    }
    assert got[2]["result"] == "ok"
    assert got[3]["user_count"] == 12
    assert got[4]["result"] == "ok" and got[4]["applied"] == 2


def test_never_truncates_and_is_private(tmp_path):
    path = tmp_path / "j.jsonl"
    Journal(path).change("r1", None, {"kind": "delete_policy", "policy": "A"}, "ok")
    Journal(path).change("r2", None, {"kind": "delete_policy", "policy": "B"}, "ok")
    assert [g["run_id"] for g in lines(path)] == ["r1", "r2"]
    assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def test_error_keeps_correlation_id_and_masks_tokens(tmp_path):
    path = tmp_path / "j.jsonl"
    exc = ServerError(
        f"500 from Teams admin API: request had Authorization: Bearer {JWT} and echo {JWT}",
        status=500,
        correlation_id="c0ffee",
    )
    Journal(path).change("r", "t", {"kind": "delete_policy", "policy": "A"}, "failed", error=exc)
    (got,) = lines(path)
    assert got["correlation_id"] == "c0ffee"
    assert got["result"] == "failed"
    assert "500 from Teams admin API" in got["error"]
    assert JWT not in path.read_text() and "eyJ" not in path.read_text()


def test_mask_secrets():
    assert mask_secrets(f"token {JWT} end") == "token [redacted-jwt] end"
    assert mask_secrets("Authorization: Bearer abc.def-ghi") == "Authorization: Bearer [redacted]"
    assert mask_secrets("nothing to hide") == "nothing to hide"


def test_write_many_is_one_append(tmp_path):
    path = tmp_path / "j.jsonl"
    j = Journal(path)
    j.write_many(
        change_entry("r", "t", {"kind": "set_user_assignment", "user_id": f"u{i}"}, "ok")
        for i in range(500)
    )
    j.write_many([])
    got = lines(path)
    assert len(got) == 500
    assert got[-1]["change"]["user_id"] == "u499"


def test_rejects_unknown_result():
    with pytest.raises(ValueError, match="journal result must be one of"):
        change_entry("r", "t", {}, "done")


def test_unwritable_journal_says_what_to_do(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"cannot write the apply journal .*BRIDGE_JOURNAL"):
        Journal(tmp_path / "file" / "j.jsonl").change("r", "t", {}, "ok")


def test_no_secret_looking_fields(tmp_path):
    path = tmp_path / "j.jsonl"
    j = Journal(path)
    j.run_started("r", "t", changes=0, summary={}, state_checksum="", desired_sha256="")
    j.change("r", "t", {"kind": "create_policy", "policy": "P", "settings": {}}, "ok")
    j.run_finished("r", "t", "ok")
    secretish = re.compile(r"(?i)secret|token|password|passphrase|assertion|bearer")
    for entry in lines(path):
        assert not [k for k in entry if secretish.search(k)]


def test_reading_back_parses_only_the_lines_of_the_window_asked_about(tmp_path, monkeypatch):
    import bridge.journal as journal_mod

    path = tmp_path / "j.jsonl"
    clock = {"now": FIXED - dt.timedelta(days=30)}
    j = Journal(path, now=lambda: clock["now"])
    group = {"kind": "set_group_assignment", "group_id": "g-1", "policy": "Old", "rank": 1}
    for i in range(2000):  # a month of history, 20 minutes apart
        j.write(change_entry(f"old-{i}", "t-a", {**group, "policy": f"P{i}"}, "ok"))
        clock["now"] += dt.timedelta(minutes=20)
    clock["now"] = FIXED - dt.timedelta(hours=2)
    j.write(change_entry("recent", "t-a", {**group, "policy": "Clinical"}, "ok"))
    clock["now"] = FIXED - dt.timedelta(hours=1)
    j.write(change_entry("other-tenant", "t-b", {**group, "policy": "Nope"}, "ok"))
    # A clock stepped back between runs: this line is older than the one before it.
    clock["now"] = FIXED - dt.timedelta(hours=1, minutes=30)
    j.write(change_entry("stepped-back", "t-a", {**group, "group_id": "g-2"}, "pending"))

    parsed = []
    real_loads = journal_mod.json.loads
    monkeypatch.setattr(journal_mod.json, "loads", lambda s: parsed.append(s) or real_loads(s))
    monkeypatch.setattr(journal_mod, "_BLOCK", 97)  # lines cross block boundaries
    since = FIXED - dt.timedelta(hours=3)
    sent = j.group_writes("T-A", since)
    assert {gid: e["run_id"] for gid, e in sent.items()} == {
        "g-1": "recent",
        "g-2": "stepped-back",
    }
    # The two lines of t-a in the window, and those of the hour of slack before it: not the
    # month before, and not the other tenant's line.
    assert len(parsed) <= 5
    first = j.writes_after("t-a", since)
    assert first is not None and first["run_id"] == "recent"
    assert j.writes_after("t-a", FIXED) is None
    monkeypatch.setattr(journal_mod, "_BLOCK", 1 << 16)
    assert j.group_writes("t-a", FIXED - dt.timedelta(days=31))["g-1"]["run_id"] == "recent"


def test_writes_after_counts_only_sends_not_held_back_or_verification_lines(tmp_path):
    """A scheduled apply re-records a propagating re-rank (not_sent) every 15 minutes for up to
    24 h, and verification re-records sends as pending: neither is a later write, so neither may
    refuse a saved plan made after the send."""
    path = tmp_path / "j.jsonl"
    clock = {"now": FIXED}
    j = Journal(path, now=lambda: clock["now"])
    group = {"kind": "set_group_assignment", "group_id": "g-1", "policy": "Clinical", "rank": 1}
    j.write(change_entry("run-1", "t", group, "started"))
    j.write(change_entry("run-1", "t", group, "ok"))
    plan_made = FIXED + dt.timedelta(seconds=30)
    clock["now"] = FIXED + dt.timedelta(minutes=1)
    j.write(change_entry("run-1", "t", group, "pending", error="not visible", verification=True))
    clock["now"] = FIXED + dt.timedelta(minutes=15)
    j.write(change_entry("run-2", "t", {**group, "not_sent": True}, "pending", error="held back"))
    assert j.writes_after("t", plan_made) is None
    # The held-back line still tells apply what was last sent for the group.
    assert j.group_writes("t", FIXED)["g-1"]["run_id"] == "run-1"
    # A real send after the plan (a pending written at send time too) still refuses it.
    clock["now"] = FIXED + dt.timedelta(minutes=30)
    j.write(change_entry("run-3", "t", group, "pending", error="409, not visible yet"))
    later = j.writes_after("t", plan_made)
    assert later is not None and later["run_id"] == "run-3"
    clock["now"] = FIXED + dt.timedelta(minutes=31)
    j.write(change_entry("run-4", "t", group, "started"))
    assert j.writes_after("t", plan_made)["run_id"] == "run-3"
