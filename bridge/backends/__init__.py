"""Backends: the transports that read and write a tenant. ``make_backend`` picks one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..auth import TokenProvider
    from ..http import HttpClient
    from ..settings import Settings
    from .base import Backend

TRANSPORTS = ("rest", "powershell")


def make_backend(
    transport: str,
    settings: Settings,
    token_provider: TokenProvider,
    *,
    http: HttpClient | None = None,
) -> Backend:
    """The backend for ``transport`` (``rest`` or ``powershell``); ``http`` lets a caller share
    or inject the HTTP client (tests, the sandbox)."""
    if transport == "rest":
        from ..http import HttpClient
        from .graph import GraphClient
        from .teams_api import RestBackend, TeamsAdminClient

        client = http or HttpClient(token_provider, settings)
        return RestBackend(
            TeamsAdminClient(client, settings.teams_url),
            GraphClient(client, settings.graph_url),
            settings,
        )
    if transport == "powershell":
        # Imported here: it is optional (needs pwsh) and built separately.
        from .powershell import PowerShellBackend  # type: ignore[import-not-found,unused-ignore]

        backend: Backend = PowerShellBackend(settings, token_provider)
        return backend
    raise ConfigError(
        f"unknown transport {transport!r}: choose one of {', '.join(TRANSPORTS)} (--transport)"
    )
