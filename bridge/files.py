"""Writing output files (snapshots, exports, plans, schemas, reports, the token cache) the one
safe way: ``write_text_atomic``."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from .errors import ConfigError

WRITABLE_HINT = "choose a file path in a directory you can write to"


def _umask() -> int:
    """The process umask, without changing it where the system can tell (Linux); elsewhere
    set and restored at once."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    old = os.umask(0o022)
    os.umask(old)
    return old


def _mode_for(target: Path, private: bool) -> int:
    if private:
        return 0o600
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)  # a rewrite keeps the user's chmod
    except OSError:
        mode = 0o666 & ~_umask()  # what a plain open() would have made
    return mode & ~0o002  # never world-writable


def write_text_atomic(
    path: str | os.PathLike[str],
    text: str | bytes,
    *,
    private: bool = False,
    hint: str = WRITABLE_HINT,
) -> None:
    """Write ``text`` (UTF-8) or bytes to ``path`` atomically, so an interrupted run never
    leaves half a file behind (a half-written snapshot would read back as a smaller tenant) and
    a reader sees the old file or the new one.

    The data goes to a fresh temporary file beside the target (``tempfile.mkstemp``: two
    writers never share it, and a user's own ``name.tmp`` is never touched), then is renamed
    over it. Whatever goes wrong, the temporary file is removed. A path that cannot be written,
    or text UTF-8 cannot encode, is a ``ConfigError`` (a ``BridgeError``) naming the path; an
    unwritable path's message ends with ``hint``.

    Modes: ``private`` files (plans, snapshots, the token cache: tenant data or tokens) are
    0600. Others keep an existing file's mode, or get what the umask gives a new file; never
    world-writable either way."""
    path = os.fspath(path)
    target = Path(path)
    tmp: str | None = None
    try:
        if target.is_dir():
            raise ConfigError(
                f"cannot write {path}: it is a directory; give a file name, such as "
                f"{target / 'out.txt'}"
            )
        data = text.encode("utf-8") if isinstance(text, str) else text
        target.parent.mkdir(parents=True, exist_ok=True)
        mode = _mode_for(target, private)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        where = (
            f" ({exc.filename})" if exc.filename and str(exc.filename) not in (path, tmp) else ""
        )
        raise ConfigError(f"cannot write {path}: {reason}{where}; {hint}") from None
    except UnicodeError as exc:
        raise ConfigError(
            f"cannot write {path}: the text holds characters UTF-8 cannot encode "
            f"({getattr(exc, 'reason', exc)} at character {getattr(exc, 'start', '?')})"
        ) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
