"""The answer shapes the contract suite runs the REST transport through: sandbox knobs per shape
a public source records (docs/wire.md, "Answer shapes")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WARNING = "The policy was saved; some settings take up to 24 hours to apply."


@dataclass(frozen=True)
class Shape:
    """Sandbox knobs for one answer shape a public source records (docs/wire.md), and what the
    shape changes: ``read`` (group assignments, users, pages), ``users`` (user pages and rows),
    ``groups`` (group assignment rows) or ``policy_writes`` (PUT/POST answers)."""

    knobs: dict[str, Any]
    touches: frozenset[str]


def _shape(touches: str, **knobs: Any) -> Shape:
    return Shape(knobs, frozenset(touches.split()))


# The REST transport runs the contract through each of these as well as the default shape.
SHAPES = {
    "rest:group_keys=camel": _shape("read groups", group_keys="camel"),
    "rest:group_keys=priority": _shape("read groups", group_keys="priority"),
    "rest:paging=nextLink": _shape("read users", paging="nextLink", page_size=23),
    "rest:paging=NextLink": _shape("read users", paging="NextLink", page_size=23),
    "rest:paging=skipToken": _shape(
        "read users", paging="skipToken", page_size=23, user_count="@odata.count"
    ),
    "rest:paging=SkipToken": _shape("read users", paging="SkipToken", page_size=23),
    "rest:paging=$skiptoken": _shape(
        "read users", paging="$skiptoken", page_size=23, user_count="totalCount"
    ),
    "rest:user_rows=camel": _shape("read users", user_rows="camel", user_count="Count"),
    "rest:user_rows=effective": _shape("read users", user_rows="effective", page_size=41),
    "rest:write_answer=array": _shape("policy_writes", write_answer="array"),
    "rest:write_answer=empty": _shape("policy_writes", write_answer="empty"),
    "rest:write_answer=no_content": _shape("policy_writes", write_answer="no_content"),
    "rest:warning": _shape("policy_writes groups", warning=WARNING),
    "rest:compression=br": _shape("read policy_writes", compression="br"),
    "rest:compression=br-unprompted": _shape("read users", compression="br-unprompted"),
}
