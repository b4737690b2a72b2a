"""GET /accounting/{object}/{id} and POST /accounting/{object}: one record.

A create tells the caller what did not reach the provider (the
x-gateway-ignored-fields header), runs once per Idempotency-Key
(gateway/idempotency.py), and never answers an error for a record the
provider has created: what the mapping cannot read is answered raw, marked."""

import functools
import logging

import msgspec
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from . import logs, steps
from .call import Call
from .connections import Connection
from .errors import GatewayError, bad_request, unprocessable
from .idempotency import Once
from .models import Model, UnifiedObject, nested_models, unknown_fields
from .operation import Operation
from .upstream import Upstream

log = logging.getLogger("gateway")

IGNORED_HEADER = "x-gateway-ignored-fields"
UNMAPPED_HEADER = "x-gateway-unmapped"  # a created record the mapping could not read; remote_data holds it
REPLAYED_HEADERS = frozenset({"content-type", "retry-after", IGNORED_HEADER, UNMAPPED_HEADER})

_json = msgspec.json.Decoder()


def _printable(path: str) -> str:
    # Field names come from the caller's JSON, but a header carries printable
    # ASCII only; failing here would fail a create that already happened upstream.
    return path.encode("unicode_escape").decode("ascii")


def _type_errors(raw: dict, model: type[Model], at: str) -> list[dict[str, str]]:
    """Every field of `raw` that does not fit `model`, each line item alone."""
    out = []
    nested = nested_models(model)
    for name, value in raw.items():
        inner = nested.get(name)
        if inner is not None and isinstance(value, list) and all(isinstance(item, dict) for item in value):
            for i, item in enumerate(value):
                out += _type_errors(item, inner, f"{at}.{name}[{i}]")
            continue
        try:
            msgspec.convert({name: value}, model)
        except msgspec.ValidationError as exc:
            out.append(_type_error(str(exc), at))
    return out


def _type_error(message: str, at: str) -> dict[str, str]:
    reason, _, path = message.partition(" - at `")
    path = at + path.rstrip("`")[1:] if path else at
    return {"path": path, "message": f"{reason} - at `{path}`"}


class Records:
    def __init__(self, upstream: Upstream, once: Once, max_body_bytes: int):
        self.upstream = upstream
        self.once = once
        self.max_body_bytes = max_body_bytes

    async def retrieve(self, call: Call, conn: Connection, obj: UnifiedObject) -> Response:
        remote_data = call.flag("remote_data")
        record_id = call.id
        doc = steps.document(call.query, conn, id=record_id)
        op = steps.applying(conn, steps.operations(conn, obj, "retrieve"), doc)
        if op is None:
            raise GatewayError(404, "not_found", f"{record_id!r} is not an id of any {obj.name} kind {conn.provider.name} has")
        data = await steps.call(self.upstream, conn, op, doc)
        record = steps.extract(conn, op.record, data, "the record")
        if record is None:
            raise GatewayError(404, "not_found", f"{conn.provider.name} has no {obj.name} {record_id!r}", provider=conn.provider.name)
        return steps.json_response(steps.unify(conn, op, record, remote_data))

    async def create(self, call: Call, conn: Connection, obj: UnifiedObject) -> Response:
        if obj.input is None:
            raise GatewayError(405, "method_not_allowed", f"{obj.name} cannot be created through the unified API",
                               {"Allow": "GET"})
        ops = steps.operations(conn, obj, "create")
        remote_data = call.flag("remote_data")
        raw = await self._read_body(call)
        body = self._body(raw, obj)
        create = functools.partial(self._create, call, conn, obj, ops, body, remote_data)
        key = call.header(b"idempotency-key")
        if key is None:
            return await create()
        return await self.once.run(key, (conn.scope, obj.name.encode()), (raw, b"remote_data" if remote_data else b""),
                                   conn.provider.limits.total_timeout, create)

    async def _create(self, call: Call, conn: Connection, obj: UnifiedObject, ops: tuple[Operation, ...],
                      body: dict, remote_data: bool) -> Response:
        doc = steps.document(call.query, conn, body=body)
        op = steps.applying(conn, ops, doc)
        if op is None:
            raise unprocessable("no_matching_operation", f"{conn.provider.name} has no way to create this {obj.name}; see its mapping's `when` conditions")
        data = await steps.call(self.upstream, conn, op, doc)
        # Worked out once the request went: one refused before needs none.
        ignored = list(dict.fromkeys(unknown_fields(body, obj.input) + op.ignored(doc, conn.request_options)))
        headers = {}
        if ignored:
            listed = ", ".join(_printable(p) for p in ignored)
            logs.note(ignored_fields=listed)  # the caller's to know, in its header; the request's log line
            headers[IGNORED_HEADER] = listed
        record = None
        try:
            record = steps.extract(conn, op.record, data, "the created record")
            output = steps.unify(conn, op, record, remote_data, body)
        except GatewayError as exc:
            # The provider has created the record: an error now would invite a
            # duplicate. Answer what can be read, marked, with the raw payload.
            output = obj.output(**op.unifier.identify(record, conn.options), remote_data=data)
            headers[UNMAPPED_HEADER] = _printable(exc.message)
            log.error("%s: create %s succeeded upstream but its answer does not unify: %s", conn.name, obj.name, exc.message)
        return steps.json_response(output, 201, headers or None)

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
            # msgspec stops at the first error: each field alone finds the rest,
            # so one answer names them all.
            errors = _type_errors(body, obj.input, "$") or [_type_error(str(exc), "$")]
            raise unprocessable("invalid_body", "; ".join(e["message"] for e in errors), path=errors[0]["path"],
                                errors=errors) from None
        return body
