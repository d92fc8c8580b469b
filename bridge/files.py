"""Writing output files (snapshots, exports, plans, schemas, reports, the token cache) the one
safe way: ``write_text_atomic``."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

log = logging.getLogger(__name__)

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
        # lstat: a symlink at the path is replaced by the new file (never written through), so
        # the file it points to lends it nothing, its mode least of all.
        st = os.lstat(target)
        if not stat.S_ISREG(st.st_mode):
            raise FileNotFoundError(target)
        mode = stat.S_IMODE(st.st_mode)  # a rewrite keeps the user's chmod
    except OSError:
        mode = 0o666 & ~_umask()  # what a plain open() would have made
    return mode & ~0o002  # never world-writable


@dataclass
class _Staged:
    path: str  # as the caller gave it, for messages
    tmp: str | None = None  # the new content, not yet in place
    existed: bool = True  # a file was at the path (so a new one there is not ours to delete)
    backup: str | None = None  # a hard link to the old file while the set is replaced


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
    world-writable either way. A symlink at ``path`` is replaced by the new file (the file it
    pointed to is left alone), which gets the mode a new file gets: the link's target lends
    it nothing."""
    write_set_atomic([(path, text)], private=private, hint=hint)


def write_set_atomic(
    items: Iterable[tuple[str | os.PathLike[str], str | bytes]],
    *,
    private: bool = False,
    hint: str = WRITABLE_HINT,
) -> None:
    """Write several files as one set, all or nothing (a report set must never mix two runs):
    every temporary file is written first, then they are renamed into place one after the
    other. A failure while writing leaves every old file as it was; a failure while renaming
    (rare: every file is already written) puts back the files already replaced, from hard
    links taken beforehand. Each file is written as ``write_text_atomic`` writes one."""
    wanted = list(items)
    staged: list[_Staged] = []
    current = ""
    try:
        for path, text in wanted:
            current = os.fspath(path)
            target = Path(current)
            if target.is_dir():
                raise ConfigError(
                    f"cannot write {current}: it is a directory; give a file name, such as "
                    f"{target / 'out.txt'}"
                )
            data = text.encode("utf-8") if isinstance(text, str) else text
            target.parent.mkdir(parents=True, exist_ok=True)
            mode = _mode_for(target, private)
            entry = _Staged(current)
            staged.append(entry)
            fd, entry.tmp = tempfile.mkstemp(
                dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
            )
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(entry.tmp, mode)
        if len(staged) > 1:
            for entry in staged:
                current = entry.path
                entry.existed, entry.backup = _link_aside(entry.path)
        replaced: list[_Staged] = []
        for entry in staged:
            current = entry.path
            try:
                os.replace(entry.tmp, entry.path)  # type: ignore[arg-type]
            except OSError:
                not_restored = _put_back(replaced)
                if not_restored:
                    raise ConfigError(
                        f"cannot write {current}, and {', '.join(not_restored)} could not be "
                        "put back: the files of this set may come from two runs; write them "
                        f"again; {hint}"
                    ) from None
                raise
            entry.tmp = None
            replaced.append(entry)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        ours = {current, *(e.tmp for e in staged), *(e.backup for e in staged)}
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) not in ours else ""
        kept = f" (none of the {len(wanted)} files was replaced)" if len(wanted) > 1 else ""
        raise ConfigError(f"cannot write {current}: {reason}{where}{kept}; {hint}") from None
    except UnicodeError as exc:
        raise ConfigError(
            f"cannot write {current}: the text holds characters UTF-8 cannot encode "
            f"({getattr(exc, 'reason', exc)} at character {getattr(exc, 'start', '?')})"
        ) from None
    finally:
        for entry in staged:
            for leftover in (entry.tmp, entry.backup):
                if leftover is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(leftover)


def _link_aside(path: str) -> tuple[bool, str | None]:
    """(whether a file is at ``path``, a hard link to it beside it) so it can be put back; no
    link when there is no regular file there or the file system cannot link (then that one
    file could not be put back, which only matters if a later rename fails)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False, None
    if not stat.S_ISREG(st.st_mode):
        return True, None
    head, name = os.path.split(path)
    backup = os.path.join(head, f".{name}.{uuid.uuid4().hex[:12]}.old")
    try:
        os.link(path, backup)
    except OSError as exc:
        log.debug("no hard link to %s to put it back with: %s", path, exc)
        return True, None
    return True, backup


def _put_back(replaced: list[_Staged]) -> list[str]:
    """Undo the renames already done, newest first; returns the paths that could not be."""
    failed = []
    for entry in reversed(replaced):
        try:
            if entry.backup is not None:
                os.replace(entry.backup, entry.path)
                entry.backup = None
            elif not entry.existed:
                os.unlink(entry.path)
            else:
                failed.append(entry.path)
        except OSError:
            failed.append(entry.path)
    return failed
