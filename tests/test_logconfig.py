"""Logging never carries a secret: configured values, tokens obtained, token-shaped text."""

from __future__ import annotations

import io
import logging

import pytest

from bridge.logconfig import configure_logging
from bridge.redact import redact, register_secret


def test_registered_secret_is_redacted_everywhere() -> None:
    register_secret("s3cr3t-value-42")
    assert redact("boom: client said s3cr3t-value-42") == "boom: client said [redacted]"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_log_lines_and_tracebacks_are_redacted(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    configure_logging(2, fmt)
    register_secret("another-secret-99")
    log = logging.getLogger("bridge.test")
    log.info("sending Authorization: Bearer eyJhbGciOi.eyJ0aWQiOi.c2ln and another-secret-99")
    try:
        raise RuntimeError("failed with client_secret=hunter2hunter2")
    except RuntimeError:
        log.exception("request failed")
    text = stream.getvalue()
    assert "another-secret-99" not in text and "hunter2hunter2" not in text
    assert "eyJhbGciOi" not in text and "RuntimeError" in text
