"""Writing output files (snapshots, exports, plans, schemas) the one safe way."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .errors import BridgeError


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write atomically, so an interrupted run never leaves half a file behind (a half-written
    snapshot would read back as a smaller tenant). A path that cannot be written is a
    ``BridgeError`` naming it, and leaves no temporary file."""
    path = os.fspath(path)
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    opened = False
    try:
        if target.is_dir():
            raise BridgeError(
                f"cannot write {path}: it is a directory; give a file name, such as "
                f"{target / 'out.txt'}"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as fh:
            opened = True
            fh.write(text)
        os.replace(tmp, target)
    except OSError as exc:
        if opened:
            with contextlib.suppress(OSError):
                tmp.unlink()
        reason = exc.strerror or str(exc)
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != path else ""
        raise BridgeError(
            f"cannot write {path}: {reason}{where}; choose a file path in a directory you can "
            "write to"
        ) from None
