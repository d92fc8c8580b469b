"""The service over days: one session (one MSAL token cache) for the life of the process, tokens
renewed as they expire. The wall clock is moved on two hours between runs (the sandbox issues
one-hour tokens and refuses expired ones, by the same clock), in-process against the sandbox."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from e2e_support import NORTHWIND, RETRY_ATTEMPTS

from bridge.sandbox import Sandbox, SandboxConfig
from bridge.service import Reconciler, ServiceConfig, ServiceLoop, ServiceMetrics
from bridge.session import Session, SessionOptions

pytestmark = pytest.mark.e2e
HOURS_BETWEEN_RUNS = 2
RUNS = 36  # three days


def test_tokens_are_renewed_over_days(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_time = time.time
    offset = {"s": 0.0}
    monkeypatch.setattr(time, "time", lambda: real_time() + offset["s"])
    monkeypatch.chdir(tmp_path)
    with Sandbox(SandboxConfig(users=50, seed=7)) as sb:
        for key, value in sb.env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("BRIDGE_RETRY_ATTEMPTS", str(RETRY_ATTEMPTS))
        config = ServiceConfig(str(NORTHWIND), interval=HOURS_BETWEEN_RUNS * 3600.0)

        def wait(seconds: float) -> bool:
            offset["s"] += HOURS_BETWEEN_RUNS * 3600
            return False

        with Session(SessionOptions()) as session:
            metrics = ServiceMetrics("t")
            loop = ServiceLoop(config, Reconciler(session, config).run, metrics, wait=wait)
            loop.run_forever(max_runs=RUNS)
    assert loop.runs == RUNS and loop.failures == 0
    assert loop.last is not None and loop.last.result == "drift"
    logins = metrics.api_requests.labels("t", "login", "200")._value.get()
    # Every run after the first needs new tokens (the last ones expired an hour ago).
    assert logins >= RUNS
    assert metrics.api_requests.labels("t", "teams", "401")._value.get() == 0
