"""``teams-bridge serve`` end to end: a subprocess against the sandbox over HTTPS, its endpoints
read over real HTTP, its metrics parsed by prometheus_client's own parser (and linted by promtool,
scraped by a real Prometheus where installed), notifications sent to a loopback webhook."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_support import NORTHWIND, NORTHWIND_CHANGES, Cli, journal_lines
from report_schema import check_report
from serve_support import Receiver, serving

from bridge.sandbox import Sandbox

pytestmark = pytest.mark.e2e

DRIFT_KINDS = ("policy", "group_assignment", "user_assignment")


def drift_objects(metrics: dict) -> dict[str, float]:
    return {k: metrics["teams_bridge_drift_objects", (("kind", k),)] for k in DRIFT_KINDS}


def runs_total(metrics: dict, mode: str, result: str) -> float:
    return metrics["teams_bridge_runs_total", (("mode", mode), ("result", result))]


def test_drift_mode_health_reports_and_notifications_once_per_change(
    fresh: Sandbox, cli_for: Callable[[Sandbox], Cli], tmp_path: Path
) -> None:
    cli = cli_for(fresh)
    hook = Receiver()
    fresh.configure(latency=0.4)  # the first run takes seconds: the endpoints before it ends
    try:
        with serving(
            cli, str(NORTHWIND), "--interval", "1s", "--notify", hook.url,
            "--notify-format", "json", "--history", str(tmp_path / "history.sqlite"),
        ) as s:  # fmt: skip
            assert s.get("/healthz")[0] == 200
            assert s.get("/readyz")[0] == 503
            assert s.get("/report")[0] == 404
            assert s.get("/report.json")[0] == 404
            s.wait_for(lambda: s.runs() >= 1, why="the first run")
            fresh.configure(latency=0.0)
            assert s.get("/readyz")[0] == 200, s.stderr
            status, kind, body = s.get("/report.json")
            assert (status, kind) == (200, "application/json")
            report = check_report(json.loads(body))
            assert report["in_sync"] is False
            status, kind, html = s.get("/report")
            assert status == 200 and kind.startswith("text/html") and "<html" in html
            m = s.metrics()
            assert drift_objects(m) == {"policy": 5, "group_assignment": 1, "user_assignment": 2}
            assert m["teams_bridge_pending_changes", ()] == NORTHWIND_CHANGES
            assert m["teams_bridge_api_requests_total", (("api", "login"), ("status", "200"))] >= 1
            assert m["teams_bridge_api_requests_total", (("api", "teams"), ("status", "200"))] >= 1
            assert m["teams_bridge_api_requests_total", (("api", "graph"), ("status", "200"))] >= 1
            s.wait_for(lambda: s.runs() >= 3, why="three runs")
            assert hook.events() == ["drift"]  # once, not on every run
            assert hook.posts[0]["drift_count"] == 8

            # Someone fixes the tenant: one "resolved".
            assert cli("apply", str(NORTHWIND), "--auto-approve").code == 0
            s.wait_for(lambda: "resolved" in hook.events(), why="drift resolved")
            runs = s.runs()
            s.wait_for(lambda: s.runs() >= runs + 2, why="two more runs")
            assert hook.events() == ["drift", "resolved"]
            # A run's log line can come just before its metrics are counted: wait for them.
            s.wait_for(lambda: runs_total(s.metrics(), "drift", "in_sync") >= 2, why="in-sync runs")
            m = s.metrics()
            assert drift_objects(m) == dict.fromkeys(DRIFT_KINDS, 0)
            assert runs_total(m, "drift", "drift") >= 3

            # Every API call fails: not ready, "failing" once.
            fresh.inject(path=".*", status=403, times=None)
            s.wait_for(lambda: s.get("/readyz")[0] == 503, why="not ready")
            runs = s.runs()
            s.wait_for(lambda: s.runs() >= runs + 2, why="two more failing runs")
            assert s.get("/healthz")[0] == 200  # the loop is alive; the tenant is not reachable
            assert hook.events() == ["drift", "resolved", "failing"]
            s.wait_for(lambda: runs_total(s.metrics(), "drift", "error") >= 3, why="error runs")
            m = s.metrics()
            assert m["teams_bridge_api_requests_total", (("api", "teams"), ("status", "403"))] >= 1
            assert "403" in hook.posts[-1]["message"]

            # The secret never appears on any endpoint, in a post or in the output.
            bodies = [
                s.get(p)[2] for p in ("/healthz", "/readyz", "/metrics", "/report", "/report.json")
            ]
            bodies += [json.dumps(p) for p in hook.posts] + [s.stderr]
            assert not [b for b in bodies if fresh.client_secret in b]
            assert not [b for b in bodies if "s3cr3t-path" in b]
            assert s.stop() == 0
            assert s.stderr.rstrip().endswith("stopped")
    finally:
        hook.close()


def test_apply_mode_brings_drift_objects_to_zero_and_counts_changes(
    fresh: Sandbox, cli_for: Callable[[Sandbox], Cli], tmp_path: Path
) -> None:
    cli = cli_for(fresh)
    journal = tmp_path / "journal.jsonl"
    with serving(cli, str(NORTHWIND), "--interval", "1s") as s:
        s.wait_for(lambda: s.runs() >= 1, why="a drift run")
        assert sum(drift_objects(s.metrics()).values()) == 8
        assert s.stop() == 0
    with serving(
        cli, str(NORTHWIND), "--interval", "1s", "--mode", "apply", "--journal", str(journal)
    ) as s:
        s.wait_for(lambda: s.runs() >= 2, why="an apply run and one after it")
        m = s.metrics()
        assert drift_objects(m) == dict.fromkeys(DRIFT_KINDS, 0)
        assert m["teams_bridge_pending_changes", ()] == 0
        assert runs_total(m, "apply", "applied") == 1
        assert runs_total(m, "apply", "in_sync") >= 1
        applied = {
            labels: v
            for (name, labels), v in m.items()
            if name == "teams_bridge_changes_total" and ("result", "applied") in labels
        }
        assert sum(applied.values()) == NORTHWIND_CHANGES
        assert applied[(("kind", "user_assignment"), ("result", "applied"))] == 2
        assert json.loads(s.get("/report.json")[2])["in_sync"] is True
        assert s.stop() == 0
    # Every run recorded in the default history file, read back by the history command.
    history = cli("history", "--history", "teams-bridge-history.sqlite", "--format", "json")
    assert history.code == 0, history
    assert len(json.loads(history.out)["runs"]) >= 3
    events = [e["event"] for e in journal_lines(journal) if e.get("event", "").startswith("run_")]
    assert events == ["run_started", "run_finished"]


def test_apply_mode_never_forces_a_refused_plan_is_notified_once(
    fresh: Sandbox, cli_for: Callable[[Sandbox], Cli], tmp_path: Path
) -> None:
    cli = cli_for(fresh)
    strict = tmp_path / "strict.yaml"
    text = NORTHWIND.read_text(encoding="utf-8")
    # One deletion more than the file's limit allows.
    text = text.replace("\npolicies:\n", "\npolicies:\n  EduFaculty:\n    ensure: absent\n", 1)
    strict.write_text(text + "\nsafety:\n  max_policy_deletes: 0\n")
    digest = fresh.tenant.digest()
    hook = Receiver()
    try:
        with serving(
            cli, str(strict), "--interval", "1s", "--mode", "apply", "--notify", hook.url
        ) as s:
            s.wait_for(lambda: s.runs() >= 3, why="three runs")
            m = s.metrics()
            assert runs_total(m, "apply", "refused") >= 3, s.stderr
            assert s.get("/readyz")[0] == 200  # the tenant was read; a person must decide
            assert hook.events() == ["refused"]  # once, though every run refuses
            card = hook.posts[0]
            assert "over" in json.dumps(card["teamsBridgeSummary"]["message"])
            assert "refused" in s.stderr
            assert s.stop() == 0
    finally:
        hook.close()
    assert fresh.tenant.digest() == digest  # nothing was written


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is POSIX")
def test_sigterm_during_a_write_closes_the_journal_and_exits_0(
    fresh: Sandbox, cli_for: Callable[[Sandbox], Cli], tmp_path: Path
) -> None:
    cli = cli_for(fresh)
    journal = tmp_path / "journal.jsonl"
    fresh.configure(latency=0.3)  # each write takes a while
    with serving(
        cli, str(NORTHWIND), "--interval", "1h", "--mode", "apply", "--journal", str(journal)
    ) as s:
        s.wait_for(lambda: journal.exists() and '"started"' in journal.read_text(), why="a write")
        s.proc.send_signal(signal.SIGTERM)
        assert s.stop() == 0
    lines = journal_lines(journal)
    assert lines[-1]["event"] == "run_finished"
    assert lines[-1]["result"] == "interrupted"
    started = [e for e in lines if e.get("result") == "started"]
    assert 1 <= len(started) < NORTHWIND_CHANGES  # the step under way finished; no other began
    assert "stopped" in s.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_metrics_pass_promtool_and_a_real_prometheus_scrapes_them(
    ro: Sandbox, cli_for: Callable[[Sandbox], Cli], tmp_path: Path
) -> None:
    promtool, prometheus = shutil.which("promtool"), shutil.which("prometheus")
    if not (promtool and prometheus):
        pytest.skip("Debian's prometheus package is not installed here (.ci/run installs it)")
    cli = cli_for(ro)
    with serving(cli, str(NORTHWIND), "--interval", "2s") as s:
        s.wait_for(lambda: s.runs() >= 1, why="a run")
        text = s.get("/metrics")[2]
        lint = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr
        target = urllib.parse.urlsplit(s.url).netloc
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: teams-bridge\n    static_configs: [{{targets: ['{target}']}}]\n"
        )
        port = _free_port()
        prom = subprocess.Popen(
            [
                prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            api = f"http://127.0.0.1:{port}/api/v1"

            def query(q: str) -> list:
                url = f"{api}/query?query={urllib.parse.quote(q)}"
                try:
                    with urllib.request.urlopen(url, timeout=5) as r:
                        return list(json.load(r)["data"]["result"])
                except OSError:
                    return []

            deadline = time.monotonic() + 60
            up = drift = []
            while time.monotonic() < deadline:
                up = query('up{job="teams-bridge"}')
                drift = query('teams_bridge_drift_objects{kind="policy"}')
                if up and up[0]["value"][1] == "1" and drift:
                    break
                time.sleep(0.5)
            assert up and up[0]["value"][1] == "1", up
            assert drift and float(drift[0]["value"][1]) == 5
            assert drift[0]["metric"]["tenant"] == "northwind-health.onmicrosoft.com"
            with urllib.request.urlopen(f"{api}/targets", timeout=5) as r:
                targets = json.load(r)["data"]["activeTargets"]
            assert [t["health"] for t in targets] == ["up"]
        finally:
            prom.terminate()
            prom.wait(30)
