"""scripts/bench_fleet.py at a tiny size: the whole fleet, a smaller one and the shards run
through the CLI, and the shards read each tenant exactly once (the full run: docs/benchmarks.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_fleet.py"


@pytest.mark.skipif(not hasattr(os, "wait4"), reason="the script measures with wait4 (POSIX)")
def test_bench_fleet_tiny(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--tenants",
            "5",
            "--users",
            "60",
            "--small",
            "2",
            "--shards",
            "2",
            "--latency",
            "0",
            "--throttle-rps",
            "0",
            "--concurrency",
            "3",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    figures = json.loads(out.read_text())
    whole, small, shards = figures["whole"], figures["small"], figures["shards"]
    assert whole["tenants_reported"] == whole["tenants_reached"] == 5
    assert small["tenants_reported"] == small["tenants_reached"] == 2
    assert shards["processes"] == 2 and sum(shards["per_process_tenants"]) == 5
    assert shards["each_tenant_once"] and shards["token_requests_per_tenant"] == [2]
    assert whole["states"]["drift"] == 5 and whole["requests_min"] > 0
    assert all(mb > 0 for mb in whole["peak_rss_mb"])
