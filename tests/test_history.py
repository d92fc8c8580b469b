"""Drift history: first-seen times across runs, resolutions, concurrent writers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from test_report_model import in_sync_report, scenario

from bridge.report.history import HistoryError, HistoryStore, render_history
from bridge.report.model import DriftReport
from bridge.report.render import render_html, render_markdown, render_text

DAY1 = dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.timezone.utc)
DAY2 = DAY1 + dt.timedelta(days=1)
DAY3 = DAY1 + dt.timedelta(days=2)


def at(report: DriftReport, when: dt.datetime) -> DriftReport:
    return dataclasses.replace(report, generated_at=when, first_seen={}, resolved=[])


def test_three_runs_drift_appears_persists_and_resolves(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "history.sqlite")
    key = "policy:clinical:ReadReceiptsEnabledType"

    first = store.annotate(at(scenario(), DAY1))
    assert first.first_seen[key] == DAY1 and first.resolved == []
    run1 = store.record(first)

    second = store.annotate(at(scenario(), DAY2))
    assert second.first_seen[key] == DAY1  # still the same drift: first seen on day 1
    assert second.first_seen["user:u-locum"] == DAY1
    run2 = store.record(second)
    assert store.first_seen(key) == DAY1
    # The renderers show it.
    assert "first seen 2024-05-01 08:00Z" in render_text(second)
    assert "2024-05-01 08:00 UTC" in render_html(second)

    third = at(in_sync_report(), DAY3)
    run3 = store.record(third)
    assert third.first_seen == {}
    resolved = {r.key: r for r in third.resolved}
    assert resolved[key].first_seen == DAY1 and resolved[key].resolved_at == DAY3
    assert {"policy:pharmacy", "group:g-clin", "user:u-new"} <= set(resolved)
    assert "Resolved since the previous run" in render_text(third)
    # Names and from/to values, not internal keys (issue 15).
    assert resolved["group:g-clin"].describe() == (
        "group Clinicians: Clinical (rank 2) -> Clinical (rank 1)"
    )
    assert resolved[key].describe() == (
        'policy Clinical ReadReceiptsEnabledType: "UserPreference" -> "Everyone"'
    )
    assert resolved["user:u-new"].describe() == 'user new.nurse@contoso.org: none -> "Clinical"'
    for text in (render_text(third), render_html(third), render_markdown(third)):
        assert "Clinicians" in text and "group:g-clin" not in text
    # The UPN a code span (copied whole); "->" escaped as HTML, which Markdown shows as "->".
    assert '- user `new.nurse@contoso.org`: none -&gt; "Clinical"' in render_markdown(third)
    assert {r.describe() for r in store.resolved()} == {r.describe() for r in third.resolved}
    shown, data = render_history(store, now=DAY3)
    assert "group Clinicians: Clinical (rank 2) -> Clinical (rank 1)" in shown
    assert {"object": "group Clinicians", "actual": {"policy": "Clinical", "rank": 2}}.items() <= (
        next(r for r in data["resolved"] if r["key"] == "group:g-clin").items()
    )

    runs = store.runs(limit=10)
    assert [r.id for r in runs] == [run3, run2, run1]
    assert [r.exit_code for r in runs] == [0, 2, 2]
    assert runs[1].drift_count == 10 and runs[1].desired_sha256 == "ab" * 32
    assert runs[1].findings == {"error": 0, "warning": 2, "info": 1}
    assert store.open_drift() == []
    assert {r.key for r in store.resolved()} == set(resolved)
    store.close()


def test_drift_that_comes_back_gets_a_new_first_seen(tmp_path: Path) -> None:
    with HistoryStore(tmp_path / "h.sqlite") as store:
        store.record(at(scenario(), DAY1))
        store.record(at(in_sync_report(), DAY2))
        again = at(scenario(), DAY3)
        store.record(again)
        assert again.first_seen["policy:global:ReadReceiptsEnabledType"] == DAY3


def test_open_drift_ages_and_values(tmp_path: Path) -> None:
    with HistoryStore(tmp_path / "h.sqlite") as store:
        store.record(at(scenario(), DAY1))
        store.record(at(scenario(), DAY2))
        items = {o.key: o for o in store.open_drift(now=DAY3)}
        rr = items["policy:global:ReadReceiptsEnabledType"]
        assert (rr.expected, rr.actual) == ("Everyone", "UserPreference")
        assert rr.age == dt.timedelta(days=2) and rr.first_seen == DAY1
        assert rr.tenant_id == scenario().tenant_id
        assert items["group:g-clin"].expected == {"policy": "Clinical", "rank": 1}


def test_annotate_ignores_later_runs_and_other_tenants(tmp_path: Path) -> None:
    with HistoryStore(tmp_path / "h.sqlite") as store:
        store.record(at(scenario(), DAY2))
        other = dataclasses.replace(at(scenario(), DAY1), tenant_id="another-tenant")
        store.record(other)
        early = store.annotate(at(scenario(), DAY1))
        # Day 2's run is later, the other tenant's is someone else's: both ignored.
        assert set(early.first_seen.values()) == {DAY1}
        assert [r.tenant_id for r in store.runs(tenant_id="another-tenant")] == ["another-tenant"]


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    HistoryStore(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(HistoryError, match="schema version 99, newer"):
        HistoryStore(path)


def test_unwritable_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(HistoryError, match="cannot open history database"):
        HistoryStore(blocker / "h.sqlite")


_WRITER = """
import dataclasses, datetime as dt, sys
sys.path.insert(0, {tests!r})
from test_report_model import scenario
from bridge.report.history import HistoryStore
store = HistoryStore({path!r})
base = dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc)
for i in range({n}):
    when = base + dt.timedelta(minutes=2 * i + {offset})
    store.record(dataclasses.replace(scenario(), generated_at=when))
store.close()
"""


def test_two_processes_writing_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "h.sqlite")
    tests = str(Path(__file__).parent)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER.format(tests=tests, path=path, n=40, offset=offset)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for offset in (0, 1)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    with HistoryStore(path) as store:
        runs = store.runs(limit=100)
        assert len(runs) == 80
        assert len({r.id for r in runs}) == 80
        # Every run kept all of its items, and drift first seen in the earliest run stays so.
        first = min(r.generated_at for r in runs)
        assert store.first_seen("policy:global:ReadReceiptsEnabledType") == first
        items = len(scenario().drift_items())
        count = store._db.execute("SELECT COUNT(*) FROM drift_items").fetchone()[0]
        assert count == 80 * items


def test_threads_writing_at_once(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    HistoryStore(path).close()
    errors: list[BaseException] = []

    def write(offset: int) -> None:
        try:
            with HistoryStore(path) as store:
                for i in range(10):
                    when = DAY1 + dt.timedelta(minutes=2 * i + offset)
                    store.record(at(scenario(), when))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(o,)) for o in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with HistoryStore(path) as store:
        assert len(store.runs(limit=100)) == 20


def test_render_history_text_and_data(tmp_path: Path) -> None:
    with HistoryStore(tmp_path / "h.sqlite") as store:
        store.record(at(scenario(), DAY1))
        store.record(at(scenario(), DAY2))
        text, data = render_history(store, limit=5, now=DAY3 + dt.timedelta(hours=3))
    assert [r["generated_at"] for r in data["runs"]] == [
        "2024-05-02T08:00:00Z",
        "2024-05-01T08:00:00Z",
    ]
    assert data["runs"][0]["drift_count"] == 10 and data["runs"][0]["exit_code"] == 2
    rr = next(o for o in data["open_drift"] if o["key"] == "policy:global:ReadReceiptsEnabledType")
    assert rr["age_seconds"] == 2 * 86400 + 3 * 3600 and rr["first_seen"] == "2024-05-01T08:00:00Z"
    assert text.endswith("\n") and "10 drifted" in text
    # Names and values, not internal keys; times with their zone.
    assert (
        'policy Global ReadReceiptsEnabledType: "UserPreference" -> "Everyone"  first seen '
        "2024-05-01 08:00 UTC, open 2d 3h"
    ) in text
    assert "policy:global:" not in text
    json.dumps(data)


def test_out_of_order_recording_carries_first_seen_forward(tmp_path: Path) -> None:
    key = "policy:global:ReadReceiptsEnabledType"
    with HistoryStore(tmp_path / "h.sqlite") as store:
        store.record(at(scenario(), DAY2))
        assert store.first_seen(key) == DAY2
        store.record(at(scenario(), DAY1))  # a slower writer finishing last
        assert store.first_seen(key) == DAY1
        assert {o.first_seen for o in store.open_drift(now=DAY3)} == {DAY1}


def test_tenant_wide_finding_stays_open_while_its_policies_change(tmp_path: Path) -> None:
    from bridge.rules import Finding

    def with_finding(when: dt.datetime, *policies: str) -> DriftReport:
        r = at(in_sync_report(), when)
        consistency = Finding("read-receipts-consistency", "warning", "t", "e", policies)
        clinical = Finding("clinical-priority", "error", "t", "e", (policies[0],), per_policy=True)
        return dataclasses.replace(r, findings=[consistency, clinical])

    with HistoryStore(tmp_path / "h.sqlite") as store:
        store.record(with_finding(DAY1, "Kitchen"))
        second = with_finding(DAY2, "Kitchen", "Facilities")
        store.record(second)
        # Another policy now disagrees: the same tenant-wide problem, still open since day 1.
        assert second.first_seen["rule:read-receipts-consistency"] == DAY1
        assert "rule:read-receipts-consistency" not in {r.key for r in second.resolved}
        third = with_finding(DAY3, "Facilities")
        store.record(third)
        assert third.first_seen["rule:read-receipts-consistency"] == DAY1
        # Per-policy findings keep their policy: Kitchen's is resolved, Facilities' is new.
        assert {r.key for r in third.resolved} == {"rule:clinical-priority:kitchen"}
        assert third.first_seen["rule:clinical-priority:facilities"] == DAY3


def test_previous_run_is_of_the_same_desired_file(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    key = "policy:global:ReadReceiptsEnabledType"
    with HistoryStore(tmp_path / "h.sqlite") as store:
        store.record(at(scenario(), DAY1))
        # Another file for the same tenant, in sync: its own history, nothing of the first
        # file's drift is resolved by it.
        pilot = dataclasses.replace(at(in_sync_report(), DAY2), desired_path="pilot.yaml")
        store.record(pilot)
        assert pilot.resolved == []
        # The same relative path from another directory (a CI agent's fresh checkout each run):
        # the same history, and "./" or a doubled "/" does not make it another file.
        (tmp_path / "_work" / "7" / "s").mkdir(parents=True)
        monkeypatch.chdir(tmp_path / "_work" / "7" / "s")
        third = dataclasses.replace(at(scenario(), DAY3), desired_path=".//desired.yaml")
        store.record(third)
        assert third.first_seen[key] == DAY1 and third.resolved == []
        # Open drift: the latest run of each file (the pilot's has none).
        assert {o.first_seen for o in store.open_drift(now=DAY3) if o.key == key} == {DAY1}


def test_history_follows_the_path_as_given_not_the_resolved_file(tmp_path: Path) -> None:
    from bridge.report.history import desired_key

    assert desired_key("./a//b.yaml") == desired_key("a/b.yaml")
    assert desired_key("../desired.yaml") != desired_key("desired.yaml")
    assert desired_key("desired.yaml") == "desired.yaml"  # no working directory in it
    assert desired_key("") == ""


def test_fail_on_does_not_change_what_history_stores(tmp_path: Path) -> None:
    warning_key = "rule:read-receipts-consistency"
    with HistoryStore(tmp_path / "h.sqlite") as store:
        first = at(scenario(), DAY1)
        store.record(first)
        assert warning_key in first.first_seen
        lax = dataclasses.replace(at(scenario(), DAY2), fail_on=frozenset({"error"}))
        store.record(lax)
        # Not counted by this run, but still there: open since day 1, not resolved.
        assert lax.first_seen[warning_key] == DAY1
        assert warning_key not in {r.key for r in lax.resolved}
        assert "rule:read-receipts-group-size" not in lax.first_seen  # info is never drift


# The history database as teams-bridge 0.1 (history version 1) wrote it: runs known by tenant
# only, tenant-wide findings keyed with the policies they listed.
_V1_SCHEMA = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, tenant_id TEXT NOT NULL, generated_at TEXT NOT NULL,
    tool_version TEXT NOT NULL, desired_path TEXT NOT NULL, desired_sha256 TEXT NOT NULL,
    drift_count INTEGER NOT NULL, findings_error INTEGER NOT NULL,
    findings_warning INTEGER NOT NULL, findings_info INTEGER NOT NULL, in_sync INTEGER NOT NULL,
    exit_code INTEGER NOT NULL
);
CREATE INDEX runs_by_tenant ON runs (tenant_id, generated_at, id);
CREATE TABLE drift_items (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE, key TEXT NOT NULL,
    kind TEXT NOT NULL, object TEXT NOT NULL, expected TEXT, actual TEXT,
    first_seen TEXT NOT NULL, PRIMARY KEY (run_id, key)
);
CREATE TABLE resolutions (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE, key TEXT NOT NULL,
    first_seen TEXT NOT NULL, resolved_at TEXT NOT NULL, PRIMARY KEY (run_id, key)
);
PRAGMA user_version = 1;
"""


def _v1_database(path: Path, tenant: str | None) -> None:
    """Two version-1 runs of "desired.yaml" (relative, as the job named it): read receipts
    drift in Global since day 1, and the tenant-wide consistency finding, whose list of
    policies changed on day 2 (so version 1 resolved "kitchen" and opened "facilities,kitchen")."""
    d1, d2 = "2024-05-01T08:00:00.000000Z", "2024-05-02T08:00:00.000000Z"
    rr = "policy:global:ReadReceiptsEnabledType"
    db = sqlite3.connect(path)
    db.executescript(_V1_SCHEMA)
    for run_id, when in ((1, d1), (2, d2)):
        db.execute(
            "INSERT INTO runs VALUES (?, ?, ?, '0.1.0', 'desired.yaml', ?, 2, 0, 1, 0, 0, 2)",
            (run_id, tenant or "", when, "ab" * 32),
        )
    items = [
        (1, rr, "setting", d1),
        (1, "rule:read-receipts-consistency:kitchen", "rule", d1),
        (2, rr, "setting", d1),
        (2, "rule:read-receipts-consistency:facilities,kitchen", "rule", d2),
    ]
    db.executemany(
        "INSERT INTO drift_items VALUES (?, ?, ?, 'o', NULL, NULL, ?)",
        [(r, k, kind, seen) for r, k, kind, seen in items],
    )
    db.execute(
        "INSERT INTO resolutions VALUES (2, 'rule:read-receipts-consistency:kitchen', ?, ?)",
        (d1, d2),
    )
    db.commit()
    db.close()


def test_version_1_database_is_upgraded(tmp_path: Path, monkeypatch: Any) -> None:
    tenant = scenario().tenant_id
    path = tmp_path / "h.sqlite"
    _v1_database(path, tenant)
    # Someone looks at history from their home directory first: the upgrade happens there,
    # and must not tie the runs to a file under that directory.
    (tmp_path / "home").mkdir()
    monkeypatch.chdir(tmp_path / "home")
    with HistoryStore(path) as store:
        assert store.resolved() == []  # a change of policies listed is not a fix
        opened = {o.key: o.first_seen for o in store.open_drift(now=DAY3)}
        assert opened == {
            "policy:global:ReadReceiptsEnabledType": DAY1,
            "rule:read-receipts-consistency": DAY1,
        }
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 3
    # The cron job, from its own directory with the same relative path, carries on.
    (tmp_path / "job").mkdir()
    monkeypatch.chdir(tmp_path / "job")
    with HistoryStore(path) as store:
        third = at(scenario(), DAY3)
        store.record(third)
    assert third.first_seen["policy:global:ReadReceiptsEnabledType"] == DAY1
    assert third.first_seen["rule:read-receipts-consistency"] == DAY1
    assert "rule:read-receipts-consistency" not in {r.key for r in third.resolved}


def test_version_2_database_is_rekeyed_by_the_path_as_given(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    with HistoryStore(path) as store:
        store.record(at(scenario(), DAY1))
    db = sqlite3.connect(path)
    # Version 2 stored the resolved path of wherever the process ran.
    db.executescript(
        "UPDATE runs SET desired_key = '/home/someone/desired.yaml'; PRAGMA user_version = 2;"
    )
    db.close()
    with HistoryStore(path) as store:
        second = at(scenario(), DAY2)
        store.record(second)
    assert second.first_seen["policy:global:ReadReceiptsEnabledType"] == DAY1


# Version 2 as teams-bridge wrote it from e8a4514 until 91ef5b8 added observed_at without
# bumping the version: runs keyed by the resolved desired file, ordered by generated_at.
_V2_NO_OBSERVED_AT_SCHEMA = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, tenant_id TEXT NOT NULL, generated_at TEXT NOT NULL,
    tool_version TEXT NOT NULL, desired_path TEXT NOT NULL, desired_sha256 TEXT NOT NULL,
    drift_count INTEGER NOT NULL, findings_error INTEGER NOT NULL,
    findings_warning INTEGER NOT NULL, findings_info INTEGER NOT NULL, in_sync INTEGER NOT NULL,
    exit_code INTEGER NOT NULL, desired_key TEXT NOT NULL DEFAULT ''
);
CREATE INDEX runs_by_tenant ON runs (tenant_id, generated_at, id);
CREATE INDEX runs_by_file ON runs (tenant_id, desired_key, generated_at, id);
CREATE TABLE drift_items (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE, key TEXT NOT NULL,
    kind TEXT NOT NULL, object TEXT NOT NULL, expected TEXT, actual TEXT,
    first_seen TEXT NOT NULL, PRIMARY KEY (run_id, key)
);
CREATE TABLE resolutions (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE, key TEXT NOT NULL,
    first_seen TEXT NOT NULL, resolved_at TEXT NOT NULL, PRIMARY KEY (run_id, key)
);
PRAGMA user_version = 2;
"""


def test_version_2_database_without_observed_at_is_upgraded(tmp_path: Path) -> None:
    tenant = scenario().tenant_id
    path = tmp_path / "h.sqlite"
    d1, d2 = "2024-05-01T08:00:00.000000Z", "2024-05-02T08:00:00.000000Z"
    rr = "policy:global:ReadReceiptsEnabledType"
    db = sqlite3.connect(path)
    db.executescript(_V2_NO_OBSERVED_AT_SCHEMA)
    for run_id, when in ((1, d1), (2, d2)):
        db.execute(
            "INSERT INTO runs VALUES "
            "(?, ?, ?, '0.2.0', 'desired.yaml', ?, 2, 0, 1, 0, 0, 2, '/home/someone/desired.yaml')",
            (run_id, tenant, when, "ab" * 32),
        )
    db.executemany(
        "INSERT INTO drift_items VALUES (?, ?, ?, 'o', NULL, NULL, ?)",
        [
            (1, rr, "setting", d1),
            (1, "rule:read-receipts-consistency", "rule", d1),
            (2, rr, "setting", d1),
            (2, "rule:read-receipts-consistency", "rule", d1),
        ],
    )
    db.commit()
    db.close()
    with HistoryStore(path) as store:
        runs = store.runs(10)
        assert sorted((r.id, r.observed_at) for r in runs) == [(1, DAY1), (2, DAY2)]
        assert {o.key: o.first_seen for o in store.open_drift(now=DAY3)} == {
            rr: DAY1,
            "rule:read-receipts-consistency": DAY1,
        }
        assert store.resolved() == []
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 3
    assert db.execute("SELECT observed_at FROM runs ORDER BY id").fetchall() == [(d1,), (d2,)]
    (index,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'runs_by_file'").fetchone()
    assert "observed_at" in index
    db.close()
    with HistoryStore(path) as store:
        third = at(scenario(), DAY3)
        store.record(third)
    assert third.first_seen[rr] == DAY1
    assert third.first_seen["rule:read-receipts-consistency"] == DAY1
    assert third.resolved == []


def test_render_history_text_has_no_control_characters(tmp_path: Path) -> None:
    with HistoryStore(tmp_path / "h.sqlite") as store:
        store.record(dataclasses.replace(at(scenario(), DAY1), desired_path="x\x1b[2J.yaml"))
        text, data = render_history(store, now=DAY2)
    assert "\x1b" not in text and "x\\x1b[2J.yaml" in text
    assert data["runs"][0]["desired_path"] == "x\x1b[2J.yaml"  # JSON keeps the real value


def test_out_of_order_fix_keeps_history_consistent(tmp_path: Path) -> None:
    key = "policy:global:ReadReceiptsEnabledType"
    t0 = DAY1
    t5, t10 = t0 + dt.timedelta(minutes=5), t0 + dt.timedelta(minutes=10)
    with HistoryStore(tmp_path / "h.sqlite") as store:
        store.record(at(scenario(), t0))
        store.record(at(scenario(), t10))
        store.record(at(in_sync_report(), t5))  # the 08:05 run (fixed) finishes last
        # Resolved at 08:05, so the drift open at 08:10 started at 08:10, not 08:00.
        assert {(r.key, r.resolved_at) for r in store.resolved() if r.key == key} == {(key, t5)}
        assert store.first_seen(key) == t10
        assert {o.first_seen for o in store.open_drift(now=t10)} == {t10}
        # And a later recording of a drifting run in between mends the streak again.
        store.record(at(scenario(), t0 + dt.timedelta(minutes=7)))
        assert store.first_seen(key) == t0 + dt.timedelta(minutes=7)
        assert [r.resolved_at for r in store.resolved() if r.key == key] == [t5]


def test_runs_are_ordered_by_when_the_tenant_was_observed(tmp_path: Path) -> None:
    key = "policy:global:ReadReceiptsEnabledType"
    with HistoryStore(tmp_path / "h.sqlite") as store:
        store.record(at(in_sync_report(), DAY2))  # a live run on day 2: in sync
        # Day 1's snapshot, reviewed on day 3: it is the older state, not the newest run.
        old = dataclasses.replace(at(scenario(), DAY3), observed_at=DAY1)
        store.record(old)
        assert old.first_seen[key] == DAY1
        assert [r.observed_at for r in store.runs()] == [DAY2, DAY1]
        assert store.open_drift(now=DAY3) == []  # the latest state (day 2) is in sync
        assert {r.key: r.resolved_at for r in store.resolved()}[key] == DAY2


def test_drifted_policy_has_a_first_seen_of_its_own(tmp_path: Path) -> None:
    with HistoryStore(tmp_path / "h.sqlite") as store:
        store.record(at(scenario(), DAY1))
        second = at(scenario(), DAY2)
        store.record(second)
    global_policy = next(p for p in second.to_dict()["policies"] if p["name"] == "Global")
    assert global_policy["status"] == "drifted"
    assert global_policy["first_seen"] == "2024-05-01T08:00:00Z"


# --------------------------------------------------------------------------- hardening (issue 17)


def _recorded(tmp_path: Path) -> Path:
    path = tmp_path / "h.sqlite"
    with HistoryStore(path) as store:
        store.record(at(scenario(), DAY1))
        store.record(at(scenario(), DAY2))
    return path


def _edit(path: Path, sql: str) -> None:
    db = sqlite3.connect(path)
    db.execute(sql)
    db.commit()
    db.close()


@pytest.mark.parametrize(
    ("sql", "names"),
    [
        (
            "UPDATE runs SET generated_at = 'yesterday' WHERE id = 2",
            "table runs, row 2, column generated_at",
        ),
        (
            "UPDATE runs SET observed_at = '2024-13-45T00:00:00.000000Z' WHERE id = 1",
            "column observed_at",
        ),
        ("UPDATE runs SET observed_at = '' WHERE id = 1", "column observed_at"),
        (
            "UPDATE runs SET drift_count = 'ten' WHERE id = 2",
            "table runs, row 2, column drift_count",
        ),
        ("UPDATE runs SET desired_sha256 = x'00' WHERE id = 2", "column desired_sha256"),
        ("UPDATE drift_items SET first_seen = 'soon' WHERE run_id = 2", "table drift_items"),
        ("UPDATE drift_items SET expected = '{not json' WHERE run_id = 2", "column expected"),
        ("UPDATE drift_items SET first_seen = x'00ff' WHERE run_id = 2", "column first_seen"),
    ],
)
def test_a_row_with_a_bad_value_is_a_history_error_naming_it(tmp_path, sql, names):
    path = _recorded(tmp_path)
    _edit(path, sql)
    with pytest.raises(HistoryError) as err, HistoryStore(path, read_only=True) as store:
        render_history(store, now=DAY3)
    assert names in str(err.value) and str(path) in str(err.value)
    assert "edited or damaged" in str(err.value)


def test_a_bad_first_seen_stops_the_next_drift_run_with_an_error(tmp_path):
    path = _recorded(tmp_path)
    _edit(path, "UPDATE drift_items SET first_seen = 'soon' WHERE run_id = 2")
    with HistoryStore(path) as store, pytest.raises(HistoryError, match="column first_seen"):
        store.record(at(scenario(), DAY3))
    with HistoryStore(path) as store, pytest.raises(HistoryError, match="column first_seen"):
        store.annotate(at(scenario(), DAY3))


def test_the_history_command_reports_a_bad_timestamp_without_a_traceback(tmp_path, capsys):
    from bridge.cli import main

    path = _recorded(tmp_path)
    _edit(path, "UPDATE runs SET generated_at = 'yesterday' WHERE id = 2")
    with pytest.raises(SystemExit) as info:
        main(["history", "--history", str(path)])
    _, err = capsys.readouterr()
    assert info.value.code == 1
    assert err.startswith(f"error: history database {path} holds a value"), err
    assert "Traceback" not in err


def test_read_only_opening_reads_and_never_writes(tmp_path):
    path = _recorded(tmp_path)
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    with HistoryStore(path, read_only=True) as store:
        assert len(store.runs()) == 2
        with pytest.raises(HistoryError):
            store.record(at(scenario(), DAY3))
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    with pytest.raises(HistoryError, match="cannot read history database"):
        HistoryStore(tmp_path / "missing.sqlite", read_only=True)
    assert not (tmp_path / "missing.sqlite").exists()


def test_read_only_opening_upgrades_nothing_and_says_so(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE runs (id INTEGER)")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    from bridge.report.history import HistoryOutdatedError

    with pytest.raises(HistoryOutdatedError, match="run drift --history"):
        HistoryStore(path, read_only=True)


def _as_nobody() -> list[str] | None:
    """A command prefix that runs as an unprivileged user (root reads and writes anything)."""
    import os
    import shutil

    if not hasattr(os, "geteuid"):
        return None
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"] if setpriv else None


def test_history_reads_a_database_its_user_may_not_write():
    """Defect 9: a compliance reader (or a read-only mount) could not list the history: opening
    it tried to switch journal modes and upgrade inside a write transaction."""
    import shutil
    import tempfile

    prefix = _as_nobody()
    if prefix is None:
        pytest.skip("cannot drop privileges here")
    base = Path(tempfile.mkdtemp())  # pytest's own temporary directories are 0700
    try:
        base.chmod(0o755)
        folder = base / "ro"
        folder.mkdir()
        path = _recorded(folder)
        path.chmod(0o444)
        folder.chmod(0o555)

        def history(cwd: Path) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*prefix, sys.executable, "-m", "bridge", "history", "--history", str(path)],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=cwd,
            )

        proc = history(folder)
        assert proc.returncode == 0, proc.stderr
        assert "Runs (latest 20):" in proc.stdout and "#2" in proc.stdout
        # A database the user may not even read: an error, not a traceback.
        folder.chmod(0o700)
        proc = history(base)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "Permission denied" in proc.stderr
    finally:
        (base / "ro").chmod(0o755)
        shutil.rmtree(base)


def test_the_history_command_upgrades_an_older_database_it_may_write(tmp_path):
    from bridge.commands import history_view

    path = tmp_path / "h.sqlite"
    _v1_database(path, scenario().tenant_id)
    text, data = history_view(str(path), 5)
    assert len(data["runs"]) == 2 and "Runs (latest 5):" in text
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 3


def test_times_are_written_fixed_width_whatever_the_year():
    """strftime's %Y does not pad a year before 1000 on Linux: such a row could not be read
    back, and every later drift --history failed."""
    import datetime as dt

    from bridge.report.history import _parse, _ts

    for year in (1, 999, 2026, 9999):
        t = dt.datetime(year, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
        assert len(_ts(t)) == len("2026-06-01T12:00:00.000000Z")
        assert _parse(_ts(t)) == t
