"""The one HTTP choke point: every request to a Microsoft API (or the sandbox) goes through
``HttpClient.request``. It owns the session, the token per resource, timeouts, retries, paging,
request counting and the mapping from status codes to the typed errors of ``bridge.errors``.

Retries: only 429, 500, 502, 503, 504 and connection failures (a read timeout too, except for
POST, where the request may have been applied), honouring ``Retry-After`` (seconds or an
HTTP date), otherwise exponential backoff with jitter; bounded by ``retry_attempts`` and
``retry_max_seconds``. Nothing is retried on 4xx other than 429.

Pacing (``Pacer``): with ``max_rps`` set, requests from every thread together stay under that
rate (a ``$batch`` counts as its inner requests, which is how the services count it); and after
any 429 with ``Retry-After`` (a ``$batch`` inner one too) that the client is going to retry, no
thread sends until it has passed, so concurrent workers do not keep hammering a service that
already said stop. A Retry-After the client gives up on (longer than ``retry_max_seconds``, or
out of attempts) closes nothing, and the gate never stays closed longer than that budget: a
``Retry-After: 86400`` fails its own request, not the next unrelated one. Non-finite values
(``inf``, ``nan``) are unreadable, like any other garbage.

Nothing here logs the ``Authorization`` header; every logged line and error message goes through
``redact`` (configured secrets, tokens this client obtained, anything JWT- or Bearer-shaped).
"""

from __future__ import annotations

import contextvars
import email.utils
import importlib.util
import logging
import math
import queue
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
import tenacity
from requests.adapters import HTTPAdapter

from .auth import TEAMS_RESOURCE, TokenProvider
from .errors import (
    ApiError,
    ConflictError,
    ForbiddenError,
    InvalidResponseError,
    NotFoundError,
    ServerError,
    ThrottledError,
    UnauthorizedError,
    connection_failure,
)
from .hints import TEAMS_FORBIDDEN_READ, TEAMS_FORBIDDEN_WRITE, graph_permission
from .observers import (  # re-exported: callers of the choke point register observers here
    RequestObserver as RequestObserver,
)
from .observers import _observers
from .observers import add_observer as add_observer
from .observers import observe_before as observe_before
from .observers import observe_done as observe_done
from .observers import observing as observing
from .observers import remove_observer as remove_observer
from .settings import Settings, redact
from .wire import read_page

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Answers that say the request was not carried out, so even a create may be sent again.
NOT_PROCESSED_STATUSES = frozenset({429, 503})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
MIN_RETRY_WAIT = 0.5
# Tokens other requests leave in the bucket while a sequential chain (user pages) runs.
CHAIN_RESERVE = 1.0
THROTTLED_ATTEMPTS_FACTOR = 4
_ERRORS: dict[int, type[ApiError]] = {
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    429: ThrottledError,
}
# brotli is a dependency, so br is always asked for and always decoded (urllib3 uses it): the
# Teams admin API compresses with it even unasked (docs/wire.md). Only a broken install lacks it.
_BROTLI = any(importlib.util.find_spec(m) for m in ("brotli", "brotlicffi"))
ACCEPT_ENCODING = "gzip, deflate, br"
# How the Teams admin API passes on what a cmdlet would print as a warning (on writes).
WARNING_HEADER = "X-Ms-ConfigApi-PowerShell-WarningMessage"

T = TypeVar("T")
R = TypeVar("R")


def metric_api(resource: str | None) -> str | None:
    """The ``api`` label of a request for ``resource`` (None: not observed)."""
    if resource is None:
        return None
    return "teams" if resource == TEAMS_RESOURCE else "graph"


@dataclass(frozen=True)
class HttpOptions:
    timeout: tuple[float, float] = (10.0, 60.0)
    retry_attempts: int = 5
    retry_max_seconds: float = 120.0
    concurrency: int = 4
    verify: str | bool = True
    secrets: tuple[str, ...] = ()
    max_rps: float | None = None  # requests per second to all APIs together; None: no pacing

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpOptions:
        return cls(
            timeout=settings.timeout,
            retry_attempts=settings.retry_attempts,
            retry_max_seconds=settings.retry_max_seconds,
            concurrency=settings.concurrency,
            verify=settings.verify,
            secrets=tuple(settings.secrets()),
            # BRIDGE_MAX_RPS (unset: no pacing, but every thread waits out a 429).
            max_rps=settings.max_rps,
        )


class Pacer:
    """A token bucket shared by every thread of one client: ``rate`` requests a second, at most
    ``burst`` at once (default: one second's worth), and a gate that a 429's ``Retry-After``
    closes for everyone. ``rate=None`` paces nothing but still honours the gate, which stays
    closed at most ``max_hold`` seconds."""

    def __init__(
        self,
        rate: float | None,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        max_hold: float = HttpOptions.retry_max_seconds,
    ):
        if rate is not None and rate <= 0:
            raise ValueError("rate must be > 0 (or None for no pacing)")
        self.rate = rate
        self.max_hold = max_hold
        self.burst = burst if burst is not None else max(1.0, rate or 0.0)
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        # The time at which the bucket is full again (<= now: it is full).
        self._full_at = clock()
        self._gate = 0.0  # nobody sends before this (a Retry-After)
        self._served = threading.local()  # per thread: gate time this thread already waited out
        self.waited = 0.0  # seconds spent waiting, all threads together
        self._chains = 0  # sequential chains running (their requests go first)

    def acquire(self, cost: int = 1, *, chain: bool = False) -> float:
        """Wait until ``cost`` requests may go out; the seconds waited. While a sequential chain
        runs (``chain_started``), its requests (``chain=True``) book tokens first and every other
        request waits for spare ones, leaving ``CHAIN_RESERVE`` in the bucket: a chain's next
        request then never waits behind lookups that could have gone at any time."""
        waited = 0.0
        ready = 0.0
        while True:
            with self._lock:
                now = self._clock()
                ready = now
                if self.rate is None:
                    break
                full_at = max(self._full_at, now)
                if self._chains and not chain:
                    level = self.burst - (full_at - now) * self.rate
                    need = min(cost + CHAIN_RESERVE, self.burst)
                    if level < need - 1e-9:  # not a rounding error's wait
                        short = (need - level) / self.rate
                        self.waited += short
                    else:
                        short = 0.0
                else:
                    short = 0.0
                if not short:
                    # Enough tokens once the bucket is within (burst - cost) of full; a cost
                    # over the burst waits for its surplus too.
                    ready = max(now, full_at - (self.burst - cost) / self.rate)
                    self._full_at = max(full_at, ready) + cost / self.rate
                    break
            self._sleep(short)
            waited += short
        seen: float | None = None
        while True:
            with self._lock:
                gate = self._gate if self._gate > getattr(self._served, "until", 0.0) else 0.0
                # Sleep again only when another thread's 429 moved the gate meanwhile.
                if seen is not None and gate <= seen:
                    return waited
                seen = gate
                delay = max(ready, gate) - self._clock()
                if delay > 0:
                    self.waited += delay
            if delay > 0:
                self._sleep(delay)
                waited += delay

    def chain_started(self) -> None:
        """A sequential chain (pages, each named by the one before) begins: until it ends, its
        requests go first (see ``acquire``)."""
        with self._lock:
            self._chains += 1

    def chain_ended(self) -> None:
        with self._lock:
            self._chains -= 1

    def hold(self, seconds: float) -> None:
        """A 429 asked to wait ``seconds``: nobody sends before then (at most ``max_hold``)."""
        if not math.isfinite(seconds) or seconds <= 0:
            return
        with self._lock:
            self._gate = max(self._gate, self._clock() + min(seconds, self.max_hold))

    def served(self, seconds: float) -> None:
        """This thread waits ``seconds`` now (a Retry-After of its own): the gate it closed
        itself is not waited out twice."""
        self._served.until = self._clock() + seconds


def api_name(resource: str | None) -> str:
    if resource is None:
        return "endpoint"  # no token: a webhook or another unauthenticated URL
    return "Teams admin API" if resource == TEAMS_RESOURCE else "Graph"


_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")


def route_of(url: str) -> str:
    """The URL's path with per-object segments replaced, so requests can be counted by route:
    ``/Skype.Policy/users/<guid>/policies/X`` -> ``/Skype.Policy/users/{id}/policies/X``."""
    segments = urlsplit(url).path.split("/")
    out = []
    for i, seg in enumerate(segments):
        if _GUID_RE.match(seg) or "@" in seg or "%40" in seg:
            seg = "{id}"
        elif i and segments[i - 1] == "configuration":
            seg = "{identity}"
        elif "(" in seg:
            seg = seg.split("(", 1)[0] + "(...)"
        out.append(seg)
    return "/".join(out).rstrip("/") or "/"


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date (``None`` if absent/unreadable;
    ``inf`` and ``nan`` are unreadable too)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def service_message(payload: Any, text: str = "") -> str:
    """The service's own error code and message from an error body, in any of its shapes."""
    if isinstance(payload, Mapping):
        err = payload.get("error")
        if isinstance(err, Mapping):
            parts = [str(err.get(k)) for k in ("code", "message") if err.get(k)]
            if parts:
                return ": ".join(parts)
        if isinstance(err, str):
            desc = payload.get("error_description")
            return f"{err}: {desc}" if desc else err
        for key in ("Message", "message"):
            if payload.get(key):
                return str(payload[key])
    return " ".join(text.split())[:300]


def _host(url: str) -> str:
    """Host and port of a URL, without any ``user:password@`` it carries (webhook URLs can)."""
    parts = urlsplit(url)
    return (parts.hostname or "") + (f":{parts.port}" if parts.port is not None else "")


def _unreachable(exc: requests.RequestException, resource: str | None) -> tuple[str, str]:
    """A failed connection in a few words (not urllib3's text), and what names the endpoint."""
    why = connection_failure(exc)
    if resource is None:
        where = "the URL given"
    elif resource == TEAMS_RESOURCE:
        where = "BRIDGE_TEAMS_URL (or --cloud / BRIDGE_CLOUD)"
    else:
        where = "BRIDGE_GRAPH_URL (or --cloud / BRIDGE_CLOUD)"
    return why, where


class HttpClient:
    """One session per run. ``resource`` names the token audience for a request (the Teams admin
    API's app id or the Graph base URL); ``None`` sends no ``Authorization`` header."""

    def __init__(
        self,
        token_provider: TokenProvider | None,
        options: Settings | HttpOptions,
        *,
        sleep: Callable[[float], None] = time.sleep,
        session: requests.Session | None = None,
        hide_paths: bool = False,
    ):
        self.token_provider = token_provider
        # Webhook URLs carry their secret in the path: log and count them by host only.
        self._hide_paths = hide_paths
        self.options = (
            HttpOptions.from_settings(options) if isinstance(options, Settings) else options
        )
        self._sleep = sleep
        self.session = session or requests.Session()
        self.session.verify = self.options.verify
        pool = max(10, self.options.concurrency)
        adapter = HTTPAdapter(pool_connections=pool, pool_maxsize=pool)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.pacer = Pacer(
            self.options.max_rps, sleep=sleep, max_hold=self.options.retry_max_seconds
        )
        self._lock = threading.Lock()
        self._routes: Counter[str] = Counter()
        self._totals: Counter[str] = Counter()
        self._tokens: set[str] = set()
        self._last = threading.local()  # per thread: the correlation id of the last request
        self._warned: set[str] = set()  # service warning texts logged so far
        # The token provider's own requests (MSAL's discovery and tokens) count here too.
        observe = getattr(token_provider, "observe", None)
        if callable(observe):
            observe(self.note_request)

    @property
    def last_correlation_id(self) -> str | None:
        """The ``x-ms-correlation-id`` of this thread's last request (for the apply journal)."""
        return getattr(self._last, "correlation_id", None)

    def take_warnings(self) -> list[str]:
        """The service warnings (``WARNING_HEADER``) this thread's requests received since the
        last call; each was logged when it came."""
        warnings = list(getattr(self._last, "warnings", ()))
        self._last.warnings = []
        return warnings

    def _note_warning(self, route: str, response: requests.Response) -> None:
        said = " ".join(response.headers.get(WARNING_HEADER, "").split())
        if not said:
            return
        said = self.redact(said)
        # Each text at warning level once per run (the service repeats it on every write);
        # later ones at info, with their route.
        with self._lock:
            first = said not in self._warned
            self._warned.add(said)
        level = logging.WARNING if first else logging.INFO
        log.log(level, "%s: the service warned: %s", route, said)
        if not hasattr(self._last, "warnings"):
            self._last.warnings = []
        self._last.warnings.append(said)

    @classmethod
    def for_webhooks(cls, settings: Settings | None) -> HttpClient:
        """A client without credentials (no ``Authorization`` header) for posting to webhooks;
        URL paths are never logged or put in errors."""
        options = HttpOptions.from_settings(settings) if settings else HttpOptions()
        return cls(None, options, hide_paths=True)

    def _safe_url(self, url: str) -> str:
        return f"{urlsplit(url).scheme}://{_host(url)}/..." if self._hide_paths else url

    def _route(self, url: str) -> str:
        if self._hide_paths:
            return f"{_host(url)}/..."
        return route_of(url)

    # ------------------------------------------------------------------ public surface

    def request(
        self,
        method: str,
        url: str,
        *,
        resource: str | None = None,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        expected: Iterable[int] = (200, 201, 204),
        cost: int = 1,
        idempotent: bool | None = None,
        chain: bool = False,
    ) -> requests.Response:
        """Send with retries; return the response if its status is ``expected``, else raise the
        typed error for its status (after retries for 429 and 5xx). ``cost`` is what the request
        counts against the service's rate (a ``$batch``: its number of inner requests); ``chain``
        marks a request of a sequential chain (``paged``), which the pacer serves first."""
        method = method.upper()
        route = f"{method} {self._route(url)}"
        correlation_id = str(uuid.uuid4())
        self._last.correlation_id = correlation_id
        attempts = {"n": 0}
        # Repeating a request the service may already have carried out must be harmless: a
        # create (POST) or an add (PATCH) is retried only when it surely was not (429, 503, no
        # connection); callers mark writes with set semantics (grants, $batch reads) idempotent.
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS
        retry_statuses = RETRY_STATUSES if idempotent else NOT_PROCESSED_STATUSES

        def attempt() -> requests.Response:
            attempts["n"] += 1
            return self._send(
                method,
                url,
                route,
                correlation_id,
                attempts["n"],
                resource=resource,
                json=json,
                params=params,
                headers=headers,
                cost=cost,
                chain=chain,
            )

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_result(lambda r: r.status_code in retry_statuses)
            | tenacity.retry_if_exception(lambda e: self._retryable(idempotent, e)),
            wait=self._wait,
            stop=self._stop,
            sleep=self.wait,
            before_sleep=lambda rs: self._before_sleep(route, correlation_id, rs),
            # Out of attempts: hand back the last response (or raise its exception) to map below.
            retry_error_callback=lambda rs: rs.outcome.result() if rs.outcome else None,
        )
        try:
            response: requests.Response = retrying(attempt)
        except requests.exceptions.SSLError as exc:
            reason = type(exc).__name__ if self._hide_paths else str(exc)
            raise ServerError(
                self.redact(
                    f"TLS failure talking to {api_name(resource)} ({route}): {reason}; if the "
                    "server uses a private CA, set REQUESTS_CA_BUNDLE to that CA's certificate"
                ),
                correlation_id=correlation_id,
                url=self._safe_url(url),
            ) from None
        except requests.RequestException as exc:
            why, where = _unreachable(exc, resource)
            raise ServerError(
                self.redact(
                    f"could not reach {api_name(resource)} at {_host(url)} ({route}) after "
                    f"{attempts['n']} attempt(s): {why}; check the network and any proxy "
                    f"(HTTPS_PROXY), that {where} names the right endpoint, and "
                    "BRIDGE_TIMEOUT_CONNECT/BRIDGE_TIMEOUT_READ"
                ),
                correlation_id=correlation_id,
                url=self._safe_url(url),
            ) from None
        if response.status_code in tuple(expected):
            self._note_warning(route, response)
            return response
        if method == "DELETE" and response.status_code == 404 and attempts["n"] > 1:
            # An earlier attempt removed it and its answer was lost: gone is what was asked.
            log.info("%s: 404 on attempt %d, taken as already deleted", route, attempts["n"])
            return response
        payload: Any
        try:
            payload = response.json()
        except ValueError:
            payload = None
        raise self.api_error(
            response.status_code,
            payload,
            text=response.text,
            method=method,
            url=url,
            resource=resource,
            correlation_id=correlation_id,
            attempts=attempts["n"],
            retry_after=response.headers.get("Retry-After"),
        )

    def get_json(
        self,
        url: str,
        *,
        resource: str | None = None,
        params: Mapping[str, Any] | None = None,
        chain: bool = False,
    ) -> Any:
        response = self.request(
            "GET", url, resource=resource, params=params, expected=(200,), chain=chain
        )
        return self.json_of(response, resource)

    def json_of(self, response: requests.Response, resource: str | None = None) -> Any:
        """The response's JSON body, or ``InvalidResponseError``."""
        try:
            return response.json()
        except ValueError:
            route = f"{response.request.method} {self._route(response.url)}"
            snippet = " ".join(response.text.split())[:120]
            if "br" in response.headers.get("Content-Encoding", "").lower() and not _BROTLI:
                snippet = "brotli-compressed; no brotli decoder is installed: pip install brotli"
            raise InvalidResponseError(
                self.redact(
                    f"{api_name(resource)} answered {route} with {response.status_code} but the "
                    f"body is not JSON: {snippet!r}"
                ),
                status=response.status_code,
                correlation_id=response.request.headers.get("x-ms-correlation-id"),
                url=self._safe_url(response.url),
            ) from None

    def paged(
        self,
        url: str,
        *,
        resource: str | None = None,
        items_key: str = "value",
        params: Mapping[str, Any] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every item of every page (see ``pages``)."""
        for items in self.pages(url, resource=resource, items_key=items_key, params=params):
            yield from items

    def pages(
        self,
        url: str,
        *,
        resource: str | None = None,
        items_key: str = "value",
        params: Mapping[str, Any] | None = None,
        ahead: int = 0,
    ) -> Iterator[list[dict[str, Any]]]:
        """Every page's items, following the next page however the page names it
        (``@odata.nextLink``, ``nextLink``, ``NextLink`` or a skip token: ``wire.read_page``)
        until there is none; empty pages are fine. A page without ``items_key``, or with a
        paging key this client does not know, is an ``InvalidResponseError`` (never an empty
        or a short result), and so is a total short of a count the service reports.

        The pages are a sequential chain (each link comes from the page before), which the
        pacer serves first. ``ahead``: fetch up to that many pages ahead of the caller, in a
        thread, so each round trip overlaps the caller's work on the page before; an error
        reaches the caller after the pages before it."""
        chain = self._chain(url, resource, items_key, params)
        return _fetched_ahead(chain, ahead) if ahead > 0 else chain

    def _chain(
        self,
        url: str,
        resource: str | None,
        items_key: str,
        params: Mapping[str, Any] | None,
    ) -> Iterator[list[dict[str, Any]]]:
        origin = urlsplit(url)[:2]
        # The first page counts as seen: a link back to it is a loop, not a second page.
        seen = {url, str(requests.Request("GET", url, params=params).prepare().url)}
        next_url: str | None = url
        next_params = params
        listed, reported = 0, None
        self.pacer.chain_started()
        try:
            while next_url:
                current = str(requests.Request("GET", next_url, params=next_params).prepare().url)
                body = self.get_json(next_url, resource=resource, params=next_params, chain=True)
                where = f"{api_name(resource)} page from GET {self._route(next_url)}"
                page = read_page(body, items_key, where, url=next_url)
                if page.count is not None:
                    reported = max(reported or 0, page.count)
                listed += len(page.items)
                link = page.next_url(current)
                yield page.items
                if not link:
                    break
                # The bearer token must never be sent to a host the first request did not name.
                if urlsplit(link)[:2] != origin or link in seen:
                    raise InvalidResponseError(
                        f"{api_name(resource)} returned a next page link that is not on "
                        f"{origin[0]}://{origin[1]} or repeats: {link}",
                        url=link,
                    )
                seen.add(link)
                next_url, next_params = link, None
        finally:
            self.pacer.chain_ended()
        if reported is not None and listed < reported:
            raise InvalidResponseError(
                f"{api_name(resource)} listed {listed} {items_key!r} entries from GET "
                f"{self._route(url)} but reported {reported}: a page is missing, so the read is "
                "incomplete; run again",
                url=url,
            )

    def map_concurrent(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``[fn(i) for i in items]`` with at most ``concurrency`` running at once; results in
        order; the first exception (in item order) is raised after all have finished."""
        todo = list(items)
        workers = min(self.options.concurrency, len(todo))
        if workers <= 1:
            return [fn(i) for i in todo]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bridge-http") as pool:
            # Each task in a copy of this context: a tenant's scoped observers follow it.
            futures = [pool.submit(contextvars.copy_context().run, fn, i) for i in todo]
        return [f.result() for f in futures]

    @property
    def stats(self) -> dict[str, Any]:
        """``{"total", "retries", "throttled", "routes": {"GET /Teams.User/users": n, ...}}``;
        every attempt counts (it is what the service sees)."""
        with self._lock:
            return {
                "total": self._totals["total"],
                "retries": self._totals["retries"],
                "throttled": self._totals["throttled"],
                "routes": dict(sorted(self._routes.items())),
            }

    def note_request(self, method: str, url: str) -> None:
        """Count a request sent outside ``request`` (MSAL's, through the token provider)."""
        with self._lock:
            self._routes[f"{method.upper()} {self._route(url)}"] += 1
            self._totals["total"] += 1

    def note_throttled(self, api: str = "graph") -> None:
        """Count a throttle the caller saw inside a response (a ``$batch`` inner 429: Graph)."""
        with self._lock:
            self._totals["throttled"] += 1
        for observer in _observers():
            observer.throttled(api)

    def hold(self, seconds: float) -> None:
        """Every thread holds off ``seconds`` (capped at ``retry_max_seconds``): call it only
        for a Retry-After that the caller is about to wait out and retry."""
        self.pacer.hold(seconds)

    def wait(self, seconds: float) -> None:
        """Sleep through the injected sleep (so tests and batch retries share it); a retry's own
        wait also serves the pacer's gate, so it is not waited out twice."""
        self.pacer.served(seconds)
        self._sleep(seconds)

    def redact(self, text: str) -> str:
        return redact(text, (*self.options.secrets, *self._tokens))

    def close(self) -> None:
        self.session.close()

    # ------------------------------------------------------------------ errors

    def api_error(
        self,
        status: int,
        payload: Any,
        *,
        text: str = "",
        method: str,
        url: str,
        resource: str | None,
        correlation_id: str | None = None,
        attempts: int = 1,
        retry_after: str | None = None,
    ) -> ApiError:
        """The typed error for a failed answer (also used for ``$batch`` inner responses)."""
        api = api_name(resource)
        route = f"{method} {self._route(url)}"
        said = service_message(payload, text)
        said = f" (the service said: {said})" if said else ""
        if status == 401:
            who = self._credential()
            hint = (
                f"the token was rejected ({who}): check that BRIDGE_CLOUD matches the tenant's "
                "cloud and that the app registration lives in AZURE_TENANT_ID"
            )
        elif status == 403:
            if resource != TEAMS_RESOURCE:
                advice = (
                    "the app needs the Graph application permission "
                    f"{graph_permission(route_of(url))} with admin consent: Entra admin center > "
                    "App registrations > API permissions"
                )
            elif method.upper() in ("GET", "HEAD"):
                advice = TEAMS_FORBIDDEN_READ
            else:
                advice = TEAMS_FORBIDDEN_WRITE
            # The advice also apart (``ApiError.hint``), so a report says it once.
            return ForbiddenError(
                self.redact(f"403 from {api}: {advice} [{route}]{said}"),
                status=status,
                correlation_id=correlation_id,
                url=self._safe_url(url),
                hint=self.redact(advice),
                brief=self.redact(f"403 from {api} [{route}]{said}"),
                said_by=f"403 from {api}",
            )
        elif status == 404:
            hint = "not found"
        elif status == 409:
            hint = "conflict with the tenant's current state"
        elif status == 429:
            wait = f"; the service asked to wait {retry_after}s" if retry_after else ""
            hint = (
                f"still throttled after {attempts} attempt(s){wait}: run again later, or raise "
                "BRIDGE_RETRY_ATTEMPTS / BRIDGE_RETRY_MAX_SECONDS"
            )
        elif status >= 500:
            hint = f"server error after {attempts} attempt(s): run again later"
        else:
            hint = "request rejected"
        message = self.redact(f"{status} from {api}: {hint} [{route}]{said}")
        if status >= 500:
            cls: type[ApiError] = ServerError
        else:
            cls = _ERRORS.get(status, ApiError)
        return cls(
            message,
            status=status,
            correlation_id=correlation_id,
            url=self._safe_url(url),
            said_by=f"{status} from {api}",
        )

    def _credential(self) -> str:
        describe = getattr(self.token_provider, "describe", None)
        if callable(describe):
            return str(describe())
        return f"{getattr(self.token_provider, 'kind', 'unknown')} credential"

    # ------------------------------------------------------------------ sending

    def _send(
        self,
        method: str,
        url: str,
        route: str,
        correlation_id: str,
        attempt: int,
        *,
        resource: str | None,
        json: Any,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        cost: int = 1,
        chain: bool = False,
    ) -> requests.Response:
        api = metric_api(resource)
        if api:
            observe_before(api)
        paced = self.pacer.acquire(cost, chain=chain)
        if paced >= 1.0:
            log.debug("%s waited %.1fs to stay under the request rate", route, paced)
        sent = {
            "Accept": "application/json",
            "Accept-Encoding": ACCEPT_ENCODING,
            "x-ms-correlation-id": correlation_id,
        }
        if resource == TEAMS_RESOURCE:
            sent["x-authz-scope"] = "tenant"
        if resource is not None and self.token_provider is not None:
            token = self.token_provider.get_token(resource)
            with self._lock:
                self._tokens.add(token)
            sent["Authorization"] = f"Bearer {token}"
        sent.update(headers or {})
        with self._lock:
            self._routes[route] += 1
            self._totals["total"] += 1
            if attempt > 1:
                self._totals["retries"] += 1
        started = time.monotonic()
        try:
            # verify per request: requests lets REQUESTS_CA_BUNDLE override Session.verify.
            response = self.session.request(
                method,
                url,
                params=params,
                json=json,
                headers=sent,
                timeout=self.options.timeout,
                verify=self.options.verify,
            )
        except requests.RequestException as exc:
            if api:
                observe_done(api, None)
            log.warning(
                "%s -> %s after %.2fs (attempt %d, correlation id %s)",
                route,
                type(exc).__name__,
                time.monotonic() - started,
                attempt,
                correlation_id,
            )
            raise
        elapsed = time.monotonic() - started
        if api:
            observe_done(api, response.status_code)
        if response.status_code == 429:
            with self._lock:
                self._totals["throttled"] += 1
            # The gate closes in _before_sleep, once it is known this request will be retried.
        level = logging.DEBUG if response.status_code < 400 else logging.WARNING
        log.log(
            level,
            "%s -> %d in %.2fs (attempt %d, correlation id %s)",
            route,
            response.status_code,
            elapsed,
            attempt,
            correlation_id,
        )
        return response

    def _retryable(self, idempotent: bool, exc: BaseException) -> bool:
        if isinstance(exc, requests.exceptions.SSLError):
            return False
        if idempotent:
            return isinstance(exc, requests.ConnectionError | requests.Timeout)
        # A write that may have reached the service is not repeated: only a connection that was
        # never made is safe to try again.
        return isinstance(exc, requests.exceptions.ConnectTimeout) or (
            isinstance(exc, requests.ConnectionError)
            and not isinstance(exc, requests.exceptions.ReadTimeout)
            and "NewConnectionError" in repr(exc)
        )

    def _wait(self, rs: tenacity.RetryCallState) -> float:
        outcome = rs.outcome
        if outcome is not None and not outcome.failed:
            response = outcome.result()
            seconds = retry_after_seconds(response.headers.get("Retry-After"))
            if seconds is not None:
                # Never straight away, even when told "Retry-After: 0".
                return max(seconds, MIN_RETRY_WAIT)
        return float(tenacity.wait_random_exponential(multiplier=0.5, max=30)(rs))

    def _stop(self, rs: tenacity.RetryCallState) -> bool:
        spent = max(rs.seconds_since_start or 0.0, rs.idle_for)
        if spent + rs.upcoming_sleep > self.options.retry_max_seconds:
            return True
        # A 429 is the service saying "later", not a fault: waiting it out is bounded by the time
        # budget (and a generous count), so a storm shared by several threads does not use up
        # the attempts meant for real failures.
        return rs.attempt_number >= self._attempt_limit(rs)

    def _attempt_limit(self, rs: tenacity.RetryCallState) -> int:
        outcome = rs.outcome
        throttled = (
            outcome is not None and not outcome.failed and outcome.result().status_code == 429
        )
        return self.options.retry_attempts * (THROTTLED_ATTEMPTS_FACTOR if throttled else 1)

    def _before_sleep(self, route: str, correlation_id: str, rs: tenacity.RetryCallState) -> None:
        outcome = rs.outcome
        if outcome is None:
            return
        if not outcome.failed and outcome.result().status_code == 429:
            seconds = retry_after_seconds(outcome.result().headers.get("Retry-After"))
            if seconds is not None:
                # Retrying after the service's Retry-After: nobody else sends meanwhile either.
                self.pacer.hold(seconds)
        reason = (
            f"status {outcome.result().status_code}"
            if not outcome.failed
            else type(outcome.exception()).__name__
        )
        log.warning(
            "%s: %s, retrying in %.1fs (attempt %d of at most %d, correlation id %s)",
            route,
            reason,
            rs.upcoming_sleep,
            rs.attempt_number + 1,
            self._attempt_limit(rs),
            correlation_id,
        )


_END = object()


def _fetched_ahead(source: Iterator[T], depth: int) -> Iterator[T]:
    """``source``'s items, produced by a thread up to ``depth`` ahead of the consumer; the
    source's exception is raised in the consumer after the items before it. A consumer that
    stops early stops the thread after its current item."""
    box: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                box.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in source:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as exc:  # handed to the consumer, which raises it
            put((None, exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    # In the caller's context: the run's scoped request observers (a fleet's tenant) see the
    # pages fetched ahead too.
    context = contextvars.copy_context()
    worker = threading.Thread(target=context.run, args=(produce,), name="bridge-pages", daemon=True)
    worker.start()
    try:
        while True:
            item, exc = box.get()
            if exc is not None:
                raise exc
            if item is _END:
                return
            yield item
    finally:
        stop.set()
