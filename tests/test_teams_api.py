from __future__ import annotations

import pytest
from http_fixtures import (  # noqa: F401  (fixtures)
    GRAPH,
    POLICIES,
    TEAMS,
    TEAMS_RESOURCE,
    TENANT,
    FakeTokens,
    clean_env_fixture,
    client_fixture,
    make_client,
    policy_obj,
    rsps_fixture,
    sleeps_fixture,
    tokens_fixture,
)
from responses import matchers

from bridge.backends import make_backend
from bridge.backends.base import Backend, Wanted
from bridge.backends.graph import GraphClient, odata_string
from bridge.backends.teams_api import RestBackend, TeamsAdminClient
from bridge.errors import (
    ConfigError,
    ConflictError,
    ForbiddenError,
    InvalidResponseError,
    NotFoundError,
    ServerError,
)
from bridge.settings import Settings

GA = f"{TEAMS}/Skype.Policy/groupPolicyAssignments"
USERS = f"{TEAMS}/Teams.User/users"
BATCH = f"{GRAPH}/v1.0/$batch"
ASSIGN = f"{GRAPH}/v1.0/admin/teams/policy/userAssignments/assign"
CLIN_A = "0a0a0a0a-0000-0000-0000-00000000000a"
CLIN_B = "0b0b0b0b-0000-0000-0000-00000000000b"
FAC = "0c0c0c0c-0000-0000-0000-00000000000c"


@pytest.fixture
def teams(client):
    return TeamsAdminClient(client, TEAMS)


def backend_for(client, cloud: str = "commercial") -> RestBackend:
    settings = Settings.load(
        env_file=None,
        overrides={"BRIDGE_CLOUD": cloud, "BRIDGE_TEAMS_URL": TEAMS, "BRIDGE_GRAPH_URL": GRAPH},
    )
    return RestBackend(TeamsAdminClient(client, TEAMS), GraphClient(client, GRAPH), settings)


class OpaqueTokens(FakeTokens):
    """Tokens whose claims cannot be read (not JWT-shaped)."""

    def get_token(self, resource: str) -> str:
        self.requests.append(resource)
        return "opaque-token-value"


def test_an_unreadable_token_tenant_is_none_not_the_configured_one(rsps):
    rsps.get(POLICIES, json=[])
    rsps.get(f"{GA}/", json=[])
    rsps.get(USERS, json={"users": []})
    client = make_client(OpaqueTokens())
    settings = Settings.load(
        env_file=None,
        overrides={
            "AZURE_TENANT_ID": TENANT,
            "BRIDGE_TEAMS_URL": TEAMS,
            "BRIDGE_GRAPH_URL": GRAPH,
        },
    )
    backend = RestBackend(TeamsAdminClient(client, TEAMS), GraphClient(client, GRAPH), settings)
    # Falling back to AZURE_TENANT_ID would have the tenant guard compare it with itself.
    assert backend.read().tenant_id is None


# --------------------------------------------------------------------------- policies


@pytest.mark.parametrize("entry", ["oops", None, ["GroupId"]])
def test_a_group_assignment_entry_that_is_not_an_object_is_an_invalid_response(rsps, teams, entry):
    rsps.get(f"{GA}/", json=[entry])
    with pytest.raises(InvalidResponseError) as info:
        teams.list_group_assignments()
    assert "GET /Skype.Policy/groupPolicyAssignments/" in str(info.value)
    assert "not an object" in str(info.value)


def test_list_policies_strips_tag_and_keeps_unknown_fields(rsps, teams):
    rsps.get(
        POLICIES,
        json=[
            policy_obj("Global", AllowGiphy=True),
            policy_obj("Tag:Clinical", ReadReceiptsEnabledType="Everyone", BrandNewSetting=3),
        ],
    )
    policies = {p.key: p for p in teams.list_policies()}
    assert set(policies) == {"global", "clinical"}
    clinical = policies["clinical"]
    assert clinical.name == "Clinical"
    assert clinical.settings["ReadReceiptsEnabledType"] == "Everyone"
    assert clinical.settings["BrandNewSetting"] == 3
    assert "Key" not in clinical.settings and clinical.raw["Identity"] == "Tag:Clinical"


def test_get_policy_is_case_insensitive_and_names_a_missing_policy(rsps, teams):
    rsps.get(f"{POLICIES}/configuration/Tag:clinical", json=policy_obj("Tag:Clinical"))
    rsps.get(f"{POLICIES}/configuration/Tag:Nope", status=404, json={"error": {"code": "NotFound"}})
    assert teams.get_policy("clinical").key == "clinical"
    with pytest.raises(NotFoundError, match="messaging policy 'Nope'"):
        teams.get_policy("Tag:Nope")


def test_create_update_delete_bodies(rsps, teams):
    rsps.post(
        POLICIES,
        match=[
            matchers.json_params_matcher({"Identity": "Tag:Support Staff", "AllowGiphy": False})
        ],
        status=201,
        json=policy_obj("Tag:Support Staff", AllowGiphy=False),
    )
    rsps.put(
        f"{POLICIES}/configuration/Tag:Support%20Staff",
        match=[matchers.json_params_matcher({"AllowPriorityMessages": False})],
        json=policy_obj("Tag:Support Staff", AllowGiphy=False, AllowPriorityMessages=False),
    )
    rsps.put(
        f"{POLICIES}/configuration/Global",
        match=[matchers.json_params_matcher({"AllowGiphy": True})],
        json=policy_obj("Global", AllowGiphy=True),
    )
    rsps.delete(f"{POLICIES}/configuration/Tag:Support%20Staff", status=204)
    assert teams.create_policy("Support Staff", {"AllowGiphy": False}).name == "Support Staff"
    updated = teams.update_policy("Tag:Support Staff", {"AllowPriorityMessages": False})
    assert updated.settings["AllowPriorityMessages"] is False
    teams.update_policy("global", {"AllowGiphy": True})  # never Tag:Global
    teams.delete_policy("Support Staff")


def test_create_conflict_names_the_policy(rsps, teams):
    rsps.post(POLICIES, status=409, json={"error": {"code": "Conflict", "message": "exists"}})
    with pytest.raises(ConflictError, match="creating messaging policy 'Clinical'"):
        teams.create_policy("Clinical", {})


# --------------------------------------------------------------------------- assignments


def test_group_assignments_keep_only_messaging_policy(rsps, teams):
    rsps.get(
        f"{GA}/",
        json=[
            {
                "GroupId": CLIN_A,
                "PolicyType": "TeamsMessagingPolicy",
                "PolicyName": "Tag:Clinical",
                "Rank": 1,
                "Priority": 1,
            },
            {"GroupId": FAC, "PolicyType": "TeamsMeetingPolicy", "PolicyName": "X", "Rank": 1},
        ],
    )
    (only,) = teams.list_group_assignments()
    assert (only.group_id, only.policy, only.rank) == (CLIN_A, "Clinical", 1)


def test_add_and_remove_group_assignment(rsps, teams):
    url = f"{GA}/{FAC}/policyTypes/TeamsMessagingPolicy"
    rsps.patch(
        url,
        match=[matchers.json_params_matcher({"PolicyName": "Support Staff", "Rank": 2})],
        status=204,
    )
    rsps.delete(url, status=204)
    teams.add_group_assignment(FAC, "Tag:Support Staff", 2)
    teams.remove_group_assignment(FAC)


def test_grant_and_remove_direct(rsps, teams):
    url = f"{TEAMS}/Skype.Policy/users/u1/policies/TeamsMessagingPolicy"
    rsps.patch(url, match=[matchers.json_params_matcher({"PolicyName": "Clinical"})], status=204)
    rsps.patch(url, match=[matchers.json_params_matcher({"PolicyName": None})], status=204)
    teams.grant_user("u1", "Tag:Clinical")
    teams.grant_user("u1", None)


def test_list_users_pages(rsps, teams):
    rsps.get(
        USERS,
        match=[matchers.query_param_matcher({"$top": "1000"})],
        json={
            "users": [
                {
                    "Identity": "u1",
                    "UserPrincipalName": "a@contoso.org",
                    "TeamsMessagingPolicy": "Clinical",
                },
                {
                    "Identity": "u2",
                    "UserPrincipalName": "b@contoso.org",
                    "TeamsMessagingPolicy": None,
                },
            ],
            "@odata.nextLink": f"{USERS}?$skiptoken=p2",
        },
    )
    rsps.get(
        USERS,
        match=[matchers.query_param_matcher({"$skiptoken": "p2"})],
        json={
            "users": [
                {
                    "Identity": "u3",
                    "UserPrincipalName": "c@contoso.org",
                    "TeamsMessagingPolicy": "Tag:Support Staff",
                }
            ]
        },
    )
    users, direct = teams.list_users()
    assert [u.id for u in users] == ["u1", "u2", "u3"]
    assert [(a.user_id, a.policy, a.upn) for a in direct] == [
        ("u1", "Clinical", "a@contoso.org"),
        ("u3", "Support Staff", "c@contoso.org"),
    ]


# --------------------------------------------------------------------------- RestBackend.read


def mock_tenant_reads(rsps) -> None:
    rsps.get(POLICIES, json=[policy_obj("Global"), policy_obj("Tag:Clinical")])
    rsps.get(
        f"{GA}/",
        json=[
            {
                "GroupId": FAC,
                "PolicyType": "TeamsMessagingPolicy",
                "PolicyName": "Clinical",
                "Rank": 1,
            }
        ],
    )
    rsps.get(
        USERS,
        json={
            "users": [
                {
                    "Identity": "u1",
                    "UserPrincipalName": "night.charge@contoso.org",
                    "TeamsMessagingPolicy": "Clinical",
                }
            ]
        },
    )


@pytest.mark.usefixtures("clean_env")
def test_read_whole_state_with_few_requests(rsps, tokens, sleeps):
    client = make_client(tokens, sleeps, concurrency=3)
    mock_tenant_reads(rsps)
    select = "?$select=id,userPrincipalName,displayName,department"
    rsps.post(
        BATCH,
        match=[
            matchers.json_params_matcher(
                {
                    "requests": [
                        {"id": "0", "method": "GET", "url": "/users/new.hire@contoso.org" + select}
                    ]
                }
            )
        ],
        json={"responses": [{"id": "0", "status": 404, "body": {}}]},
    )
    by_name = "/groups?$filter=displayName%20eq%20{}&$select=id,displayName"
    rsps.post(
        BATCH,
        match=[
            matchers.json_params_matcher(
                {
                    "requests": [
                        {
                            "id": "0",
                            "method": "GET",
                            "url": by_name.format(odata_string("Clinicians")),
                        },
                        {"id": "1", "method": "GET", "url": by_name.format(odata_string("Gone"))},
                    ]
                }
            )
        ],
        json={
            "responses": [
                {
                    "id": "0",
                    "status": 200,
                    "body": {
                        "value": [
                            {"id": CLIN_A, "displayName": "Clinicians"},
                            {"id": CLIN_B, "displayName": "Clinicians"},
                        ]
                    },
                },
                {"id": "1", "status": 200, "body": {"value": []}},
            ]
        },
    )
    # The assigned group the names did not find is then looked up by id.
    rsps.post(
        BATCH,
        match=[
            matchers.json_params_matcher(
                {
                    "requests": [
                        {"id": "0", "method": "GET", "url": f"/groups/{FAC}?$select=id,displayName"}
                    ]
                }
            )
        ],
        json={
            "responses": [
                {"id": "0", "status": 200, "body": {"id": FAC, "displayName": "Facilities"}}
            ]
        },
    )
    backend = backend_for(client)
    assert isinstance(backend, Backend)
    state = backend.read(
        Wanted(
            groups=("Clinicians", "Gone"),
            users=("night.charge@contoso.org", "new.hire@contoso.org"),
        )
    )
    assert state.tenant_id == TENANT
    assert set(state.policies) == {"global", "clinical"}
    assert state.group_assignments[FAC].group_name == "Facilities"
    assert state.user_assignments["u1"].upn == "night.charge@contoso.org"
    assert [g.id for g in state.directory.groups_by_ref("Clinicians")] == [CLIN_A, CLIN_B]
    assert state.directory.searched_groups == {"Gone"}
    assert state.directory.searched_users == {"new.hire@contoso.org"}
    assert state.directory.user_by_ref("NIGHT.CHARGE@contoso.org").id == "u1"
    # policies, group assignments, 1 users page, 3 batches (user, group names, unnamed group id)
    assert client.stats["total"] == 6


@pytest.mark.usefixtures("clean_env")
def test_read_fails_instead_of_returning_an_empty_state(rsps, tokens, sleeps):
    client = make_client(tokens, sleeps, attempts=2, concurrency=1)
    rsps.get(POLICIES, status=503, json={"error": {"code": "ServiceUnavailable", "message": "x"}})
    with pytest.raises(ServerError, match="503 from Teams admin API"):
        backend_for(client).read()


# --------------------------------------------------------------------------- RestBackend writes


@pytest.mark.usefixtures("clean_env")
def test_assign_users_in_bulk_through_graph(rsps, client):
    get_id = f"{GRAPH}/v1.0/admin/teams/policy/getPolicyId(type='TeamsMessagingPolicy',name='{{}}')"
    rsps.get(
        get_id.format("Clinical"), json={"value": [{"name": "Tag:Clinical", "policyId": "p-c"}]}
    )
    rsps.get(get_id.format("Nope"), json={"value": []})
    users = [f"u{i}" for i in range(1001)]
    entry = lambda uid: {"userId": uid, "policyType": "TeamsMessagingPolicy", "policyId": "p-c"}  # noqa: E731
    rsps.post(
        ASSIGN,
        match=[matchers.json_params_matcher({"value": [entry(u) for u in users[:1000]]})],
        status=204,
    )
    rsps.post(
        ASSIGN,
        match=[matchers.json_params_matcher({"value": [entry(users[1000])]})],
        status=400,
        json={"error": {"code": "BadRequest", "message": "user not licensed"}},
    )
    result = backend_for(client).assign_users(
        [(u, "Clinical") for u in users] + [("x", "Nope"), ("y", "Nope")]
    )
    assert result.requested == 1003
    assert result.succeeded == 1000
    assert result.write_requests == 2
    failed = {f.user_id: f.message for f in result.failures}
    assert set(failed) == {"u1000", "x", "y"}
    assert "user not licensed" in failed["u1000"]
    assert "no policy id" in failed["x"]
    # getPolicyId asked once per policy despite 1,001 users
    assert client.stats["routes"]["GET /v1.0/admin/teams/policy/getPolicyId(...)"] == 2


@pytest.mark.usefixtures("clean_env")
def test_assign_and_unassign_per_user_where_graph_has_no_assignment(rsps, tokens, sleeps):
    client = make_client(tokens, sleeps, concurrency=2)
    url = f"{TEAMS}/Skype.Policy/users/{{}}/policies/TeamsMessagingPolicy"
    rsps.patch(
        url.format("u1"),
        match=[matchers.json_params_matcher({"PolicyName": "Clinical"})],
        status=204,
    )
    rsps.patch(
        url.format("u2"),
        match=[matchers.json_params_matcher({"PolicyName": "Clinical"})],
        status=404,
        json={"error": {"code": "UserNotFound", "message": "no such user"}},
    )
    rsps.patch(
        url.format("u3"), match=[matchers.json_params_matcher({"PolicyName": None})], status=204
    )
    backend = backend_for(client, cloud="gcchigh")
    result = backend.assign_users([("u1", "Tag:Clinical"), ("u2", "Clinical")])
    assert (result.succeeded, result.write_requests) == (1, 2)
    (failure,) = result.failures
    assert failure.user_id == "u2" and "no such user" in failure.message
    assert backend.unassign_users(["u3"]).succeeded == 1


@pytest.mark.usefixtures("clean_env")
def test_bulk_forbidden_raises_once(rsps, client):
    rsps.post(
        f"{GRAPH}/v1.0/admin/teams/policy/userAssignments/unassign",
        status=403,
        json={"error": {"code": "Forbidden"}},
    )
    with pytest.raises(ForbiddenError, match=r"TeamsPolicyUserAssign\.ReadWrite\.All"):
        backend_for(client).unassign_users(["u1", "u2"])


# --------------------------------------------------------------------------- factory


@pytest.mark.usefixtures("clean_env")
def test_make_backend(client):
    settings = Settings.load(env_file=None)
    backend = make_backend("rest", settings, client.token_provider, http=client)
    assert isinstance(backend, RestBackend) and backend.http is client
    assert backend.teams.base_url == settings.teams_url
    with pytest.raises(
        ConfigError, match="unknown transport 'soap': choose one of rest, powershell"
    ):
        make_backend("soap", settings, client.token_provider)


@pytest.mark.usefixtures("clean_env")
def test_a_bulk_call_stopped_by_a_403_keeps_the_chunks_already_sent(rsps, client, monkeypatch):
    import bridge.backends.teams_api as teams_api

    monkeypatch.setattr(teams_api, "GRAPH_ASSIGN_CHUNK", 2)
    unassign = f"{GRAPH}/v1.0/admin/teams/policy/userAssignments/unassign"

    def body(*ids):
        return {"value": [{"userId": u, "policyType": "TeamsMessagingPolicy"} for u in ids]}

    rsps.post(unassign, match=[matchers.json_params_matcher(body("u1", "u2"))], status=204)
    rsps.post(
        unassign,
        match=[matchers.json_params_matcher(body("u3", "u4"))],
        status=403,
        json={"error": {"code": "Forbidden"}},
    )
    with pytest.raises(ForbiddenError) as err:
        backend_for(client).unassign_users(["u1", "u2", "u3", "u4", "u5"])
    partial = err.value.bulk_result
    assert (partial.requested, partial.succeeded, partial.write_requests) == (5, 2, 2)
    sent, denied = partial.chunks
    assert (sent.user_ids, sent.error) == (("u1", "u2"), None)
    assert sent.correlation_id is not None and sent.correlation_id != denied.correlation_id
    assert denied.user_ids == ("u3", "u4") and "403" in (denied.error or "")
    assert denied.correlation_id == err.value.correlation_id
    assert {f.user_id for f in partial.failures} == {"u3", "u4"}  # u5: never sent


@pytest.mark.usefixtures("clean_env")
def test_per_user_grants_each_carry_their_own_correlation_id(rsps, tokens, sleeps):
    client = make_client(tokens, sleeps, concurrency=2)
    url = f"{TEAMS}/Skype.Policy/users/{{}}/policies/TeamsMessagingPolicy"
    for uid in ("u1", "u2"):
        rsps.patch(
            url.format(uid), match=[matchers.json_params_matcher({"PolicyName": None})], status=204
        )
    result = backend_for(client, cloud="gcchigh").unassign_users(["u1", "u2"])
    sent = {c.user_ids: c.correlation_id for c in result.chunks}
    assert set(sent) == {("u1",), ("u2",)}
    ids = [call.request.headers["x-ms-correlation-id"] for call in rsps.calls]
    assert sorted(sent.values()) == sorted(ids)


@pytest.mark.usefixtures("clean_env")
def test_one_groups_assignment_is_the_list_filtered(rsps, client):
    rsps.get(
        f"{GA}/",
        json=[
            {"GroupId": FAC, "PolicyType": "TeamsMeetingPolicy", "PolicyName": "X", "Rank": 1},
            {
                "GroupId": CLIN_A.upper(),
                "PolicyType": "TeamsMessagingPolicy",
                "PolicyName": "Tag:Clinical",
                "Rank": 2,
            },
        ],
    )
    backend = backend_for(client)
    held = backend.group_assignment(CLIN_A)
    assert held is not None and (held.policy, held.rank) == ("Clinical", 2)
    assert backend.group_assignment(FAC) is None  # a meeting policy is not a messaging one
