"""The Teams admin API (the REST service behind the MicrosoftTeams cmdlets) and ``RestBackend``,
which reads and writes a tenant through it and Graph. Requests follow docs/wire.md.

Names in, names out: callers pass bare policy names (``Clinical``); ``Tag:`` is added on the wire
and stripped from answers, and identities compare case-insensitively.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any
from urllib.parse import quote

from .. import limits
from ..auth import TEAMS_RESOURCE, decode_claims
from ..errors import (
    ApiError,
    AuthError,
    BridgeError,
    ConflictError,
    ForbiddenError,
    InvalidResponseError,
    NotFoundError,
    UnauthorizedError,
)
from ..http import HttpClient, route_of
from ..roles import attributes_from, graph_select
from ..settings import Settings
from ..state import (
    Directory,
    Group,
    GroupAssignment,
    Policy,
    TenantState,
    User,
    UserAssignment,
    bare_name,
    policy_key,
    wire_identity,
)
from ..wire import Fields
from .base import POLICY_TYPE, BulkResult, ChunkResult, UserFailure, Wanted, WriteReceipt
from .graph import GraphClient, Organization
from .snapshot import policy_from_service

log = logging.getLogger(__name__)

USERS_PAGE_SIZE = 1000  # the service's maximum $top for /Teams.User/users
USERS_PAGES_AHEAD = 2  # user pages fetched while the one before is read
_YIELD_EVERY = 100  # users read between two chances for the page fetcher to run
_CMDLET_FIELDS = frozenset(
    {"Identity", "UserPrincipalName", "DisplayName", "Department", "TeamsMessagingPolicy"}
)
GRAPH_ASSIGN_CHUNK = 1000
_NOTHING = Wanted()
# What every users page must carry; a $select for role attributes names these too (docs/wire.md).
USER_FIELDS = (
    "Identity",
    "UserPrincipalName",
    "DisplayName",
    "Department",
    "TeamsMessagingPolicy",
    "effectivePolicyAssignments",
)


GROUPS_ROUTE = "GET /Skype.Policy/groupPolicyAssignments/"
USERS_ROUTE = "GET /Teams.User/users"
# effectivePolicyAssignments' assignmentType values that are not a direct assignment.
_NOT_DIRECT = frozenset({"group", "default"})


# ---------------------------------------------------------------------- answer readers
# One reader per kind of answer. Field names match in any case and under every name a source
# records (docs/wire.md, "Answer shapes"); an entry a reader cannot place raises
# InvalidResponseError naming the route and the field, never drops the entry.


def _object(entry: Any, where: str, url: str | None) -> Mapping[str, Any]:
    if not isinstance(entry, Mapping):
        raise InvalidResponseError(
            f"{where} is not an object: {str(entry)[:80]!r} (docs/wire.md)", url=url
        )
    return entry


def read_group_assignment(entry: Any, where: str, url: str | None = None) -> GroupAssignment | None:
    """One entry of the group assignment list (every policy type): ``GroupId``, ``PolicyType``,
    ``PolicyName`` and ``Rank`` (or ``Priority``, the cmdlet object's name), in any case. None
    for another policy type; an entry without a policy type cannot be placed (it may be ours)."""
    row = Fields(_object(entry, where, url), where, url)
    if row.text("PolicyType").casefold() != POLICY_TYPE.casefold():
        return None
    rank = row.whole_number("Rank", "Priority")
    # The service numbers ranks 1, 2, 3... (at most 64 groups a policy type); the same range a
    # snapshot or saved plan is held to, so what is read can be saved and read back.
    if limits.RANK.problem(rank) is not None:
        raise row.error(f"has rank {rank}, out of {limits.RANK.describe().removeprefix('a ')}")
    return GroupAssignment(row.text("GroupId"), bare_name(row.text("PolicyName")), rank)


def read_user(
    entry: Any, where: str, url: str | None = None, attributes: Sequence[str] = ()
) -> tuple[User, str | None]:
    """One Get-CsOnlineUser entry: the user, and the bare name of their direct messaging policy
    (None: none). The id is ``Identity`` or ``ObjectId``; the direct policy is the
    ``TeamsMessagingPolicy`` property (null: none), or else the ``Direct`` entry for the type in
    ``effectivePolicyAssignments`` (the shape go-teams records from a live tenant). An entry with
    neither cannot say whether the user has a direct assignment, so it is refused."""
    row = Fields(_object(entry, where, url), where, url)
    uid = row.text("Identity", "ObjectId")
    if not row.has("UserPrincipalName"):
        raise row.error(f"has no 'UserPrincipalName' field (fields: {', '.join(row.names)})")
    upn = row.get("UserPrincipalName")
    user = User(
        uid,
        str(upn or uid),
        _optional_text(row, "DisplayName"),
        _optional_text(row, "Department"),
        _user_attributes(entry, attributes) if attributes else None,
    )
    return user, _direct_policy(row)


# Get-CsOnlineUser's names for Graph user properties (its object says Title, not jobTitle).
_CMDLET_NAMES = {"jobTitle": "Title", "companyName": "Company", "state": "StateOrProvince"}


def _user_attributes(entry: Mapping[str, Any], attributes: Sequence[str]) -> dict[str, Any]:
    """The role attributes of a users entry, under Graph's names (any case), else the cmdlet's."""
    found = attributes_from(entry, attributes)
    missing = [a for a in attributes if a not in found and a in _CMDLET_NAMES]
    if missing:
        aliased = attributes_from(entry, [_CMDLET_NAMES[a] for a in missing])
        for a in missing:
            if _CMDLET_NAMES[a] in aliased:
                found[a] = aliased[_CMDLET_NAMES[a]]
    return found


def _optional_text(row: Fields, name: str) -> str | None:
    value = row.get(name)
    if value is not None and not isinstance(value, str):
        raise row.error(f"has {name!r} that is not text")
    return value


def _direct_policy(row: Fields) -> str | None:
    if row.has(POLICY_TYPE):
        value = row.get(POLICY_TYPE)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise row.error(f"has {POLICY_TYPE!r} that is not a policy name")
        return bare_name(value)
    if not row.has("effectivePolicyAssignments"):
        raise row.error(
            f"has neither {POLICY_TYPE!r} nor 'effectivePolicyAssignments', so whether the user "
            f"has a direct assignment is unknown (fields: {', '.join(row.names)})"
        )
    entries = row.get("effectivePolicyAssignments") or []
    if not isinstance(entries, list):
        raise row.error("has 'effectivePolicyAssignments' that is not a list")
    direct: str | None = None
    for n, item in enumerate(entries):
        where = f"{row.where} effectivePolicyAssignments[{n}],"
        entry = Fields(_object(item, where, row.url), where, row.url)
        if entry.text("policyType").casefold() != POLICY_TYPE.casefold():
            continue
        assignment = entry.need("policyAssignment")
        inner = Fields(_object(assignment, f"{where} policyAssignment", row.url), where, row.url)
        kind = inner.text("assignmentType").casefold()
        if kind in _NOT_DIRECT:
            continue
        if kind != "direct":
            raise inner.error(
                f"has assignmentType {kind!r}; known: direct, {', '.join(sorted(_NOT_DIRECT))}"
            )
        name = bare_name(inner.text("displayName", "policyName"))
        if direct is not None and policy_key(direct) != policy_key(name):
            raise inner.error("is a second direct assignment of the same policy type")
        direct = name
    return direct


@contextlib.contextmanager
def _about(what: str) -> Iterator[None]:
    """Name the object in a 404/409, which the service's own message often does not."""
    try:
        yield
    except (NotFoundError, ConflictError) as exc:
        named = type(exc)(f"{what}: {exc.args[0]}", status=exc.status, url=exc.url)
        named.correlation_id = exc.correlation_id
        raise named from None


class TeamsAdminClient:
    def __init__(self, http: HttpClient, base_url: str):
        self.http = http
        self.base_url = base_url.rstrip("/")
        self._policies = f"{self.base_url}/Skype.Policy/configurations/{POLICY_TYPE}"

    def _policy_url(self, name: str) -> str:
        return f"{self._policies}/configuration/{quote(wire_identity(name), safe=':')}"

    def _group_url(self, group_id: str) -> str:
        return (
            f"{self.base_url}/Skype.Policy/groupPolicyAssignments/{quote(group_id)}"
            f"/policyTypes/{POLICY_TYPE}"
        )

    # ------------------------------------------------------------------ policies

    def list_policies(self) -> list[Policy]:
        body = self.http.get_json(self._policies, resource=TEAMS_RESOURCE)
        if not isinstance(body, list):
            raise InvalidResponseError(
                "Teams admin API policy list is not a JSON array", url=self._policies
            )
        return [self._policy(obj) for obj in body]

    def get_policy(self, name: str) -> Policy:
        """One policy: the object, or a one-element array of it (AzRanger strips that wrapper
        from the answers of ``.../configuration/{Identity}``)."""
        url = self._policy_url(name)
        with _about(f"messaging policy {bare_name(name)!r}"):
            body = self.http.get_json(url, resource=TEAMS_RESOURCE)
        return self._one_policy(body, f"GET {route_of(url)}", name, url)

    def create_policy(self, name: str, settings: Mapping[str, Any]) -> Policy | None:
        """The created policy as the service answered it, or None when it answered without
        one (204, an empty 200): both are success (see ``read_write_answer``)."""
        body = {"Identity": wire_identity(name), **settings}
        with _about(f"creating messaging policy {bare_name(name)!r}"):
            response = self.http.request(
                "POST",
                self._policies,
                resource=TEAMS_RESOURCE,
                json=body,
                expected=(200, 201, 204),
            )
        return self.read_write_answer(response, name)

    def update_policy(self, name: str, settings: Mapping[str, Any]) -> Policy | None:
        """Send only ``settings``; the service merges them into the policy."""
        with _about(f"updating messaging policy {bare_name(name)!r}"):
            response = self.http.request(
                "PUT",
                self._policy_url(name),
                resource=TEAMS_RESOURCE,
                json=dict(settings),
                expected=(200, 204),
            )
        return self.read_write_answer(response, name)

    def read_write_answer(self, response: Any, name: str) -> Policy | None:
        """A policy write's answer: the policy object, a one-element array of it (go-teams
        records that for a PUT), or no body at all (204, or an empty 200/201). Anything else,
        or a policy other than ``name``, is an ``InvalidResponseError``: the write may have
        gone through, so the run stops and the next plan reads what the tenant holds."""
        route = f"{response.request.method} {route_of(response.url)}"
        if response.status_code == 204 or not response.content.strip():
            return None
        body = self.http.json_of(response, TEAMS_RESOURCE)
        return self._one_policy(body, route, name, response.url)

    def _one_policy(self, body: Any, route: str, name: str, url: str) -> Policy:
        """``name``'s policy from an answer that is its object or a one-element array of it."""
        if isinstance(body, list):
            if len(body) != 1:
                raise InvalidResponseError(
                    f"Teams admin API answered {route} with {len(body)} objects, not the one "
                    f"policy {bare_name(name)!r} (docs/wire.md)",
                    url=url,
                )
            body = body[0]
        policy = self._policy(body, route)
        if policy.key != policy_key(name):
            raise InvalidResponseError(
                f"Teams admin API answered {route} with policy {policy.name!r}, not "
                f"{bare_name(name)!r}",
                url=url,
            )
        return policy

    def delete_policy(self, name: str) -> None:
        with _about(f"deleting messaging policy {bare_name(name)!r}"):
            self.http.request(
                "DELETE", self._policy_url(name), resource=TEAMS_RESOURCE, expected=(200, 204)
            )

    def _policy(self, obj: Any, route: str = "") -> Policy:
        try:
            if not isinstance(obj, Mapping):
                raise ValueError("not an object")
            return policy_from_service(obj)
        except ValueError as exc:
            answered = f" ({route})" if route else ""
            raise InvalidResponseError(
                f"Teams admin API returned a policy that cannot be read{answered}: {exc}"
            ) from None

    # ------------------------------------------------------------------ group assignments

    def list_group_assignments(self) -> list[GroupAssignment]:
        url = f"{self.base_url}/Skype.Policy/groupPolicyAssignments/"
        body = self.http.get_json(url, resource=TEAMS_RESOURCE)
        if not isinstance(body, list):
            raise InvalidResponseError(
                f"Teams admin API answered {GROUPS_ROUTE} with something that is not a JSON "
                "array (docs/wire.md)",
                url=url,
            )
        found = (
            read_group_assignment(
                entry, f"Teams admin API answer to {GROUPS_ROUTE}, entry {n},", url
            )
            for n, entry in enumerate(body)
        )
        return [a for a in found if a is not None]

    def add_group_assignment(self, group_id: str, policy: str, rank: int | None = None) -> None:
        body: dict[str, Any] = {"PolicyName": bare_name(policy)}
        if rank is not None:
            body["Rank"] = rank
        with _about(f"assigning {bare_name(policy)!r} to group {group_id}"):
            self.http.request(
                "PATCH",
                self._group_url(group_id),
                resource=TEAMS_RESOURCE,
                json=body,
                expected=(200, 204),
            )

    def remove_group_assignment(self, group_id: str) -> None:
        with _about(f"removing the messaging policy assignment of group {group_id}"):
            self.http.request(
                "DELETE", self._group_url(group_id), resource=TEAMS_RESOURCE, expected=(200, 204)
            )

    # ------------------------------------------------------------------ users

    def grant_user(self, user_id: str, policy: str | None) -> None:
        """Assign ``policy`` directly to ``user_id``; ``None`` removes the direct assignment."""
        url = (
            f"{self.base_url}/Skype.Policy/users/{quote(user_id, safe='@')}/policies/{POLICY_TYPE}"
        )
        body = {"PolicyName": bare_name(policy) if policy is not None else None}
        with _about(f"user {user_id}"):
            # A grant sets the user's policy: sending it twice changes nothing.
            self.http.request(
                "PATCH",
                url,
                resource=TEAMS_RESOURCE,
                json=body,
                expected=(200, 204),
                idempotent=True,
            )

    def list_users(
        self, directory: Directory | None = None, attributes: Sequence[str] = ()
    ) -> tuple[list[User], list[UserAssignment]]:
        """Every user (the directory) and every direct messaging policy assignment, paged. The
        next page is on its way while this one is read (``HttpClient.pages``), and each page's
        JSON is dropped once read, so only the users stay in memory; ``directory`` gets each
        user as it is read (while the next page is still on its way). ``attributes`` (the
        roles' user properties) are asked for in the same pages with ``$select``
        (docs/wire.md)."""
        enabled = gc.isenabled()
        # A million users are a million small objects, none in a cycle: the cyclic collector
        # would rescan them again and again for nothing while they are read.
        gc.disable()
        try:
            return self._list_users(directory, tuple(attributes))
        finally:
            if enabled:
                gc.enable()

    def _list_users(
        self, directory: Directory | None, attributes: tuple[str, ...]
    ) -> tuple[list[User], list[UserAssignment]]:
        add = directory.add_user if directory is not None else None
        users: list[User] = []
        assignments: list[UserAssignment] = []
        url = f"{self.base_url}/Teams.User/users"
        params = {"$top": str(USERS_PAGE_SIZE)}
        if attributes:
            params["$select"] = ",".join([*USER_FIELDS, *graph_select(attributes)])
        pages = self.http.pages(
            url,
            resource=TEAMS_RESOURCE,
            items_key="users",
            params=params,
            ahead=USERS_PAGES_AHEAD,
        )
        departments: dict[str, str] = {}  # one string per department, not one per user
        # The fast reader knows the cmdlet's five fields only: with role attributes asked for,
        # every row goes through read_user, which reads them.
        fast = _read_cmdlet_user if not attributes else _no_fast_read
        n = 0
        for page in pages:
            for obj in page:
                user, policy = fast(obj, departments) or read_user(
                    obj, f"Teams admin API answer to {USERS_ROUTE}, user {n},", url, attributes
                )
                n += 1
                users.append(user)
                if add is not None:
                    add(user)
                if policy:
                    assignments.append(UserAssignment(user.id, policy, user.upn))
                if not n % _YIELD_EVERY:
                    # Hand the interpreter to the page fetcher if its answer has come: it would
                    # otherwise wait for the switch interval (5 ms) at each of its reads.
                    time.sleep(0)
        return users, assignments


def _no_fast_read(entry: Any, departments: dict[str, str]) -> None:
    return None


def _read_cmdlet_user(entry: Any, departments: dict[str, str]) -> tuple[User, str | None] | None:
    """``read_user`` for the common row (exactly the cmdlet's five fields, in their casing, every
    value text or null): the same answer in a fraction of the time. None for any other row,
    which ``read_user`` then reads (or refuses, saying why)."""
    if type(entry) is not dict or entry.keys() != _CMDLET_FIELDS:
        return None
    uid, upn = entry["Identity"], entry["UserPrincipalName"]
    name, department = entry["DisplayName"], entry["Department"]
    policy = entry[POLICY_TYPE]
    if (
        type(uid) is not str
        or not uid
        or type(upn) is not str
        or not upn
        or (name is not None and type(name) is not str)
        or (department is not None and type(department) is not str)
        or (policy is not None and type(policy) is not str)
    ):
        return None
    if department is not None:
        department = departments.setdefault(department, department)
    return User(uid, upn, name, department), bare_name(policy) if policy else None


class RestBackend:
    """``Backend`` over the Teams admin API and Graph."""

    name = "rest"

    def __init__(self, teams: TeamsAdminClient, graph: GraphClient, settings: Settings):
        self.teams = teams
        self.graph = graph
        self.settings = settings
        self.http = teams.http
        self._policy_ids: dict[str, str] = {}
        # Per thread: (this thread's last correlation id, the last bulk chunk's) after a bulk
        # call whose chunks went out from worker threads (see last_write).
        self._after_bulk = threading.local()

    # ------------------------------------------------------------------ read

    def read(self, wanted: Wanted = _NOTHING) -> TenantState:
        started = time.monotonic()
        before = self.http.stats["total"]
        # Three independent reads side by side: the policy list; the group assignments and the
        # groups' names (Graph, while the users are still paging); the user pages, one after
        # another (each page's link comes from the one before).
        directory = Directory()
        results: list[Any] = self.http.map_concurrent(
            lambda read: read(),
            [
                self.teams.list_policies,
                lambda: self._read_groups(wanted.groups),
                lambda: self.teams.list_users(directory, wanted.attributes),
            ],
        )
        policies: list[Policy] = results[0]
        assignments: list[GroupAssignment] = results[1][0]
        found: dict[str, list[Group]] = results[1][1]
        users: list[User] = results[2][0]
        user_assignments: list[UserAssignment] = results[2][1]
        self._resolve_users(directory, wanted.users, wanted.attributes)
        for ref, groups in found.items():
            if not groups:
                directory.searched_groups.add(ref)
            for group in groups:
                directory.add_group(group)
        names = {gid: g.display_name for gid, g in directory.groups.items()}
        named = [
            GroupAssignment(a.group_id, a.policy, a.rank, names.get(a.group_id))
            for a in assignments
        ]
        state = TenantState.build(self._tenant_id(), policies, named, user_assignments, directory)
        stats = self.http.stats
        log.info(
            "read %d policies, %d group assignments, %d direct assignments, %d users in "
            "%d requests (%d retries, %d throttled) in %.1fs",
            len(state.policies),
            len(state.group_assignments),
            len(state.user_assignments),
            len(users),
            stats["total"] - before,
            stats["retries"],
            stats["throttled"],
            time.monotonic() - started,
        )
        return state

    def _read_groups(
        self, refs: Sequence[str]
    ) -> tuple[list[GroupAssignment], dict[str, list[Group]]]:
        """The group assignments, and every group ``refs`` name or an assignment points at
        (ref -> groups; empty: searched, none found). Assigned groups that the refs already
        found are not looked up again: a file naming every assigned group costs one lookup per
        group."""
        assignments = self.teams.list_group_assignments()
        found = self.graph.resolve_groups(refs) if refs else {}
        known = {g.id for groups in found.values() for g in groups}
        rest = [
            a.group_id for a in assignments if a.group_id not in known and a.group_id not in found
        ]
        if rest:
            found.update(self.graph.resolve_groups(rest))
        return assignments, found

    def _resolve_users(
        self, directory: Directory, refs: Sequence[str], attributes: Sequence[str] = ()
    ) -> None:
        missing = [r for r in dict.fromkeys(refs) if directory.user_by_ref(r) is None]
        if not missing:
            return
        for ref, user in self.graph.resolve_users(missing, attributes).items():
            if user is None:
                directory.searched_users.add(ref)
            else:
                directory.add_user(user)

    def _tenant_id(self) -> str | None:
        """The tenant of the Teams token (its ``tid``), or None when it cannot be read: never
        AZURE_TENANT_ID, which would make the tenant guard compare the configuration with
        itself. None fails the guard closed ("cannot verify")."""
        provider = self.http.token_provider
        tid = None
        if provider is not None:
            try:
                tid = decode_claims(provider.get_token(TEAMS_RESOURCE)).get("tid")
            except AuthError as exc:
                log.warning("cannot verify the token's tenant: %s", exc)
        if not tid:
            log.warning("cannot verify the token's tenant: the Teams token has no tenant claim")
            return None
        return str(tid)

    # ------------------------------------------------------------------ policy writes

    def create_policy(self, name: str, settings: Mapping[str, Any]) -> None:
        self.teams.create_policy(name, settings)

    def update_policy(self, name: str, settings: Mapping[str, Any]) -> None:
        self.teams.update_policy(name, settings)

    def delete_policy(self, name: str) -> None:
        self.teams.delete_policy(name)
        self._policy_ids.pop(policy_key(name), None)

    def add_group_assignment(self, group_id: str, policy: str, rank: int) -> None:
        self.teams.add_group_assignment(group_id, policy, rank)

    def remove_group_assignment(self, group_id: str) -> None:
        self.teams.remove_group_assignment(group_id)

    def group_assignment(self, group_id: str) -> GroupAssignment | None:
        # The API has no read of one group's assignment (docs/wire.md): the list, filtered.
        # Still one request, where a whole read is the policies, the users and Graph lookups.
        want = group_id.casefold()
        return next(
            (a for a in self.teams.list_group_assignments() if a.group_id.casefold() == want),
            None,
        )

    # ------------------------------------------------------------------ user writes

    def assign_users(self, assignments: Sequence[tuple[str, str]]) -> BulkResult:
        result = BulkResult(requested=len(assignments))
        if not assignments:
            return result
        if not self.settings.graph_policy_assignment:
            return self._per_user(list(assignments), result)
        # One getPolicyId per policy, side by side, even when it fails (then every user of it
        # fails); a 401/403 fails the call.
        spelled: dict[str, str] = {}  # each policy as the first assignment spells it
        for _, policy in assignments:
            spelled.setdefault(policy_key(policy), policy)

        def lookup(policy: str) -> str | ApiError:
            try:
                return self._policy_id(policy)
            except (UnauthorizedError, ForbiddenError):
                raise
            except ApiError as exc:
                return exc

        found_ids = self.http.map_concurrent(lookup, list(spelled.values()))
        ids = dict(zip(spelled, found_ids, strict=True))
        entries: list[tuple[str, str]] = []
        for user_id, policy in assignments:
            found = ids[policy_key(policy)]
            if isinstance(found, ApiError):
                result.failures.append(UserFailure(user_id, str(found)))
            else:
                entries.append((user_id, found))
        self._bulk(
            [
                (partial(self.graph.assign, chunk), tuple(uid for uid, _ in chunk))
                for chunk in _chunks(entries, GRAPH_ASSIGN_CHUNK)
            ],
            result,
        )
        return result

    def unassign_users(self, user_ids: Sequence[str]) -> BulkResult:
        result = BulkResult(requested=len(user_ids))
        if not user_ids:
            return result
        if not self.settings.graph_policy_assignment:
            return self._per_user([(uid, None) for uid in user_ids], result)
        self._bulk(
            [
                (partial(self.graph.unassign, chunk), tuple(chunk))
                for chunk in _chunks(list(user_ids), GRAPH_ASSIGN_CHUNK)
            ],
            result,
        )
        return result

    def _policy_id(self, policy: str) -> str:
        key = policy_key(policy)
        if key not in self._policy_ids:
            self._policy_ids[key] = self.graph.policy_id(policy)
        return self._policy_ids[key]

    def _bulk(
        self, sends: Sequence[tuple[Callable[[], None], tuple[str, ...]]], result: BulkResult
    ) -> None:
        """Each chunk's request (its send, its users), ``BRIDGE_CONCURRENCY`` at a time within
        the pacer, recorded in ``result.chunks`` in chunk order whatever order they finish in.
        A 401/403, or no token, fails every later chunk alike: chunks not yet started then are
        not sent (not attempted), and the error is raised once with ``result``."""
        stop = threading.Event()

        def send_one(
            item: tuple[Callable[[], None], tuple[str, ...]],
        ) -> tuple[ChunkResult, BridgeError | None] | None:
            send, users = item
            if stop.is_set():
                return None
            try:
                send()
            except ApiError as exc:
                if isinstance(exc, UnauthorizedError | ForbiddenError):
                    stop.set()
                chunk = ChunkResult(users, correlation_id=exc.correlation_id, error=str(exc))
                return chunk, exc
            except BridgeError as exc:
                # No token (AuthError): nothing was sent, and nothing later can be.
                stop.set()
                return ChunkResult(users, error=str(exc)), exc
            # The correlation id of this thread's request, read in the thread that sent it.
            return ChunkResult(users, correlation_id=self.http.last_correlation_id), None

        stopped: BridgeError | None = None
        for outcome in self.http.map_concurrent(send_one, sends):
            if outcome is None:
                continue
            chunk, exc = outcome
            result.write_requests += 1
            result.chunks.append(chunk)
            if exc is None:
                result.succeeded += len(chunk.user_ids)
                continue
            result.failures.extend(UserFailure(uid, str(exc)) for uid in chunk.user_ids)
            stops = not isinstance(exc, ApiError) or isinstance(
                exc, UnauthorizedError | ForbiddenError
            )
            if stops and stopped is None:
                stopped = exc
        if result.chunks:
            self._after_bulk.ids = (self.http.last_correlation_id, result.chunks[-1].correlation_id)
        if stopped is not None:
            stopped.partial = result
            raise stopped

    def _per_user(
        self, assignments: list[tuple[str, str | None]], result: BulkResult
    ) -> BulkResult:
        # No bulk endpoint in this cloud: one PATCH per user, a few at a time; each user is a
        # chunk of one, with its request's correlation id.
        def grant(item: tuple[str, str | None]) -> tuple[ChunkResult, ApiError | None]:
            user_id, policy = item
            try:
                self.teams.grant_user(user_id, policy)
            except ApiError as exc:
                return ChunkResult(
                    (user_id,), correlation_id=exc.correlation_id, error=str(exc)
                ), exc
            return ChunkResult((user_id,), correlation_id=self.http.last_correlation_id), None

        outcomes = self.http.map_concurrent(grant, assignments)
        result.write_requests += len(assignments)
        for chunk, _ in outcomes:
            result.chunks.append(chunk)
            if chunk.error is None:
                result.succeeded += 1
            else:
                result.failures.append(UserFailure(chunk.user_ids[0], chunk.error))
        # A missing role or a bad token fails every user alike: raise it once, with the result.
        stop = next(
            (e for _, e in outcomes if isinstance(e, UnauthorizedError | ForbiddenError)), None
        )
        if stop is not None:
            stop.partial = result
            raise stop
        return result

    # ------------------------------------------------------------------ other

    def group_members(self, group_id: str) -> list[str]:
        return self.graph.group_members(group_id)

    def user_groups(self, user_id: str) -> list[Group]:
        return self.graph.member_of(user_id)

    def last_write(self) -> WriteReceipt:
        last = self.http.last_correlation_id
        # Right after a bulk call: its last chunk's request, wherever it was sent from.
        after = getattr(self._after_bulk, "ids", None)
        if after is not None and after[0] == last:
            return WriteReceipt(after[1])
        return WriteReceipt(last)

    def take_warnings(self) -> list[str]:
        return self.http.take_warnings()

    def organization(self) -> Organization:
        return self.graph.organization()

    def domains(self) -> tuple[str, ...]:
        return tuple(self.graph.organization().verified_domains)

    def request_stats(self) -> dict[str, Any]:
        return dict(self.http.stats)

    def close(self) -> None:
        self.http.close()


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
