"""A YAML loader that remembers where every key and value was written, refuses duplicate keys and
unsafe tags, and stays fast on large files.

PyYAML's own composer is slow (about 4 s for 100,000 two-key mappings) and silently keeps the
last of two duplicate keys. This module reads libyaml's event stream (about 10x faster) and builds
plain ``dict``/``list`` subclasses that carry ``(line, column)`` positions, 1-based.
"""

from __future__ import annotations

import json
import math
import re
import reprlib
from dataclasses import dataclass
from typing import Any, NoReturn

import yaml
import yaml.constructor
import yaml.resolver

try:  # libyaml when present; the pure-Python parser gives the same events, only slower
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader

Pos = tuple[int, int]

_SAFE_TAG_PREFIX = "tag:yaml.org,2002:"
_SAFE_TAGS = {
    _SAFE_TAG_PREFIX + t
    for t in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp", "binary")
}


class LocMap(dict[Any, Any]):
    """A mapping that knows where it, each key and each value were written. Slots, not a
    ``__dict__``: a large file builds 100,000 of these, and that halves what each one costs."""

    __slots__ = ("key_pos", "pos", "value_pos")
    pos: Pos
    key_pos: dict[Any, Pos]
    value_pos: dict[Any, Pos]


class LocList(list[Any]):
    __slots__ = ("item_pos", "pos")
    pos: Pos
    item_pos: list[Pos]


@dataclass(frozen=True)
class YamlProblem:
    pos: Pos
    message: str


class _Constructor(yaml.constructor.SafeConstructor):
    pass


_resolver = yaml.resolver.Resolver()
_constructor = _Constructor()
_STR_TAG = _SAFE_TAG_PREFIX + "str"
_MAP_TAG = _SAFE_TAG_PREFIX + "map"
_SEQ_TAG = _SAFE_TAG_PREFIX + "seq"
_MERGE_TAG = _SAFE_TAG_PREFIX + "merge"


_IMPLICIT_FIRST_CHARS = frozenset(
    ch for ch in yaml.resolver.Resolver.yaml_implicit_resolvers if ch is not None
)


def _scalar(event: yaml.ScalarEvent, pos: Pos, problems: list[YamlProblem]) -> Any:
    """The value of a scalar that needs resolving or has an explicit tag. A value its tag cannot
    read (``!!int abc``, ``!!bool maybe``, ``!!map x``, ``2024-13-45``) is a problem at its
    position; its text is kept, so the rest of the file is still checked."""
    tag = event.tag
    if tag is None or tag == "!":
        value = event.value
        if event.style or (value and value[0] not in _IMPLICIT_FIRST_CHARS):
            return value  # quoted, or plain text no implicit type can start with
        tag = _resolver.resolve(yaml.ScalarNode, value, event.implicit)
    if tag == _STR_TAG:
        return event.value
    if tag == _MERGE_TAG:
        # Returned as text, so the key is reported as unknown with its position.
        return event.value
    if tag in _CONTAINER_TAGS:
        problems.append(
            YamlProblem(
                pos,
                f"value {shown(event.value)} is tagged {_short(tag)}, which needs "
                f"{_CONTAINER_TAGS[tag]}: remove the tag",
            )
        )
        return event.value
    node = yaml.ScalarNode(tag, event.value, None, None, event.style)
    try:
        return _constructor.construct_object(node, deep=True)
    except Exception:  # PyYAML's constructors fail on bad text with any of six exception types
        problems.append(
            YamlProblem(
                pos,
                f"value {shown(event.value)} is not a valid {_short(tag)}: correct it, or quote "
                "it (without the tag) to keep it as text",
            )
        )
        return event.value
    finally:
        # The shared constructor memoizes every node it builds: forget them, or a long-lived
        # process (serve loads the file on every run) grows without end (scripts/soak.py).
        _constructor.constructed_objects.clear()


_CONTAINER_TAGS = {_SAFE_TAG_PREFIX + "map": "a mapping", _SAFE_TAG_PREFIX + "seq": "a list"}


def _short(tag: str) -> str:
    return "!!" + tag[len(_SAFE_TAG_PREFIX) :] if tag.startswith(_SAFE_TAG_PREFIX) else tag


_REPR = reprlib.Repr()
_REPR.maxstring = 60
_REPR.maxother = 60


def shown(value: Any) -> str:
    """A value as messages show it: short, never a Python class name, never a traceback for a
    deeply nested or huge value."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    try:
        return _REPR.repr(value)
    except (ValueError, RecursionError):  # an int past Python's digit limit
        return f"a {type(value).__name__}"


def described(value: Any, *, json_words: bool = False) -> str:
    """What a value is, for messages: "a mapping" (JSON: "an object"), "a list", "empty"
    (JSON: "null"), or its type and value shown short (JSON: true and false as such)."""
    if isinstance(value, dict):
        return "an object" if json_words else "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null" if json_words else "empty"
    if json_words and isinstance(value, bool):
        return "true" if value else "false"
    return f"{type(value).__name__} {shown(value)}"


def load(text: str) -> tuple[Any, list[YamlProblem]]:
    """Parse ``text``; returns the document (``None`` when empty) and the problems found (duplicate
    keys, unsafe tags). Raises ``yaml.YAMLError`` (with a mark) for syntax errors.

    One tight loop over the events: this runs once per scalar of a file that can hold 100,000
    user assignments, so it avoids helper calls on the common path.
    """
    problems: list[YamlProblem] = []
    anchors: dict[str, Any] = {}
    stack: list[Any] = []  # containers being built
    keys: list[Any] = []  # per open mapping: the key waiting for its value, or _NO_KEY
    root: Any = None
    documents = 0
    implicit_first = _IMPLICIT_FIRST_CHARS

    loader = _Loader(text)
    try:
        while True:
            event = loader.get_event()
            kind = type(event)
            if kind is _ScalarEvent:
                mark = event.start_mark
                pos = (mark.line + 1, mark.column + 1)
                tag = event.tag
                if tag is None and (
                    event.style or (event.value and event.value[0] not in implicit_first)
                ):
                    value: Any = event.value
                elif tag and tag != "!" and tag not in _SAFE_TAGS:
                    problems.append(_refused(tag, pos))
                    value = event.value
                else:
                    value = _scalar(event, pos, problems)
                if event.anchor:
                    anchors[event.anchor] = value
            elif kind is _MappingStartEvent or kind is _SequenceStartEvent:
                mark = event.start_mark
                pos = (mark.line + 1, mark.column + 1)
                tag = event.tag
                if tag and tag != "!":
                    if tag not in _SAFE_TAGS:
                        problems.append(_refused(tag, pos))
                    elif tag != (_MAP_TAG if kind is _MappingStartEvent else _SEQ_TAG):
                        what = "mapping" if kind is _MappingStartEvent else "list"
                        problems.append(
                            YamlProblem(
                                pos, f"a {what} cannot be tagged {_short(tag)}: remove the tag"
                            )
                        )
                if kind is _MappingStartEvent:
                    container: Any = LocMap()
                    container.key_pos = {}
                    container.value_pos = {}
                else:
                    container = LocList()
                    container.item_pos = []
                container.pos = pos
                if event.anchor:
                    anchors[event.anchor] = container
                stack.append(container)
                keys.append(_NO_KEY)
                continue
            elif kind is _MappingEndEvent or kind is _SequenceEndEvent:
                value = stack.pop()
                keys.pop()
                pos = value.pos
            elif kind is _AliasEvent:
                mark = event.start_mark
                pos = (mark.line + 1, mark.column + 1)
                if event.anchor in anchors:
                    value = anchors[event.anchor]
                else:
                    problems.append(YamlProblem(pos, f"unknown alias *{event.anchor}"))
                    value = None
            elif event is None or kind is _StreamEndEvent:
                break
            elif kind is _DocumentStartEvent:
                documents += 1
                if documents > 1:
                    mark = event.start_mark
                    pos = (mark.line + 1, mark.column + 1)
                    # Keeping only one of several documents would silently drop the others (a
                    # prune: in one and the policies in another would delete every policy).
                    problems.append(
                        YamlProblem(
                            pos,
                            "a second YAML document starts here ('---'): a desired-state file is "
                            "one document; merge them into one or split them into separate files",
                        )
                    )
                    break
                continue
            else:  # stream start, document end
                continue

            # Attach the finished value to its parent.
            if not stack:
                root = value
                continue
            parent = stack[-1]
            if type(parent) is LocList:
                parent.append(value)
                parent.item_pos.append(pos)
                continue
            key = keys[-1]
            if key is _NO_KEY:  # a key: its position is kept now, the first one's if repeated
                if type(value) is str and value not in parent:  # the common case, inline
                    parent.key_pos[value] = pos
                else:
                    value = _as_key(value, pos, parent, problems)
                    parent.key_pos.setdefault(value, pos)
                keys[-1] = value
            else:
                parent[key] = value
                parent.value_pos[key] = pos
                keys[-1] = _NO_KEY
    finally:
        loader.dispose()
    return root, problems


_NO_KEY = object()
_ScalarEvent = yaml.ScalarEvent
_MappingStartEvent = yaml.MappingStartEvent
_SequenceStartEvent = yaml.SequenceStartEvent
_MappingEndEvent = yaml.MappingEndEvent
_SequenceEndEvent = yaml.SequenceEndEvent
_AliasEvent = yaml.AliasEvent
_DocumentStartEvent = yaml.DocumentStartEvent
_StreamEndEvent = yaml.StreamEndEvent


def _refused(tag: str, pos: Pos) -> YamlProblem:
    return YamlProblem(
        pos,
        f"YAML tag {tag!r} is refused: desired-state files hold plain data only "
        "(no !!python/... or custom tags)",
    )


def _as_key(value: Any, pos: Pos, parent: LocMap, problems: list[YamlProblem]) -> Any:
    if isinstance(value, LocMap | LocList):
        problems.append(YamlProblem(pos, "a mapping or list cannot be a key"))
        value = f"<{shown(value)} at line {pos[0]}>"
    try:
        hash(value)
    except TypeError:
        value = f"<{shown(value)} at line {pos[0]}>"
    if value in parent:
        first = parent.key_pos[value]
        existing = next(k for k in parent if k == value)
        if type(existing) is not type(value):
            # true, 1 and 1.0 are one key once loaded: say which two keys met, not "duplicate".
            problems.append(
                YamlProblem(
                    pos,
                    f"key {shown(value)} and key {shown(existing)} (line {first[0]}) are the same "
                    "key once loaded (true equals 1, false equals 0): quote the keys to keep "
                    "them as text",
                )
            )
            return value
        problems.append(
            YamlProblem(
                pos,
                f"duplicate key {shown(value)} (first written at line {first[0]}); "
                "YAML would silently keep only the last one: remove or merge one",
            )
        )
    return value


# --------------------------------------------------------------------------- JSON

_JSON_WS = re.compile(r"[ \t\n\r]*")
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_JSON_LITERALS = {"true": True, "false": False, "null": None}


def _json_number(m: re.Match[str], pos: Pos, problems: list[YamlProblem]) -> Any:
    """A JSON number as int or float. One Python cannot hold (an integer of more digits than
    ``int()`` converts, about 4,300; a float beyond 1.8e308) is a problem at its position, and
    the text is kept, as for a YAML value that is not valid."""
    number = m.group()
    try:
        value = float(number) if m.group(1) or m.group(2) else int(number)
    except ValueError:
        value = None
    if value is None or value in (math.inf, -math.inf):
        problems.append(
            YamlProblem(
                pos,
                f"number {shown(number)} ({len(number)} characters) is too large to read: "
                "correct it, or quote it to keep it as text",
            )
        )
        return number
    return value


def load_json(text: str) -> tuple[Any, list[YamlProblem]]:
    """Parse JSON ``text`` with JSON's own rules (``"\\ud83d\\ude00"`` is one emoji, ``1e5`` a
    number), building the same positioned containers as ``load`` and reporting duplicate keys the
    same way. Raises ``json.JSONDecodeError`` (with line and column) for text that is not JSON.

    JSON is YAML 1.2 but not YAML 1.1, which PyYAML reads: it refuses surrogate-pair escapes and
    reads 1e5 as text. An explicit stack instead of recursion keeps deep nesting from crashing.
    """
    problems: list[YamlProblem] = []
    n = len(text)
    line, line_start = 1, 0
    stack: list[Any] = []
    keys: list[Any] = []  # per open mapping: (key, pos) waiting for its value
    scanstring = json.decoder.scanstring  # type: ignore[attr-defined]

    def skip(i: int) -> int:
        nonlocal line, line_start
        end = _JSON_WS.match(text, i).end()  # type: ignore[union-attr]
        newlines = text.count("\n", i, end)
        if newlines:
            line += newlines
            line_start = text.rindex("\n", i, end) + 1
        return end

    def fail(message: str, i: int) -> NoReturn:
        raise json.JSONDecodeError(message, text, i)

    def key_at(i: int, parent: LocMap) -> int:
        # A key, then ':' ; returns the index of the value.
        if i >= n or text[i] != '"':
            fail("expected a key in double quotes", i)
        kpos = (line, i - line_start + 1)
        key, i = scanstring(text, i + 1, True)
        keys[-1] = (_as_key(key, kpos, parent, problems), kpos)
        i = skip(i)
        if i >= n or text[i] != ":":
            fail("expected ':' after the key", i)
        return skip(i + 1)

    i = skip(0)
    while True:
        # A value starts at i.
        if i >= n:
            fail("expected a value", i)
        pos = (line, i - line_start + 1)
        ch = text[i]
        value: Any
        if ch == "{" or ch == "[":
            if ch == "{":
                container: Any = LocMap()
                container.key_pos = {}
                container.value_pos = {}
            else:
                container = LocList()
                container.item_pos = []
            container.pos = pos
            i = skip(i + 1)
            if i < n and text[i] == ("}" if ch == "{" else "]"):
                value = container
                i += 1
            else:
                stack.append(container)
                keys.append(None)
                if ch == "{":
                    i = key_at(i, container)
                continue
        elif ch == '"':
            value, i = scanstring(text, i + 1, True)
        else:
            m = _JSON_NUMBER.match(text, i)
            if m:
                value = _json_number(m, pos, problems)
                i = m.end()
            else:
                word = next((w for w in _JSON_LITERALS if text.startswith(w, i)), None)
                if word is None:
                    fail("expected a value", i)
                value = _JSON_LITERALS[word]
                i += len(word)

        # Attach the finished value; close every container that ends here.
        while True:
            if not stack:
                i = skip(i)
                if i < n:
                    fail("extra data after the JSON document", i)
                return value, problems
            parent = stack[-1]
            if type(parent) is LocList:
                parent.append(value)
                parent.item_pos.append(pos)
                close = "]"
            else:
                k, kpos = keys[-1]
                parent[k] = value
                parent.key_pos.setdefault(k, kpos)
                parent.value_pos[k] = pos
                close = "}"
            i = skip(i)
            if i < n and text[i] == ",":
                i = skip(i + 1)
                if close == "}":
                    i = key_at(i, parent)
                break
            if i < n and text[i] == close:
                i += 1
                value = stack.pop()
                keys.pop()
                pos = value.pos
                continue
            fail(f"expected ',' or '{close}'", i)


# --------------------------------------------------------------------------- strict JSON files

# Nesting no teams-bridge file comes near (a snapshot is 4 levels deep): reported as the place a
# file is nested too deeply when Python's recursion limit stopped reading or using it.
NESTING_SHOWN = 100
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


class JsonFileError(ValueError):
    """A JSON file that is not JSON, or holds what JSON does not allow and Python would take
    (NaN, Infinity, 1e999, an integer of 5,000 digits), or is nested too deeply. ``line`` and
    ``column`` are 1-based (0 when unknown); ``str()`` is the message alone."""

    def __init__(self, message: str, line: int = 0, column: int = 0):
        super().__init__(message)
        self.message, self.line, self.column = message, line, column

    def where(self, source: str) -> str:
        return f"{source}:{self.line}:{self.column}" if self.line else source


class _NotJson(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON value (JSON numbers are finite)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotJson(f"number {shown(text)} is too large to read")
    return value


def parse_json(text: str) -> Any:
    """``json.loads`` at C speed, but strict: NaN, Infinity and numbers beyond what Python holds
    are refused, and every failure is a ``JsonFileError`` with the line and column (found again
    with ``load_json``, which reads the same text without recursion, only when reading failed)."""
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise JsonFileError(f"not valid JSON: {exc.msg}", exc.lineno, exc.colno) from None
    except RecursionError:
        raise too_deep(text) from None
    except ValueError as exc:  # a constant, a huge float, an int past int()'s digit limit
        line, column, message = 0, 0, str(exc)
        try:
            _, problems = load_json(text)
        except json.JSONDecodeError as again:
            line, column = again.lineno, again.colno
        else:
            if problems:
                (line, column), message = problems[0].pos, problems[0].message
        raise JsonFileError(message, line, column) from None


def too_deep(text: str) -> JsonFileError:
    """The error for a JSON text nested too deeply to read or use, at the bracket that opens
    level ``NESTING_SHOWN``."""
    depth = 0
    for m in _JSON_TOKEN.finditer(text):
        ch = m.group()
        if ch in "[{":
            depth += 1
            if depth > NESTING_SHOWN:
                line = text.count("\n", 0, m.start()) + 1
                column = m.start() - (text.rfind("\n", 0, m.start()) + 1) + 1
                return JsonFileError(
                    f"nested more than {NESTING_SHOWN} levels deep: not a teams-bridge file",
                    line,
                    column,
                )
        elif ch in "]}":
            depth -= 1
    return JsonFileError("nested too deeply to read: not a teams-bridge file")


def json_position(text: str, path: tuple[Any, ...]) -> tuple[int, int] | None:
    """Where the value at ``path`` (keys and list indexes from the top) was written in the JSON
    ``text``, or None. Reads the file again with positions: call it on the error path only."""
    try:
        node: Any = load_json(text)[0]
    except (json.JSONDecodeError, RecursionError):
        return None
    pos: tuple[int, int] | None = getattr(node, "pos", None)
    for step in path:
        if isinstance(node, LocMap) and step in node:
            pos, node = node.value_pos[step], node[step]
        elif isinstance(node, LocList) and isinstance(step, int) and 0 <= step < len(node):
            pos, node = node.item_pos[step], node[step]
        else:
            break
    return pos


def decode_utf8(data: bytes) -> tuple[str | None, tuple[int, int, int]]:
    """``data`` as text (a UTF-8 BOM dropped), or None with the line, column and value of the
    first byte that is not UTF-8."""
    try:
        return data.decode("utf-8-sig"), (0, 0, 0)
    except UnicodeDecodeError as exc:
        bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
        start = exc.start + bom if exc.object is not data else exc.start
        before = data[bom:start].decode("utf-8", "replace")
        line = before.count("\n") + 1
        return None, (line, len(before) - (before.rfind("\n") + 1) + 1, data[start])


def too_nested(value: Any, limit: int) -> tuple[Any, ...] | None:
    """The path (keys and indexes) to the first container nested more than ``limit`` levels
    inside ``value``, or None. Iterative, so any depth is safe to look at; containers only."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ())]
    while stack:
        node, path = stack.pop()
        if len(path) > limit:
            return path
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            if isinstance(child, dict | list):
                stack.append((child, (*path, key)))
    return None


# --------------------------------------------------------------------------- regular user lists
# A desired file can list 100,000 users as
#
#       - user: someone@example.org
#         policy: Clinical
#
# libyaml alone takes about half a second to turn that into events, and each event then costs a
# Python step. ``load_desired_text`` recognises that one regular shape in the text (each entry
# exactly those two lines, the values plain words or double-quoted text without escapes), reads
# it with two regular expressions, and parses the rest of the file as YAML. The entries are kept
# as rows in a ``UserRows`` list, which turns them into positioned mappings only when asked
# (``materialize``), e.g. to report an error at its line and column. Anything else, anywhere,
# and the whole file is read the usual way.

FAST_USERS_MIN = 64  # fewer entries are not worth the detour
_STR_TAG = _SAFE_TAG_PREFIX + "str"
_MARKER = "teams-bridge-regular-users-8c1f"
# Text YAML reads the same in double quotes or plain: no escape, quote, control character, line
# break (YAML's too: NEL, LS, PS), surrogate, BOM or non-character.
_DQ = r'"[^"\\\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]*"'
# Plain words: no leading indicator, no ': ', no ' #', no trailing space, ASCII only.
_PLAIN = r"[A-Za-z0-9_.@+][A-Za-z0-9_.@+'-]*(?: [A-Za-z0-9_.@+'-]+)*"
_VALUE = f"(?:{_DQ}|{_PLAIN})"
_USERS_KEY = re.compile(r"^( *)users:\n(?=( *)- user: )", re.M)
_resolver = yaml.resolver.Resolver()


class UserRows(LocList):
    """``assignments.users`` read by the fast path: ``rows`` of (user, policy) text, entry ``k``
    on lines ``first_line + 2k`` and ``+1``, its dash in column ``indent + 1``. Empty as a list
    until ``materialize`` fills it with the mappings ``load`` would have built."""

    __slots__ = ("first_line", "indent", "rows")
    rows: list[tuple[str, str]]
    first_line: int
    indent: int

    def entry(self, k: int) -> LocMap:
        """Entry ``k`` as ``load`` builds it, positions included."""
        user, policy = self.rows[k]
        line, col = self.first_line + 2 * k, self.indent + 3
        m = LocMap(user=user, policy=policy)
        m.pos = (line, col)
        m.key_pos = {"user": (line, col), "policy": (line + 1, col)}
        m.value_pos = {"user": (line, col + 6), "policy": (line + 1, col + 8)}
        return m

    def materialize(self) -> None:
        if len(self) == len(self.rows):
            return
        self.clear()
        self.item_pos = []
        for k in range(len(self.rows)):
            m = self.entry(k)
            self.append(m)
            self.item_pos.append(m.pos)


def load_desired_text(text: str) -> tuple[Any, list[YamlProblem]]:
    """``load``, with a regular ``users:`` list read fast (see above); the same document and
    problems as ``load`` gives, except that such a list is a ``UserRows``."""
    fast = _regular_users(text)
    if fast is None:
        return load(text)
    start, end, rows, first_line, indent = fast
    # The entries' lines become one marker entry and blank lines: every other line keeps its
    # number and column.
    lines = text.count("\n", start, end)
    spliced = text[:start] + " " * indent + f"- {_MARKER}\n" + "\n" * (lines - 1) + text[end:]
    try:
        doc, problems = load(spliced)
    except yaml.YAMLError:
        return load(text)
    target = _marked_list(doc)
    if problems or target is None or target.item_pos[0] != (first_line, indent + 3):
        return load(text)  # not where a regular list can be: read it all the usual way
    parent, key, found = target.parent, target.key, target.found
    users = UserRows()
    users.pos = found.pos
    users.item_pos = []
    users.rows = rows
    users.first_line = first_line
    users.indent = indent
    parent[key] = users
    return doc, problems


class _Found:
    __slots__ = ("found", "item_pos", "key", "parent")

    def __init__(self, parent: LocMap, key: str, found: LocList):
        self.parent, self.key, self.found = parent, key, found
        self.item_pos = found.item_pos


def _marked_list(doc: Any) -> _Found | None:
    """``doc["assignments"]["users"]`` when it is exactly the marker entry; None otherwise."""
    if type(doc) is not LocMap:
        return None
    assignments = doc.get("assignments")
    if type(assignments) is not LocMap:
        return None
    users = assignments.get("users")
    if type(users) is not LocList or users != [_MARKER]:
        return None
    return _Found(assignments, "users", users)


def _regular_users(text: str) -> tuple[int, int, list[tuple[str, str]], int, int] | None:
    """Where a regular ``users:`` list is in ``text``: (start, end) of its entries' lines, the
    rows, the first entry's line and the dashes' indentation; None when there is none."""
    key = _USERS_KEY.search(text)
    if key is None:
        return None
    indent = len(key.group(2))
    if indent < len(key.group(1)):
        return None
    pad = " " * indent
    entry = f"{pad}- user: ({_VALUE})\n{pad}  policy: ({_VALUE})\n"
    start = key.end()
    run = re.compile(f"(?:{entry})+").match(text, start)
    if run is None:
        return None
    end = run.end()
    # The next line must end the last entry: text no deeper than the dashes (a deeper line, even
    # after blank ones, would be one of its keys).
    if end < len(text):
        line_end = text.find("\n", end)
        line = text[end : line_end if line_end >= 0 else len(text)]
        body = line.lstrip(" ")
        if not body or body[0] in "#\t\r" or len(line) - len(body) > indent:
            return None
    block = text[start:end]
    rows: list[tuple[str, str]] = re.findall(entry, block)
    if len(rows) < FAST_USERS_MIN:
        return None
    # Plain words that could be something other than text: each distinct one asked once.
    implicit = _IMPLICIT_FIRST_CHARS
    doubtful = {p for _, p in rows if p[0] in implicit}
    doubtful.update(u for u, _ in rows if u[0] in implicit and "@" not in u)
    words: dict[str, bool] = {}
    if any(_text(value, words) is None for value in doubtful):
        return None
    if '"' in block:
        rows = [(u[1:-1] if u[0] == '"' else u, p[1:-1] if p[0] == '"' else p) for u, p in rows]
    first_line = text.count("\n", 0, start) + 1
    return start, end, rows, first_line, indent


def _text(value: str, words: dict[str, bool]) -> Any:
    """A matched value as the text YAML reads, or None when a plain word is not text there
    (``yes``, ``null``, ``1e5``, a date)."""
    if value[0] == '"':
        return value[1:-1]
    if "@" in value or value[0] not in _IMPLICIT_FIRST_CHARS:
        return value  # no implicit type (bool, number, null, date) has an '@' in it
    ok = words.get(value)
    if ok is None:
        ok = words[value] = (
            _resolver.resolve(yaml.nodes.ScalarNode, value, (True, False)) == _STR_TAG
        )
    return value if ok else None
