"""Reading answers whose shape the services do not pin down (docs/wire.md, "Answer shapes").

Public clients of the Teams admin API record different spellings of the same answer (``Rank`` or
``Priority``, ``GroupId`` or ``groupId``, ``@odata.nextLink`` or ``NextLink``...). The readers in
``backends/`` accept every spelling a source records, and refuse anything else loudly: a row they
cannot place, or a page whose link to the next one they cannot read, is an
``InvalidResponseError`` naming the route and the field looked for, never a row dropped or a page
taken for the last (either would read as drift, and apply would "fix" it).

- ``Fields``: one answer object, its fields looked up case-insensitively under any of their known
  names. Two spellings of one field with different values is an error too: never a guess.
- ``read_page``: one page of a paged list: its items, how to reach the next page, and the count
  the service reports, if any.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from .errors import InvalidResponseError

# How pages name the next one. A link is followed as given; a bare skip token is sent back as
# ``$skiptoken`` on the same request (the OData spelling; assumed, see docs/wire.md).
# Keys match in any case: "nextLink" also reads "NextLink" (CIPP), "skipToken" "SkipToken".
NEXT_LINK_KEYS = ("@odata.nextLink", "nextLink")
SKIP_TOKEN_KEYS = ("$skiptoken", "skipToken", "@odata.skipToken")
SKIP_TOKEN_PARAM = "$skiptoken"
# The total a page may report; a read that yields fewer items than this fails.
COUNT_KEYS = ("@odata.count", "count", "totalCount")
# Any other page key is refused (it may name more pages); OData annotations are let through
# unless their name contains one of these.
_PAGING_HINTS = ("next", "skip", "continuation", "cursor", "hasmore", "moreresults")


class Fields:
    """One JSON object of an answer, read case-insensitively. ``where`` says which answer and
    which entry, for errors: ``Teams admin API answer to GET /Skype.Policy/..., entry 3,``."""

    def __init__(self, obj: Mapping[str, Any], where: str, url: str | None = None):
        self.where = where
        self.url = url
        self._by_name: dict[str, tuple[str, Any]] = {}
        for key, value in obj.items():
            folded = str(key).casefold()
            seen = self._by_name.get(folded)
            if seen is not None and seen[1] != value:
                raise self.error(f"carries both {seen[0]!r} and {key!r} with different values")
            self._by_name[folded] = (str(key), value)

    @property
    def names(self) -> list[str]:
        return sorted(key for key, _ in self._by_name.values())

    def has(self, *names: str) -> bool:
        return any(n.casefold() in self._by_name for n in names)

    def get(self, *names: str, default: Any = None) -> Any:
        """The value under the first of ``names`` present (any case), else ``default``. Two of the
        names present with different values is an error: the entry says two things."""
        found = [
            self._by_name[n]
            for n in dict.fromkeys(n.casefold() for n in names)
            if n in self._by_name
        ]
        if not found:
            return default
        key, value = found[0]
        for other_key, other in found[1:]:
            if other != value:
                raise self.error(
                    f"carries {key!r} and {other_key!r} with different values (the same field "
                    "under two names)"
                )
        return value

    def need(self, *names: str) -> Any:
        """The value under one of ``names``; absent or null is an error naming them."""
        value = self.get(*names)
        if value is None:
            said = "is null" if self.has(*names) else "is missing"
            raise self.error(
                f"has no value for {_either(names)} (it {said}; fields: {self._listed()})"
            )
        return value

    def text(self, *names: str) -> str:
        value = self.need(*names)
        if not isinstance(value, str | int) or isinstance(value, bool) or value == "":
            raise self.error(f"has {_either(names)} that is not a name or an id")
        return str(value)

    def whole_number(self, *names: str) -> int:
        value = self.need(*names)
        if isinstance(value, bool):
            raise self.error(f"has {_either(names)} that is not a whole number")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        raise self.error(f"has {_either(names)} that is not a whole number")

    def error(self, what: str) -> InvalidResponseError:
        return InvalidResponseError(
            f"{self.where} {what}: teams-bridge does not know this answer's shape, so it stops "
            "rather than guess (see docs/wire.md; run with -vv to log the request)",
            url=self.url,
        )

    def _listed(self) -> str:
        listed = ", ".join(self.names)
        return listed if len(listed) <= 200 else listed[:200] + "..."


def _either(names: Iterable[str]) -> str:
    return " / ".join(repr(n) for n in dict.fromkeys(names))


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_link: str | None  # as the page gave it (absolute or relative)
    skip_token: str | None
    count: int | None  # the total the service reports, if it does

    def next_url(self, current: str) -> str | None:
        """The next page's URL, given the full URL (query included) of this one."""
        if self.next_link:
            return urljoin(current, self.next_link)
        if self.skip_token is not None:
            return with_param(current, SKIP_TOKEN_PARAM, self.skip_token)
        return None


def read_page(body: Any, items_key: str, where: str, url: str | None = None) -> Page:
    """One page: ``items_key`` (any case) must be a list; the next page is named by a link
    (``@odata.nextLink``, ``nextLink``, ``NextLink``) or a skip token (``$skiptoken``,
    ``skipToken``, ``SkipToken``); any other page key (OData annotations aside) is an error,
    never taken for "this is the last page"."""
    if not isinstance(body, Mapping):
        raise InvalidResponseError(
            f"{where} is not a JSON object (a page with {items_key!r} was expected)", url=url
        )
    fields = Fields(body, where, url)
    items = fields.get(items_key)
    if not isinstance(items, list):
        raise fields.error(f"has no {items_key!r} list (fields: {fields._listed()})")
    known = {k.casefold() for k in (items_key, *NEXT_LINK_KEYS, *SKIP_TOKEN_KEYS, *COUNT_KEYS)}
    for key in body:
        folded = str(key).casefold()
        if folded in known:
            continue
        # OData annotations (@odata.context...) say nothing about more pages, unless named so.
        if folded.startswith("@odata.") and not any(h in folded for h in _PAGING_HINTS):
            continue
        raise fields.error(
            f"carries {key!r}, which may lead to more pages, so this page is not taken for the last"
        )
    link = fields.get(*NEXT_LINK_KEYS)
    if link is not None and not isinstance(link, str):
        raise fields.error(f"has a next page link that is not a URL ({type(link).__name__})")
    token = fields.get(*SKIP_TOKEN_KEYS)
    if token is not None and (not isinstance(token, str | int) or isinstance(token, bool)):
        raise fields.error(f"has a skip token that is not text ({type(token).__name__})")
    count = fields.whole_number(*COUNT_KEYS) if fields.get(*COUNT_KEYS) is not None else None
    return Page(
        items,
        link or None,
        str(token) if token is not None and str(token) != "" else None,
        count,
    )


def with_param(url: str, name: str, value: str) -> str:
    """``url`` with query parameter ``name`` set to ``value`` (any spelling of it replaced)."""
    parts = urlsplit(url)
    folded = {name.casefold(), name.casefold().lstrip("$")}
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k.casefold().lstrip("$") not in folded
    ]
    query.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(query, safe="$,")))
