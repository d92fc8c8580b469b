"""scripts/bench.py at a tiny size: it runs drift and apply through the CLI against the sandbox
and reports sane figures (the full run is documented in docs/benchmarks.md)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_minimum_requests_per_route():
    bench = load_bench()
    minimum = bench.minimum_requests(100_000, 60)
    assert minimum[bench.LIST_USERS] == 100
    assert minimum[bench.GRAPH_BATCH] == 3
    assert minimum[bench.TOKEN] == 2
    assert minimum[bench.ORGANIZATION] == 1  # the tenant's name, read once (issue 15)
    assert sum(minimum.values()) == 109
    assert bench.minimum_requests(1, 1)[bench.LIST_USERS] == 1
    assert bench.minimum_requests(1001, 21)[bench.GRAPH_BATCH] == 2
    assert bench.per_user_requests(100_000, 60) == 100_060


def test_floor_is_the_sign_in_and_the_page_chain_or_the_rate():
    bench = load_bench()
    # 2 sign-in round trips + 100 pages at 50 ms; 109 requests at 27/s (4.04 s) is less.
    assert abs(bench.floor_seconds(100_000, 60, 0.05, 27) - 5.1) < 1e-9
    assert abs(bench.floor_seconds(1_000_000, 60, 0.05, 27) - 50.1) < 1e-9
    # With no latency the rate is the floor; with neither there is none.
    assert abs(bench.floor_seconds(100_000, 60, 0.0, 27) - 109 / 27) < 1e-9
    assert bench.floor_seconds(100_000, 60, 0.0, None) == 0.0


def test_apply_floor_is_two_page_chains_and_the_write_rounds_or_the_rate():
    bench = load_bench()
    # 2 sign-in round trips + 2 x 100 pages + ceil(10 writes / 4) = 205 round trips at 50 ms.
    assert abs(bench.apply_floor_seconds(100_000, 10, 4, 0.05, 27) - 10.25) < 1e-9
    # One at a time, the writes are 10 round trips.
    assert abs(bench.apply_floor_seconds(100_000, 10, 1, 0.05, 27) - 10.6) < 1e-9
    # No latency: two full reads (the sign-in and the organization once: 109 + 105) and the
    # writes at 27/s.
    assert abs(bench.apply_floor_seconds(100_000, 10, 4, 0.0, 27) - 224 / 27) < 1e-9
    assert bench.apply_floor_seconds(100_000, 10, 4, 0.0, None) == 0.0


def test_short_mode_is_small_and_unthrottled():
    args = load_bench().parse_args(["--short"])
    assert (args.sizes, args.apply_users, args.throttle_rps, args.client_rps) == ([1000], 100, 0, 0)
    assert args.latency == 0.01


def test_bench_runs_drift_and_apply_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--sizes",
            "200",
            "--apply-users",
            "100",
            "--latency",
            "0",
            "--throttle-rps",
            "0",
            "--json",
            str(out),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "drift      floor s  wall s" in done.stdout
    assert "PASS  apply 100: <= 1 write requests" in done.stdout

    result = json.loads(out.read_text())
    assert (result["format"], result["version"]) == ("teams-bridge-bench", 2)
    (drift,) = result["drift"]
    assert drift["users"] == 200
    assert 0 < drift["wall_s_best"] <= drift["wall_s"] < 30
    assert drift["floor_s"] == 0 and drift["ratio_to_floor"] is None  # no latency, no rate
    assert 20 < drift["peak_rss_mb"] < 500
    # No throttle: exactly the fewest requests the APIs allow, and no 429.
    assert drift["requests"] == drift["minimum"]
    assert drift["ratio_to_minimum"] == 1.0
    assert drift["throttled"] == 0
    assert drift["batched_requests"] == {"GET /v1.0/groups": 60}
    assert drift["per_user_requests"] == 260

    apply = result["apply"]
    assert (apply["users"], apply["changes"]) == (200, 100)
    assert apply["write_requests"] == {"POST /v1.0/admin/teams/policy/userAssignments/assign": 1}
    assert apply["full_reads"] == 2  # plan (under the lock), one verification read
    assert apply["member_pages"] == 0  # --force, no group assignment change: no member read
    assert len(apply["wall_s_runs"]) == 1 and apply["floor_s"] == 0
    assert all(result["targets"].values())
