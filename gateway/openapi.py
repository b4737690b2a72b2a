"""GET /openapi.json, the gateway's API description, and GET /docs, a page to read it.

The description is derived from what the gateway serves: the methods its
router answers (gateway/routes.py), the unified objects and their models
(gateway/models.py, as JSON Schema by msgspec) and the service endpoints of
gateway/app.py (their docstrings). It is OpenAPI 3.0, the dialect of Panora's
own description, with Panora's paths, parameters and schema names, so that
what a client generator or a reader takes from either is the same. It is
built once, at start.

The docs page is Swagger UI from the swagger-ui-bundle package, served by the
gateway itself: no CDN, nothing from the network."""

import base64
import hashlib
import inspect
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from http import HTTPStatus
from importlib import metadata
from typing import Any

import msgspec
import msgspec.inspect as mi
import yaml
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from .call import DEFAULT_LIMIT, MAX_LIMIT, PREFIX
from .models import OBJECTS, UnifiedObject
from .records import IGNORED_HEADER, UNMAPPED_HEADER

ASSETS = "/docs/assets"
SCHEMAS = "#/components/schemas/"


class PaginatedDto(msgspec.Struct):
    """A page of a list (gateway/listing.py); `data` holds the unified objects."""

    prev_cursor: str | None
    next_cursor: str | None
    data: list[dict[str, Any]]


class Error(msgspec.Struct, kw_only=True):
    """Every error the gateway answers (gateway/errors.py): `code` is stable
    for programs; the provider's fields keep what the provider said."""

    statusCode: int
    error: str
    code: str
    message: str
    provider: str | msgspec.UnsetType = msgspec.UNSET
    provider_status: int | msgspec.UnsetType = msgspec.UNSET
    provider_code: str | msgspec.UnsetType = msgspec.UNSET
    provider_message: str | msgspec.UnsetType = msgspec.UNSET
    operation: str | msgspec.UnsetType = msgspec.UNSET  # the operation a provider's mapping does not map (501)
    parameter: str | msgspec.UnsetType = msgspec.UNSET  # the query parameter refused (400)
    path: str | msgspec.UnsetType = msgspec.UNSET  # where in the body it is invalid (422): the first of `errors`
    context_key: str | msgspec.UnsetType = msgspec.UNSET  # the connection's context key that would supply it (422)
    errors: list["ErrorDetail"] | msgspec.UnsetType = msgspec.UNSET  # every fault of the request (422)
    mapping: str | msgspec.UnsetType = msgspec.UNSET  # the mapping file and key that failed (500 mapping_error)


class ErrorDetail(msgspec.Struct, kw_only=True):
    """One fault of a request: a body field of the wrong type, or what the provider needs that it lacks."""

    message: str
    path: str | msgspec.UnsetType = msgspec.UNSET  # the unified field: $.line_items[0].value
    context_key: str | msgspec.UnsetType = msgspec.UNSET  # or the connection's context key that supplies it
    accepted: list[Any] | msgspec.UnsetType = msgspec.UNSET  # the values accepted there


# What each route of gateway/routes.py does, keyed as Gateway.served() names them.
_KINDS = {("collection", "GET"): "list", ("collection", "POST"): "create", ("record", "GET"): "retrieve"}

# The errors any operation may answer: a provider's own refusals keep their
# status (gateway/errors.py), so a list too may be a 404 or a 409.
_ERRORS = (400, 401, 404, 409, 422, 429, 500, 501, 502, 503, 504)
_CREATE_ERRORS = (413,)  # a body too large


def _singular(name: str) -> str:
    if name.endswith("ies"):
        return name[:-3] + "y"
    return name[:-2] if name.endswith("sses") else name[:-1]


def _component(obj: UnifiedObject, kind: str) -> str:
    """Panora's name for an object's schema: UnifiedAccountingTrackingcategoryOutput."""
    return f"UnifiedAccounting{_singular(obj.name).capitalize()}{kind}"


def _words(obj: UnifiedObject) -> tuple[str, str]:
    """The object's name in CamelCase, singular and plural: ("JournalEntry", "JournalEntries")."""
    singular = obj.output.__name__.removesuffix("Output")
    lower = singular.lower()
    common = next((i for i, (a, b) in enumerate(zip(lower, obj.name)) if a != b), len(lower))
    return singular, singular[:common] + obj.name[common:]


def _spaced(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", " ", camel).lower()


# -- schemas: msgspec's JSON Schema, in OpenAPI 3.0's dialect --

def _openapi30(node: Any) -> Any:
    """JSON Schema 2020-12 as msgspec writes it -> OpenAPI 3.0's schema objects:
    a null among anyOf becomes `nullable`, int | float one number, and what 3.0
    does not allow (empty `required`) or a reader needs not (a null default) goes."""
    if isinstance(node, list):
        return [_openapi30(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _openapi30(v) for k, v in node.items() if k != "title" and not (k == "default" and v is None)}
    if out.get("required") == []:
        del out["required"]
    options = out.pop("anyOf", None)
    if options is not None:
        nullable = {"type": "null"} in options
        options = [o for o in options if o != {"type": "null"}]
        if {o.get("type") for o in options} == {"integer", "number"} and all(len(o) == 1 for o in options):
            options = [{"type": "number"}]  # a JSON number is either
        out.update(options[0] if len(options) == 1 else {"anyOf": options})
        if nullable:
            out["nullable"] = True
    return out


def _structs(types: Iterable[mi.Type]) -> Iterator[mi.StructType]:
    """The structs among `types` and the structs they hold (line items)."""
    for t in types:
        if isinstance(t, mi.StructType):
            yield t
            yield from _structs(f.type for f in t.fields)
        elif isinstance(t, mi.UnionType):
            yield from _structs(t.types)
        elif isinstance(t, mi.ListType):
            yield from _structs((t.item_type,))


def _datetimes(struct: mi.StructType) -> list[str]:
    """Its fields holding a datetime: msgspec gives them no format, as the
    models also read one without an offset; the gateway answers RFC 3339."""
    return [f.encode_name for f in struct.fields
            if any(isinstance(t, mi.DateTimeType) for t in (f.type.types if isinstance(f.type, mi.UnionType) else (f.type,)))]


def _schemas(models: Mapping[type[msgspec.Struct], str]) -> dict[str, Any]:
    """The models' schemas under the given names, and those of the models they hold under their own."""
    _, components = msgspec.json.schema_components(list(models), ref_template=SCHEMAS + "{name}")
    dated = {struct.cls.__name__: _datetimes(struct) for struct in _structs(mi.multi_type_info(list(models)))}
    renamed = {model.__name__: name for model, name in models.items()}
    out = {}
    for name, schema in components.items():
        schema = _openapi30(schema)
        for field in dated[name]:
            schema["properties"][field]["format"] = "date-time"
        out[renamed.get(name, name)] = schema
    return _rename_refs(out, renamed)


def _rename_refs(node: Any, renamed: Mapping[str, str]) -> Any:
    if isinstance(node, list):
        return [_rename_refs(n, renamed) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _rename_refs(v, renamed) for k, v in node.items()}
    ref = out.get("$ref", "")
    if ref.startswith(SCHEMAS):
        name = ref[len(SCHEMAS):]
        out["$ref"] = SCHEMAS + renamed.get(name, name)
    return out


def _ref(name: str) -> dict[str, str]:
    return {"$ref": SCHEMAS + name}


# -- operations --

_CONNECTION_TOKEN = {"name": "x-connection-token", "in": "header", "required": True,
                     "description": "The connection token", "schema": {"type": "string"}}
_REMOTE_DATA = {"name": "remote_data", "in": "query", "required": False,
                "description": "Set to true to include data from the original software.", "schema": {"type": "boolean"}}
_LIMIT = {"name": "limit", "in": "query", "required": False, "description": "Set to get the number of records.",
          "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}}
_CURSOR = {"name": "cursor", "in": "query", "required": False,
           "description": "Set to get the number of records after this cursor.", "schema": {"type": "string"}}
_IDEMPOTENCY_KEY = {"name": "Idempotency-Key", "in": "header", "required": False,
                    "description": "Creates the record once: a retry with the same key and body gets the first answer.",
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255}}


def _id(obj: UnifiedObject) -> dict[str, Any]:
    return {"name": "id", "in": "path", "required": True,
            "description": f"id of the {_spaced(_words(obj)[0])} you want to retrieve.", "schema": {"type": "string"}}


def _json(schema: dict[str, Any], description: str = "", headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


_CREATED_HEADERS = {
    IGNORED_HEADER: {"description": "The members of the body that did not reach the provider", "schema": {"type": "string"}},
    UNMAPPED_HEADER: {"description": "The provider created the record but its answer does not unify; remote_data holds it",
                      "schema": {"type": "string"}},
}


def _operation(kind: str, obj: UnifiedObject) -> dict[str, Any]:
    singular, plural = _words(obj)
    output = _ref(_component(obj, "Output"))
    if kind == "list":
        op = {"operationId": f"listAccounting{plural}", "summary": f"List {_spaced(plural)}",
              "parameters": [_CONNECTION_TOKEN, _REMOTE_DATA, _LIMIT, _CURSOR],
              "responses": {"200": _json({"allOf": [_ref("PaginatedDto"),
                                                    {"properties": {"data": {"type": "array", "items": output}}}]})}}
    elif kind == "retrieve":
        op = {"operationId": f"retrieveAccounting{singular}", "summary": f"Retrieve a {_spaced(singular)}",
              "parameters": [_CONNECTION_TOKEN, _id(obj), _REMOTE_DATA],
              "responses": {"200": _json(output)}}
    else:
        op = {"operationId": f"createAccounting{singular}", "summary": f"Create a {_spaced(singular)}",
              "parameters": [_CONNECTION_TOKEN, _REMOTE_DATA, _IDEMPOTENCY_KEY],
              "requestBody": {"required": True, "content": {"application/json": {
                  "schema": _ref(_component(obj, "Input"))}}},
              "responses": {"201": _json(output, headers=_CREATED_HEADERS)}}
    for status in sorted(_ERRORS + (_CREATE_ERRORS if kind == "create" else ())):
        op["responses"][str(status)] = _json(_ref("Error"), HTTPStatus(status).phrase)
    op["tags"] = [f"accounting/{obj.name}"]
    return op


def _service(endpoint: Callable) -> dict[str, Any]:
    """A service endpoint described by its docstring: its first sentence the
    summary, the whole the description; YAML after a `---` line, as
    Starlette's SchemaGenerator reads it, the rest of the operation."""
    text, _, spec = (inspect.getdoc(endpoint) or "").partition("\n---\n")
    prose = " ".join(text.split())
    summary = prose.partition(". ")[0].removesuffix(".")
    op: dict[str, Any] = {"summary": summary, "security": []}
    if prose.removesuffix(".") != summary:
        op["description"] = prose
    if spec:
        op.update(yaml.safe_load(spec))
    op.setdefault("responses", {"200": {"description": HTTPStatus.OK.phrase}})
    return op


def describe(served: Mapping[str, tuple[str, ...]], endpoints: Mapping[str, Callable]) -> dict[str, Any]:
    """The OpenAPI document. `served`: the unified API's methods by route, as
    Gateway.served() gives them; `endpoints`: the service endpoints by path."""
    paths: dict[str, Any] = {}
    for obj in OBJECTS.values():
        for route, methods in served.items():
            path = f"{PREFIX}{obj.name}" + ("/{id}" if route == "record" else "")
            for method in methods:
                kind = _KINDS.get((route, method))
                if kind is None:
                    raise ValueError(f"gateway/openapi.py does not describe {method} on a unified {route}")
                if kind == "create" and obj.input is None:
                    continue  # records.create answers 405 for it
                paths.setdefault(path, {})[method.lower()] = _operation(kind, obj)
    for path, endpoint in endpoints.items():
        paths[path] = {"get": _service(endpoint)}
    models: dict[type[msgspec.Struct], str] = {PaginatedDto: "PaginatedDto", Error: "Error"}
    for obj in OBJECTS.values():
        models[obj.output] = _component(obj, "Output")
        if obj.input is not None:
            models[obj.input] = _component(obj, "Input")
    return {
        "openapi": "3.0.3",
        "info": {"title": "gateway", "version": metadata.version("gateway"),
                 "description": "A Panora-compatible unified accounting API: Panora's paths, headers, "
                                "parameters and bodies, translated for each connection's provider."},
        "paths": paths,
        "components": {"schemas": _schemas(models),
                       "securitySchemes": {"api_key": {"type": "apiKey", "in": "header", "name": "x-api-key"}}},
        "security": [{"api_key": []}],
    }


# -- the docs page --

_INIT = 'SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true, validatorUrl: null});'
_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>gateway API</title>
<link rel="stylesheet" href="{ASSETS}/swagger-ui.css">
<link rel="icon" type="image/png" href="{ASSETS}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{ASSETS}/swagger-ui-bundle.js"></script>
<script>{_INIT}</script>
</body>
</html>
"""
# The browser itself holds the page to the gateway's own assets: anything else would be refused.
_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        f"script-src 'self' 'sha256-{base64.b64encode(hashlib.sha256(_INIT.encode()).digest()).decode()}'")


class Docs:
    """The endpoints: /openapi.json, /docs and the page's assets under /docs/assets."""

    def __init__(self, served: Mapping[str, tuple[str, ...]], endpoints: Mapping[str, Callable]):
        self._description = msgspec.json.encode(describe(served, endpoints))
        self.assets = StaticFiles(directory=swagger_ui_path)

    async def openapi(self, request: Request) -> Response:
        """The OpenAPI 3.0 description of this gateway's API."""
        return Response(self._description, media_type="application/json")

    async def page(self, request: Request) -> Response:
        """The API's docs page."""
        return HTMLResponse(_PAGE, headers={"Content-Security-Policy": _CSP})
