"""What ``serve`` posts when the state changes: new drift, drift resolved, runs failing, a plan
refused. Drift and resolution post the drift report's own notification (``report.notify``), with
the event named; a failure or a refusal posts its message. Every payload names its event under
``teamsBridgeEvent`` (top level), so one receiver can tell them apart."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from ..redact import redact
from ..report.model import DriftReport
from ..report.notify import SUMMARY_FIELD, Poster, build_payload, split_credentials

log = logging.getLogger(__name__)

EVENT_FIELD = "teamsBridgeEvent"
EVENTS = ("drift", "resolved", "failing", "refused")
_TITLES = {
    "drift": "new drift",
    "resolved": "drift resolved",
    "failing": "runs are failing",
    "refused": "apply refused a plan over the safety limits",
}


def event_payload(
    event: str,
    *,
    tenant: str,
    report: DriftReport | None,
    message: str | None,
    fmt: str,
) -> dict[str, Any]:
    if event in ("drift", "resolved") and report is not None:
        payload = build_payload(report, fmt)
        return {**payload, EVENT_FIELD: event}
    text = redact(message or "")
    summary = {"schema_version": 1, "event": event, "tenant": tenant, "message": text}
    if report is not None:
        summary["drift_count"] = report.drift_count
    if fmt == "json":
        return {**summary, EVENT_FIELD: event}
    card = {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": f"teams-bridge ({tenant}): {_TITLES[event]}",
                "weight": "Bolder",
                "wrap": True,
            },
            {"type": "TextBlock", "text": text, "wrap": True},
        ],
    }
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}
        ],
        SUMMARY_FIELD: summary,
        EVENT_FIELD: event,
    }


def post_event(url: str, payload: dict[str, Any], post: Poster) -> None:
    bare, headers = split_credentials(url)
    post(bare, payload, headers)
    # The URL's path is the webhook's secret: the host only.
    log.info("posted %s notification to %s", payload.get(EVENT_FIELD), urlsplit(url).hostname)
