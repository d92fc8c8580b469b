"""``powershell_driver.ps1`` is parsed with a real PowerShell grammar (tree-sitter-powershell), so a
syntax error in the driver fails the suite instead of every PowerShell run on a real machine (no
pwsh runs here; the fake pwsh only reads the driver's traits).

tree-sitter recovers from errors instead of stopping: a syntax error shows as an ``ERROR`` node
(text it could not place) or a ``MISSING`` node (a token it had to invent, such as a closing
brace), anywhere in the tree, while the root still parses. So the tests walk the whole tree for
both kinds, and check on broken copies of the driver that a break is reported as one of them.
"""

from __future__ import annotations

import importlib.resources
from typing import NamedTuple

import pytest
import tree_sitter_powershell
from tree_sitter import Language, Node, Parser

DRIVER = importlib.resources.files("bridge.backends").joinpath("powershell_driver.ps1").read_bytes()
PARSER = Parser(Language(tree_sitter_powershell.language()))


class SyntaxProblem(NamedTuple):
    kind: str  # "ERROR", or "MISSING '}'"
    line: int  # 1-based
    column: int

    def __str__(self) -> str:
        return f"powershell_driver.ps1:{self.line}:{self.column}: {self.kind}"


def syntax_problems(source: bytes) -> list[SyntaxProblem]:
    """Every ERROR and MISSING node in the parse of ``source``, in file order."""
    found = []
    stack = [PARSER.parse(source).root_node]
    while stack:
        node: Node = stack.pop()
        if node.is_error or node.is_missing:
            kind = f"MISSING {node.type!r}" if node.is_missing else "ERROR"
            found.append(SyntaxProblem(kind, node.start_point[0] + 1, node.start_point[1] + 1))
        if node.has_error:  # only subtrees holding an ERROR or MISSING node are walked
            stack.extend(node.children)
    return sorted(found, key=lambda p: (p.line, p.column))


def _nodes(node: Node):
    yield node
    for child in node.children:
        yield from _nodes(child)


def test_the_driver_parses_without_a_syntax_error():
    problems = syntax_problems(DRIVER)
    assert not problems, "\n".join(map(str, problems))


def test_the_grammar_sees_the_drivers_structure():
    # A parse that skipped the text (a wrong grammar, an empty file) would also have no errors.
    tree = PARSER.parse(DRIVER).root_node
    functions = {
        child.text.decode()
        for n in _nodes(tree)
        if n.type == "function_statement"
        for child in n.children
        if child.type == "function_name"
    }
    assert {
        "Write-Answer",
        "ConvertFrom-JsonElement",
        "ConvertFrom-Request",
        "Write-Failure",
        "Find-ReservedParameter",
    } <= functions
    assert any(n.type == "while_statement" for n in _nodes(tree))


def _without_last_brace(text: bytes) -> bytes:
    assert text.endswith(b"}\n")  # the while loop's closing brace ends the driver
    return text[:-2] + b"\n"


def _replace(old: bytes, new: bytes):
    def broken(text: bytes) -> bytes:
        assert text.count(old) == 1, f"the driver no longer has one {old!r}: update this test"
        return text.replace(old, new)

    return broken


@pytest.mark.parametrize(
    ("break_", "kind"),
    [
        pytest.param(_without_last_brace, "MISSING '}'", id="last closing brace"),
        pytest.param(
            _replace(b"$ErrorActionPreference = 'Stop'", b"$ErrorActionPreference = 'Stop"),
            "ERROR",
            id="unbalanced single quote",
        ),
        pytest.param(
            _replace(b'"<<<teams-bridge:begin:$Id>>>"', b'"<<<teams-bridge:begin:$Id>>>'),
            "ERROR",
            id="unbalanced double quote",
        ),
        pytest.param(
            _replace(b"if ($null -eq $line) {", b"if ($null -eq $line {"),
            "ERROR",
            id="closing parenthesis",
        ),
        pytest.param(
            _replace(b"foreach ($word in $reserved) {", b"foreach ($word in $reserved) "),
            "ERROR",
            id="opening brace",
        ),
    ],
)
def test_a_one_character_break_is_caught(break_, kind):
    broken = break_(DRIVER)
    assert len(broken) == len(DRIVER) - 1
    problems = syntax_problems(broken)
    assert problems, "the break was not caught"
    assert problems[0].kind == kind, problems


def test_every_bracket_and_closing_quote_removed_is_caught():
    """Each bracket token of the driver's code, and each string's closing quote, deleted in turn
    (in comments and inside strings they are text, and not tried): the grammar reports all."""
    tree = PARSER.parse(DRIVER).root_node
    spans = []
    for node in _nodes(tree):
        if not node.is_named and node.type in ("{", "}", "(", ")", "]", "@(", "@{"):
            spans.append((node.start_byte, node.end_byte))
        elif node.type in ("string_literal", "expandable_string_literal"):
            spans.append((node.end_byte - 1, node.end_byte))
    assert len(spans) > 200  # the driver has ~230; fewer means the walk missed the code
    missed = []
    for start, end in spans:
        if not syntax_problems(DRIVER[:start] + DRIVER[end:]):
            line = DRIVER[:start].count(b"\n") + 1
            missed.append(f"line {line}: {DRIVER[start:end].decode()!r}")
    assert not missed, missed
