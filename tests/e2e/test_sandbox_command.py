"""``teams-bridge sandbox``, the long-running command: the lines it prints point a second
process at it (with the secret, or with the certificate it offers), and it cleans up when
stopped."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from e2e_support import BRIDGE, NORTHWIND, NORTHWIND_PLAN_FOOTER, clean_environ

pytestmark = pytest.mark.e2e

CERT_HINT = "# certificate credential instead of the secret: export AZURE_CLIENT_CERTIFICATE_PATH="


def _read_banner(proc: subprocess.Popen[str]) -> tuple[dict[str, str], str]:
    """The exported variables and the offered certificate path, read up to the serving line."""
    exported: dict[str, str] = {}
    cert = ""
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip("\n")
        if line.startswith("export "):
            key, _, value = line[len("export ") :].partition("=")
            exported[key] = value
        elif line.startswith(CERT_HINT):
            cert = line[len(CERT_HINT) :]
        elif line == "# serving; press Ctrl+C to stop":
            return exported, cert
    raise AssertionError(f"the sandbox ended before serving: {proc.stderr and proc.stderr.read()}")


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_sandbox_command_serves_a_plan_from_another_process(stop, tmp_path):
    proc = subprocess.Popen(
        [*BRIDGE, "sandbox", "--users", "300"],
        env=clean_environ(),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        exported, cert = _read_banner(proc)
        assert sorted(exported) == [
            "AZURE_AUTHORITY_HOST",
            "AZURE_CLIENT_ID",
            "AZURE_CLIENT_SECRET",
            "AZURE_TENANT_ID",
            "BRIDGE_GRAPH_URL",
            "BRIDGE_TEAMS_URL",
            "REQUESTS_CA_BUNDLE",
        ]
        ca = Path(exported["REQUESTS_CA_BUNDLE"])
        assert ca.is_file() and Path(cert).is_file()

        by_secret = {**clean_environ(), **exported}
        by_certificate = {k: v for k, v in by_secret.items() if k != "AZURE_CLIENT_SECRET"}
        by_certificate["AZURE_CLIENT_CERTIFICATE_PATH"] = cert
        for env in (by_secret, by_certificate):
            plan = subprocess.run(
                [*BRIDGE, "plan", str(NORTHWIND), "--detailed-exitcode"],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
            )
            assert plan.returncode == 2, plan.stderr
            assert plan.stdout.rstrip().endswith(NORTHWIND_PLAN_FOOTER), plan.stdout
    finally:
        proc.send_signal(stop)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    if stop == signal.SIGINT:
        assert out.endswith("# sandbox stopped\n")
    # Its TLS key and the client certificate's key were in that directory.
    assert not ca.parent.exists()
    assert not os.path.exists(cert)
