"""The client secret and the access tokens never appear in anything a run leaves behind: stdout
and stderr at -vv (text and JSON logs), the journal, reports, snapshots, saved plans, exports,
error messages (a 403, a wrong secret, a write that fails)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from e2e_support import NORTHWIND

pytestmark = pytest.mark.e2e

JWT = re.compile(r"eyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*")
WRONG_SECRET = "Wr0ng~secret.Value_from-a-typo-1234"


def test_no_secret_or_token_in_any_output_or_file(fresh, cli_for, tmp_path):
    issued: list[str] = []
    issue = fresh.issuer.issue

    def recording_issue(claims: dict[str, Any], *args: Any, **kwargs: Any) -> str:
        token = issue(claims, *args, **kwargs)
        issued.append(token)
        return token

    fresh.issuer.issue = recording_issue  # type: ignore[method-assign]
    cli = cli_for(fresh)
    loud = ["-vv", "--log-format", "json"]
    runs = [
        cli(*loud, "doctor"),
        cli("-vv", "plan", str(NORTHWIND), "--out", "saved.plan"),
        cli(*loud, "drift", str(NORTHWIND), "--report-dir", "reports", "--history", "h.db"),
        cli(*loud, "snapshot", "--out", "snapshot.json"),
        cli(*loud, "export", "--out", "exported.yaml"),
        cli(*loud, "explain", "locum.cardio_gmail.com#EXT#@northwind-health.onmicrosoft.com"),
    ]
    fresh.inject("PUT", ".*/configuration/Global", status=503, times=1)  # a retry, logged
    fresh.inject("POST", "/v1.0/admin/teams/policy/userAssignments/assign", status=500, times=9)
    runs.append(cli(*loud, "apply", str(NORTHWIND), "--auto-approve", "--journal", "j.jsonl"))
    fresh.clear_injections()
    runs.append(
        cli("-vv", "apply", "--plan", "saved.plan", "--auto-approve", "--journal", "j.jsonl")
    )
    fresh.configure(roles=())
    runs.append(cli(*loud, "drift", str(NORTHWIND)))
    runs.append(cli(*loud, "plan", str(NORTHWIND), env={"AZURE_CLIENT_SECRET": WRONG_SECRET}))

    # Each run did what it should, so the scan below covers the paths it means to.
    assert [r.code for r in runs] == [0, 0, 2, 0, 0, 0, 1, 1, 1, 1], "\n".join(map(str, runs))
    assert "503" in runs[6].err and "500 from Graph" in runs[6].err
    assert "the tenant changed since this plan was made" in runs[7].err
    assert "Global Reader or Teams Reader" in runs[8].err
    assert "AADSTS7000215" in runs[9].err
    assert len(issued) >= 10

    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    names = {p.relative_to(tmp_path).as_posix() for p in files}
    assert {"saved.plan", "j.jsonl", "snapshot.json", "exported.yaml", "reports/drift.json"} <= (
        names
    )
    texts = {f"{r.args[:3]} stdout": r.out for r in runs}
    texts.update({f"{r.args[:3]} stderr": r.err for r in runs})
    texts.update({str(p): p.read_bytes().decode("utf-8", "replace") for p in files})
    secrets = [fresh.client_secret, WRONG_SECRET, *issued, *(t.split(".")[2] for t in issued)]
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret or token is in {where}"
        assert not JWT.search(text), f"something shaped like a token is in {where}"
