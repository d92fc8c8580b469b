"""The fast path for a regular ``users:`` list (``yamlloc.load_desired_text`` and
``desired._validate_user_rows``) gives exactly what the full reader gives: the same state, the
same problems at the same file:line:column, on every input, the regular shape or not."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bridge.desired as desired
from bridge import yamlloc
from bridge.errors import DesiredStateError
from bridge.yamlloc import FAST_USERS_MIN, UserRows, load, load_desired_text

HEAD = """policies:
  Clinical:
    AllowGiphy: false
  Support Staff:
    AllowGiphy: true
  "yes":
    AllowGiphy: true
assignments:
  groups:
    - group: Nursing
      policy: Clinical
  users:
"""


def users_block(entries: list[tuple[str, str]], indent: int = 4) -> str:
    pad = " " * indent
    return "".join(f"{pad}- user: {u}\n{pad}  policy: {p}\n" for u, p in entries)


def regular(n: int = FAST_USERS_MIN, **changes: tuple[str, str]) -> list[tuple[str, str]]:
    rows = [
        (f"user{i:04d}@contoso.org", "Clinical" if i % 3 else '"Support Staff"') for i in range(n)
    ]
    for index, row in changes.items():
        rows[int(index.removeprefix("at"))] = row
    return rows


def outcome(text: str, *, fast: bool) -> tuple[Any, list[str]]:
    """(state without its source, problems) as parse_desired gives them, either way."""
    saved = desired.load_desired_text
    if not fast:
        desired.load_desired_text = load  # type: ignore[assignment]
    try:
        state = desired.parse_desired(text, "f.yaml")
    except DesiredStateError as exc:
        return None, [str(p) for p in exc.problems]
    finally:
        desired.load_desired_text = saved  # type: ignore[assignment]
    return state, list(state.notes)


def same(text: str) -> tuple[Any, list[str]]:
    fast, full = outcome(text, fast=True), outcome(text, fast=False)
    assert fast == full
    return fast


def test_a_regular_list_is_read_fast_with_the_positions_the_full_reader_gives():
    text = HEAD + users_block(regular()) + "prune:\n  policies: false\n"
    doc, problems = load_desired_text(text)
    users = doc["assignments"]["users"]
    assert type(users) is UserRows and len(users) == 0 and not problems  # rows, not mappings
    full, _ = load(text)
    users.materialize()
    assert users == full["assignments"]["users"]
    assert users.pos == full["assignments"]["users"].pos
    assert users.item_pos == full["assignments"]["users"].item_pos
    for mine, theirs in zip(users, full["assignments"]["users"], strict=True):
        assert (mine.pos, mine.key_pos, mine.value_pos) == (
            theirs.pos,
            theirs.key_pos,
            theirs.value_pos,
        )
    state, _ = same(text)
    assert len(state.user_assignments) == FAST_USERS_MIN
    assert state.user_assignments[1].location.line == 15  # HEAD is 12 lines


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(
            HEAD + users_block(regular(at3=("user0001@contoso.org", "Clinical"))), id="twice"
        ),
        pytest.param(
            HEAD + users_block(regular(at5=("a@contoso.org", "Nope"))), id="unknown-policy"
        ),
        pytest.param(HEAD + users_block(regular(at5=("a@contoso.org", "Global"))), id="global"),
        pytest.param(HEAD + users_block(regular(at5=('""', "Clinical"))), id="empty-user"),
        pytest.param(
            HEAD + users_block(regular(at5=('" a@contoso.org "', "Clinical"))), id="spaces"
        ),
        pytest.param(HEAD + users_block(regular(at5=("a@contoso.org", "yes"))), id="bool-policy"),
        pytest.param(HEAD + users_block(regular(at5=("a@contoso.org", '"yes"'))), id="quoted-yes"),
        pytest.param(HEAD + users_block(regular(at5=("2001-01-01", "Clinical"))), id="date-user"),
        pytest.param(HEAD + users_block(regular(at5=("null", "Clinical"))), id="null-user"),
        pytest.param(HEAD + users_block(regular(at0=("a@contoso.org", "clinical"))), id="casing"),
        pytest.param(HEAD + users_block(regular()) + "      ensure: absent\n", id="deeper-after"),
        pytest.param(
            HEAD + users_block(regular()) + "\n      ensure: absent\n", id="blank-then-deeper"
        ),
        pytest.param(HEAD + users_block(regular()) + "    # done\n", id="comment-after"),
        pytest.param(
            HEAD + users_block(regular()) + "    - user: z@contoso.org\n", id="irregular-after"
        ),
        pytest.param(HEAD + users_block(regular()).rstrip("\n"), id="no-final-newline"),
        pytest.param(HEAD + users_block(regular()) + "  users: []\n", id="duplicate-key"),
        pytest.param(HEAD + users_block(regular()) + "prune: maybe\n", id="error-elsewhere"),
        pytest.param(
            HEAD.replace("  users:\n", "  users:\n") + users_block(regular(), 2), id="indentless"
        ),
        pytest.param(
            HEAD.replace("assignments:", "notes: |\n  users:\nassignments:")
            + users_block(regular()),
            id="users-in-a-literal-before",
        ),
        pytest.param(
            "notes: |\n  users:\n" + users_block(regular(), 4) + HEAD, id="inside-a-literal"
        ),
        pytest.param(
            HEAD.replace("assignments:", "elsewhere:") + users_block(regular()),
            id="not-assignments",
        ),
        pytest.param((HEAD + users_block(regular())).replace("\n", "\r\n"), id="crlf"),
        pytest.param(
            HEAD + users_block(regular(at5=("&a a@contoso.org", "Clinical"))), id="anchor"
        ),
        pytest.param(HEAD + users_block(regular(FAST_USERS_MIN - 1)), id="short"),
        pytest.param(
            HEAD + users_block(regular(at5=("a@contoso.org", "Clinical # x"))), id="comment"
        ),
        pytest.param(
            HEAD + users_block(regular(at5=('"a\\u0041@x.org"', "Clinical"))), id="escape"
        ),
    ],
)
def test_every_other_input_reads_exactly_as_the_full_reader_reads_it(text):
    same(text)


def test_an_error_in_a_regular_list_keeps_its_file_line_and_column():
    text = HEAD + users_block(regular(at7=("a@contoso.org", "Nope")))
    _, problems = same(text)
    line = HEAD.count("\n") + 1 + 2 * 7 + 1
    assert any(p.startswith(f"f.yaml:{line}:15: ") and "'Nope'" in p for p in problems)


WORDS = [
    "a@x.org",
    "B@x.org",
    '"a@x.org"',
    "yes",
    '"yes"',
    "Clinical",
    '"Support Staff"',
    "Nope",
    "Global",
    "null",
    "1e5",
    '""',
    "x y",
    "2001-01-01",
    "Support Staff",
]


@settings(max_examples=60, deadline=None)  # 60 files of 64 entries, read both ways: 0.3 s
@given(
    st.lists(st.tuples(st.sampled_from(WORDS), st.sampled_from(WORDS)), max_size=6),
    st.integers(0, FAST_USERS_MIN - 1),
)
def test_property_fast_and_full_readers_agree(changes, where):
    rows = regular()
    for n, row in enumerate(changes):
        rows[(where + 7 * n) % len(rows)] = row
    same(HEAD + users_block(rows))


def test_the_fast_reader_is_used_on_the_regular_shape(monkeypatch):
    calls: list[int] = []
    real = yamlloc.UserRows.materialize
    monkeypatch.setattr(yamlloc.UserRows, "materialize", lambda self: calls.append(1) or real(self))
    desired.parse_desired(HEAD + users_block(regular(500)), "f.yaml")
    assert calls == []  # checked in the tight loop: no mappings built
