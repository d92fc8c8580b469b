"""The contract suite's fixtures: the ``backend`` fixture gives the same cases the REST transport
(against the sandbox over HTTPS) and the PowerShell transport (the fake pwsh, seeded with the
sandbox's tenant as read through REST, so both start identical)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# tests/ holds the fake pwsh package; pytest puts only this directory on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fake_pwsh import FakePwsh

from bridge.auth import build_token_provider
from bridge.backends import make_backend
from bridge.backends.base import Backend, Wanted
from bridge.backends.powershell import PowerShellBackend
from bridge.sandbox import Sandbox, SandboxConfig
from bridge.settings import Settings
from bridge.state import TenantState

TRANSPORTS = ("rest", "powershell")
WARNING = "The policy was saved; some settings take up to 24 hours to apply."


@dataclass(frozen=True)
class Shape:
    """Sandbox knobs for one answer shape a public source records (docs/wire.md), and what the
    shape changes: ``read`` (group assignments, users, pages), ``users`` (user pages and rows),
    ``groups`` (group assignment rows) or ``policy_writes`` (PUT/POST answers)."""

    knobs: dict[str, Any]
    touches: frozenset[str]


def _shape(touches: str, **knobs: Any) -> Shape:
    return Shape(knobs, frozenset(touches.split()))


# The REST transport runs the contract through each of these as well as the default shape.
SHAPES = {
    "rest:group_keys=camel": _shape("read groups", group_keys="camel"),
    "rest:group_keys=priority": _shape("read groups", group_keys="priority"),
    "rest:paging=nextLink": _shape("read users", paging="nextLink", page_size=23),
    "rest:paging=NextLink": _shape("read users", paging="NextLink", page_size=23),
    "rest:paging=skipToken": _shape(
        "read users", paging="skipToken", page_size=23, user_count="@odata.count"
    ),
    "rest:paging=SkipToken": _shape("read users", paging="SkipToken", page_size=23),
    "rest:paging=$skiptoken": _shape(
        "read users", paging="$skiptoken", page_size=23, user_count="totalCount"
    ),
    "rest:user_rows=camel": _shape("read users", user_rows="camel", user_count="Count"),
    "rest:user_rows=effective": _shape("read users", user_rows="effective", page_size=41),
    "rest:write_answer=array": _shape("policy_writes", write_answer="array"),
    "rest:write_answer=empty": _shape("policy_writes", write_answer="empty"),
    "rest:write_answer=no_content": _shape("policy_writes", write_answer="no_content"),
    "rest:warning": _shape("policy_writes groups", warning=WARNING),
    "rest:compression=br": _shape("read policy_writes", compression="br"),
    "rest:compression=br-unprompted": _shape("read users", compression="br-unprompted"),
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "wire(*touches): the answer shapes a contract case exercises (see SHAPES); the "
        "backend fixture adds the REST transport through each shape that touches one of them",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("wire")
    touches = set(marker.args) if marker else set()
    shaped = [name for name, shape in SHAPES.items() if shape.touches & touches]
    metafunc.parametrize("backend", [*TRANSPORTS, *shaped], indirect=True)


@dataclass
class World:
    """One sandbox tenant, and what both transports need to reach it."""

    sandbox: Sandbox
    settings: Settings
    tokens: Any
    wanted: Wanted
    initial: TenantState  # read through REST before any test writes
    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch

    def open(self, transport: str) -> Backend:
        if transport == "rest":
            return make_backend("rest", self.settings, self.tokens)
        fake = FakePwsh.install(self.tmp_path / "pwsh")
        fake.seed(self.initial)
        for name, value in fake.env().items():
            self.monkeypatch.setenv(name, value)
        # Batches are polled at once: the fake completes them on the second poll.
        return PowerShellBackend(self.settings, self.tokens, timeout=30.0, poll_interval=0.01)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    with Sandbox(SandboxConfig(users=200, seed=1)) as sb:
        settings = Settings.load(env_file=None, overrides=sb.env())
        tokens = build_token_provider(settings)
        groups = sorted({g["displayName"] for g in sb.tenant.groups()})
        wanted = Wanted(groups=groups)
        rest = make_backend("rest", settings, tokens)
        try:
            initial = rest.read(wanted)
        finally:
            rest.close()
        yield World(sb, settings, tokens, wanted, initial, tmp_path, monkeypatch)


@pytest.fixture
def backend(request: pytest.FixtureRequest, world: World) -> Iterator[Backend]:
    """The transport named by the test's parameter; ``rest:<shape>`` is REST against the
    sandbox answering in that shape (from the first request after the initial read)."""
    if request.param in SHAPES:
        world.sandbox.configure(**SHAPES[request.param].knobs)
    b = world.open("rest" if request.param in SHAPES else request.param)
    yield b
    b.close()


@pytest.fixture
def initial(world: World) -> TenantState:
    return world.initial
