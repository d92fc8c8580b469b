"""The sandbox's knobs. Each field's ``metadata["help"]`` is its documentation; ``__main__`` builds
its command-line options from them, and the CLI can do the same (see ``option_fields``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# The app's directory roles, as the sandbox names them, and their role template ids (``wids``).
ROLE_TEMPLATE_IDS = {
    "teams_admin": "69091246-20e8-4a56-aa4d-066075b2a7a8",
    "global_admin": "62e90394-69f5-4237-9190-012177145e10",
    "global_reader": "f2ef992c-3afb-46b9-b7cf-a126ee74c451",
}
WRITE_ROLES = frozenset({ROLE_TEMPLATE_IDS["teams_admin"], ROLE_TEMPLATE_IDS["global_admin"]})
READ_ROLES = WRITE_ROLES | {ROLE_TEMPLATE_IDS["global_reader"]}

# The service allows at most 64 group assignments per policy type.
MAX_GROUP_ASSIGNMENTS = 64

# Knobs ``Sandbox.configure`` may change while the server runs.
LIVE_KNOBS = frozenset(
    {
        "latency",
        "throttle_rps",
        "throttle_burst",
        "fault_rate",
        "drop_rate",
        "lost_answer_rate",
        "propagation_delay",
        "roles",
        "page_size",
    }
)


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class SandboxConfig:
    users: int = field(default=2000, metadata=_help("users in the fictional hospital"))
    seed: int = field(default=7, metadata=_help("seed: the same seed builds the same tenant"))
    policies: int | None = field(
        default=None,
        metadata=_help(
            "at least this many messaging policies in all (built-ins included); extra custom "
            "policies are named 'Policy 001'..."
        ),
    )
    group_assignments: int | None = field(
        default=None,
        metadata=_help(
            "at least this many TeamsMessagingPolicy group assignments (max 64); extra groups "
            "are named 'Group 001'..."
        ),
    )
    direct_share: float | None = field(
        default=None,
        metadata=_help("share of users with a direct assignment (default: a handful)"),
    )
    latency: float = field(default=0.0, metadata=_help("seconds added to every request"))
    throttle_rps: float | None = field(
        default=None,
        metadata=_help("API requests per second before 429 + Retry-After (default: no limit)"),
    )
    throttle_burst: int | None = field(
        default=None, metadata=_help("token bucket size (default: one second's worth)")
    )
    fault_rate: float = field(
        default=0.0, metadata=_help("share of API requests answered 500/503 (seeded)")
    )
    drop_rate: float = field(
        default=0.0, metadata=_help("share of API requests whose connection is closed unanswered")
    )
    lost_answer_rate: float = field(
        default=0.0,
        metadata=_help(
            "share of successful writes carried out but answered 500 or dropped (seeded)"
        ),
    )
    propagation_delay: float = field(
        default=0.0,
        metadata=_help("seconds before direct and group assignment writes show on reads"),
    )
    roles: tuple[str, ...] = field(
        default=("teams_admin",),
        metadata=_help(
            "directory roles of the app: teams_admin, global_admin, global_reader (none: 403s); "
            "a change applies to tokens issued afterwards, as in Entra"
        ),
    )
    page_size: int = field(
        default=1000, metadata=_help("users per page on /Teams.User/users (the largest $top)")
    )
    host: str = field(default="127.0.0.1", metadata=_help("address to listen on"))
    port: int = field(default=0, metadata=_help("port to listen on (0: any free port)"))

    def __post_init__(self) -> None:
        self.roles = tuple(self.roles)
        validate(self)


def validate(cfg: SandboxConfig) -> None:
    """``ValueError`` naming the knob when a value makes no sense."""
    unknown = [r for r in cfg.roles if r not in ROLE_TEMPLATE_IDS]
    if unknown:
        raise ValueError(
            f"unknown role(s) {', '.join(unknown)}; choose from {', '.join(ROLE_TEMPLATE_IDS)}"
        )
    for name in ("latency", "propagation_delay"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be >= 0")
    for name in ("fault_rate", "drop_rate", "lost_answer_rate"):
        if not 0 <= getattr(cfg, name) <= 1:
            raise ValueError(f"{name} must be between 0 and 1")
    if cfg.direct_share is not None and not 0 <= cfg.direct_share <= 1:
        raise ValueError("direct_share must be between 0 and 1")
    if cfg.throttle_rps is not None and cfg.throttle_rps <= 0:
        raise ValueError("throttle_rps must be > 0 (or None for no limit)")
    if cfg.throttle_burst is not None and cfg.throttle_burst < 1:
        raise ValueError("throttle_burst must be >= 1")
    if cfg.users < 0:
        raise ValueError("users must be >= 0")
    if cfg.page_size < 1:
        raise ValueError("page_size must be >= 1")
    if cfg.group_assignments is not None and cfg.group_assignments > MAX_GROUP_ASSIGNMENTS:
        raise ValueError(
            f"group_assignments must be <= {MAX_GROUP_ASSIGNMENTS} (the service's limit per "
            "policy type)"
        )


def option_fields() -> list[dataclasses.Field[Any]]:
    """The fields with their help texts, in declaration order (for building CLI options)."""
    return list(dataclasses.fields(SandboxConfig))
