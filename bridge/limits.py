"""Every number teams-bridge takes from outside (a command-line option, an environment variable,
``.env``, a saved plan, a snapshot, the desired file) is checked here, finite and in range, before
anything uses it.

Python's comparisons are all false for NaN, so ``min(saved, default)`` with a NaN keeps the NaN
and ``share > limit`` never trips; ``float("inf")`` as a timeout waits forever (or overflows the
socket layer). So no caller compares a raw number with a bound itself: it names a ``Range`` and
calls ``check`` (or uses ``Number``, the click parameter type built on it), and the message a user
sees names the option, variable or file field and the allowed range, the same way everywhere.
"""

from __future__ import annotations

import datetime as dt
import errno
import math
import os
import stat
from dataclasses import dataclass
from typing import Any

import click

__all__ = [
    "CONCURRENCY",
    "COUNT",
    "FLOOR",
    "LOCK_SECONDS",
    "NONNEGATIVE",
    "RANK",
    "RATE",
    "RETRY_ATTEMPTS",
    "RETRY_SECONDS",
    "SHARE",
    "TIMEOUT_SECONDS",
    "VERIFY_SECONDS",
    "Number",
    "NumberError",
    "Range",
    "check",
    "read_bounded",
    "time_problem",
]

DAY = 86_400.0


class NumberError(ValueError):
    """A number that is not finite, not a number, or out of its range. The message reads on its
    own after ``<where>: `` (``--verify-timeout: nan is not a finite number; ...``)."""


@dataclass(frozen=True)
class Range:
    """The numbers a setting takes: ``low`` to ``high`` (``low`` excluded when ``above``),
    whole numbers only when ``integer``; ``unit`` names what is counted in messages."""

    low: float
    high: float
    integer: bool = False
    above: bool = False
    unit: str = ""

    def describe(self) -> str:
        what = "a whole number" if self.integer else "a number"
        if self.unit:
            what += f" of {self.unit}"
        low = f"above {_num(self.low)}" if self.above else f"from {_num(self.low)}"
        return f"{what} {low} to {_num(self.high)}"

    def problem(self, value: Any, text: str | None = None) -> str | None:
        """Why ``value`` (already a Python number) is not in this range, or None. ``text``: the
        value as the user wrote it, for the message."""
        shown = _shown(value) if text is None else _shown(text)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{shown} is not a number; give {self.describe()}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{shown} is not a finite number; give {self.describe()}"
        if self.integer and not isinstance(value, int) and not float(value).is_integer():
            return f"{shown} is not a whole number; give {self.describe()}"
        too_low = value <= self.low if self.above else value < self.low
        if too_low or value > self.high:
            return f"{shown} is out of range; give {self.describe()}"
        return None


# Seconds to wait for a response; a read of a large tenant page can take a minute or two.
TIMEOUT_SECONDS = Range(0, 3600, above=True, unit="seconds")
# The longest a retry may wait (Retry-After included).
RETRY_SECONDS = Range(0, 3600, above=True, unit="seconds")
# Waiting for another apply's lock, or for writes to show: 0 is "do not wait", a day is plenty.
LOCK_SECONDS = Range(0, DAY, unit="seconds")
VERIFY_SECONDS = Range(0, DAY, unit="seconds")
RETRY_ATTEMPTS = Range(1, 20, integer=True, unit="attempts")
CONCURRENCY = Range(1, 32, integer=True, unit="parallel requests")
# At least one request every 10 s: a slower rate would hold the tenant lock for hours (and a
# denormal rate overflows the clock arithmetic of the pacer).
RATE = Range(0.1, 10_000, unit="requests per second")
# A share of users (the safety limit): 0 to 1.
SHARE = Range(0, 1)
# A count a user sets a limit with (max_policy_deletes), and list lengths (history --limit).
COUNT = Range(0, 1_000_000, integer=True)
# How many users may move before the share limit applies (0: it always applies).
FLOOR = Range(0, 10_000_000, integer=True, unit="users")
# A group assignment's rank (1 = highest); the service allows 64 group assignments per type,
# the bound only keeps absurd values (10**400) out.
RANK = Range(1, 10_000, integer=True)
# A non-negative quantity with no natural bound (sandbox knobs): finite is what matters.
NONNEGATIVE = Range(0, 1e12)


def check(value: Any, rng: Range, where: str, text: str | None = None) -> Any:
    """``value`` when it is in ``rng``, else ``NumberError`` naming ``where`` (an option, a
    variable, or a file and field). Whole numbers come back as ``int``."""
    why = rng.problem(value, text)
    if why is not None:
        raise NumberError(f"{where}: {why}")
    return int(value) if rng.integer else value


def parse(text: str, rng: Range, where: str) -> Any:
    """A number written as text (an option, an environment variable), checked against ``rng``.
    ``nan``, ``inf`` and ``1e999`` are refused like any other number out of range."""
    raw = str(text).strip()
    value: int | float
    try:
        value = int(raw) if rng.integer else float(raw)
    except ValueError:
        try:
            value = float(raw)  # "1.0" for a whole number, or "nan" to be refused as such
        except ValueError:
            raise NumberError(
                f"{where}: {_shown(text)} is not a number; give {rng.describe()}"
            ) from None
    return check(value, rng, where, raw)


# Times read from files (a snapshot's taken_at, a saved plan's created_at): Teams messaging
# policies did not exist before 2017, and a time far ahead of the clock is an edited file. Both
# bounds also keep the calendar's edges (year 1, year 9999) away from later arithmetic
# (``since - slack``) and from history's fixed-width text.
EARLIEST_TIME = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)


def time_problem(value: dt.datetime, now: dt.datetime, skew: dt.timedelta) -> str | None:
    """Why an aware time read from a file cannot be right, or None: before 2000, or later than
    ``now`` plus ``skew`` (a clock a little ahead is forgiven)."""
    if value < EARLIEST_TIME:
        return f"is before {EARLIEST_TIME.year}"
    if value > now + skew:
        return f"is later than now ({now.isoformat(timespec='seconds')})"
    return None


# Files teams-bridge reads whole: the largest each may be. A desired file for 200,000 users is
# about 15 MB; a snapshot of 200,000 users with their groups about 60 MB.
DESIRED_MAX_BYTES = 64 << 20
PLAN_MAX_BYTES = 256 << 20
SNAPSHOT_MAX_BYTES = 512 << 20


def read_bounded(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The bytes of the file at ``path``, read whole. A file larger than ``max_bytes``, or one
    that is not a regular file or a pipe (``/dev/zero``, a directory, a terminal) is an
    ``OSError`` saying so, before anything large is read into memory."""
    with open(path, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            raise OSError(errno.EINVAL, "not a regular file (a device or a directory?)")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise OSError(
            errno.EFBIG,
            f"larger than {max_bytes >> 20} MB, the most teams-bridge reads from such a file",
        )
    return data


class Number(click.ParamType):
    """A click option type that refuses NaN, infinities and numbers outside ``rng``, naming the
    option and the range (``click.FloatRange`` lets NaN through: every comparison with it is
    false)."""

    name = "number"

    def __init__(self, rng: Range):
        self.rng = rng
        self.name = "integer" if rng.integer else "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        where = _option_name(param)
        try:
            if isinstance(value, str):
                return parse(value, self.rng, where)
            return check(value, self.rng, where)
        except NumberError as exc:
            # click prefixes "Invalid value for '--option':", so drop our own prefix.
            self.fail(str(exc).split(": ", 1)[1], param, ctx)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        if self.rng.high < 1e6:
            return f"[{_num(self.rng.low)}-{_num(self.rng.high)}]"
        return "INTEGER" if self.rng.integer else "NUMBER"


def _option_name(param: click.Parameter | None) -> str:
    if param is None:
        return "value"
    opts = getattr(param, "opts", None) or [param.name or "value"]
    return max(opts, key=len)


def _num(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _shown(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else repr(value.strip())
    return text if len(text) <= 40 else text[:37] + "..."
