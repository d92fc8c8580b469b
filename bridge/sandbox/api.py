"""What each route answers: the identity endpoints, the Teams admin API and Microsoft Graph, as
docs/wire.md describes them. Pure request -> response functions over the ``Tenant``; transport,
authentication, throttling and faults live in ``server.py``."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from .identity import TEAMS_RESOURCE, IdentityError
from .tenant import MESSAGING, USER_PROPERTIES, ServiceError, bare, wire_identity

if TYPE_CHECKING:
    from .server import Sandbox

GRAPH_BATCH_LIMIT = 20
GRAPH_BULK_ASSIGN_LIMIT = 1000
GRAPH_MAX_TOP = 999  # the largest $top Graph takes on /users and /groups/{id}/members
GRAPH_DEFAULT_TOP = 100


@dataclass
class Request:
    method: str
    path: str  # percent-decoded, without the query
    query: dict[str, str]
    headers: Mapping[str, str]
    body: bytes = b""
    params: dict[str, str] = field(default_factory=dict)  # named groups of the route pattern

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError as exc:
            raise ServiceError(400, "BadRequest", f"The body is not valid JSON: {exc}.") from exc


@dataclass
class Response:
    status: int
    body: Any = None  # JSON-able; None: no body
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    name: str  # for stats, e.g. "GET /Teams.User/users"
    api: str  # "identity" | "teams" | "graph"
    write: bool
    handler: Callable[[Sandbox, Request], Response]


def error_body(api: str, code: str, message: str) -> dict[str, Any]:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if api == "graph":
        body["error"]["innerError"] = {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
            "request-id": str(uuid.uuid4()),
        }
    return body


def _int_param(req: Request, name: str, default: int) -> int:
    raw = req.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ServiceError(
            400, "BadRequest", f"{name} must be a whole number, not {raw!r}."
        ) from None


def _skip(req: Request) -> int:
    skip = _int_param(req, "$skiptoken", 0)
    if skip < 0:
        raise ServiceError(400, "BadRequest", "The $skiptoken is not valid.")
    return skip


def _wants_attributes(req: Request) -> frozenset[str]:
    """The user properties roles read that ``$select`` names (jobTitle, accountEnabled, ...),
    case-folded; empty: none."""
    select = req.query.get("$select") or ""
    return frozenset(s.strip().casefold() for s in select.split(",")) & USER_PROPERTIES


def _select(obj: dict[str, Any], req: Request) -> dict[str, Any]:
    select = req.query.get("$select")
    if not select:
        return obj
    wanted = {s.strip().casefold() for s in select.split(",")}
    return {k: v for k, v in obj.items() if k.startswith("@odata") or k.casefold() in wanted}


# ---------------------------------------------------------------------------------- identity


def openid_configuration(sb: Sandbox, req: Request) -> Response:
    tid = _tenant_of(sb, req.params["tenant"])
    base = f"{sb.base_url}/{tid}"
    return Response(
        200,
        {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"{sb.base_url}/{tid}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"https://login.microsoftonline.com/{tid}/v2.0",
            "request_uri_parameter_supported": False,
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
        },
    )


def _tenant_of(sb: Sandbox, ref: str) -> str:
    tenant = sb.tenant
    names = {tenant.tenant_id.casefold()} | {d.casefold() for d, _ in tenant.domains}
    if ref.casefold() not in names:
        raise IdentityError(
            400,
            "invalid_request",
            90002,
            f"Tenant '{ref}' not found. Check to make sure you have the correct tenant ID and are "
            "signing into the correct cloud. Check with your subscription administrator, this "
            "may happen if there are no active subscriptions for the tenant.",
        )
    return tenant.tenant_id


def token(sb: Sandbox, req: Request) -> Response:
    from urllib.parse import parse_qs

    tid = _tenant_of(sb, req.params["tenant"])
    form = {k: v[0] for k, v in parse_qs(req.body.decode("utf-8", "replace")).items()}
    if form.get("grant_type") != "client_credentials":
        raise IdentityError(
            400,
            "unsupported_grant_type",
            70003,
            f"The app requested an unsupported grant type '{form.get('grant_type', '')}'. The "
            "sandbox supports client_credentials.",
        )
    client_id = form.get("client_id", "")
    if client_id != sb.client_id:
        raise IdentityError(
            400,
            "unauthorized_client",
            700016,
            f"Application with identifier '{client_id}' was not found in the directory "
            f"'{sb.tenant.display_name}'. This can happen if the application has not been "
            "installed by the administrator of the tenant or consented to by any user in the "
            "tenant. You may have sent your authentication request to the wrong tenant.",
        )
    if "client_secret" in form:
        if not sb.check_secret(form["client_secret"]):
            raise IdentityError(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is "
                "the client secret value, not the client secret ID, for a secret added to app "
                f"'{client_id}'.",
            )
        method = "1"
    elif "client_assertion" in form:
        if form.get("client_assertion_type") != (
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        ):
            raise IdentityError(
                400,
                "invalid_request",
                50027,
                "client_assertion_type must be "
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer.",
            )
        sb.check_assertion(form["client_assertion"], req.params["tenant"])
        method = "2"
    else:
        raise IdentityError(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or "
            "'client_secret'.",
        )
    resource = _resource(sb, form.get("scope", ""))
    claims = {
        "aud": resource,
        "tid": tid,
        "appid": client_id,
        "appidacr": method,
        "idtyp": "app",
        "oid": sb.service_principal_id,
        "sub": sb.service_principal_id,
        "roles": [] if resource == TEAMS_RESOURCE else sb.graph_app_roles(),
        "wids": sb.role_template_ids(),
    }
    access_token = sb.issuer.issue(claims)
    return Response(
        200,
        {
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": access_token,
        },
    )


def _resource(sb: Sandbox, scope: str) -> str:
    scopes = [s for s in scope.split() if s not in ("openid", "profile", "offline_access")]
    if len(scopes) != 1 or not scopes[0].endswith("/.default"):
        raise IdentityError(
            400,
            "invalid_scope",
            1002012,
            f"The provided value for scope {scope} is not valid. Client credential flows must "
            "have a scope value with /.default suffixed to the resource identifier "
            "(application ID URI).",
        )
    resource = scopes[0][: -len("/.default")].rstrip("/")
    if resource not in sb.audiences("teams") | sb.audiences("graph"):
        raise IdentityError(
            400,
            "invalid_resource",
            500011,
            f"The resource principal named {resource} was not found in the tenant named "
            f"{sb.tenant.display_name}. This can happen if the application has not been "
            "installed by the administrator of the tenant or consented to by any user in the "
            "tenant. You might have sent your authentication request to the wrong tenant.",
        )
    return resource


# ---------------------------------------------------------------------------------- Teams


def list_policies(sb: Sandbox, req: Request) -> Response:
    return Response(200, sb.tenant.list_policies())


def get_policy(sb: Sandbox, req: Request) -> Response:
    return Response(200, sb.tenant.get_policy(req.params["identity"]))


def _written(sb: Sandbox, status: int, policy: dict[str, Any]) -> Response:
    """A policy write's answer in the shape the ``write_answer`` knob names."""
    shape = sb.config.write_answer
    if shape == "array":
        return Response(status, [policy])
    if shape == "empty":
        return Response(200)
    if shape == "no_content":
        return Response(204)
    return Response(status, policy)


def create_policy(sb: Sandbox, req: Request) -> Response:
    body = req.json()
    if not isinstance(body, dict):
        raise ServiceError(400, "BadRequest", "The body must be a JSON object.")
    return _written(sb, 201, sb.tenant.create_policy(body))


def update_policy(sb: Sandbox, req: Request) -> Response:
    body = req.json()
    if not isinstance(body, dict):
        raise ServiceError(400, "BadRequest", "The body must be a JSON object.")
    identity = req.params["identity"]
    sent = body.get("Identity")
    if isinstance(sent, str) and bare(sent).casefold() != bare(identity).casefold():
        raise ServiceError(
            400, "BadRequest", f"The body's Identity '{sent}' does not match '{identity}'."
        )
    return _written(sb, 200, sb.tenant.update_policy(identity, body))


def delete_policy(sb: Sandbox, req: Request) -> Response:
    sb.tenant.delete_policy(req.params["identity"])
    return Response(204)


_CAMEL_GROUP_KEYS = {
    "GroupId": "groupId",
    "PolicyType": "policyType",
    "PolicyName": "policyName",
    "Rank": "rank",
    "CreatedTime": "createdTime",
    "CreatedBy": "createdBy",
}


def list_group_assignments(sb: Sandbox, req: Request) -> Response:
    rows = sb.tenant.list_group_assignments()
    shape = sb.config.group_keys
    if shape == "camel":
        rows = [{_CAMEL_GROUP_KEYS[k]: v for k, v in r.items() if k != "Priority"} for r in rows]
    elif shape == "priority":
        rows = [{k: v for k, v in r.items() if k != "Rank"} for r in rows]
    return Response(200, rows)


def add_group_assignment(sb: Sandbox, req: Request) -> Response:
    body = req.json()
    if not isinstance(body, dict):
        raise ServiceError(400, "BadRequest", "The body must be a JSON object.")
    sb.tenant.add_group_assignment(
        req.params["group"], req.params["type"], body.get("PolicyName"), body.get("Rank")
    )
    return Response(204)


def remove_group_assignment(sb: Sandbox, req: Request) -> Response:
    sb.tenant.remove_group_assignment(req.params["group"], req.params["type"])
    return Response(204)


def grant_user(sb: Sandbox, req: Request) -> Response:
    body = req.json()
    if not isinstance(body, dict) or "PolicyName" not in body:
        raise ServiceError(400, "BadRequest", "The body needs 'PolicyName' (a name, or null).")
    name = body["PolicyName"]
    if name is not None and not isinstance(name, str):
        raise ServiceError(400, "BadRequest", "PolicyName must be a policy name or null.")
    sb.tenant.grant(req.params["user"], name)
    return Response(204)


def list_users(sb: Sandbox, req: Request) -> Response:
    limit = sb.config.page_size
    top = _int_param(req, "$top", limit)
    if top < 1:
        raise ServiceError(400, "BadRequest", "$top must be at least 1.")
    top = min(top, limit)
    skip = _skip(req)
    users, more = sb.tenant.users_page(skip, top, _wants_attributes(req))
    body: dict[str, Any] = {"users": [_user_row(sb, u) for u in users]}
    paging = sb.config.paging
    if more and paging.casefold() in ("skiptoken", "$skiptoken"):
        body[paging] = str(skip + top)  # the client sends it back as $skiptoken
    elif more:
        link: dict[str, Any] = {"$top": top, "$skiptoken": skip + top}
        if "$select" in req.query:
            link["$select"] = req.query["$select"]
        query = urlencode(link, safe="$,")
        body[paging] = f"{sb.base_url}/Teams.User/users?{query}"
    if sb.config.user_count:
        body[sb.config.user_count] = sb.tenant.user_count
    return Response(200, body)


def _user_row(sb: Sandbox, row: dict[str, Any]) -> dict[str, Any]:
    """A users page entry in the shape the ``user_rows`` knob names."""
    shape = sb.config.user_rows
    if shape == "cmdlet":
        return row
    out = {
        "objectId": row["Identity"],
        "userPrincipalName": row["UserPrincipalName"],
        "displayName": row["DisplayName"],
        "department": row["Department"],
    }
    # Role attributes asked for with $select keep their Graph names in every shape.
    out.update({k: v for k, v in row.items() if k.casefold() in USER_PROPERTIES})
    direct = row["TeamsMessagingPolicy"]
    if shape == "camel":
        out["teamsMessagingPolicy"] = direct
        return out
    # go-teams' live shape: the direct policy is the type's Direct entry; a group's policy shows
    # as a Group entry, which is not a direct assignment.
    entries = []
    if direct:
        entries.append({"assignmentType": "Direct", "displayName": direct})
    else:
        name, kind, group_id = sb.tenant.effective_policy(row["Identity"])
        if kind == "group":
            entries.append({"assignmentType": "Group", "displayName": name, "groupId": group_id})
    out["effectivePolicyAssignments"] = [
        {"policyType": MESSAGING, "policyAssignment": e} for e in entries
    ]
    return out


# ---------------------------------------------------------------------------------- Graph

_FILTER = re.compile(r"\s*displayName\s+eq\s+'((?:[^']|'')*)'\s*", re.IGNORECASE)
_POLICY_ID = re.compile(r"type='((?:[^']|'')*)',\s*name='((?:[^']|'')*)'", re.IGNORECASE)


def list_groups(sb: Sandbox, req: Request) -> Response:
    text = req.query.get("$filter")
    if text is None:
        groups = sb.tenant.groups()
    else:
        match = _FILTER.fullmatch(text)
        if not match:
            raise ServiceError(
                400,
                "Request_UnsupportedQuery",
                f"Unsupported or invalid query filter clause specified: {text!r}. The sandbox "
                "supports displayName eq '<name>'.",
            )
        groups = sb.tenant.groups_named(match.group(1).replace("''", "'"))
    return Response(200, {"value": [_select(g, req) for g in groups]})


def get_group(sb: Sandbox, req: Request) -> Response:
    group = sb.tenant.group(req.params["group"])
    if group is None:
        raise _not_found(req.params["group"])
    return Response(200, _select(group, req))


def _graph_top(req: Request) -> int:
    top = _int_param(req, "$top", GRAPH_DEFAULT_TOP)
    if not 1 <= top <= GRAPH_MAX_TOP:
        raise ServiceError(
            400,
            "Request_BadRequest",
            f"Invalid page size specified: '{top}'. Must be between 1 and {GRAPH_MAX_TOP} "
            "inclusive.",
        )
    return top


def _graph_page(
    sb: Sandbox,
    req: Request,
    path: str,
    items: list[dict[str, Any]],
    *,
    skip: int,
    top: int,
    more: bool,
) -> Response:
    """``{"value": items}`` (``$select`` applied), with an ``@odata.nextLink`` to ``path`` that
    carries the next ``$skiptoken``, the same ``$top`` and ``$select``, when ``more``."""
    body: dict[str, Any] = {"value": [_select(item, req) for item in items]}
    if more:
        query: dict[str, Any] = {"$top": top, "$skiptoken": skip + top}
        if "$select" in req.query:
            query["$select"] = req.query["$select"]
        body["@odata.nextLink"] = f"{sb.base_url}/v1.0{path}?{urlencode(query, safe='$,')}"
    return Response(200, body)


def group_members(sb: Sandbox, req: Request) -> Response:
    top = _graph_top(req)
    skip = _skip(req)
    group_id = req.params["group"]
    positions, more = sb.tenant.group_members(group_id, skip, top)
    users = [_graph_user(sb, p) for p in positions]
    return _graph_page(sb, req, f"/groups/{group_id}/members", users, skip=skip, top=top, more=more)


def list_graph_users(sb: Sandbox, req: Request) -> Response:
    if "$filter" in req.query or "$search" in req.query:
        raise ServiceError(
            400,
            "Request_UnsupportedQuery",
            "The sandbox lists users with $select, $top and $skiptoken only.",
        )
    top = _graph_top(req)
    skip = _skip(req)
    users, more = sb.tenant.graph_users_page(skip, top, _wants_attributes(req))
    return _graph_page(sb, req, "/users", users, skip=skip, top=top, more=more)


def _graph_user(sb: Sandbox, pos: int) -> dict[str, Any]:
    return {"@odata.type": "#microsoft.graph.user", **sb.tenant.user(pos)}


def _not_found(ref: str) -> ServiceError:
    return ServiceError(
        404,
        "Request_ResourceNotFound",
        f"Resource '{ref}' does not exist or one of its queried reference-property objects are "
        "not present.",
    )


def get_user(sb: Sandbox, req: Request) -> Response:
    pos = sb.tenant.find_user(req.params["user"])
    if pos is None:
        raise _not_found(req.params["user"])
    user = sb.tenant.user(pos, _wants_attributes(req))
    return Response(200, _select(user, req))


def member_of(sb: Sandbox, req: Request) -> Response:
    groups = sb.tenant.member_of(req.params["user"])
    return Response(
        200,
        {"value": [_select({"@odata.type": "#microsoft.graph.group", **g}, req) for g in groups]},
    )


def organization(sb: Sandbox, req: Request) -> Response:
    t = sb.tenant
    org = {
        "id": t.tenant_id,
        "displayName": t.display_name,
        "verifiedDomains": [
            {
                "capabilities": "Email, OfficeCommunicationsOnline",
                "isDefault": default,
                "isInitial": name.endswith(".onmicrosoft.com"),
                "name": name,
                "type": "Managed",
            }
            for name, default in t.domains
        ],
    }
    return Response(200, {"value": [_select(org, req)]})


def get_policy_id(sb: Sandbox, req: Request) -> Response:
    match = _POLICY_ID.fullmatch(req.params["args"])
    if not match:
        raise ServiceError(
            400,
            "BadRequest",
            "getPolicyId takes type='<policy type>',name='<policy name>'.",
        )
    ptype, name = (g.replace("''", "'") for g in match.groups())
    if ptype.casefold() != MESSAGING.casefold():
        raise ServiceError(400, "BadRequest", f"Policy type '{ptype}' is not supported.")
    identity = sb.tenant.get_policy(name)["Identity"]
    return Response(
        200,
        {
            "@odata.context": f"{sb.base_url}/v1.0/$metadata#Collection("
            "microsoft.graph.teamsAdministration.policyIdentifierDetail)",
            "value": [{"name": identity, "policyId": sb.tenant.policy_id(identity)}],
        },
    )


def _bulk_entries(req: Request, need_policy: bool) -> list[tuple[str, str | None]]:
    body = req.json()
    entries = body.get("value") if isinstance(body, dict) else None
    if not isinstance(entries, list):
        raise ServiceError(400, "BadRequest", "The body needs 'value': a list of assignments.")
    if len(entries) > GRAPH_BULK_ASSIGN_LIMIT:
        raise ServiceError(
            400,
            "BadRequest",
            f"{len(entries)} entries is over the limit of {GRAPH_BULK_ASSIGN_LIMIT} per request.",
        )
    out: list[tuple[str, str | None]] = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("userId"), str):
            raise ServiceError(400, "BadRequest", f"value[{n}] needs a 'userId'.")
        ptype = entry.get("policyType")
        if not isinstance(ptype, str) or ptype.casefold() != MESSAGING.casefold():
            raise ServiceError(
                400,
                "BadRequest",
                f"value[{n}] (userId '{entry['userId']}'): policyType must be {MESSAGING}, "
                f"not {ptype!r}.",
            )
        policy_id = entry.get("policyId")
        if need_policy and not isinstance(policy_id, str):
            raise ServiceError(
                400, "BadRequest", f"value[{n}] (userId '{entry['userId']}') needs a 'policyId'."
            )
        out.append((entry["userId"], policy_id if need_policy else None))
    return out


def assign_users(sb: Sandbox, req: Request) -> Response:
    sb.tenant.assign_by_ids(_bulk_entries(req, need_policy=True))
    return Response(204)


def unassign_users(sb: Sandbox, req: Request) -> Response:
    sb.tenant.assign_by_ids(_bulk_entries(req, need_policy=False))
    return Response(204)


def user_configuration(sb: Sandbox, req: Request) -> Response:
    ref = req.params["user"]
    name, kind, group_id = sb.tenant.effective_policy(ref)
    pos = sb.tenant.find_user(ref)
    assert pos is not None  # effective_policy raised 404 otherwise
    return Response(
        200,
        {
            "id": sb.tenant.user_ids[pos],
            "effectivePolicyAssignments": [
                {
                    "policyType": MESSAGING,
                    "policyAssignment": {
                        "displayName": name,
                        "assignmentType": kind,
                        "policyId": sb.tenant.policy_id(wire_identity(name)),
                        "groupId": group_id,
                    },
                }
            ],
        },
    )


def batch(sb: Sandbox, req: Request) -> Response:
    body = req.json()
    requests = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(requests, list) or not requests:
        raise ServiceError(400, "BadRequest", "The body needs 'requests': a non-empty list.")
    if len(requests) > GRAPH_BATCH_LIMIT:
        raise ServiceError(
            400,
            "BadRequest",
            f"The batch has {len(requests)} requests; the limit is {GRAPH_BATCH_LIMIT}.",
        )
    ids = [r.get("id") if isinstance(r, dict) else None for r in requests]
    if any(not isinstance(i, str) or not i for i in ids) or len(set(ids)) != len(ids):
        raise ServiceError(
            400, "BadRequest", "Every request in a batch needs a unique, non-empty 'id'."
        )
    return Response(200, {"responses": [sb.handle_inner(r, req) for r in requests]})


# ---------------------------------------------------------------------------------- table

_IDENTITY = [
    ("GET", r"/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration", openid_configuration),
    ("GET", r"/(?P<tenant>[^/]+)/\.well-known/openid-configuration", openid_configuration),
    ("POST", r"/(?P<tenant>[^/]+)/oauth2/v2\.0/token", token),
]
_CONF = r"/Skype\.Policy/configurations/TeamsMessagingPolicy"
_GPA = r"/Skype\.Policy/groupPolicyAssignments"
_TEAMS = [
    ("GET", _CONF, list_policies),
    ("POST", _CONF, create_policy),
    ("GET", _CONF + r"/configuration/(?P<identity>[^/]+)", get_policy),
    ("PUT", _CONF + r"/configuration/(?P<identity>[^/]+)", update_policy),
    ("DELETE", _CONF + r"/configuration/(?P<identity>[^/]+)", delete_policy),
    ("GET", _GPA + "/?", list_group_assignments),
    ("PATCH", _GPA + r"/(?P<group>[^/]+)/policyTypes/(?P<type>[^/]+)", add_group_assignment),
    ("DELETE", _GPA + r"/(?P<group>[^/]+)/policyTypes/(?P<type>[^/]+)", remove_group_assignment),
    ("PATCH", r"/Skype\.Policy/users/(?P<user>[^/]+)/policies/TeamsMessagingPolicy", grant_user),
    ("GET", r"/Teams\.User/users", list_users),
]
_GRAPH = [
    ("GET", r"/v1\.0/groups", list_groups),
    ("GET", r"/v1\.0/groups/(?P<group>[^/]+)", get_group),
    ("GET", r"/v1\.0/groups/(?P<group>[^/]+)/members", group_members),
    ("GET", r"/v1\.0/users", list_graph_users),
    ("GET", r"/v1\.0/users/(?P<user>[^/]+)/memberOf", member_of),
    ("GET", r"/v1\.0/users/(?P<user>[^/]+)", get_user),
    ("POST", r"/v1\.0/\$batch", batch),
    ("GET", r"/v1\.0/admin/teams/policy/getPolicyId\((?P<args>.*)\)", get_policy_id),
    ("POST", r"/v1\.0/admin/teams/policy/userAssignments/assign", assign_users),
    ("POST", r"/v1\.0/admin/teams/policy/userAssignments/unassign", unassign_users),
    ("GET", r"/v1\.0/admin/teams/userConfigurations/(?P<user>[^/]+)", user_configuration),
    ("GET", r"/v1\.0/organization", organization),
]
# Graph POSTs that change nothing.
_READ_POSTS = {batch}


def _name(pattern: str) -> str:
    """``/v1\\.0/users/(?P<user>[^/]+)`` -> ``/v1.0/users/{user}`` (the stats key)."""
    name = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern)
    return name.replace("\\", "").replace("/?", "/")


def _routes() -> list[Route]:
    routes = []
    for api, table in (("identity", _IDENTITY), ("teams", _TEAMS), ("graph", _GRAPH)):
        for method, pattern, handler in table:
            write = api != "identity" and method != "GET" and handler not in _READ_POSTS
            routes.append(
                Route(
                    method,
                    re.compile(pattern, re.IGNORECASE),
                    f"{method} {_name(pattern)}",
                    api,
                    write,
                    handler,
                )
            )
    return routes


ROUTES = _routes()


# Graph's key form for a UPN that starts with "$": /users('$adm@x') == /users/$adm@x
_USER_KEY = re.compile(r"(/v1\.0/users)\('((?:[^']|'')*)'\)", re.IGNORECASE)


def _user_key_as_segment(m: re.Match[str]) -> str:
    return m.group(1) + "/" + m.group(2).replace("''", "'")


def match(method: str, path: str) -> tuple[Route | None, dict[str, str]]:
    """The route for a request and its path parameters, or (None, {})."""
    path = _USER_KEY.sub(_user_key_as_segment, path, 1)
    for route in ROUTES:
        m = route.pattern.fullmatch(path)
        if m and route.method == method:
            return route, m.groupdict()
    return None, {}


def api_of(path: str) -> str:
    if path.lower().startswith("/v1.0/"):
        return "graph"
    if path.lower().startswith(("/skype.policy/", "/teams.user/")):
        return "teams"
    return "identity"
