"""The CLI end to end against the sandbox answering in each shape a public source records
(docs/wire.md): ``drift`` of the tenant's own export comes out in sync, ``drift`` of a file with
four known differences names exactly those four, and ``apply`` of it succeeds, verifies, and
leaves the tenant in sync; the service's warnings reach the output once and the journal."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from e2e_support import Cli, journal_lines
from wire_shapes import WARNING

from bridge.sandbox import Sandbox, SandboxConfig

pytestmark = pytest.mark.e2e

USERS = 120
PAGE = 11  # users per page: 11 pages, the direct assignments spread over several

READ_SHAPES = {
    "group_keys=camel": {"group_keys": "camel"},
    "group_keys=priority": {"group_keys": "priority"},
    "paging=nextLink": {"paging": "nextLink", "page_size": PAGE},
    "paging=NextLink": {"paging": "NextLink", "page_size": PAGE, "user_count": "Count"},
    "paging=skipToken": {"paging": "skipToken", "page_size": PAGE, "user_count": "@odata.count"},
    "paging=$skiptoken": {"paging": "$skiptoken", "page_size": PAGE},
    "user_rows=camel": {"user_rows": "camel", "page_size": PAGE},
    "user_rows=effective": {"user_rows": "effective", "page_size": PAGE, "user_count": "count"},
    "compression=br-unprompted": {"compression": "br-unprompted"},
}
WRITE_SHAPES = {
    "write_answer=array": {"write_answer": "array"},
    "write_answer=empty": {"write_answer": "empty"},
    "write_answer=no_content": {"write_answer": "no_content"},
    "warning": {"warning": WARNING},
    "compression=br": {"compression": "br", "group_keys": "camel", "user_rows": "effective"},
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tenant's export (in sync by definition, read in the default shape) and a copy with
    four differences: one setting, one new policy, one group's policy, one user's policy.
    Pruning of assignments is on, so an assignment read that is not in the tenant (a group
    entry taken for a direct one) is drift too."""
    workdir = tmp_path_factory.mktemp("wire-files")
    with Sandbox(SandboxConfig(users=USERS, seed=7)) as sb:
        exported = Cli(sb, workdir)("export", "--out", "in_sync.yaml")
        assert exported.code == 0, exported
    data = yaml.safe_load((workdir / "in_sync.yaml").read_text(encoding="utf-8"))
    data["prune"] = {"policies": False, "group_assignments": True, "user_assignments": True}
    assert data["assignments"]["groups"] and len(data["assignments"]["users"]) >= 3
    (workdir / "in_sync.yaml").write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    kitchen = data["policies"]["Kitchen"]
    kitchen["AllowGiphy"] = not kitchen["AllowGiphy"]
    data["policies"]["Night Shift"] = {"AllowGiphy": False, "ReadReceiptsEnabledType": "Everyone"}
    group = data["assignments"]["groups"][-1]
    group["policy"] = "Support Staff" if group["policy"] != "Support Staff" else "Kitchen"
    user = data["assignments"]["users"][-1]
    user["policy"] = "Kitchen" if user["policy"] != "Kitchen" else "Clinical"
    (workdir / "drifted.yaml").write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    return {
        "in_sync": workdir / "in_sync.yaml",
        "drifted": workdir / "drifted.yaml",
        "drift": {
            ("policy", "Kitchen"),
            ("policy", "Night Shift"),
            ("group_assignment", group["group"]),
            ("user_assignment", user["user"]),
        },
    }


@pytest.fixture(scope="module")
def hospital() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(users=USERS, seed=7)) as sb:
        yield sb


def _not_in_sync(report: dict[str, Any]) -> set[tuple[str, str]]:
    out = {("policy", p["name"]) for p in report["policies"] if p["status"] != "in_sync"}
    out |= {
        ("group_assignment", g["group_id"])
        for g in report["group_assignments"]
        if g["status"] != "in_sync"
    }
    users = report["user_assignments"]
    out |= {("user_assignment", u["user"]) for u in users["listed"] if u["status"] != "in_sync"}
    # Users are listed only when not in sync (and only a few): the counts must agree.
    assert (
        users["counts"]["declared"]
        == users["counts"]["in_sync"]
        + len([u for u in users["listed"] if u["status"] != "in_sync"])
        - users["counts"]["extra"]
    )
    assert report["drift_count"] == len(out), report["summary"]
    return out


def _drift(cli: Cli, path: Path) -> tuple[int, dict[str, Any]]:
    run = cli("drift", str(path), "--fail-on", "never", "--output", "json")
    assert run.code in (0, 2), run
    return run.code, json.loads(run.out)


@pytest.mark.parametrize("shape", sorted(READ_SHAPES))
def test_drift_through_each_read_shape_is_exact(hospital, files, tmp_path, shape):
    hospital.configure(**READ_SHAPES[shape])
    try:
        cli = Cli(hospital, tmp_path)
        code, report = _drift(cli, files["in_sync"])
        assert (code, _not_in_sync(report)) == (0, set()), report["summary"]
        code, report = _drift(cli, files["drifted"])
        assert code == 2 and _not_in_sync(report) == files["drift"], report["summary"]
    finally:
        hospital.configure(
            group_keys="pascal",
            paging="@odata.nextLink",
            user_rows="cmdlet",
            user_count=None,
            compression="gzip",
            page_size=1000,
        )


@pytest.mark.parametrize("shape", sorted(WRITE_SHAPES))
def test_apply_through_each_write_shape_succeeds_and_converges(files, tmp_path, shape):
    with Sandbox(SandboxConfig(users=USERS, seed=7, **WRITE_SHAPES[shape])) as sb:
        cli = Cli(sb, tmp_path)
        journal = tmp_path / "journal.jsonl"
        run = cli(
            "apply",
            str(files["drifted"]),
            "--auto-approve",
            "--journal",
            str(journal),
            "--verify-timeout",
            "10",
            "--force",  # the file moves a clinician off priority messages: a safety check
        )
        assert run.code == 0, run
        assert "Apply ok: 4 applied (verified), 0 pending, 0 failed, 0 not" in run.out, run
        code, report = _drift(cli, files["drifted"])
        assert (code, _not_in_sync(report)) == (0, set()), report["summary"]
    warned = [e for e in journal_lines(journal) if e.get("event") == "change" and e.get("warnings")]
    if "warning" not in WRITE_SHAPES[shape]:
        assert not warned and "service warning" not in run.out
        return
    # The log line on stderr, the output once, the journal line of each Teams admin API write.
    assert run.out.count(WARNING) == 1, run
    assert "service warning (update policy Kitchen, create policy Night Shift" in run.out, run
    assert run.err.count("the service warned: " + WARNING) == 1, run  # logged once too
    kinds = sorted(e["change"]["kind"] for e in warned)
    assert kinds == ["create_policy", "set_group_assignment", "update_policy"], warned
    assert all(e["warnings"] == [WARNING] and e["result"] == "ok" for e in warned)
