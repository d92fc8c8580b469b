"""The sandbox's bookkeeping of Retry-After: a retry of a 429'd request (same correlation id, or
the same inner ``$batch`` request) that comes back too soon is counted in ``early_retries``; one
that waits is not. The throttling e2e test relies on this counter to prove the client waits."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from bridge.sandbox import Sandbox, SandboxConfig

TEAMS = "48ac35b8-9aa8-4d74-927d-1f4a14a0b239"
CONF = "/Skype.Policy/configurations/TeamsMessagingPolicy"


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(users=20, seed=3)) as sandbox:
        yield sandbox


class _Client(requests.Session):
    """verify per request: requests lets REQUESTS_CA_BUNDLE override Session.verify."""

    def __init__(self, ca_path: str):
        super().__init__()
        self.ca_path = ca_path

    def request(self, *args, **kwargs):  # type: ignore[no-untyped-def,override]
        kwargs["verify"] = self.ca_path
        return super().request(*args, **kwargs)


def _client(sb: Sandbox, resource: str) -> requests.Session:
    r = requests.post(
        f"{sb.base_url}/{sb.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": sb.client_id,
            "client_secret": sb.client_secret,
            "scope": f"{resource}/.default",
        },
        verify=sb.ca_path,
        timeout=10,
    )
    assert r.status_code == 200, r.text
    session = _Client(sb.ca_path)
    session.headers["Authorization"] = "Bearer " + r.json()["access_token"]
    return session


def test_a_retry_before_retry_after_is_counted_and_one_after_is_not(sb):
    teams = _client(sb, TEAMS)
    sb.inject("GET", CONF, status=429, retry_after=1, times=2)
    same = {"x-ms-correlation-id": "retry-1"}
    first = teams.get(sb.base_url + CONF, headers=same, timeout=10)
    assert (first.status_code, first.headers["Retry-After"]) == (429, "1")
    # Another request (another correlation id) is not a retry of the first.
    assert teams.get(sb.base_url + CONF, timeout=10).status_code == 429
    assert teams.get(sb.base_url + CONF, headers=same, timeout=10).status_code == 200
    assert sb.stats()["early_retries"] == 1

    sb.inject("GET", CONF, status=429, retry_after=1, times=1)
    patient = {"x-ms-correlation-id": "retry-2"}
    assert teams.get(sb.base_url + CONF, headers=patient, timeout=10).status_code == 429
    time.sleep(1.0)
    assert teams.get(sb.base_url + CONF, headers=patient, timeout=10).status_code == 200
    # Counted once: the early retry was forgotten after it was counted.
    assert teams.get(sb.base_url + CONF, headers=same, timeout=10).status_code == 200
    assert sb.stats()["early_retries"] == 1


def test_inner_batch_requests_are_tracked_by_method_and_url(sb):
    graph = _client(sb, sb.base_url)
    sb.configure(throttle_rps=0.5, throttle_burst=1)
    batch = {"requests": [{"id": "1", "method": "GET", "url": "/organization"}]}
    url = sb.base_url + "/v1.0/$batch"
    assert graph.post(url, json=batch, timeout=10).json()["responses"][0]["status"] == 200
    throttled = graph.post(url, json=batch, timeout=10).json()["responses"][0]
    assert throttled["status"] == 429 and int(throttled["headers"]["Retry-After"]) >= 1
    again = graph.post(url, json=batch, timeout=10).json()["responses"][0]
    assert again["status"] == 429
    assert sb.stats()["early_retries"] == 1
    sb.reset_stats()
    assert sb.stats()["early_retries"] == 0
