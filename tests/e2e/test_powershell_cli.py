"""Every command through ``--transport powershell``, end to end: the installed CLI in a subprocess,
the fake ``pwsh`` first on PATH (``tests/fake_pwsh``) holding the Teams side, and the sandbox over
HTTPS issuing the tokens and answering Graph (the directory's users, group names, members,
verified domains), as Graph does for the real module.

The fake is seeded with the sandbox's tenant as the REST transport reads it (plus every user of the
directory, for ``explain``), so a plan through either transport starts from the same state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fake_pwsh import FakePwsh

from bridge.auth import build_token_provider
from bridge.backends import make_backend
from bridge.backends.base import Wanted
from bridge.backends.powershell import INSTALL_HINT, PWSH_ARGS, PWSH_INSTALL_HINT
from bridge.desired import load_desired
from bridge.sandbox import Sandbox, SandboxConfig
from bridge.settings import Settings
from bridge.state import TenantState, User

pytestmark = pytest.mark.e2e

NORTHWIND = Path(__file__).resolve().parents[2] / "examples" / "northwind.yaml"
GUEST = "locum.cardio_gmail.com#EXT#@northwind-health.onmicrosoft.com"  # in Physicians
WRITES = (
    "New-CsTeamsMessagingPolicy",
    "Set-CsTeamsMessagingPolicy",
    "Remove-CsTeamsMessagingPolicy",
    "New-CsTeamsMessagingPolicy",
    "Remove-CsGroupPolicyAssignment",
    "Grant-CsTeamsMessagingPolicy",
    "New-CsBatchPolicyAssignmentOperation",
)


@dataclass
class World:
    sandbox: Sandbox
    initial: TenantState  # the sandbox tenant read through REST, every directory user added


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with Sandbox(SandboxConfig(users=200, seed=7)) as sb:
        settings = Settings.load(env_file=None, overrides=sb.env())
        groups = sorted({g["displayName"] for g in sb.tenant.groups()})
        rest = make_backend("rest", settings, build_token_provider(settings))
        try:
            initial = rest.read(Wanted(groups=groups))
        finally:
            rest.close()
        tenant = sb.tenant
        for pos in range(tenant.user_count):
            u = tenant.user(pos)
            if initial.directory.users.get(u["id"]) is None:
                initial.directory.add_user(
                    User(u["id"], u["userPrincipalName"], u["displayName"], u["department"])
                )
        yield World(sb, initial)


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


class Cli:
    """``python -m bridge --transport T ...`` in ``cwd`` against the sandbox, with the fake pwsh
    first on PATH. Every run is checked for leaked secrets."""

    def __init__(self, world: World, fake: FakePwsh, cwd: Path):
        self.world = world
        self.fake = fake
        self.cwd = cwd

    def env(self, **extra: str) -> dict[str, str]:
        # The developer's own Azure or bridge settings must not steer these runs.
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AZURE_", "BRIDGE_", "FAKE_PWSH_"))
        }
        return {
            **base,
            **self.world.sandbox.env(),
            "PATH": f"{self.fake.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "FAKE_PWSH_STATE": str(self.fake.state_path),
            **extra,
        }

    def __call__(self, *args: str, transport: str = "powershell", **env: str) -> Run:
        proc = subprocess.run(
            [sys.executable, "-m", "bridge", "--transport", transport, *args],
            cwd=self.cwd,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=60,
        )
        run = Run(proc.returncode, proc.stdout, proc.stderr)
        secrets = [self.world.sandbox.client_secret, *self.fake.record.get("tokens", [])]
        for secret in secrets:
            assert secret not in run.text, f"a secret leaked into the output of {args}"
        return run

    def json(self, *args: str, transport: str = "powershell") -> Any:
        run = self(*args, transport=transport)
        assert run.code in (0, 2), run.text
        return json.loads(run.out)


@pytest.fixture
def fake(world: World, tmp_path: Path) -> FakePwsh:
    fake = FakePwsh.install(tmp_path / "pwsh")
    fake.seed(world.initial)
    return fake


@pytest.fixture
def cli(world: World, fake: FakePwsh, tmp_path: Path) -> Cli:
    work = tmp_path / "work"
    work.mkdir()
    return Cli(world, fake, work)


def _writes(fake: FakePwsh) -> list[str]:
    return [c["cmdlet"] for c in fake.calls() if c["cmdlet"] in WRITES]


# --------------------------------------------------------------------------- plan


def test_plan_reads_through_pwsh_and_writes_nothing(cli: Cli, fake: FakePwsh):
    run = cli("plan", str(NORTHWIND), "--detailed-exitcode")

    assert run.code == 2, run.text
    assert "+ policy 'Palliative Care' will be created" in run.out
    assert "~ group 'Nursing' will be re-ranked" in run.out
    assert "Plan: 3 to add, 5 to change, 0 to destroy." in run.out
    assert _writes(fake) == []
    cmdlets = {c["cmdlet"] for c in fake.calls()}
    assert {"Connect-MicrosoftTeams", "Get-CsTeamsMessagingPolicy"} <= cmdlets
    assert [s["argv"] for s in fake.record["spawns"]] == [list(PWSH_ARGS)]
    assert fake.calls()[-1]["cmdlet"] == "Disconnect-MicrosoftTeams"


def test_plan_through_rest_and_powershell_is_identical(cli: Cli):
    rest = cli.json("plan", str(NORTHWIND), "--format", "json", transport="rest")
    pwsh = cli.json("plan", str(NORTHWIND), "--format", "json")

    assert rest["changes"], "the example must need changes, or this compares nothing"
    assert pwsh["changes"] == rest["changes"]
    assert pwsh == rest  # summary, state checksum, tenant, safety numbers too


# --------------------------------------------------------------------------- apply


def test_apply_writes_through_pwsh_then_plan_has_no_changes(
    cli: Cli, fake: FakePwsh, world: World, tmp_path: Path
):
    journal = tmp_path / "journal.jsonl"
    run = cli(
        "apply",
        str(NORTHWIND),
        "--auto-approve",
        "--journal",
        str(journal),
        "--lock-dir",
        str(tmp_path / "locks"),
    )
    assert run.code == 0, run.text
    assert "Apply ok: 8 applied (verified), 0 pending, 0 failed" in run.out
    assert len(fake.record["spawns"]) == 1  # reads, writes and verification in one pwsh

    after = fake.data
    policies = {p["Identity"]: p for p in after["policies"]}
    palliative = policies["Tag:Palliative Care"]
    assert palliative["Description"] == "Palliative care team and chaplaincy"
    assert palliative["AllowMemes"] is False and palliative["AllowStickers"] is False
    assert policies["Global"]["ReadReceiptsEnabledType"] == "Everyone"
    assert policies["Tag:Nursing"]["ReadReceiptsEnabledType"] == "Everyone"
    assert policies["Tag:Kitchen"]["ReadReceiptsEnabledType"] == "Everyone"
    assert all(i == "Global" or i.startswith("Tag:") for i in policies)

    names = {g.id: g.display_name for g in world.initial.directory.groups.values()}
    ranked = sorted(after["group_assignments"], key=lambda g: g["Rank"])
    assert [(names[g["GroupId"]], g["PolicyName"], g["Rank"]) for g in ranked] == [
        ("Emergency Department", "Emergency Department", 1),
        ("Physicians", "Clinical", 2),
        ("Nursing", "Nursing", 3),
        ("Residents", "Students", 4),
        ("Pharmacy", "Pharmacy", 5),
        ("Radiology", "Clinical", 6),
        ("Facilities", "Support Staff", 7),
        ("Kitchen", "Kitchen", 8),
    ]
    direct = {a["UserPrincipalName"]: a["PolicyName"] for a in after["user_assignments"]}
    assert direct[GUEST] == "Clinical"
    assert direct["agency.nurse_outlook.com#EXT#@northwind-health.onmicrosoft.com"] == "Nursing"

    entries = [json.loads(line) for line in journal.read_text(encoding="utf-8").splitlines()]
    assert entries and all(e.get("tenant") == world.sandbox.tenant_id for e in entries)

    again = cli("plan", str(NORTHWIND), "--detailed-exitcode")
    assert again.code == 0, again.text
    assert "No changes" in again.out


# --------------------------------------------------------------------------- drift


def test_drift_reports_then_in_sync_after_apply(cli: Cli, tmp_path: Path):
    before = tmp_path / "before"
    run = cli("drift", str(NORTHWIND), "--report-dir", str(before))
    assert run.code == 2, run.text
    written = {p.name for p in before.iterdir()}
    assert written == {"drift.json", "drift.html", "drift.md", "drift.junit.xml"}
    report = json.loads((before / "drift.json").read_text(encoding="utf-8"))
    assert report["in_sync"] is False

    assert "report written: " + str(before / "drift.html") in run.err

    saved = tmp_path / "reviewed.plan"
    planned = cli("plan", str(NORTHWIND), "--out", str(saved))
    assert planned.code == 0, planned.text
    applied = cli("apply", "--plan", str(saved), "--auto-approve", "--lock-dir", str(tmp_path))
    assert applied.code == 0, applied.text

    after = tmp_path / "after"
    history = tmp_path / "drift.db"
    run = cli(
        "drift",
        str(NORTHWIND),
        "--report-dir",
        str(after),
        "--format",
        "json",
        "--history",
        str(history),
    )
    assert run.code == 0, run.text
    assert {p.name for p in after.iterdir()} == {"drift.json"}
    report = json.loads((after / "drift.json").read_text(encoding="utf-8"))
    assert report["in_sync"] is True


def test_a_read_with_a_non_terminating_error_fails_drift_never_reports_drift(
    cli: Cli, fake: FakePwsh, tmp_path: Path
):
    # Get-CsGroupPolicyAssignment writes a 403 without throwing and outputs nothing: taken as
    # "no group assignments", every assignment in the file would be reported as drift.
    reports = tmp_path / "reports"
    run = cli(
        "drift",
        str(NORTHWIND),
        "--report-dir",
        str(reports),
        FAKE_PWSH_SOFT_ERROR_ON="Get-CsGroupPolicyAssignment",
    )
    assert run.code == 1, run.text
    assert "Get-CsGroupPolicyAssignment" in run.err and "403 Forbidden" in run.err
    assert not reports.exists() or not any(reports.iterdir())
    assert _writes(fake) == []


# --------------------------------------------------------------------------- export / snapshot


def test_export_then_plan_round_trips_with_no_changes(cli: Cli, tmp_path: Path):
    exported = tmp_path / "exported.yaml"
    run = cli("export", "--out", str(exported))
    assert run.code == 0, run.text
    desired = load_desired(exported)
    assert desired.group_assignments and desired.user_assignments

    plan = cli("plan", str(exported), "--detailed-exitcode")
    assert plan.code == 0, plan.text
    assert "No changes" in plan.out


def test_snapshot_saves_the_tenant_pwsh_reads(cli: Cli, world: World, tmp_path: Path):
    out = tmp_path / "snap.json"
    run = cli("snapshot", "--out", str(out))
    assert run.code == 0, run.text

    snap = json.loads(out.read_text(encoding="utf-8"))
    assert snap["source"] == "tenant via powershell"
    assert snap["tenant_id"] == world.sandbox.tenant_id
    initial = world.initial
    assert {p["Identity"] for p in snap["policies"]} == {
        p.name if p.name == "Global" else f"Tag:{p.name}" for p in initial.policies.values()
    }
    assert [(g["GroupId"], g["Rank"]) for g in snap["group_assignments"]] == [
        (g.group_id, g.rank) for g in initial.ranked_groups()
    ]
    assert {u["UserId"] for u in snap["user_assignments"]} == set(initial.user_assignments)
    physicians = next(g for g in snap["groups"] if g["displayName"] == "Physicians")
    guest = initial.directory.user_by_ref(GUEST)
    assert guest is not None and guest.id in physicians["members"]

    # The snapshot stands in for the tenant: the same answer offline.
    direct = next(iter(initial.user_assignments.values()))
    offline = cli.json("--snapshot", str(out), "explain", direct.upn, "--format", "json")
    online = cli.json("explain", direct.upn, "--format", "json")
    assert offline == online


def test_a_pwsh_snapshot_plans_offline_like_the_tenant(cli: Cli, tmp_path: Path):
    out = tmp_path / "snap.json"
    assert cli("snapshot", "--out", str(out)).code == 0
    offline = cli("--snapshot", str(out), "plan", str(NORTHWIND), "--format", "json")
    assert offline.code == 0, offline.err
    online = cli.json("plan", str(NORTHWIND), "--format", "json")
    assert json.loads(offline.out)["changes"] == online["changes"]


def test_roles_plan_the_same_through_pwsh_and_rest(cli: Cli):
    """The PowerShell transport reads the role attributes with Graph's users listing ($select):
    the same people for each role as the REST transport's Teams users pages."""
    roles = str(Path(__file__).resolve().parents[2] / "examples" / "roles.yaml")
    pwsh = cli.json("plan", roles, "--format", "json")
    rest = cli.json("plan", roles, "--format", "json", transport="rest")
    assert pwsh["roles"] == rest["roles"]
    assert pwsh["changes"] == rest["changes"]
    assert pwsh["roles"][0]["count"] > 0


# --------------------------------------------------------------------------- explain


def test_explain_through_pwsh_matches_rest(cli: Cli, world: World):
    direct = next(iter(world.initial.user_assignments.values()))
    # A group member by UPN (quoted filter literal with '#'), a direct assignment by object id.
    for user in (GUEST, direct.user_id):
        pwsh = cli.json("explain", user, "--format", "json")
        rest = cli.json("explain", user, "--format", "json", transport="rest")
        assert pwsh == rest

    guest = cli("explain", GUEST)
    assert guest.code == 0, guest.text
    assert f"{GUEST}: Clinical  (from group Physicians (rank 2))" in guest.out
    assert "Read receipts:          on for everyone" in guest.out


# --------------------------------------------------------------------------- doctor


def test_doctor_reports_pwsh_and_module_versions(cli: Cli):
    run = cli("doctor")

    assert run.code == 0, run.text
    assert f"[ok  ] pwsh on PATH: {cli.fake.bin_dir / 'pwsh'}" in run.out
    assert "[ok  ] PowerShell version: 7.4.6" in run.out
    assert "[ok  ] MicrosoftTeams module: 7.9.0 (minimum 4.7.1)" in run.out


def test_a_module_too_old_fails_doctor_and_commands_with_the_install_hint(cli: Cli):
    run = cli("doctor", FAKE_PWSH_MODULE_VERSION="4.0.0")
    assert run.code == 1, run.text
    assert "[FAIL] MicrosoftTeams module: 4.0.0 installed" in run.out
    assert INSTALL_HINT in run.out

    plan = cli("plan", str(NORTHWIND), FAKE_PWSH_MODULE_VERSION="4.0.0")
    assert plan.code == 1, plan.text
    assert "MicrosoftTeams PowerShell module is version 4.0.0" in plan.err
    assert INSTALL_HINT in plan.err


def test_pwsh_missing_fails_doctor_and_commands_with_install_instructions(cli: Cli, tmp_path: Path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    run = cli("doctor", PATH=str(empty))
    assert run.code == 1, run.text
    assert "[FAIL] pwsh on PATH: 'pwsh' not found on PATH" in run.out
    assert f"fix: {PWSH_INSTALL_HINT}" in run.out

    plan = cli("plan", str(NORTHWIND), PATH=str(empty))
    assert plan.code == 1, plan.text
    assert PWSH_INSTALL_HINT in plan.err


# --------------------------------------------------------------------------- secrets


def test_tokens_reach_pwsh_on_stdin_only(cli: Cli, fake: FakePwsh):
    run = cli("-vv", "plan", str(NORTHWIND))
    assert run.code == 0, run.text
    assert "Connect-MicrosoftTeams" in run.err  # debug logging was on

    tokens = fake.record["tokens"]
    assert len(tokens) == 2 and all(len(t) > 100 for t in tokens)
    argv = json.dumps(fake.record["spawns"])
    for token in tokens:
        assert token not in argv
        assert token not in run.text


# --------------------------------------------------------------------------- failures


def test_apply_stopped_by_a_pwsh_crash_converges_when_run_again(cli: Cli, fake: FakePwsh):
    # Global, Kitchen and Nursing are updated by then; Palliative Care is not created.
    crashed = cli(
        "apply",
        str(NORTHWIND),
        "--auto-approve",
        "--lock-dir",
        str(cli.cwd),
        FAKE_PWSH_CRASH_ON="New-CsTeamsMessagingPolicy",
    )
    assert crashed.code == 1, crashed.text
    assert "pwsh exited (exit code 134) while running New-CsTeamsMessagingPolicy" in crashed.err
    assert "Unhandled exception while running New-CsTeamsMessagingPolicy" in crashed.err
    assert "3 applied (not verified), 0 pending, 1 failed, 4 not attempted" in crashed.err
    before = len(fake.calls())

    again = cli("apply", str(NORTHWIND), "--auto-approve", "--lock-dir", str(cli.cwd))
    assert again.code == 0, again.text
    rerun = [c["cmdlet"] for c in fake.calls()[before:] if c["cmdlet"] in WRITES]
    # Only what was left: Palliative Care created, Students updated, the re-rank, two users.
    assert rerun.count("New-CsTeamsMessagingPolicy") == 1
    assert rerun.count("Set-CsTeamsMessagingPolicy") == 1
    assert cli("plan", str(NORTHWIND), "--detailed-exitcode").code == 0


def test_access_denied_by_the_module_names_the_directory_role(cli: Cli, fake: FakePwsh):
    run = cli(
        "apply",
        str(NORTHWIND),
        "--auto-approve",
        "--lock-dir",
        str(cli.cwd),
        FAKE_PWSH_DENY="Set-CsTeamsMessagingPolicy",
    )
    assert run.code == 1, run.text
    assert "Teams Administrator directory role" in run.err
    assert fake.calls("Set-CsTeamsMessagingPolicy") and not fake.calls(
        "Grant-CsTeamsMessagingPolicy"
    )


def test_the_safety_share_is_the_same_through_both_transports(cli: Cli, world: World):
    tenant = world.sandbox.tenant
    ungrouped = [u for u in tenant.upns if not tenant.member_of(u)][:2]
    desired = cli.cwd / "two-users.yaml"
    desired.write_text(
        "policies:\n  Clinical:\n    ReadReceiptsEnabledType: Everyone\n"
        "assignments:\n  users:\n"
        + "".join(f"    - {{user: {u}, policy: Clinical}}\n" for u in ungrouped),
        encoding="utf-8",
    )
    # Without --auto-approve nor a terminal, apply stops after the safety check, before writing.
    for transport in ("rest", "powershell"):
        run = cli("apply", str(desired), "--lock-dir", str(cli.cwd), transport=transport)
        assert run.code == 1
        assert "there is no terminal" in run.err, f"{transport}: {run.err}"


def test_offline_commands_do_not_start_pwsh(cli: Cli, fake: FakePwsh, tmp_path: Path):
    assert cli("validate", str(NORTHWIND)).code == 0
    assert cli("schema", "--out", str(tmp_path / "schema.json")).code == 0
    history = cli("history", "--history", str(tmp_path / "none.db"))  # no such history: an error
    assert history.code == 1 and "no history there" in history.err
    assert fake.record.get("spawns", []) == []
