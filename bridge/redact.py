"""The one redaction rule: what never reaches a log line, an error message, a journal, a report.

Known secret values (the configured secret, certificate password, tokens obtained) are replaced
wherever they appear; anything shaped like a bearer token, a JWT or a ``client_secret=...`` pair is
replaced even when nobody told us it was secret.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_REDACTIONS = [
    (re.compile(r"(?i)\b(bearer)\s+[\w\-.~+/=]+"), r"\1 [redacted]"),
    # JWTs (access tokens, client assertions, federated tokens): header.payload.signature
    (re.compile(r"\beyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*"), "[redacted-jwt]"),
    (
        re.compile(
            r"(?i)\b(client_secret|client_assertion|access_token|refresh_token|password|"
            r"passphrase|assertion)([\"']?\s*[=:]\s*[\"']?)[^\s&\"',}]+"
        ),
        r"\1\2[redacted]",
    ),
]


_KNOWN: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret value (the configured secret, a token obtained) so that every later
    ``redact`` replaces it, including in log lines whose code never saw it."""
    if value and len(value) >= 4:
        _KNOWN.add(value)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with the registered and the given secret values, and anything shaped like a token
    or a ``client_secret=...`` pair, replaced by ``[redacted]``."""
    # Longest first: a fleet holds many tenants' secrets, and one that starts with another
    # would otherwise keep its tail.
    for secret in sorted({*_KNOWN, *secrets}, key=len, reverse=True):
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text
