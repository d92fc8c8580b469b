"""Snapshot files: what is missing or malformed is an error, never an empty tenant."""

from __future__ import annotations

import datetime as dt
import json
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
    with pytest.raises(SnapshotError, match=f"{path}: malformed snapshot entry"):
        load_snapshot(path)


def test_round_trip_keeps_everything() -> None:
    state = load_snapshot(EXAMPLE)
    again = json.loads(json.dumps(state_to_snapshot(state, "test")))
    assert again["policies"] == json.loads(EXAMPLE.read_text())["policies"]
    assert again["domains"] == ["northwind-health.onmicrosoft.com", "northwind-health.org"]
    assert "secret" not in json.dumps(again).lower()


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
