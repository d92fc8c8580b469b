"""Logging set-up for the CLI: text or JSON lines on stderr, every line passed through
``bridge.redact`` so a token or secret can never reach a log. In text, a record's message is one
line with its control characters escaped (``bridge.text.printable``): log messages carry group
names, UPNs and service warnings, and an escape sequence or a line break there could hide or
forge lines on the admin's terminal. JSON lines are escaped by ``json.dumps`` itself."""

from __future__ import annotations

import json
import logging
import sys

from .redact import redact
from .text import printable


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True


class RedactingFormatter(logging.Formatter):
    """Redacts the whole line, tracebacks included (``-vv`` logs them); the message itself is
    shown on one line with control characters escaped (a traceback keeps its lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(out)


def configure_logging(verbosity: int, fmt: str = "text") -> None:
    """Log to stderr through the redaction filter. Replaces only a handler this function
    installed before, so other handlers on the root logger (a test's log capture) keep working."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.set_name("teams-bridge")
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
    handler.setLevel(level)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "teams-bridge"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(min(root.level or logging.WARNING, level))
    logging.getLogger("bridge").setLevel(level)
    # Libraries speak only when something is wrong.
    for name in ("msal", "urllib3"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
