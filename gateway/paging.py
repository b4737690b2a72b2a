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


def _page_at(position: Position, size: int) -> tuple[int, int]:
    """The provider page (0-based) holding the next record, and how many of its
    records earlier unified pages served."""
    if position.page is not None:
        return position.page, position.skip
    return position.offset // size, position.offset % size


def page_document(paging: PagingSpec, position: Position, size: int) -> dict[str, Any]:
    """The `page` member of the request document. A page number comes from the
    records served, so a next call with another `limit` goes on at the next record."""
    return {
        "limit": size,
        "offset": position.offset,
        "start": position.offset + 1,  # 1-based, for STARTPOSITION-style APIs
        "number": paging.first_page + _page_at(position, size)[0],
        "token": position.token if paging.style == "token" else None,
    }


def skipped(paging: PagingSpec, position: Position, size: int) -> int:
    """Records at the front of the provider's page that earlier unified pages served."""
    if paging.style == "page":
        return _page_at(position, size)[1]
    if paging.style in ("token", "link"):
        return position.skip
    if paging.style == "none":
        return position.offset  # the whole list, every time
    return 0


def following(paging: PagingSpec, position: Position, count: int, size: int, total: Any, next_page: Any,
              sources: int, served: int, rest: int, more: Any = None) -> Position | None:
    """Where the next unified page starts, or None at the end of the last source.

    `count`: the provider's records on the page; `served`: how many of them this
    unified page holds; `rest`: those after them that it could not (the provider
    answered more than asked): the next page starts among them; `more`: the
    provider's own word on whether pages follow (`paging.more`), if it gave one."""
    offset, skip = position.offset + served, skipped(paging, position, size) + served
    if rest > 0:
        if paging.style == "page":
            return Position(position.source, offset, None, skip, _page_at(position, size)[0])
        if paging.style in ("token", "link"):
            return Position(position.source, offset, position.token, skip)
        return Position(position.source, offset)
    if paging.style in ("token", "link"):
        if count > 0 and next_page:
            return Position(position.source, offset, str(next_page))
    elif paging.style in ("offset", "page"):
        # An empty page ends the list even if a total says more: its cursor would not move.
        before = position.offset - skipped(paging, position, size)  # records of the pages before this one
        if isinstance(more, bool):
            maybe = more  # the provider says: a last full page costs no call
        elif isinstance(total, int) and not isinstance(total, bool):
            maybe = before + count < total
        else:
            maybe = count >= size
        if count > 0 and maybe:
            if paging.style == "page" and (position.page is not None or count > size):
                # The provider keeps pages of its own size: number them as it does.
                return Position(position.source, offset, page=_page_at(position, size)[0] + 1)
            return Position(position.source, offset)
    if position.source + 1 < sources:
        return Position(position.source + 1)
    return None


def previous(paging: PagingSpec, position: Position, size: int) -> Position | None:
    """Offsets and page numbers can step back; tokens and links cannot."""
    if paging.style in ("offset", "page") and position.offset > 0:
        return Position(position.source, max(0, position.offset - size))
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
