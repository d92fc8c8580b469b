"""End-to-end helpers: the CLI runs as a subprocess (``python -m bridge``, so any venv works)
against a sandbox tenant served over HTTPS from this test process.

The child gets the sandbox's environment (``sb.env()``, its CA bundle included) on top of this
process's environment with every ``AZURE_*``/``BRIDGE_*`` variable removed, so a developer's own
credentials or tuning never leak into a run; it runs in a temporary directory, so no ``.env`` file
and no default journal path of the checkout is used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.sandbox import Sandbox

REPO = Path(__file__).resolve().parents[2]
NORTHWIND = REPO / "examples" / "northwind.yaml"
BRIDGE = [sys.executable, "-m", "bridge"]
# Fewer attempts than the default 5: tests that exhaust retries on purpose stay fast.
RETRY_ATTEMPTS = 3

# What apply does to a fresh sandbox hospital to make it match examples/northwind.yaml: four
# policy updates, one create, the Nursing group re-ranked (remove + add) and one bulk request
# for the two guests' direct assignments.
NORTHWIND_CHANGES = 8
NORTHWIND_WRITES = 8
NORTHWIND_PLAN_FOOTER = "Plan: 3 to add, 5 to change, 0 to destroy."

# Knob values a test may change, and what they go back to.
DEFAULT_KNOBS: dict[str, Any] = {
    "latency": 0.0,
    "throttle_rps": None,
    "throttle_burst": None,
    "fault_rate": 0.0,
    "drop_rate": 0.0,
    "propagation_delay": 0.0,
    "roles": ("teams_admin",),
}


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    code: int
    out: str
    err: str
    seconds: float

    def __str__(self) -> str:  # what a failing assertion shows
        return (
            f"teams-bridge {' '.join(self.args)} -> exit {self.code} in {self.seconds:.1f}s\n"
            f"--- stdout\n{self.out}--- stderr\n{self.err}"
        )


def clean_environ() -> dict[str, str]:
    """This process's environment without credentials or tuning of its own."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "BRIDGE_"))}


def child_env(sb: Sandbox, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = clean_environ()
    env.update(sb.env())
    env["BRIDGE_RETRY_ATTEMPTS"] = str(RETRY_ATTEMPTS)
    env.update(extra or {})
    return env


class Cli:
    """Runs ``teams-bridge`` in ``cwd`` against ``sb``; per-user state (the default apply lock
    directory) goes under ``cwd`` too, never into the home directory of whoever runs the tests."""

    def __init__(self, sb: Sandbox, cwd: Path):
        self.sb = sb
        self.cwd = cwd

    def _env(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        return child_env(self.sb, {"XDG_STATE_HOME": str(self.cwd / "state"), **(extra or {})})

    def __call__(
        self, *args: str, env: Mapping[str, str] | None = None, timeout: float = 60
    ) -> Result:
        started = time.monotonic()
        proc = subprocess.run(
            [*BRIDGE, *args],
            env=self._env(env),
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return Result(
            tuple(args), proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started
        )

    def start(self, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*BRIDGE, *args],
            env=self._env(env),
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )


def reset(sb: Sandbox) -> None:
    sb.clear_injections()
    sb.configure(**DEFAULT_KNOBS)
    sb.reset_stats()


def journal_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def change_key(change: Mapping[str, Any]) -> tuple[str, str]:
    """What a journaled change acts on: (kind, policy / group id / user id)."""
    target = change.get("user_id") or change.get("group_id") or change.get("policy")
    return str(change["kind"]), str(target)


def write_requests(sb: Sandbox) -> dict[str, int]:
    """Requests by route to the routes that change the tenant (successful or not)."""
    return {
        route: n
        for route, n in sb.stats()["requests"].items()
        if not route.startswith(("GET ", "POST /{tenant}/", "POST /v1.0/$batch"))
    }
