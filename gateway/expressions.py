"""JMESPath expressions and templates, compiled once when a mapping file loads.

A template is YAML whose leaves are JMESPath expressions: a mapping becomes a
multi-select hash, a list a multi-select list, a number or boolean a literal.
The whole template compiles to one expression, so rendering it is one search.
"""

import json
import re
from typing import Any

import jmespath
from jmespath import Options, functions, visitor
from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ExpressionError(ValueError):
    """An expression or template that does not compile; `key` says where it sits."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class Expression:
    """A JMESPath expression compiled to Python closures.

    jmespath's own `search` walks the syntax tree on every call, dispatching on
    each node; mapping expressions run for every record of every response, so
    they are turned into nested closures once, at load. Node kinds that mapping
    files rarely use (slices, filters, ordering comparisons, `&expr`) are left
    to jmespath's interpreter, node by node, so the semantics stay jmespath's."""

    __slots__ = ("expression", "parsed", "_run")

    def __init__(self, parsed: ParsedResult):
        self.expression = parsed.expression
        self.parsed = parsed.parsed
        self._run = _closure(parsed.parsed)

    def search(self, value: Any, options: Options | None = None) -> Any:
        functions = options.custom_functions if options is not None and options.custom_functions else _DEFAULT_FUNCTIONS
        return self._run(value, functions)


def compile_expression(source: str, key: str) -> Expression:
    try:
        return Expression(jmespath.compile(source))
    except JMESPathError as exc:
        reason = " ".join(str(exc).split())
        raise ExpressionError(key, f"bad JMESPath expression {source!r}: {reason}") from None


_DEFAULT_FUNCTIONS = functions.Functions()


def _is_false(value: Any) -> bool:
    return value == "" or value == [] or value == {} or value is None or value is False


def _closure(node: dict):  # noqa: C901 - one branch per node kind, as in jmespath's visitor
    kind = node["type"]
    children = node.get("children", [])
    if kind == "field":
        name = node["value"]
        return lambda v, f: v.get(name) if isinstance(v, dict) else None
    if kind in ("current", "identity"):
        return lambda v, f: v
    if kind == "literal":
        literal = node["value"]
        return lambda v, f: literal
    if kind in ("subexpression", "index_expression", "pipe"):
        steps = [_closure(c) for c in children]

        def chain(v, f):
            for step in steps:
                v = step(v, f)
            return v
        return chain
    if kind == "index" and isinstance(node["value"], int):
        index = node["value"]
        return lambda v, f: v[index] if isinstance(v, list) and -len(v) <= index < len(v) else None
    if kind == "multi_select_dict":
        pairs = [(c["value"], _closure(c["children"][0])) for c in children]
        return lambda v, f: None if v is None else {k: run(v, f) for k, run in pairs}
    if kind == "multi_select_list":
        items = [_closure(c) for c in children]
        return lambda v, f: None if v is None else [run(v, f) for run in items]
    if kind == "or_expression":
        left, right = _closure(children[0]), _closure(children[1])

        def either(v, f):
            matched = left(v, f)
            return right(v, f) if _is_false(matched) else matched
        return either
    if kind == "and_expression":
        left, right = _closure(children[0]), _closure(children[1])

        def both(v, f):
            matched = left(v, f)
            return matched if _is_false(matched) else right(v, f)
        return both
    if kind == "not_expression":
        inner = _closure(children[0])

        def negate(v, f):
            result = inner(v, f)
            if isinstance(result, (int, float)) and not isinstance(result, bool) and result == 0:
                return False  # 0 is true in JMESPath
            return not result
        return negate
    if kind == "comparator" and node["value"] in ("eq", "ne"):
        left, right = _closure(children[0]), _closure(children[1])
        compare = visitor.TreeInterpreter.COMPARATOR_FUNC[node["value"]]
        return lambda v, f: compare(left(v, f), right(v, f))
    if kind == "function_expression" and all(c["type"] != "expref" for c in children):
        name = node["value"]
        args = [_closure(c) for c in children]
        return lambda v, f: f.call_function(name, [a(v, f) for a in args])
    if kind == "projection":
        base, each = _closure(children[0]), _closure(children[1])

        def project(v, f):
            items = base(v, f)
            if not isinstance(items, list):
                return None
            return [r for r in (each(i, f) for i in items) if r is not None]
        return project
    if kind == "flatten":
        base = _closure(children[0])

        def flatten(v, f):
            items = base(v, f)
            if not isinstance(items, list):
                return None
            merged = []
            for item in items:
                if isinstance(item, list):
                    merged.extend(item)
                else:
                    merged.append(item)
            return merged
        return flatten
    # Anything else: jmespath's own interpreter, for this subtree only.
    return lambda v, f: visitor.TreeInterpreter(Options(custom_functions=f)).visit(node, v)


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


def compile_template(template: Any, key: str) -> Expression:
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


def reads(expression: Expression | ParsedResult) -> set[tuple[str, ...]]:
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
