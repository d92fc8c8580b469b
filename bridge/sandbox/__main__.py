"""``python -m bridge.sandbox``: serve the simulated tenant until interrupted, after printing the
environment that points teams-bridge at it. Options are built from ``SandboxConfig``'s fields."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from .config import SandboxConfig, option_fields
from .server import Sandbox

# SandboxConfig's field annotations (strings, under ``from __future__ import annotations``).
_ARG_TYPES: dict[str, Any] = {
    "int": int,
    "int | None": int,
    "float": float,
    "float | None": float,
    "str": str,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bridge.sandbox", description="Serve a simulated Teams tenant over HTTPS."
    )
    defaults = SandboxConfig()
    for f in option_fields():
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if f.name == "roles":
            parser.add_argument(flag, nargs="*", default=list(default), help=f.metadata["help"])
        else:
            kind = _ARG_TYPES[str(f.type)]
            parser.add_argument(flag, type=kind, default=default, help=f.metadata["help"])
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    logging.basicConfig(
        level=logging.DEBUG if args.pop("verbose") else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        cfg = SandboxConfig(**args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # SIGTERM (docker stop, kill) unwinds like Ctrl+C, so the temporary files are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with Sandbox(cfg) as sb:
        for name, value in sb.env().items():
            print(f"export {name}={value}")
        print(f"export AZURE_CLIENT_CERTIFICATE_PATH={sb.client_cert_path}  # optional")
        print("# serving; press Ctrl+C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
