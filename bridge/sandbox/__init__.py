"""A simulated Teams tenant over real HTTPS: identity (MSAL-compatible token endpoint), the Teams
admin API and the Microsoft Graph calls teams-bridge makes, answering exactly docs/wire.md.

    from bridge.sandbox import Sandbox, SandboxConfig
    with Sandbox(SandboxConfig(users=2000, seed=7)) as sb:
        sb.base_url, sb.ca_path, sb.env()      # point teams-bridge here
        sb.tenant                              # the in-memory tenant (inspect / change it)
        sb.stats(), sb.configure(...), sb.inject(...)

``build_hospital(cfg)`` builds the seeded tenant without a server.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import SandboxConfig
    from .seed import TENANT_DOMAIN, build_hospital
    from .server import Sandbox, SandboxFleet
    from .tenant import ServiceError, Tenant

# Loaded on first use: the CLI builds its --sandbox options from ``config`` at every start, and
# the server (TLS, brotli, the tenant) is needed only when a sandbox actually runs.
_WHERE = {
    "SandboxConfig": "config",
    "TENANT_DOMAIN": "seed",
    "build_hospital": "seed",
    "Sandbox": "server",
    "SandboxFleet": "server",
    "ServiceError": "tenant",
    "Tenant": "tenant",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "TENANT_DOMAIN",
    "Sandbox",
    "SandboxConfig",
    "SandboxFleet",
    "ServiceError",
    "Tenant",
    "build_hospital",
]
