import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from bridge.errors import LockError
from bridge.lock import TenantLock, lock_path

TENANT = "Contoso.onmicrosoft.com"


class FakeTime:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_holder_written_while_held_and_cleared_after(tmp_path):
    with TenantLock(tmp_path / "locks", TENANT, timeout=0) as lock:
        assert lock.path == tmp_path / "locks" / "teams-bridge-contoso.onmicrosoft.com.lock"
        holder = json.loads(lock.path.read_text())
        assert holder["pid"] == os.getpid()
        assert holder["host"] == socket.gethostname()
        assert holder["started"].endswith("+00:00")
        assert lock.held
    assert not lock.held
    assert lock.path.read_text() == ""


def test_second_holder_waits_polling_then_names_the_holder(tmp_path):
    t = FakeTime()
    with TenantLock(tmp_path, TENANT, timeout=0):
        waiting = TenantLock(
            tmp_path, TENANT, timeout=1.0, poll_interval=0.3, sleep=t.sleep, clock=t.clock
        )
        with pytest.raises(LockError) as err:
            waiting.acquire()
    assert t.sleeps == pytest.approx([0.3, 0.3, 0.3, 0.1])
    message = str(err.value)
    assert message.startswith(
        f"another teams-bridge apply holds the lock for tenant {TENANT} since "
    )
    assert f"(pid {os.getpid()} on host {socket.gethostname()})" in message
    assert "never delete the lock file" in message and "--lock-timeout" in message
    assert not waiting.held


def test_free_again_after_release(tmp_path):
    with TenantLock(tmp_path, TENANT, timeout=0):
        pass
    with TenantLock(tmp_path, TENANT, timeout=0) as again:
        assert again.held


def test_tenants_do_not_block_each_other(tmp_path):
    with TenantLock(tmp_path, "tenant-a", timeout=0), TenantLock(tmp_path, "tenant-b", timeout=0):
        pass


def test_lock_names_are_safe_file_names(tmp_path):
    assert lock_path(tmp_path, "../evil/ID").name == "teams-bridge-.._evil_id.lock"


CHILD = textwrap.dedent(
    """
    import sys
    from bridge.errors import LockError
    from bridge.lock import TenantLock
    try:
        with TenantLock(sys.argv[1], sys.argv[2], timeout=float(sys.argv[3]), poll_interval=0.05):
            print("acquired")
    except LockError as exc:
        print(exc)
        sys.exit(3)
    """
)


def run_child(directory, timeout):
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(directory), TENANT, str(timeout)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_another_process_is_blocked_then_times_out(tmp_path):
    with TenantLock(tmp_path, TENANT, timeout=0):
        child = run_child(tmp_path, 0.3)
    assert child.returncode == 3, child.stderr
    assert f"holds the lock for tenant {TENANT}" in child.stdout
    assert f"(pid {os.getpid()} on host" in child.stdout
    # Once released, the other process gets it.
    child = run_child(tmp_path, 0)
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "acquired"


def test_lock_held_by_another_process_blocks_this_one(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
            import sys
            from bridge.lock import TenantLock
            with TenantLock(sys.argv[1], sys.argv[2], timeout=5):
                print("held", flush=True)
                sys.stdin.read()
            """
            ),
            str(tmp_path),
            TENANT,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockError, match=rf"\(pid {holder.pid} on host "):
            TenantLock(tmp_path, TENANT, timeout=0.2, poll_interval=0.05).acquire()
    finally:
        holder.communicate("", timeout=30)
    assert holder.returncode == 0
    with TenantLock(tmp_path, TENANT, timeout=0):
        pass
