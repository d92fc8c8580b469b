"""``serve --fleet``: one ``ServiceLoop`` per tenant, each on its own interval and thread, with
its own session (settings, credentials, token cache, pacer), history and journal; one metrics
registry whose series carry each tenant's name; one status server.

At most ``concurrency`` runs happen at once (a run waits for a slot; its time-out counts from
the start of the wait, so a run queued for too long is stopped and retried later). A tenant
whose credential is missing or wrong fails its runs; the others go on.

What the endpoints say for a fleet:

- ``/healthz``: 200 while every tenant's loop is alive;
- ``/readyz``: 200 once every tenant's last run succeeded (drift found is a success), else 503
  with the tenants that are not ready;
- ``/report``, ``/report.json``: the fleet page (one row per tenant, linking
  ``/report/NAME``); ``/report/NAME`` and ``/report/NAME.json``: that tenant's last report.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import BridgeError
from ..fleet import (
    WHOLE,
    Fleet,
    FleetResult,
    FleetTenant,
    Shard,
    TenantRow,
    in_fleet_terms,
    render_fleet_html,
    render_fleet_json,
    tenant_settings,
)
from .loop import Reconciler, RunGuard, RunRecord, ServiceConfig, ServiceLoop, drift_objects
from .metrics import ServiceMetrics

log = logging.getLogger(__name__)


class _TenantRun:
    """A tenant's reconcile function: the session is built on the first run (so a tenant whose
    secret is missing fails its own runs, not the service) and kept for the next ones."""

    def __init__(
        self,
        entry: FleetTenant,
        config: ServiceConfig,
        session_for: Callable[[FleetTenant], Any],
        slots: threading.Semaphore,
    ):
        self.entry = entry
        self.config = config
        self._session_for = session_for
        self._slots = slots
        self.session: Any = None

    def __call__(self, guard: RunGuard) -> RunRecord:
        with self._slots:
            try:
                if self.session is None:
                    self.session = self._session_for(self.entry)
                return Reconciler(self.session, self.config).run(guard)
            except BridgeError as exc:
                # Say where the fleet file keeps what the message calls AZURE_CLIENT_SECRET...
                if exc.args and str(exc) == exc.args[0]:
                    exc.args = (in_fleet_terms(self.entry, str(exc)), *exc.args[1:])
                raise

    def close(self) -> None:
        if self.session is not None:
            self.session.close()


class FleetService:
    """The fleet's loops and what ``StatusServer`` asks of them (as of one ``ServiceLoop``)."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        state_dir: str,
        shard: Shard = WHOLE,
        concurrency: int = 4,
        run_timeout: float | None = None,
        transport: str = "rest",
        cloud: str | None = None,
        fail_on: tuple[str, ...] = ("error",),
        notify_url: str | None = None,
        notify_format: str = "teams",
        session_for: Callable[[FleetTenant], Any] | None = None,
        on_run: Callable[[str, RunRecord], None] | None = None,
        **loop_options: Any,
    ):
        self.fleet = fleet
        self.shard = shard
        self.state_dir = Path(state_dir)
        self._transport = transport
        self._cloud = cloud
        first = fleet.tenants[0].name if fleet.tenants else "none"
        self.metrics = ServiceMetrics(first)
        self._slots = threading.Semaphore(max(1, concurrency))
        self.loops: dict[str, ServiceLoop] = {}
        self._runs: list[_TenantRun] = []
        self._threads: list[threading.Thread] = []
        self._on_run = on_run
        self._lock = threading.Lock()
        self._last_success: dict[str, float] = {}
        for entry in fleet.tenants:
            own = self.state_dir / entry.name
            config = ServiceConfig(
                desired_file=entry.desired,
                mode=entry.mode,
                interval=entry.interval,
                run_timeout=run_timeout,
                history_file=str(own / "history.sqlite"),
                journal_path=str(own / "journal.jsonl"),
                lock_dir=str(self.state_dir),  # not the home directory: read-only in a pod
                fail_on=fail_on,
                notify_url=notify_url,  # each tenant's state changes, named by its name
                notify_format=notify_format,
            )
            run = _TenantRun(entry, config, session_for or self.build_session, self._slots)
            self._runs.append(run)
            self.loops[entry.name] = ServiceLoop(
                config,
                run,
                self.metrics.view(entry.name),
                on_run=functools.partial(self._ran, entry.name),
                **loop_options,
            )

    def _ran(self, name: str, record: RunRecord) -> None:
        if record.success:
            with self._lock:
                self._last_success[name] = record.ended_at
        if self._on_run is not None:
            self._on_run(name, record)

    def build_session(self, entry: FleetTenant) -> Any:
        from ..session import Session, SessionOptions

        own = self.state_dir / entry.name
        own.mkdir(parents=True, exist_ok=True)
        settings = tenant_settings(
            entry, token_cache=str(own / "token-cache.json"), cloud=self._cloud
        )
        return Session(
            SessionOptions(transport=self._transport, cloud=entry.cloud), settings=settings
        )

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        for name, loop in self.loops.items():
            thread = threading.Thread(
                target=loop.run_forever, name=f"teams-bridge-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        for loop in self.loops.values():
            loop.stop()

    def wait(self, timeout: float | None = None) -> None:
        for thread in self._threads:
            thread.join(timeout)

    def close(self) -> None:
        for run in self._runs:
            run.close()

    def run_forever(self) -> None:
        """Start every loop and return when all have ended (after ``stop``)."""
        self.start()
        while any(t.is_alive() for t in self._threads):
            for thread in self._threads:
                thread.join(0.25)  # short joins: signal handlers run in between

    # ------------------------------------------------------------------ what the endpoints show

    def healthy(self) -> bool:
        return all(loop.healthy() for loop in self.loops.values())

    def ready(self) -> bool:
        return all(loop.ready() for loop in self.loops.values())

    def status(self) -> dict[str, Any]:
        waiting = sorted(name for name, loop in self.loops.items() if not loop.ready())
        return {
            "shard": str(self.shard),
            "tenants": len(self.loops),
            "not_ready": waiting,
            "tenant_status": {name: loop.status() for name, loop in self.loops.items()},
        }

    def rows(self) -> list[TenantRow]:
        rows = []
        for name, loop in self.loops.items():
            row = TenantRow(name, loop.config.mode, state="pending", exit_code=0)
            last = loop.last
            if last is not None:
                row.state = last.result
                row.exit_code = 1 if not last.success else 0
                row.message = last.message
                row.seconds = last.seconds
                row.changes = last.pending
                if last.report is not None:
                    row.drift = drift_objects(last.report)
                    row.findings = dict(last.report.summary()["findings"])
                    row.report = f"/report/{name}"
                    if not last.report.in_sync:
                        row.exit_code = 2
            with self._lock:
                success = self._last_success.get(name)
            if success:
                row.last_success = dt.datetime.fromtimestamp(success, dt.timezone.utc).isoformat(
                    timespec="seconds"
                )
            rows.append(row)
        return rows

    def report(self, fmt: str) -> bytes | None:
        result = FleetResult("serve", self.shard, self.rows(), started="")
        render = render_fleet_json if fmt == "json" else render_fleet_html
        return render(result).encode("utf-8", "backslashreplace")

    def tenant_report(self, name: str, fmt: str) -> bytes | None:
        loop = self.loops.get(name)
        return loop.report(fmt) if loop is not None else None
