"""GET /accounting/{object}: one unified page, whatever paging the provider
has (gateway/paging.py), resumed by a signed cursor (gateway/cursor.py).

A mapping may list an object from several sources (e.g. two provider
endpoints), walked one after the other: an exhausted source moves on to the
next within the same call."""

from starlette.responses import Response

from . import paging, steps
from .call import Call
from .connections import Connection
from .cursor import CursorError, Cursors, Position
from .errors import bad_gateway, bad_request
from .models import UnifiedObject
from .operation import Operation
from .upstream import Upstream


class Listing:
    def __init__(self, upstream: Upstream, cursors: Cursors):
        self.upstream = upstream
        self.cursors = cursors

    async def __call__(self, call: Call, conn: Connection, obj: UnifiedObject) -> Response:
        remote_data = call.flag("remote_data")
        limit = call.limit()
        scope = conn.scope + obj.name.encode()
        cursor = call.query.get("cursor")
        try:
            position = self.cursors.decode(cursor, scope) if cursor else Position()
        except CursorError as exc:
            raise bad_request("invalid_cursor", str(exc)) from None
        sources = steps.operations(conn, obj, "list")
        if position.source >= len(sources):
            raise bad_request("invalid_cursor", "the cursor no longer fits this provider's mapping")
        while True:
            op, records, following, previous = await self._page(conn, sources, position, limit, call, remote_data)
            if records or following is None or following.source == position.source:
                break
            position = following
        data = steps.unify_page(conn, op, records, remote_data)
        return steps.json_response({
            "prev_cursor": self.cursors.encode(previous, scope) if previous else None,
            "next_cursor": self.cursors.encode(following, scope) if following else None,
            "data": data,
        })

    async def _page(self, conn: Connection, sources: tuple[Operation, ...], position: Position, limit: int,
                    call: Call, remote_data: bool) -> tuple[Operation, list, Position | None, Position | None]:
        op = sources[position.source]
        spec = op.spec.paging
        take = min(limit, spec.max_limit)  # what this unified page may hold
        size = spec.page_size or take  # what the provider's page holds, when it says
        doc = steps.document(call.query, conn, page=paging.page_document(spec, position, size))
        # A link cursor holds only the query string of the provider's next link.
        query = paging.link_params(position.token) if spec.style == "link" and position.token else None
        # remote_data answers each record whole; otherwise only what the mapping reads is decoded.
        data = await steps.call(self.upstream, conn, op, doc, query, None if remote_data else op.page_decoder)
        records = steps.extract(conn, op.records, data, "the records")
        # Strict: a missing array is more likely a changed envelope than an empty
        # page. A provider that omits empty arrays says `records: X || `[]``.
        if not isinstance(records, list):
            raise bad_gateway("upstream_unmappable", f"{conn.provider.name}'s list response has no array where the mapping expects records",
                              provider=conn.provider.name)
        total = steps.extract(conn, op.total, data, "the total") if op.total else None
        next_page = steps.extract(conn, op.next, data, "the next page") if op.next else None
        more = steps.extract(conn, op.more, data, "whether more pages follow") if op.more else None
        if spec.style == "link" and next_page:
            try:
                next_page = paging.link_query(str(next_page), conn.base_url, op.request(doc, conn.request_options).path)
            except paging.LinkError as exc:
                raise bad_gateway("upstream_unmappable", f"{conn.provider.name}: {exc}", provider=conn.provider.name) from None
        # `paging.count`: the provider records the page held, where `records` unnests them.
        count = steps.extract(conn, op.count, data, "the page's record count") if op.count else len(records)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise bad_gateway("upstream_unmappable", f"{conn.provider.name}'s list response gives no record count where the mapping expects one",
                              provider=conn.provider.name)
        if op.count:  # unnested records are served as they come, the provider's records counted
            served, rest = count, 0
        else:
            # What earlier pages served off the front, and never more than `limit`.
            skip = paging.skipped(spec, position, size)
            records = records[skip:skip + take]
            served, rest = len(records), max(0, count - skip - take)
        after = paging.following(spec, position, count, size, total, next_page, len(sources), served, rest, more)
        return op, records, after, paging.previous(spec, position, take)
