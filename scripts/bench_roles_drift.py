#!/usr/bin/env python3
"""Requests of a drift with roles against one without them, on the sandbox hospital (issue 11:
at most 1.05x), and what clinical coverage adds (the assigned groups' members, once).

    python scripts/bench_roles_drift.py [--users 100000]

Three desired files over the same policies: no roles; examples/roles.yaml's roles without
rules.clinicians; and with rules.clinicians. Each runs `python -m bridge drift FILE` as a child
against one sandbox (no latency, no throttling: requests are what is compared, not time).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bridge.sandbox import Sandbox, SandboxConfig

REPO = Path(__file__).resolve().parents[1]


def files(work: Path) -> dict[str, Path]:
    roles = yaml.safe_load((REPO / "examples" / "roles.yaml").read_text())
    plain = {"policies": roles["policies"]}
    no_clinicians = {k: v for k, v in roles.items() if k != "rules"}
    out = {}
    for name, doc in (("no roles", plain), ("roles", no_clinicians), ("roles + coverage", roles)):
        path = work / f"{name.replace(' ', '-').replace('+', 'and')}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        out[name] = path
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=100_000)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        Sandbox(SandboxConfig(users=args.users, latency=0.0, throttle_rps=None)) as sb,
    ):
        work = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "BRIDGE_"))}
        env.update(sb.env())
        base = None
        for name, path in files(work).items():
            sb.reset_stats()
            started = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "bridge", "drift", str(path)],
                env=env,
                cwd=work,
                capture_output=True,
                text=True,
            )
            wall = time.perf_counter() - started
            if proc.returncode not in (0, 2):
                raise SystemExit(f"drift {name} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
            total = sum(sb.stats()["requests"].values())
            base = base or total
            print(
                f"{args.users} users, {name:<17} {total:5d} requests "
                f"({total / base:.3f}x), {wall:.1f} s"
            )


if __name__ == "__main__":
    main()
