"""One apply per tenant at a time: two applies interleaving their writes would each verify against
a tenant the other is changing.

``TenantLock`` takes an exclusive ``fcntl.flock`` on ``<directory>/teams-bridge-<tenant>.lock``.
The kernel drops the lock when the holding process exits, however it exits; the file itself stays
(removing a lock file while others wait on it would let two runs in). While held, the file says
who holds it (pid, host, start time) so a waiting run can name it.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from .errors import ConfigError, LockError

log = logging.getLogger(__name__)


def lock_path(directory: str | os.PathLike[str], tenant_id: str) -> Path:
    safe = re.sub(r"[^a-z0-9._-]+", "_", tenant_id.casefold()) or "_"
    return Path(directory) / f"teams-bridge-{safe}.lock"


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
            # O_NOFOLLOW: a link planted in a shared directory cannot redirect the write.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the apply lock {self.path}: {exc.strerror or exc}; "
                "point the lock directory at a writable place"
            ) from exc
        deadline = self._clock() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise ConfigError(f"cannot lock {self.path}: {exc.strerror or exc}") from exc
            remaining = deadline - self._clock()
            if remaining <= 0:
                holder = _read_holder(fd)
                os.close(fd)
                raise LockError(
                    f"another teams-bridge apply holds the lock for tenant {self.tenant_id} "
                    f"since {holder.get('started', 'an unknown time')} "
                    f"(pid {holder.get('pid', '?')} on host {holder.get('host', '?')}); "
                    "wait for it, or raise --lock-timeout (the lock is released by the "
                    "system the moment that process ends: never delete the lock file)"
                )
            self._sleep(min(self.poll_interval, remaining))
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        log.debug("holding the apply lock %s", self.path)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            # Emptied first, so nobody reads a finished run as the holder.
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _read_holder(fd: int) -> dict[str, object]:
    """Who holds the lock, as the holder wrote it; empty when it has not written yet."""
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
