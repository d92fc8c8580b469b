"""A simulated Teams tenant over real HTTPS: identity (MSAL-compatible token endpoint), the Teams
admin API and the Microsoft Graph calls teams-bridge makes, answering exactly docs/wire.md.

    from bridge.sandbox import Sandbox, SandboxConfig
    with Sandbox(SandboxConfig(users=2000, seed=7)) as sb:
        sb.base_url, sb.ca_path, sb.env()      # point teams-bridge here
        sb.tenant                              # the in-memory tenant (inspect / change it)
        sb.stats(), sb.configure(...), sb.inject(...)

``build_hospital(cfg)`` builds the seeded tenant without a server.
"""

from .config import SandboxConfig
from .seed import TENANT_DOMAIN, build_hospital
from .server import Sandbox, SandboxFleet
from .tenant import ServiceError, Tenant

__all__ = [
    "TENANT_DOMAIN",
    "Sandbox",
    "SandboxConfig",
    "SandboxFleet",
    "ServiceError",
    "Tenant",
    "build_hospital",
]
