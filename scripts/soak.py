#!/usr/bin/env python3
"""Soak benchmark: does ``serve`` stay up for weeks? It runs the service's own loop (the same
``ServiceLoop``, ``Reconciler``, metrics and HTTP endpoints as ``teams-bridge serve``) for many
cycles back to back against a sandbox tenant served over HTTPS from this process, with faults
(500/503) and throttling (429 + Retry-After) switched on for the middle part of the run, and
scrapes /metrics and /report.json after every cycle.

It measures the process's resident memory (RSS) and open file descriptors after a warm-up and at
the end, and fails (exit 1) when either grew by 5 % or more. Linux reads both from /proc; elsewhere
RSS is the peak (``resource``) and descriptors are not counted.

    python scripts/soak.py                          # 500 cycles, faults in cycles 150-300
    python scripts/soak.py --cycles 40 --warmup 10 --json soak.json   # the test suite's short run

Figures: docs/benchmarks.md ("Soak").
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NORTHWIND = ROOT / "examples" / "northwind.yaml"
GROWTH_LIMIT = 0.05


def rss_bytes() -> int:
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    import resource  # POSIX only; imported here so the script loads everywhere

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def open_fds() -> int | None:
    for where in ("/proc/self/fd", "/dev/fd"):
        if os.path.isdir(where):
            return len(os.listdir(where))
    return None


def sample() -> dict[str, Any]:
    gc.collect()
    return {"rss_bytes": rss_bytes(), "open_fds": open_fds()}


def growth(start: int | None, end: int | None) -> float | None:
    if not start or end is None:
        return None
    return (end - start) / start


def soak(
    cycles: int, warmup: int, users: int, faults: tuple[int, int], mode: str
) -> dict[str, Any]:
    from bridge.report.notify import webhook_poster
    from bridge.sandbox import Sandbox, SandboxConfig
    from bridge.service import (
        Reconciler,
        RunRecord,
        ServiceConfig,
        ServiceLoop,
        ServiceMetrics,
        StatusServer,
    )
    from bridge.session import Session, SessionOptions

    work = Path(tempfile.mkdtemp(prefix="teams-bridge-soak-"))
    os.chdir(work)  # no .env of a checkout; journal, history and lock under here
    os.environ["XDG_STATE_HOME"] = str(work / "state")
    results: Counter[str] = Counter()
    marks: dict[str, Any] = {}
    with Sandbox(SandboxConfig(users=users, seed=7)) as sb:
        os.environ.update(sb.env())
        os.environ["BRIDGE_RETRY_ATTEMPTS"] = "4"
        config = ServiceConfig(
            str(NORTHWIND),
            mode=mode,
            interval=0.0,  # back to back: weeks of 15-minute runs in minutes
            backoff_base=0.0,
            history_file=str(work / "history.sqlite"),
            journal_path=str(work / "journal.jsonl"),
        )
        with Session(SessionOptions()) as session:
            session.backend()
            metrics = ServiceMetrics("soak")
            box: dict[str, Any] = {}

            def after(record: RunRecord) -> None:
                n = box["loop"].runs
                results[record.result] += 1
                for path in ("/metrics", "/report.json", "/healthz", "/readyz"):
                    try:
                        with urllib.request.urlopen(box["server"].url + path, timeout=10) as r:
                            r.read()
                    except urllib.error.HTTPError as exc:  # 503 while failing: still read it
                        exc.read()
                        exc.close()
                if n == faults[0]:
                    sb.configure(fault_rate=0.2, throttle_rps=40.0, throttle_burst=10)
                elif n == faults[1]:
                    sb.configure(fault_rate=0.0, throttle_rps=None, throttle_burst=None)
                if n == warmup:
                    marks["start"] = {**sample(), "cycle": n, "time": time.monotonic()}

            loop = ServiceLoop(
                config, Reconciler(session, config).run, metrics,
                poster=webhook_poster(session.settings), on_run=after,
            )  # fmt: skip
            box["loop"] = loop
            server = StatusServer(loop, "127.0.0.1", 0).start()
            box["server"] = server
            started = time.monotonic()
            try:
                loop.run_forever(max_runs=cycles)
            finally:
                server.close()
            end = {**sample(), "cycle": loop.runs, "time": time.monotonic()}
            requests = sb.stats()
    start = marks["start"]
    return {
        "cycles": cycles,
        "warmup": warmup,
        "users": users,
        "mode": mode,
        "faults_in_cycles": list(faults),
        "results": dict(results),
        "seconds": round(end["time"] - started, 1),
        "rss_start_mb": round(start["rss_bytes"] / 2**20, 1),
        "rss_end_mb": round(end["rss_bytes"] / 2**20, 1),
        "rss_growth": growth(start["rss_bytes"], end["rss_bytes"]),
        "fds_start": start["open_fds"],
        "fds_end": end["open_fds"],
        "fds_growth": growth(start["open_fds"], end["open_fds"]),
        "sandbox_status": dict(requests.get("status", {})),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cycles", type=int, default=500)
    p.add_argument("--warmup", type=int, default=50, help="cycles before the start sample")
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--mode", choices=("drift", "apply"), default="drift")
    p.add_argument("--faults", default=None, help="FROM-TO cycles with faults and throttling")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    if not 0 < args.warmup < args.cycles:
        p.error("--warmup must be between 0 and --cycles")
    if args.faults:
        a, b = (int(x) for x in args.faults.split("-"))
    else:
        a, b = args.cycles * 3 // 10, args.cycles * 6 // 10
    figures = soak(args.cycles, args.warmup, args.users, (a, b), args.mode)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    grew = [k for k in ("rss_growth", "fds_growth") if (figures[k] or 0.0) >= GROWTH_LIMIT]
    if grew:
        print(f"FAIL: {', '.join(grew)} at or over {GROWTH_LIMIT:.0%}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
