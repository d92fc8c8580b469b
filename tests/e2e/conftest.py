"""End-to-end fixtures: sandboxes (one per module for tests that only read, a fresh one for tests
that change the tenant) and ``cli_for(sb)``, the CLI as a subprocess against one of them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2e_support import Cli, reset

from bridge.sandbox import Sandbox, SandboxConfig


@pytest.fixture(scope="module")
def hospital() -> Iterator[Sandbox]:
    """One sandbox per module for tests that only read (they may turn knobs; see ``ro``)."""
    with Sandbox(SandboxConfig(users=300, seed=7)) as sb:
        yield sb


@pytest.fixture
def ro(hospital: Sandbox) -> Iterator[Sandbox]:
    """The module's sandbox with knobs, injections and stats reset before and after."""
    digest = hospital.tenant.digest()
    reset(hospital)
    yield hospital
    reset(hospital)
    assert hospital.tenant.digest() == digest, "a read-only test changed the shared tenant"


@pytest.fixture
def fresh() -> Iterator[Sandbox]:
    """A new sandbox hospital for a test that changes the tenant."""
    with Sandbox(SandboxConfig(users=300, seed=7)) as sb:
        yield sb


@pytest.fixture
def cli_for(tmp_path: Path) -> Callable[[Sandbox], Cli]:
    return lambda sb: Cli(sb, tmp_path)
