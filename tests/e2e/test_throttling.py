"""A throttling storm: most requests are answered 429 with Retry-After, the run still succeeds,
no write is repeated, and no retry came back before the Retry-After the sandbox announced (the
sandbox counts those in ``stats()["early_retries"]``)."""

from __future__ import annotations

import pytest
from e2e_support import NORTHWIND

pytestmark = pytest.mark.e2e

# Policies and the two guests' direct assignments: reads, single writes and a bulk write.
STORM_FILE = """\
policies:
  Global:
    ReadReceiptsEnabledType: Everyone
  Kitchen:
    ReadReceiptsEnabledType: Everyone
  Nursing:
    ReadReceiptsEnabledType: Everyone
  Palliative Care:
    ReadReceiptsEnabledType: Everyone
    AllowPriorityMessages: true
assignments:
  users:
    - user: locum.cardio_gmail.com#EXT#@northwind-health.onmicrosoft.com
      policy: Palliative Care
    - user: agency.nurse_outlook.com#EXT#@northwind-health.onmicrosoft.com
      policy: Nursing
"""


def test_drift_through_a_storm_of_429s(ro, cli_for):
    # 10 requests a second, 2 at once: a $batch of the assigned groups' names gets two answers
    # a round, everything else waits out its Retry-After.
    ro.configure(throttle_rps=10, throttle_burst=2)
    result = cli_for(ro)("drift", str(NORTHWIND), "--output", "json")
    assert result.code == 2, result
    stats = ro.stats()
    assert stats["throttled"] >= 10, stats  # a storm: the service refused request after request
    assert stats["early_retries"] == 0, stats
    assert '"drift_count": 8' in result.out


def test_apply_through_a_storm_writes_each_change_once(fresh, cli_for, tmp_path):
    (tmp_path / "storm.yaml").write_text(STORM_FILE)
    cli = cli_for(fresh)
    # A milder storm than drift's (4 at once): apply reads the tenant twice and the assigned
    # groups' members once, and each 429 costs at least the 1 s of its Retry-After.
    fresh.configure(throttle_rps=10, throttle_burst=4)
    result = cli("apply", "storm.yaml", "--auto-approve", "--journal", "j.jsonl")
    assert result.code == 0, result
    assert "Apply ok: 6 applied (verified), 0 pending, 0 failed, 0 not attempted, of 6" in (
        result.out
    ), result
    stats = fresh.stats()
    assert stats["throttled"] >= 15, stats
    assert stats["early_retries"] == 0, stats
    # Three policy updates, one create, one bulk request for both guests: none sent twice
    # successfully, though writes were among the throttled.
    assert stats["writes"] == 5, stats

    fresh.configure(throttle_rps=None, throttle_burst=None)
    after = cli("plan", "storm.yaml", "--detailed-exitcode")
    assert after.code == 0, after
