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
from wire_shapes import SHAPES

from bridge.auth import build_token_provider
from bridge.backends import make_backend
from bridge.backends.base import Backend, Wanted
from bridge.backends.powershell import PowerShellBackend
from bridge.sandbox import Sandbox, SandboxConfig
from bridge.settings import Settings
from bridge.state import TenantState

TRANSPORTS = ("rest", "powershell")


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
