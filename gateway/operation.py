"""A compiled operation: one unified call -> one provider request, and back.

Everything here is pure: the request document goes in, an `UpstreamRequest`
comes out; a decoded provider response goes in, records come out.

What goes wrong on the way says whose it is: a request the provider cannot
take (a check the mapping declares, a value no function can convert) is a
`RequestRefused` naming the unified field or the context key to set; an
expression that fails on a request it should serve is a `MappingBug` naming
the mapping's key.
"""

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import msgspec
from jmespath import Options
from jmespath.exceptions import JMESPathError, JMESPathTypeError

from .expressions import ExpressionError, _is_false, compile_expression, compile_template, reads, strip_nulls
from .functions import ConversionError
from .ignored import Reach
from .unify import page_decoder

if TYPE_CHECKING:
    from .mapping import CheckSpec, OperationSpec
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


class Violation(msgspec.Struct, omit_defaults=True):
    """One thing the request cannot give the provider, and where it would come from."""

    message: str
    path: str | None = None  # the unified field: $.line_items[0].value
    context_key: str | None = None  # or the connection's context key that supplies it
    accepted: list | None = None  # an enum's values


class RequestRefused(TranslationError):
    """Every check the request fails, before any call (a 422 naming the fields)."""

    def __init__(self, violations: list[Violation]):
        super().__init__("; ".join(v.message for v in violations))
        self.violations = violations


class MappingBug(TranslationError):
    """An expression failing on a request the mapping should serve: the mapping's
    fault, not the caller's (a 500 naming the mapping's key)."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class Operation:
    __slots__ = ("key", "verb", "spec", "unifier", "method", "when", "path", "query", "headers", "body",
                 "record", "records", "total", "next", "more", "count", "checks", "consumed", "reach", "page_decoder")

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
        self.more = compile_expression(spec.paging.more, f"{key}.paging.more") if spec.paging.more else None
        if spec.paging.page_size is not None and spec.paging.style != "page":
            raise ExpressionError(f"{key}.paging.page_size", f"a page size numbers pages: style page only, not {spec.paging.style}")
        if spec.paging.more is not None and spec.paging.style not in ("offset", "page"):
            raise ExpressionError(f"{key}.paging.more", f"offset and page styles only, not {spec.paging.style}: a token "
                                                        "or link style ends where the provider names no next page")
        self.checks = [Check(name, check, f"{key}.checks.{name}") for name, check in spec.checks.items()]
        paging = [e for e in (self.total, self.next, self.more, self.count) if e]
        self.page_decoder = page_decoder(self.records, paging, unifier) if verb == "list" else None
        request_side = [e for e in (self.when, self.query, self.headers, self.body) if e is not None]
        request_side += [e for e in self.path if not isinstance(e, str)]
        self.consumed = set().union(*(reads(e) for e in request_side)) if request_side else set()
        self.reach = Reach.of(self.when, request_side[1:] if self.when is not None else request_side)

    def applies(self, doc: dict, options: Options) -> bool:
        return self.when is None or bool(self._search(self.when, doc, options, "when"))

    def check(self, doc: dict, options: Options) -> None:
        """The mapping's checks, all of them: one 422 names every field at fault."""
        violations = [v for check in self.checks for v in check.run(self, doc, options)]
        if violations:
            raise RequestRefused(violations)

    def request(self, doc: dict, options: Options) -> UpstreamRequest:
        self.check(doc, options)
        path = "".join(part if isinstance(part, str) else _path_value(self._search(part, doc, options, "path"), part)
                       for part in self.path)
        query = query_pairs(self._search(self.query, doc, options, "query")) if self.query else []
        headers = ({k: str(v) for k, v in strip_nulls(self._search(self.headers, doc, options, "headers") or {}).items()}
                   if self.headers else {})
        body = strip_nulls(self._search(self.body, doc, options, "body")) if self.body else None
        return UpstreamRequest(self.method, path, query, headers, body)

    def _search(self, expression, doc: dict, options: Options, part: str) -> Any:
        try:
            return expression.search(doc, options=options)
        except ConversionError as exc:
            paths = _locate(doc, exc.value, self.consumed)
            if not paths:  # not the caller's value: the mapping converts what it made itself
                raise MappingBug(f"{self.key}.{part}", exc.reason) from None
            raise RequestRefused([_violation_at(p, exc.reason, exc.accepted) for p in paths]) from None
        except JMESPathTypeError as exc:
            # The body's typed fields are checked before: only free-form ones
            # (field_mappings) can hold a value of the wrong type.
            paths = [p for p in _locate(doc, exc.current_value, self.consumed) if p.startswith("$.field_mappings")]
            if paths:
                raise RequestRefused([Violation(f"{p}: {exc}", path=p) for p in paths]) from None
            raise MappingBug(f"{self.key}.{part}", str(exc)) from None
        except (JMESPathError, ValueError, TypeError, OverflowError) as exc:
            raise MappingBug(f"{self.key}.{part}", str(exc)) from None

    def unify(self, record: Any, options: Options, remote_data: bool, body: dict | None = None) -> Any:
        output = self.unifier.unify(record, options, remote_data)
        for name in self.spec.echo:
            if body and body.get(name) is not None:
                setattr(output, name, body[name])
        return output

    def ignored(self, doc: dict, options: Options | None = None) -> list[str]:
        """The non-empty body fields this request does not carry upstream (see gateway/ignored.py)."""
        return self.reach.ignored(doc, options)


_CHECK_PATH = re.compile(r"^(body|context|query|id)((?:\.[A-Za-z_][A-Za-z0-9_]*|\[\])*)$")


def check_path(text: str, key: str) -> tuple[str, ...]:
    """`body.line_items[].value` -> ("body", "line_items", "[]", "value")."""
    match = _CHECK_PATH.match(text)
    if not match:
        raise ExpressionError(key, f"{text!r} is not a path of the request document: body.NAME (.NAME or [] for "
                                   "each element of a list, e.g. body.line_items[].value), context.KEY, query.NAME or id")
    return (match.group(1), *re.findall(r"[A-Za-z_][A-Za-z0-9_]*|\[\]", match.group(2)))


def _values_at(value: Any, parts: tuple[str, ...], where: str) -> list[tuple[str, Any]]:
    """The values a check path names, each with where it sits ($.line_items[0].value);
    a missing member is there as None, a missing list has no elements."""
    if not parts:
        return [(where, value)]
    head, rest = parts[0], parts[1:]
    if head == "[]":
        items = value if isinstance(value, list) else []
        return [found for i, item in enumerate(items) for found in _values_at(item, rest, f"{where}[{i}]")]
    member = value.get(head) if isinstance(value, dict) else None
    if member is None and "[]" in rest:
        return []
    return _values_at(member, rest, f"{where}.{head}")


def _name(parts: tuple[str, ...]) -> str:
    """How a caller reads a request document path: $.x for the body, the context key, query.x."""
    if parts[0] == "body":
        return "$" + "".join("[]" if p == "[]" else f".{p}" for p in parts[1:])
    if parts[0] == "context":
        return f"the connection's context key {'.'.join(parts[1:])}"
    return ".".join(parts)


class Check:
    """What the provider needs of one value of the request document (the
    mapping's `checks`): that it be there, maybe only when an expression holds,
    supplied by it or by one of its alternatives; that it be one of `enum`."""

    __slots__ = ("key", "part", "parts", "root", "required", "alternatives", "enum", "pattern", "why", "context_key")

    def __init__(self, name: str, spec: "CheckSpec", key: str):
        self.key = key
        self.part = f"checks.{name}.required"  # where, in its operation, a `required` that fails sits
        self.parts = check_path(name, key)
        self.root = "$" if self.parts[0] == "body" else self.parts[0]
        self.required = (compile_expression(spec.required, f"{key}.required") if isinstance(spec.required, str)
                         else spec.required)
        self.alternatives = [check_path(other, f"{key}.or") for other in spec.or_]
        self.enum = spec.enum
        try:
            self.pattern = re.compile(spec.pattern) if spec.pattern is not None else None
        except re.error as exc:
            raise ExpressionError(f"{key}.pattern", f"not a regular expression: {exc}") from None
        self.why = f" ({spec.why})" if spec.why else ""
        context = [p for p in (self.parts, *self.alternatives) if p[0] == "context"]
        self.context_key = ".".join(context[0][1:]) if context else None

    def run(self, op: Operation, doc: dict, options: Options) -> list[Violation]:
        found = _values_at(doc.get(self.parts[0]), self.parts[1:], self.root)
        out = []
        if self.enum is not None:
            for where, value in found:
                if value is not None and value not in self.enum:
                    out.append(self._violation(f"{where}: {value!r} is not accepted here; accepted: "
                                               f"{', '.join(map(str, self.enum))}{self.why}", where, self.enum))
        if self.pattern is not None:
            for where, value in found:
                if value is not None and not (isinstance(value, str) and self.pattern.fullmatch(value)):
                    out.append(self._violation(f"{where}: {value!r} does not match {self.pattern.pattern}{self.why}",
                                               where))
        # `required` is evaluated only where something is missing.
        missing = [where for where, value in found if value is None or value == ""] if self.required is not False else []
        if not missing or self._supplied(doc) or (
                self.required is not True and _is_false(op._search(self.required, doc, options, self.part))):
            return out
        others = [_name(p) for p in self.alternatives]
        for where in missing:
            names = [where if self.root == "$" else _name(self.parts), *others]
            out.append(self._violation(f"{' or '.join(names)} must be set{self.why}", where))
        return out

    def _supplied(self, doc: dict) -> bool:
        for parts in self.alternatives:
            if any(v is not None and v != "" for _, v in _values_at(doc.get(parts[0]), parts[1:], "")):
                return True
        return False

    def _violation(self, message: str, where: str, accepted: list | None = None) -> Violation:
        return Violation(message, path=where if where.startswith("$") else None, context_key=self.context_key,
                         accepted=accepted)


def _locate(doc: dict, value: Any, consumed: set) -> list[str]:
    """Where in the caller's request a value a function could not convert sits:
    in the body, the paths the operation reads first, then any; a part of a
    string (split) if no whole value matches; else the path's id, a query
    parameter, or a context key the operation reads. None: the value is the
    mapping's own."""
    if value is None:
        return []
    found: list[tuple[str, tuple, Any]] = []

    def walk(node: Any, where: str, pattern: tuple) -> None:
        found.append((where, pattern, node))
        if isinstance(node, dict):
            for name, member in node.items():
                walk(member, f"{where}.{name}", pattern + (name,))
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{where}[{i}]", pattern + ("[]",))

    if isinstance(doc.get("body"), dict):
        for name, member in doc["body"].items():
            walk(member, f"$.{name}", ("body", name))
    for same in (lambda v: type(v) is type(value) and v == value,
                 lambda v: isinstance(v, str) and isinstance(value, str) and value in v):
        matches = [(where, pattern) for where, pattern, v in found if same(v)]
        read = [where for where, pattern in matches if any(pattern[:len(p)] == p for p in consumed if len(p) > 1)]
        if read or matches:
            return read or [where for where, _ in matches]
    if doc.get("id") == value:
        return ["id"]
    return ([f"query.{name}" for name, v in (doc.get("query") or {}).items() if v == value]
            or [f"context.{name}" for name, v in (doc.get("context") or {}).items()
                if v == value and ("context", name) in consumed])


def _violation_at(where: str, reason: str, accepted: list | None) -> Violation:
    """A value that cannot be converted, where `_locate` found it: a body field, the
    id or a query parameter (the caller's), or a connection's context key (its operator's)."""
    if where.startswith("context."):
        key = where.removeprefix("context.")
        return Violation(f"the connection's context key {key}: {reason}", context_key=key, accepted=accepted)
    return Violation(f"{where}: {reason}", path=where if where.startswith("$") else None, accepted=accepted)


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
        named = sorted(_name(p) for p in reads(expression) if p and p[0] in ("body", "context", "query"))
        raise TranslationError(f"path parameter {expression.expression} has no usable value"
                               + (f": set {' or '.join(named)}" if named else ""))
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
