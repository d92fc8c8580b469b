"""Check a drift report's JSON form against ``bridge/report/drift-report.schema.json`` with a
format checker, so ``date-time`` (RFC 3339, via rfc3339-validator) and the other formats are
checked too: plain ``jsonschema.validate`` ignores ``format``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SCHEMA_PATH = Path(__file__).parent.parent / "bridge" / "report" / "drift-report.schema.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)


def report_errors(data: Any) -> list[str]:
    """Every way ``data`` (a parsed drift.json) breaks the schema, with where."""
    errors = sorted(VALIDATOR.iter_errors(data), key=lambda e: list(e.absolute_path).__repr__())
    return [f"{list(e.absolute_path)}: {e.message}" for e in errors]


def check_report(data: Any) -> Any:
    """``data`` if it is a valid drift report (JSON round-tripped first, as a reader sees it)."""
    data = json.loads(json.dumps(data))
    errors = report_errors(data)
    assert not errors, "\n".join(errors[:10])
    return data
