"""``python -m bridge.sandbox``: the same as ``teams-bridge sandbox`` (serve the simulated tenant
until interrupted, after printing the environment that points teams-bridge at it)."""

from __future__ import annotations

import sys

from ..cli import main

if __name__ == "__main__":
    main(["sandbox", *sys.argv[1:]])
