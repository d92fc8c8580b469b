from __future__ import annotations

import email.utils
import gzip
import json
import logging
import threading
import time
import uuid

import pytest
import requests
import responses
from http_fixtures import (  # noqa: F401  (fixtures)
    GRAPH,
    POLICIES,
    TEAMS,
    TEAMS_RESOURCE,
    FakeTokens,
    Sleeps,
    client_fixture,
    make_client,
    rsps_fixture,
    sleeps_fixture,
    tokens_fixture,
)
from responses import matchers, registries

from bridge.errors import (
    ConflictError,
    ForbiddenError,
    InvalidResponseError,
    NotFoundError,
    ServerError,
    ThrottledError,
    UnauthorizedError,
)
from bridge.http import HttpClient, HttpOptions, retry_after_seconds, route_of

USERS = f"{TEAMS}/Teams.User/users"


@pytest.fixture
def ordered():
    with responses.RequestsMock(
        assert_all_requests_are_fired=True, registry=registries.OrderedRegistry
    ) as mock:
        yield mock


def test_headers_on_every_request(rsps, client, tokens):
    rsps.get(POLICIES, json=[])
    rsps.get(f"{GRAPH}/v1.0/organization", json={"value": []})
    client.get_json(POLICIES, resource=TEAMS_RESOURCE)
    client.get_json(f"{GRAPH}/v1.0/organization", resource=GRAPH)
    teams, graph = (c.request.headers for c in rsps.calls)
    assert teams["x-authz-scope"] == "tenant"
    assert "x-authz-scope" not in graph
    for headers in (teams, graph):
        assert headers["Authorization"].startswith("Bearer ey")
        assert headers["Accept"] == "application/json"
        assert "gzip" in headers["Accept-Encoding"]
        uuid.UUID(headers["x-ms-correlation-id"])
    assert teams["x-ms-correlation-id"] != graph["x-ms-correlation-id"]
    assert tokens.requests == [TEAMS_RESOURCE, GRAPH]


def test_429_with_retry_after_then_200_waits_what_the_service_asked(ordered, client, sleeps):
    ordered.get(POLICIES, status=429, headers={"Retry-After": "7"}, json={})
    ordered.get(POLICIES, json=[{"Identity": "Global"}])
    assert client.get_json(POLICIES, resource=TEAMS_RESOURCE) == [{"Identity": "Global"}]
    assert sleeps.waits == [7.0]
    stats = client.stats
    assert (stats["total"], stats["retries"], stats["throttled"]) == (2, 1, 1)
    assert stats["routes"] == {"GET /Skype.Policy/configurations/TeamsMessagingPolicy": 2}
    # one logical request: the same correlation id on both attempts
    first, second = (c.request.headers["x-ms-correlation-id"] for c in ordered.calls)
    assert first == second


def test_retry_after_as_http_date(ordered, client, sleeps):
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    ordered.get(POLICIES, status=503, headers={"Retry-After": when})
    ordered.get(POLICIES, json=[])
    client.get_json(POLICIES, resource=TEAMS_RESOURCE)
    assert len(sleeps.waits) == 1 and 27 <= sleeps.waits[0] <= 31


def test_retry_after_parsing():
    assert retry_after_seconds("12") == 12.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


def test_503_until_retries_run_out_is_a_server_error(rsps, tokens, sleeps):
    client = make_client(tokens, sleeps, attempts=4)
    rsps.get(POLICIES, status=503, json={"error": {"code": "Unavailable", "message": "busy"}})
    with pytest.raises(ServerError) as err:
        client.get_json(POLICIES, resource=TEAMS_RESOURCE)
    assert len(rsps.calls) == 4
    assert len(sleeps.waits) == 3
    assert all(0 <= w <= 30 for w in sleeps.waits)  # exponential backoff with jitter, capped
    assert "503 from Teams admin API" in str(err.value)
    assert "Unavailable: busy" in str(err.value)
    assert err.value.correlation_id


def test_throttling_beyond_the_time_budget_stops_without_waiting(rsps, tokens, sleeps):
    client = make_client(tokens, sleeps, attempts=5, max_seconds=60)
    rsps.get(POLICIES, status=429, headers={"Retry-After": "600"}, json={})
    with pytest.raises(ThrottledError) as err:
        client.get_json(POLICIES, resource=TEAMS_RESOURCE)
    assert sleeps.waits == []
    assert len(rsps.calls) == 1
    assert "asked to wait 600s" in str(err.value)
    assert "BRIDGE_RETRY_MAX_SECONDS" in str(err.value)


def test_a_retry_after_given_up_on_does_not_hold_the_next_request(rsps, tokens, sleeps):
    client = make_client(tokens, sleeps, attempts=5, max_seconds=120)
    rsps.get(POLICIES, status=429, headers={"Retry-After": "86400"}, json={})
    rsps.get(f"{GRAPH}/v1.0/organization", json={"value": []})
    with pytest.raises(ThrottledError, match="asked to wait 86400s"):
        client.get_json(POLICIES, resource=TEAMS_RESOURCE)
    # The throttled request was abandoned: an unrelated one goes straight away.
    assert client.get_json(f"{GRAPH}/v1.0/organization", resource=GRAPH) == {"value": []}
    assert sleeps.waits == []
    assert len(rsps.calls) == 2


def test_the_last_429_before_giving_up_holds_nobody(ordered, tokens, sleeps):
    client = make_client(tokens, sleeps, attempts=1, max_seconds=120)
    for _ in range(4):  # a 429 gets attempts x 4
        ordered.get(POLICIES, status=429, headers={"Retry-After": "2"}, json={})
    ordered.get(f"{GRAPH}/v1.0/organization", json={"value": []})
    with pytest.raises(ThrottledError):
        client.get_json(POLICIES, resource=TEAMS_RESOURCE)
    client.get_json(f"{GRAPH}/v1.0/organization", resource=GRAPH)
    assert sleeps.waits == [2.0, 2.0, 2.0]  # the retries only, nothing at the gate after


@pytest.mark.parametrize("value", ["inf", "Infinity", "-inf", "nan", "1e400"])
def test_a_non_finite_retry_after_is_unreadable_not_a_crash(ordered, client, sleeps, value):
    ordered.get(POLICIES, status=429, headers={"Retry-After": value}, json={})
    ordered.get(POLICIES, json=[])
    assert client.get_json(POLICIES, resource=TEAMS_RESOURCE) == []
    [wait] = sleeps.waits
    assert 0 <= wait <= 30  # backoff, as for no Retry-After at all
    assert retry_after_seconds(value) is None


def test_a_next_link_back_to_the_first_page_is_a_loop_before_any_repeat(rsps, client):
    users = f"{GRAPH}/v1.0/users"
    rsps.get(
        users,
        match=[matchers.query_param_matcher({"$top": "999"})],
        json={"value": [{"id": "1"}], "@odata.nextLink": f"{users}?%24top=999"},
    )
    got = []
    with pytest.raises(InvalidResponseError, match="repeats"):
        for item in client.paged(users, resource=GRAPH, params={"$top": "999"}):
            got.append(item)
    assert got == [{"id": "1"}]  # yielded once, not twice
    assert len(rsps.calls) == 1


def test_retry_logs_count_attempts_against_the_limit_that_applies(ordered, tokens, caplog):
    client = make_client(tokens, Sleeps(), attempts=2, max_seconds=600)
    for _ in range(6):
        ordered.get(POLICIES, status=429, headers={"Retry-After": "1"}, json={})
    ordered.get(POLICIES, json=[])
    with caplog.at_level(logging.WARNING, logger="bridge.http"):
        assert client.get_json(POLICIES, resource=TEAMS_RESOURCE) == []
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == 6
    assert "(attempt 7 of at most 8," in retries[-1]  # a 429 gets 4 x BRIDGE_RETRY_ATTEMPTS


def test_connection_error_is_retried(ordered, client, sleeps):
    ordered.get(POLICIES, body=requests.ConnectionError("connection reset"))
    ordered.get(POLICIES, json=[])
    assert client.get_json(POLICIES, resource=TEAMS_RESOURCE) == []
    assert len(sleeps.waits) == 1


def test_connection_failing_every_time_is_a_server_error(rsps, client):
    rsps.get(POLICIES, body=requests.ConnectionError("no route to host"))
    with pytest.raises(ServerError, match=r"could not reach Teams admin API .* after 3"):
        client.get_json(POLICIES, resource=TEAMS_RESOURCE)


REFUSED = (
    "HTTPSConnectionPool(host='teams.test', port=443): Max retries exceeded with url: "
    "/Skype.Policy/configurations/TeamsMessagingPolicy (Caused by NewConnectionError("
    "'<urllib3.connection.HTTPSConnection object at 0x7f3a2c1b5e50>: Failed to establish a new "
    "connection: [Errno 111] Connection refused'))"
)


@pytest.mark.parametrize(
    ("resource", "where"),
    [(TEAMS_RESOURCE, "BRIDGE_TEAMS_URL (or --cloud"), (None, "the URL given")],
)
def test_a_refused_connection_names_the_host_and_what_to_check(rsps, client, resource, where):
    rsps.get(POLICIES, body=requests.ConnectionError(REFUSED))
    with pytest.raises(ServerError) as err:
        client.get_json(POLICIES, resource=resource)
    message = str(err.value)
    assert " at teams.test (GET /Skype.Policy/configurations/TeamsMessagingPolicy) after 3 " in (
        message
    )
    assert "attempt(s): the connection was refused; check the network and any proxy" in message
    assert f"that {where}" in message
    assert "urllib3" not in message and "HTTPSConnectionPool" not in message


def test_read_timeout_after_post_is_not_repeated(rsps, client, sleeps):
    rsps.post(POLICIES, body=requests.ReadTimeout("read timed out"))
    with pytest.raises(ServerError):
        client.request("POST", POLICIES, resource=TEAMS_RESOURCE, json={"Identity": "Tag:X"})
    assert len(rsps.calls) == 1
    assert sleeps.waits == []


def test_4xx_is_never_retried(rsps, client, sleeps):
    rsps.get(POLICIES, status=400, json={"error": {"code": "BadRequest", "message": "no"}})
    with pytest.raises(Exception, match="400 from Teams admin API"):
        client.get_json(POLICIES, resource=TEAMS_RESOURCE)
    assert len(rsps.calls) == 1


def test_three_pages_with_an_empty_one(rsps, client):
    rsps.get(
        USERS,
        match=[matchers.query_param_matcher({"$top": "2"})],
        json={
            "users": [{"Identity": "u1"}, {"Identity": "u2"}],
            "@odata.nextLink": f"{USERS}?page=2",
        },
    )
    rsps.get(
        USERS,
        match=[matchers.query_param_matcher({"page": "2"})],
        json={"users": [], "@odata.nextLink": f"{USERS}?page=3"},
    )
    rsps.get(
        USERS,
        match=[matchers.query_param_matcher({"page": "3"})],
        json={"users": [{"Identity": "u3"}]},
    )
    items = list(
        client.paged(USERS, resource=TEAMS_RESOURCE, items_key="users", params={"$top": "2"})
    )
    assert [i["Identity"] for i in items] == ["u1", "u2", "u3"]


def test_teams_style_next_link_and_relative_links(rsps, client):
    rsps.get(
        USERS,
        match=[matchers.query_param_matcher({})],
        json={"users": [{"Identity": "a"}], "nextLink": "/Teams.User/users?skip=1"},
    )
    rsps.get(
        USERS,
        match=[matchers.query_param_matcher({"skip": "1"})],
        json={"users": [{"Identity": "b"}]},
    )
    items = list(client.paged(USERS, resource=TEAMS_RESOURCE, items_key="users"))
    assert [i["Identity"] for i in items] == ["a", "b"]


def test_next_link_to_another_host_is_refused(rsps, client):
    rsps.get(USERS, json={"users": [], "@odata.nextLink": "https://evil.test/steal"})
    with pytest.raises(InvalidResponseError, match=r"not on https://teams\.test"):
        list(client.paged(USERS, resource=TEAMS_RESOURCE, items_key="users"))


def test_page_without_items_is_an_error_not_an_empty_result(rsps, client):
    rsps.get(USERS, json={"error": "odd"})
    with pytest.raises(InvalidResponseError, match="has no 'users' list"):
        list(client.paged(USERS, resource=TEAMS_RESOURCE, items_key="users"))


def test_gzip_body_is_decoded(rsps, client):
    body = gzip.compress(json.dumps([{"Identity": "Global", "AllowGiphy": True}]).encode())
    rsps.get(
        POLICIES,
        body=body,
        headers={"Content-Encoding": "gzip"},
        content_type="application/json",
    )
    assert client.get_json(POLICIES, resource=TEAMS_RESOURCE) == [
        {"Identity": "Global", "AllowGiphy": True}
    ]


def test_invalid_json_is_an_invalid_response(rsps, client):
    rsps.get(POLICIES, body="<html>gateway</html>", status=200)
    with pytest.raises(InvalidResponseError, match="body is not JSON"):
        client.get_json(POLICIES, resource=TEAMS_RESOURCE)


def test_403_from_teams_on_a_read_names_the_read_roles(rsps, client):
    rsps.get(POLICIES, status=403, json={"error": {"code": "Forbidden", "message": "denied"}})
    with pytest.raises(ForbiddenError) as err:
        client.get_json(POLICIES, resource=TEAMS_RESOURCE)
    message = str(err.value)
    assert message.startswith(
        "403 from Teams admin API: the app's service principal needs a directory role that can "
        "read Teams settings: Global Reader or Teams Reader (or Teams Administrator, which apply "
        "needs): Entra admin center > Roles and administrators [GET /Skype.Policy/"
    )
    assert "Forbidden: denied" in message
    # Also apart, so a report listing the failure more than once says it once.
    assert message.count("Global Reader") == 1
    assert err.value.brief.startswith("403 from Teams admin API [GET /Skype.Policy/")
    assert "Reader" not in err.value.brief and err.value.hint in message


def test_403_from_teams_on_a_write_names_teams_administrator_only(rsps, client):
    url = f"{POLICIES}/configuration/Kitchen"
    rsps.put(url, status=403, json={"error": {"code": "Forbidden", "message": "denied"}})
    with pytest.raises(ForbiddenError) as err:
        client.request("PUT", url, resource=TEAMS_RESOURCE, json={}, expected=(200,))
    assert err.value.hint == (
        "the app's service principal needs the Teams Administrator directory role to make "
        "changes: Entra admin center > Roles and administrators"
    )
    assert "Reader" not in str(err.value)


@pytest.mark.parametrize(
    ("path", "permission"),
    [
        ("/v1.0/groups", "Group.Read.All"),
        ("/v1.0/users/u1/memberOf", "GroupMember.Read.All"),
        ("/v1.0/users/u1", "User.Read.All"),
        ("/v1.0/admin/teams/policy/userAssignments/assign", "TeamsPolicyUserAssign.ReadWrite.All"),
        ("/v1.0/organization", "Organization.Read.All"),
    ],
)
def test_403_from_graph_names_the_permission(rsps, client, path, permission):
    rsps.get(f"{GRAPH}{path}", status=403, json={"error": {"code": "Authorization_RequestDenied"}})
    with pytest.raises(ForbiddenError) as err:
        client.get_json(f"{GRAPH}{path}", resource=GRAPH)
    assert f"403 from Graph: the app needs the Graph application permission {permission}" in str(
        err.value
    )


def test_401_names_the_credential(rsps, client):
    rsps.get(POLICIES, status=401, json={"error": {"code": "InvalidAuthenticationToken"}})
    with pytest.raises(UnauthorizedError) as err:
        client.get_json(POLICIES, resource=TEAMS_RESOURCE)
    assert "secret credential (app" in str(err.value)
    assert "BRIDGE_CLOUD" in str(err.value)


def test_404_and_409_are_typed(rsps, client):
    rsps.get(f"{POLICIES}/configuration/Tag:Nope", status=404, json={"error": {"code": "NotFound"}})
    rsps.post(POLICIES, status=409, json={"Message": "Tag:X already exists"})
    with pytest.raises(NotFoundError):
        client.get_json(f"{POLICIES}/configuration/Tag:Nope", resource=TEAMS_RESOURCE)
    with pytest.raises(ConflictError, match="Tag:X already exists"):
        client.request("POST", POLICIES, resource=TEAMS_RESOURCE, json={})


def test_tokens_and_secrets_never_reach_logs_or_errors(rsps, caplog):
    tokens = FakeTokens()
    secret = "client-secret-value-123"
    client = make_client(tokens, Sleeps(), secrets=(secret,))
    echoed = tokens.get_token(TEAMS_RESOURCE)
    rsps.get(
        POLICIES,
        status=400,
        json={
            "error": {"code": "Bad", "message": f"got Bearer {echoed} and client_secret={secret}"}
        },
    )
    with caplog.at_level(logging.DEBUG), pytest.raises(Exception) as err:
        client.get_json(POLICIES, resource=TEAMS_RESOURCE)
    sent_token = rsps.calls[0].request.headers["Authorization"].split()[1]
    for text in (str(err.value), caplog.text):
        assert sent_token not in text
        assert echoed not in text
        assert secret not in text
        assert "Authorization" not in text
    assert "[redacted]" in str(err.value)


def test_route_of_groups_objects():
    assert route_of(
        f"{TEAMS}/Skype.Policy/users/0b7e6a52-3a3b-4c4d-9e9f-0a1b2c3d4e5f/policies/X"
    ) == ("/Skype.Policy/users/{id}/policies/X")
    assert route_of(f"{POLICIES}/configuration/Tag:Clinical") == (
        "/Skype.Policy/configurations/TeamsMessagingPolicy/configuration/{identity}"
    )
    assert route_of(f"{GRAPH}/v1.0/users/a@b.org?$select=id") == "/v1.0/users/{id}"
    assert route_of(f"{GRAPH}/v1.0/admin/teams/policy/getPolicyId(type='T',name='X')") == (
        "/v1.0/admin/teams/policy/getPolicyId(...)"
    )


def test_map_concurrent_keeps_order_and_bounds_parallelism(tokens):
    client = make_client(tokens, concurrency=3)
    running, peak, lock = [0], [0], threading.Lock()

    def work(i: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return i * i

    assert client.map_concurrent(work, range(10)) == [i * i for i in range(10)]
    assert 1 < peak[0] <= 3


def test_map_concurrent_raises_the_first_failure(tokens):
    client = make_client(tokens, concurrency=2)

    def work(i: int) -> int:
        if i == 2:
            raise NotFoundError("item 2 missing", status=404)
        return i

    with pytest.raises(NotFoundError, match="item 2"):
        client.map_concurrent(work, range(4))


def test_webhook_client_sends_no_token_and_hides_the_path(rsps, caplog):
    hook = "https://hooks.test/webhookb2/SECRETPATH/IncomingWebhook/abc"
    rsps.post(hook, status=500, json={})
    client = HttpClient.for_webhooks(None)
    client._sleep = Sleeps()
    with caplog.at_level(logging.DEBUG), pytest.raises(ServerError) as err:
        client.request("POST", hook, json={"text": "drift"})
    assert "Authorization" not in rsps.calls[0].request.headers
    assert "SECRETPATH" not in str(err.value) and "SECRETPATH" not in caplog.text
    assert "SECRETPATH" not in (err.value.url or "")


def test_webhook_client_keeps_url_credentials_out_of_errors_and_logs(rsps, caplog):
    hook = "https://hookuser:hookpass@hooks.test:8443/webhookb2/x"
    rsps.post(hook, status=500, json={})
    client = HttpClient.for_webhooks(None)
    client._sleep = Sleeps()
    with caplog.at_level(logging.DEBUG), pytest.raises(ServerError) as err:
        client.request("POST", hook, json={"text": "drift"})
    shown = str(err.value) + (err.value.url or "") + caplog.text
    assert "hooks.test:8443" in shown
    assert "hookpass" not in shown and "hookuser" not in shown


def test_configured_ca_wins_over_the_process_environment(rsps, monkeypatch, tmp_path):
    # requests would otherwise let REQUESTS_CA_BUNDLE from the environment replace it
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    ca = tmp_path / "sandbox-ca.pem"
    client = HttpClient(FakeTokens(), HttpOptions(verify=str(ca)), sleep=Sleeps())
    rsps.get(POLICIES, json=[])
    client.get_json(POLICIES, resource=TEAMS_RESOURCE)
    assert rsps.calls[0].request.req_kwargs["verify"] == str(ca)


# --------------------------------------------------------------------------- idempotency


def _client_for_retries(sleeps: list[float]) -> HttpClient:
    return HttpClient(
        None, HttpOptions(retry_attempts=4, retry_max_seconds=60), sleep=sleeps.append
    )


def test_a_create_is_not_repeated_after_an_ambiguous_502() -> None:
    sleeps: list[float] = []
    client = _client_for_retries(sleeps)
    with responses.RequestsMock(
        assert_all_requests_are_fired=True, registry=registries.OrderedRegistry
    ) as rsps:
        rsps.post("https://api.example/create", status=502, json={"error": {"message": "bad"}})
        with pytest.raises(ServerError):
            client.request("POST", "https://api.example/create", json={"Identity": "Tag:X"})
        assert len(rsps.calls) == 1 and sleeps == []


def test_a_create_is_repeated_after_503_and_429_and_never_immediately() -> None:
    sleeps: list[float] = []
    client = _client_for_retries(sleeps)
    with responses.RequestsMock(
        assert_all_requests_are_fired=True, registry=registries.OrderedRegistry
    ) as rsps:
        rsps.post("https://api.example/create", status=503, headers={"Retry-After": "2"})
        rsps.post("https://api.example/create", status=429, headers={"Retry-After": "0"})
        rsps.post("https://api.example/create", status=201, json={"ok": True})
        client.request("POST", "https://api.example/create", json={})
    assert sleeps == [2.0, 0.5]


def test_a_retried_delete_that_finds_nothing_is_done() -> None:
    sleeps: list[float] = []
    client = _client_for_retries(sleeps)
    with responses.RequestsMock(
        assert_all_requests_are_fired=True, registry=registries.OrderedRegistry
    ) as rsps:
        rsps.delete("https://api.example/thing", status=504)
        rsps.delete("https://api.example/thing", status=404, json={"error": {"code": "NotFound"}})
        response = client.request("DELETE", "https://api.example/thing", expected=(204,))
    assert response.status_code == 404 and len(sleeps) == 1


def test_an_idempotent_post_is_retried_after_500() -> None:
    sleeps: list[float] = []
    client = _client_for_retries(sleeps)
    with responses.RequestsMock(
        assert_all_requests_are_fired=True, registry=registries.OrderedRegistry
    ) as rsps:
        rsps.post("https://api.example/assign", status=500)
        rsps.post("https://api.example/assign", status=204)
        client.request("POST", "https://api.example/assign", json={}, idempotent=True)
    assert len(sleeps) == 1


def test_a_429_storm_is_bounded_by_time_not_by_the_fault_attempts() -> None:
    sleeps: list[float] = []
    client = HttpClient(
        None, HttpOptions(retry_attempts=2, retry_max_seconds=60), sleep=sleeps.append
    )
    with responses.RequestsMock(
        assert_all_requests_are_fired=True, registry=registries.OrderedRegistry
    ) as rsps:
        for _ in range(5):
            rsps.get("https://api.example/x", status=429, headers={"Retry-After": "1"})
        rsps.get("https://api.example/x", json={"ok": True})
        assert client.get_json("https://api.example/x") == {"ok": True}
    assert sleeps == [1.0] * 5  # five waits where two 503s would already have failed the call
