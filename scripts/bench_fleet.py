#!/usr/bin/env python3
"""Fleet benchmark: one `fleet FLEET drift` over many sandbox hospitals, through the real CLI.

The sandbox fleet runs in this process (every tenant behind one HTTPS endpoint, each with its own
app, secret, latency and throttle); the fleet runs as child processes (`python -m bridge fleet`),
so their wall time and peak RSS are the CLI's own. To keep seeding out of the figures (and out of
memory) the hospitals share one seeded tenant's data under their own ids and apps: a drift only
reads, and every tenant still answers every request itself.

Measured:
1. the whole fleet in one process: wall time, per-tenant requests (min / median / max, as the
   sandbox counted them), 429s, peak RSS;
2. the same with a fleet a fifth the size (peak RSS should not grow with the fleet, only with
   --concurrency);
3. the fleet split over 3 shard processes run at once: each tenant read by exactly one of them
   (checked from the shard reports and from the sandbox's per-tenant token requests).

    python scripts/bench_fleet.py                                   # 300 x 10,000 users
    python scripts/bench_fleet.py --tenants 30 --users 2000 --json out.json

Figures: docs/benchmarks.md ("Fleets").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bridge.sandbox import SandboxConfig, SandboxFleet, build_hospital

DESIRED = Path(__file__).resolve().parents[1] / "examples" / "northwind.yaml"

TOKEN = "POST /{tenant}/oauth2/v2.0/token"


def run_fleet(
    sf: SandboxFleet, folder: Path, fleet_file: Path, args: list[str], tag: str
) -> dict[str, Any]:
    """Run ``python -m bridge fleet`` in a child; its wall time, exit code and peak RSS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "BRIDGE_"))}
    env.update(sf.env())
    env.update(sf.secrets_env())
    out = folder / tag
    cmd = [
        sys.executable,
        "-m",
        "bridge",
        "fleet",
        str(fleet_file),
        "drift",
        "--report-dir",
        str(out / "reports"),
        "--state-dir",
        str(out / "state"),
        *args,
    ]
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    # Files, not pipes: a child writing more than a pipe holds would block until read.
    with open(out / "stdout.txt", "w") as so, open(out / "stderr.txt", "w") as se:
        proc = subprocess.Popen(cmd, env=env, cwd=folder, stdout=so, stderr=se)
    return {"proc": proc, "started": started, "out": out, "cmd": cmd}


def finish(run: dict[str, Any]) -> dict[str, Any]:
    proc = run["proc"]
    # wait4 (POSIX) gives this child's own peak RSS; RUSAGE_CHILDREN would be the largest of all.
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - run["started"]
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    stdout = (run["out"] / "stdout.txt").read_text("utf-8", "replace")
    stderr = (run["out"] / "stderr.txt").read_text("utf-8", "replace")
    scale = 1 if platform.system() == "Darwin" else 1024  # ru_maxrss: bytes on macOS, KiB Linux
    report = json.loads((run["out"] / "reports" / "fleet-report.json").read_text("utf-8"))
    return {
        "exit_code": code,
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(usage.ru_maxrss * scale / 2**20, 1),
        "report": report,
        "stdout": stdout[-2000:],
        "stderr": stderr[-2000:],
    }


def per_tenant(sf: SandboxFleet) -> dict[str, Any]:
    stats = sf.stats()
    totals = [s["total"] for s in stats.values()]
    tokens = [s["requests"].get(TOKEN, 0) for s in stats.values()]
    throttled = sum(s["throttled"] for s in stats.values())
    return {
        "tenants_reached": len(stats),
        "requests_min": min(totals, default=0),
        "requests_median": statistics.median(totals) if totals else 0,
        "requests_max": max(totals, default=0),
        "requests_total": sum(totals),
        "token_requests_per_tenant": sorted(set(tokens)),
        "throttled_429": throttled,
    }


def fleet_file(sf: SandboxFleet, folder: Path, count: int, name: str) -> Path:
    text = sf.fleet_file_text("sandbox-desired.yaml", apply_tenants=0)
    if count < sf.count:  # the first ``count`` tenants
        head, _, rest = text.partition("tenants:\n")
        entries = rest.split("  - name: ")[1 : count + 1]
        text = head + "tenants:\n" + "".join("  - name: " + e for e in entries)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tenants", type=int, default=300)
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--latency", type=float, default=0.05, help="seconds per request")
    ap.add_argument("--throttle-rps", type=float, default=30, help="per tenant (0: none)")
    ap.add_argument("--concurrency", type=int, default=8, help="tenants at once per process")
    ap.add_argument("--shards", type=int, default=3)
    ap.add_argument("--small", type=int, default=None, help="the smaller fleet (default: 1/5)")
    ap.add_argument("--json", help="write the figures here")
    opts = ap.parse_args()

    config = SandboxConfig(
        users=opts.users,
        latency=opts.latency,
        throttle_rps=opts.throttle_rps or None,
    )
    t0 = time.monotonic()
    template = build_hospital(config)
    seeded = time.monotonic() - t0
    figures: dict[str, Any] = {
        "tenants": opts.tenants,
        "users": opts.users,
        "latency": opts.latency,
        "throttle_rps": opts.throttle_rps,
        "concurrency": opts.concurrency,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "seed_seconds": round(seeded, 1),
    }
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        folder = Path(tmp)
        # The example hospital's desired state: policies, group and direct assignments by name.
        (folder / "sandbox-desired.yaml").write_text(DESIRED.read_text("utf-8"), encoding="utf-8")
        small = opts.small or max(1, opts.tenants // 5)
        runs = [
            ("whole", opts.tenants, [[]]),
            ("small", small, [[]]),
            (
                "shards",
                opts.tenants,
                [["--shard", f"{i}/{opts.shards}"] for i in range(opts.shards)],
            ),
        ]
        for tag, count, shard_args in runs:
            with SandboxFleet(opts.tenants, config, template=template) as sf:
                path = fleet_file(sf, folder, count, f"fleet-{tag}.yaml")
                started = time.monotonic()
                children = [
                    run_fleet(
                        sf,
                        folder,
                        path,
                        ["--concurrency", str(opts.concurrency), *extra],
                        f"{tag}-{i}",
                    )
                    for i, extra in enumerate(shard_args)
                ]
                done = [finish(c) for c in children]
                wall = time.monotonic() - started
                rows = [r for d in done for r in d["report"]["rows"]]
                names = [r["name"] for r in rows]
                entry: dict[str, Any] = {
                    "fleet_tenants": count,
                    "processes": len(done),
                    "wall_seconds": round(wall, 1),
                    "exit_codes": [d["exit_code"] for d in done],
                    "peak_rss_mb": [d["peak_rss_mb"] for d in done],
                    "states": {
                        s: sum(1 for r in rows if r["state"] == s)
                        for s in ("in_sync", "drift", "error")
                    },
                    "tenants_reported": len(names),
                    "each_tenant_once": sorted(names) == sorted(set(names)) and len(names) == count,
                    "per_process_tenants": [len(d["report"]["rows"]) for d in done],
                    "client_requests_per_tenant": {
                        "min": min((r["requests"] for r in rows), default=0),
                        "max": max((r["requests"] for r in rows), default=0),
                    },
                    **per_tenant(sf),
                }
                errors = [r for r in rows if r["state"] == "error"]
                if errors:
                    entry["first_error"] = errors[0]["message"]
                figures[tag] = entry
                print(json.dumps({tag: entry}, indent=2), flush=True)
    if opts.json:
        Path(opts.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    ok = all(figures[t]["each_tenant_once"] for t in ("whole", "small", "shards"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
