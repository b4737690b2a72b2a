"""The unified HTTP surface: Panora's accounting paths, headers and query parameters.

Each handler walks the request path: route -> connection -> compiled operation
-> upstream call -> unify -> response.
"""

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from . import idempotency, paging
from .connections import ApiKeys, Connection, Connections
from .cursor import CursorError, Cursors, Position
from .errors import (GatewayError, bad_gateway, bad_request, internal_error, not_implemented, shutting_down, unauthorized,
                     unprocessable)
from .models import OBJECTS, UnifiedObject, unknown_fields
from .operation import Operation, TranslationError
from .unify import UnifyError
from .upstream import Upstream

log = logging.getLogger("gateway")

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
IGNORED_HEADER = "x-gateway-ignored-fields"
UNMAPPED_HEADER = "x-gateway-unmapped"  # a created record the mapping could not read; remote_data holds it
REPLAYED_HEADER = "idempotent-replayed"
_REPLAYED_HEADERS = {"content-type", "retry-after", IGNORED_HEADER, UNMAPPED_HEADER}

_json = msgspec.json.Decoder()
_encode = msgspec.json.Encoder().encode


PREFIX = "/accounting/"


class Call:
    """One unified request as the handlers read it, parsed once from the ASGI scope.

    `path` is percent-decoded, so an id sent with %2F holds '/': everything
    after the object's segment is the id."""

    __slots__ = ("method", "path", "object", "id", "_headers", "query", "receive")

    def __init__(self, scope: dict, receive: Callable[[], Awaitable[dict]]):
        self.method = scope["method"]
        self.path = scope["path"]
        self.object, _, self.id = self.path[len(PREFIX):].partition("/")
        # Kept as bytes: the handlers read four headers of the many a client sends.
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name not in headers:  # the first of repeats, as Starlette
                headers[name] = value
        self._headers = headers
        query = scope["query_string"]
        # The last of repeated parameters, as Starlette's query_params.
        self.query = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True)) if query else {}
        self.receive = receive

    def header(self, name: bytes) -> str | None:
        value = self._headers.get(name)
        return None if value is None else value.decode("latin-1")


def _printable(path: str) -> str:
    # Field names come from the caller's JSON, but a header carries printable
    # ASCII only; failing here would fail a create that already happened upstream.
    return path.encode("unicode_escape").decode("ascii")


def _json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encode(content), status, headers, media_type="application/json")


def _flag(call: Call, name: str) -> bool:
    value = call.query.get(name)
    if value is None:
        return False
    lowered = value.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0", ""):
        return False
    raise bad_request("invalid_query", f"{name} must be true or false, not {value!r}", parameter=name)


def _limit(call: Call) -> int:
    value = call.query.get("limit")
    if value is None or value == "":
        return DEFAULT_LIMIT
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not number.is_integer() or not 1 <= number <= MAX_LIMIT:
        raise bad_request("invalid_query", f"limit must be a whole number from 1 to {MAX_LIMIT}, not {value!r}", parameter="limit")
    return int(number)


class Gateway:
    def __init__(self, api_keys: ApiKeys, connections: Connections, upstream: Upstream, cursors: Cursors,
                 store: idempotency.Store, max_body_bytes: int):
        self.api_keys = api_keys
        self.connections = connections
        self.upstream = upstream
        self.cursors = cursors
        self.idempotency = store
        self.max_body_bytes = max_body_bytes
        # /accounting/{object}/ is the collection too, as it was when it redirected there.
        self._collection = {"GET": self.list, "POST": self.create}
        self._record = {"GET": self.retrieve}

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        """The ASGI app for every path under /accounting/: its own routing and
        error answers, without a framework's layers, as this is the hot path."""
        call = Call(scope, receive)
        try:
            response = await self._route(call)(call)
        except GatewayError as exc:
            response = exc.response()
        except ClientDisconnect:
            return  # nobody to answer
        except asyncio.CancelledError:
            # A shutdown whose --graceful-timeout ran out: answer, saying a create may have happened.
            log.warning("%s %s cut short by shutdown", call.method, call.path)
            response = shutting_down().response()
        except Exception:
            log.exception("unexpected error on %s %s", call.method, call.path)
            response = internal_error().response()
        await response(scope, receive, send)

    # -- route -> connection -------------------------------------------------

    def _route(self, call: Call) -> Callable[[Call], Awaitable[Response]]:
        if not call.object:
            raise GatewayError(404, "no_such_path", f"{call.method} {call.path}: Not Found")
        method = "GET" if call.method == "HEAD" else call.method
        handlers = self._record if call.id else self._collection
        handler = handlers.get(method)
        if handler is None:
            raise GatewayError(405, "method_not_allowed", f"{call.method} {call.path}: Method Not Allowed",
                               {"Allow": ", ".join(handlers)})
        return handler

    def _object(self, call: Call) -> UnifiedObject:
        name = call.object
        found = OBJECTS.get(name)
        if found is None:
            raise GatewayError(404, "unknown_object", f"no unified accounting object {name!r}; known: {', '.join(OBJECTS)}")
        return found

    def _connection(self, call: Call) -> Connection:
        key = call.header(b"x-api-key")
        if not key:
            raise unauthorized("missing_api_key", "the x-api-key header is required")
        if not self.api_keys.check(key):
            raise unauthorized("invalid_api_key", "the x-api-key is not valid")
        token = call.header(b"x-connection-token")
        if not token:
            raise unauthorized("missing_connection_token", "the x-connection-token header is required")
        conn = self.connections.resolve(token)
        if conn is None:
            raise unauthorized("invalid_connection_token", "no connection has this x-connection-token")
        return conn

    def _operations(self, conn: Connection, obj: UnifiedObject, verb: str) -> tuple[Operation, ...]:
        ops = conn.provider.operations(obj.name, verb)
        if not ops:
            raise not_implemented(conn.provider.name, f"{verb} {obj.name}")
        return ops

    def _document(self, call: Call, conn: Connection, **parts: Any) -> dict[str, Any]:
        return {"query": call.query, "context": conn.context, **parts}

    # -- compiled operation -> upstream call -> unify ------------------------

    async def _call(self, conn: Connection, op: Operation, doc: dict, query: list | None = None) -> Any:
        try:
            upstream_request = op.request(doc, conn.options)
        except TranslationError as exc:
            raise unprocessable("untranslatable", f"cannot translate the request for {conn.provider.name}: {exc}",
                                provider=conn.provider.name) from None
        if query is not None:
            upstream_request.query = query
        return await self.upstream.send(conn, upstream_request)

    def _unify(self, conn: Connection, op: Operation, record: Any, remote_data: bool, body: dict | None = None):
        try:
            return op.unify(record, conn.options, remote_data, body)
        except UnifyError as exc:
            raise self._unmappable(conn, op, exc) from None

    def _unify_page(self, conn: Connection, op: Operation, records: list, remote_data: bool) -> list:
        unify, options = op.unifier.unify, conn.options  # a list's records echo nothing: straight to the unifier
        try:
            return [unify(record, options, remote_data) for record in records]
        except UnifyError as exc:
            raise self._unmappable(conn, op, exc) from None

    def _unmappable(self, conn: Connection, op: Operation, exc: UnifyError) -> GatewayError:
        log.error("%s: %s answered a record that does not unify: %s", conn.name, op.key, exc)
        return bad_gateway("upstream_unmappable", f"{conn.provider.name} answered a record the mapping cannot read: {exc}",
                           provider=conn.provider.name)

    def _extract(self, conn: Connection, expression, data: Any, what: str) -> Any:
        try:
            return expression.search(data, options=conn.options)
        except Exception as exc:  # a mapping expression failing on an odd response
            raise bad_gateway("upstream_unmappable", f"cannot read {what} from {conn.provider.name}'s response: {exc}",
                              provider=conn.provider.name) from None

    # -- handlers ------------------------------------------------------------

    async def retrieve(self, call: Call) -> Response:
        conn = self._connection(call)
        obj = self._object(call)
        remote_data = _flag(call, "remote_data")
        record_id = call.id
        doc = self._document(call, conn, id=record_id)
        op = next((o for o in self._operations(conn, obj, "retrieve") if o.applies(doc, conn.options)), None)
        if op is None:
            raise GatewayError(404, "not_found", f"{record_id!r} is not an id of any {obj.name} kind {conn.provider.name} has")
        data = await self._call(conn, op, doc)
        record = self._extract(conn, op.record, data, "the record")
        if record is None:
            raise GatewayError(404, "not_found", f"{conn.provider.name} has no {obj.name} {record_id!r}", provider=conn.provider.name)
        return _json_response(self._unify(conn, op, record, remote_data))

    async def create(self, call: Call) -> Response:
        conn = self._connection(call)
        obj = self._object(call)
        if obj.input is None:
            raise GatewayError(405, "method_not_allowed", f"{obj.name} cannot be created through the unified API")
        ops = self._operations(conn, obj, "create")
        remote_data = _flag(call, "remote_data")
        raw = await self._read_body(call)
        body = self._body(raw, obj)
        create = functools.partial(self._create, call, conn, obj, ops, body, remote_data)
        key = call.header(b"idempotency-key")
        if key is None:
            return await create()
        return await self._once(key, conn, obj, raw, remote_data, create)

    async def _create(self, call: Call, conn: Connection, obj: UnifiedObject, ops: tuple[Operation, ...],
                      body: dict, remote_data: bool) -> Response:
        doc = self._document(call, conn, body=body)
        op = next((o for o in ops if o.applies(doc, conn.options)), None)
        if op is None:
            raise unprocessable("no_matching_operation", f"{conn.provider.name} has no way to create this {obj.name}; see its mapping's `when` conditions")
        ignored = list(dict.fromkeys(unknown_fields(body, obj.input) + op.ignored(body)))
        headers = {}
        if ignored:
            listed = ", ".join(_printable(p) for p in ignored)
            log.warning("%s: create %s ignored fields %s", conn.name, obj.name, listed)
            headers[IGNORED_HEADER] = listed
        data = await self._call(conn, op, doc)
        record = None
        try:
            record = self._extract(conn, op.record, data, "the created record")
            output = self._unify(conn, op, record, remote_data, body)
        except GatewayError as exc:
            # The provider has created the record: an error now would invite a
            # duplicate. Answer what can be read, marked, with the raw payload.
            output = obj.output(**op.unifier.identify(record, conn.options), remote_data=data)
            headers[UNMAPPED_HEADER] = _printable(exc.message)
            log.error("%s: create %s succeeded upstream but its answer does not unify: %s", conn.name, obj.name, exc.message)
        return _json_response(output, 201, headers or None)

    async def _read_body(self, call: Call) -> bytes:
        declared = call.header(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise self._too_large()
        chunks, size, more = [], 0, True
        while more:
            message = await call.receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise self._too_large()
            chunks.append(chunk)
            more = message.get("more_body", False)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _too_large(self) -> GatewayError:
        return GatewayError(413, "body_too_large", f"the request body exceeds {self.max_body_bytes} bytes")

    async def _once(self, key: str, conn: Connection, obj: UnifiedObject, raw: bytes, remote_data: bool,
                    create: Callable[[], Awaitable[Response]]) -> Response:
        """Run `create` once per Idempotency-Key; replay its answer to retries."""
        if not 1 <= len(key) <= 255:
            raise bad_request("invalid_idempotency_key", "Idempotency-Key must be 1 to 255 characters")
        scoped = idempotency.fingerprint(conn.scope, obj.name.encode(), key.encode())
        claim = idempotency.Entry(idempotency.fingerprint(raw, b"remote_data" if remote_data else b""))
        try:
            held = await self._claim(scoped, claim, conn.provider.limits.total_timeout)
        except idempotency.StoreUnavailable as exc:
            log.error("idempotency store unavailable: %s", exc)
            raise GatewayError(503, "idempotency_unavailable", "cannot honour the Idempotency-Key now: its store does not answer",
                               {"Retry-After": "1"}) from None
        if held is not None:
            if held.fingerprint != claim.fingerprint:
                raise unprocessable("idempotency_key_reused", "this Idempotency-Key was used with a different request body")
            if held.pending:
                raise GatewayError(409, "idempotency_in_progress", "a request with this Idempotency-Key is still under way",
                                   {"Retry-After": "1"})
            return Response(held.body, held.status, {**held.headers, REPLAYED_HEADER: "true"})
        try:
            response = await create()
        except GatewayError as exc:
            if not exc.maybe_done:
                await self._settle(scoped, claim, None)
                raise
            response = exc.response()
        except asyncio.CancelledError:
            # Cut short by a shutdown: the create may have reached the provider, so
            # keep the answer, as for a timeout, rather than let a retry create again.
            await self._settle(scoped, claim, shutting_down().response())
            raise
        except BaseException:
            await self._settle(scoped, claim, None)
            raise
        await self._settle(scoped, claim, response)
        return response

    async def _claim(self, scoped: str, claim: idempotency.Entry, wait: float) -> idempotency.Entry | None:
        """None: the key is ours to run. Otherwise the entry it already holds."""
        held = await self.idempotency.reserve(scoped, claim)
        # Only a retry of the same request waits for the first one's answer;
        # another request under the key is refused at once.
        if held is not None and held.pending and held.fingerprint == claim.fingerprint:
            held = await idempotency.wait_for_answer(self.idempotency, scoped, wait)
            if held is None:  # the first attempt failed before reaching the provider: take over
                held = await self.idempotency.reserve(scoped, claim)
        return held

    async def _settle(self, scoped: str, claim: idempotency.Entry, response: Response | None) -> None:
        """Keep the answer for replay, or free the key (None) when nothing was created."""
        try:
            if response is None:
                await self.idempotency.release(scoped)
            else:
                kept = {k: v for k, v in response.headers.items() if k in _REPLAYED_HEADERS}
                await self.idempotency.complete(scoped, idempotency.Entry(claim.fingerprint, response.status_code,
                                                                          kept, response.body))
        except idempotency.StoreUnavailable as exc:
            # The create is done either way: answer it; a retry may find the key pending.
            log.error("idempotency store unavailable, the answer for a key is not kept: %s", exc)

    def _body(self, raw: bytes, obj: UnifiedObject) -> dict:
        if not raw.strip():
            raise bad_request("missing_body", f"a JSON body describing the {obj.name[:-1]} is required")
        try:
            body = _json.decode(raw)
        except (msgspec.DecodeError, RecursionError) as exc:  # RecursionError: nested too deeply
            raise bad_request("invalid_json", f"the body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise unprocessable("invalid_body", f"Expected `object`, got `{type(body).__name__}` - at `$`", path="$")
        try:
            msgspec.convert(body, obj.input)
        except msgspec.ValidationError as exc:
            message = str(exc)
            path = message.rsplit(" - at `", 1)[1].rstrip("`") if " - at `" in message else "$"
            raise unprocessable("invalid_body", message, path=path) from None
        return body

    async def list(self, call: Call) -> Response:
        conn = self._connection(call)
        obj = self._object(call)
        remote_data = _flag(call, "remote_data")
        limit = _limit(call)
        scope = conn.scope + obj.name.encode()
        cursor = call.query.get("cursor")
        try:
            position = self.cursors.decode(cursor, scope) if cursor else Position()
        except CursorError as exc:
            raise bad_request("invalid_cursor", str(exc)) from None
        sources = self._operations(conn, obj, "list")
        if position.source >= len(sources):
            raise bad_request("invalid_cursor", "the cursor no longer fits this provider's mapping")
        while True:
            op, records, following, previous = await self._page(conn, sources, position, limit, call)
            # An exhausted source moves on to the next one in the same call.
            if records or following is None or following.source == position.source:
                break
            position = following
        data = self._unify_page(conn, op, records, remote_data)
        return _json_response({
            "prev_cursor": self.cursors.encode(previous, scope) if previous else None,
            "next_cursor": self.cursors.encode(following, scope) if following else None,
            "data": data,
        })

    async def _page(self, conn: Connection, sources: tuple[Operation, ...], position: Position, limit: int,
                    call: Call) -> tuple[Operation, list, Position | None, Position | None]:
        op = sources[position.source]
        spec = op.spec.paging
        size = min(limit, spec.max_limit)
        doc = self._document(call, conn, page=paging.page_document(spec, position, size))
        # A link cursor holds only the query string of the provider's next link.
        query = paging.link_params(position.token) if spec.style == "link" and position.token else None
        data = await self._call(conn, op, doc, query)
        records = self._extract(conn, op.records, data, "the records")
        # Strict: a missing array is more likely a changed envelope than an empty
        # page. A provider that omits empty arrays says `records: X || `[]``.
        if not isinstance(records, list):
            raise bad_gateway("upstream_unmappable", f"{conn.provider.name}'s list response has no array where the mapping expects records",
                              provider=conn.provider.name)
        total = self._extract(conn, op.total, data, "the total") if op.total else None
        next_page = self._extract(conn, op.next, data, "the next page") if op.next else None
        if spec.style == "link" and next_page:
            try:
                next_page = paging.link_query(str(next_page), conn.base_url, op.request(doc, conn.options).path)
            except paging.LinkError as exc:
                raise bad_gateway("upstream_unmappable", f"{conn.provider.name}: {exc}", provider=conn.provider.name) from None
        # `paging.count`: the provider records the page held, where `records` unnests them.
        count = self._extract(conn, op.count, data, "the page's record count") if op.count else len(records)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise bad_gateway("upstream_unmappable", f"{conn.provider.name}'s list response gives no record count where the mapping expects one",
                              provider=conn.provider.name)
        after = paging.following(spec, position, count, size, total, next_page, len(sources))
        return op, records, after, paging.previous(spec, position, size)
