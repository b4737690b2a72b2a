"""List paging: which provider page a unified cursor stands for, and what comes next.

Pure functions over `Position`s; routes.py does the I/O. Four provider styles
sit behind the one opaque unified cursor: offset, page number, token and link.
"""

from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

from .cursor import Position
from .mapping import PagingSpec


class LinkError(ValueError):
    """A next-page link that leaves the host or path the mapping names."""


def page_document(paging: PagingSpec, position: Position, size: int) -> dict[str, Any]:
    """The `page` member of the request document."""
    return {
        "limit": size,
        "offset": position.offset,
        "start": position.offset + 1,  # 1-based, for STARTPOSITION-style APIs
        "number": paging.first_page + position.number,
        "token": position.token if paging.style == "token" else None,
    }


def following(paging: PagingSpec, position: Position, count: int, size: int, total: Any,
              next_page: Any, sources: int) -> Position | None:
    """Where the next unified page starts, or None at the end of the last source."""
    if paging.style in ("token", "link"):
        more = count > 0 and bool(next_page)
    elif paging.style in ("offset", "page"):
        # An empty page ends the list even if a total says more: its cursor would not move.
        more = count > 0 and (position.offset + count < total if isinstance(total, int) else count >= size)
    else:
        more = False
    if more:
        token = str(next_page) if paging.style in ("token", "link") else None
        return Position(position.source, position.offset + count, position.number + 1, token)
    if position.source + 1 < sources:
        return Position(position.source + 1)
    return None


def previous(paging: PagingSpec, position: Position, size: int) -> Position | None:
    """Offsets and page numbers can step back; tokens and links cannot."""
    if paging.style in ("offset", "page") and position.number > 0:
        return Position(position.source, max(0, position.offset - size), position.number - 1)
    return None


def link_query(link: str, base_url: str, path: str) -> str:
    """The query string of a provider's next-page link, once it is shown to point
    at the very host and path the gateway just called: a link is never followed
    as given, so a provider (or a forged cursor) cannot send the gateway elsewhere."""
    target = urlsplit(urljoin(base_url + path, link))
    origin = urlsplit(base_url)
    if (target.scheme, target.netloc) != (origin.scheme, origin.netloc) or target.path != urlsplit(base_url + path).path:
        raise LinkError(f"the next-page link {link!r} leaves {base_url}{path}")
    return target.query


def link_params(query: str) -> list[tuple[str, str]]:
    return parse_qsl(query, keep_blank_values=True)
