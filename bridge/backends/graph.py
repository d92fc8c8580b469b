"""Microsoft Graph: directory lookups (users, groups, memberships), batched through ``$batch``,
and the Teams policy assignment endpoints (commercial cloud only). Requests follow docs/wire.md.

Lookups never guess: a display name keeps every group that matches (so ambiguity is visible), and
a name that was looked up and found nothing is reported as searched-but-absent, which is a fact;
any other failure raises.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ..auth import is_guid
from ..errors import InvalidResponseError, NotFoundError, ServerError, ThrottledError
from ..http import HttpClient, retry_after_seconds
from ..roles import attributes_from, graph_select
from ..state import Group, User, bare_name, policy_key
from ..wire import Fields

log = logging.getLogger(__name__)

BATCH_SIZE = 20  # Graph's limit per $batch request
USERS_PAGE_SIZE = 999  # Graph's largest $top for /users
POLICY_TYPE = "TeamsMessagingPolicy"
_USER_SELECT = "id,userPrincipalName,displayName,department"
_INNER_RETRY = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Organization:
    id: str
    display_name: str
    verified_domains: tuple[str, ...]
    default_domain: str | None = None


@dataclass(frozen=True)
class BatchRequest:
    id: str
    url: str  # relative to /v1.0, starting with "/"
    method: str = "GET"


def odata_string(value: str) -> str:
    """A string literal for OData: quotes doubled, then percent-encoded for a URL."""
    return quote("'" + value.replace("'", "''") + "'", safe="'@$")


def user_path(ref: str) -> str:
    """The ``/users/...`` path for an object id or UPN: ``#`` in guest UPNs (``#EXT#``) encoded,
    and a UPN starting with ``$`` in the ``('...')`` form Graph requires for it."""
    if ref.startswith("$"):
        return f"/users({odata_string(ref)})"
    return "/users/" + quote(ref, safe="@")


def user_select(attributes: Sequence[str] = ()) -> str:
    """``$select`` for users: the fields every read needs and the attributes roles use."""
    if not attributes:
        return _USER_SELECT
    return ",".join(dict.fromkeys([*_USER_SELECT.split(","), *graph_select(attributes)]))


def user_from_graph(
    obj: Any, where: str = "Graph answer, a user,", attributes: Sequence[str] = ()
) -> User:
    """A Graph user object (``id`` required; names matched in any case): an object without an
    id is an ``InvalidResponseError`` naming ``where``, never a KeyError or a user skipped.
    ``attributes``: the role attributes to keep (``User.attributes``; None when none asked)."""
    if not isinstance(obj, Mapping):
        raise InvalidResponseError(f"{where} is not an object: {str(obj)[:80]!r}")
    row = Fields(obj, where)
    uid = row.text("id")
    upn, name, department = (row.get(k) for k in ("userPrincipalName", "displayName", "department"))
    attrs = attributes_from(obj, attributes) if attributes else None
    return User(uid, str(upn or uid), name, department, attrs)


def group_from_graph(obj: Any, where: str = "Graph answer, a group,") -> Group:
    if not isinstance(obj, Mapping):
        raise InvalidResponseError(f"{where} is not an object: {str(obj)[:80]!r}")
    row = Fields(obj, where)
    return Group(row.text("id"), str(row.get("displayName") or ""))


def _member(obj: Any, where: str) -> Fields:
    if not isinstance(obj, Mapping):
        raise InvalidResponseError(f"{where} is not an object: {str(obj)[:80]!r}")
    return Fields(obj, where)


class GraphClient:
    def __init__(self, http: HttpClient, base_url: str):
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.resource = self.base_url  # the token audience is the Graph base URL
        self._v1 = f"{self.base_url}/v1.0"

    def _url(self, path: str) -> str:
        return self._v1 + path

    # ------------------------------------------------------------------ $batch

    def batch(self, requests: Sequence[BatchRequest]) -> dict[str, tuple[int, Any]]:
        """``{request id: (status, body)}`` for every request, 20 per ``$batch`` call, chunks
        sent concurrently. Inner 429/5xx are re-sent after their ``Retry-After`` (bounded like
        any request); what is still failing then raises."""
        chunks = [requests[i : i + BATCH_SIZE] for i in range(0, len(requests), BATCH_SIZE)]
        results: dict[str, tuple[int, Any]] = {}
        for part in self.http.map_concurrent(self._batch_chunk, chunks):
            results.update(part)
        return results

    def _batch_chunk(self, chunk: Sequence[BatchRequest]) -> dict[str, tuple[int, Any]]:
        pending = {r.id: r for r in chunk}
        done: dict[str, tuple[int, Any]] = {}
        attempts = self.http.options.retry_attempts
        waited = 0.0
        # Attempts are counted as rounds that answered none of the pending requests: a
        # throttled service answers a few per round (as many as its bucket holds), and a
        # chunk that keeps getting answers is making progress, not failing.
        stalled = rounds = 0
        while True:
            rounds += 1
            body = {
                "requests": [
                    {"id": r.id, "method": r.method, "url": r.url} for r in pending.values()
                ]
            }
            # The service counts each inner request against its rate, so the pacer does too.
            response = self.http.request(
                "POST",
                self._url("/$batch"),
                resource=self.resource,
                json=body,
                expected=(200,),
                cost=len(pending),
                idempotent=True,  # only reads inside
            )
            answers = self.http.json_of(response, self.resource)
            inner = answers.get("responses") if isinstance(answers, dict) else None
            if not isinstance(inner, list):
                raise InvalidResponseError(
                    "Graph $batch answer has no 'responses' list", url=response.url
                )
            by_id = {str(a.get("id")): a for a in inner if isinstance(a, dict)}
            missing = sorted(set(pending) - set(by_id))
            if missing:
                raise InvalidResponseError(
                    f"Graph $batch answer lacks the responses to requests {', '.join(missing)}",
                    url=response.url,
                )
            retry_after = throttle_wait = 0.0
            last_status: dict[str, int] = {}
            answered = 0
            for rid in list(pending):
                answer = by_id[rid]
                status = answer.get("status")
                if not isinstance(status, int) or isinstance(status, bool):
                    raise InvalidResponseError(
                        f"Graph POST /v1.0/$batch answered request {rid} "
                        f"({pending[rid].method} {pending[rid].url}) with status {status!r}, "
                        "not an HTTP status code",
                        url=response.url,
                    )
                if status in _INNER_RETRY:
                    last_status[rid] = status
                    headers = {str(k).lower(): v for k, v in (answer.get("headers") or {}).items()}
                    seconds = retry_after_seconds(headers.get("retry-after"))
                    if status == 429:
                        self.http.note_throttled()
                        throttle_wait = max(throttle_wait, seconds or 0.0)
                    retry_after = max(retry_after, seconds or 0.0)
                    continue
                done[rid] = (status, answer.get("body"))
                del pending[rid]
                answered += 1
            if not pending:
                return done
            stalled = 0 if answered else stalled + 1
            # Retry-After is a floor; waits grow only over rounds without any answer, which
            # keeps concurrent chunks from exhausting their attempts while the service is
            # still throttling.
            backoff = min(30.0, 2.0 ** max(stalled - 1, 0))
            retry_wait = max(backoff, retry_after)
            if stalled >= attempts or waited + retry_wait > self.http.options.retry_max_seconds:
                break
            log.warning(
                "Graph $batch: %d inner request(s) throttled or failing, retrying them in %.1fs "
                "(%d answered this round; %d of %d attempts without an answer)",
                len(pending),
                retry_wait,
                answered,
                stalled,
                attempts,
            )
            if throttle_wait:
                # Only now that these will be retried: a Retry-After given up on closes nothing.
                self.http.hold(throttle_wait)
            self.http.wait(retry_wait)
            waited += retry_wait
        first = next(iter(pending.values()))
        throttled = 429 in last_status.values()
        cls = ThrottledError if throttled else ServerError
        raise cls(
            f"Graph $batch: {len(pending)} inner request(s) still "
            f"{'throttled' if throttled else 'failing with a server error'} after {rounds} "
            f"attempt(s) (first: {first.method} {first.url}): run again later, or raise "
            "BRIDGE_RETRY_ATTEMPTS / BRIDGE_RETRY_MAX_SECONDS",
            status=429 if throttled else last_status[first.id],
        )

    def _inner_error(self, request: BatchRequest, status: int, body: Any) -> Exception:
        return self.http.api_error(
            status, body, method=request.method, url=self._url(request.url), resource=self.resource
        )

    # ------------------------------------------------------------------ directory lookups

    def resolve_groups(self, refs: Iterable[str]) -> dict[str, list[Group]]:
        """Every group each ref names: an object id (looked up by id) or a display name (every
        match kept). An empty list means "searched, none found"."""
        unique = list(dict.fromkeys(refs))
        requests = []
        for i, ref in enumerate(unique):
            if is_guid(ref):
                url = f"/groups/{ref}?$select=id,displayName"
            else:
                url = (
                    f"/groups?$filter=displayName%20eq%20{odata_string(ref)}&$select=id,displayName"
                )
            requests.append(BatchRequest(str(i), url))
        answers = self.batch(requests)
        found: dict[str, list[Group]] = {}
        for req, ref in zip(requests, unique, strict=True):
            status, body = answers[req.id]
            if status == 404:
                found[ref] = []
            elif status != 200 or not isinstance(body, dict):
                raise self._inner_error(req, status, body)
            elif "value" in body:
                listed = body["value"]
                if not isinstance(listed, list):
                    raise InvalidResponseError(
                        f"Graph {req.method} {req.url}: 'value' is not a list"
                    )
                # A name lookup that Graph pages would hide matches: never a partial answer.
                if body.get("@odata.nextLink"):
                    raise InvalidResponseError(
                        f"Graph {req.method} {req.url} answered with more than one page of groups "
                        f"named {ref!r}: rename them or name the group by object id"
                    )
                found[ref] = [
                    group_from_graph(g, f"Graph answer to {req.method} {req.url}, a group,")
                    for g in listed
                ]
            else:
                found[ref] = [group_from_graph(body, f"Graph answer to {req.method} {req.url}")]
        return found

    def resolve_users(
        self, refs: Iterable[str], attributes: Sequence[str] = ()
    ) -> dict[str, User | None]:
        """Each ref (object id or UPN) to its user, or ``None`` when Graph says 404."""
        unique = list(dict.fromkeys(refs))
        select = user_select(attributes)
        requests = [
            BatchRequest(str(i), f"{user_path(ref)}?$select={select}")
            for i, ref in enumerate(unique)
        ]
        answers = self.batch(requests)
        found: dict[str, User | None] = {}
        for req, ref in zip(requests, unique, strict=True):
            status, body = answers[req.id]
            if status == 404:
                found[ref] = None
            elif status != 200 or not isinstance(body, dict):
                raise self._inner_error(req, status, body)
            else:
                found[ref] = user_from_graph(
                    body, f"Graph answer to {req.method} {req.url}", attributes
                )
        return found

    def user(self, ref: str, attributes: Sequence[str] = ()) -> User:
        body = self.http.get_json(
            self._url(user_path(ref)),
            resource=self.resource,
            params={"$select": user_select(attributes)},
        )
        return user_from_graph(body, attributes=attributes)

    def list_users(self, attributes: Sequence[str] = ()) -> list[User]:
        """Every user in the directory (id, UPN, display name, department, and ``attributes``
        in the same ``$select``), 999 a page, every ``@odata.nextLink`` followed; a page that
        fails raises (never a partial directory)."""
        items = self.http.paged(
            self._url("/users"),
            resource=self.resource,
            params={"$select": user_select(attributes), "$top": str(USERS_PAGE_SIZE)},
        )
        where = "Graph answer to GET /v1.0/users, user"
        return [user_from_graph(item, f"{where} {n},", attributes) for n, item in enumerate(items)]

    def group(self, group_id: str) -> Group:
        body = self.http.get_json(
            self._url(f"/groups/{quote(group_id)}"),
            resource=self.resource,
            params={"$select": "id,displayName"},
        )
        return group_from_graph(body, "Graph answer to GET /v1.0/groups/{id}")

    def group_members(self, group_id: str) -> list[str]:
        """The user ids of ``group_id``'s direct members."""
        items = self.http.paged(
            self._url(f"/groups/{quote(group_id)}/members"),
            resource=self.resource,
            params={"$select": "id,userPrincipalName", "$top": "999"},
        )
        where = "Graph answer to GET /v1.0/groups/{id}/members, member"
        members = (_member(m, f"{where} {n},") for n, m in enumerate(items))
        return [
            row.text("id")
            for row in members
            if row.get("@odata.type", default="#microsoft.graph.user") == "#microsoft.graph.user"
        ]

    def member_of(self, user_id: str) -> list[Group]:
        """The groups ``user_id`` is a direct member of (roles and units left out)."""
        items = self.http.paged(
            self._url(f"{user_path(user_id)}/memberOf"),
            resource=self.resource,
            params={"$select": "id,displayName"},
        )
        where = "Graph answer to GET /v1.0/users/{id}/memberOf, entry"
        entries = (_member(g, f"{where} {n},") for n, g in enumerate(items))
        return [
            Group(row.text("id"), str(row.get("displayName") or ""))
            for row in entries
            if row.get("@odata.type", default="#microsoft.graph.group") == "#microsoft.graph.group"
        ]

    def user_configuration(self, user_id: str) -> dict[str, Any]:
        """The user's effective Teams policies (``effectivePolicyAssignments``)."""
        body = self.http.get_json(
            self._url(f"/admin/teams/userConfigurations/{quote(user_id)}"),
            resource=self.resource,
        )
        if not isinstance(body, dict):
            raise InvalidResponseError("Graph userConfigurations answer is not an object")
        return body

    def organization(self) -> Organization:
        body = self.http.get_json(
            self._url("/organization"),
            resource=self.resource,
            params={"$select": "id,displayName,verifiedDomains"},
        )
        orgs = body.get("value") if isinstance(body, dict) else None
        if not orgs:
            raise InvalidResponseError("Graph /organization returned no organization")
        org = orgs[0]
        domains = org.get("verifiedDomains") or []
        default = next((d["name"] for d in domains if d.get("isDefault")), None)
        return Organization(
            str(org["id"]),
            str(org.get("displayName") or ""),
            tuple(str(d["name"]) for d in domains),
            default,
        )

    # ------------------------------------------------------------------ policy assignment

    def policy_id(self, policy: str) -> str:
        """The Graph policy id of a messaging policy (``NotFoundError`` if it has none)."""
        path = (
            f"/admin/teams/policy/getPolicyId(type={odata_string(POLICY_TYPE)},"
            f"name={odata_string(bare_name(policy))})"
        )
        body = self.http.get_json(self._url(path), resource=self.resource)
        for entry in (body.get("value") or []) if isinstance(body, dict) else []:
            if policy_key(str(entry.get("name", ""))) == policy_key(policy) and entry.get(
                "policyId"
            ):
                return str(entry["policyId"])
        raise NotFoundError(
            f"Graph has no policy id for messaging policy {bare_name(policy)!r}: does the "
            "policy exist?",
            status=404,
        )

    def assign(self, entries: Sequence[tuple[str, str]]) -> None:
        """Direct assignments ``(user id, policy id)``, one request (the caller chunks)."""
        body = {
            "value": [
                {"userId": uid, "policyType": POLICY_TYPE, "policyId": pid} for uid, pid in entries
            ]
        }
        self.http.request(
            "POST",
            self._url("/admin/teams/policy/userAssignments/assign"),
            resource=self.resource,
            json=body,
            expected=(200, 204),
            idempotent=True,  # assigning the same policy again changes nothing
        )

    def unassign(self, user_ids: Sequence[str]) -> None:
        body = {"value": [{"userId": uid, "policyType": POLICY_TYPE} for uid in user_ids]}
        self.http.request(
            "POST",
            self._url("/admin/teams/policy/userAssignments/unassign"),
            resource=self.resource,
            json=body,
            expected=(200, 204),
            idempotent=True,
        )
