"""The apply journal: an append-only JSON-lines record of every apply run, kept so an admin (or an
auditor) can see what was changed, when, by which run, and what failed.

One object per line, every line with ``time`` (UTC, ISO 8601), ``run_id``, ``tenant`` and
``event``:

- ``run_started``: ``changes`` (count), ``summary``, ``state_checksum``, ``desired_sha256``,
  ``operator`` (the OS user), ``app_id`` (the token's app id, never a secret), ``reason`` and
  ``ticket`` (``apply --reason/--ticket``: the change-control reference), ``host``, ``pid``
  (who ran it: null when the journal was opened without a ``RunBy``);
- ``change``: ``change`` (the change's ``data()``, or a bulk summary), ``result`` (``started`` |
  ``ok`` | ``failed`` | ``pending`` | ``not_attempted``: a user of a bulk call that stopped before
  its request), ``error``, ``correlation_id``, ``user_count`` (bulk only), ``operation_id`` (a
  user of a batch operation only), ``verification`` (true on a ``pending`` line written by
  verification: it re-records a change the run sent, and journaled, earlier), ``warnings`` (only
  when the service warned about the change: its texts, as the ``X-Ms-ConfigApi-PowerShell-
  WarningMessage`` header carried them);
- ``run_finished``: ``result`` and the counts of the run.

``writes_after`` and ``group_writes`` read the journal back, so ``apply`` can tell what earlier runs
sent that the service may not show yet (writes take from seconds to hours to show on reads); a line
whose change carries ``not_sent`` is a change a run held back as pending from an earlier send, not
a send. They read from the end of the file back to the time asked about only: the journal is never
truncated.

Lines are only ever appended (the file is never truncated) and are on disk (flush + fsync) before
the call that wrote them returns, so the journal is complete up to the last tenant write even if
the process dies. The file is private (0600, set on every open, whatever mode it had) and a
symlink at its path is refused rather than followed (``O_NOFOLLOW`` where the system has it).

Reading back is linear in the file's size and bounded per line: a line longer than
``MAX_LINE_BYTES`` (a crash can leave megabytes of NUL bytes and no newline) is skipped, with a
warning, without being joined or parsed. A line dated later than the reader's clock (a clock that
was ahead once) is taken as written no later than the earliest line after it, or than now, so one
such line cannot hold a change back as pending, or a saved plan as stale, forever.

Change data carries no secrets; error texts come from services, so anything that looks like a
bearer token or a JWT is masked before it is written.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
import os
import socket
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .redact import redact
from .runby import RunBy

log = logging.getLogger(__name__)

RESULTS = frozenset({"started", "ok", "failed", "pending", "not_attempted"})
# Journal results that mean the service may have carried the write out.
_SENT = frozenset({"started", "ok", "pending"})
# Reading back stops this long before the time asked about: lines are appended in time order,
# but a clock stepped back between two runs must not hide the later run's writes.
CLOCK_SLACK = dt.timedelta(hours=1)
# A line dated later than now by more than this was written by a clock that was ahead.
CLOCK_SKEW = dt.timedelta(minutes=5)
_BLOCK = 1 << 20
# The longest line read back. teams-bridge writes lines of a few KB (one per change, one per user
# of a bulk call); anything this long is debris from a crash, skipped unread.
MAX_LINE_BYTES = 4 << 20
_TIME_PREFIX = b'{"time": "'
_GROUP_KINDS = frozenset(
    {"set_group_assignment", "remove_group_assignment", "restore_group_assignment"}
)


def _is_send(entry: Mapping[str, Any]) -> bool:
    """Whether a change line records a write sent to the service when the line was written."""
    result = entry.get("result")
    if result not in _SENT:
        return False
    change = entry.get("change")
    if isinstance(change, dict) and change.get("not_sent"):
        return False
    return not (result == "pending" and entry.get("verification"))


def mask_secrets(text: str) -> str:
    """A bearer token or a JWT echoed in a service's error text must not reach the journal."""
    return redact(text)


def change_entry(
    run_id: str,
    tenant: str | None,
    change: Mapping[str, Any],
    result: str,
    *,
    error: BaseException | str | None = None,
    user_count: int | None = None,
    correlation_id: str | None = None,
    operation_id: str | None = None,
    verification: bool = False,
    warnings: Iterable[str] = (),
) -> dict[str, Any]:
    """One ``change`` line, for ``Journal.write_many``. ``verification``: a line verification
    writes about a change sent earlier in the run (not a send of its own). ``warnings``: what
    the service warned when it took the change."""
    if result not in RESULTS:
        raise ValueError(f"journal result must be one of {sorted(RESULTS)}, not {result!r}")
    entry = {
        "run_id": run_id,
        "tenant": tenant,
        "event": "change",
        "change": dict(change),
        "result": result,
        "error": mask_secrets(str(error)) if error is not None else None,
        "correlation_id": getattr(error, "correlation_id", None) or correlation_id,
        "user_count": user_count,
    }
    if operation_id is not None:
        entry["operation_id"] = operation_id
    if verification:
        entry["verification"] = True
    said = [mask_secrets(str(w)) for w in warnings]
    if said:
        entry["warnings"] = said
    return entry


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def entry_time(entry: Mapping[str, Any]) -> dt.datetime:
    """When a journal line was written (aware, UTC); the epoch's start when unreadable."""
    try:
        t = dt.datetime.fromisoformat(str(entry.get("time")))
    except ValueError:
        return dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def _line_time(raw: bytes) -> dt.datetime | None:
    """The time of a line as ``write_many`` writes it (first key), without parsing the JSON;
    None when the line does not start that way."""
    if not raw.startswith(_TIME_PREFIX):
        return None
    end = raw.find(b'"', len(_TIME_PREFIX))
    try:
        t = dt.datetime.fromisoformat(raw[len(_TIME_PREFIX) : end].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def _open_private(path: Path) -> int:
    """``path`` opened for appending, created 0600 if new and made 0600 if it was not (the
    journal names people (UPNs) and what they may do). A symlink at ``path`` is refused, not
    followed: it could point the audit trail at any file the user can write."""
    # Read and write: the last byte is read to end a torn line first (see ``write_many``).
    flags = os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    if not hasattr(os, "O_NOFOLLOW") and path.is_symlink():  # Windows: no O_NOFOLLOW
        raise OSError(errno.ELOOP, "the journal path is a symlink", str(path))
    try:
        try:
            fd = os.open(path, flags | os.O_RDWR, 0o600)
        except PermissionError:  # a file we may append to but not read
            fd = os.open(path, flags | os.O_WRONLY, 0o600)
    except OSError as exc:
        if path.is_symlink():
            raise OSError(exc.errno, "the journal path is a symlink", str(path)) from exc
        raise
    try:
        info = os.fstat(fd)
        # Not a device (/dev/null cannot be synced, and must not be made 0600) nor a FIFO.
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if stat.S_IMODE(info.st_mode) != 0o600 and hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _ends_a_line(fd: int) -> bool:
    """Whether the file is empty or ends with a newline (True when it cannot be read)."""
    end = os.lseek(fd, 0, os.SEEK_END)
    if not end:
        return True
    os.lseek(fd, end - 1, os.SEEK_SET)
    try:
        return os.read(fd, 1) == b"\n"
    except OSError:
        return True


class Journal:
    """Appends to the JSON-lines file at ``path`` (parent directories are created)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        now: Callable[[], dt.datetime] = _utc_now,
        run_by: RunBy | None = None,
    ):
        self.path = Path(path)
        self._now = now
        self.run_by = run_by  # who runs the applies written here, and why (run_started)

    def write_many(self, entries: Iterable[Mapping[str, Any]]) -> None:
        """Append ``entries`` (one line each) and fsync once: a bulk step's per-user lines are
        durable together before the next tenant write, without one disk sync per user."""
        time = self._now().astimezone(dt.timezone.utc).isoformat(timespec="milliseconds")
        data = "".join(
            json.dumps({"time": time, **entry}, default=str, ensure_ascii=False) + "\n"
            for entry in entries
        ).encode("utf-8")
        if not data:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = _open_private(self.path)
            try:
                # A killed run (or a crash's debris) can leave the file without a final newline:
                # start on a line of our own, or the first line written now would be torn too.
                if not _ends_a_line(fd):
                    data = b"\n" + data
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise ConfigError(
                f"cannot write the apply journal {self.path}: {exc.strerror or exc}; "
                "set BRIDGE_JOURNAL to a writable file (not a symlink)"
            ) from exc

    def write(self, entry: Mapping[str, Any]) -> None:
        self.write_many([entry])

    # ------------------------------------------------------------------ reading back

    def now(self) -> dt.datetime:
        return self._now().astimezone(dt.timezone.utc)

    def entries(self) -> Iterator[dict[str, Any]]:
        """Every readable line, oldest first (a torn last line from a killed run, and a line
        longer than ``MAX_LINE_BYTES``, are skipped)."""
        for raw in reversed(list(self._lines_backwards())):
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if isinstance(entry, dict):
                yield entry

    def writes_after(self, tenant: str | None, since: dt.datetime) -> dict[str, Any] | None:
        """The first change line for ``tenant`` after ``since`` that records a write sent then
        (started, ok, or pending when written at send time), or None. Lines that send nothing
        are not counted: a change held back as pending from an earlier send (``not_sent``: a
        scheduled apply re-records a propagating re-rank every run for up to 24 h) and
        verification's pending lines (they re-record a send journaled earlier in that run)."""
        first = None
        for entry, written in self._changes_since(tenant, since):
            if _is_send(entry) and written > since:
                first = entry  # newest first: the last one found is the first written
        return first

    def group_writes(self, tenant: str | None, since: dt.datetime) -> dict[str, dict[str, Any]]:
        """group id -> the last group assignment line for ``tenant`` since ``since`` that was
        accepted (ok) or left pending, with the run that wrote it: what teams-bridge last sent
        for each group (lines of changes a run held back, ``not_sent``, are not sends).
        A line dated in the future comes back with ``time`` the latest it can have been written
        (see ``_changes_since``) and its own time as ``time_written``.
        """
        out: dict[str, dict[str, Any]] = {}
        for entry, written in self._changes_since(tenant, since):
            change = entry.get("change")
            if (
                isinstance(change, dict)
                and change.get("kind") in _GROUP_KINDS
                and entry.get("result") in ("ok", "pending")
                and not change.get("not_sent")
                and written >= since
            ):
                # Newest first: the first line found for a group is its last.
                group = str(change.get("group_id"))
                if group not in out:
                    if written != entry_time(entry):
                        entry = {
                            **entry,
                            "time": written.isoformat(timespec="milliseconds"),
                            "time_written": entry.get("time"),
                        }
                    out[group] = entry
        return out

    def _changes_since(
        self, tenant: str | None, since: dt.datetime
    ) -> Iterator[tuple[dict[str, Any], dt.datetime]]:
        """Change lines for ``tenant`` with when each was written, newest first, back to
        ``since`` (less ``CLOCK_SLACK``).

        A journal grows by a line per user per apply and is never truncated, while apply only
        asks about the last hours: the file is read backwards in blocks and the scan stops at
        the first line written well before ``since`` (lines are appended in time order; the
        slack allows for a clock stepped back between runs). Lines that cannot be changes, or
        are for another tenant, are skipped before they are parsed.

        When a line was written: its own time, unless that is later than now (plus
        ``CLOCK_SKEW``): a clock that was ahead. Such a line was written before every line after
        it in the file, so it is taken as written at the earliest of their times, or now when
        none follows. Trusting it instead would keep it "recent" until the clock catches up:
        a re-rank held back as pending, or every saved plan refused as stale, for years."""
        want = (tenant or "").casefold()
        stop = since - CLOCK_SLACK
        now = self.now()
        future = now + CLOCK_SKEW
        later: dt.datetime | None = None  # the earliest time of the lines after this one
        for raw in self._lines_backwards():
            written = _line_time(raw)
            if written is not None and written < stop:
                return
            if b'"change"' not in raw or (want.isascii() and want.encode() not in raw.lower()):
                if written is not None:
                    later = written if later is None else min(later, written)
                continue
            try:
                entry = json.loads(raw)
            except ValueError:
                continue  # a torn line from a killed run
            if not isinstance(entry, dict):
                continue
            own = written if written is not None else entry_time(entry)
            if written is None and own < stop:
                return
            at = own
            if own > future:
                at = min(later or now, now)
                log.debug("journal line dated %s, later than now: taken as %s", own, at)
            later = own if later is None else min(later, own)
            if entry.get("event") == "change" and str(entry.get("tenant") or "").casefold() == want:
                yield entry, at

    def _lines_backwards(self) -> Iterator[bytes]:
        """The file's non-empty lines, last first, read in blocks from the end. Linear in the
        file's size: the pieces of a line that spans blocks are joined once, when its start is
        found; a line longer than ``MAX_LINE_BYTES`` is dropped piece by piece, never joined."""
        try:
            # Non-blocking: a FIFO at the path would otherwise wait for a writer forever
            # (holding the tenant lock); it is refused below like any other non-regular file.
            flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
            fd = os.open(self.path, flags)
        except (FileNotFoundError, NotADirectoryError):
            return  # nothing written yet (a path that cannot be written fails on the write)
        except OSError as exc:
            raise ConfigError(f"cannot read the apply journal {self.path}: {exc}") from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ConfigError(
                f"cannot read the apply journal {self.path}: not a regular file (a FIFO, a "
                "device or a directory?); give --journal (or BRIDGE_JOURNAL) a file path"
            )
        with os.fdopen(fd, "rb") as f:
            pos = f.seek(0, os.SEEK_END)
            tail: list[bytes] = []  # the end of the current line, last piece first
            tail_size = 0
            skipped = 0  # bytes of the current line dropped as too long
            while pos > 0:
                size = min(_BLOCK, pos)
                pos -= size
                f.seek(pos)
                block = f.read(size)
                end = len(block)
                cut = block.rfind(b"\n", 0, end)
                while cut >= 0:
                    piece = block[cut + 1 : end]
                    if skipped or tail_size + len(piece) > MAX_LINE_BYTES:
                        self._skipped(pos + cut + 1, skipped + tail_size + len(piece))
                    else:
                        tail.append(piece)
                        line = b"".join(reversed(tail))
                        if line.strip():
                            yield line
                    tail, tail_size, skipped = [], 0, 0
                    end = cut
                    cut = block.rfind(b"\n", 0, end)
                piece = block[:end]
                if skipped or tail_size + len(piece) > MAX_LINE_BYTES:
                    skipped += tail_size + len(piece)
                    tail, tail_size = [], 0
                elif piece:
                    tail.append(piece)
                    tail_size += len(piece)
            if skipped:
                self._skipped(0, skipped + tail_size)
            elif tail:
                line = b"".join(reversed(tail))
                if line.strip():
                    yield line

    def _skipped(self, offset: int, size: int) -> None:
        log.warning(
            "apply journal %s: skipped a line of %d bytes at byte %d (longer than any line "
            "teams-bridge writes: debris from a crash?)",
            self.path,
            size,
            offset,
        )

    # ------------------------------------------------------------------ the three line kinds

    def run_started(
        self,
        run_id: str,
        tenant: str | None,
        *,
        changes: int,
        summary: Mapping[str, int],
        state_checksum: str,
        desired_sha256: str,
    ) -> None:
        by = self.run_by
        self.write(
            {
                "run_id": run_id,
                "tenant": tenant,
                "event": "run_started",
                "changes": changes,
                "summary": dict(summary),
                "state_checksum": state_checksum,
                "desired_sha256": desired_sha256,
                "operator": by.operator if by else None,
                "app_id": by.app_id if by else None,
                "reason": by.reason if by else None,
                "ticket": by.ticket if by else None,
                "host": (by.host if by else None) or socket.gethostname(),
                "pid": os.getpid(),
            }
        )

    def change(
        self,
        run_id: str,
        tenant: str | None,
        change: Mapping[str, Any],
        result: str,
        *,
        error: BaseException | str | None = None,
        user_count: int | None = None,
    ) -> None:
        self.write(change_entry(run_id, tenant, change, result, error=error, user_count=user_count))

    def run_finished(
        self, run_id: str, tenant: str | None, result: str, **counts: int | float
    ) -> None:
        self.write(
            {
                "run_id": run_id,
                "tenant": tenant,
                "event": "run_finished",
                "result": result,
                **counts,
            }
        )


class RunJournal:
    """The lines of one apply run, and the one place they are built: ``run_started``, a change
    ``started``, ``ok``, ``failed`` or ``pending``, a ``restore`` of a group's old assignment,
    and ``finished``. Without a journal (None) it writes nothing.

    ``line`` builds a change line without writing it, for the steps that write many at once (a
    bulk call's summary and one line per user, durable together: see ``Journal.write_many``)."""

    def __init__(self, journal: Journal | None, run_id: str, tenant: str | None):
        self.journal = journal
        self.run_id = run_id
        self.tenant = tenant

    def run_started(
        self,
        *,
        changes: int,
        summary: Mapping[str, int],
        state_checksum: str,
        desired_sha256: str,
    ) -> None:
        if self.journal is not None:
            self.journal.run_started(
                self.run_id,
                self.tenant,
                changes=changes,
                summary=summary,
                state_checksum=state_checksum,
                desired_sha256=desired_sha256,
            )

    def line(
        self,
        change: Mapping[str, Any],
        result: str,
        error: BaseException | str | None = None,
        *,
        user_count: int | None = None,
        correlation_id: str | None = None,
        operation_id: str | None = None,
        verification: bool = False,
        warnings: Iterable[str] = (),
    ) -> dict[str, Any]:
        return change_entry(
            self.run_id,
            self.tenant,
            change,
            result,
            error=error,
            user_count=user_count,
            correlation_id=correlation_id,
            operation_id=operation_id,
            verification=verification,
            warnings=warnings,
        )

    def write(self, lines: Iterable[Mapping[str, Any]]) -> None:
        if self.journal is not None:
            self.journal.write_many(lines)

    def started(self, change: Mapping[str, Any], **kw: Any) -> None:
        self.write([self.line(change, "started", **kw)])

    def ok(self, change: Mapping[str, Any], error: str | None = None, **kw: Any) -> None:
        self.write([self.line(change, "ok", error, **kw)])

    def failed(self, change: Mapping[str, Any], error: BaseException | str, **kw: Any) -> None:
        self.write([self.line(change, "failed", error, **kw)])

    def pending(self, change: Mapping[str, Any], why: str, **kw: Any) -> None:
        self.write([self.line(change, "pending", why, **kw)])

    def restore(
        self,
        group_id: str,
        group: str | None,
        policy: str,
        rank: int,
        error: BaseException | str | None = None,
        *,
        correlation_id: str | None = None,
    ) -> None:
        """Putting back the assignment a failed replacement removed: ok without ``error``."""
        change = {
            "kind": "restore_group_assignment",
            "group_id": group_id,
            "group": group,
            "policy": policy,
            "rank": rank,
        }
        result = "ok" if error is None else "failed"
        self.write([self.line(change, result, error, correlation_id=correlation_id)])

    def finished(self, result: str, **counts: int | float) -> None:
        if self.journal is not None:
            self.journal.run_finished(self.run_id, self.tenant, result, **counts)

    def now(self) -> dt.datetime:
        assert self.journal is not None
        return self.journal.now()
