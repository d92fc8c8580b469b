"""Text from the tenant (names, descriptions, UPNs, service warnings) made safe to show.

Anyone who can name a group or edit a user's display name writes text that teams-bridge prints
on an admin's terminal and in its logs. An escape sequence there can clear the screen, recolour
or hide lines of a plan under review, and a line break can forge a line of its own. Every
terminal and text-log path passes such text through ``printable``; reports have their own
escaping (HTML, Markdown, JUnit) built on the same function.
"""

from __future__ import annotations


def printable(text: object) -> str:
    """``text`` without control characters: tenant data must not move the cursor or recolour
    the terminal. Line breaks are escaped too (``\\x0a``), so one call gives one line."""
    return "".join(
        ch if ch.isprintable() else f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}"
        for ch in str(text)
    )


def printable_lines(text: object) -> str:
    """``printable`` line by line, for a message of several lines: its line breaks stay, every
    other control character (in tenant text it carries) is shown escaped."""
    return "\n".join(printable(line) for line in str(text).split("\n"))
