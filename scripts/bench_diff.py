#!/usr/bin/env python3
"""Time and peak memory of validating a large desired file and of diff().

Shape: 200 policies, 64 group assignments, 100,000 direct user assignments (targets: validate
at most 0.5 s, diff under 1 s, each under 300 MB on a 2-core machine). Prints a table; --json
for machine-readable output.

    python scripts/bench_diff.py [--users 100000] [--repeat 5] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from bridge.desired import parse_desired
from bridge.plan import diff
from bridge.state import (
    Directory,
    Group,
    GroupAssignment,
    Policy,
    TenantState,
    User,
    UserAssignment,
)

DOMAIN = "northwind-health.org"
TARGETS = {"validate": "<= 0.5 s", "diff": "< 1 s"}


def build(users: int, policies: int = 200, groups: int = 64) -> tuple[str, TenantState]:
    names = [f"Policy {i:03d}" for i in range(policies)]
    lines = ["tenant: 3f1c2b7e-8a4d-4e6f-9b21-5d7c0a9e4b12", "policies:"]
    for i, name in enumerate(names):
        lines += [
            f"  {name}:",
            f"    AllowGiphy: {'true' if i % 2 else 'false'}",
            "    ReadReceiptsEnabledType: Everyone",
            "    AllowPriorityMessages: true",
        ]
    lines += ["assignments:", "  groups:"]
    for g in range(groups):
        lines += [
            f"    - group: Group {g:02d}",
            f"      policy: {names[g % policies]}",
            f"      rank: {g + 1}",
        ]
    lines.append("  users:")
    for u in range(users):
        lines += [f"    - user: user{u:06d}@{DOMAIN}", f"      policy: {names[u % policies]}"]
    text = "\n".join(lines) + "\n"

    directory = Directory()
    for u in range(users):
        directory.add_user(User(f"id-{u:06d}", f"user{u:06d}@{DOMAIN}"))
    for g in range(groups):
        directory.add_group(Group(f"g-{g:02d}", f"Group {g:02d}"))
    # The tenant differs a little everywhere: 1 in 10 policies, a swapped pair of ranks,
    # 1 in 20 users on another policy, so diff does real work.
    pols = [
        Policy(
            n,
            {
                "AllowGiphy": bool(i % 2) ^ (i % 10 == 0),
                "ReadReceiptsEnabledType": "Everyone",
                "AllowPriorityMessages": True,
            },
        )
        for i, n in enumerate(names)
    ]
    order = list(range(groups))
    order[0], order[1] = order[1], order[0]
    ga = [
        GroupAssignment(f"g-{g:02d}", names[g % policies], r + 1, f"Group {g:02d}")
        for r, g in enumerate(order)
    ]
    ua = [
        UserAssignment(
            f"id-{u:06d}", names[(u + (u % 20 == 0)) % policies], f"user{u:06d}@{DOMAIN}"
        )
        for u in range(users)
    ]
    return text, TenantState.build("3f1c2b7e-8a4d-4e6f-9b21-5d7c0a9e4b12", pols, ga, ua, directory)


def measure(fn: Callable[[], Any], repeat: int) -> dict[str, float]:
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    gc.collect()
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"median_s": statistics.median(times), "min_s": min(times), "peak_mb": peak / 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    text, current = build(args.users)
    desired = parse_desired(text, "bench.yaml")
    plan = diff(current, desired)
    results = {
        "validate": measure(lambda: parse_desired(text, "bench.yaml"), args.repeat),
        "diff": measure(lambda: diff(current, desired), args.repeat),
    }
    if args.json:
        json.dump(
            {"users": args.users, "changes": len(plan), "results": results}, sys.stdout, indent=2
        )
        print()
        return 0
    print(
        f"200 policies, 64 group assignments, {args.users:,} direct assignments "
        f"({len(text) / 1e6:.1f} MB of YAML); plan: {len(plan):,} changes"
    )
    print(f"{'step':<10}{'median s':>10}{'min s':>10}{'peak MB':>10}   target")
    for step, r in results.items():
        print(
            f"{step:<10}{r['median_s']:>10.3f}{r['min_s']:>10.3f}{r['peak_mb']:>10.1f}"
            f"   {TARGETS[step]}, < 300 MB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
