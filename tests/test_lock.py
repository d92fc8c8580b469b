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
        assert lock.holder_path == lock.path.with_name(lock.path.name + ".holder")
        holder = json.loads(lock.holder_path.read_text())
        assert holder["pid"] == os.getpid()
        assert holder["host"] == socket.gethostname()
        assert holder["started"].endswith("+00:00")
        assert lock.held
    assert not lock.held
    # The record goes with the run; the lock file stays (deleting it would let two runs in).
    assert not lock.holder_path.exists() and lock.path.exists()


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


def test_a_leftover_holder_record_is_replaced(tmp_path):
    # A run killed with -9 leaves its record; the system freed its lock, the next run takes it.
    stale = lock_path(tmp_path, TENANT).with_name(lock_path(tmp_path, TENANT).name + ".holder")
    stale.write_text(json.dumps({"pid": 999999, "host": "gone", "started": "2020-01-01"}))
    with TenantLock(tmp_path, TENANT, timeout=0) as lock:
        assert json.loads(lock.holder_path.read_text())["pid"] == os.getpid()


def test_an_unwritable_holder_record_does_not_stop_the_run(tmp_path, caplog):
    lock = TenantLock(tmp_path, TENANT, timeout=0)
    lock.holder_path.mkdir()  # cannot be replaced by a file
    with lock:
        assert lock.held
        waiting = TenantLock(tmp_path, TENANT, timeout=0)
        with pytest.raises(LockError, match=r"since an unknown time \(pid \? on host \?\)"):
            waiting.acquire()
    assert "could not record the apply lock's holder" in caplog.text


# ------------------------------------------------------------------ without POSIX-only modules

# Windows has no fcntl (nor termios, pwd, grp, resource...). This hook makes them unimportable:
# fcntl for everything but portalocker (which takes its msvcrt branch on Windows and its fcntl
# branch here), the others for bridge's own modules.
NO_POSIX = textwrap.dedent(
    """
    import sys

    POSIX_ONLY = {"fcntl", "termios", "tty", "pty", "pwd", "grp", "resource", "syslog"}


    def _importer():
        frame = sys._getframe(2)
        while frame is not None and frame.f_code.co_filename.startswith("<frozen importlib"):
            frame = frame.f_back
        return frame.f_globals.get("__name__", "") if frame is not None else ""


    class _Refuse:
        def find_spec(self, name, path=None, target=None):
            if name in POSIX_ONLY:
                who = _importer()
                if who.startswith("bridge") or (
                    name == "fcntl" and not who.startswith("portalocker")
                ):
                    raise ImportError(f"No module named {name!r} (as on Windows; from {who})")
            return None


    sys.meta_path.insert(0, _Refuse())
    """
)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _without_posix(tmp_path, args, **env):
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(NO_POSIX)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "BRIDGE_"))}
    environ.update(PYTHONPATH=str(hook), NO_COLOR="1", **env)
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=environ,
        stdin=subprocess.DEVNULL,
    )


def test_the_hook_refuses_fcntl(tmp_path):
    # The hook works: without it this test would prove nothing.
    child = _without_posix(tmp_path, ["-c", "import fcntl"])
    assert child.returncode == 1 and "No module named 'fcntl' (as on Windows" in child.stderr


def test_every_bridge_module_imports_without_posix_only_modules(tmp_path):
    script = textwrap.dedent(
        """
        import importlib, pkgutil, bridge
        names = [m.name for m in pkgutil.walk_packages(bridge.__path__, "bridge.")]
        for name in names:
            if name != "bridge.__main__":
                importlib.import_module(name)
        print(len(names))
        """
    )
    child = _without_posix(tmp_path, ["-c", script])
    assert child.returncode == 0, child.stderr
    assert int(child.stdout) > 40


def test_plan_and_apply_run_without_fcntl(tmp_path):
    desired = os.path.join(REPO, "examples", "northwind.yaml")
    journal = str(tmp_path / "journal.jsonl")
    cli = ["-m", "bridge", "--sandbox", "--sandbox-users", "300"]
    plan = _without_posix(tmp_path, [*cli, "plan", desired])
    assert plan.returncode == 0, plan.stderr
    assert "Plan: " in plan.stdout
    applied = _without_posix(
        tmp_path,
        [*cli, "apply", desired, "--auto-approve", "--journal", journal],
        BRIDGE_LOCK_DIR=str(tmp_path / "locks"),
    )
    assert applied.returncode == 0, applied.stderr
    assert "Apply ok:" in applied.stdout
    assert (tmp_path / "locks").is_dir() and list((tmp_path / "locks").glob("*.lock"))
    assert not list((tmp_path / "locks").glob("*.holder"))  # released
