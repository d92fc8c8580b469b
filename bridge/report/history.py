"""Drift history in a SQLite file, so a report can say since when something has drifted and what
was fixed since the previous run.

``HistoryStore(path)``:
- ``annotate(report)`` fills ``report.first_seen`` (drift key -> when first seen, in the unbroken
  run of reports that showed it) and ``report.resolved`` (drift in the previous run, gone now), from
  the runs observed *before* ``report.observed`` (a snapshot's taken_at, else the report's
  time: runs are ordered by when the tenant was read); call it before rendering;
- ``record(report) -> run_id`` stores the run (time, tenant, desired sha, counts, exit code) and
  each drift item with its first-seen time;
- ``runs(limit)``, ``open_drift()``, ``resolved(limit)``, ``first_seen(key)`` read it back.

"The previous run" is the latest run of the same tenant *and the same desired file* observed
before this report. The file is identified by its path as given, normalised (``desired_key``), not
its SHA-256:
editing the file is the normal life of a desired state and must not restart every first-seen
time, while a run of another file for the same tenant (a pilot file, a second job) is a different
question and must not "resolve" the first file's drift. What is stored does not depend on
``--fail-on``: every object not in sync and every ``warning`` or ``error`` finding is recorded
(``info`` findings are explanations, never drift), so a run with a laxer ``--fail-on`` does not
resolve findings it merely does not count. A drift that goes away and comes back starts a new
first-seen time. History is ordered by the runs' times,
not by the order they were recorded: when two writers finish out of order (a report recorded
after a later one), the later runs of the same file are compared again with their new
predecessors, and their first-seen times and resolutions rewritten to match (a drift the late
run shows fixed starts a new first-seen time after it).

Several processes may write at once (a cron job and a person): WAL journal, a busy timeout, and
one short ``BEGIN IMMEDIATE`` transaction per ``record`` so the previous-run lookup and the
insert cannot interleave with another writer.

``HistoryStore(path, read_only=True)`` (the ``history`` command) opens the file read-only
(SQLite's ``mode=ro``): a database the user may read but not write (a compliance reader, a
read-only mount) can be shown. Every value read back is checked: a row a hand edit, another tool
or a damaged file left with a time that is not one, or a number that is text, is a
``HistoryError`` naming the database, the table, the row and the column, never a traceback.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .model import DriftReport, ResolvedItem, describe_item, utc
from .render_text import printable

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
BUSY_TIMEOUT_MS = 15_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL,
    generated_at TEXT NOT NULL,
    tool_version TEXT NOT NULL,
    desired_path TEXT NOT NULL,
    desired_sha256 TEXT NOT NULL,
    drift_count INTEGER NOT NULL,
    findings_error INTEGER NOT NULL,
    findings_warning INTEGER NOT NULL,
    findings_info INTEGER NOT NULL,
    in_sync INTEGER NOT NULL,
    exit_code INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_tenant ON runs (tenant_id, generated_at, id);
ALTER TABLE runs ADD COLUMN desired_key TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN observed_at TEXT NOT NULL DEFAULT '';
CREATE INDEX IF NOT EXISTS runs_by_file ON runs (tenant_id, desired_key, observed_at, id);
CREATE TABLE IF NOT EXISTS drift_items (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    object TEXT NOT NULL,
    expected TEXT,
    actual TEXT,
    first_seen TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE TABLE IF NOT EXISTS resolutions (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    resolved_at TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);
"""


class HistoryError(ConfigError):
    """The history database cannot be opened, read or written."""


class HistoryOutdatedError(HistoryError):
    """Opened read-only, the database has an older schema that only a writer can upgrade."""


@dataclass(frozen=True)
class RunRecord:
    id: int
    tenant_id: str | None
    generated_at: dt.datetime
    tool_version: str
    desired_path: str
    desired_sha256: str
    drift_count: int
    findings: dict[str, int]
    in_sync: bool
    exit_code: int
    observed_at: dt.datetime  # when the tenant state was read; history's order


@dataclass(frozen=True)
class OpenDrift:
    key: str
    tenant_id: str | None
    object: str
    expected: Any
    actual: Any
    first_seen: dt.datetime
    age: dt.timedelta


@dataclass(frozen=True)
class ResolvedRecord:
    key: str
    tenant_id: str | None
    first_seen: dt.datetime
    resolved_at: dt.datetime
    object: str | None = None  # what it was in the run before (None: not kept then)
    expected: Any = None
    actual: Any = None

    def describe(self) -> str:
        return describe_item(self.key, self.object, self.expected, self.actual)


def _ts(t: dt.datetime) -> str:
    # One fixed-width format, so text order is time order in SQL (the year padded by hand:
    # strftime's %Y does not pad years before 1000 on every platform).
    t = utc(t)
    return f"{t.year:04d}-" + t.strftime("%m-%dT%H:%M:%S.%fZ")


def _parse(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)


class _BadValue(Exception):
    """A value read back that is not what teams-bridge writes there."""

    def __init__(self, table: str, row: Any, column: str, value: Any, wanted: str):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        super().__init__(f"table {table}, row {row}, column {column}: {shown} is not {wanted}")


def _at(value: Any, table: str, row: Any, column: str) -> dt.datetime:
    """A stored time, or ``_BadValue``."""
    try:
        return _parse(value)
    except (TypeError, ValueError):
        raise _BadValue(table, row, column, value, "a time as teams-bridge writes it") from None


def _int(value: Any, table: str, row: Any, column: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _BadValue(table, row, column, value, "a whole number")


def _text(value: Any, table: str, row: Any, column: str) -> str:
    if isinstance(value, str):
        return value
    raise _BadValue(table, row, column, value, "text")


def _json_value(value: Any, table: str, row: Any, column: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except (TypeError, ValueError, RecursionError):
        raise _BadValue(table, row, column, value, "JSON") from None


def _tenant(report_tenant: str | None) -> str:
    return report_tenant or ""


def desired_key(path: str) -> str:
    """Which desired file a run checked: the path as given, normalised (``./a//b.yaml`` is
    ``a/b.yaml``) but never resolved against the working directory or symlinks. A scheduled job
    run from a fresh checkout each time (CI agents' ``_work/N/s``, git-sync's temporary
    directories) names its file by the same relative path every run, and so keeps one history;
    and a migration or a read-only ``history`` run from another directory cannot re-key it."""
    return os.path.normpath(path) if path else ""


# Tenant-wide rules as of history version 2, whose findings' keys lost their list of policies
# (``rule:<id>:<policies>`` -> ``rule:<id>``). A fixed list: it describes old databases.
_TENANT_WIDE_RULES = (
    "read-receipts-consistency",
    "no-priority-anywhere",
    "read-receipts-group-size",
)


def _use_wal(db: sqlite3.Connection, attempts: int = 50) -> None:
    """Switch to WAL. Two processes opening a new file at once can both try; SQLite answers the
    loser "database is locked" at once, without its busy handler, so wait and look again."""
    for attempt in range(attempts):
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def _statement(statements: list[str], text: str) -> str:
    """The one statement of the schema containing ``text``."""
    (found,) = (s for s in statements if text in s)
    return found


class HistoryStore:
    """A drift history database at ``path`` (created on first use). Not shared across threads:
    open one store per thread or process."""

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        if read_only:
            self._db = self._open_read_only()
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None
            )
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            _use_wal(self._db)
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            with self._write():
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                self._refuse_newer(version)
                if version < SCHEMA_VERSION:
                    self._migrate(version)
        except (sqlite3.Error, OSError) as exc:
            raise HistoryError(
                f"cannot open history database {self.path}: {exc}; check the path is a "
                "writable file on a local disk (SQLite locking does not work on every network "
                "share)"
            ) from exc

    def _refuse_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise HistoryError(
                f"history database {self.path} has schema version {version}, newer than "
                f"this teams-bridge reads ({SCHEMA_VERSION}): upgrade teams-bridge or "
                "use another --history file"
            )

    def _open_read_only(self) -> sqlite3.Connection:
        """The database opened read-only, never created, never changed. A WAL database in a
        directory the user cannot write, with no ``-shm`` file left, can only be opened as
        immutable (nobody can be writing it then: nobody may write there)."""
        uri = self.path.resolve().as_uri() + "?mode=ro"
        db: sqlite3.Connection | None = None
        try:
            for attempt in (uri, uri + "&immutable=1"):
                try:
                    db = sqlite3.connect(
                        attempt, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None
                    )
                    version = db.execute("PRAGMA user_version").fetchone()[0]
                    break
                except sqlite3.OperationalError:
                    if db is not None:
                        db.close()
                        db = None
                    if attempt != uri:
                        raise
            assert db is not None
        except (sqlite3.Error, OSError, ValueError) as exc:
            raise HistoryError(
                f"cannot read history database {self.path}: {exc}; check it is a teams-bridge "
                "history file you may read"
            ) from exc
        try:
            self._refuse_newer(version)
        except HistoryError:
            db.close()
            raise
        if version < SCHEMA_VERSION:
            db.close()
            raise HistoryOutdatedError(
                f"history database {self.path} was written by an older teams-bridge (schema "
                f"version {version}): run drift --history {self.path} once, as a user who may "
                "write it, to upgrade it"
            )
        return db

    def _migrate(self, version: int) -> None:
        statements = [t for t in _SCHEMA.split(";") if t.strip()]
        if version == 0:
            for statement in statements:
                self._db.execute(statement)
        if version in (1, 2):
            # Version 1 knew runs by tenant only. Version 2 databases written before observed_at
            # was added (without a version bump) have desired_key but no observed_at, and a
            # runs_by_file index on generated_at: add what is missing, by what the table holds.
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(runs)")}
            for column in ("desired_key", "observed_at"):
                if column not in columns:
                    self._db.execute(_statement(statements, f"ADD COLUMN {column} "))
            if "observed_at" not in columns:
                self._db.execute("UPDATE runs SET observed_at = generated_at")
            self._db.execute("DROP INDEX IF EXISTS runs_by_file")
            self._db.execute(_statement(statements, "INDEX IF NOT EXISTS runs_by_file "))
            # Version 2 keyed a run's file by its resolved path, resolved in whichever process
            # opened the database first. Key every run by its path as given, as new runs are.
            rows = self._db.execute("SELECT id, desired_path FROM runs").fetchall()
            self._db.executemany(
                "UPDATE runs SET desired_key = ? WHERE id = ?",
                ((desired_key(path), run_id) for run_id, path in rows),
            )
            self._rekey_tenant_wide_findings()
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _rekey_tenant_wide_findings(self) -> None:
        """Old tenant-wide findings were keyed with the policies they listed; a finding whose
        list changed was recorded as resolved and new. Give them today's key (``rule:<id>``),
        join each unbroken run of them into one first-seen time, and drop the resolutions that
        were only a change of list, so upgrading shows an open finding still open since then."""
        new_keys = [f"rule:{rule_id}" for rule_id in _TENANT_WIDE_RULES]
        for key in new_keys:
            prefix = f"{key}:"
            for table in ("drift_items", "resolutions"):
                # One finding per rule per run, so at most one old key per run: OR REPLACE only
                # guards a hand-edited database.
                self._db.execute(
                    f"UPDATE OR REPLACE {table} SET key = ? WHERE substr(key, 1, ?) = ?",
                    (key, len(prefix), prefix),
                )
        marks = ",".join("?" * len(new_keys))
        runs = self._db.execute(
            "SELECT id, tenant_id, desired_key FROM runs ORDER BY tenant_id, desired_key, "
            "observed_at, id"
        ).fetchall()
        group: tuple[str, str] | None = None
        previous: dict[str, str] = {}
        for run_id, tenant, file_key in runs:
            if (tenant, file_key) != group:
                group, previous = (tenant, file_key), {}
            stored: dict[str, str] = dict(
                self._db.execute(
                    "SELECT key, first_seen FROM drift_items "
                    f"WHERE run_id = ? AND key IN ({marks})",
                    (run_id, *new_keys),
                ).fetchall()
            )
            current = {key: previous.get(key, seen) for key, seen in stored.items()}
            self._db.executemany(
                "UPDATE drift_items SET first_seen = ? WHERE run_id = ? AND key = ?",
                ((seen, run_id, key) for key, seen in current.items() if seen != stored[key]),
            )
            self._db.executemany(
                "DELETE FROM resolutions WHERE run_id = ? AND key = ?",
                ((run_id, key) for key in current),
            )
            self._db.executemany(
                "UPDATE resolutions SET first_seen = ? WHERE run_id = ? AND key = ?",
                ((seen, run_id, key) for key, seen in previous.items() if key not in current),
            )
            previous = current

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE takes the write lock up front: a second writer waits (busy timeout)
        # instead of failing halfway when it tries to upgrade a read lock.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _damaged(self, exc: _BadValue) -> HistoryError:
        return HistoryError(
            f"history database {self.path} holds a value teams-bridge did not write ({exc}): "
            "it was edited or damaged; correct or delete that row, or start a new --history file"
        )

    def _fail(self, action: str, exc: sqlite3.Error) -> HistoryError:
        return HistoryError(
            f"cannot {action} history database {self.path}: {exc}; if another teams-bridge run "
            "is writing to it, try again when it has finished"
        )

    # ------------------------------------------------------------------ writing

    def annotate(self, report: DriftReport) -> DriftReport:
        """Fill ``report.first_seen`` and ``report.resolved`` from the runs recorded before it.
        Returns the same report."""
        tenant, file_key = _tenant(report.tenant_id), desired_key(report.desired_path)
        try:
            previous = self._previous_items(tenant, file_key, report.observed)
            first_seen, resolved = _compare(report, previous)
            resolved = self._described(resolved, tenant, file_key, report.observed)
        except sqlite3.Error as exc:
            raise self._fail("read", exc) from exc
        except _BadValue as exc:
            raise self._damaged(exc) from None
        report.first_seen = first_seen
        report.resolved = resolved
        return report

    def record(self, report: DriftReport, *, exit_code: int | None = None) -> int:
        """Store ``report`` and its drift items; returns the run id. Also fills the report's
        first-seen times and resolved items, as ``annotate`` does. ``exit_code`` is what the run
        really exited with when that is not the report's (a failed notification: 1)."""
        tenant = _tenant(report.tenant_id)
        file_key = desired_key(report.desired_path)
        summary = report.summary()["findings"]
        items = report.history_items()
        try:
            with self._write() as db:
                previous = self._previous_items(tenant, file_key, report.observed)
                first_seen, resolved = _compare(report, previous)
                resolved = self._described(resolved, tenant, file_key, report.observed)
                cur = db.execute(
                    "INSERT INTO runs (tenant_id, generated_at, tool_version, desired_path, "
                    "desired_sha256, drift_count, findings_error, findings_warning, "
                    "findings_info, in_sync, exit_code, desired_key, observed_at) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        tenant,
                        _ts(report.generated_at),
                        report.tool_version,
                        report.desired_path,
                        report.desired_sha256,
                        report.drift_count,
                        summary["error"],
                        summary["warning"],
                        summary["info"],
                        int(report.in_sync),
                        report.exit_code if exit_code is None else exit_code,
                        file_key,
                        _ts(report.observed),
                    ),
                )
                run_id = int(cur.lastrowid or 0)
                db.executemany(
                    "INSERT INTO drift_items (run_id, key, kind, object, expected, actual, "
                    "first_seen) VALUES (?,?,?,?,?,?,?)",
                    (
                        (
                            run_id,
                            i.key,
                            i.kind,
                            i.object,
                            _json(i.expected),
                            _json(i.actual),
                            _ts(first_seen[i.key]),
                        )
                        for i in items
                    ),
                )
                db.executemany(
                    "INSERT INTO resolutions (run_id, key, first_seen, resolved_at) "
                    "VALUES (?,?,?,?)",
                    ((run_id, r.key, _ts(r.first_seen), _ts(r.resolved_at)) for r in resolved),
                )
                self._recompute_later(tenant, file_key, report.observed, first_seen)
        except sqlite3.Error as exc:
            raise self._fail("write to", exc) from exc
        except _BadValue as exc:
            raise self._damaged(exc) from None
        report.first_seen, report.resolved = first_seen, resolved
        log.info(
            "recorded drift run %d (%d drift item(s), %d resolved) in %s",
            run_id,
            len(items),
            len(resolved),
            self.path,
        )
        return run_id

    def _recompute_later(
        self, tenant: str, file_key: str, when: dt.datetime, first_seen: dict[str, dt.datetime]
    ) -> None:
        """A run recorded after later ones (two writers finishing out of order): history is
        ordered by time, not by recording, so each later run of the same file is compared
        again with its new predecessor. Its first-seen times and resolutions are rewritten,
        so no key is shown resolved at one time and open since before it at a later one."""
        later = self._db.execute(
            "SELECT id, observed_at FROM runs WHERE tenant_id = ? AND desired_key = ? "
            "AND observed_at > ? ORDER BY observed_at, id",
            (tenant, file_key, _ts(when)),
        ).fetchall()
        previous = dict(first_seen)
        for run_id, generated in later:
            at = _at(generated, "runs", run_id, "observed_at")
            stored = {
                key: _at(seen, "drift_items", f"{run_id}/{key}", "first_seen")
                for key, seen in self._db.execute(
                    "SELECT key, first_seen FROM drift_items WHERE run_id = ?", (run_id,)
                )
            }
            recomputed = {key: previous.get(key, at) for key in stored}
            self._db.executemany(
                "UPDATE drift_items SET first_seen = ? WHERE run_id = ? AND key = ?",
                (
                    (_ts(seen), run_id, key)
                    for key, seen in recomputed.items()
                    if seen != stored[key]
                ),
            )
            self._db.execute("DELETE FROM resolutions WHERE run_id = ?", (run_id,))
            self._db.executemany(
                "INSERT INTO resolutions (run_id, key, first_seen, resolved_at) VALUES (?,?,?,?)",
                (
                    (run_id, key, _ts(seen), generated)
                    for key, seen in sorted(previous.items())
                    if key not in stored
                ),
            )
            previous = recomputed

    # ------------------------------------------------------------------ reading

    def _previous_items(
        self, tenant: str, file_key: str, before: dt.datetime
    ) -> dict[str, dt.datetime]:
        row = self._db.execute(
            "SELECT id FROM runs WHERE tenant_id = ? AND desired_key = ? AND observed_at < ? "
            "ORDER BY observed_at DESC, id DESC LIMIT 1",
            (tenant, file_key, _ts(before)),
        ).fetchone()
        if row is None:
            return {}
        return {
            key: _at(seen, "drift_items", f"{row[0]}/{key}", "first_seen")
            for key, seen in self._db.execute(
                "SELECT key, first_seen FROM drift_items WHERE run_id = ?", (row[0],)
            )
        }

    def _described(
        self, resolved: list[ResolvedItem], tenant: str, file_key: str, before: dt.datetime
    ) -> list[ResolvedItem]:
        """``resolved`` with what each item was in the previous run (its object, the value
        wanted and the value it had), for people: not ``group:36f675cc-...``."""
        if not resolved:
            return resolved
        row = self._db.execute(
            "SELECT id FROM runs WHERE tenant_id = ? AND desired_key = ? AND observed_at < ? "
            "ORDER BY observed_at DESC, id DESC LIMIT 1",
            (tenant, file_key, _ts(before)),
        ).fetchone()
        if row is None:
            return resolved
        was = {
            key: (_named(kind, key, obj), exp, act)
            for key, kind, obj, exp, act in self._db.execute(
                "SELECT key, kind, object, expected, actual FROM drift_items WHERE run_id = ?",
                (row[0],),
            )
        }
        out = []
        for r in resolved:
            if r.key in was:
                obj, exp, act = was[r.key]
                where = ("drift_items", f"{row[0]}/{r.key}")
                r = dataclasses.replace(
                    r,
                    object=_text(obj, *where, "object"),
                    expected=_json_value(exp, *where, "expected"),
                    actual=_json_value(act, *where, "actual"),
                )
            out.append(r)
        return out

    def runs(self, limit: int = 20, tenant_id: str | None = None) -> list[RunRecord]:
        """The latest runs, newest first (of one tenant when ``tenant_id`` is given)."""
        where, args = ("WHERE tenant_id = ?", [tenant_id]) if tenant_id is not None else ("", [])
        try:
            rows = self._db.execute(
                "SELECT id, tenant_id, generated_at, tool_version, desired_path, desired_sha256, "
                "drift_count, findings_error, findings_warning, findings_info, in_sync, exit_code, "
                f"observed_at FROM runs {where} ORDER BY observed_at DESC, id DESC LIMIT ?",
                [*args, limit],
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._fail("read", exc) from exc
        try:
            return [_run_record(r) for r in rows]
        except _BadValue as exc:
            raise self._damaged(exc) from None

    def open_drift(
        self, tenant_id: str | None = None, now: dt.datetime | None = None
    ) -> list[OpenDrift]:
        """Drift items of the latest run of each tenant and desired file, oldest first, with their
        age at ``now``."""
        now = utc(now or dt.datetime.now(dt.timezone.utc))
        tenant_filter, args = ("AND r.tenant_id = ?", [tenant_id]) if tenant_id else ("", [])
        try:
            rows = self._db.execute(
                "SELECT d.key, r.tenant_id, d.kind, d.object, d.expected, d.actual, d.first_seen "
                "FROM drift_items d JOIN runs r ON r.id = d.run_id "
                "WHERE r.id IN (SELECT (SELECT id FROM runs x WHERE x.tenant_id = t.tenant_id "
                "AND x.desired_key = t.desired_key ORDER BY observed_at DESC, id DESC LIMIT 1) "
                "FROM (SELECT DISTINCT tenant_id, desired_key FROM runs) t) "
                f"{tenant_filter} ORDER BY d.first_seen, d.key",
                args,
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._fail("read", exc) from exc
        out = []
        try:
            for key, tenant, kind, obj, exp, act, seen in rows:
                where = ("drift_items", key)
                first = _at(seen, *where, "first_seen")
                out.append(
                    OpenDrift(
                        _text(key, *where, "key"),
                        tenant or None,
                        _named(kind, key, _text(obj, *where, "object")),
                        _json_value(exp, *where, "expected"),
                        _json_value(act, *where, "actual"),
                        first,
                        now - first,
                    )
                )
        except _BadValue as exc:
            raise self._damaged(exc) from None
        return out

    def resolved(self, limit: int = 50, tenant_id: str | None = None) -> list[ResolvedRecord]:
        """Drift items that went away, latest resolution first."""
        tenant_filter, args = ("WHERE r.tenant_id = ?", [tenant_id]) if tenant_id else ("", [])
        try:
            rows = self._db.execute(
                "SELECT s.key, r.tenant_id, s.first_seen, s.resolved_at, d.kind, d.object, "
                "d.expected, d.actual FROM resolutions s JOIN runs r ON r.id = s.run_id "
                # What it was: the item in the run before the one that found it resolved.
                "LEFT JOIN drift_items d ON d.key = s.key AND d.run_id = (SELECT p.id FROM runs p "
                "WHERE p.tenant_id = r.tenant_id AND p.desired_key = r.desired_key AND "
                "p.observed_at < r.observed_at ORDER BY p.observed_at DESC, p.id DESC LIMIT 1) "
                f"{tenant_filter} "
                "ORDER BY s.resolved_at DESC, s.key LIMIT ?",
                [*args, limit],
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._fail("read", exc) from exc
        try:
            return [
                ResolvedRecord(
                    _text(k, "resolutions", k, "key"),
                    t or None,
                    _at(f, "resolutions", k, "first_seen"),
                    _at(r, "resolutions", k, "resolved_at"),
                    _named(kind, k, _text(obj, "drift_items", k, "object")) if obj else None,
                    _json_value(exp, "drift_items", k, "expected") if obj else None,
                    _json_value(act, "drift_items", k, "actual") if obj else None,
                )
                for k, t, f, r, kind, obj, exp, act in rows
            ]
        except _BadValue as exc:
            raise self._damaged(exc) from None

    def first_seen(self, key: str, tenant_id: str | None = None) -> dt.datetime | None:
        """When ``key`` was first seen, as of the latest run that showed it; None if never."""
        tenant_filter, args = ("AND r.tenant_id = ?", [tenant_id]) if tenant_id else ("", [])
        try:
            row = self._db.execute(
                "SELECT d.first_seen FROM drift_items d JOIN runs r ON r.id = d.run_id "
                f"WHERE d.key = ? {tenant_filter} ORDER BY r.observed_at DESC, r.id DESC LIMIT 1",
                [key, *args],
            ).fetchone()
        except sqlite3.Error as exc:
            raise self._fail("read", exc) from exc
        try:
            return _at(row[0], "drift_items", key, "first_seen") if row else None
        except _BadValue as exc:
            raise self._damaged(exc) from None


def _run_record(r: Any) -> RunRecord:
    run = r[0]

    def text(i: int, column: str) -> str:
        return _text(r[i], "runs", run, column)

    def number(i: int, column: str) -> int:
        return _int(r[i], "runs", run, column)

    return RunRecord(
        _int(run, "runs", run, "id"),
        (text(1, "tenant_id") if r[1] is not None else "") or None,
        _at(r[2], "runs", run, "generated_at"),
        text(3, "tool_version"),
        text(4, "desired_path"),
        text(5, "desired_sha256"),
        number(6, "drift_count"),
        {
            "error": number(7, "findings_error"),
            "warning": number(8, "findings_warning"),
            "info": number(9, "findings_info"),
        },
        bool(number(10, "in_sync")),
        number(11, "exit_code"),
        _at(r[12], "runs", run, "observed_at"),
    )


def _compare(
    report: DriftReport, previous: dict[str, dt.datetime]
) -> tuple[dict[str, dt.datetime], list[ResolvedItem]]:
    now = report.observed
    current = {i.key for i in report.history_items()}
    first_seen = {key: previous.get(key, now) for key in current}
    resolved = [
        ResolvedItem(key, seen, now) for key, seen in sorted(previous.items()) if key not in current
    ]
    return first_seen, resolved


def _named(kind: object, key: str, obj: str) -> str:
    """What people call a recorded drift item: its object, and for a setting the setting's name
    (the last part of its key ``policy:<key>:<Setting>``)."""
    if kind == "policy_setting" and ":" in key:
        return f"{obj} {key.rsplit(':', 1)[1]}"
    return obj


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def render_history(
    store: HistoryStore, limit: int = 20, now: dt.datetime | None = None
) -> tuple[str, dict[str, Any]]:
    """What ``teams-bridge history`` shows: the latest runs, the drift still open with its age,
    and recent resolutions, as terminal text (ending in a newline) and as JSON data."""
    now = utc(now or dt.datetime.now(dt.timezone.utc))
    runs = store.runs(limit)
    open_items = store.open_drift(now=now)
    resolved = store.resolved(limit)

    def iso(t: dt.datetime) -> str:
        return utc(t).isoformat(timespec="seconds").replace("+00:00", "Z")

    data: dict[str, Any] = {
        "runs": [
            {
                "id": r.id,
                "tenant_id": r.tenant_id,
                "generated_at": iso(r.generated_at),
                "observed_at": iso(r.observed_at),
                "tool_version": r.tool_version,
                "desired_path": r.desired_path,
                "desired_sha256": r.desired_sha256,
                "drift_count": r.drift_count,
                "findings": r.findings,
                "in_sync": r.in_sync,
                "exit_code": r.exit_code,
            }
            for r in runs
        ],
        "open_drift": [
            {
                "key": o.key,
                "tenant_id": o.tenant_id,
                "object": o.object,
                "expected": o.expected,
                "actual": o.actual,
                "first_seen": iso(o.first_seen),
                "age_seconds": int(o.age.total_seconds()),
            }
            for o in open_items
        ],
        "resolved": [
            {
                "key": r.key,
                "tenant_id": r.tenant_id,
                "object": r.object,
                "expected": r.expected,
                "actual": r.actual,
                "first_seen": iso(r.first_seen),
                "resolved_at": iso(r.resolved_at),
            }
            for r in resolved
        ],
    }
    lines = [f"Runs (latest {limit}):"]
    if not runs:
        lines.append("  none recorded yet")
    for r in runs:
        verdict = "in sync" if r.in_sync else f"{r.drift_count} drifted"
        lines.append(
            f"  #{r.id:<5} {utc(r.observed_at):%Y-%m-%d %H:%M} UTC  {r.tenant_id or '(unknown)'}  "
            f"{verdict}, findings {r.findings['error']}E/{r.findings['warning']}W  "
            f"exit {r.exit_code}  {r.desired_path} ({r.desired_sha256[:12] or '-'})"
        )
    lines.append("")
    lines.append(f"Open drift ({len(open_items)}):")
    for o in open_items:
        lines.append(
            f"  {describe_item(o.key, o.object, o.expected, o.actual)}  first seen "
            f"{utc(o.first_seen):%Y-%m-%d %H:%M} UTC, open {_age(o.age)}"
        )
    if resolved:
        lines.append("")
        lines.append(f"Recently resolved ({len(resolved)}):")
        for done in resolved:
            lines.append(
                f"  {done.describe()}  first seen {utc(done.first_seen):%Y-%m-%d %H:%M} UTC, "
                f"resolved {utc(done.resolved_at):%Y-%m-%d %H:%M} UTC"
            )
    # Keys, tenant ids and paths are tenant or user text: nothing in them may drive a terminal.
    return "\n".join(printable(line) for line in lines) + "\n", data


def _age(age: dt.timedelta) -> str:
    if age.days:
        return f"{age.days}d {age.seconds // 3600}h"
    if age.seconds >= 3600:
        return f"{age.seconds // 3600}h {age.seconds % 3600 // 60}m"
    return f"{age.seconds // 60}m"
