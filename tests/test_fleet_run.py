"""A fleet run against a sandbox of several hospitals over real HTTPS (in process): isolation
(a wrong secret, a throttled tenant, a 403, an outage: the others finish and are reported),
fleet apply writing only to apply-mode tenants, the fleet report, and sandbox routing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bridge.fleet import FleetOptions, FleetRunner, TenantRow, parse_fleet
from bridge.sandbox import SandboxConfig, SandboxFleet
from bridge.sandbox.server import DEMO_DESIRED

TENANTS = 5


@pytest.fixture
def sandboxes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[SandboxFleet]:
    with SandboxFleet(TENANTS, SandboxConfig(users=120)) as sf:
        for key, value in {**sf.env(), **sf.secrets_env()}.items():
            monkeypatch.setenv(key, value)
        for name in ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "BRIDGE_AUTH"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("BRIDGE_RETRY_ATTEMPTS", "4")
        monkeypatch.setenv("BRIDGE_RETRY_MAX_SECONDS", "2")
        (tmp_path / "sandbox-desired.yaml").write_text(DEMO_DESIRED, encoding="utf-8")
        yield sf


def _fleet(sf: SandboxFleet, tmp_path: Path, apply_tenants: int = 1) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(sf.fleet_file_text("sandbox-desired.yaml", apply_tenants), encoding="utf-8")
    return path


def _run(
    sf: SandboxFleet, tmp_path: Path, action: str, apply_tenants: int = 1, concurrency: int = 5
) -> tuple[dict[str, TenantRow], list[str], dict]:
    from bridge.fleet import load_fleet

    fleet = load_fleet(_fleet(sf, tmp_path, apply_tenants))
    order: list[str] = []
    options = FleetOptions(
        action,
        report_dir=str(tmp_path / "reports"),
        state_dir=str(tmp_path / "state"),
        concurrency=concurrency,
    )
    result = FleetRunner(fleet, options, on_done=lambda r: order.append(r.name)).run()
    report = json.loads((tmp_path / "reports" / "fleet-report.json").read_text("utf-8"))
    assert report["exit_code"] == result.exit_code
    return {r.name: r for r in result.rows}, order, report


def test_one_tenant_failing_never_stops_or_slows_the_others(
    sandboxes: SandboxFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sf = sandboxes
    monkeypatch.setenv(sf.secret_env(1), "not-the-secret")  # hospital-002: wrong secret
    sf.member(2).configure(roles=())  # hospital-003: the app has no directory role (403)
    sf.member(3).configure(throttle_rps=20, throttle_burst=4)  # hospital-004: throttled
    sf.member(4).inject(path="/Skype.Policy/.*", status=503, times=None)  # hospital-005: down
    rows, order, report = _run(sf, tmp_path, "drift")

    ok = rows["hospital-001"]
    assert (ok.state, ok.exit_code) == ("drift", 2)
    assert ok.drift["policy"] == 2 and ok.report == "hospital-001/drift.html"
    assert (tmp_path / "reports" / "hospital-001" / "drift.html").is_file()

    wrong = rows["hospital-002"]
    assert wrong.state == "error"
    assert "Invalid client secret" in (wrong.message or "")
    assert "check the variable SANDBOX_TENANT_002_SECRET" in (wrong.message or "")
    assert "not-the-secret" not in json.dumps(report)
    assert sf.client_secrets[0] not in json.dumps(report)

    denied = rows["hospital-003"]
    assert denied.state == "error" and "403 from Teams admin API" in (denied.message or "")

    throttled = rows["hospital-004"]
    assert throttled.state == "drift", throttled.message  # slowed down, finished
    assert throttled.throttled > 0

    down = rows["hospital-005"]
    assert down.state == "error" and "503" in (down.message or "")

    # The healthy tenant was not held up by the throttled one: it ended first.
    assert order.index("hospital-001") < order.index("hospital-004")
    assert ok.seconds < throttled.seconds
    # The worst tenant wins: an error outranks drift.
    assert report["exit_code"] == 1
    assert report["states"] == {"in_sync": 0, "drift": 2, "applied": 0, "refused": 0, "error": 3}
    assert [r["name"] for r in report["rows"]] == [f"hospital-{i:03d}" for i in range(1, 6)]
    assert report["rows"][0]["last_success"] and report["rows"][1]["last_success"] is None


def test_fleet_apply_writes_only_to_tenants_in_apply_mode(
    sandboxes: SandboxFleet, tmp_path: Path
) -> None:
    sf = sandboxes
    rows, _, _ = _run(sf, tmp_path, "apply", apply_tenants=2)
    writes = [sf.member(i).stats()["writes"] for i in range(TENANTS)]
    assert writes[0] > 0 and writes[1] > 0
    assert writes[2:] == [0, 0, 0]
    assert [rows[sf.name(i)].state for i in range(TENANTS)] == ["applied"] * 2 + ["drift"] * 3
    # Each apply-mode tenant has its own journal; drift-mode tenants none.
    assert (tmp_path / "state" / "hospital-001" / "journal.jsonl").is_file()
    assert not (tmp_path / "state" / "hospital-003" / "journal.jsonl").exists()
    # Re-running converges: nothing is written twice.
    rows, _, report = _run(sf, tmp_path, "apply", apply_tenants=2)
    assert [sf.member(i).stats()["writes"] for i in range(TENANTS)] == writes
    assert rows["hospital-001"].state == "in_sync"
    assert report["exit_code"] == 2  # the drift-mode tenants still drift


def test_fleet_plan_writes_nothing_and_counts_changes(
    sandboxes: SandboxFleet, tmp_path: Path
) -> None:
    rows, _, report = _run(sandboxes, tmp_path, "plan", concurrency=2)
    assert all(r.changes == 2 and r.state == "drift" for r in rows.values())
    assert sum(m.stats()["writes"] for m in sandboxes.built()) == 0
    assert report["exit_code"] == 2


def test_fleet_report_renders_every_format(sandboxes: SandboxFleet, tmp_path: Path) -> None:
    sandboxes.member(1).configure(roles=())
    _run(sandboxes, tmp_path, "drift")
    out = tmp_path / "reports"
    html = (out / "fleet-report.html").read_text("utf-8")
    md = (out / "fleet-report.md").read_text("utf-8")
    assert '<a href="hospital-001/drift.html">report</a>' in html
    assert '<tr class="error"><td>hospital-002</td>' in html
    assert "| hospital-001 | apply | drift | policy 2 |" in md
    assert "[report](hospital-003/drift.html)" in md


# --------------------------------------------------------------------------- sandbox routing


def test_sandbox_routes_sign_in_by_path_and_api_calls_by_the_tokens_tenant(
    sandboxes: SandboxFleet,
) -> None:
    sf = sandboxes
    session = requests.Session()
    session.verify = sf.ca_path

    def token(i: int, secret: str) -> requests.Response:
        return session.post(
            f"{sf.base_url}/{sf.tenant_ids[i]}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": sf.client_ids[i],
                "client_secret": secret,
                "scope": "48ac35b8-9aa8-4d74-927d-1f4a14a0b239/.default",
            },
        )

    # Each tenant has its own app and secret: another tenant's secret is refused.
    assert token(0, sf.client_secrets[1]).status_code == 401
    answer = token(1, sf.client_secrets[1])
    assert answer.status_code == 200, answer.text
    bearer = {"Authorization": f"Bearer {answer.json()['access_token']}"}
    url = f"{sf.base_url}/Skype.Policy/configurations/TeamsMessagingPolicy"
    assert session.get(url, headers=bearer).status_code == 200
    # The call reached tenant 1 only.
    assert (
        sf.member(1)
        .stats()["requests"]
        .get("GET /Skype.Policy/configurations/TeamsMessagingPolicy")
        == 1
    )
    assert (
        not sf.member(0)
        .stats()["requests"]
        .get("GET /Skype.Policy/configurations/TeamsMessagingPolicy")
    )
    # An unknown tenant in the sign-in path, and a call without a token.
    unknown = session.post(f"{sf.base_url}/nobody.onmicrosoft.com/oauth2/v2.0/token", data={})
    assert unknown.status_code == 400 and "AADSTS90002" in unknown.text
    assert session.get(url).status_code == 401


def test_sandbox_builds_tenants_on_first_use() -> None:
    started = time.monotonic()
    with SandboxFleet(300, SandboxConfig(users=10_000)) as sf:
        assert time.monotonic() - started < 5
        assert sf.built() == []
        assert len(set(sf.tenant_ids)) == 300 and len(set(sf.client_secrets)) == 300
        text = sf.fleet_file_text("d.yaml")
        fleet = parse_fleet(text)
        assert len(fleet.tenants) == 300 and fleet.tenants[0].mode == "apply"
        assert all(t.mode == "drift" for t in fleet.tenants[1:])
        assert sf.client_secrets[0] not in text
