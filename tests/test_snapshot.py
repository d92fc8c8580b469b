"""Snapshot files: what is missing or malformed is an error, never an empty tenant."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
from pathlib import Path

import pytest

from bridge.backends.snapshot import MemoryBackend, load_snapshot, state_to_snapshot
from bridge.errors import SnapshotError

EXAMPLE = Path(__file__).parents[1] / "examples" / "northwind-snapshot.json"


@pytest.mark.parametrize("section", ["policies", "group_assignments", "user_assignments"])
def test_a_missing_section_is_an_error(tmp_path: Path, section: str) -> None:
    data = json.loads(EXAMPLE.read_text())
    del data[section]
    path = tmp_path / "cut.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SnapshotError, match=f"has no {section} section"):
        load_snapshot(path)


def test_a_malformed_entry_names_the_file(tmp_path: Path) -> None:
    data = json.loads(EXAMPLE.read_text())
    del data["group_assignments"][0]["Rank"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SnapshotError) as err:
        load_snapshot(path)
    # The entry's place: the object that lacks the key.
    assert re.match(rf"{re.escape(str(path))}:1:\d+: malformed snapshot entry: ", str(err.value))
    assert "group_assignments[0] has no 'Rank'" in str(err.value)


def test_round_trip_keeps_everything() -> None:
    state = load_snapshot(EXAMPLE)
    again = json.loads(json.dumps(state_to_snapshot(state, "test")))
    assert again["policies"] == json.loads(EXAMPLE.read_text())["policies"]
    assert again["domains"] == ["northwind-health.onmicrosoft.com", "northwind-health.org"]
    assert "secret" not in json.dumps(again).lower()


def test_the_tenant_name_travels_with_the_snapshot(tmp_path: Path) -> None:
    """Offline, plan and the reports name the tenant from the snapshot (no Graph read); an
    older snapshot without the name reads as the id, not as an error."""
    state = MemoryBackend(load_snapshot(EXAMPLE), read_only=True).read()
    assert state.label == "Northwind Regional Health (northwind-health.org)"
    again = json.loads(json.dumps(state_to_snapshot(state, "test")))
    assert (again["display_name"], again["default_domain"]) == (
        "Northwind Regional Health",
        "northwind-health.org",
    )
    org = MemoryBackend(state).organization()
    assert org is not None and org.display_name == "Northwind Regional Health"
    data = json.loads(EXAMPLE.read_text())
    del data["display_name"], data["default_domain"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    old = load_snapshot(path)
    assert old.label == data["tenant_id"] and MemoryBackend(old).organization() is None


def test_taken_at_travels_with_the_state(tmp_path: Path) -> None:
    data = json.loads(EXAMPLE.read_text())
    data["taken_at"] = "2026-11-20T06:00:00"  # no zone: UTC
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    state = load_snapshot(path)
    assert state.observed_at == dt.datetime(2026, 11, 20, 6, tzinfo=dt.timezone.utc)
    assert MemoryBackend(state, read_only=True).read().observed_at == state.observed_at


def test_an_unreadable_taken_at_is_an_error_not_now(tmp_path: Path) -> None:
    data = json.loads(EXAMPLE.read_text())
    data["taken_at"] = "last Tuesday"
    path = tmp_path / "bad-time.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SnapshotError, match=f"{path}: taken_at 'last Tuesday' is not an ISO 8601"):
        load_snapshot(path)


# --------------------------------------------------------------------------- hardening (issue 17)


def _write(tmp_path: Path, data: object, name: str = "snap.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data, indent=2))
    return path


def _example() -> dict:
    return json.loads(EXAMPLE.read_text())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(policies={"a": 1}), "policies is an object, not a list"),
        (lambda d: d["policies"].insert(1, 7), "policies[1] is int 7, not an object"),
        (lambda d: d["policies"][0].update(Identity=5), "policies[0].Identity is int 5, not text"),
        (lambda d: d["group_assignments"][0].update(Rank="1"), "Rank is not a rank"),
        (lambda d: d["group_assignments"][0].update(Rank=True), "Rank is not a rank"),
        (lambda d: d["group_assignments"][0].update(Rank=1.5), "Rank is not a rank"),
        (lambda d: d["group_assignments"][0].update(Rank=10**30), "out of range"),
        (lambda d: d["group_assignments"][0].update(GroupId=None), "GroupId is null, not text"),
        (lambda d: d["user_assignments"][0].update(UserId=["x"]), "UserId is a list, not text"),
        (lambda d: d["user_assignments"][0].pop("PolicyName"), "has no 'PolicyName'"),
        (lambda d: d["users"].__setitem__(0, "u"), "users[0] is str 'u', not an object"),
        (lambda d: d["users"][0].update(userPrincipalName=1), "userPrincipalName is int 1"),
        (lambda d: d["groups"][0].update(members=[1]), "groups[0].members[0] is int 1"),
        (lambda d: d["groups"][0].update(members="abc"), "members is str 'abc', not a list"),
        (lambda d: d.update(domains=[None]), "domains[0] is null, not text"),
        (lambda d: d.update(tenant_id=42), "tenant_id is int 42, not text or null"),
    ],
)
def test_a_field_of_the_wrong_type_is_an_error_with_its_place(tmp_path, edit, message):
    data = _example()
    edit(data)
    path = _write(tmp_path, data)
    with pytest.raises(SnapshotError) as err:
        load_snapshot(path)
    text = str(err.value)
    assert re.match(rf"{re.escape(str(path))}:\d+:\d+: malformed snapshot entry: ", text), text
    assert message in text, text


def test_version_true_is_not_version_1(tmp_path):
    data = _example()
    data["version"] = True
    with pytest.raises(SnapshotError, match="snapshot version True is not supported"):
        load_snapshot(_write(tmp_path, data))


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (
            b'{"format": "teams-bridge-snapshot",\n "x": "caf\xe9"}',
            ":2:11: not a snapshot: not UTF-8",
        ),
        (b'{"version": NaN}', ":1:13: invalid JSON: NaN is not a JSON value"),
        (b'{"version": -Infinity}', ":1:13: invalid JSON: -Infinity is not a JSON value"),
        (b'{"version": 1e999}', ":1:13: invalid JSON: number '1e999'"),
        (b"[" * 5000 + b"]" * 5000, ":1:101: invalid JSON: nested more than 100 levels deep"),
        (b'{"a": ' * 5000 + b"1" + b"}" * 5000, ":1:601: invalid JSON: nested more than"),
        (b"\xff\xfe{", ":1:1: not a snapshot: not UTF-8"),
    ],
)
def test_a_file_that_is_not_a_json_snapshot_is_an_error_with_its_place(tmp_path, raw, needle):
    path = tmp_path / "snap.json"
    path.write_bytes(raw)
    with pytest.raises(SnapshotError) as err:
        load_snapshot(path)
    assert str(err.value).startswith(str(path) + needle), err.value


def test_a_deeply_nested_policy_is_refused_not_a_recursion_error(tmp_path):
    data = _example()
    deep: object = 1
    for _ in range(900):  # within json's own limit, past what anything later can walk
        deep = [deep]
    data["policies"][0]["Description"] = deep
    path = _write(tmp_path, data)
    with pytest.raises(SnapshotError, match="nested more than 32 levels deep"):
        load_snapshot(path)


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"])
def test_a_taken_at_at_the_edge_of_the_calendar_is_an_error(tmp_path, when):
    data = _example()
    data["taken_at"] = when
    with pytest.raises(SnapshotError, match="is not an ISO 8601 time"):
        load_snapshot(_write(tmp_path, data))


@pytest.mark.parametrize(
    ("when", "why"),
    [
        ("0001-01-01T00:00:00+00:00", "is before 2000"),  # history could not read it back
        ("0999-06-01T00:00:00Z", "is before 2000"),
        ("9999-12-31T00:00:00Z", "is later than now"),  # would sort as the newest run forever
    ],
)
def test_a_taken_at_history_cannot_order_is_an_error(tmp_path, when, why):
    data = _example()
    data["taken_at"] = when
    with pytest.raises(SnapshotError, match=re.escape(f"taken_at {when!r} {why}")):
        load_snapshot(_write(tmp_path, data))


def test_a_device_or_directory_is_refused_without_reading_it(tmp_path):
    if os.path.exists("/dev/zero"):
        with pytest.raises(SnapshotError, match="/dev/zero: cannot read snapshot: not a regular"):
            load_snapshot("/dev/zero")
    with pytest.raises(SnapshotError, match="cannot read snapshot"):
        load_snapshot(tmp_path)


def test_a_snapshot_over_the_size_limit_is_refused(tmp_path, monkeypatch):
    from bridge import limits

    monkeypatch.setattr(limits, "SNAPSHOT_MAX_BYTES", 100)
    path = tmp_path / "big.json"
    path.write_text(" " * 101)
    with pytest.raises(SnapshotError, match="larger than"):
        load_snapshot(path)


def test_the_example_still_reads_with_every_field():
    state = load_snapshot(EXAMPLE)
    assert len(state.policies) == len(_example()["policies"])
    assert not math.isnan(len(state.group_assignments))
