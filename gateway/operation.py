"""A compiled operation: one unified call -> one provider request, and back.

Everything here is pure: the request document goes in, an `UpstreamRequest`
comes out; a decoded provider response goes in, records come out.
"""

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import msgspec
from jmespath import Options
from jmespath.exceptions import JMESPathError

from .expressions import ExpressionError, compile_expression, compile_template, reads, strip_nulls
from .ignored import Reach
from .unify import page_decoder

if TYPE_CHECKING:
    from .mapping import OperationSpec
    from .unify import Unifier

_SEGMENT = re.compile(r"\{([^{}]+)\}")


class UpstreamRequest(msgspec.Struct):
    method: str
    path: str  # relative to the connection's base URL, already encoded
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: Any = None


class TranslationError(ValueError):
    """The request cannot be put in the provider's terms (a 422 to the caller)."""


class Operation:
    __slots__ = ("key", "verb", "spec", "unifier", "method", "when", "path", "query", "headers", "body",
                 "record", "records", "total", "next", "count", "consumed", "reach", "page_decoder")

    def __init__(self, spec: "OperationSpec", verb: str, key: str, unifier: "Unifier"):
        self.key = key
        self.verb = verb
        self.spec = spec
        self.unifier = unifier
        self.method = spec.method
        self.when = compile_expression(spec.when, f"{key}.when") if spec.when else None
        self.path = _compile_path(spec.path, f"{key}.path")
        self.query = compile_template(spec.query, f"{key}.query") if spec.query is not None else None
        self.headers = compile_template(spec.headers, f"{key}.headers") if spec.headers is not None else None
        self.body = compile_template(spec.body, f"{key}.body") if spec.body is not None else None
        self.record = compile_expression(spec.record, f"{key}.record")
        self.records = compile_expression(spec.records, f"{key}.records")
        self.total = compile_expression(spec.total, f"{key}.total") if spec.total else None
        self.next = compile_expression(spec.paging.next, f"{key}.paging.next") if spec.paging.next else None
        self.count = compile_expression(spec.paging.count, f"{key}.paging.count") if spec.paging.count else None
        self.page_decoder = (page_decoder(self.records, [e for e in (self.total, self.next, self.count) if e], unifier)
                             if verb == "list" else None)
        request_side = [e for e in (self.when, self.query, self.headers, self.body) if e is not None]
        request_side += [e for e in self.path if not isinstance(e, str)]
        self.consumed = set().union(*(reads(e) for e in request_side)) if request_side else set()
        self.reach = Reach.of(self.when, request_side[1:] if self.when is not None else request_side)

    def applies(self, doc: dict, options: Options) -> bool:
        return self.when is None or bool(_search(self.when, doc, options))

    def request(self, doc: dict, options: Options) -> UpstreamRequest:
        path = "".join(part if isinstance(part, str) else _path_value(_search(part, doc, options), part)
                       for part in self.path)
        query = query_pairs(_search(self.query, doc, options)) if self.query else []
        headers = {k: str(v) for k, v in strip_nulls(_search(self.headers, doc, options) or {}).items()} if self.headers else {}
        body = strip_nulls(_search(self.body, doc, options)) if self.body else None
        return UpstreamRequest(self.method, path, query, headers, body)

    def unify(self, record: Any, options: Options, remote_data: bool, body: dict | None = None) -> Any:
        output = self.unifier.unify(record, options, remote_data)
        for name in self.spec.echo:
            if body and body.get(name) is not None:
                setattr(output, name, body[name])
        return output

    def ignored(self, doc: dict, options: Options | None = None) -> list[str]:
        """The non-empty body fields this request does not carry upstream (see gateway/ignored.py)."""
        return self.reach.ignored(doc, options)


def _search(expression, doc: Any, options: Options) -> Any:
    try:
        return expression.search(doc, options=options)
    except (JMESPathError, ValueError, TypeError, OverflowError) as exc:
        raise TranslationError(f"{expression.expression}: {exc}") from None


def _compile_path(template: str, key: str) -> list:
    if not template.startswith("/"):
        raise ExpressionError(key, "a path starts with /")
    parts: list = []
    position = 0
    for match in _SEGMENT.finditer(template):
        parts.append(template[position:match.start()])
        parts.append(compile_expression(match.group(1), key))
        position = match.end()
    parts.append(template[position:])
    return [p for p in parts if p != ""]


def _path_value(value: Any, expression) -> str:
    if value is None or value == "" or isinstance(value, (dict, list, bool)):
        raise TranslationError(f"path parameter {expression.expression} has no usable value")
    text = str(value)
    if text in (".", ".."):
        raise TranslationError(f"path parameter {expression.expression} cannot be {text!r}")
    return quote(text, safe="")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def query_pairs(values: Any) -> list[tuple[str, str]]:
    out = []
    for name, value in (values or {}).items():
        if value is None:
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                raise TranslationError(f"query parameter {name} cannot be an object")
            out.append((name, _scalar(item)))
    return out
