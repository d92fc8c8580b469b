"""``-o/--output json`` on every command that prints a result: each output parsed and checked
against a JSON Schema (formats checked too), and the old ``--format json`` spelling still works
with a deprecation note on stderr (issue 15). Offline against the example snapshot, and the
in-process sandbox for ``doctor``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from bridge.cli import main

ROOT = Path(__file__).resolve().parents[1]
SNAP = str(ROOT / "examples" / "northwind-snapshot.json")
DESIRED = str(ROOT / "examples" / "northwind.yaml")
REPORT_SCHEMA = ROOT / "bridge" / "report" / "drift-report.schema.json"

NULLABLE_TEXT = {"type": ["string", "null"]}
COUNT = {"type": "integer", "minimum": 0}
TENANT = {
    "type": "object",
    "required": ["id", "display_name", "default_domain"],
    "additionalProperties": False,
    "properties": {
        "id": NULLABLE_TEXT,
        "display_name": NULLABLE_TEXT,
        "default_domain": NULLABLE_TEXT,
    },
}
TIME = {"type": "string", "format": "date-time"}


def _obj(required: dict[str, Any], **optional: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "required": sorted(required),
        "properties": {**required, **optional},
        "additionalProperties": False,
    }


SCHEMAS: dict[str, dict[str, Any]] = {
    "validate": _obj(
        {
            "file": {"type": "string"},
            "valid": {"const": True},
            "policies": COUNT,
            "group_assignments": COUNT,
            "user_assignments": COUNT,
            "notes": {"type": "array", "items": {"type": "string"}},
        }
    ),
    "plan": _obj(
        {
            "schema_version": {"const": 1},
            "tenant_id": NULLABLE_TEXT,
            "tenant": TENANT,
            "state_checksum": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "desired_sha256": {"type": "string"},
            "summary": _obj({"add": COUNT, "change": COUNT, "destroy": COUNT}),
            "changes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["kind"],
                    "properties": {"kind": {"type": "string"}},
                },
            },
            "notes": {"type": "array", "items": {"type": "string"}},
            "safety": {"type": "object"},
            "needs_force": {"type": "array", "items": {"type": "string"}},
            "users_moved": {"type": ["integer", "null"], "minimum": 0},
            "users_total": {"type": ["integer", "null"], "minimum": 0},
        }
    ),
    "explain": {
        "type": "object",
        "required": ["user", "user_id", "policy", "source", "reasons"],
        "properties": {
            "user": {"type": "string"},
            "user_id": {"type": "string"},
            "policy": {"type": "string"},
            "source": {"enum": ["direct", "group", "global"]},
            "group": NULLABLE_TEXT,
            "group_id": NULLABLE_TEXT,
            "rank": {"type": ["integer", "null"]},
            "reasons": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        },
    },
    "export": _obj(
        {
            "written": {"type": "string"},
            "tenant": TENANT,
            "policies": COUNT,
            "group_assignments": COUNT,
            "user_assignments": COUNT,
        }
    ),
    "history": _obj(
        {
            "runs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "generated_at", "observed_at", "drift_count", "exit_code"],
                    "properties": {"generated_at": TIME, "observed_at": TIME, "drift_count": COUNT},
                },
            },
            "open_drift": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["key", "object", "first_seen", "age_seconds"],
                    "properties": {"object": {"type": "string"}, "first_seen": TIME},
                },
            },
            "resolved": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["key", "object", "first_seen", "resolved_at"],
                    "properties": {
                        "object": NULLABLE_TEXT,
                        "first_seen": TIME,
                        "resolved_at": TIME,
                    },
                },
            },
        }
    ),
    "doctor": _obj(
        {
            "ok": {"type": "boolean"},
            "checks": {
                "type": "array",
                "minItems": 1,
                "items": _obj(
                    {
                        "name": {"type": "string"},
                        "ok": {"type": "boolean"},
                        "detail": {"type": "string"},
                        "fix": NULLABLE_TEXT,
                    }
                ),
            },
        }
    ),
}


def _check(schema: dict[str, Any], text: str) -> Any:
    data = json.loads(text)  # one JSON document, nothing else on stdout
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(data), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])
    return data


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_every_schema_is_a_valid_schema() -> None:
    for schema in [*SCHEMAS.values(), json.loads(REPORT_SCHEMA.read_text())]:
        Draft202012Validator.check_schema(schema)


def test_validate_plan_explain_export_as_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run(capsys, "validate", DESIRED, "-o", "json")
    assert code == 0 and _check(SCHEMAS["validate"], out)["policies"] == 9

    code, out, err = run(capsys, "--snapshot", SNAP, "plan", DESIRED, "-o", "json")
    data = _check(SCHEMAS["plan"], out)
    assert code == 0 and data["tenant"]["display_name"] == "Northwind Regional Health"
    assert "deprecated" not in err

    code, out, _ = run(
        capsys,
        "--snapshot",
        SNAP,
        "explain",
        "lucia.kowalski@northwind-health.org",
        "--output",
        "json",
    )
    assert code == 0 and _check(SCHEMAS["explain"], out)["source"] == "direct"

    code, out, err = run(
        capsys, "--snapshot", SNAP, "export", "--out", str(tmp_path / "e.yaml"), "-o", "json"
    )
    data = _check(SCHEMAS["export"], out)
    assert code == 0 and data["policies"] > 0 and (tmp_path / "e.yaml").exists()
    code, _, err = run(capsys, "--snapshot", SNAP, "export", "-o", "json")
    assert code == 1 and "give --out" in err  # the YAML itself is the output without --out


def test_drift_and_history_as_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    history = str(tmp_path / "h.sqlite")
    code, out, _ = run(
        capsys, "--snapshot", SNAP, "drift", DESIRED, "--history", history, "-o", "json"
    )
    report = _check(json.loads(REPORT_SCHEMA.read_text()), out)
    assert code == 2 and report["tenant"]["default_domain"] == "northwind-health.org"
    assert report["run"]["operator"] is not None and report["run"]["app_id"] is None  # offline

    code, out, _ = run(capsys, "history", "--history", history, "-o", "json")
    data = _check(SCHEMAS["history"], out)
    assert code == 0 and len(data["runs"]) == 1 and data["open_drift"]


def test_old_format_spellings_still_work_with_a_note(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--snapshot", SNAP, "plan", DESIRED, "--format", "json")
    assert code == 0 and _check(SCHEMAS["plan"], out)
    assert "--format json is deprecated here; use -o/--output json" in err
    code, out, err = run(
        capsys,
        "--snapshot",
        SNAP,
        "explain",
        "lucia.kowalski@northwind-health.org",
        "--format",
        "json",
    )
    assert code == 0 and _check(SCHEMAS["explain"], out) and "deprecated" in err
    # --format is only for report files now: hidden from plan's help, -o shown.
    code, out, _ = run(capsys, "plan", "--help")
    assert "-o, --output [text|json]" in out and "--format" not in out


def test_doctor_as_json_against_the_sandbox(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--sandbox", "doctor", "-o", "json")
    data = _check(SCHEMAS["doctor"], out)
    assert code == 0 and data["ok"] is True
    assert any("Northwind Regional Health" in c["detail"] for c in data["checks"])


def test_the_default_journal_is_in_the_users_state_directory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not the working directory (a checkout would pick it up): platformdirs' state directory,
    here $XDG_STATE_HOME; BRIDGE_JOURNAL/--journal still choose another."""
    import sys

    if sys.platform not in ("linux",):
        pytest.skip("XDG_STATE_HOME steers platformdirs on Linux only")
    state, work = tmp_path / "state", tmp_path / "checkout"
    work.mkdir()
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    monkeypatch.delenv("BRIDGE_JOURNAL", raising=False)
    monkeypatch.chdir(work)
    code, out, err = run(
        capsys, "--sandbox", "apply", DESIRED, "--auto-approve", "--ticket", "CHG7"
    )
    assert code == 0, err
    journal = state / "teams-bridge" / "teams-bridge-journal.jsonl"
    assert f"journal: {journal}" in out
    started = json.loads(journal.read_text().splitlines()[0])
    assert started["event"] == "run_started" and started["ticket"] == "CHG7"
    assert list(work.iterdir()) == []


def test_help_names_the_environment_variable_behind_each_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import click

    from bridge.cli import main_group

    code, out, _ = run(capsys, "apply", "--help")
    assert code == 0
    flat = " ".join(out.split())
    for var in ("BRIDGE_JOURNAL", "BRIDGE_LOCK_DIR", "BRIDGE_TICKET", "BRIDGE_REASON"):
        assert f"[env var: {var}]" in flat, var
    # Every option with a variable, in every command, says so.
    for command in [main_group, *main_group.commands.values()]:
        for param in command.params:
            if isinstance(param, click.Option) and param.envvar:
                assert param.show_envvar, (command.name, param.name)


def test_export_minimal_lists_only_what_differs_from_the_service_defaults(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A first desired file short enough to review, with the $schema line on top; it still
    loads back and plans no changes against the tenant it came from."""
    import yaml

    from bridge.export import service_defaults

    full, minimal = tmp_path / "full.yaml", tmp_path / "minimal.yaml"
    assert run(capsys, "--snapshot", SNAP, "export", "--out", str(full))[0] == 0
    assert run(capsys, "--snapshot", SNAP, "export", "--minimal", "--out", str(minimal))[0] == 0
    text = minimal.read_text()
    assert text.startswith("# yaml-language-server: $schema=teams-bridge.schema.json\n")
    assert len(text.splitlines()) * 3 < len(full.read_text().splitlines())
    doc = yaml.safe_load(text)
    global_defaults, new_defaults = service_defaults()
    for name, settings in doc["policies"].items():
        defaults = global_defaults if name == "Global" else new_defaults
        for key, value in settings.items():
            assert key not in defaults or defaults[key] != value, (name, key)
    assert doc["policies"]["Clinical"]["ReadReceiptsEnabledType"] == "Everyone"
    assert run(capsys, "validate", str(minimal))[0] == 0
    code, out, _ = run(capsys, "--snapshot", SNAP, "plan", str(minimal), "--detailed-exitcode")
    assert code == 0 and "No changes." in out
