"""Who sees every request: ``serve``'s metrics and its run time-out register an observer here.

``before(api)`` runs before each attempt is sent and may raise to stop the run; ``done(api,
status)`` after each attempt (status: the HTTP code, or "error" when no answer came);
``throttled(api)`` for each 429, a ``$batch`` inner one too. ``api`` is "teams", "graph" or
"login" (MSAL's token requests, counted in ``auth``). Requests without a token (webhooks) are
not an API of the tenant and are not observed. Its own module, below both ``http`` (the choke
point) and ``auth`` (MSAL's session), which both report to it.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Protocol


class RequestObserver(Protocol):
    def before(self, api: str) -> None: ...
    def done(self, api: str, status: str) -> None: ...
    def throttled(self, api: str) -> None: ...


_OBSERVERS: list[RequestObserver] = []
# Observers of one tenant's run (a fleet runs many in one process): they see the requests made
# in the context that set them, and in the worker threads ``map_concurrent`` starts from it.
_SCOPED: contextvars.ContextVar[tuple[RequestObserver, ...]] = contextvars.ContextVar(
    "bridge_http_observers", default=()
)


@contextlib.contextmanager
def observing(*observers: RequestObserver) -> Iterator[None]:
    """Within the block (this thread, and the threads it fans out to), ``observers`` see every
    request too; other threads' requests are not theirs."""
    token = _SCOPED.set((*_SCOPED.get(), *observers))
    try:
        yield
    finally:
        _SCOPED.reset(token)


def _observers() -> list[RequestObserver]:
    return [*_OBSERVERS, *_SCOPED.get()]


def add_observer(observer: RequestObserver) -> None:
    _OBSERVERS.append(observer)


def remove_observer(observer: RequestObserver) -> None:
    with contextlib.suppress(ValueError):
        _OBSERVERS.remove(observer)


def observe_before(api: str) -> None:
    for observer in _observers():
        observer.before(api)


def observe_done(api: str, status: int | None) -> None:
    for observer in _observers():
        observer.done(api, "error" if status is None else str(status))
        if status == 429:
            observer.throttled(api)
