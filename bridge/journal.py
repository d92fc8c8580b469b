"""The apply journal: an append-only JSON-lines record of every apply run, kept so an admin (or an
auditor) can see what was changed, when, by which run, and what failed.

One object per line, every line with ``time`` (UTC, ISO 8601), ``run_id``, ``tenant`` and
``event``:

- ``run_started``: ``changes`` (count), ``summary``, ``state_checksum``, ``desired_sha256``,
  ``host``, ``pid``;
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
the process dies. Change data carries no secrets; error texts come from services, so anything that
looks like a bearer token or a JWT is masked before it is written.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .redact import redact

RESULTS = frozenset({"started", "ok", "failed", "pending", "not_attempted"})
# Journal results that mean the service may have carried the write out.
_SENT = frozenset({"started", "ok", "pending"})
# Reading back stops this long before the time asked about: lines are appended in time order,
# but a clock stepped back between two runs must not hide the later run's writes.
CLOCK_SLACK = dt.timedelta(hours=1)
_BLOCK = 1 << 16
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


class Journal:
    """Appends to the JSON-lines file at ``path`` (parent directories are created)."""

    def __init__(self, path: str | os.PathLike[str], *, now: Callable[[], dt.datetime] = _utc_now):
        self.path = Path(path)
        self._now = now

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
            # 0600: the journal names people (UPNs) and what they may do.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise ConfigError(
                f"cannot write the apply journal {self.path}: {exc.strerror or exc}; "
                "set BRIDGE_JOURNAL to a writable file"
            ) from exc

    def write(self, entry: Mapping[str, Any]) -> None:
        self.write_many([entry])

    # ------------------------------------------------------------------ reading back

    def now(self) -> dt.datetime:
        return self._now().astimezone(dt.timezone.utc)

    def entries(self) -> Iterator[dict[str, Any]]:
        """Every readable line, oldest first (a torn last line from a killed run is skipped)."""
        try:
            f = self.path.open(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            return  # nothing written yet (a path that cannot be written fails on the write)
        except OSError as exc:
            raise ConfigError(f"cannot read the apply journal {self.path}: {exc}") from exc
        with f:
            for line in f:
                try:
                    entry = json.loads(line)
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
        for entry in self._changes_since(tenant, since):
            if _is_send(entry) and entry_time(entry) > since:
                first = entry  # newest first: the last one found is the first written
        return first

    def group_writes(self, tenant: str | None, since: dt.datetime) -> dict[str, dict[str, Any]]:
        """group id -> the last group assignment line for ``tenant`` since ``since`` that was
        accepted (ok) or left pending, with the run that wrote it: what teams-bridge last sent
        for each group (lines of changes a run held back, ``not_sent``, are not sends)."""
        out: dict[str, dict[str, Any]] = {}
        for entry in self._changes_since(tenant, since):
            change = entry.get("change")
            if (
                isinstance(change, dict)
                and change.get("kind") in _GROUP_KINDS
                and entry.get("result") in ("ok", "pending")
                and not change.get("not_sent")
                and entry_time(entry) >= since
            ):
                # Newest first: the first line found for a group is its last.
                out.setdefault(str(change.get("group_id")), entry)
        return out

    def _changes_since(self, tenant: str | None, since: dt.datetime) -> Iterator[dict[str, Any]]:
        """Change lines for ``tenant``, newest first, back to ``since`` (less ``CLOCK_SLACK``).

        A journal grows by a line per user per apply and is never truncated, while apply only
        asks about the last hours: the file is read backwards in blocks and the scan stops at
        the first line written well before ``since`` (lines are appended in time order; the
        slack allows for a clock stepped back between runs). Lines that cannot be changes, or
        are for another tenant, are skipped before they are parsed."""
        want = (tenant or "").casefold()
        stop = since - CLOCK_SLACK
        for raw in self._lines_backwards():
            written = _line_time(raw)
            if written is not None and written < stop:
                return
            if b'"change"' not in raw or (want.isascii() and want.encode() not in raw.lower()):
                continue
            try:
                entry = json.loads(raw)
            except ValueError:
                continue  # a torn line from a killed run
            if not isinstance(entry, dict):
                continue
            if written is None and entry_time(entry) < stop:
                return
            if entry.get("event") == "change" and str(entry.get("tenant") or "").casefold() == want:
                yield entry

    def _lines_backwards(self) -> Iterator[bytes]:
        """The file's non-empty lines, last first, read in blocks from the end."""
        try:
            f = self.path.open("rb")
        except (FileNotFoundError, NotADirectoryError):
            return  # nothing written yet (a path that cannot be written fails on the write)
        except OSError as exc:
            raise ConfigError(f"cannot read the apply journal {self.path}: {exc}") from exc
        with f:
            pos = f.seek(0, os.SEEK_END)
            rest = b""
            while pos > 0:
                size = min(_BLOCK, pos)
                pos -= size
                f.seek(pos)
                lines = (f.read(size) + rest).split(b"\n")
                rest = lines[0]  # the start of a line the block before holds the rest of
                for line in reversed(lines[1:]):
                    if line.strip():
                        yield line
            if rest.strip():
                yield rest

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
        self.write(
            {
                "run_id": run_id,
                "tenant": tenant,
                "event": "run_started",
                "changes": changes,
                "summary": dict(summary),
                "state_checksum": state_checksum,
                "desired_sha256": desired_sha256,
                "host": socket.gethostname(),
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
