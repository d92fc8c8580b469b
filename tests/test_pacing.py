"""Pacing: the client stays under a service's request rate and stops everyone after a 429, and a
read sends the fewest requests the APIs allow (scripts/bench.py measures it at scale)."""

from __future__ import annotations

import threading

import pytest
from http_fixtures import (  # noqa: F401
    GRAPH,
    Sleeps,
    clean_env_fixture,
    make_client,
    rsps_fixture,
    sleeps_fixture,
    tokens_fixture,
)
from responses import matchers

from bridge.auth import TEAMS_RESOURCE
from bridge.backends.graph import GraphClient, odata_string
from bridge.backends.teams_api import TeamsAdminClient
from bridge.http import HttpClient, HttpOptions, Pacer

BATCH = f"{GRAPH}/v1.0/$batch"
G1 = "0c0c0c0c-0000-0000-0000-000000000001"
POLICIES = "https://teams.test/Skype.Policy/configurations/TeamsMessagingPolicy"


class FakeClock:
    """A clock that only moves when the pacer sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


def pacer(rate: float | None, burst: float | None = None) -> tuple[Pacer, FakeClock]:
    clock = FakeClock()
    return Pacer(rate, burst, clock=clock, sleep=clock.sleep), clock


def test_a_burst_goes_at_once_then_requests_are_spaced_at_the_rate():
    p, clock = pacer(10.0, burst=3)
    waits = [p.acquire() for _ in range(5)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3:] == pytest.approx([0.1, 0.1])
    assert clock.now == pytest.approx(100.2)


def test_the_bucket_refills_while_nothing_is_sent():
    p, clock = pacer(10.0, burst=2)
    p.acquire(2)
    clock.now += 5.0  # idle: full again, but never more than the burst
    assert [p.acquire(), p.acquire()] == [0.0, 0.0]
    assert p.acquire() == pytest.approx(0.1)


def test_a_batch_costs_its_inner_requests():
    p, _clock = pacer(10.0, burst=10)
    assert p.acquire(10) == 0.0
    assert p.acquire(20) == pytest.approx(2.0)  # 20 tokens at 10 a second
    # The batch went 10 over a full bucket: the next request waits for that debt too.
    assert p.acquire(1) == pytest.approx(1.1)


def test_a_sequential_chain_goes_first_and_lookups_take_the_spare_rate():
    # Without a chain, two lookups of 5 empty the bucket and the next page waits behind them.
    p, _clock = pacer(10.0, burst=10)
    assert [p.acquire(5), p.acquire(5)] == [0.0, 0.0]
    assert p.acquire(chain=True) == pytest.approx(0.1)
    # While a chain runs, the lookups leave its token in the bucket: the page goes at once.
    p, clock = pacer(10.0, burst=10)
    p.chain_started()
    assert p.acquire(5) == 0.0
    assert p.acquire(5) == pytest.approx(0.1)  # waits for the spare token, not the page
    assert p.acquire(chain=True) == 0.0
    assert p.acquire(chain=True) == pytest.approx(0.1)  # then the chain goes at the rate
    p.chain_ended()
    # The chain over, lookups book ahead again.
    clock.now += 10
    assert [p.acquire(10), p.acquire(1)] == [0.0, pytest.approx(0.1)]


def test_without_a_rate_nothing_waits():
    p, clock = pacer(None)
    assert sum(p.acquire(20) for _ in range(100)) == 0.0
    assert clock.sleeps == []


def test_a_429_holds_every_thread_until_its_retry_after():
    p, _clock = pacer(None)
    p.hold(3.0)
    assert p.acquire() == pytest.approx(3.0)
    assert p.acquire() == 0.0  # the gate has passed


def test_the_thread_that_waited_out_its_own_retry_after_does_not_wait_again():
    p, _clock = pacer(None)
    p.hold(3.0)
    p.served(3.0)  # this thread sleeps the Retry-After itself (tenacity, $batch retries)
    assert p.acquire() == 0.0
    other: list[float] = []
    thread = threading.Thread(target=lambda: other.append(p.acquire()))
    thread.start()
    thread.join()
    assert other == [pytest.approx(3.0)]  # any other thread still does


def test_the_gate_never_closes_longer_than_the_retry_budget():
    clock = FakeClock()
    p = Pacer(None, clock=clock, sleep=clock.sleep, max_hold=120.0)
    p.hold(float("inf"))  # unreadable: ignored
    p.hold(float("nan"))
    assert p.acquire() == 0.0
    p.hold(86400.0)
    assert p.acquire() == 120.0


def test_rate_must_be_positive():
    with pytest.raises(ValueError, match="rate must be > 0"):
        Pacer(0.0)


def test_client_holds_others_after_a_429_and_waits_the_retry_after_once(rsps, tokens):
    sleeps = Sleeps()
    client = make_client(tokens, sleeps)
    rsps.get(POLICIES, status=429, headers={"Retry-After": "4"}, json={})
    rsps.get(POLICIES, json=[])
    assert client.get_json(POLICIES, resource=TEAMS_RESOURCE) == []
    assert sleeps.waits == [4.0]  # the retry, not a second wait at the gate


def test_client_paces_at_max_rps(rsps, tokens):
    sleeps = Sleeps()
    options = HttpOptions(timeout=(1.0, 2.0), retry_attempts=1, max_rps=2.0)
    client = HttpClient(tokens, options, sleep=sleeps)
    for _ in range(3):
        rsps.get(POLICIES, json=[])
    for _ in range(3):
        client.get_json(POLICIES, resource=TEAMS_RESOURCE)
    # A burst of one second's worth (2), then the third waits for its token.
    assert sleeps.waits == [pytest.approx(0.5, abs=0.05)]


def test_inner_429_in_a_batch_holds_the_client(rsps, tokens, sleeps):
    client = make_client(tokens, sleeps)
    url = f"/groups/{G1}?$select=id,displayName"
    body = {"requests": [{"id": "0", "method": "GET", "url": url}]}
    rsps.post(
        BATCH,
        match=[matchers.json_params_matcher(body)],
        json={"responses": [{"id": "0", "status": 429, "headers": {"Retry-After": "5"}}]},
    )
    rsps.post(
        BATCH,
        match=[matchers.json_params_matcher(body)],
        json={"responses": [{"id": "0", "status": 200, "body": {"id": G1, "displayName": "A"}}]},
    )
    found = GraphClient(client, GRAPH).resolve_groups([G1])
    assert [g.display_name for g in found[G1]] == ["A"]
    assert sleeps.waits == [5.0]
    assert client.pacer._gate > 0  # other threads would wait too


@pytest.mark.usefixtures("clean_env")
def test_assigned_groups_the_names_found_are_not_looked_up_again(rsps, tokens, sleeps):
    from bridge.backends.teams_api import RestBackend
    from bridge.settings import Settings

    client = make_client(tokens, sleeps)
    teams = "https://teams.test"
    rsps.get(
        f"{teams}/Skype.Policy/groupPolicyAssignments/",
        json=[
            {"GroupId": "g1", "PolicyType": "TeamsMessagingPolicy", "PolicyName": "A", "Rank": 1},
            {"GroupId": "g2", "PolicyType": "TeamsMessagingPolicy", "PolicyName": "B", "Rank": 2},
        ],
    )
    by_name = "/groups?$filter=displayName%20eq%20{}&$select=id,displayName"
    rsps.post(
        BATCH,
        match=[
            matchers.json_params_matcher(
                {
                    "requests": [
                        {"id": "0", "method": "GET", "url": by_name.format(odata_string("One"))},
                        {"id": "1", "method": "GET", "url": by_name.format(odata_string("Two"))},
                    ]
                }
            )
        ],
        json={
            "responses": [
                {"id": "0", "status": 200, "body": {"value": [{"id": "g1", "displayName": "One"}]}},
                {"id": "1", "status": 200, "body": {"value": [{"id": "g2", "displayName": "Two"}]}},
            ]
        },
    )
    settings = Settings.load(
        env_file=None,
        overrides={
            "AZURE_TENANT_ID": "11111111-2222-3333-4444-555555555555",
            "AZURE_CLIENT_ID": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
            "AZURE_CLIENT_SECRET": "s",
            "BRIDGE_GRAPH_URL": GRAPH,
            "BRIDGE_TEAMS_URL": teams,
        },
    )
    backend = RestBackend(TeamsAdminClient(client, teams), GraphClient(client, GRAPH), settings)
    assignments, found = backend._read_groups(["One", "Two"])
    assert [a.group_id for a in assignments] == ["g1", "g2"]
    assert {ref: [g.id for g in gs] for ref, gs in found.items()} == {
        "One": ["g1"],
        "Two": ["g2"],
    }
    assert client.stats["routes"] == {
        "GET /Skype.Policy/groupPolicyAssignments": 1,
        "POST /v1.0/$batch": 1,
    }
