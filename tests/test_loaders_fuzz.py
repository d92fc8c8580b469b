"""Every loader, fuzzed with a fixed budget (issue 17, defect 4): whatever bytes, JSON values or
edits of a good file it is given, it either loads or raises its typed error (a ``BridgeError``
naming the file); never another exception, never a traceback.

Budgets (``max_examples`` per test, ``deadline=None`` so a slow CI machine does not fail them):

- snapshot: 250 random files + 250 edits of the example snapshot
- saved plan: 250 random files + 250 edits of a saved plan (digest recomputed)
- desired file: 200 random files + 200 edits of the example desired file
- .env and the environment: 200
- history database rows: 150
- journal read-back: 250
- numbers (``limits``): 300

2,300 cases in all; the module runs in about 6 s here (``pytest --durations``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge import limits, planfile
from bridge.backends.snapshot import load_snapshot
from bridge.desired import load_desired, parse_desired
from bridge.errors import BridgeError, DesiredStateError, PlanError, SnapshotError
from bridge.journal import Journal, change_entry
from bridge.plan import DeletePolicy, Plan, SetGroupAssignment, UpdatePolicy
from bridge.report.history import HistoryError, HistoryStore, render_history
from bridge.settings import ENV_NAMES, Settings
from bridge.state import GroupAssignment, TenantState

ROOT = Path(__file__).parents[1]
SNAPSHOT = ROOT / "examples" / "northwind-snapshot.json"
DESIRED = ROOT / "examples" / "northwind.yaml"


def fuzz(examples: int) -> Any:
    """A fixed budget of ``examples``, no deadline (a slow machine must not fail the test)."""
    return settings(
        max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )


# JSON values as Python's json writes them, NaN and Infinity included (it writes them bare).
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside ``value`` (keys and indexes), the root included."""
    out = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            out += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            out += _paths(child, (*prefix, i))
    return out


def _edited(doc: Any, path: tuple[Any, ...], action: str, value: Any) -> Any:
    """``doc`` (a copy) with the value at ``path`` replaced by ``value``, or removed."""
    doc = json.loads(json.dumps(doc))
    if not path:
        return value
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    if action == "remove":
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


def _file(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


def _byte_edit(good: bytes, at: int, cut: int, insert: bytes) -> bytes:
    at %= len(good) + 1
    return good[:at] + insert + good[at + cut :]


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# --------------------------------------------------------------------------- snapshot

SNAPSHOT_DATA = json.loads(SNAPSHOT.read_text())
SNAPSHOT_PATHS = _paths(SNAPSHOT_DATA)


def _load_snapshot(path: Path) -> None:
    try:
        state = load_snapshot(path)
    except SnapshotError as exc:
        assert str(exc).startswith(str(path)), exc
        return
    assert isinstance(state, TenantState)


@fuzz(250)
@given(data=st.binary(max_size=400) | json_values.map(lambda v: json.dumps(v).encode()))
def test_snapshot_random_files(tmp: Path, data: bytes) -> None:
    _load_snapshot(_file(tmp, "snap.json", data))


@fuzz(250)
@given(
    path=st.sampled_from(SNAPSHOT_PATHS),
    action=st.sampled_from(["replace", "remove"]),
    value=json_values,
    raw=st.tuples(st.integers(0, 10**6), st.integers(0, 3), st.binary(max_size=3)),
)
def test_snapshot_edits(tmp: Path, path: tuple, action: str, value: Any, raw: tuple) -> None:
    text = json.dumps(_edited(SNAPSHOT_DATA, path, action, value)).encode()
    _load_snapshot(_file(tmp, "snap.json", text))
    _load_snapshot(_file(tmp, "snap.json", _byte_edit(SNAPSHOT.read_bytes(), *raw)))


# --------------------------------------------------------------------------- saved plans

PLAN = Plan(
    [
        DeletePolicy("Old"),
        UpdatePolicy("Nursing", {"AllowGiphy": (True, False)}),
        SetGroupAssignment("g-1", "Nurses", "Clinical", 2, GroupAssignment("g-1", "Old", 3)),
    ],
    "tenant-1",
    "checksum-1",
    "desired-1",
)
PLAN_DATA = json.loads(
    planfile.dumps(PLAN, now=lambda: dt.datetime(2025, 3, 1, tzinfo=dt.timezone.utc))
)
PLAN_PATHS = [p for p in _paths(PLAN_DATA) if p != ("digest",)]


def _load_plan(text: bytes) -> None:
    try:
        saved = planfile.loads(text, "fuzz.plan")
    except PlanError as exc:
        assert str(exc).startswith("fuzz.plan"), exc
        return
    assert isinstance(saved.plan, Plan)
    # What apply --plan does next with the limits: checked, or a PlanError.
    with contextlib.suppress(PlanError):
        planfile.effective_limits(saved.plan.safety)


@fuzz(250)
@given(data=st.binary(max_size=400) | json_values.map(lambda v: json.dumps(v).encode()))
def test_saved_plan_random_files(data: bytes) -> None:
    _load_plan(data)


@fuzz(250)
@given(
    path=st.sampled_from(PLAN_PATHS),
    action=st.sampled_from(["replace", "remove"]),
    value=json_values,
)
def test_saved_plan_edits_with_the_digest_recomputed(path: tuple, action: str, value: Any) -> None:
    data = _edited(PLAN_DATA, path, action, value)
    if isinstance(data, dict):
        data["digest"] = planfile.digest(data)
    _load_plan(json.dumps(data).encode())


# --------------------------------------------------------------------------- desired files

DESIRED_TEXT = DESIRED.read_bytes()


def _parse_desired(data: bytes) -> None:
    try:
        parse_desired(data, "fuzz.yaml")
    except DesiredStateError as exc:
        assert all(str(p.location).startswith("fuzz.yaml") for p in exc.problems)


@fuzz(200)
@given(data=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_desired_random_files(data: bytes) -> None:
    _parse_desired(data)


@fuzz(200)
@given(raw=st.tuples(st.integers(0, 10**6), st.integers(0, 8), st.binary(max_size=6)))
def test_desired_byte_edits(raw: tuple) -> None:
    _parse_desired(_byte_edit(DESIRED_TEXT, *raw))


def test_desired_file_that_is_a_device_or_too_large(tmp: Path, monkeypatch) -> None:
    if os.path.exists("/dev/zero"):
        with pytest.raises(DesiredStateError, match="not a regular file"):
            load_desired("/dev/zero")
    monkeypatch.setattr(limits, "DESIRED_MAX_BYTES", 100)
    with pytest.raises(DesiredStateError, match="larger than"):
        load_desired(_file(tmp, "big.yaml", b"#" * 101))


# --------------------------------------------------------------------------- .env and environment

env_text = st.text(max_size=30) | st.sampled_from(
    ["nan", "inf", "-inf", "1e999", "0", "-1", "https://[::1", "https://u:p@h.test", "3"]
)


@fuzz(200)
@given(
    env=st.dictionaries(st.sampled_from(sorted(ENV_NAMES.values())), env_text, max_size=4),
    dotenv=st.binary(max_size=120),
)
def test_settings_from_any_environment_and_dotenv(tmp: Path, env: dict, dotenv: bytes) -> None:
    folder = tmp / "env"
    folder.mkdir(exist_ok=True)
    (folder / ".env").write_bytes(dotenv)
    with pytest.MonkeyPatch.context() as mp:
        for name in ENV_NAMES.values():
            mp.delenv(name, raising=False)
        for name, value in env.items():
            if "\0" not in value:
                mp.setenv(name, value)
        mp.chdir(folder)
        try:
            s = Settings.load()
        except BridgeError:
            return
    for field, rng in {
        "timeout_read": limits.TIMEOUT_SECONDS,
        "concurrency": limits.CONCURRENCY,
    }.items():
        assert rng.problem(getattr(s, field)) is None
    assert "@" not in s.graph_url + s.teams_url + s.authority_host


# --------------------------------------------------------------------------- history rows

_COLUMNS = {
    "runs": [
        "generated_at",
        "observed_at",
        "tool_version",
        "desired_path",
        "desired_sha256",
        "drift_count",
        "findings_error",
        "in_sync",
        "exit_code",
        "tenant_id",
    ],
    "drift_items": ["first_seen", "expected", "actual", "key", "object"],
    "resolutions": ["first_seen", "resolved_at"],
}
sql_values = (
    st.none()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.binary(max_size=8)
    | st.sampled_from(["2024-05-01T08:00:00.000000Z", "9999-12-31T23:59:59.999999Z", "{}"])
)


@pytest.fixture(scope="module")
def history_template(tmp: Path) -> Path:
    from test_report_model import scenario

    path = tmp / "template.sqlite"
    base = dt.datetime(2024, 5, 1, 8, tzinfo=dt.timezone.utc)
    with HistoryStore(path) as store:
        for day in range(3):
            import dataclasses

            report = dataclasses.replace(
                scenario(), generated_at=base + dt.timedelta(days=day), first_seen={}, resolved=[]
            )
            store.record(report)
    return path


@fuzz(150)
@given(
    table=st.sampled_from(sorted(_COLUMNS)),
    pick=st.integers(0, 100),
    value=sql_values,
)
def test_history_rows_with_any_value(tmp: Path, history_template: Path, table, pick, value) -> None:
    path = tmp / "h.sqlite"
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    shutil.copyfile(history_template, path)
    column = _COLUMNS[table][pick % len(_COLUMNS[table])]
    db = sqlite3.connect(path)
    try:
        db.execute(f"UPDATE {table} SET {column} = ?", (value,))
        db.commit()
    except sqlite3.IntegrityError:  # NOT NULL columns
        return
    finally:
        db.close()
    try:
        with HistoryStore(path, read_only=True) as store:
            _, data = render_history(store, now=dt.datetime(2024, 6, 1, tzinfo=dt.timezone.utc))
        json.dumps(data, default=str)
    except HistoryError as exc:
        assert str(path) in str(exc)


# --------------------------------------------------------------------------- journal read-back

journal_lines = st.lists(
    st.binary(max_size=60)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.builds(
        lambda t, r, g: json.dumps(
            {
                "time": t,
                **change_entry("r", "t", {"kind": "set_group_assignment", "group_id": g}, r),
            }
        ).encode(),
        st.sampled_from(
            ["2026-03-01T12:00:00+00:00", "9999-12-31T23:59:59+00:00", "x", "0001-01-01T00:00:00"]
        ),
        st.sampled_from(["ok", "pending", "started"]),
        st.sampled_from(["g-1", "g-2"]),
    ),
    max_size=12,
)


@fuzz(250)
@given(lines=journal_lines, newline=st.booleans())
def test_journal_read_back_never_raises(tmp: Path, lines: list, newline: bool) -> None:
    path = tmp / "j.jsonl"
    path.write_bytes(b"\n".join(lines) + (b"\n" if newline else b""))
    now = dt.datetime(2026, 3, 1, 13, tzinfo=dt.timezone.utc)
    j = Journal(path, now=lambda: now)
    since = now - dt.timedelta(hours=24)
    j.group_writes("t", since)
    j.writes_after("t", since)
    assert all(isinstance(e, dict) for e in j.entries())
    # The lines read back are the file's non-empty lines, last first.
    want = [line for line in path.read_bytes().split(b"\n") if line.strip()][::-1]
    assert list(j._lines_backwards()) == want


# --------------------------------------------------------------------------- numbers


@fuzz(300)
@given(
    text=st.text(max_size=12)
    | st.floats(allow_nan=True, allow_infinity=True).map(repr)
    | st.integers().map(str),
    rng=st.sampled_from(
        [limits.SHARE, limits.TIMEOUT_SECONDS, limits.LOCK_SECONDS, limits.COUNT, limits.RANK]
    ),
)
def test_numbers_are_finite_and_in_range_or_refused(text: str, rng: limits.Range) -> None:
    try:
        value = limits.parse(text, rng, "--option")
    except limits.NumberError as exc:
        assert str(exc).startswith("--option: ") and rng.describe() in str(exc)
        return
    assert math.isfinite(value) and rng.low <= value <= rng.high
    assert not rng.integer or isinstance(value, int)
