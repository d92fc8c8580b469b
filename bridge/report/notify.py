"""Short drift notifications: a JSON summary for any webhook, and an Adaptive Card message for a
Teams incoming webhook (``{"type": "message", "attachments": [...]}``, card version 1.4).

What is posted (``--notify-format``):

- ``teams`` (default): the Teams card message, with the JSON summary as its extra top-level
  ``teamsBridgeSummary`` field. Teams shows the card and ignores the extra field; any other
  receiver (a pipeline, a Power Automate flow, a chat-ops bot) reads ``teamsBridgeSummary`` from
  the same post. Not ``summary``: a legacy Office 365 connector MessageCard has a ``summary``
  field that is a string, and a receiver that checks it would refuse the post;
- ``json``: the JSON summary alone, for receivers that expect nothing else.

Payloads carry the tenant id, counts and the top drift items: never secrets (a report holds none),
and never the webhook URL itself (it is a credential: anyone holding it can post). Credentials in
the URL's userinfo (``https://user:pass@host/...``) are taken out of the URL and sent as a Basic
``Authorization`` header, so the URL that reaches the HTTP layer and its logs holds none."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import requests

from ..errors import ApiError, ConfigError
from .model import DriftReport, format_value, utc
from .render_markdown import escape_markdown

if TYPE_CHECKING:
    from ..settings import Settings

log = logging.getLogger(__name__)

TOP_ITEMS = 10
CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
FORMATS = ("teams", "json")
# The teams format's extra top-level field holding the JSON summary (never "summary": in a legacy
# connector MessageCard that is a string).
SUMMARY_FIELD = "teamsBridgeSummary"
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}

Poster = Callable[[str, dict[str, Any], dict[str, str]], None]


def check_webhook_url(url: str, option: str = "--notify") -> None:
    """Refuse a URL that cannot be posted to, before anything is read: ``ConfigError`` naming
    ``option``. Plain ``http`` only to this machine: the URL is a credential."""
    try:
        parts = urlsplit(url)
        host, _port = parts.hostname, parts.port
    except ValueError as exc:
        raise ConfigError(
            f"{option}: not a usable URL ({exc}); give the webhook's https URL"
        ) from None
    if parts.scheme not in ("https", "http") or not host:
        raise ConfigError(
            f"{option}: not a webhook URL (it needs https:// and a host); give the webhook's "
            "https URL"
        )
    if parts.scheme == "http" and host not in _LOOPBACK:
        raise ConfigError(
            f"{option}: plain http would send the webhook URL (a credential) unencrypted; use "
            "https (http is accepted for localhost only)"
        )


def split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without userinfo, and the headers that carry it instead (Basic auth, as requests
    would send for a URL with userinfo)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, {}
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port is not None else "")
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    bare = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return bare, {"Authorization": f"Basic {token}"}


def build_notification(report: DriftReport, *, top: int = TOP_ITEMS) -> dict[str, Any]:
    """A compact JSON summary: tenant, verdict, exact counts, the first ``top`` drift items and
    the findings that count."""
    items = report.drift_items()
    objects = [i for i in items if i.kind != "rule"]
    return {
        "schema_version": 1,
        "tenant_id": report.tenant_id,
        "generated_at": utc(report.generated_at)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z"),
        "tool_version": report.tool_version,
        "desired": {"path": report.desired_path, "sha256": report.desired_sha256},
        "in_sync": report.in_sync,
        "exit_code": report.exit_code,
        "drift_count": report.drift_count,
        "summary": report.summary(),
        "top_items": [
            {
                "key": i.key,
                "object": i.object,
                "setting": i.setting,
                "status": i.status,
                "expected": i.expected,
                "actual": i.actual,
            }
            for i in objects[:top]
        ],
        "more_items": max(0, len(objects) - top),
        "findings": [
            {
                "rule_id": f.rule_id,
                "severity": f.severity,
                "title": f.title,
                "policies": list(f.policies),
            }
            for f in report.failing_findings
        ],
    }


def build_teams_card(report: DriftReport, *, top: int = TOP_ITEMS) -> dict[str, Any]:
    """An Adaptive Card 1.4 message for a Teams incoming webhook."""
    s = report.summary()
    items = [i for i in report.drift_items() if i.kind != "rule"]
    title = "In sync" if report.in_sync else "Drift detected"
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": f"Teams messaging policies: {title}",
            "weight": "Bolder",
            "size": "Medium",
            "color": "Good" if report.in_sync else "Attention",
            "wrap": True,
        },
        {
            "type": "TextBlock",
            "text": f"Tenant {report.tenant_id or 'unknown'} · "
            f"{utc(report.generated_at):%Y-%m-%d %H:%M} UTC",
            "isSubtle": True,
            "spacing": "None",
            "wrap": True,
        },
        {
            "type": "FactSet",
            "facts": [
                {"title": "Objects not in sync", "value": str(report.drift_count)},
                *(
                    {"title": label, "value": _counts(s[key])}
                    for label, key in (
                        ("Policies", "policies"),
                        ("Group assignments", "group_assignments"),
                        ("User assignments", "user_assignments"),
                    )
                ),
                {
                    "title": "Rule findings",
                    "value": f"{s['findings']['error']} error, {s['findings']['warning']} "
                    f"warning, {s['findings']['info']} info",
                },
                {
                    "title": "Desired state",
                    "value": f"{report.desired_path} ({report.desired_sha256[:12] or '-'})",
                },
            ],
        },
    ]
    if items:
        lines = [
            f"- **{_plain(i.object)}**{' ' + _plain(i.setting) if i.setting else ''}: "
            f"{_plain(_short(i.actual))} → {_plain(_short(i.expected))}"
            for i in items[:top]
        ]
        if len(items) > top:
            lines.append(f"- ... and {len(items) - top} more")
        body.append(
            {"type": "TextBlock", "text": "\n".join(lines), "wrap": True, "separator": True}
        )
    for f in report.failing_findings[:top]:
        body.append(
            {
                "type": "TextBlock",
                "text": f"**{f.severity.upper()}** {_plain(f.title)}",
                "wrap": True,
                "color": "Attention" if f.severity == "error" else "Warning",
            }
        )
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": CARD_CONTENT_TYPE,
                "contentUrl": None,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "msteams": {"width": "Full"},
                    "body": body,
                },
            }
        ],
    }


def build_payload(report: DriftReport, fmt: str = "teams") -> dict[str, Any]:
    """What ``notify`` posts for ``fmt`` (see the module docstring)."""
    if fmt == "json":
        return build_notification(report)
    if fmt == "teams":
        return {**build_teams_card(report), SUMMARY_FIELD: build_notification(report)}
    raise ConfigError(f"unknown notification format {fmt!r}: choose from {', '.join(FORMATS)}")


def notify(url: str, report: DriftReport, post: Poster, fmt: str = "teams") -> None:
    """Post ``report``'s notification to ``url`` through ``post(url, payload, headers)`` (the CLI
    passes one built on ``bridge.http``, which owns timeouts, retries and error mapping)."""
    payload = build_payload(report, fmt)
    bare, headers = split_credentials(url)
    post(bare, payload, headers)
    # The URL's path and query are the webhook's secret: log the host only.
    log.info("posted drift notification to %s", urlsplit(url).hostname or "the webhook")


class _NoRedirects(requests.Session):
    """A session that hands a redirect back instead of following it: a 307 or 308 would re-post
    the summary (and a Basic ``Authorization`` header on the same host) wherever the Location
    says, and a 301-303 would turn the post into a GET elsewhere."""

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        return None


_ACCEPTED = (200, 201, 202, 204)
_REDIRECTS = (300, 301, 302, 303, 305, 307, 308)


def webhook_poster(settings: Settings | None) -> Poster:
    """The ``post`` that ``notify`` uses outside tests: one POST through ``bridge.http`` (its
    timeouts, retries and error mapping; no token; paths never logged), never following a
    redirect. A redirect is a failed post (``ApiError``) naming the host it pointed to."""
    from ..http import HttpClient, HttpOptions

    def post(url: str, payload: dict[str, Any], headers: dict[str, str]) -> None:
        options = HttpOptions.from_settings(settings) if settings else HttpOptions()
        client = HttpClient(None, options, session=_NoRedirects(), hide_paths=True)
        try:
            response = client.request(
                "POST",
                url,
                json=payload,
                headers=headers or None,
                expected=(*_ACCEPTED, *_REDIRECTS),
            )
        finally:
            client.close()
        if response.status_code in _ACCEPTED:
            return
        location = response.headers.get("Location")
        # Host only: the path of a webhook URL is its secret, and so may the target's be.
        target = urlsplit(urljoin(url, location)).hostname if location else None
        where = f"to {target}" if target else "without a Location"
        raise ApiError(
            f"the webhook at {urlsplit(url).hostname} answered {response.status_code}, a redirect "
            f"{where}; teams-bridge does not follow redirects when posting (that would send the "
            "summary to wherever the redirect points): give the webhook's final URL in --notify",
            status=response.status_code,
            url=f"{urlsplit(url).scheme}://{urlsplit(url).hostname}/...",
        )

    return post


def _counts(c: dict[str, int]) -> str:
    return (
        f"{c['drifted'] + c['missing'] + c['extra']} of {c['total']} not in sync "
        f"({c['drifted']} drifted, {c['missing']} missing, {c['extra']} not wanted)"
    )


def _short(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, dict):
        return f"{value.get('policy')} (rank {value.get('rank')})"
    text = format_value(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _plain(text: object) -> str:
    # Card TextBlocks render a Markdown subset: keep tenant text from turning into links or
    # formatting.
    return escape_markdown(text)
