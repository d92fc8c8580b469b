"""scripts/soak.py in its short mode: the service's loop cycles against the sandbox with faults
and throttling part of the time, and memory and descriptors do not grow (the 500-cycle figures are
in docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_soak_short_mode(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "soak.py"), "--cycles", "30", "--warmup", "8",
         "--faults", "12-17", "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(out.read_text())
    assert sum(figures["results"].values()) == 30
    assert figures["results"].get("drift", 0) >= 24  # most runs read through the faults
    assert figures["sandbox_status"].get("429", 0) + figures["sandbox_status"].get("500", 0) > 0
    assert figures["rss_growth"] < 0.05
    if figures["fds_start"] is not None:
        assert figures["fds_end"] <= figures["fds_start"] * 1.05
