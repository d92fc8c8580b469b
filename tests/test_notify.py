"""Notifications: the JSON summary, the Teams Adaptive Card, and posting through an injected
function (the CLI's goes through bridge.http)."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
from typing import Any

import pytest
import responses
from responses import matchers
from test_report_model import in_sync_report, scenario

from bridge.errors import ApiError, ConfigError
from bridge.report.model import UserAssignmentReport
from bridge.report.notify import (
    CARD_CONTENT_TYPE,
    build_notification,
    build_payload,
    build_teams_card,
    check_webhook_url,
    notify,
    split_credentials,
    webhook_poster,
)

WEBHOOK = "https://contoso.webhook.office.com/webhookb2/abc@def/IncomingWebhook/SECRETPART/xyz"


def test_notification_summary() -> None:
    n = build_notification(scenario(), top=3)
    assert n["tenant_id"] == "6f1c2d3e-0000-4000-8000-00000000c0de"
    assert n["exit_code"] == 2 and n["in_sync"] is False and n["drift_count"] == 10
    assert n["summary"]["policies"]["drifted"] == 3
    assert [i["key"] for i in n["top_items"]] == [
        "policy:global:ReadReceiptsEnabledType",
        "policy:clinical:Description",
        "policy:clinical:ReadReceiptsEnabledType",
    ]
    assert n["top_items"][0]["expected"] == "Everyone"
    assert n["top_items"][0]["actual"] == "UserPreference"
    assert n["more_items"] == 8
    assert [f["rule_id"] for f in n["findings"]] == [
        "clinical-read-receipts",
        "read-receipts-consistency",
    ]
    json.dumps(n)  # serialisable as is
    quiet = build_notification(in_sync_report())
    assert quiet["exit_code"] == 0 and quiet["top_items"] == [] and quiet["findings"] == []


def _texts(card: dict[str, Any]) -> str:
    return json.dumps(card["attachments"][0]["content"]["body"], ensure_ascii=False)


def test_teams_card_shape_and_content() -> None:
    card = build_teams_card(scenario(), top=5)
    assert card["type"] == "message"
    (attachment,) = card["attachments"]
    assert attachment["contentType"] == CARD_CONTENT_TYPE
    content = attachment["content"]
    assert content["type"] == "AdaptiveCard" and content["version"] == "1.4"
    assert all(block["type"] in {"TextBlock", "FactSet"} for block in content["body"])
    text = _texts(card)
    assert "Drift detected" in text and "Objects not in sync" in text
    assert "3 of 5 not in sync" not in text and "5 of 5 not in sync" in text
    assert "ReadReceiptsEnabledType" in text and "... and 6 more" in text
    assert "WARNING" in text
    assert content["body"][0]["color"] == "Attention"
    assert (
        build_teams_card(in_sync_report())["attachments"][0]["content"]["body"][0]["color"]
        == "Good"
    )


def test_card_neutralises_markdown_in_tenant_text() -> None:
    evil = UserAssignmentReport(
        "u-x", "[click](https://evil.example)*x*", "missing", "Clinical", None
    )
    report = dataclasses.replace(scenario(), users_listed=[evil])
    body = build_teams_card(report)["attachments"][0]["content"]["body"]
    listing = next(b["text"] for b in body if "user " in b.get("text", ""))
    assert "[click](" not in listing
    assert "\\[click\\](https:\u200b//evil.example)\\*x\\*" in listing


def test_notify_posts_the_card_and_the_summary_and_keeps_the_url_out_of_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    posted: list[tuple[str, dict[str, Any], dict[str, str]]] = []

    def post(url: str, payload: dict[str, Any], headers: dict[str, str]) -> None:
        posted.append((url, payload, headers))

    with caplog.at_level(logging.DEBUG):
        notify(WEBHOOK, scenario(), post)
    # The default: one post a Teams webhook shows as a card and any receiver reads as JSON.
    want = {**build_teams_card(scenario()), "teamsBridgeSummary": build_notification(scenario())}
    assert posted == [(WEBHOOK, want, {})]
    # No top-level "summary": a legacy connector MessageCard's "summary" is a string.
    assert "summary" not in posted[0][1]
    assert "SECRETPART" not in caplog.text and "contoso.webhook.office.com" in caplog.text
    assert "SECRETPART" not in json.dumps(posted[0][1])
    notify(WEBHOOK, scenario(), post, fmt="json")
    assert posted[1] == (WEBHOOK, build_notification(scenario()), {})
    assert build_payload(scenario(), "teams")["attachments"][0]["contentType"] == CARD_CONTENT_TYPE
    with pytest.raises(ConfigError, match="choose from teams, json"):
        build_payload(scenario(), "xml")


def test_credentials_in_the_url_become_a_header() -> None:
    posted: list[tuple[str, dict[str, str]]] = []
    notify(
        "https://bot:p%40ss@hooks.example.org:8443/in/SECRET?x=1",
        scenario(),
        lambda url, payload, headers: posted.append((url, headers)),
    )
    ((url, headers),) = posted
    assert url == "https://hooks.example.org:8443/in/SECRET?x=1"
    assert headers == {"Authorization": "Basic " + base64.b64encode(b"bot:p@ss").decode()}
    assert split_credentials(WEBHOOK) == (WEBHOOK, {})


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("hooks.example.org/in", "needs https:// and a host"),
        ("https://", "needs https:// and a host"),
        ("ftp://hooks.example.org/in", "needs https:// and a host"),
        ("http://hooks.example.org/in", "plain http would send the webhook URL"),
        ("https://hooks.example.org:99999/in", "not a usable URL"),
        ("https://[::1/in", "not a usable URL"),
    ],
)
def test_bad_webhook_urls_are_refused_naming_the_option(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^--notify: .*{message}"):
        check_webhook_url(url)


def test_good_webhook_urls_pass() -> None:
    check_webhook_url(WEBHOOK)
    check_webhook_url("http://127.0.0.1:8080/hook")
    check_webhook_url("http://localhost/hook")


def test_notify_propagates_post_failures() -> None:
    def post(url: str, payload: dict[str, Any], headers: dict[str, str]) -> None:
        raise RuntimeError("webhook down")

    with pytest.raises(RuntimeError, match="webhook down"):
        notify(WEBHOOK, scenario(), post)


# --------------------------------------------------------------------------- redirects


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_host_is_a_failed_post_and_is_not_followed(status: int) -> None:
    # Nothing is registered for evil.example: following the redirect would fail differently.
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(
            WEBHOOK,
            status=status,
            headers={"Location": "https://evil.example/collect/TARGETSECRET"},
            match=[matchers.json_params_matcher({"schema_version": 1}, strict_match=False)],
        )
        with pytest.raises(ApiError) as err:
            notify(WEBHOOK, scenario(), webhook_poster(None), fmt="json")
        assert len(rsps.calls) == 1
    message = str(err.value)
    assert f"answered {status}, a redirect to evil.example;" in message
    assert "does not follow redirects" in message and "final URL in --notify" in message
    assert "SECRETPART" not in message and "TARGETSECRET" not in message
    assert "SECRETPART" not in (err.value.url or "")
    assert err.value.status == status


def test_a_redirect_on_the_same_host_is_not_followed_either() -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(WEBHOOK, status=307, headers={"Location": "/elsewhere"})
        with pytest.raises(ApiError, match=r"a redirect to contoso\.webhook\.office\.com;"):
            webhook_poster(None)(WEBHOOK, {"x": 1}, {})
        assert len(rsps.calls) == 1


def test_the_poster_posts_once_and_sends_the_headers() -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(
            WEBHOOK,
            status=202,
            match=[
                matchers.json_params_matcher({"x": 1}),
                matchers.header_matcher({"Authorization": "Basic eDp5"}),
            ],
        )
        webhook_poster(None)(WEBHOOK, {"x": 1}, {"Authorization": "Basic eDp5"})
        assert "Authorization" in rsps.calls[0].request.headers
