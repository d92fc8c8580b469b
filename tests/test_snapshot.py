"""Snapshot files: what is missing or malformed is an error, never an empty tenant."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.backends.snapshot import load_snapshot, state_to_snapshot
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
