"""What the CLI imports at start: every run pays for it (scripts/bench.py times it all)."""

from __future__ import annotations

import subprocess
import sys


def test_the_cli_starts_without_the_sandbox_server():
    """``bridge.cli`` builds its ``sandbox`` options from the sandbox's knobs, but the server
    (TLS, brotli, the seeded tenant) loads only when ``--sandbox`` or ``sandbox`` runs one."""
    code = (
        "import sys, bridge.cli, bridge.sandbox; "
        "print(sorted(m for m in sys.modules if m.startswith('bridge.sandbox')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "['bridge.sandbox', 'bridge.sandbox.config']"
    # Asked for, the names are all there.
    from bridge.sandbox import TENANT_DOMAIN, Sandbox, SandboxConfig, ServiceError, Tenant

    assert Sandbox and SandboxConfig and ServiceError and Tenant and TENANT_DOMAIN
