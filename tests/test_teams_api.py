from __future__ import annotations

import json
import string

import pytest
import responses
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
from hypothesis import given, settings
from hypothesis import strategies as st
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
    partial = err.value.partial
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


# --------------------------------------------------------------------------- answer shapes
# Every shape a public source records (docs/wire.md, "Answer shapes") is read right; anything the
# readers cannot place is refused with the route and the field, never dropped.

WARNING = "The policy was saved; some settings take up to 24 hours to apply."


def _ga(**fields):
    return {"PolicyType": "TeamsMessagingPolicy", **fields}


@pytest.mark.parametrize(
    "entry",
    [
        {
            "groupId": CLIN_A,
            "policyType": "TeamsMessagingPolicy",
            "policyName": "Tag:Clinical",
            "rank": 2,
        },
        {
            "GroupId": CLIN_A,
            "PolicyType": "teamsmessagingpolicy",
            "PolicyName": "Clinical",
            "Priority": 2,
        },
        {
            "GROUPID": CLIN_A,
            "POLICYTYPE": "TeamsMessagingPolicy",
            "POLICYNAME": "Clinical",
            "RANK": "2",
        },
        _ga(GroupId=CLIN_A, PolicyName="Clinical", Rank=2, Priority=2),
    ],
    ids=["camelCase", "Priority", "UPPER and a rank as text", "Rank and Priority agree"],
)
def test_group_assignments_in_every_recorded_key_spelling(rsps, teams, entry):
    rsps.get(f"{GA}/", json=[entry, {"groupId": FAC, "policyType": "TeamsMeetingPolicy"}])
    (only,) = teams.list_group_assignments()
    assert (only.group_id, only.policy, only.rank) == (CLIN_A, "Clinical", 2)


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        ({"GroupId": CLIN_A, "PolicyName": "Clinical", "Rank": 1}, "'PolicyType'"),
        (_ga(PolicyName="Clinical", Rank=1), "'GroupId'"),
        (_ga(GroupId=CLIN_A, Rank=1), "'PolicyName'"),
        (_ga(GroupId=CLIN_A, PolicyName="Clinical"), "'Rank' / 'Priority'"),
        (_ga(GroupId=CLIN_A, PolicyName="Clinical", Rank="first"), "not a whole number"),
        (_ga(GroupId=CLIN_A, PolicyName="Clinical", Rank=True), "not a whole number"),
        (_ga(GroupId=CLIN_A, PolicyName="Clinical", Rank=0), "rank 0, out of whole number from 1"),
        (_ga(GroupId=CLIN_A, PolicyName="Clinical", Rank=10**30), "rank 1000000000000000000"),
        (_ga(GroupId=CLIN_A, PolicyName="Clinical", Rank=1, Priority=2), "different values"),
        (_ga(GroupId=CLIN_A, groupId=FAC, PolicyName="Clinical", Rank=1), "different values"),
    ],
    ids=[
        "no type",
        "no group",
        "no policy",
        "no rank",
        "rank text",
        "rank bool",
        "rank 0",
        "rank 10**30",
        "rank/priority",
        "two ids",
    ],
)
def test_a_group_assignment_entry_that_cannot_be_placed_fails_the_read(rsps, teams, entry, said):
    rsps.get(f"{GA}/", json=[_ga(GroupId=FAC, PolicyName="Kitchen", Rank=1), entry])
    with pytest.raises(InvalidResponseError) as info:
        teams.list_group_assignments()
    message = str(info.value)
    assert "GET /Skype.Policy/groupPolicyAssignments/, entry 1, " in message
    assert said in message


def _user(uid, upn=None, policy=None):
    return {
        "Identity": uid,
        "UserPrincipalName": upn or f"{uid}@contoso.org",
        "TeamsMessagingPolicy": policy,
    }


@pytest.mark.parametrize("key", ["nextLink", "NextLink", "@odata.nextLink", "NEXTLINK"])
def test_users_pages_linked_under_any_recorded_name_are_all_read(rsps, teams, key):
    rsps.get(
        USERS,
        match=[matchers.query_param_matcher({"$top": "1000"})],
        json={"users": [_user("u1", policy="Clinical")], key: f"{USERS}?$top=1000&$skiptoken=2"},
    )
    rsps.get(
        USERS,
        match=[matchers.query_param_matcher({"$top": "1000", "$skiptoken": "2"})],
        json={"users": [_user("u2")], key: "/Teams.User/users?$top=1000&$skiptoken=3"},
    )
    rsps.get(
        USERS,
        match=[matchers.query_param_matcher({"$top": "1000", "$skiptoken": "3"})],
        json={"users": [_user("u3", policy="Tag:Kitchen")]},
    )
    users, direct = teams.list_users()
    assert [u.id for u in users] == ["u1", "u2", "u3"]
    assert [(a.user_id, a.policy) for a in direct] == [("u1", "Clinical"), ("u3", "Kitchen")]


@pytest.mark.parametrize("key", ["skipToken", "SkipToken", "$skiptoken", "@odata.skipToken"])
def test_users_pages_named_by_a_bare_skip_token_are_all_read(rsps, teams, key):
    rsps.get(
        USERS,
        match=[matchers.query_param_matcher({"$top": "1000"})],
        json={"users": [_user("u1")], key: "opaque=1"},
    )
    rsps.get(
        USERS,
        match=[matchers.query_param_matcher({"$top": "1000", "$skiptoken": "opaque=1"})],
        json={"users": [_user("u2")], key: "b"},
    )
    # The next token replaces the one the request carried (in any spelling), $top stays.
    rsps.get(
        USERS,
        match=[matchers.query_param_matcher({"$top": "1000", "$skiptoken": "b"})],
        json={"users": [_user("u3")], key: None},
    )
    users, _ = teams.list_users()
    assert [u.id for u in users] == ["u1", "u2", "u3"]


def test_users_in_the_live_shape_go_teams_records(rsps, teams):
    """objectId / userPrincipalName, the direct policy as the type's Direct entry of
    effectivePolicyAssignments; a group's entry is not a direct assignment."""

    def entry(kind, name, ptype="TeamsMessagingPolicy"):
        return {
            "policyType": ptype,
            "policyAssignment": {"assignmentType": kind, "displayName": name},
        }

    rsps.get(
        USERS,
        json={
            "users": [
                {
                    "objectId": "u1",
                    "userPrincipalName": "a@contoso.org",
                    "effectivePolicyAssignments": [
                        entry("Direct", "tfprobe", "TeamsMeetingPolicy"),
                        entry("Direct", "Tag:Clinical"),
                    ],
                },
                {
                    "objectId": "u2",
                    "userPrincipalName": "b@contoso.org",
                    "effectivePolicyAssignments": [entry("Group", "Kitchen")],
                },
                {
                    "objectId": "u3",
                    "userPrincipalName": "c@contoso.org",
                    "effectivePolicyAssignments": [],
                },
                {
                    "objectId": "u4",
                    "userPrincipalName": "d@contoso.org",
                    "teamsMessagingPolicy": "Kitchen",
                },
            ],
            "@odata.count": 4,
        },
    )
    users, direct = teams.list_users()
    assert [(u.id, u.upn) for u in users] == [
        ("u1", "a@contoso.org"),
        ("u2", "b@contoso.org"),
        ("u3", "c@contoso.org"),
        ("u4", "d@contoso.org"),
    ]
    assert [(a.user_id, a.policy, a.upn) for a in direct] == [
        ("u1", "Clinical", "a@contoso.org"),
        ("u4", "Kitchen", "d@contoso.org"),
    ]


@pytest.mark.parametrize(
    ("row", "said"),
    [
        (
            {"UserPrincipalName": "x@contoso.org", "TeamsMessagingPolicy": None},
            "'Identity' / 'ObjectId'",
        ),
        ({"Identity": "u9", "TeamsMessagingPolicy": None}, "'UserPrincipalName'"),
        ({"Identity": "u9", "UserPrincipalName": "x@contoso.org"}, "effectivePolicyAssignments"),
        (
            {
                "Identity": "u9",
                "UserPrincipalName": "x",
                "effectivePolicyAssignments": [
                    {
                        "policyType": "TeamsMessagingPolicy",
                        "policyAssignment": {"assignmentType": "Inherited", "displayName": "X"},
                    }
                ],
            },
            "'inherited'",
        ),
        (
            {
                "Identity": "u9",
                "UserPrincipalName": "x",
                "effectivePolicyAssignments": [
                    {"policyType": "TeamsMessagingPolicy", "policyAssignment": {"displayName": "X"}}
                ],
            },
            "'assignmentType'",
        ),
        (
            {
                "Identity": "u9",
                "ObjectId": "u8",
                "UserPrincipalName": "x",
                "TeamsMessagingPolicy": None,
            },
            "different values",
        ),
        (
            {"Identity": "u9", "UserPrincipalName": "x", "TeamsMessagingPolicy": {"Name": "X"}},
            "not a policy name",
        ),
        ("u9", "not an object"),
    ],
    ids=[
        "no id",
        "no upn",
        "no policy field",
        "unknown kind",
        "no kind",
        "two ids",
        "policy object",
        "text",
    ],
)
def test_a_user_entry_that_cannot_be_placed_fails_the_read(rsps, teams, row, said):
    rsps.get(USERS, json={"users": [_user("u1"), row]})
    with pytest.raises(InvalidResponseError) as info:
        teams.list_users()
    assert "GET /Teams.User/users, user 1, " in str(info.value)
    assert said in str(info.value)


@pytest.mark.parametrize(
    ("page", "said"),
    [
        ({"users": [], "continuationToken": "abc"}, "'continuationToken'"),
        ({"users": [], "nextPageUrl": "https://teams.test/x"}, "'nextPageUrl'"),
        ({"users": [], "@odata.nextPageLink": "https://teams.test/x"}, "'@odata.nextPageLink'"),
        ({"Users": [], "users": [_user("u2")]}, "different values"),
        ({"value": [_user("u2")]}, "no 'users' list"),
        ({"users": [], "nextLink": 7}, "not a URL"),
    ],
    ids=["continuation", "other link", "odata other link", "two lists", "value", "link number"],
)
def test_a_users_page_that_cannot_be_placed_is_not_taken_for_the_last(rsps, teams, page, said):
    rsps.get(USERS, json=page)
    with pytest.raises(InvalidResponseError, match=r"GET /Teams\.User/users") as info:
        teams.list_users()
    assert said in str(info.value)


@pytest.mark.parametrize("key", ["@odata.count", "count", "Count", "totalCount"])
def test_a_users_read_short_of_the_count_the_service_reports_fails(rsps, teams, key):
    rsps.get(
        USERS,
        match=[matchers.query_param_matcher({"$top": "1000"})],
        json={"users": [_user("u1"), _user("u2")], key: 5, "nextLink": f"{USERS}?$skiptoken=2"},
    )
    rsps.get(
        USERS,
        match=[matchers.query_param_matcher({"$skiptoken": "2"})],
        json={"users": [_user("u3")], key: 5},
    )
    with pytest.raises(InvalidResponseError, match=r"listed 3 'users' entries .* but reported 5"):
        teams.list_users()


def test_a_users_read_that_meets_its_count_passes(rsps, teams):
    rsps.get(USERS, json={"users": [_user("u1"), _user("u2")], "totalCount": 2})
    users, _ = teams.list_users()
    assert len(users) == 2


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, [policy_obj("Tag:Kitchen", AllowGiphy=False)]),
        (200, policy_obj("Tag:Kitchen", AllowGiphy=False)),
        (204, None),
        (200, None),
        (200, "   "),
    ],
    ids=["one-element array", "object", "204", "empty 200", "blank 200"],
)
def test_a_policy_update_answered_in_any_recorded_shape_is_a_success(rsps, teams, status, body):
    kwargs = {"json": body} if isinstance(body, list | dict) else {"body": body or ""}
    rsps.put(
        f"{POLICIES}/configuration/Tag:Kitchen",
        match=[matchers.json_params_matcher({"AllowGiphy": False})],
        status=status,
        **kwargs,
    )
    answered = teams.update_policy("Kitchen", {"AllowGiphy": False})
    assert answered is None or (answered.name, answered.settings["AllowGiphy"]) == (
        "Kitchen",
        False,
    )


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (201, [policy_obj("Tag:Night Shift")]),
        (200, policy_obj("Tag:Night Shift")),
        (204, None),
        (201, None),
    ],
    ids=["one-element array", "200 object", "204", "empty 201"],
)
def test_a_policy_create_answered_in_any_recorded_shape_is_a_success(rsps, teams, status, body):
    kwargs = {"json": body} if body is not None else {"body": ""}
    rsps.post(
        POLICIES,
        match=[matchers.json_params_matcher({"Identity": "Tag:Night Shift", "AllowGiphy": True})],
        status=status,
        **kwargs,
    )
    answered = teams.create_policy("Night Shift", {"AllowGiphy": True})
    assert answered is None or answered.name == "Night Shift"


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ([policy_obj("Tag:Kitchen"), policy_obj("Global")], "with 2 objects"),
        ([], "with 0 objects"),
        (policy_obj("Tag:Clinical"), "with policy 'Clinical', not 'Kitchen'"),
        ({"AllowGiphy": False}, "no Identity"),
    ],
    ids=["two", "none", "another policy", "no identity"],
)
def test_a_policy_update_answer_that_cannot_be_placed_is_refused(rsps, teams, body, said):
    rsps.put(f"{POLICIES}/configuration/Tag:Kitchen", json=body)
    with pytest.raises(InvalidResponseError) as info:
        teams.update_policy("Kitchen", {"AllowGiphy": False})
    assert "PUT /Skype.Policy/configurations/TeamsMessagingPolicy/configuration/{identity}" in str(
        info.value
    )
    assert said in str(info.value)


def test_a_service_warning_is_logged_and_kept_for_the_change(rsps, teams, client, caplog):
    rsps.put(
        f"{POLICIES}/configuration/Tag:Kitchen",
        match=[matchers.json_params_matcher({"AllowGiphy": False})],
        status=204,
        headers={"X-Ms-ConfigApi-PowerShell-WarningMessage": WARNING},
    )
    rsps.delete(
        f"{POLICIES}/configuration/Tag:Kitchen",
        status=204,
        headers={"X-Ms-ConfigApi-PowerShell-WarningMessage": WARNING},
    )
    rsps.get(POLICIES, json=[policy_obj("Global")])
    with caplog.at_level("INFO", logger="bridge.http"):
        teams.update_policy("Kitchen", {"AllowGiphy": False})
        teams.list_policies()
        assert client.take_warnings() == [WARNING]
        assert client.take_warnings() == []  # taken once
        teams.delete_policy("Kitchen")
    assert client.take_warnings() == [WARNING]
    said = [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if "the service warned" in r.getMessage()
    ]
    # The same text logged at warning level once a run; repeats at info, with their route.
    assert said == [
        (
            "WARNING",
            "PUT /Skype.Policy/configurations/TeamsMessagingPolicy/configuration/{identity}: "
            f"the service warned: {WARNING}",
        ),
        (
            "INFO",
            "DELETE /Skype.Policy/configurations/TeamsMessagingPolicy/configuration/{identity}: "
            f"the service warned: {WARNING}",
        ),
    ]


def test_brotli_is_always_asked_for_and_a_br_answer_decodes(rsps, teams):
    import brotli

    body = json.dumps([policy_obj("Global", AllowGiphy=False)]).encode()
    rsps.get(
        POLICIES,
        match=[matchers.header_matcher({"Accept-Encoding": "gzip, deflate, br"})],
        body=brotli.compress(body),
        headers={"Content-Encoding": "br"},
        content_type="application/json",
    )
    (policy,) = teams.list_policies()
    assert policy.settings["AllowGiphy"] is False


_ROW_NAMES = frozenset(
    n.casefold()
    for n in (
        "Identity",
        "ObjectId",
        "UserPrincipalName",
        "TeamsMessagingPolicy",
        "effectivePolicyAssignments",
        "DisplayName",
        "Department",
    )
)
_PAGE_NAMES = frozenset(
    n.casefold()
    for n in ("users", "@odata.nextLink", "nextLink", "$skiptoken", "skipToken", "@odata.skipToken")
)
_PAGE_NAMES |= {"@odata.count", "count", "totalcount"}
_NAME = st.text(alphabet=string.ascii_letters + string.digits + "@._$-", min_size=1, max_size=24)


@settings(max_examples=60, deadline=None)  # budget: 60 examples, about 1 s
@given(data=st.data())
def test_property_a_page_with_unknown_field_names_fails_rather_than_returns_fewer_rows(data):
    """Rename one field the reader relies on (a user's id, UPN or direct policy; a page's list or
    its link to the next) to a name it does not know: the read must fail, never return the rows
    it could still place. (OData annotations, ``@odata.*``, are outside the property: they are
    ignored by design unless their name speaks of paging.)"""
    n = data.draw(st.integers(1, 7), label="users")
    rows = [_user(f"u{i}", policy=data.draw(st.sampled_from([None, "Clinical"]))) for i in range(n)]
    cut = sorted(set(data.draw(st.lists(st.integers(1, n), max_size=2), label="page breaks")))
    chunks = [rows[a:b] for a, b in zip([0, *cut], [*cut, n], strict=True) if rows[a:b]]
    pages = [{"users": chunk} for chunk in chunks]
    for i, page in enumerate(pages[:-1]):
        page["nextLink"] = f"{USERS}?$top=1000&$skiptoken=p{i + 1}"

    if data.draw(st.booleans(), label="rename in a row"):
        row = data.draw(st.sampled_from(rows))
        old = data.draw(st.sampled_from(["Identity", "UserPrincipalName", "TeamsMessagingPolicy"]))
        new = data.draw(_NAME.filter(lambda k: k.casefold() not in _ROW_NAMES), label="new name")
        row[new] = row.pop(old)
    else:
        page = data.draw(st.sampled_from(pages))
        old = data.draw(st.sampled_from(sorted(page)))
        new = data.draw(
            _NAME.filter(lambda k: k.casefold() not in _PAGE_NAMES and not k.startswith("@odata.")),
            label="new name",
        )
        page[new] = page.pop(old)

    # Pages after a link the reader cannot follow are never asked for: not every call fires.
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        for i, page in enumerate(pages):
            query = {"$top": "1000", **({"$skiptoken": f"p{i}"} if i else {})}
            rsps.get(USERS, match=[matchers.query_param_matcher(query)], json=page)
        with pytest.raises(InvalidResponseError):
            TeamsAdminClient(make_client(), TEAMS).list_users()


def test_get_policy_reads_an_object_or_a_one_element_array_of_it(rsps, teams):
    rsps.get(f"{POLICIES}/configuration/Tag:Kitchen", json=[policy_obj("Tag:Kitchen")])
    rsps.get(f"{POLICIES}/configuration/Global", json=policy_obj("Global"))
    rsps.get(f"{POLICIES}/configuration/Tag:Nursing", json=[policy_obj("Tag:Kitchen")])
    assert teams.get_policy("Kitchen").name == "Kitchen"
    assert teams.get_policy("Global").name == "Global"
    with pytest.raises(InvalidResponseError, match="with policy 'Kitchen', not 'Nursing'"):
        teams.get_policy("Nursing")


# --------------------------------------------------------------------------- reading users fast


CMDLET_ROWS = [
    {
        "Identity": "u1",
        "UserPrincipalName": "a@contoso.org",
        "DisplayName": "A",
        "Department": "Nursing",
        "TeamsMessagingPolicy": "Tag:Clinical",
    },
    {
        "Identity": "u2",
        "UserPrincipalName": "b@contoso.org",
        "DisplayName": None,
        "Department": None,
        "TeamsMessagingPolicy": None,
    },
    {
        "Identity": "u3",
        "UserPrincipalName": "c@contoso.org",
        "DisplayName": "C",
        "Department": "Nursing",
        "TeamsMessagingPolicy": "",
    },
    {
        "Identity": "u4",
        "UserPrincipalName": "d@contoso.org",
        "DisplayName": "D",
        "Department": "IT",
        "TeamsMessagingPolicy": "global",
    },
]
# Rows the fast reader leaves to ``read_user`` (which reads or refuses them).
OTHER_ROWS = [
    {**CMDLET_ROWS[0], "Identity": 7},  # an id as a number
    {**CMDLET_ROWS[0], "UserPrincipalName": None},  # no UPN: the id stands in
    {**CMDLET_ROWS[0], "UserPrincipalName": ""},
    {**CMDLET_ROWS[0], "DisplayName": 3},  # refused
    {**CMDLET_ROWS[0], "TeamsMessagingPolicy": ["x"]},  # refused
    {**CMDLET_ROWS[0], "Identity": ""},  # refused
    {**CMDLET_ROWS[0], "JobTitle": "Nurse"},  # another field
    {k.lower(): v for k, v in CMDLET_ROWS[0].items()},  # another casing
    ["not", "a", "row"],  # refused
]


def test_the_common_user_row_is_read_fast_and_exactly_as_read_user_reads_it():
    from bridge.backends.teams_api import _read_cmdlet_user, read_user

    departments: dict[str, str] = {}
    for row in CMDLET_ROWS:
        fast = _read_cmdlet_user(row, departments)
        assert fast is not None, row
        assert fast == read_user(row, "row,")
    # One string per department, however many users share it.
    first = _read_cmdlet_user(CMDLET_ROWS[0], departments)
    third = _read_cmdlet_user(CMDLET_ROWS[2], departments)
    assert first is not None and third is not None
    assert first[0].department is third[0].department


@pytest.mark.parametrize("row", OTHER_ROWS)
def test_any_other_user_row_goes_to_the_full_reader(rsps, teams, row):
    from bridge.backends.teams_api import _read_cmdlet_user, read_user

    assert _read_cmdlet_user(row, {}) is None
    rsps.get(USERS, json={"users": [row]})
    try:
        expected = read_user(row, "row,")
    except InvalidResponseError:
        with pytest.raises(InvalidResponseError, match="user 0"):
            teams.list_users()
    else:
        users, direct = teams.list_users()
        assert users == [expected[0]]
        assert [a.policy for a in direct] == ([expected[1]] if expected[1] else [])


def test_the_next_users_page_is_fetched_while_the_caller_reads_this_one(rsps, client):
    import time

    rsps.get(
        USERS,
        match=[matchers.query_param_matcher({"$top": "1000"})],
        json={"users": CMDLET_ROWS[:2], "@odata.nextLink": f"{USERS}?$skiptoken=p2"},
    )
    rsps.get(
        USERS,
        match=[matchers.query_param_matcher({"$skiptoken": "p2"})],
        json={"users": CMDLET_ROWS[2:]},
    )
    pages = client.pages(
        USERS, resource=TEAMS_RESOURCE, items_key="users", params={"$top": "1000"}, ahead=2
    )
    first = next(pages)
    deadline = time.monotonic() + 5
    while len(rsps.calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(rsps.calls) == 2  # page 2 asked for before page 1 was done with
    assert [r["Identity"] for r in first] == ["u1", "u2"]
    assert [r["Identity"] for r in next(pages)] == ["u3", "u4"]
    assert list(pages) == []


def test_a_failed_page_fails_the_read_after_the_pages_before_it(rsps, client):
    rsps.get(
        USERS,
        match=[matchers.query_param_matcher({"$top": "1000"})],
        json={"users": CMDLET_ROWS[:2], "@odata.nextLink": f"{USERS}?$skiptoken=p2"},
    )
    rsps.get(USERS, match=[matchers.query_param_matcher({"$skiptoken": "p2"})], status=403, json={})
    pages = client.pages(
        USERS, resource=TEAMS_RESOURCE, items_key="users", params={"$top": "1000"}, ahead=2
    )
    assert len(next(pages)) == 2
    with pytest.raises(ForbiddenError):
        next(pages)


def test_the_user_reader_lets_the_page_fetcher_run_every_hundred_users(rsps, teams, monkeypatch):
    """Reading a page holds the interpreter; the thread fetching the next page would wait up to
    the switch interval (5 ms) at each of its reads. The reader hands over every 100 users."""
    import bridge.backends.teams_api as teams_api

    rows = [
        {**CMDLET_ROWS[1], "Identity": f"u{i}", "UserPrincipalName": f"u{i}@x.org"}
        for i in range(250)
    ]
    rsps.get(USERS, json={"users": rows})
    slept: list[float] = []
    monkeypatch.setattr(teams_api.time, "sleep", slept.append)
    users, _ = teams.list_users()
    assert len(users) == 250 and slept == [0, 0]


def test_list_users_asks_for_role_attributes_in_the_same_pages(rsps, teams):
    select = (
        "Identity,UserPrincipalName,DisplayName,Department,TeamsMessagingPolicy,"
        "effectivePolicyAssignments,jobTitle,employeeOrgData"
    )
    rsps.get(
        USERS,
        match=[matchers.query_param_matcher({"$top": "1000", "$select": select})],
        json={
            "users": [
                {**_user("u1"), "Title": "Pharmacist", "employeeOrgData": {"division": "Rx"}},
                {**_user("u2"), "jobTitle": "Cook", "Title": "ignored: the Graph name wins"},
            ]
        },
    )
    users, _ = teams.list_users(attributes=["jobTitle", "employeeOrgData.division"])
    assert [u.attributes for u in users] == [
        {"jobTitle": "Pharmacist", "employeeOrgData.division": "Rx"},  # Get-CsOnlineUser's Title
        {"jobTitle": "Cook"},
    ]
