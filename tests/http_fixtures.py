"""Shared fixtures and helpers for the cloud-access tests. Fixtures are declared with
``name=`` so a test module imports them once (``from http_fixtures import rsps_fixture  # noqa:
F401``) and its tests take ``rsps``. HTTP is mocked with ``responses``; every registered call must
fire."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import responses

from bridge.auth import TEAMS_RESOURCE
from bridge.http import HttpClient, HttpOptions
from bridge.settings import ENV_NAMES

TEAMS = "https://teams.test"
GRAPH = "https://graph.test"
LOGIN = "https://login.test"
TENANT = "11111111-2222-3333-4444-555555555555"
APP = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
TEAMS_ADMIN_WID = "69091246-20e8-4a56-aa4d-066075b2a7a8"
GLOBAL_READER_WID = "f2ef992c-3afb-46b9-b7cf-a126ee74c451"
POLICIES = f"{TEAMS}/Skype.Policy/configurations/TeamsMessagingPolicy"


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def make_jwt(**claims: Any) -> str:
    """An unsigned JWT-shaped token (only its payload is ever read)."""
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}.c2lnbmF0dXJl"


class FakeTokens:
    """A token provider handing out JWT-shaped tokens per resource, counting requests."""

    kind = "secret"

    def __init__(self, claims: dict[str, dict[str, Any]] | None = None):
        self.claims = claims or {}
        self.requests: list[str] = []

    def describe(self) -> str:
        return f"secret credential (app {APP}, tenant {TENANT})"

    def get_token(self, resource: str) -> str:
        self.requests.append(resource)
        claims = {"aud": resource, "tid": TENANT, "appid": APP}
        claims.update(self.claims.get(resource, {}))
        return make_jwt(**claims)


class Sleeps:
    """The injected ``sleep``: records waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture(name="rsps")
def rsps_fixture() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


@pytest.fixture(name="sleeps")
def sleeps_fixture() -> Sleeps:
    return Sleeps()


@pytest.fixture(name="tokens")
def tokens_fixture() -> FakeTokens:
    return FakeTokens()


def make_client(
    tokens: FakeTokens | None = None,
    sleeps: Sleeps | None = None,
    *,
    attempts: int = 3,
    max_seconds: float = 60.0,
    concurrency: int = 1,
    secrets: tuple[str, ...] = (),
) -> HttpClient:
    options = HttpOptions(
        timeout=(1.0, 2.0),
        retry_attempts=attempts,
        retry_max_seconds=max_seconds,
        concurrency=concurrency,
        secrets=secrets,
    )
    return HttpClient(tokens or FakeTokens(), options, sleep=sleeps or Sleeps())


@pytest.fixture(name="client")
def client_fixture(tokens: FakeTokens, sleeps: Sleeps) -> HttpClient:
    return make_client(tokens, sleeps)


@pytest.fixture(name="clean_env")
def clean_env_fixture(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
    """No Azure/bridge variables from the machine, and no stray ``.env`` in the directory."""
    for name in ENV_NAMES.values():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def policy_obj(identity: str, **settings: Any) -> dict[str, Any]:
    """A policy as the Teams admin API returns it (with the envelope fields)."""
    scope = "Global" if identity == "Global" else "Tag"
    return {
        "Identity": identity,
        "Key": {"ScopeClass": scope, "SchemaId": {"XName": {"name": "TeamsMessagingPolicy"}}},
        "ConfigMetadata": {"Authority": "Host"},
        "ConfigId": identity,
        **settings,
    }


__all__ = [
    "APP",
    "GLOBAL_READER_WID",
    "GRAPH",
    "LOGIN",
    "POLICIES",
    "TEAMS",
    "TEAMS_ADMIN_WID",
    "TEAMS_RESOURCE",
    "TENANT",
    "FakeTokens",
    "Sleeps",
    "clean_env_fixture",
    "client_fixture",
    "make_client",
    "make_jwt",
    "policy_obj",
    "rsps_fixture",
    "sleeps_fixture",
    "tokens_fixture",
]
