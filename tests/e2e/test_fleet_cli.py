"""The README's two commands, as a newcomer runs them: `sandbox --tenants 3 --fleet-file` in one
process, `fleet FLEET drift` (then apply) in another, with the variables from the written .env."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from e2e_support import BRIDGE, clean_environ

from bridge.settings import read_dotenv


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BRIDGE, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_sandbox_tenants_then_fleet_drift_and_apply(tmp_path: Path) -> None:
    env = {**clean_environ(), "BRIDGE_RETRY_ATTEMPTS": "2"}
    sandbox = subprocess.Popen(
        [*BRIDGE, "sandbox", "--tenants", "3", "--users", "100", "--fleet-file", "demo/fleet.yaml"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert sandbox.stdout is not None
        lines = []
        while not lines or not lines[-1].startswith("# serving"):
            line = sandbox.stdout.readline()
            assert line, f"the sandbox ended: {sandbox.stderr.read() if sandbox.stderr else ''}"
            lines.append(line)
        printed = "".join(lines)
        assert (
            "# hospital-003: tenant" in printed and "secret in SANDBOX_TENANT_003_SECRET" in printed
        )
        assert ". demo/.env && teams-bridge fleet demo/fleet.yaml drift" in printed
        variables = read_dotenv(tmp_path / "demo" / ".env")
        assert set(variables) >= {"AZURE_AUTHORITY_HOST", "SANDBOX_TENANT_001_SECRET"}
        assert (
            variables["SANDBOX_TENANT_001_SECRET"]
            not in (tmp_path / "demo" / "fleet.yaml").read_text()
        )
        run_env = {**env, **variables, "XDG_STATE_HOME": str(tmp_path / "xdg")}

        drift = _run(["fleet", "demo/fleet.yaml", "drift"], run_env, tmp_path)
        assert drift.returncode == 2, drift.stderr
        assert "Fleet drift: 3 drift (exit 2)." in drift.stdout
        report = json.loads((tmp_path / "fleet-reports" / "fleet-report.json").read_text())
        assert [r["name"] for r in report["rows"]] == [
            "hospital-001",
            "hospital-002",
            "hospital-003",
        ]
        assert (tmp_path / "fleet-reports" / "hospital-002" / "drift.html").is_file()

        # No terminal and no --auto-approve: refused before anything is read or written.
        refused = _run(["fleet", "demo/fleet.yaml", "apply"], run_env, tmp_path)
        assert refused.returncode == 1
        assert "no terminal" in refused.stderr and "--auto-approve" in refused.stderr

        applied = _run(["fleet", "demo/fleet.yaml", "apply", "--auto-approve"], run_env, tmp_path)
        assert applied.returncode == 2, applied.stderr  # the drift-mode tenants still drift
        assert "hospital-001: applied" in applied.stderr
        assert "1 applied" in applied.stdout and "2 drift" in applied.stdout

        # One shard of three: a subset, and the three shards together are the fleet.
        seen: list[str] = []
        for i in range(3):
            out = tmp_path / f"shard-{i}"
            part = _run(
                ["fleet", "demo/fleet.yaml", "plan", "--shard", f"{i}/3", "--report-dir", str(out)],
                run_env,
                tmp_path,
            )
            assert part.returncode in (0, 2), part.stderr
            seen += [r["name"] for r in json.loads((out / "fleet-report.json").read_text())["rows"]]
        assert sorted(seen) == ["hospital-001", "hospital-002", "hospital-003"]

        bad = _run(["fleet", "demo/fleet.yaml", "drift", "--shard", "3/3"], run_env, tmp_path)
        assert bad.returncode == 1 and "--shard '3/3': give I/N" in bad.stderr
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=30)


def test_serve_fleet_as_a_process_until_sigterm(tmp_path: Path) -> None:
    from e2e_support import Cli
    from prometheus_client.parser import text_string_to_metric_families
    from serve_support import serving

    from bridge.sandbox import SandboxConfig, SandboxFleet
    from bridge.sandbox.server import DEMO_DESIRED

    with SandboxFleet(3, SandboxConfig(users=100)) as sf:
        (tmp_path / "sandbox-desired.yaml").write_text(DEMO_DESIRED, encoding="utf-8")
        (tmp_path / "fleet.yaml").write_text(sf.fleet_file_text("sandbox-desired.yaml"))
        cli = Cli(sf, tmp_path)  # type: ignore[arg-type]  # the same env() for the endpoints
        with serving(cli, "--fleet", "fleet.yaml", env=sf.secrets_env()) as served:
            served.wait_for(lambda: served.get("/readyz")[0] == 200, why="every tenant ready")
            status, _, text = served.get("/metrics")
            page = json.loads(served.get("/report.json")[2])
            code = served.stop()
    assert status == 200 and code == 0
    runs = {
        (s.labels["tenant"], s.labels["result"])
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "teams_bridge_runs_total" and s.value
    }
    assert runs == {
        ("hospital-001", "applied"),
        ("hospital-002", "drift"),
        ("hospital-003", "drift"),
    }
    assert [r["name"] for r in page["rows"]] == ["hospital-001", "hospital-002", "hospital-003"]
    assert "serving 3 tenant(s) of fleet.yaml (shard 0/1)" in served.stderr
