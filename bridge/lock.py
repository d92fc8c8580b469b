"""One apply per tenant at a time: two applies interleaving their writes would each verify against
a tenant the other is changing.

``TenantLock`` takes an exclusive lock on ``<directory>/teams-bridge-<tenant>.lock`` through
``portalocker`` (``flock`` on Linux and macOS, ``msvcrt.locking`` on Windows; no POSIX-only module
is imported here). The system drops the lock when the holding process exits, however it exits; the
file itself stays (removing a lock file while others wait on it would let two runs in).

While held, ``<lock file>.holder`` says who holds it (pid, host, start time) so a waiting run can
name it. It is a file of its own because Windows locks are mandatory: the locked bytes of the lock
file cannot be read by another process, so a waiter could not read a record kept there.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import portalocker

from .errors import BridgeError, ConfigError, LockError
from .files import write_text_atomic

log = logging.getLogger(__name__)

# A link planted in a shared lock directory must not redirect the open; Windows has no
# O_NOFOLLOW (nor symlinks an unprivileged user can plant there by default).
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
_HOLDER_MAX = 4096


def lock_path(directory: str | os.PathLike[str], tenant_id: str) -> Path:
    safe = re.sub(r"[^a-z0-9._-]+", "_", tenant_id.casefold()) or "_"
    return Path(directory) / f"teams-bridge-{safe}.lock"


def holder_path(lock: Path) -> Path:
    """Where the holder of ``lock`` records itself."""
    return lock.with_name(lock.name + ".holder")


class TenantLock:
    """Context manager: waits up to ``timeout`` seconds (polling) for the tenant's lock, then
    raises ``LockError`` naming the holder. Not re-entrant."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        tenant_id: str,
        timeout: float,
        *,
        poll_interval: float = 0.25,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.tenant_id = tenant_id
        self.path = lock_path(directory, tenant_id)
        self.holder_path = holder_path(self.path)
        self.timeout = timeout
        self.poll_interval = poll_interval
        self._sleep = sleep
        self._clock = clock
        self._fd: int | None = None

    def __enter__(self) -> TenantLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, _OPEN_FLAGS, 0o600)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the apply lock {self.path}: {exc.strerror or exc}; "
                "point the lock directory at a writable place"
            ) from exc
        deadline = self._clock() + self.timeout
        while True:
            try:
                portalocker.lock(
                    fd, portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING
                )
                break
            except portalocker.AlreadyLocked:
                pass
            except portalocker.LockException as exc:
                os.close(fd)
                reason = getattr(exc, "strerror", None) or exc
                raise ConfigError(f"cannot lock {self.path}: {reason}") from exc
            remaining = deadline - self._clock()
            if remaining <= 0:
                os.close(fd)
                holder = _read_holder(self.holder_path)
                raise LockError(
                    f"another teams-bridge apply holds the lock for tenant {self.tenant_id} "
                    f"since {holder.get('started', 'an unknown time')} "
                    f"(pid {holder.get('pid', '?')} on host {holder.get('host', '?')}); "
                    "wait for it, or raise --lock-timeout (the lock is released by the "
                    "system the moment that process ends: never delete the lock file)"
                )
            self._sleep(min(self.poll_interval, remaining))
        self._fd = fd
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        try:
            # Renamed into place: a waiter reads the previous record or this one, never half.
            write_text_atomic(self.holder_path, json.dumps(holder) + "\n", private=True)
        except BridgeError as exc:
            # The record only names the holder to a waiter; the lock itself is held.
            log.warning("could not record the apply lock's holder: %s", exc)
        log.debug("holding the apply lock %s", self.path)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            # Removed first, so nobody reads a finished run as the holder.
            with contextlib.suppress(OSError):
                os.unlink(self.holder_path)
            with contextlib.suppress(portalocker.LockException):
                portalocker.unlock(fd)
        finally:
            os.close(fd)  # closing releases the lock in any case


def _read_holder(path: Path) -> dict[str, object]:
    """Who holds the lock, as the holder wrote it; empty when it has not written yet (or the
    record is unreadable: it only serves the message)."""
    try:
        with open(path, "rb") as fh:
            data = json.loads(fh.read(_HOLDER_MAX) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
