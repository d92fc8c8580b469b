"""The Prometheus series of the contract (``DESIGN.md``, "The service"); every one carries
``tenant``. One registry per service, never the process-global one, so tests and a fleet can run
several side by side.

API requests and throttles are counted where every request passes: ``bridge.http``'s observers
(``done``/``throttled``), MSAL's token requests included as ``api="login"``."""

from __future__ import annotations

import copy
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
RESULTS = ("in_sync", "drift", "applied", "refused", "error")
DRIFT_KINDS = ("policy", "group_assignment", "user_assignment")
SEVERITIES = ("error", "warning", "info")
# Seconds: a small tenant reads in about one, 100,000 users in under a minute; apply can take long.
DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class ServiceMetrics:
    def __init__(self, tenant: str, modes: tuple[str, ...] = ("drift", "apply")):
        self.tenant = tenant
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs = Counter(
            "teams_bridge_runs",
            "Reconcile runs by mode and result.",
            ["tenant", "mode", "result"],
            registry=r,
        )
        self.duration = Histogram(
            "teams_bridge_run_duration_seconds",
            "How long a reconcile run took.",
            ["tenant", "mode"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.last_run = Gauge(
            "teams_bridge_last_run_timestamp_seconds",
            "When the last run ended (Unix time).",
            ["tenant"],
            registry=r,
        )
        self.last_success = Gauge(
            "teams_bridge_last_success_timestamp_seconds",
            "When the last run that read the tenant successfully ended (Unix time).",
            ["tenant"],
            registry=r,
        )
        self.drift = Gauge(
            "teams_bridge_drift_objects",
            "Managed objects not in the desired state, by kind.",
            ["tenant", "kind"],
            registry=r,
        )
        self.findings = Gauge(
            "teams_bridge_findings",
            "Healthcare findings of the last report, by severity.",
            ["tenant", "severity"],
            registry=r,
        )
        self.pending = Gauge(
            "teams_bridge_pending_changes",
            "Changes apply would make, as of the last report.",
            ["tenant"],
            registry=r,
        )
        self.changes = Counter(
            "teams_bridge_changes",
            "Changes apply attempted, by kind and result.",
            ["tenant", "kind", "result"],
            registry=r,
        )
        self.api_requests = Counter(
            "teams_bridge_api_requests",
            "Requests sent to the APIs (every attempt), by status.",
            ["tenant", "api", "status"],
            registry=r,
        )
        self.api_throttled = Counter(
            "teams_bridge_api_throttled",
            "Requests the APIs answered 429 (throttled).",
            ["tenant", "api"],
            registry=r,
        )
        # Series that exist from the start, at 0: a rate() or an alert on them works at once.
        for mode in modes:
            for result in RESULTS:
                self.runs.labels(tenant, mode, result)
        for api in ("teams", "graph", "login"):
            self.api_throttled.labels(tenant, api)

    def view(self, tenant: str, modes: tuple[str, ...] = ("drift", "apply")) -> ServiceMetrics:
        """The same series (one registry, one ``/metrics``) for another ``tenant``: a fleet's
        loops each record through their own view."""
        other = copy.copy(self)
        other.tenant = tenant
        for mode in modes:
            for result in RESULTS:
                other.runs.labels(tenant, mode, result)
        for api in ("teams", "graph", "login"):
            other.api_throttled.labels(tenant, api)
        return other

    # ------------------------------------------------------------------ bridge.http observer

    def before(self, api: str) -> None:
        pass

    def done(self, api: str, status: str) -> None:
        self.api_requests.labels(self.tenant, api, status).inc()

    def throttled(self, api: str) -> None:
        self.api_throttled.labels(self.tenant, api).inc()

    # ------------------------------------------------------------------ a run

    def run_ended(
        self, mode: str, result: str, seconds: float, ended_at: float, success: bool
    ) -> None:
        self.runs.labels(self.tenant, mode, result).inc()
        self.duration.labels(self.tenant, mode).observe(seconds)
        self.last_run.labels(self.tenant).set(ended_at)
        if success:
            self.last_success.labels(self.tenant).set(ended_at)

    def report_seen(
        self, drift: Mapping[str, int], findings: Mapping[str, int], pending: int
    ) -> None:
        for kind in DRIFT_KINDS:
            self.drift.labels(self.tenant, kind).set(drift.get(kind, 0))
        for severity, count in findings.items():
            self.findings.labels(self.tenant, severity).set(count)
        self.pending.labels(self.tenant).set(pending)

    def change_counted(self, kind: str, result: str, n: int = 1) -> None:
        if n:
            self.changes.labels(self.tenant, kind, result).inc(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)
