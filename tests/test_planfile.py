"""Saved plan files that are damaged or hostile: a PlanError with the file and the place, never a
traceback (issue 17, defect 4). The digest is recomputed in each case, as anyone who can write
the file can do, so the loader's own checks are what is tested."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path

import pytest

from bridge import planfile
from bridge.errors import PlanError
from bridge.plan import DeletePolicy, Plan, SetGroupAssignment
from bridge.state import GroupAssignment

MADE = dt.datetime(2025, 3, 1, 6, 0, tzinfo=dt.timezone.utc)


def _data() -> dict:
    plan = Plan(
        [
            DeletePolicy("P1"),
            SetGroupAssignment("g-1", "Nurses", "Clinical", 2, GroupAssignment("g-1", "Old", 3)),
        ],
        "tenant-1",
        "checksum-1",
        "desired-1",
    )
    return json.loads(planfile.dumps(plan, now=lambda: MADE))


def _text(data: dict) -> str:
    data = {**data, "digest": planfile.digest(data)}
    return json.dumps(data, indent=2)


def _refused(text: str | bytes, needle: str) -> str:
    with pytest.raises(PlanError) as err:
        planfile.loads(text, "reviewed.plan")
    message = str(err.value)
    assert message.startswith("reviewed.plan"), message
    assert needle in message, message
    return message


def test_a_good_plan_still_reads():
    saved = planfile.loads(_text(_data()), "reviewed.plan")
    assert saved.created_at == MADE and len(saved.plan.changes) == 2


def test_not_utf8_names_line_and_column():
    raw = _text(_data()).replace('"tenant-1"', '"tenant-\udcff"', 1)
    data = raw.encode("utf-8", "surrogateescape")
    line = raw[: raw.index("tenant-\udcff")].count("\n") + 1
    message = _refused(data, "not UTF-8 text (byte 0xff)")
    assert message.startswith(f"reviewed.plan:{line}:"), message


@pytest.mark.parametrize("value", [42, 1.5, ["t"], {"id": "t"}, True])
def test_a_tenant_id_that_is_not_text(value):
    data = _data()
    data["tenant_id"] = value
    message = _refused(_text(data), "tenant_id is not text")
    assert re.match(r"reviewed\.plan:\d+:\d+: ", message), message


@pytest.mark.parametrize(
    "value",
    [
        "9999-12-31T23:59:59-14:00",  # overflows when made UTC
        "0001-01-01T00:00:00+14:00",
        "2025-02-30T00:00:00+00:00",
        "yesterday",
        12345,
        None,
        "2999-01-01T00:00:00+00:00",  # later than now: would dodge the journal check
        "0001-01-01T00:00:00+00:00",  # since - slack overflowed in the journal check
        "1999-12-31T23:59:59+00:00",
    ],
)
def test_a_created_at_that_is_not_a_time_the_plan_was_made(value):
    data = _data()
    data["created_at"] = value
    _refused(_text(data), "created_at")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rank", "Infinity"),
        ("rank", "-Infinity"),
        ("rank", "NaN"),
        ("rank", "1e999"),
        ("rank", "1" * 5000),
    ],
)
def test_numbers_json_does_not_allow_are_refused_at_their_place(field, value):
    text = _text(_data()).replace(f'"{field}": 2', f'"{field}": {value}', 1)
    assert value in text
    message = _refused(text, "not a saved plan")
    assert re.match(r"reviewed\.plan:\d+:\d+: ", message), message


def test_a_deeply_nested_plan_is_refused():
    text = _text(_data()).replace('"notes": []', '"notes": ' + "[" * 5000 + "]" * 5000, 1)
    assert "[" * 5000 in text
    _refused(text, "nested more than 100 levels deep")


def test_a_plan_nested_within_jsons_limit_but_deep_is_refused_not_a_recursion_error():
    data = _data()
    deep: object = 1
    for _ in range(950):
        deep = [deep]
    data["notes"] = [deep]
    try:
        text = _text(data)
    except RecursionError:  # pragma: no cover - depends on the interpreter's limit
        pytest.skip("cannot even write it here")
    message = _refused(text, "nested more than 32 levels deep")
    assert re.match(r"reviewed\.plan:\d+:\d+: ", message), message


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("notes", "a note", "notes is not a list of text"),
        ("notes", [1], "notes is not a list of text"),
        ("state_checksum", 5, "state_checksum is not text"),
        ("desired_sha256", None, "desired_sha256 is not text"),
        ("safety", [], "safety is not an object"),
        ("safety", {"protect_clinical_settings": "no"}, "protect_clinical_settings"),
        ("changes", {"kind": "delete_policy"}, "changes are not a list"),
    ],
)
def test_fields_of_the_wrong_type(field, value, needle):
    data = _data()
    data[field] = value
    _refused(_text(data), needle)


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "set_group_assignment", "group_id": "g", "policy": "P", "rank": 1e300},
        {"kind": "set_group_assignment", "group_id": "g", "policy": "P", "rank": "2"},
        {"kind": "set_group_assignment", "group_id": "g", "policy": "P", "rank": 0},
        {"kind": "set_group_assignment", "group_id": "g", "policy": "P", "rank": 2.0},
        {"kind": "remove_group_assignment", "group_id": "g", "from": {"policy": "P", "rank": -1}},
        {"kind": "set_group_assignment", "group_id": 5, "policy": "P", "rank": 1},
        {"kind": "remove_group_assignment", "group_id": "g", "from": "P"},
        {"kind": "update_policy", "policy": "P", "changes": {"A": [1]}},
        {"kind": "create_policy", "policy": "P", "settings": [1]},
        {"kind": None},
        "delete_policy",
    ],
)
def test_changes_of_the_wrong_shape(change):
    data = _data()
    data["changes"] = [change]
    _refused(_text(data), "")


def test_read_plan_refuses_devices_directories_and_huge_files(tmp_path, monkeypatch):
    from bridge import limits

    if os.path.exists("/dev/zero"):
        with pytest.raises(PlanError, match="/dev/zero: cannot read the saved plan: not a regular"):
            planfile.read_plan("/dev/zero")
    with pytest.raises(PlanError, match="cannot read the saved plan"):
        planfile.read_plan(tmp_path)
    monkeypatch.setattr(limits, "PLAN_MAX_BYTES", 10)
    big = tmp_path / "big.plan"
    big.write_text(" " * 11)
    with pytest.raises(PlanError, match="larger than"):
        planfile.read_plan(big)


def test_read_plan_reads_a_file(tmp_path):
    path = Path(tmp_path / "ok.plan")
    path.write_text(_text(_data()), encoding="utf-8")
    assert planfile.read_plan(path).created_at == MADE
