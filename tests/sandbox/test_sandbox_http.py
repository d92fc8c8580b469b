"""The sandbox over real HTTPS: tokens through real MSAL, the Teams admin API and Graph answers
docs/wire.md describes, and the knobs (throttle, faults, propagation delay, inject)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import jwt
import msal
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bridge.sandbox import Sandbox, SandboxConfig

TEAMS = "48ac35b8-9aa8-4d74-927d-1f4a14a0b239"
TEAMS_ADMIN_WID = "69091246-20e8-4a56-aa4d-066075b2a7a8"
CONF = "/Skype.Policy/configurations/TeamsMessagingPolicy"
GPA = "/Skype.Policy/groupPolicyAssignments"


@pytest.fixture(scope="module")
def sb():
    with Sandbox(SandboxConfig(users=300, seed=11, page_size=100)) as sandbox:
        yield sandbox


@pytest.fixture
def small():
    """A fresh sandbox for tests that change knobs or state others read."""
    with Sandbox(SandboxConfig(users=40, seed=5)) as sandbox:
        yield sandbox


@pytest.fixture
def msal_env(monkeypatch):
    """MSAL's ``verify=`` loses to REQUESTS_CA_BUNDLE (requests merges the environment over
    Session.verify), so point the variable at the sandbox, as ``sb.env()`` says to."""

    def use(sandbox):
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", sandbox.ca_path)

    return use


def msal_app(sandbox, credential):
    return msal.ConfidentialClientApplication(
        sandbox.client_id,
        client_credential=credential,
        authority=f"{sandbox.base_url}/{sandbox.tenant_id}",
        instance_discovery=False,
        verify=sandbox.ca_path,
    )


def claims(token):
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))


def token_for(sandbox, resource):
    r = requests.post(
        f"{sandbox.base_url}/{sandbox.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": sandbox.client_id,
            "client_secret": sandbox.client_secret,
            "scope": f"{resource}/.default",
        },
        verify=sandbox.ca_path,
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


class Client:
    """requests with the sandbox's CA and a token for one API."""

    def __init__(self, sandbox, resource):
        self.sb = sandbox
        self.session = requests.Session()
        self.session.headers["Authorization"] = "Bearer " + token_for(sandbox, resource)

    def __call__(self, method, path, **kw):
        url = path if path.startswith("https://") else self.sb.base_url + path
        return self.session.request(method, url, verify=self.sb.ca_path, timeout=10, **kw)


@pytest.fixture(scope="module")
def teams(sb):
    return Client(sb, TEAMS)


@pytest.fixture(scope="module")
def graph(sb):
    return Client(sb, sb.base_url)


# ------------------------------------------------------------------------------ identity


def test_msal_secret_credential_gets_a_jwt_with_the_claims(sb, msal_env):
    msal_env(sb)
    result = msal_app(sb, sb.client_secret).acquire_token_for_client(scopes=[f"{TEAMS}/.default"])
    assert result.get("token_type") == "Bearer", result
    payload = claims(result["access_token"])
    assert payload["aud"] == TEAMS
    assert payload["tid"] == sb.tenant_id
    assert payload["appid"] == sb.client_id
    assert payload["wids"] == [TEAMS_ADMIN_WID]
    assert payload["exp"] > time.time() + 3000


@pytest.mark.parametrize("form", ["sha256 (PS256)", "sha1 thumbprint (RS256)"])
def test_msal_certificate_credential(sb, msal_env, form):
    msal_env(sb)
    pem = Path(sb.client_cert_path).read_text()
    if form.startswith("sha256"):
        credential = {"private_key": pem, "public_certificate": pem}
    else:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes

        cert = x509.load_pem_x509_certificate(pem.encode())
        credential = {"private_key": pem, "thumbprint": cert.fingerprint(hashes.SHA1()).hex()}
    result = msal_app(sb, credential).acquire_token_for_client(scopes=[f"{sb.base_url}/.default"])
    assert "access_token" in result, result
    assert claims(result["access_token"])["aud"] == sb.base_url


def test_msal_wrong_secret_gets_entras_error(sb, msal_env):
    msal_env(sb)
    result = msal_app(sb, "not-the-secret").acquire_token_for_client(scopes=[f"{TEAMS}/.default"])
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [7000215]
    assert result["error_description"].startswith("AADSTS7000215: Invalid client secret")
    assert sb.client_secret not in json.dumps(result)


def _token_request(sb, tenant=None, **form):
    data = {
        "grant_type": "client_credentials",
        "client_id": sb.client_id,
        "scope": f"{TEAMS}/.default",
        **form,
    }
    return requests.post(
        f"{sb.base_url}/{tenant or sb.tenant_id}/oauth2/v2.0/token",
        data=data,
        verify=sb.ca_path,
        timeout=10,
    )


def test_unknown_client_and_unknown_tenant(sb):
    r = _token_request(
        sb, client_id="11111111-1111-1111-1111-111111111111", client_secret=sb.client_secret
    )
    assert (r.status_code, r.json()["error_codes"]) == (400, [700016])
    r = _token_request(sb, tenant="contoso.onmicrosoft.com", client_secret=sb.client_secret)
    assert (r.status_code, r.json()["error_codes"]) == (400, [90002])
    # The tenant's domain works as well as its id.
    r = _token_request(
        sb, tenant="northwind-health.onmicrosoft.com", client_secret=sb.client_secret
    )
    assert r.status_code == 200


def _assertion(sb, key, **overrides):
    now = int(time.time())
    payload = {
        "aud": f"{sb.base_url}/{sb.tenant_id}/oauth2/v2.0/token",
        "iss": sb.client_id,
        "sub": sb.client_id,
        "exp": now + 600,
        "iat": now,
        "jti": "x",
        **overrides,
    }
    return jwt.encode(payload, key, algorithm="RS256")


@pytest.mark.parametrize(
    "case, code",
    [("other key", 700027), ("expired", 700024), ("wrong audience", 700212), ("wrong iss", 700021)],
)
def test_bad_client_assertions_are_refused(sb, case, code):
    pem = Path(sb.client_cert_path).read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    overrides = {}
    if case == "other key":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif case == "expired":
        overrides = {"exp": int(time.time()) - 3600}
    elif case == "wrong audience":
        overrides = {"aud": "https://login.microsoftonline.com/x/oauth2/v2.0/token"}
    else:
        overrides = {"iss": "someone-else"}
    r = _token_request(
        sb,
        client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        client_assertion=_assertion(sb, key, **overrides),
    )
    assert r.status_code == 401
    assert r.json()["error_codes"] == [code]


def test_scope_without_default_and_unknown_resource(sb):
    r = _token_request(sb, client_secret=sb.client_secret, scope=TEAMS)
    assert r.json()["error_codes"] == [1002012]
    r = _token_request(sb, client_secret=sb.client_secret, scope="https://example.org/.default")
    assert r.json()["error_codes"] == [500011]


# ------------------------------------------------------------------------------ auth on APIs


def test_no_token_or_wrong_audience_is_401(sb, graph):
    r = requests.get(sb.base_url + CONF, verify=sb.ca_path, timeout=10)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "Unauthorized"
    # A Graph token is not a Teams admin API token.
    r = graph("GET", CONF)
    assert r.status_code == 401 and "audience" in r.json()["error"]["message"]
    r = requests.get(
        sb.base_url + "/v1.0/organization",
        verify=sb.ca_path,
        timeout=10,
        headers={"Authorization": "Bearer abc.def.ghi"},
    )
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "InvalidAuthenticationToken"


def test_roles_decide_403_for_tokens_issued_after_the_change(small):
    small.configure(roles=())
    none = Client(small, TEAMS)
    r = none("GET", CONF)
    assert r.status_code == 403
    assert "Teams Administrator" in r.json()["error"]["message"]
    small.configure(roles=("global_reader",))
    reader = Client(small, TEAMS)
    assert reader("GET", CONF).status_code == 200
    r = reader("PUT", CONF + "/configuration/Global", json={"AllowGiphy": False})
    assert r.status_code == 403
    # Graph authorises by application permission, which the app holds regardless.
    assert Client(small, small.base_url)("GET", "/v1.0/organization").status_code == 200


# ------------------------------------------------------------------------------ Teams admin API


@pytest.mark.parametrize("identity", ["Tag:Clinical", "tag:clinical", "Clinical", "CLINICAL"])
def test_identity_lookup_is_case_insensitive_with_or_without_tag(teams, identity):
    r = teams("GET", f"{CONF}/configuration/{identity}")
    assert r.status_code == 200
    body = r.json()
    assert body["Identity"] == body["ConfigId"] == "Tag:Clinical"
    assert body["Key"]["ScopeClass"] == "Tag"
    assert body["ConfigMetadata"] == {"Authority": "Host"}


def test_list_has_global_untagged_and_envelopes(teams):
    policies = teams("GET", CONF).json()
    assert policies[0]["Identity"] == "Global"
    assert policies[0]["Key"]["ScopeClass"] == "Global"
    assert all(p["Identity"].startswith("Tag:") for p in policies[1:])
    assert all({"Key", "ConfigMetadata", "ConfigId"} <= set(p) for p in policies)


def test_put_merges_and_writes_enums_in_the_services_casing(small):
    teams = Client(small, TEAMS)
    before = teams("GET", f"{CONF}/configuration/Tag:Pharmacy").json()
    r = teams(
        "PUT",
        f"{CONF}/configuration/Tag:Pharmacy",
        json={"GiphyRatingType": "STRICT", "ReadReceiptsEnabledType": "none"},
    )
    assert r.status_code == 200
    after = r.json()
    assert after["GiphyRatingType"] == "Strict"
    assert after["ReadReceiptsEnabledType"] == "None"
    unchanged = {
        k: v for k, v in after.items() if k not in ("GiphyRatingType", "ReadReceiptsEnabledType")
    }
    assert unchanged == {k: v for k, v in before.items() if k in unchanged}


def test_unknown_setting_and_bad_values_are_400_naming_them(teams):
    r = teams("PUT", f"{CONF}/configuration/Global", json={"AllowGiphys": False})
    assert r.status_code == 400 and "'AllowGiphys'" in r.json()["error"]["message"]
    r = teams("PUT", f"{CONF}/configuration/Global", json={"GiphyRatingType": "Silly"})
    assert (
        r.status_code == 400 and "Strict, Moderate, NoRestriction" in r.json()["error"]["message"]
    )
    r = teams("PUT", f"{CONF}/configuration/Global", json={"AllowGiphy": "Enabled"})
    assert r.status_code == 400 and "AllowGiphy" in r.json()["error"]["message"]
    assert teams("PUT", f"{CONF}/configuration/Tag:Nope", json={}).status_code == 404


def test_create_then_conflict_case_insensitively(small):
    teams = Client(small, TEAMS)
    r = teams("POST", CONF, json={"Identity": "Tag:Night Shift", "AllowGiphy": False})
    assert r.status_code == 201
    assert r.json()["Identity"] == "Tag:Night Shift" and r.json()["AllowGiphy"] is False
    assert teams("GET", f"{CONF}/configuration/Tag:Night%20Shift").status_code == 200
    r = teams("POST", CONF, json={"Identity": "Tag:night shift"})
    assert r.status_code == 409


def test_global_delete_resets_it_and_in_use_policy_delete_is_409(small):
    teams = Client(small, TEAMS)
    observed = teams("GET", f"{CONF}/configuration/Global").json()
    teams("PUT", f"{CONF}/configuration/Global", json={"AllowGiphy": False, "Description": "x"})
    assert teams("DELETE", f"{CONF}/configuration/global").status_code == 204
    assert teams("GET", f"{CONF}/configuration/Global").json() == observed
    r = teams("DELETE", f"{CONF}/configuration/Tag:Kitchen")
    assert r.status_code == 409 and r.json()["error"]["code"] == "PolicyInUse"
    kitchen = small.tenant.groups_named("Kitchen")[0]["id"]
    assert teams("DELETE", f"{GPA}/{kitchen}/policyTypes/TeamsMessagingPolicy").status_code == 204
    assert teams("DELETE", f"{CONF}/configuration/Tag:Kitchen").status_code == 204
    assert teams("GET", f"{CONF}/configuration/Tag:Kitchen").status_code == 404
    assert teams("DELETE", f"{CONF}/configuration/Tag:Kitchen").status_code == 404


def _messaging_ranks(teams):
    rows = teams("GET", GPA + "/").json()
    return [
        (r["GroupId"], r["PolicyName"], r["Rank"])
        for r in rows
        if r["PolicyType"] == "TeamsMessagingPolicy"
    ]


def test_group_assignment_ranks_renumber_on_insert_and_remove(small):
    teams = Client(small, TEAMS)
    before = _messaging_ranks(teams)
    assert [r for _, _, r in before] == list(range(1, len(before) + 1))
    volunteers = [g["id"] for g in small.tenant.groups_named("Volunteers")]
    path = f"{GPA}/{volunteers[0]}/policyTypes/TeamsMessagingPolicy"
    assert teams("PATCH", path, json={"PolicyName": "Support Staff", "Rank": 2}).status_code == 204
    after = _messaging_ranks(teams)
    assert after[1] == (volunteers[0], "Support Staff", 2)
    assert [g for g, _, _ in after] == [before[0][0], volunteers[0]] + [g for g, _, _ in before[1:]]
    assert [r for _, _, r in after] == list(range(1, len(after) + 1))
    # Already assigned: remove first.
    r = teams("PATCH", path, json={"PolicyName": "Kitchen", "Rank": 1})
    assert r.status_code == 409
    # No rank: last.
    other = f"{GPA}/{volunteers[1]}/policyTypes/TeamsMessagingPolicy"
    assert teams("PATCH", other, json={"PolicyName": "students"}).status_code == 204
    assert _messaging_ranks(teams)[-1] == (volunteers[1], "Students", len(after) + 1)
    assert teams("DELETE", path).status_code == 204
    final = _messaging_ranks(teams)
    assert [g for g, _, _ in final] == [g for g, _, _ in before] + [volunteers[1]]
    assert [r for _, _, r in final] == list(range(1, len(final) + 1))
    assert teams("DELETE", path).status_code == 404


def test_group_assignment_unknown_group_or_policy_is_404(teams, sb):
    r = teams(
        "PATCH",
        f"{GPA}/00000000-0000-0000-0000-000000000000/policyTypes/TeamsMessagingPolicy",
        json={"PolicyName": "Clinical"},
    )
    assert r.status_code == 404
    gid = sb.tenant.groups_named("Volunteers")[0]["id"]
    r = teams(
        "PATCH",
        f"{GPA}/{gid}/policyTypes/TeamsMessagingPolicy",
        json={"PolicyName": "No Such Policy"},
    )
    assert r.status_code == 404


def test_direct_grant_and_removal_show_in_the_users_listing(small):
    teams = Client(small, TEAMS)
    upn = small.tenant.upns[3]
    uid = small.tenant.user_ids[3]
    path = f"/Skype.Policy/users/{upn}/policies/TeamsMessagingPolicy"
    assert teams("PATCH", path, json={"PolicyName": "Tag:Kitchen"}).status_code == 204
    users = teams("GET", "/Teams.User/users").json()["users"]
    assert next(u for u in users if u["Identity"] == uid)["TeamsMessagingPolicy"] == "Kitchen"
    assert teams("PATCH", path, json={"PolicyName": None}).status_code == 204
    users = teams("GET", "/Teams.User/users").json()["users"]
    assert next(u for u in users if u["Identity"] == uid)["TeamsMessagingPolicy"] is None
    r = teams("PATCH", path, json={"PolicyName": "Nope"})
    assert r.status_code == 404


def test_users_are_paged_with_absolute_next_links(teams, sb):
    seen, url, pages = [], "/Teams.User/users?$top=70", 0
    while url:
        body = teams("GET", url).json()
        seen += [u["Identity"] for u in body["users"]]
        url = body.get("@odata.nextLink")
        assert url is None or url.startswith(sb.base_url)
        pages += 1
    assert pages == 5 and len(seen) == len(set(seen)) == 300
    # $top over the page size is clamped to it.
    assert len(teams("GET", "/Teams.User/users?$top=5000").json()["users"]) == 100
    user = teams("GET", "/Teams.User/users?$top=1").json()["users"][0]
    assert set(user) == {
        "Identity",
        "UserPrincipalName",
        "DisplayName",
        "Department",
        "TeamsMessagingPolicy",
    }


def test_gzip_only_when_asked(teams):
    r = teams("GET", CONF, headers={"Accept-Encoding": "gzip"})
    assert r.headers["Content-Encoding"] == "gzip"
    assert r.json()[0]["Identity"] == "Global"
    r = teams("GET", CONF, headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in r.headers
    assert r.json()[0]["Identity"] == "Global"


# ------------------------------------------------------------------------------ Graph


def test_groups_by_display_name_doubled_quotes_and_case(sb, graph):
    gid = "c0ffee00-0000-4000-8000-000000000001"
    if sb.tenant.group(gid) is None:
        sb.tenant.add_group(gid, "O'Brien Ward")
    r = graph(
        "GET",
        "/v1.0/groups",
        params={"$filter": "displayName eq 'o''brien ward'", "$select": "id,displayName"},
    )
    assert r.json()["value"] == [{"id": gid, "displayName": "O'Brien Ward"}]
    r = graph("GET", "/v1.0/groups", params={"$filter": "displayName eq 'Volunteers'"})
    assert len(r.json()["value"]) == 2
    r = graph("GET", "/v1.0/groups", params={"$filter": "startswith(displayName,'V')"})
    assert r.status_code == 400
    assert graph("GET", f"/v1.0/groups/{gid}").json()["displayName"] == "O'Brien Ward"
    r = graph("GET", "/v1.0/groups/00000000-0000-0000-0000-000000000000")
    assert r.status_code == 404 and r.json()["error"]["code"] == "Request_ResourceNotFound"


def test_group_members_paged_and_member_of(sb, graph):
    nursing = sb.tenant.groups_named("Nursing")[0]["id"]
    members, url = [], f"/v1.0/groups/{nursing}/members?$select=id,userPrincipalName&$top=20"
    while url:
        body = graph("GET", url).json()
        members += body["value"]
        url = body.get("@odata.nextLink")
    assert len(members) > 20
    assert set(members[0]) == {"@odata.type", "id", "userPrincipalName"}
    groups = graph("GET", f"/v1.0/users/{members[0]['id']}/memberOf").json()["value"]
    assert {
        "@odata.type": "#microsoft.graph.group",
        "id": nursing,
        "displayName": "Nursing",
    } in groups


def test_guest_user_by_encoded_upn(sb, graph):
    upn = next(u for u in sb.tenant.upns if "#EXT#" in u)
    r = graph(
        "GET",
        "/v1.0/users/" + upn.replace("#", "%23"),
        params={"$select": "id,userPrincipalName,displayName,department"},
    )
    assert r.status_code == 200 and r.json()["userPrincipalName"] == upn
    assert set(r.json()) == {"id", "userPrincipalName", "displayName", "department"}
    assert graph("GET", "/v1.0/users/nobody@northwind-health.org").status_code == 404


def test_users_listed_in_pages_with_select_and_next_links(sb, graph):
    select = "id,userPrincipalName,displayName,department"
    seen, url, pages = [], f"/v1.0/users?$select={select}&$top=70", 0
    while url:
        r = graph("GET", url)
        assert r.status_code == 200, r.text
        seen += r.json()["value"]
        url = r.json().get("@odata.nextLink")
        assert url is None or (
            url.startswith(f"{sb.base_url}/v1.0/users?") and "$skiptoken=" in url
        )
        pages += 1
    assert pages == 5 and len({u["id"] for u in seen}) == 300
    assert {u["userPrincipalName"] for u in seen} == set(sb.tenant.upns)
    assert all(set(u) == {"id", "userPrincipalName", "displayName", "department"} for u in seen)
    assert set(graph("GET", "/v1.0/users?$top=1&$select=id").json()["value"][0]) == {"id"}
    assert len(graph("GET", "/v1.0/users").json()["value"]) == 100  # Graph's default page size
    assert len(graph("GET", "/v1.0/users?$top=999").json()["value"]) == 300
    for top in (0, 1000):
        r = graph("GET", f"/v1.0/users?$top={top}")
        assert r.status_code == 400 and r.json()["error"]["code"] == "Request_BadRequest"
    r = graph("GET", "/v1.0/users", params={"$filter": "department eq 'Nursing'"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "Request_UnsupportedQuery"


def test_organization(sb, graph):
    org = graph("GET", "/v1.0/organization").json()["value"][0]
    assert org["id"] == sb.tenant_id
    assert {d["name"] for d in org["verifiedDomains"]} >= {"northwind-health.onmicrosoft.com"}


def test_batch_answers_each_request_and_refuses_more_than_20(graph):
    reqs = [
        {"id": "1", "method": "GET", "url": "/groups?$filter=displayName eq 'Kitchen'"},
        {"id": "2", "method": "GET", "url": "/groups/00000000-0000-0000-0000-000000000000"},
        {"id": "3", "method": "GET", "url": "/organization"},
    ]
    r = graph("POST", "/v1.0/$batch", json={"requests": reqs})
    assert r.status_code == 200
    by_id = {x["id"]: x for x in r.json()["responses"]}
    assert (
        by_id["1"]["status"] == 200 and by_id["1"]["body"]["value"][0]["displayName"] == "Kitchen"
    )
    assert by_id["2"]["status"] == 404
    assert by_id["3"]["status"] == 200
    many = [{"id": str(i), "method": "GET", "url": "/organization"} for i in range(21)]
    assert graph("POST", "/v1.0/$batch", json={"requests": many}).status_code == 400


def test_inner_batch_requests_are_throttled_with_retry_after(small):
    graph = Client(small, small.base_url)
    small.configure(throttle_rps=0.5, throttle_burst=2)
    reqs = [{"id": str(i), "method": "GET", "url": "/organization"} for i in range(3)]
    r = graph("POST", "/v1.0/$batch", json={"requests": reqs})
    assert r.status_code == 200
    statuses = [x["status"] for x in r.json()["responses"]]
    assert statuses == [200, 200, 429]
    assert int(r.json()["responses"][2]["headers"]["Retry-After"]) >= 1


def test_policy_id_assign_and_effective_policy(small):
    graph = Client(small, small.base_url)
    t = small.tenant
    r = graph(
        "GET",
        "/v1.0/admin/teams/policy/getPolicyId(type='TeamsMessagingPolicy',name='Support Staff')",
    )
    [entry] = r.json()["value"]
    assert entry["name"] == "Tag:Support Staff"
    uid = next(u for u in t.user_ids if u not in t.direct_assignments())
    body = {
        "value": [
            {"userId": uid, "policyType": "TeamsMessagingPolicy", "policyId": entry["policyId"]}
        ]
    }
    r = graph("POST", "/v1.0/admin/teams/policy/userAssignments/assign", json=body)
    assert r.status_code == 204
    eff = graph("GET", f"/v1.0/admin/teams/userConfigurations/{uid}").json()
    [assignment] = eff["effectivePolicyAssignments"]
    assert assignment["policyAssignment"]["displayName"] == "Support Staff"
    assert assignment["policyAssignment"]["assignmentType"] == "direct"
    r = graph(
        "POST",
        "/v1.0/admin/teams/policy/userAssignments/unassign",
        json={"value": [{"userId": uid, "policyType": "TeamsMessagingPolicy"}]},
    )
    assert r.status_code == 204
    eff = graph("GET", f"/v1.0/admin/teams/userConfigurations/{uid}").json()
    assert eff["effectivePolicyAssignments"][0]["policyAssignment"]["assignmentType"] != "direct"
    bad = {"value": [body["value"][0], {**body["value"][0], "userId": "not-a-user"}]}
    r = graph("POST", "/v1.0/admin/teams/policy/userAssignments/assign", json=bad)
    assert r.status_code == 400 and "not-a-user" in r.json()["error"]["message"]
    assert uid not in t.direct_assignments()
    r = graph(
        "GET", "/v1.0/admin/teams/policy/getPolicyId(type='TeamsMessagingPolicy',name='Nope')"
    )
    assert r.status_code == 404


# ------------------------------------------------------------------------------ knobs


def test_throttle_answers_429_with_retry_after(small):
    teams = Client(small, TEAMS)
    small.configure(throttle_rps=0.5, throttle_burst=2)
    statuses = [teams("GET", CONF) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert int(statuses[2].headers["Retry-After"]) >= 1
    assert statuses[2].json()["error"]["code"] == "TooManyRequests"
    assert small.stats()["throttled"] == 1
    # Token requests are not throttled.
    token_for(small, TEAMS)


def test_propagation_delay_hides_assignments_until_due(small):
    teams = Client(small, TEAMS)
    small.configure(propagation_delay=1.0)
    written = time.monotonic()
    uid = next(u for u in small.tenant.user_ids if u not in small.tenant.direct_assignments())
    path = f"/Skype.Policy/users/{uid}/policies/TeamsMessagingPolicy"
    assert teams("PATCH", path, json={"PolicyName": "Kitchen"}).status_code == 204
    gid = small.tenant.groups_named("Volunteers")[0]["id"]
    gpath = f"{GPA}/{gid}/policyTypes/TeamsMessagingPolicy"
    assert teams("PATCH", gpath, json={"PolicyName": "Kitchen", "Rank": 1}).status_code == 204
    # Writes see the accepted assignment at once: a second one conflicts.
    assert teams("PATCH", gpath, json={"PolicyName": "Kitchen"}).status_code == 409

    def visible():
        users = teams("GET", "/Teams.User/users").json()["users"]
        rows = teams("GET", GPA).json()
        return (
            next(u for u in users if u["Identity"] == uid)["TeamsMessagingPolicy"],
            any(r["GroupId"] == gid for r in rows),
        )

    assert visible() == (None, False)
    time.sleep(max(0.0, written + 1.05 - time.monotonic()))
    assert visible() == ("Kitchen", True)


def test_inject_scripted_faults(small):
    teams = Client(small, TEAMS)
    small.inject(method="GET", path=r"/Skype\.Policy/.*", status=503, times=2)
    assert [teams("GET", CONF).status_code for _ in range(3)] == [503, 503, 200]
    small.inject(path=r"/Teams\.User/users", status=429, retry_after=7)
    r = teams("GET", "/Teams.User/users")
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"
    small.inject(method="GET", path=CONF, status=0)
    with pytest.raises(requests.ConnectionError):
        teams("GET", CONF)
    assert teams("GET", CONF).status_code == 200
    stats = small.stats()
    assert stats["faults"] == 4 and stats["dropped"] == 1


def test_a_lost_answer_fault_carries_the_write_out_first(small):
    teams = Client(small, TEAMS)
    gid = small.tenant.groups_named("Volunteers")[0]["id"]
    gpath = f"{GPA}/{gid}/policyTypes/TeamsMessagingPolicy"
    small.inject("PATCH", f"{GPA}/.*", status=500, after=True)
    assert teams("PATCH", gpath, json={"PolicyName": "Kitchen", "Rank": 1}).status_code == 500
    rows = teams("GET", GPA).json()
    assert [(r["PolicyName"], r["Rank"]) for r in rows if r["GroupId"] == gid] == [("Kitchen", 1)]
    # The retry a client sends finds the write done.
    assert teams("PATCH", gpath, json={"PolicyName": "Kitchen"}).status_code == 409
    # A refused write does not use up the rule; a dropped answer after a write, either.
    small.inject("DELETE", f"{GPA}/.*", status=0, after=True)
    missing = f"{GPA}/{'0' * 8}-0000-4000-8000-000000000000/policyTypes/TeamsMessagingPolicy"
    assert teams("DELETE", missing).status_code == 404
    with pytest.raises(requests.ConnectionError):
        teams("DELETE", gpath)
    assert not [r for r in teams("GET", GPA).json() if r["GroupId"] == gid]
    stats = small.stats()
    assert stats["writes"] == 2 and stats["dropped"] == 1
    # The knob: every successful write loses its answer (a 500 or a drop, seeded).
    small.configure(lost_answer_rate=1.0)
    try:
        status = teams("PATCH", gpath, json={"PolicyName": "Kitchen"}).status_code
    except requests.ConnectionError:
        status = 0
    assert status in (0, 500)
    small.configure(lost_answer_rate=0.0)
    assert [x["GroupId"] for x in teams("GET", GPA).json()].count(gid) == 1


def test_random_faults_and_drops(small):
    teams = Client(small, TEAMS)
    small.configure(fault_rate=1.0)
    r = teams("GET", CONF)
    assert r.status_code in (500, 503) and "error" in r.json()
    small.configure(fault_rate=0.0, drop_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        teams("GET", CONF)
    small.configure(drop_rate=0.0)
    assert teams("GET", CONF).status_code == 200


def test_latency_is_added_per_request(small):
    teams = Client(small, TEAMS)
    small.configure(latency=0.3)
    started = time.perf_counter()
    teams("GET", CONF)
    assert time.perf_counter() - started >= 0.3


def test_the_sandbox_works_on_an_answer_within_its_latency(small, monkeypatch):
    """Latency is the least time an answer takes, the sandbox's own work (here a slow
    compression) included, as a service's work is within its round trip: a benchmark's floor
    of one round trip per page is then the sandbox's too."""
    import bridge.sandbox.server as server

    real = server.gzip.compress

    def slow(data: bytes, compresslevel: int = 9) -> bytes:
        time.sleep(0.4)
        return real(data, compresslevel=compresslevel)

    monkeypatch.setattr(server.gzip, "compress", slow)
    teams = Client(small, TEAMS)
    small.configure(latency=0.6)
    started = time.perf_counter()
    r = teams("GET", CONF, headers={"Accept-Encoding": "gzip"})
    took = time.perf_counter() - started
    assert r.status_code == 200 and r.headers["Content-Encoding"] == "gzip"
    assert 0.6 <= took < 0.95  # not 0.6 + 0.4


def test_stats_count_routes_statuses_and_writes(small):
    teams = Client(small, TEAMS)
    small.reset_stats()
    teams("GET", "/Teams.User/users")
    teams("PUT", f"{CONF}/configuration/Global", json={"AllowGiphy": True})
    teams("GET", f"{CONF}/configuration/Tag:Nope")
    stats = small.stats()
    assert stats["requests"]["GET /Teams.User/users"] == 1
    assert (
        stats["requests"][
            "PUT /Skype.Policy/configurations/TeamsMessagingPolicy/configuration/{identity}"
        ]
        == 1
    )
    assert stats["status"] == {200: 2, 404: 1}
    assert stats["writes"] == 1 and stats["total"] == 3


def test_configure_refuses_unknown_knobs(small):
    with pytest.raises(ValueError, match="users"):
        small.configure(users=5)
    with pytest.raises(ValueError, match="fault_rate"):
        small.configure(fault_rate=2)


def test_env_points_everything_at_the_sandbox(sb):
    env = sb.env()
    assert env["AZURE_AUTHORITY_HOST"] == env["BRIDGE_GRAPH_URL"] == env["BRIDGE_TEAMS_URL"]
    assert env["AZURE_AUTHORITY_HOST"] == sb.base_url
    assert env["REQUESTS_CA_BUNDLE"] == sb.ca_path
    assert env["AZURE_TENANT_ID"] == sb.tenant_id


def test_user_key_form_for_upns_starting_with_dollar(small):
    graph = Client(small, small.base_url)
    uid = "d011a400-0000-4000-8000-000000000001"
    small.tenant.add_user(uid, "$adm.o'neil@northwind-health.org", "Admin", "IT")
    r = graph("GET", "/v1.0/users('$adm.o''neil@northwind-health.org')")
    assert r.status_code == 200 and r.json()["id"] == uid
    assert graph("GET", "/v1.0/users('$adm.o''neil@northwind-health.org')/memberOf").json() == {
        "value": []
    }


def test_identity_endpoints_take_scripted_faults_in_entras_shape(small):
    small.inject(method="POST", path=r"/[^/]+/oauth2/v2\.0/token", status=503)
    r = _token_request(small, client_secret=small.client_secret)
    assert r.status_code == 503 and r.json()["error"] == "temporarily_unavailable"
    assert _token_request(small, client_secret=small.client_secret).status_code == 200


def test_latency_does_not_serialise_concurrent_clients(small):
    from concurrent.futures import ThreadPoolExecutor

    teams = Client(small, TEAMS)
    small.configure(latency=0.3)
    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        codes = list(
            pool.map(
                lambda _: (
                    requests.get(
                        small.base_url + CONF,
                        verify=small.ca_path,
                        headers=dict(teams.session.headers),
                        timeout=10,
                    ).status_code
                ),
                range(4),
            )
        )
    assert codes == [200] * 4
    assert time.perf_counter() - started < 1.0
