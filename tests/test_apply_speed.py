"""Apply's reads and writes side by side (issue 14): group members read concurrently (each group's
pages a chain), not at all when nothing needs them, and bulk assignment chunks sent concurrently
with their outcomes recorded in chunk order."""

from __future__ import annotations

import json
import threading

import pytest
from factories import gid, tenant, uid
from http_fixtures import (  # noqa: F401  (fixtures)
    GRAPH,
    TEAMS,
    clean_env_fixture,
    make_client,
    rsps_fixture,
    sleeps_fixture,
    tokens_fixture,
)
from responses import matchers

import bridge.backends.teams_api as teams_api
from bridge.backends.graph import GraphClient
from bridge.backends.teams_api import RestBackend, TeamsAdminClient
from bridge.commands import read_members_for_safety
from bridge.errors import ForbiddenError
from bridge.plan import Plan, SetGroupAssignment, SetUserAssignment
from bridge.session import Session, SessionOptions
from bridge.settings import Settings

ASSIGN = f"{GRAPH}/v1.0/admin/teams/policy/userAssignments/assign"
POLICY_ID = f"{GRAPH}/v1.0/admin/teams/policy/getPolicyId"


def backend_for(client, concurrency: int = 4) -> RestBackend:
    settings = Settings.load(
        env_file=None,
        overrides={
            "BRIDGE_TEAMS_URL": TEAMS,
            "BRIDGE_GRAPH_URL": GRAPH,
            "BRIDGE_CONCURRENCY": str(concurrency),
        },
    )
    return RestBackend(TeamsAdminClient(client, TEAMS), GraphClient(client, GRAPH), settings)


def session_for(backend: RestBackend) -> Session:
    session = Session(SessionOptions())
    session._backend = backend  # the backend the session would build, over the mocked client
    session.settings = backend.settings
    return session


def members_url(n: int) -> str:
    return f"{GRAPH}/v1.0/groups/{gid(n)}/members"


def user_rows(*numbers: int) -> list[dict[str, str]]:
    return [{"id": uid(m), "userPrincipalName": f"user{m}@northwind-health.org"} for m in numbers]


class Together:
    """A ``responses`` callback that answers only once ``parties`` requests are in flight at
    once: sent one after another, the first waits in vain and the test fails."""

    def __init__(self, parties: int, answer):
        self.barrier = threading.Barrier(parties, timeout=5)
        self.answer = answer

    def __call__(self, request):
        self.barrier.wait()  # BrokenBarrierError (the test fails) unless sent side by side
        return self.answer(request)


# --------------------------------------------------------------------------- member reads


@pytest.mark.usefixtures("clean_env")
def test_groups_are_read_side_by_side_each_page_once_in_its_chain(rsps, tokens, sleeps):
    client = make_client(tokens, sleeps, concurrency=3)
    state = tenant(groups=[(0, "Clinical"), (1, "Clinical"), (2, "Nursing")], n_users=6)
    pages = {0: [user_rows(0, 1), user_rows(2)], 1: [user_rows(3)], 2: [user_rows(4, 5)]}

    def first_page(n):
        def answer(request):
            body = {"value": pages[n][0]}
            if len(pages[n]) > 1:
                body["@odata.nextLink"] = f"{members_url(n)}?$skiptoken=2"
            return 200, {}, json.dumps(body)

        return answer

    together = {n: first_page(n) for n in pages}
    barrier = Together(3, lambda request: together[int(request.url.split("/")[-2][-1])](request))
    for n in pages:
        rsps.add_callback(
            "GET",
            members_url(n),
            callback=barrier,
            match=[
                matchers.query_param_matcher({"$select": "id,userPrincipalName", "$top": "999"})
            ],
        )
    # The second page of group 0 follows its first (a chain), read once.
    rsps.get(
        f"{members_url(0)}",
        match=[matchers.query_param_matcher({"$skiptoken": "2"})],
        json={"value": pages[0][1]},
    )
    session = session_for(backend_for(client, concurrency=3))
    session.fill_group_members(state, [gid(2), gid(0), gid(1), gid(0)])
    assert state.directory.groups[gid(0)].members == (uid(0), uid(1), uid(2))
    assert state.directory.groups[gid(1)].members == (uid(3),)
    assert state.directory.groups[gid(2)].members == (uid(4), uid(5))
    assert len(rsps.calls) == 4  # every page once
    # Read again: nothing (members already read).
    session.fill_group_members(state, [gid(0), gid(1), gid(2)])
    assert len(rsps.calls) == 4


@pytest.mark.usefixtures("clean_env")
def test_a_failed_group_read_fails_the_whole_read(rsps, tokens, sleeps):
    client = make_client(tokens, sleeps, concurrency=3)
    state = tenant(groups=[(0, "Clinical"), (1, "Clinical"), (2, "Nursing")], n_users=6)
    rsps.get(members_url(0), json={"value": user_rows(0)})
    rsps.get(members_url(1), status=403, json={"error": {"code": "Authorization_RequestDenied"}})
    rsps.get(members_url(2), json={"value": user_rows(2)})
    session = session_for(backend_for(client, concurrency=3))
    with pytest.raises(ForbiddenError):
        session.fill_group_members(state, [gid(0), gid(1), gid(2)])
    # Never taken for an empty group.
    assert state.directory.groups[gid(1)].members is None


def direct_plan(state) -> Plan:
    return Plan([SetUserAssignment(uid(3), None, "Clinical")], state.tenant_id)


@pytest.mark.usefixtures("clean_env")
def test_no_member_read_under_force_when_no_group_assignment_changes(rsps, tokens, sleeps):
    client = make_client(tokens, sleeps, concurrency=3)
    state = tenant(groups=[(0, "Clinical")], n_users=6)
    session = session_for(backend_for(client))
    # Nothing registered: any request would fail the test.
    assert read_members_for_safety(session, state, direct_plan(state), force=True) is False
    assert state.directory.groups[gid(0)].members is None
    assert len(rsps.calls) == 0


@pytest.mark.usefixtures("clean_env")
def test_members_are_read_without_force_and_for_a_group_change_under_force(rsps, tokens, sleeps):
    client = make_client(tokens, sleeps, concurrency=3)
    state = tenant(groups=[(0, "Clinical")], n_users=6)
    session = session_for(backend_for(client))
    rsps.get(members_url(0), json={"value": user_rows(1)})
    assert read_members_for_safety(session, state, direct_plan(state)) is True
    assert state.directory.groups[gid(0)].members == (uid(1),)
    # A group assignment change under --force: the re-run advice of a failed replacement
    # counts the members it moves.
    other = tenant(groups=[(0, "Clinical")], n_users=6)
    rsps.get(members_url(0), json={"value": user_rows(2)})
    rsps.get(members_url(1), json={"value": user_rows(3)})
    plan = Plan([SetGroupAssignment(gid(1), "Group 1", "Nursing", 1)], other.tenant_id)
    assert read_members_for_safety(session, other, plan, force=True) is True
    assert other.directory.groups[gid(1)].members == (uid(3),)


# --------------------------------------------------------------------------- bulk writes


def assign_body(*numbers: int) -> dict:
    return {
        "value": [
            {"userId": uid(n), "policyType": "TeamsMessagingPolicy", "policyId": "pid-clinical"}
            for n in numbers
        ]
    }


@pytest.mark.usefixtures("clean_env")
def test_bulk_chunks_go_out_side_by_side_and_are_recorded_in_chunk_order(
    rsps, tokens, sleeps, monkeypatch
):
    monkeypatch.setattr(teams_api, "GRAPH_ASSIGN_CHUNK", 2)
    client = make_client(tokens, sleeps, concurrency=3)
    rsps.get(
        f"{POLICY_ID}(type='TeamsMessagingPolicy',name='Clinical')",
        json={"value": [{"name": "Clinical", "policyId": "pid-clinical"}]},
    )
    together = Together(3, lambda request: (204, {}, ""))
    for chunk in ((0, 1), (2, 3), (4,)):
        rsps.add_callback(
            "POST",
            ASSIGN,
            callback=together,
            match=[matchers.json_params_matcher(assign_body(*chunk))],
        )
    backend = backend_for(client, concurrency=3)
    result = backend.assign_users([(uid(n), "Clinical") for n in range(5)])
    assert (result.succeeded, result.write_requests, result.failures) == (5, 3, [])
    assert [c.user_ids for c in result.chunks] == [
        (uid(0), uid(1)),
        (uid(2), uid(3)),
        (uid(4),),
    ]
    # Each chunk carries the correlation id of the request that sent its users.
    sent = {}
    for call in rsps.calls:
        if call.request.url == ASSIGN:
            users = tuple(v["userId"] for v in json.loads(call.request.body)["value"])
            sent[users] = call.request.headers["x-ms-correlation-id"]
    assert {c.user_ids: c.correlation_id for c in result.chunks} == sent
    # The call's receipt is its last chunk's request, as when the chunks went one by one.
    assert backend.last_write().correlation_id == result.chunks[-1].correlation_id


@pytest.mark.usefixtures("clean_env")
def test_a_denied_chunk_among_concurrent_ones_raises_once_with_every_sent_chunk(
    rsps, tokens, sleeps, monkeypatch
):
    monkeypatch.setattr(teams_api, "GRAPH_ASSIGN_CHUNK", 2)
    client = make_client(tokens, sleeps, concurrency=2)
    rsps.get(
        f"{POLICY_ID}(type='TeamsMessagingPolicy',name='Clinical')",
        json={"value": [{"name": "Clinical", "policyId": "pid-clinical"}]},
    )
    denied = (403, {}, '{"error": {"code": "Forbidden"}}')
    answers = {uid(0): (204, {}, ""), uid(2): denied}
    together = Together(2, lambda request: answers[json.loads(request.body)["value"][0]["userId"]])
    for chunk in ((0, 1), (2, 3)):
        rsps.add_callback(
            "POST",
            ASSIGN,
            callback=together,
            match=[matchers.json_params_matcher(assign_body(*chunk))],
        )
    with pytest.raises(ForbiddenError) as err:
        backend_for(client, concurrency=2).assign_users([(uid(n), "Clinical") for n in range(4)])
    partial = err.value.partial
    assert (partial.succeeded, partial.write_requests) == (2, 2)
    assert [c.error is None for c in partial.chunks] == [True, False]
    assert {f.user_id for f in partial.failures} == {uid(2), uid(3)}


@pytest.mark.usefixtures("clean_env")
def test_policy_ids_are_looked_up_side_by_side_once_each(rsps, tokens, sleeps):
    client = make_client(tokens, sleeps, concurrency=2)

    def policy_id(request):
        name = "Clinical" if "Clinical" in request.url else "Nursing"
        body = {"value": [{"name": name, "policyId": f"pid-{name.lower()}"}]}
        return 200, {}, json.dumps(body)

    together = Together(2, policy_id)
    for name in ("Clinical", "Nursing"):
        rsps.add_callback(
            "GET", f"{POLICY_ID}(type='TeamsMessagingPolicy',name='{name}')", callback=together
        )
    body = assign_body(0, 2)
    body["value"].insert(1, {**body["value"][0], "userId": uid(1), "policyId": "pid-nursing"})
    rsps.post(ASSIGN, match=[matchers.json_params_matcher(body)], status=204)
    result = backend_for(client, concurrency=2).assign_users(
        [(uid(0), "Clinical"), (uid(1), "Nursing"), (uid(2), "Tag:Clinical")]
    )
    assert (result.succeeded, result.write_requests) == (3, 1)
    assert client.stats["routes"]["GET /v1.0/admin/teams/policy/getPolicyId(...)"] == 2


@pytest.mark.usefixtures("clean_env")
def test_members_read_side_by_side_are_seen_by_the_runs_scoped_observers(rsps, tokens, sleeps):
    """A fleet counts each tenant's requests through observers scoped to its run (contextvars):
    the worker threads that read groups side by side must carry that scope."""
    from bridge.http import observing

    class Seen:
        def __init__(self) -> None:
            self.statuses: list[str] = []

        def before(self, api: str) -> None:
            pass

        def done(self, api: str, status: str) -> None:
            self.statuses.append(status)

        def throttled(self, api: str) -> None:
            pass

    client = make_client(tokens, sleeps, concurrency=3)
    state = tenant(groups=[(0, "Clinical"), (1, "Clinical"), (2, "Nursing")], n_users=3)
    for n in range(3):
        rsps.get(members_url(n), json={"value": user_rows(n)})
    seen = Seen()
    with observing(seen):
        session_for(backend_for(client, concurrency=3)).fill_group_members(
            state, [gid(0), gid(1), gid(2)]
        )
    assert seen.statuses == ["200", "200", "200"]
