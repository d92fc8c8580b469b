"""``serve --fleet`` (bridge.service.fleet): every tenant on its own loop against a sandbox of
several hospitals; metrics carry each tenant's own requests; /readyz waits for every tenant; the
fleet page and each tenant's report are served."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.fleet import load_fleet
from bridge.sandbox import SandboxConfig, SandboxFleet
from bridge.sandbox.server import DEMO_DESIRED
from bridge.service import StatusServer
from bridge.service.fleet import FleetService


@pytest.fixture
def sandboxes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[SandboxFleet]:
    with SandboxFleet(3, SandboxConfig(users=100)) as sf:
        for key, value in {**sf.env(), **sf.secrets_env()}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("BRIDGE_RETRY_ATTEMPTS", "2")
        (tmp_path / "sandbox-desired.yaml").write_text(DEMO_DESIRED, encoding="utf-8")
        text = sf.fleet_file_text("sandbox-desired.yaml").replace("interval: 15m", "interval: 1h")
        (tmp_path / "fleet.yaml").write_text(text, encoding="utf-8")
        yield sf


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait(what, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_serve_fleet_metrics_readiness_and_reports_per_tenant(
    sandboxes: SandboxFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sf = sandboxes
    monkeypatch.setenv(sf.secret_env(2), "wrong")  # hospital-003 cannot sign in
    fleet = load_fleet(tmp_path / "fleet.yaml")
    service = FleetService(fleet, state_dir=str(tmp_path / "state"), concurrency=2)
    server = StatusServer(service, "127.0.0.1", 0).start()  # type: ignore[arg-type]
    try:
        assert _get(server.url + "/readyz")[0] == 503
        service.start()
        _wait(lambda: all(loop.runs >= 1 for loop in service.loops.values()))
        metrics = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(_get(server.url + "/metrics")[1].decode())
            for s in family.samples
        }
        status, body = _get(server.url + "/readyz")
        fleet_page = _get(server.url + "/report.json")[1]
        one = _get(server.url + "/report/hospital-002")
        unknown = _get(server.url + "/report/nobody")[0]
    finally:
        service.stop()
        service.wait(10)
        server.close()
        service.close()

    def runs(tenant: str, mode: str, result: str) -> float:
        key = ("teams_bridge_runs_total", (("mode", mode), ("result", result), ("tenant", tenant)))
        return metrics.get(key, 0.0)

    assert runs("hospital-001", "apply", "applied") == 1  # mode apply in the file
    assert runs("hospital-002", "drift", "drift") == 1
    assert runs("hospital-003", "drift", "error") == 1
    # Each tenant's requests are counted under its name, and only its own: what the client
    # counted for a tenant is what that tenant's sandbox received.
    for i in range(2):
        name = sf.name(i)
        counted = sum(
            v
            for (metric, labels), v in metrics.items()
            if metric == "teams_bridge_api_requests_total" and ("tenant", name) in labels
        )
        assert counted == sf.member(i).stats()["total"], name
    drift = ("teams_bridge_drift_objects", (("kind", "policy"), ("tenant", "hospital-002")))
    assert metrics[drift] == 2
    # Ready only when every tenant's last run succeeded; the body names who is not.
    assert status == 503
    assert json.loads(body)["not_ready"] == ["hospital-003"]
    page = json.loads(fleet_page)
    assert [r["state"] for r in page["rows"]] == ["applied", "drift", "error"]
    assert page["rows"][1]["report"] == "/report/hospital-002"
    assert "check the variable SANDBOX_TENANT_003_SECRET" in page["rows"][2]["message"]
    assert one[0] == 200 and b"<html" in one[1].lower()
    assert unknown == 404


def test_serve_fleet_notifies_each_tenants_state_change_under_its_name(
    sandboxes: SandboxFleet, tmp_path: Path
) -> None:
    posts: list[dict] = []
    fleet = load_fleet(tmp_path / "fleet.yaml")
    service = FleetService(
        fleet,
        state_dir=str(tmp_path / "state"),
        notify_url="https://hooks.example.org/fleet",
        notify_format="json",
        poster=lambda url, payload, headers: posts.append(payload),
    )
    service.start()
    try:
        _wait(lambda: all(loop.runs >= 1 for loop in service.loops.values()))
    finally:
        service.stop()
        service.wait(10)
        service.close()
    # hospital-001 (apply) ends in sync: nothing new to say; the two drift-mode tenants drift,
    # one post each, naming the tenant it is about.
    said = [json.dumps(p) for p in posts]
    assert len(posts) == 2
    for i in (1, 2):
        assert sum(sandboxes.tenant_ids[i] in p for p in said) == 1
    assert not any(sandboxes.tenant_ids[0] in p for p in said)


@pytest.mark.parametrize("option", [["--mode", "apply"], ["--interval", "1m"], ["--journal", "j"]])
def test_serve_fleet_refuses_per_tenant_options(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, option: list[str]
) -> None:
    from bridge.cli import main

    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("tenants: []\n")
    with pytest.raises(SystemExit) as info:
        main(["serve", "--fleet", str(fleet), *option])
    err = capsys.readouterr().err
    assert info.value.code == 1
    assert f"{option[0]} is per tenant with --fleet" in err


def test_serve_needs_a_file_or_a_fleet(capsys: pytest.CaptureFixture[str]) -> None:
    from bridge.cli import main

    with pytest.raises(SystemExit) as info:
        main(["serve"])
    assert info.value.code == 1
    assert "give either FILE or --fleet FLEET" in capsys.readouterr().err
