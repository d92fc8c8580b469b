"""``serve``: the reconciling service. ``loop`` runs drift (or apply) on a schedule and keeps the
service's state; ``metrics`` holds the Prometheus series of the contract; ``server`` answers
``/healthz``, ``/readyz``, ``/metrics``, ``/report`` and ``/report.json``; ``notify`` says when the
state changes."""

from __future__ import annotations

from .loop import (
    RUN_RESULTS,
    Reconciler,
    RunRecord,
    ServiceConfig,
    ServiceLoop,
    parse_duration,
    parse_listen,
)
from .metrics import ServiceMetrics
from .server import StatusServer

__all__ = [
    "RUN_RESULTS",
    "Reconciler",
    "RunRecord",
    "ServiceConfig",
    "ServiceLoop",
    "ServiceMetrics",
    "StatusServer",
    "parse_duration",
    "parse_listen",
]
