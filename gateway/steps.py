"""The steps every handler walks after routing: compiled operation -> auth and
upstream call -> unify, each failure turned into the unified error that says
whose it is (the caller's 422, the provider's 502)."""

import logging
from typing import Any

import msgspec
from starlette.responses import Response

from .connections import Connection
from .errors import GatewayError, bad_gateway, not_implemented, unprocessable
from .models import UnifiedObject
from .operation import MappingBug, Operation, RequestRefused, TranslationError
from .unify import UnifyError
from .upstream import Upstream

log = logging.getLogger("gateway")

_encode = msgspec.json.Encoder().encode


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encode(content), status, headers, media_type="application/json")


def operations(conn: Connection, obj: UnifiedObject, verb: str) -> tuple[Operation, ...]:
    ops = conn.provider.operations(obj.name, verb)
    if not ops:
        raise not_implemented(conn.provider.name, f"{verb} {obj.name}")
    return ops


def document(query: dict[str, str], conn: Connection, **parts: Any) -> dict[str, Any]:
    """The request document a mapping's request-side expressions read."""
    return {"query": query, "context": conn.context, **parts}


def applying(conn: Connection, ops: tuple[Operation, ...], doc: dict) -> Operation | None:
    """The first alternative whose `when` holds for this request."""
    try:
        return next((o for o in ops if o.applies(doc, conn.request_options)), None)
    except TranslationError as exc:
        raise refused(conn, exc) from None


def refused(conn: Connection, exc: TranslationError) -> GatewayError:
    """Whose fault a request that cannot be translated is: the caller's (422,
    naming each field or context key at fault), or the mapping's (500, naming it)."""
    provider = conn.provider.name
    if isinstance(exc, MappingBug):
        where = f"{conn.provider.source.name}: {exc.key}"
        log.error("%s: mapping %s fails on a request: %s", conn.name, where, exc.reason)
        return GatewayError(500, "mapping_error", f"the {provider} mapping fails on this request ({where}): {exc.reason}",
                            provider=provider, mapping=where)
    if isinstance(exc, RequestRefused):
        first = exc.violations[0]
        return unprocessable("invalid_request", f"{provider} cannot take this request: {exc}", provider=provider,
                             path=first.path, context_key=first.context_key,
                             errors=[msgspec.to_builtins(v) for v in exc.violations])
    return unprocessable("untranslatable", f"cannot translate the request for {provider}: {exc}", provider=provider)


async def call(upstream: Upstream, conn: Connection, op: Operation, doc: dict, query: list | None = None,
               decoder: msgspec.json.Decoder | None = None) -> Any:
    try:
        upstream_request = op.request(doc, conn.request_options)
    except TranslationError as exc:
        raise refused(conn, exc) from None
    if query is not None:
        upstream_request.query = query
    return await upstream.send(conn, upstream_request, decoder)


def extract(conn: Connection, expression, data: Any, what: str) -> Any:
    try:
        return expression.search(data, options=conn.options)
    except Exception as exc:  # a mapping expression failing on an odd response
        raise bad_gateway("upstream_unmappable", f"cannot read {what} from {conn.provider.name}'s response: {exc}",
                          provider=conn.provider.name) from None


def unify(conn: Connection, op: Operation, record: Any, remote_data: bool, body: dict | None = None):
    try:
        return op.unify(record, conn.options, remote_data, body)
    except UnifyError as exc:
        raise _unmappable(conn, op, exc) from None


def unify_page(conn: Connection, op: Operation, records: list, remote_data: bool) -> list:
    try:  # a list's records echo nothing: straight to the unifier
        return op.unifier.unify_page(records, conn.options, remote_data)
    except UnifyError as exc:
        raise _unmappable(conn, op, exc) from None


def _unmappable(conn: Connection, op: Operation, exc: UnifyError) -> GatewayError:
    log.error("%s: %s answered a record that does not unify: %s", conn.name, op.key, exc)
    return bad_gateway("upstream_unmappable", f"{conn.provider.name} answered a record the mapping cannot read: {exc}",
                       provider=conn.provider.name)
