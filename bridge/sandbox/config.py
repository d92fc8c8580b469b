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

# Answer shapes the public sources record (docs/wire.md, "Answer shapes"), one knob each.
GROUP_KEYS = ("pascal", "camel", "priority")
PAGING = ("@odata.nextLink", "nextLink", "NextLink", "skipToken", "SkipToken", "$skiptoken")
USER_ROWS = ("cmdlet", "camel", "effective")
USER_COUNT_KEYS = ("@odata.count", "count", "Count", "totalCount")
WRITE_ANSWERS = ("object", "array", "empty", "no_content")
COMPRESSION = ("gzip", "br", "br-unprompted")
SHAPE_KNOBS = frozenset(
    {"group_keys", "paging", "user_rows", "user_count", "write_answer", "warning", "compression"}
)

# Knobs ``Sandbox.configure`` may change while the server runs.
LIVE_KNOBS = SHAPE_KNOBS | frozenset(
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
    group_keys: str = field(
        default="pascal",
        metadata=_help(
            "group assignment keys: pascal (GroupId, PolicyType, PolicyName, Rank, Priority), "
            "camel (groupId, policyType, policyName, rank), priority (Priority, no Rank)"
        ),
    )
    paging: str = field(
        default="@odata.nextLink",
        metadata=_help(
            "how a /Teams.User/users page names the next: a link under @odata.nextLink, "
            "nextLink or NextLink, or a bare skip token under skipToken, SkipToken or $skiptoken"
        ),
    )
    user_rows: str = field(
        default="cmdlet",
        metadata=_help(
            "user entries: cmdlet (Identity, UserPrincipalName, TeamsMessagingPolicy), camel "
            "(objectId, userPrincipalName, teamsMessagingPolicy), effective (objectId, "
            "userPrincipalName, effectivePolicyAssignments)"
        ),
    )
    user_count: str | None = field(
        default=None,
        metadata=_help(
            "report the number of users on every users page under this key (@odata.count, "
            "count, Count, totalCount; default: none)"
        ),
    )
    write_answer: str = field(
        default="object",
        metadata=_help(
            "what a policy PUT or POST answers: object, array (one element), empty (200, no "
            "body) or no_content (204)"
        ),
    )
    warning: str | None = field(
        default=None,
        metadata=_help(
            "send this text in X-Ms-ConfigApi-PowerShell-WarningMessage on every Teams write"
        ),
    )
    compression: str = field(
        default="gzip",
        metadata=_help(
            "answer compression: gzip (when asked), br (brotli when asked, else gzip when "
            "asked), br-unprompted (brotli always)"
        ),
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
    for name, allowed in (
        ("group_keys", GROUP_KEYS),
        ("paging", PAGING),
        ("user_rows", USER_ROWS),
        ("user_count", (None, *USER_COUNT_KEYS)),
        ("write_answer", WRITE_ANSWERS),
        ("compression", COMPRESSION),
    ):
        if getattr(cfg, name) not in allowed:
            choices = ", ".join(str(a) for a in allowed if a is not None)
            raise ValueError(f"{name} must be one of {choices}, not {getattr(cfg, name)!r}")
    if cfg.group_assignments is not None and cfg.group_assignments > MAX_GROUP_ASSIGNMENTS:
        raise ValueError(
            f"group_assignments must be <= {MAX_GROUP_ASSIGNMENTS} (the service's limit per "
            "policy type)"
        )


def option_fields() -> list[dataclasses.Field[Any]]:
    """The fields with their help texts, in declaration order (for building CLI options)."""
    return list(dataclasses.fields(SandboxConfig))
