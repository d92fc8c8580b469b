"""Who ran a command and why: the OS user, the host, the app id of the token (never a secret),
and for ``apply``/``drift`` the optional ``--reason`` and ``--ticket`` (the change-control
reference auditors ask for). Recorded in every report and in the journal's ``run_started``."""

from __future__ import annotations

import getpass
import logging
import socket
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunBy:
    operator: str | None  # the OS user
    host: str | None
    app_id: str | None  # the token's appid/azp claim: which app registration acted
    reason: str | None = None
    ticket: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "operator": self.operator,
            "host": self.host,
            "app_id": self.app_id,
            "reason": self.reason,
            "ticket": self.ticket,
        }

    def describe(self) -> str:
        """One line for people: ``by alice on ward-pc (app 1234...), ticket CHG123: reason``."""
        text = f"by {self.operator or 'unknown user'} on {self.host or 'unknown host'}"
        if self.app_id:
            text += f" (app {self.app_id})"
        if self.ticket:
            text += f", ticket {self.ticket}"
        if self.reason:
            text += f": {self.reason}"
        return text


def os_user() -> str | None:
    """The OS user running the process (any platform); None when it cannot be told (a container
    without a passwd entry)."""
    try:
        return getpass.getuser()
    except Exception as exc:  # KeyError/OSError by platform: no user name to record
        log.debug("cannot tell the OS user: %s", exc)
        return None


def host_name() -> str | None:
    try:
        return socket.gethostname() or None
    except OSError as exc:
        log.debug("cannot tell the host name: %s", exc)
        return None


def app_id_of(claims: dict[str, Any]) -> str | None:
    """The app registration a token was issued to: ``appid`` (v1 tokens) or ``azp`` (v2)."""
    value = claims.get("appid") or claims.get("azp")
    return str(value) if value else None


def current(app_id: str | None, *, reason: str | None = None, ticket: str | None = None) -> RunBy:
    return RunBy(os_user(), host_name(), app_id, reason or None, ticket or None)
