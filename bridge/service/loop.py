"""The reconcile loop: one run at a time, every ``interval`` (with jitter), each within a time-out,
sooner after a failure (exponential back-off up to the interval), until stopped.

A run is ``Reconciler.run``: drift through ``commands.run_drift``; in apply mode, when there is
something to change, ``commands.run_apply`` (never forced: a plan over the safety limits is a
``refused`` run) and a second drift read to report what the tenant shows afterwards.

Runs happen on a worker thread; the thread that called ``run_forever`` waits for it, so a signal
handler there (SIGTERM) can ask the loop to stop. Stopping and the time-out are cooperative, at
the next request while reading and at the next step while writing (``RunGuard``): a write under
way is finished and journaled, the apply's run is closed in the journal as interrupted, and no
other write is sent. The session (and so MSAL's token cache) lives as long as the service: tokens
are renewed by MSAL as they expire, over days.
"""

from __future__ import annotations

import logging
import math
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import http
from ..errors import BridgeError, ConfigError, UnsafePlanError
from ..redact import redact
from ..report.model import DriftReport
from ..report.notify import Poster
from .metrics import ServiceMetrics
from .notify import event_payload, post_event

log = logging.getLogger(__name__)

RUN_RESULTS = ("in_sync", "drift", "applied", "refused", "error")
MODES = ("drift", "apply")
SUCCESS = frozenset({"in_sync", "drift", "applied", "refused"})  # the tenant was read

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$", re.IGNORECASE)
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_DURATION = 7 * 24 * 3600.0
# A short interval (a test, a demo) must not cut a run of a large tenant short by default.
MIN_DEFAULT_TIMEOUT = 600.0


def parse_duration(text: str, option: str = "--interval", minimum: float = 1.0) -> float:
    """``90s``, ``15m``, ``1h`` or a bare number of seconds -> seconds; ``ConfigError`` naming
    ``option`` otherwise."""
    match = _DURATION.match(str(text))
    if not match:
        raise ConfigError(
            f"{option} {text!r}: not a duration; write it as 90s, 15m or 1h (a bare number is "
            "seconds)"
        )
    seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if not math.isfinite(seconds) or not minimum <= seconds <= MAX_DURATION:
        raise ConfigError(
            f"{option} {text!r}: must be between {minimum:g}s and {MAX_DURATION / 86400:g} days"
        )
    return seconds


def parse_listen(text: str, option: str = "--listen") -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6; port 0 picks a free one) -> ``(host, port)``."""
    host, sep, port = str(text).rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(
            f"{option} {text!r}: give HOST:PORT, e.g. 127.0.0.1:9464 (0.0.0.0:9464 in a container)"
        )
    return host, int(port)


@dataclass(frozen=True)
class ServiceConfig:
    desired_file: str
    mode: str = "drift"
    interval: float = 900.0
    run_timeout: float | None = None  # None: the interval, at least MIN_DEFAULT_TIMEOUT
    jitter: float = 0.1  # each wait is the delay +- this share of it
    backoff_base: float = 30.0  # the first wait after a failure; doubles per failure
    history_file: str | None = None
    journal_path: str | None = "teams-bridge-journal.jsonl"
    lock_dir: str | None = None
    notify_url: str | None = None
    notify_format: str = "teams"
    fail_on: tuple[str, ...] = ("error",)

    @property
    def timeout(self) -> float:
        if self.run_timeout is not None:
            return self.run_timeout
        return max(self.interval, MIN_DEFAULT_TIMEOUT)


@dataclass
class RunRecord:
    """One run: its result (``RUN_RESULTS``), the report it leaves (the last one read), counts."""

    mode: str
    result: str
    seconds: float = 0.0
    ended_at: float = 0.0  # Unix time
    report: DriftReport | None = None
    message: str | None = None  # why it failed or was refused
    pending: int = 0  # changes apply would still make
    changes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, result) -> n

    @property
    def success(self) -> bool:
        return self.result in SUCCESS


class RunCancelled(Exception):
    """A run stopped by the service (time-out or SIGTERM). Not a ``BridgeError``: apply must not
    take it for one write's failure, but close its run in the journal as interrupted."""


class RunGuard:
    """Stops a run cooperatively: a ``bridge.http`` observer that raises ``RunCancelled`` before
    a request while reading, and apply's progress callback, which does the same before a step
    (apply reports each step before sending it, so the step under way is finished)."""

    def __init__(self, clock: Callable[[], float]):
        self._clock = clock
        self._lock = threading.Lock()
        self._deadline: float | None = None
        self._timeout = 0.0
        self._writing = False
        self.stopping = threading.Event()

    def start(self, timeout: float) -> None:
        with self._lock:
            self._deadline = self._clock() + timeout
            self._timeout = timeout
            self._writing = False

    def finish(self) -> None:
        with self._lock:
            self._deadline = None
            self._writing = False

    def why_stop(self) -> str | None:
        if self.stopping.is_set():
            return "the service is stopping"
        with self._lock:
            if self._deadline is not None and self._clock() > self._deadline:
                return f"the run took longer than its time-out ({self._timeout:g}s)"
        return None

    def progress(self, line: str) -> None:
        """Before each apply step: from here on requests belong to writes, which are not cut."""
        log.info("apply: %s", line)
        why = self.why_stop()
        if why:
            raise RunCancelled(why)
        with self._lock:
            self._writing = True

    def writes_done(self) -> None:
        with self._lock:
            self._writing = False

    # bridge.http observer
    def before(self, api: str) -> None:
        with self._lock:
            if self._writing:
                return
        why = self.why_stop()
        if why:
            raise RunCancelled(why)

    def done(self, api: str, status: str) -> None:
        pass

    def throttled(self, api: str) -> None:
        pass


# --------------------------------------------------------------------------- one run


def _change_kind(change: Any) -> str:
    kind = str(getattr(change, "kind", ""))
    if "group" in kind:
        return "group_assignment"
    if "user" in kind:
        return "user_assignment"
    return "policy"


def change_counts(result: Any) -> Counter[tuple[str, str]]:
    """``(kind, result) -> n`` of an apply result: applied, pending, failed, not_attempted."""
    counts: Counter[tuple[str, str]] = Counter()
    if result is None:
        return counts
    for c in getattr(result, "applied", ()):
        counts[_change_kind(c), "applied"] += 1
    for p in getattr(result, "pending", ()):
        counts[_change_kind(getattr(p, "change", p)), "pending"] += 1
    for f in getattr(result, "failed", ()):
        counts[_change_kind(getattr(f, "change", f)), "failed"] += 1
    for c in getattr(result, "not_attempted", ()):
        counts[_change_kind(c), "not_attempted"] += 1
    return counts


def drift_objects(report: DriftReport) -> dict[str, int]:
    s = report.summary()
    users = s["user_assignments"]
    return {
        "policy": s["policies"]["total"] - s["policies"]["in_sync"],
        "group_assignment": s["group_assignments"]["total"] - s["group_assignments"]["in_sync"],
        "user_assignment": users["drifted"] + users["missing"] + users["extra"],
    }


class Reconciler:
    """One run against a ``Session`` that lives as long as the service."""

    def __init__(self, session: Any, config: ServiceConfig):
        self.session = session
        self.config = config

    def _drift(self) -> Any:
        from ..commands import DriftRequest, run_drift

        # Notifications are the loop's (on state changes), not run_drift's (on every drift).
        request = DriftRequest(
            desired_file=self.config.desired_file,
            history_file=self.config.history_file,
            fail_on=self.config.fail_on,
        )
        return run_drift(self.session, request)

    def run(self, guard: RunGuard) -> RunRecord:
        from ..apply import ApplyFailed
        from ..commands import ApplyRequest, run_apply

        mode = self.config.mode
        drift = self._drift()
        if mode != "apply" or not drift.changes:
            result = "in_sync" if drift.report.in_sync else "drift"
            return RunRecord(mode, result, report=drift.report, pending=drift.changes)
        request = ApplyRequest(
            desired_file=self.config.desired_file,
            plan_file=None,
            force=False,  # never: a plan over the limits waits for a person
            journal_path=self.config.journal_path,
            lock_dir=self.config.lock_dir,
        )
        try:
            outcome = run_apply(
                self.session, request, confirm=lambda plan, tenant: True, progress=guard.progress
            )
        except UnsafePlanError as exc:
            return RunRecord(
                mode, "refused", report=drift.report, message=str(exc), pending=drift.changes
            )
        except ApplyFailed as exc:
            record = RunRecord(mode, "error", report=drift.report, message=str(exc))
            record.changes = change_counts(getattr(exc, "result", None))
            return record
        finally:
            guard.writes_done()
        changes = change_counts(outcome.result)
        after = self._drift()  # what the tenant shows now
        record = RunRecord(mode, "applied", report=after.report, pending=after.changes)
        record.changes = changes
        return record


# --------------------------------------------------------------------------- the loop


class ServiceLoop:
    """Schedules runs, keeps the last record and report, updates the metrics and notifies on
    state changes. ``clock`` (monotonic), ``wall`` (Unix time), ``rand`` and ``wait`` are
    injectable for tests; ``wait(seconds)`` returns True when the loop should stop."""

    def __init__(
        self,
        config: ServiceConfig,
        reconcile: Callable[[RunGuard], RunRecord],
        metrics: ServiceMetrics,
        *,
        poster: Poster | None = None,
        on_run: Callable[[RunRecord], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        wait: Callable[[float], bool] | None = None,
    ):
        if config.mode not in MODES:
            raise ConfigError(f"--mode {config.mode!r}: choose from {', '.join(MODES)}")
        self.config = config
        self.metrics = metrics
        self._reconcile = reconcile
        self._poster = poster
        self._on_run = on_run
        self._clock = clock
        self._wall = wall
        self._rand = rand
        self.guard = RunGuard(clock)
        self._wait = wait or self.guard.stopping.wait
        self._lock = threading.Lock()
        self._created = clock()
        self._last_start: float | None = None
        self._running = False
        self._finished = False
        self.last: RunRecord | None = None
        self.runs = 0
        self.failures = 0  # consecutive
        self._report_html: bytes | None = None
        self._report_json: bytes | None = None
        # What was last notified (only a post that went through counts).
        self._notified_drift: frozenset[tuple[str, str]] = frozenset()
        self._notified_failing = False
        self._notified_refusal: str | None = None

    # ------------------------------------------------------------------ control

    def stop(self) -> None:
        """Ask the loop to end after the current step (safe from a signal handler)."""
        self.guard.stopping.set()

    @property
    def stopping(self) -> bool:
        return self.guard.stopping.is_set()

    def run_forever(self, max_runs: int | None = None) -> None:
        try:
            while not self.stopping:
                started = self._clock()
                record = self.run_once()
                if record is None or (max_runs is not None and self.runs >= max_runs):
                    break
                delay = max(0.0, self.next_delay() - (self._clock() - started))
                if self._wait(delay):
                    break
        finally:
            with self._lock:
                self._finished = True

    def next_delay(self) -> float:
        """The wait from one run's start to the next: the interval, or after ``n`` failures in a
        row ``backoff_base * 2**(n-1)`` up to the interval; +- ``jitter`` of it, so many services
        started together do not hit the tenant at once."""
        c = self.config
        delay = c.interval
        if self.failures:
            delay = min(c.interval, c.backoff_base * 2 ** min(self.failures - 1, 30))
        return delay * (1 + c.jitter * (2 * self._rand() - 1))

    def run_once(self) -> RunRecord | None:
        """One run on a worker thread; None when it was cut short because the loop is stopping."""
        with self._lock:
            self._last_start = self._clock()
            self._running = True
        started = self._clock()
        self.guard.start(self.config.timeout)
        box: dict[str, Any] = {}

        def work() -> None:
            # Scoped, not process-wide: in a fleet, each tenant's loop sees only its requests.
            try:
                with http.observing(self.guard, self.metrics):
                    box["record"] = self._reconcile(self.guard)
            except BaseException as exc:  # carried to this thread and judged below
                box["error"] = exc

        worker = threading.Thread(target=work, name="teams-bridge-run", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.25)  # short joins: signal handlers run in between, on every platform
        self.guard.finish()
        record = self._judge(box)
        with self._lock:
            self._running = False
        if record is None:
            return None
        record.seconds = self._clock() - started
        record.ended_at = self._wall()
        self._record(record)
        return record

    def _judge(self, box: dict[str, Any]) -> RunRecord | None:
        mode = self.config.mode
        error = box.get("error")
        if error is None:
            return box["record"]
        if isinstance(error, RunCancelled) and self.stopping:
            log.info("run stopped: %s", error)
            return None
        if isinstance(error, RunCancelled | BridgeError):
            return RunRecord(mode, "error", message=redact(str(error)))
        # A bug: logged with its traceback; the loop goes on (the next run may work).
        log.error("run failed unexpectedly", exc_info=error)
        return RunRecord(mode, "error", message=f"unexpected {type(error).__name__}: {error}")

    def _record(self, record: RunRecord) -> None:
        from ..report.render import render_json
        from ..report.render_html import render_html

        if record.message:
            record.message = redact(record.message)  # shown on /healthz, /readyz and in posts
        self.runs += 1
        self.failures = 0 if record.success else self.failures + 1
        m = self.metrics
        m.run_ended(record.mode, record.result, record.seconds, record.ended_at, record.success)
        for (kind, result), n in record.changes.items():
            m.change_counted(kind, result, n)
        report = record.report
        if report is not None and record.success:
            m.report_seen(drift_objects(report), report.summary()["findings"], record.pending)
            js, html = render_json(report).encode(), self._report_html
            try:
                html = render_html(report).encode()
            except ConfigError as exc:  # a broken BRIDGE_REPORT_TEMPLATES: the loop goes on
                log.error("%s", exc)
            with self._lock:
                self._report_html, self._report_json = html, js
        with self._lock:
            self.last = record
        if record.result == "error":
            log.warning("run failed (%d in a row): %s", self.failures, record.message)
        self._notify(record)
        if self._on_run is not None:
            self._on_run(record)

    # ------------------------------------------------------------------ notifications

    def _notify(self, record: RunRecord) -> None:
        """Post what changed since the last notification: new drift, drift resolved, runs
        started failing, a plan refused (each once); a post that fails is tried again after the
        next run."""
        if not self.config.notify_url or self._poster is None:
            return
        if record.result == "error":
            if not self._notified_failing and self._post("failing", record):
                self._notified_failing = True
            return
        self._notified_failing = False
        report = record.report
        now = frozenset(_drift_keys(report)) if report is not None else frozenset()
        if record.result == "refused":
            # One post says both: the drift (its report) and that it waits for a person.
            if record.message != self._notified_refusal and self._post("refused", record):
                self._notified_refusal = record.message
                self._notified_drift = now
            return
        self._notified_refusal = None
        if report is None:
            return
        if now - self._notified_drift:
            if self._post("drift", record):
                self._notified_drift = now
        elif not now and self._notified_drift:
            if self._post("resolved", record):
                self._notified_drift = now
        else:
            self._notified_drift = now  # some drift went away: a comeback is new again

    def _post(self, event: str, record: RunRecord) -> bool:
        assert self.config.notify_url and self._poster
        payload = event_payload(
            event,
            tenant=self.metrics.tenant,
            report=record.report,
            message=record.message,
            fmt=self.config.notify_format,
        )
        try:
            post_event(self.config.notify_url, payload, self._poster)
        except BridgeError as exc:
            log.warning(
                "the %s notification could not be posted (tried again next run): %s", event, exc
            )
            return False
        return True

    # ------------------------------------------------------------------ what the endpoints show

    def healthy(self) -> bool:
        """Alive: a run started within two intervals plus the run time-out."""
        with self._lock:
            if self._finished:
                return False
            last = self._last_start if self._last_start is not None else self._created
        return self._clock() - last <= 2 * self.config.interval + self.config.timeout

    def ready(self) -> bool:
        with self._lock:
            return self.last is not None and self.last.success

    def status(self) -> dict[str, Any]:
        with self._lock:
            last = self.last
            running = self._running
        return {
            "mode": self.config.mode,
            "runs": self.runs,
            "running": running,
            "consecutive_failures": self.failures,
            "last_result": last.result if last else None,
            "last_message": last.message if last else None,
        }

    def report(self, fmt: str) -> bytes | None:
        with self._lock:
            return self._report_html if fmt == "html" else self._report_json


def _drift_keys(report: DriftReport) -> Iterable[tuple[str, str]]:
    for item in report.drift_items():
        yield (str(item.key), str(getattr(item, "setting", "") or ""))
