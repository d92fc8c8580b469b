"""``bridge.http``'s observers (serve's metrics and run guard): every attempt the client sends is
seen with its API and status, a 429 as a throttle too, a connection failure as "error"; a
``before`` that raises stops the request before anything is sent."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
import responses
from http_fixtures import (  # noqa: F401  (fixtures)
    GRAPH,
    POLICIES,
    TEAMS_RESOURCE,
    client_fixture,
    rsps_fixture,
    sleeps_fixture,
    tokens_fixture,
)
from responses import registries

from bridge import http


class Seen:
    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []

    def before(self, api: str) -> None:
        self.events.append(("before", api))

    def done(self, api: str, status: str) -> None:
        self.events.append(("done", api, status))

    def throttled(self, api: str) -> None:
        self.events.append(("throttled", api))


@pytest.fixture
def seen() -> Iterator[Seen]:
    observer = Seen()
    http.add_observer(observer)
    yield observer
    http.remove_observer(observer)


@pytest.fixture
def ordered() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(
        assert_all_requests_are_fired=True, registry=registries.OrderedRegistry
    ) as mock:
        yield mock


def test_every_attempt_is_observed_with_its_api_and_status(
    ordered: responses.RequestsMock, client: Any, seen: Seen
) -> None:
    ordered.get(POLICIES, status=429, headers={"Retry-After": "1"}, json={})
    ordered.get(POLICIES, json=[])
    ordered.get(f"{GRAPH}/v1.0/organization", body=requests.ConnectionError("reset"))
    ordered.get(f"{GRAPH}/v1.0/organization", json={"value": []})
    client.get_json(POLICIES, resource=TEAMS_RESOURCE)
    client.get_json(f"{GRAPH}/v1.0/organization", resource=GRAPH)
    assert seen.events == [
        ("before", "teams"), ("done", "teams", "429"), ("throttled", "teams"),
        ("before", "teams"), ("done", "teams", "200"),
        ("before", "graph"), ("done", "graph", "error"),
        ("before", "graph"), ("done", "graph", "200"),
    ]  # fmt: skip


def test_a_batch_inner_throttle_is_observed(client: Any, seen: Seen) -> None:
    client.note_throttled()
    assert seen.events == [("throttled", "graph")]


def test_a_before_that_raises_stops_the_request_unsent(
    rsps: responses.RequestsMock, client: Any
) -> None:
    class Stop(Exception):
        pass

    class Guard(Seen):
        def before(self, api: str) -> None:
            raise Stop(api)

    guard = Guard()
    http.add_observer(guard)
    try:
        with pytest.raises(Stop):
            client.get_json(POLICIES, resource=TEAMS_RESOURCE)
    finally:
        http.remove_observer(guard)
    assert len(rsps.calls) == 0


def test_webhook_posts_are_not_an_api_of_the_tenant(
    rsps: responses.RequestsMock, seen: Seen
) -> None:
    rsps.post("https://hooks.test/x", status=200)
    http.HttpClient.for_webhooks(None).request("POST", "https://hooks.test/x", json={})
    assert seen.events == []
