from __future__ import annotations

import pytest
import responses
from http_fixtures import (  # noqa: F401  (fixtures)
    GRAPH,
    client_fixture,
    make_client,
    rsps_fixture,
    sleeps_fixture,
    tokens_fixture,
)
from responses import matchers, registries

from bridge.backends.graph import GraphClient, odata_string, user_path
from bridge.errors import ForbiddenError, InvalidResponseError, NotFoundError, ThrottledError
from bridge.state import User

BATCH = f"{GRAPH}/v1.0/$batch"
CLIN_A = "0a0a0a0a-0000-0000-0000-00000000000a"
CLIN_B = "0b0b0b0b-0000-0000-0000-00000000000b"
FAC = "0c0c0c0c-0000-0000-0000-00000000000c"


@pytest.fixture
def ordered():
    with responses.RequestsMock(
        assert_all_requests_are_fired=True, registry=registries.OrderedRegistry
    ) as mock:
        yield mock


def by_name(name: str) -> str:
    return f"/groups?$filter=displayName%20eq%20{odata_string(name)}&$select=id,displayName"


def batch_body(*requests: tuple[str, str]) -> dict:
    return {"requests": [{"id": i, "method": "GET", "url": u} for i, u in requests]}


def test_encoding_of_names_and_upns():
    assert odata_string("O'Brien & Co") == "'O''Brien%20%26%20Co'"
    assert user_path("jane_fabrikam.com#EXT#@contoso.onmicrosoft.com") == (
        "/users/jane_fabrikam.com%23EXT%23@contoso.onmicrosoft.com"
    )
    assert user_path("$svc@contoso.org") == "/users('$svc@contoso.org')"


def test_group_batch_retries_inner_429_and_records_inner_404(ordered, client, sleeps):
    graph = GraphClient(client, GRAPH)
    ordered.post(
        BATCH,
        match=[
            matchers.json_params_matcher(
                batch_body(
                    ("0", by_name("Clinicians")),
                    ("1", f"/groups/{FAC}?$select=id,displayName"),
                    ("2", by_name("O'Brien & Co")),
                )
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
                {"id": "1", "status": 429, "headers": {"Retry-After": "3"}, "body": {}},
                {"id": "2", "status": 200, "body": {"value": []}},
            ]
        },
    )
    ordered.post(
        BATCH,
        match=[
            matchers.json_params_matcher(batch_body(("1", f"/groups/{FAC}?$select=id,displayName")))
        ],
        json={"responses": [{"id": "1", "status": 404, "body": {"error": {"code": "NotFound"}}}]},
    )
    found = graph.resolve_groups(["Clinicians", FAC, "O'Brien & Co", "Clinicians"])
    assert [g.id for g in found["Clinicians"]] == [CLIN_A, CLIN_B]  # ambiguity kept
    assert found[FAC] == []  # searched, absent
    assert found["O'Brien & Co"] == []
    assert sleeps.waits == [3.0]
    assert client.stats["throttled"] == 1


def test_an_inner_retry_after_given_up_on_does_not_hold_the_next_request(rsps, client, sleeps):
    graph = GraphClient(client, GRAPH)
    rsps.post(
        BATCH,
        match=[matchers.json_params_matcher(batch_body(("0", by_name("A"))))],
        json={"responses": [{"id": "0", "status": 429, "headers": {"Retry-After": "7200"}}]},
    )
    rsps.get(
        f"{GRAPH}/v1.0/organization",
        json={"value": [{"id": "o", "displayName": "Org", "verifiedDomains": []}]},
    )
    with pytest.raises(ThrottledError, match="still throttled"):
        graph.resolve_groups(["A"])
    graph.organization()
    assert sleeps.waits == []  # neither the abandoned retry nor the gate waited 7200 s


@pytest.mark.parametrize("status", ["OK", None, "200", True])
def test_an_inner_status_that_is_not_a_number_is_an_invalid_response(rsps, client, status):
    rsps.post(
        BATCH,
        match=[matchers.json_params_matcher(batch_body(("0", by_name("A"))))],
        json={"responses": [{"id": "0", "status": status, "body": {}}]},
    )
    with pytest.raises(InvalidResponseError, match=r"\$batch answered request 0 .*not an HTTP"):
        GraphClient(client, GRAPH).resolve_groups(["A"])


def test_batches_hold_at_most_twenty_requests(rsps, client):
    graph = GraphClient(client, GRAPH)
    names = [f"Ward {i}" for i in range(25)]
    for chunk in (names[:20], names[20:]):
        offset = names.index(chunk[0])
        rsps.post(
            BATCH,
            match=[
                matchers.json_params_matcher(
                    batch_body(*((str(offset + i), by_name(n)) for i, n in enumerate(chunk)))
                )
            ],
            json={
                "responses": [
                    {"id": str(offset + i), "status": 200, "body": {"value": []}}
                    for i in range(len(chunk))
                ]
            },
        )
    assert graph.resolve_groups(names) == {n: [] for n in names}
    assert client.stats["routes"] == {"POST /v1.0/$batch": 2}


def test_inner_throttling_that_never_ends_raises(rsps, tokens, sleeps):
    graph = GraphClient(make_client(tokens, sleeps, attempts=2), GRAPH)
    rsps.post(
        BATCH,
        json={"responses": [{"id": "0", "status": 429, "headers": {"retry-after": "1"}}]},
    )
    with pytest.raises(ThrottledError, match="still throttled after 2 attempt"):
        graph.resolve_groups(["Clinicians"])
    assert len(rsps.calls) == 2


def test_other_inner_errors_raise_typed_errors(rsps, client):
    graph = GraphClient(client, GRAPH)
    rsps.post(
        BATCH,
        json={
            "responses": [
                {
                    "id": "0",
                    "status": 403,
                    "body": {"error": {"code": "Authorization_RequestDenied"}},
                }
            ]
        },
    )
    with pytest.raises(ForbiddenError, match=r"Group\.Read\.All"):
        graph.resolve_groups(["Clinicians"])


def test_resolve_users_by_upn_and_id(rsps, client):
    graph = GraphClient(client, GRAPH)
    guest = "jane_fabrikam.com#EXT#@contoso.onmicrosoft.com"
    select = "?$select=id,userPrincipalName,displayName,department"
    rsps.post(
        BATCH,
        match=[
            matchers.json_params_matcher(
                batch_body(
                    ("0", user_path(guest) + select), ("1", "/users/gone@contoso.org" + select)
                )
            )
        ],
        json={
            "responses": [
                {"id": "1", "status": 404, "body": {}},
                {"id": "0", "status": 200, "body": {"id": "u-jane", "userPrincipalName": guest}},
            ]
        },
    )
    found = graph.resolve_users([guest, "gone@contoso.org"])
    assert found[guest] is not None and found[guest].id == "u-jane"
    assert found["gone@contoso.org"] is None


def test_list_users_follows_every_next_link(ordered, client):
    graph = GraphClient(client, GRAPH)
    url = f"{GRAPH}/v1.0/users"
    select = "id,userPrincipalName,displayName,department"
    guest = "jane_fabrikam.com#EXT#@contoso.onmicrosoft.com"
    ordered.get(
        url,
        match=[matchers.query_param_matcher({"$select": select, "$top": "999"})],
        json={
            "value": [
                {"id": "u1", "userPrincipalName": "ann@contoso.org", "displayName": "Ann"},
                {"id": "u2", "userPrincipalName": guest, "department": "Cardiology"},
            ],
            "@odata.nextLink": f"{url}?$select={select}&$top=999&$skiptoken=X2",
        },
    )
    ordered.get(
        url,
        match=[
            matchers.query_param_matcher({"$select": select, "$top": "999", "$skiptoken": "X2"})
        ],
        json={"value": [], "@odata.nextLink": f"{url}?$select={select}&$top=999&$skiptoken=X3"},
    )
    ordered.get(
        url,
        match=[
            matchers.query_param_matcher({"$select": select, "$top": "999", "$skiptoken": "X3"})
        ],
        json={"value": [{"id": "u3", "userPrincipalName": "bob@contoso.org"}]},
    )

    assert graph.list_users() == [
        User("u1", "ann@contoso.org", "Ann", None),
        User("u2", guest, None, "Cardiology"),
        User("u3", "bob@contoso.org", None, None),
    ]


def test_list_users_refuses_a_page_without_value_or_a_user_without_id(rsps, client):
    graph = GraphClient(client, GRAPH)
    rsps.get(f"{GRAPH}/v1.0/users", json={"error": "not a page"})
    with pytest.raises(InvalidResponseError, match="'value'"):
        graph.list_users()
    rsps.replace(responses.GET, f"{GRAPH}/v1.0/users", json={"value": [{"displayName": "X"}]})
    with pytest.raises(
        InvalidResponseError, match=r"user 0, has no value for .id. \(it is missing"
    ):
        graph.list_users()


def test_member_of_pages_and_keeps_only_groups(rsps, client):
    graph = GraphClient(client, GRAPH)
    url = f"{GRAPH}/v1.0/users/u1/memberOf"
    rsps.get(
        url,
        match=[matchers.query_param_matcher({"$select": "id,displayName"})],
        json={
            "value": [
                {
                    "@odata.type": "#microsoft.graph.group",
                    "id": CLIN_A,
                    "displayName": "Clinicians",
                },
                {"@odata.type": "#microsoft.graph.directoryRole", "id": "r", "displayName": "X"},
            ],
            "@odata.nextLink": f"{url}?$skiptoken=2",
        },
    )
    rsps.get(
        url,
        match=[matchers.query_param_matcher({"$skiptoken": "2"})],
        json={"value": [{"@odata.type": "#microsoft.graph.group", "id": FAC, "displayName": "F"}]},
    )
    assert [g.id for g in graph.member_of("u1")] == [CLIN_A, FAC]


def test_group_members(rsps, client):
    graph = GraphClient(client, GRAPH)
    rsps.get(
        f"{GRAPH}/v1.0/groups/{FAC}/members",
        match=[matchers.query_param_matcher({"$select": "id,userPrincipalName", "$top": "999"})],
        json={"value": [{"id": "u1"}, {"@odata.type": "#microsoft.graph.group", "id": "nested"}]},
    )
    assert graph.group_members(FAC) == ["u1"]


def test_policy_id_assign_and_unassign(rsps, client):
    graph = GraphClient(client, GRAPH)
    rsps.get(
        f"{GRAPH}/v1.0/admin/teams/policy/getPolicyId(type='TeamsMessagingPolicy',"
        "name='Support%20Staff')",
        json={"value": [{"name": "Tag:Support Staff", "policyId": "pid-1"}]},
    )
    rsps.post(
        f"{GRAPH}/v1.0/admin/teams/policy/userAssignments/assign",
        match=[
            matchers.json_params_matcher(
                {
                    "value": [
                        {"userId": "u1", "policyType": "TeamsMessagingPolicy", "policyId": "pid-1"}
                    ]
                }
            )
        ],
        status=204,
    )
    rsps.post(
        f"{GRAPH}/v1.0/admin/teams/policy/userAssignments/unassign",
        match=[
            matchers.json_params_matcher(
                {"value": [{"userId": "u2", "policyType": "TeamsMessagingPolicy"}]}
            )
        ],
        status=204,
    )
    assert graph.policy_id("Tag:Support Staff") == "pid-1"
    graph.assign([("u1", "pid-1")])
    graph.unassign(["u2"])


def test_policy_id_for_an_unknown_policy(rsps, client):
    graph = GraphClient(client, GRAPH)
    rsps.get(
        f"{GRAPH}/v1.0/admin/teams/policy/getPolicyId(type='TeamsMessagingPolicy',name='Nope')",
        json={"value": []},
    )
    with pytest.raises(NotFoundError, match="no policy id for messaging policy 'Nope'"):
        graph.policy_id("Nope")


def test_organization(rsps, client):
    graph = GraphClient(client, GRAPH)
    rsps.get(
        f"{GRAPH}/v1.0/organization",
        match=[matchers.query_param_matcher({"$select": "id,displayName,verifiedDomains"})],
        json={
            "value": [
                {
                    "id": "t1",
                    "displayName": "Contoso Health",
                    "verifiedDomains": [
                        {"name": "contoso.onmicrosoft.com", "isDefault": False},
                        {"name": "contoso.org", "isDefault": True},
                    ],
                }
            ]
        },
    )
    org = graph.organization()
    assert org.verified_domains == ("contoso.onmicrosoft.com", "contoso.org")
    assert org.default_domain == "contoso.org"


# --------------------------------------------------------------------------- answer shapes


def test_a_batched_user_without_an_id_is_an_invalid_response_not_a_key_error(rsps, client):
    select = "?$select=id,userPrincipalName,displayName,department"
    rsps.post(
        BATCH,
        match=[matchers.json_params_matcher(batch_body(("0", "/users/ann@contoso.org" + select)))],
        json={"responses": [{"id": "0", "status": 200, "body": {"userPrincipalName": "ann"}}]},
    )
    with pytest.raises(InvalidResponseError, match=r"GET /users/ann@contoso\.org.* 'id'"):
        GraphClient(client, GRAPH).resolve_users(["ann@contoso.org"])


def test_graph_fields_match_in_any_case(rsps, client):
    rsps.post(
        BATCH,
        match=[matchers.json_params_matcher(batch_body(("0", by_name("Kitchen"))))],
        json={
            "responses": [
                {
                    "id": "0",
                    "status": 200,
                    "body": {"value": [{"ID": FAC, "DisplayName": "Kitchen"}]},
                }
            ]
        },
    )
    (group,) = GraphClient(client, GRAPH).resolve_groups(["Kitchen"])["Kitchen"]
    assert (group.id, group.display_name) == (FAC, "Kitchen")


def test_a_group_name_lookup_that_graph_pages_is_refused(rsps, client):
    rsps.post(
        BATCH,
        match=[matchers.json_params_matcher(batch_body(("0", by_name("Volunteers"))))],
        json={
            "responses": [
                {
                    "id": "0",
                    "status": 200,
                    "body": {
                        "value": [{"id": CLIN_A, "displayName": "Volunteers"}],
                        "@odata.nextLink": f"{GRAPH}/v1.0/groups?$skiptoken=x",
                    },
                }
            ]
        },
    )
    with pytest.raises(InvalidResponseError, match="more than one page of groups named"):
        GraphClient(client, GRAPH).resolve_groups(["Volunteers"])


def test_graph_users_short_of_the_reported_count_fail(rsps, client):
    rsps.get(
        f"{GRAPH}/v1.0/users",
        json={"value": [{"id": "u1", "userPrincipalName": "a@contoso.org"}], "@odata.count": 2},
    )
    with pytest.raises(InvalidResponseError, match=r"listed 1 'value' entries .* but reported 2"):
        GraphClient(client, GRAPH).list_users()


def test_a_member_that_is_not_an_object_is_refused(rsps, client):
    rsps.get(f"{GRAPH}/v1.0/groups/{FAC}/members", json={"value": ["u1"]})
    with pytest.raises(InvalidResponseError, match="member 0, is not an object"):
        GraphClient(client, GRAPH).group_members(FAC)


def test_list_users_selects_the_role_attributes_in_the_same_pages(rsps, client):
    """Roles add properties to the one directory listing's $select (a dotted attribute selects
    its parent), never a second pass; the values are kept under the contract's names."""
    graph = GraphClient(client, GRAPH)
    select = (
        "id,userPrincipalName,displayName,department,jobTitle,accountEnabled,"
        "onPremisesExtensionAttributes"
    )
    rsps.get(
        f"{GRAPH}/v1.0/users",
        match=[matchers.query_param_matcher({"$select": select, "$top": "999"})],
        json={
            "value": [
                {
                    "id": "u1",
                    "userPrincipalName": "ann@contoso.org",
                    "department": "Nursing",
                    "jobTitle": "Charge Nurse",
                    "accountEnabled": False,
                    "onPremisesExtensionAttributes": {"extensionAttribute3": "RN"},
                },
                {"id": "u2", "userPrincipalName": "bob@contoso.org"},
            ]
        },
    )
    names = [
        "department",
        "jobTitle",
        "accountEnabled",
        "onPremisesExtensionAttributes.extensionAttribute3",
    ]
    ann, bob = graph.list_users(names)
    assert ann.attributes == {
        "department": "Nursing",
        "jobTitle": "Charge Nurse",
        "accountEnabled": False,
        "onPremisesExtensionAttributes.extensionAttribute3": "RN",
    }
    assert bob.attributes == {}  # read, and none set: not the same as not read (None)
