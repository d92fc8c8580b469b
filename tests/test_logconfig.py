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


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_tenant_text_in_a_log_line_cannot_hide_or_forge_lines(
    fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group name or a service warning carries escape sequences and a line break: the log shows
    them escaped, one record on one line, so nothing is cleared, recoloured or forged."""
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    configure_logging(1, fmt)
    hostile = "Nursing\x1b[2J\x1b[H\u202eFAKE\n  + policy 'X' will be created\r\x07"
    logging.getLogger("bridge.apply").info("assign group %s", hostile)
    logging.getLogger("bridge.http").warning("the service warned: %s", hostile)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    for line in lines:
        assert all(ch.isprintable() for ch in line), repr(line)
    if fmt == "text":
        assert lines[0].startswith("INFO bridge.apply: assign group Nursing\\x1b[2J")
        assert "\\u202eFAKE\\x0a  + policy 'X' will be created\\x0d\\x07" in lines[0]
