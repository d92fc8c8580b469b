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


# --------------------------------------------------------------------------- hardening (issue 17)


GROUP = {"kind": "set_group_assignment", "group_id": "g-1", "policy": "Clinical", "rank": 1}


def test_a_future_dated_send_is_bounded_by_the_lines_after_it(tmp_path):
    """A clock that was ahead once wrote a pending send dated next year. It counts as written
    no later than the first line after it (or now), so a re-rank is held back for the window
    measured by the local clock, not until next year."""
    clock = {"now": FIXED + dt.timedelta(days=365)}
    j = Journal(tmp_path / "j.jsonl", now=lambda: clock["now"])
    j.write(change_entry("run-ahead", "t", GROUP, "pending", error="409, not visible yet"))
    clock["now"] = FIXED  # the clock is put right
    window = dt.timedelta(hours=24)
    # Nothing after it yet: written no later than now, so held back now.
    sent = j.group_writes("t", FIXED - window)
    assert sent["g-1"]["run_id"] == "run-ahead"
    assert sent["g-1"]["time"] == FIXED.isoformat(timespec="milliseconds")
    assert sent["g-1"]["time_written"].startswith(str(FIXED.year + 1))
    # A run 15 minutes later holds it back (a line of its own, dated by the right clock).
    clock["now"] = FIXED + dt.timedelta(minutes=15)
    j.write(change_entry("run-2", "t", {**GROUP, "not_sent": True}, "pending", error="held"))
    assert j.group_writes("t", clock["now"] - window)["g-1"]["run_id"] == "run-ahead"
    # 24 h after that line the send is out of the window, though its own date is months ahead.
    clock["now"] = FIXED + dt.timedelta(minutes=15) + window + dt.timedelta(seconds=1)
    assert j.group_writes("t", clock["now"] - window) == {}


def test_a_future_dated_send_does_not_make_every_later_saved_plan_stale(tmp_path):
    clock = {"now": FIXED + dt.timedelta(days=365)}
    j = Journal(tmp_path / "j.jsonl", now=lambda: clock["now"])
    j.write(change_entry("run-ahead", "t", GROUP, "ok"))
    clock["now"] = FIXED
    # Made before the next line was written: the send may be after it, so the plan is stale.
    assert j.writes_after("t", FIXED - dt.timedelta(minutes=1))["run_id"] == "run-ahead"
    clock["now"] = FIXED + dt.timedelta(minutes=10)
    j.run_finished("run-x", "t", "ok")
    # A plan made after a line the right clock wrote after the send: not stale.
    assert j.writes_after("t", FIXED + dt.timedelta(minutes=20)) is None
    # Within the skew a time is taken as written.
    clock["now"] = FIXED + dt.timedelta(hours=1)
    j.write(change_entry("run-3", "t", GROUP, "ok"))
    clock["now"] = FIXED + dt.timedelta(hours=1) - dt.timedelta(minutes=4)
    assert j.writes_after("t", FIXED + dt.timedelta(minutes=58))["run_id"] == "run-3"


def test_a_future_dated_rerank_is_sent_again_after_the_window(tmp_path):
    """Defect 5 end to end through apply: before, one future-dated pending line held the re-rank
    back on every run (apply exit 0) while drift kept finding it (exit 2)."""
    from test_apply import LaggingBackend, hospital, rerank_desired, run

    from bridge.backends.snapshot import MemoryBackend
    from bridge.plan import diff

    clock = {"now": FIXED + dt.timedelta(days=200)}
    journal = Journal(tmp_path / "j.jsonl", now=lambda: clock["now"])
    lagging = LaggingBackend(MemoryBackend(hospital()))
    want = rerank_desired()
    state = lagging.read()
    first = run(diff(state, want), lagging, state, journal=journal, verify_timeout=10)
    assert first.pending  # sent, not visible: pending, dated 200 days ahead
    sends = len(lagging.inner.writes)

    clock["now"] = FIXED  # the clock is put right; reads still show the old ranks
    state = lagging.read()
    held = run(diff(state, want), lagging, state, journal=journal, run_id="run-2", verify=False)
    assert held.outcome == "pending" and len(lagging.inner.writes) == sends

    clock["now"] = FIXED + dt.timedelta(hours=25)
    state = lagging.read()
    run(diff(state, want), lagging, state, journal=journal, run_id="run-3", verify=False)
    assert len(lagging.inner.writes) > sends, "the re-rank was held back past the window"


def _write_lines(path, count=20, tenant="t", start=FIXED):
    clock = {"now": start}
    j = Journal(path, now=lambda: clock["now"])
    for i in range(count):
        j.write(change_entry(f"run-{i}", tenant, {**GROUP, "group_id": f"g-{i}"}, "ok"))
        clock["now"] += dt.timedelta(seconds=1)
    return j


def test_a_large_junk_tail_is_read_fast_and_skipped(tmp_path, caplog):
    """50 MB of NUL bytes (a crash leftover) at the end used to take 25 s to read back (each
    block was joined to the whole rest of the line); now reading is linear and the junk line is
    skipped unjoined, with a warning."""
    import time

    path = tmp_path / "j.jsonl"
    j = _write_lines(path)
    with path.open("ab") as f:
        f.write(b"\0" * (50 << 20))
    started = time.perf_counter()
    with caplog.at_level("WARNING", logger="bridge.journal"):
        sent = j.group_writes("t", FIXED - dt.timedelta(hours=1))
    took = time.perf_counter() - started
    assert len(sent) == 20
    assert took < 2.0, f"reading back took {took:.2f} s"
    assert "skipped a line of 52428800 bytes" in caplog.text


@pytest.mark.parametrize("block", [7, 64, 1 << 20])
def test_lines_at_the_length_limit_are_kept_and_one_past_is_skipped(tmp_path, monkeypatch, block):
    import bridge.journal as journal_mod

    path = tmp_path / "j.jsonl"
    j = _write_lines(path, count=3)
    longest = max(len(line) for line in path.read_bytes().splitlines())
    junk = b"x" * (longest + 1)
    with path.open("ab") as f:
        f.write(junk + b"\n")
    _write_lines(path, count=1, start=FIXED + dt.timedelta(seconds=10))
    with path.open("ab") as f:
        f.write(b"\n" + junk)  # a torn last line, as long
    monkeypatch.setattr(journal_mod, "_BLOCK", block)
    every = [line for line in path.read_bytes().splitlines() if line][::-1]
    monkeypatch.setattr(journal_mod, "MAX_LINE_BYTES", longest)
    # The three and the one after the junk; both junk lines skipped.
    assert list(j._lines_backwards()) == [line for line in every if line != junk]
    assert len(every) == 6
    monkeypatch.setattr(journal_mod, "MAX_LINE_BYTES", longest + 1)
    assert list(j._lines_backwards()) == every


def test_a_symlink_at_the_journal_path_is_refused_not_followed(tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("precious\n")
    link = tmp_path / "j.jsonl"
    try:
        link.symlink_to(target)
    except OSError:  # pragma: no cover - Windows without the privilege
        pytest.skip("cannot make symlinks here")
    with pytest.raises(ConfigError, match="symlink"):
        Journal(link).change("r", "t", {"kind": "delete_policy", "policy": "A"}, "ok")
    assert target.read_text() == "precious\n"


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX file modes")
def test_an_existing_journal_is_made_private(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text("")
    path.chmod(0o644)
    Journal(path).change("r", "t", {"kind": "delete_policy", "policy": "A"}, "ok")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_device_as_journal_is_refused_and_its_mode_left_alone():
    if not os.path.exists("/dev/null"):  # pragma: no cover - Windows
        pytest.skip("no /dev/null")
    before = stat.S_IMODE(os.stat("/dev/null").st_mode)
    with pytest.raises(ConfigError, match="cannot write the apply journal /dev/null: not a"):
        Journal("/dev/null").write({"event": "x"})
    assert stat.S_IMODE(os.stat("/dev/null").st_mode) == before


def test_a_torn_last_line_does_not_tear_the_next_runs_first_line(tmp_path):
    path = tmp_path / "j.jsonl"
    j = _write_lines(path, count=1)
    with path.open("ab") as f:
        f.write(b'{"time": "2026-03-01T12:30:0')  # killed mid-line
    j.write(change_entry("next", "t", GROUP, "ok"))
    assert [e["run_id"] for e in j.entries()] == ["run-0", "next"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_as_journal_is_refused_on_read_back_without_waiting(tmp_path):
    """Reading a FIFO back waited for a writer forever, holding the tenant lock (or, with a
    writer, crashed: not seekable)."""
    fifo = tmp_path / "journal.jsonl"
    os.mkfifo(fifo)
    since = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    with pytest.raises(ConfigError, match=r"apply journal .*: not a regular file"):
        Journal(fifo).group_writes("t", since)
    with pytest.raises(ConfigError, match="not a regular file"):
        Journal(fifo).writes_after("t", since)
