"""JMESPath expressions and templates, compiled once when a mapping file loads.

A template is YAML whose leaves are JMESPath expressions: a mapping becomes a
multi-select hash, a list a multi-select list, a number or boolean a literal.
The whole template compiles to one expression, so rendering it is one search.
"""

import json
import re
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ExpressionError(ValueError):
    """An expression or template that does not compile; `key` says where it sits."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def compile_expression(source: str, key: str) -> ParsedResult:
    try:
        return jmespath.compile(source)
    except JMESPathError as exc:
        reason = " ".join(str(exc).split())
        raise ExpressionError(key, f"bad JMESPath expression {source!r}: {reason}") from None


def _source(template: Any, key: str) -> str:
    if isinstance(template, str):
        compile_expression(template, key)  # report the leaf, not the whole template
        return f"({template})"
    if isinstance(template, dict):
        if not template:
            return "`{}`"
        pairs = []
        for name, value in template.items():
            label = name if _IDENTIFIER.match(str(name)) else json.dumps(str(name))
            pairs.append(f"{label}: {_source(value, f'{key}.{name}')}")
        return "{" + ", ".join(pairs) + "}"
    if isinstance(template, list):
        if not template:
            return "`[]`"
        return "[" + ", ".join(_source(v, f"{key}[{i}]") for i, v in enumerate(template)) + "]"
    if template is None or isinstance(template, (bool, int, float)):
        return "`" + json.dumps(template) + "`"
    raise ExpressionError(key, f"a template leaf must be an expression, number or boolean, not {type(template).__name__}")


def compile_template(template: Any, key: str) -> ParsedResult:
    return compile_expression(_source(template, key), key)


def strip_nulls(value: Any) -> Any:
    """Drop null members, and objects left empty by that: providers read a
    present null as "clear this field", which a mapping never means."""
    if isinstance(value, dict):
        out = {}
        for name, member in value.items():
            member = strip_nulls(member)
            if member is not None and member != {}:
                out[name] = member
        return out
    if isinstance(value, list):
        return [strip_nulls(v) for v in value]
    return value


def reads(expression: ParsedResult) -> set[tuple[str, ...]]:
    """The document paths an expression reads, `[]` standing for "each element".

    Used to tell which fields of a request body a mapping carries upstream, so
    the rest can be reported as ignored rather than dropped silently."""
    return _reads(expression.parsed)


_ELEMENTWISE = {"projection", "value_projection", "filter_projection"}


def _reads(node: dict) -> set[tuple[str, ...]]:
    kind = node["type"]
    children = node.get("children", [])
    if kind == "field":
        return {(node["value"],)}
    if kind == "literal":
        return set()
    if kind == "slice":
        return {()}  # its children are the numbers start:stop:step, not nodes
    if kind in ("subexpression", "index_expression", "pipe"):
        paths = _reads(children[0])
        for child in children[1:]:
            paths = {p + q for p in paths for q in _reads(child)}
        return paths
    if kind == "flatten":
        return {p + ("[]",) for p in _reads(children[0])}
    if kind in _ELEMENTWISE:
        left = {p if p[-1:] == ("[]",) else p + ("[]",) for p in _reads(children[0])}
        right = set().union(*(_reads(c) for c in children[1:]))
        return {p + q for p in left for q in right}
    if not children:
        return {()}  # @, an index or a slice: the current value as a whole
    return set().union(*(_reads(c) for c in children))
