"""JMESPath expressions and templates, compiled once when a mapping file loads.

A template is YAML whose leaves are JMESPath expressions: a mapping becomes a
multi-select hash, a list a multi-select list, a number or boolean a literal.
The whole template compiles to one expression, so rendering it is one search.
"""

import contextlib
import functools
import json
import re
from collections.abc import Callable, Iterator
from typing import Any, get_args

import jmespath
import msgspec
from jmespath import Options, functions, visitor
from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult

from .functions import BOUND

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ExpressionError(ValueError):
    """An expression or template that does not compile; `key` says where it sits."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class Expression:
    """A JMESPath expression compiled to one Python function.

    jmespath's own `search` walks the syntax tree on every call, dispatching on
    each node; mapping expressions run for every record of every response, so
    each is turned once, at load, into straight-line Python (see `_Writer`).
    Node kinds that mapping files rarely use (slices, filters, ordering
    comparisons, `&expr`) are left to jmespath's interpreter, node by node, so
    the semantics stay jmespath's."""

    __slots__ = ("expression", "parsed", "_run")

    def __init__(self, parsed: ParsedResult, record: type[msgspec.Struct] | None = None):
        self.expression = parsed.expression
        self.parsed = parsed.parsed
        self._run = _Writer(record).function(parsed.parsed, parsed.expression)

    def search(self, value: Any, options: Options | None = None) -> Any:
        functions = options.custom_functions if options is not None and options.custom_functions else _DEFAULT_FUNCTIONS
        return self._run(value, functions)

    def runner(self, options: Options | None = None) -> tuple[Callable[[Any, functions.Functions], Any], functions.Functions]:
        """`search`'s function and the functions it calls: `run(value, functions)` for each of many values."""
        return self._run, options.custom_functions if options is not None and options.custom_functions else _DEFAULT_FUNCTIONS


def compile_expression(source: str, key: str) -> Expression:
    # Mapping files repeat expressions (`id`, `context.company_id`, whole
    # templates across operations): each is compiled once per process.
    expression = _COMPILED.get(source)
    if expression is None:
        expression = _COMPILED[source] = compile_typed(source, key, None)
    return expression


_COMPILED: dict[str, Expression] = {}


def compile_typed(source: str, key: str, record: type[msgspec.Struct] | None) -> Expression:
    """An expression over one kind of record Struct (see `_Writer`), compiled for it alone."""
    try:
        return Expression(_parse(source, key), record)
    except (RecursionError, SyntaxError, MemoryError):  # Python's own limits on nesting
        raise ExpressionError(key, f"expression nested too deeply: {source[:80]!r}") from None


def _parse(source: str, key: str) -> ParsedResult:
    try:
        return jmespath.compile(source)
    except JMESPathError as exc:
        reason = " ".join(str(exc).split())
        raise ExpressionError(key, f"bad JMESPath expression {source!r}: {reason}") from None


_DEFAULT_FUNCTIONS = functions.Functions()


def _first_call(sites: dict, types: tuple, f: functions.Functions, name: str, args: list) -> Any:
    result = f.call_function(name, args)  # checks the arguments, raising jmespath's own error
    if not any(isinstance(a, list) for a in args):  # an array's check also depends on its elements
        sites[types] = f.FUNCTION_TABLE[name]["function"]
    return result


class _literal_call:
    """A call site whose arguments are all literals, remembering its value for
    the last `f` it was called with. Only immutable values are kept, since
    every record of a page would share them."""

    __slots__ = ("name", "f", "result")

    def __init__(self, name: str):
        self.name = name
        self.f = self.result = None

    def __call__(self, f: functions.Functions, args: list) -> Any:
        result = f.call_function(self.name, args)
        if result is None or result.__class__ in (str, int, float, bool):
            self.f, self.result = f, result
        return result


_NO_MEMBERS: dict = {}  # only ever read
_VALUE_MAPS = frozenset({"to_unified", "to_remote"})  # gateway/functions.py's value map lookups
_SCALARS = frozenset({str, int, float, bool, type(None)})
_MISSING = object()


def _remember(memo: dict, key: tuple, value: Any) -> None:
    if len(memo) >= 256:  # a map's values are few; a page of free text is not kept
        memo.clear()
    memo[key] = value


def _is_false(value: Any) -> bool:
    return value == "" or value == [] or value == {} or value is None or value is False


class _Writer:
    """Writes the Python source of one expression: a statement or a few per
    syntax-tree node, each leaving its value in a fresh local. The function
    takes the current value `v` and the bound functions `f`.

    A node met again on the same value, in the same block or one enclosing it,
    reuses the first one's local: templates repeat themselves (`id` and
    `remote_id: id`, one date read into two fields, `body.` before every
    field), and every node is pure, functions included.

    No text from the mapping file reaches the source as code: field names go
    in through repr(), literals and fallbacks as named constants.

    `record`: the msgspec Struct the value is (gateway/shapes.py's, for a
    page's records), never null. A member of it is an attribute read, and a
    member that is itself a Struct (or null) is read the same way: no dict
    lookups, no object tests."""

    def __init__(self, record: type[msgspec.Struct] | None = None) -> None:
        self.lines: list[str] = []
        self.constants: dict[str, Any] = {"_is_false": _is_false, "_NO_MEMBERS": _NO_MEMBERS, "_SCALARS": _SCALARS,
                                          "_MISSING": _MISSING}
        self.temps = 0
        self.blocks: list[dict[tuple[str, str], str]] = [{}]  # per open block: (node, value) -> local
        self.structs: dict[str, tuple[type[msgspec.Struct], bool]] = {"v": (record, False)} if record else {}  # local -> (Struct, may be null)
        self.layouts: dict[type[msgspec.Struct], dict[str, tuple[str, list]]] = {}

    def function(self, node: dict, expression: str):
        self.expression = expression
        result = self.emit(node, "v", 1)
        source = "def run(v, f):\n" + "\n".join(self.lines) + f"\n    return {result}\n"
        namespace = dict(self.constants)
        exec(compile(source, f"<jmespath {expression[:60]!r}>", "exec"), namespace)
        return namespace["run"]

    def temp(self) -> str:
        self.temps += 1
        return f"t{self.temps}"

    def constant(self, value: Any) -> str:
        name = f"c{len(self.constants)}"
        self.constants[name] = value
        return name

    def members(self, src: str, depth: int) -> str:
        """A local holding `src` if it is an object, else an empty one: a field of
        anything else is null. Tested once per value and block, not per field."""
        key = ("members", src)
        for block in reversed(self.blocks):
            if key in block:
                return block[key]
        out = self.blocks[-1][key] = self.temp()
        self.put(depth, f"{out} = {src} if isinstance({src}, dict) else _NO_MEMBERS")
        return out

    def attribute(self, src: str, name: str, out: str, depth: int) -> None:
        struct, nullable = self.structs[src]
        if struct not in self.layouts:  # a member's attribute, and its Struct if it is one
            self.layouts[struct] = {f.encode_name: (f.name, [t for t in get_args(f.type) if isinstance(t, type)
                                                              and issubclass(t, msgspec.Struct)])
                                    for f in msgspec.structs.fields(struct)}
        if name not in self.layouts[struct]:
            raise ExpressionError(self.expression, f"{name!r} is not a member of {struct.__name__}")  # whole_reads missed a read
        attribute, inner = self.layouts[struct][name]
        read = f"{src}.{attribute}"
        self.put(depth, f"{out} = {read} if {src} is not None else None" if nullable else f"{out} = {read}")
        if inner:
            self.structs[out] = (inner[0], True)

    def put(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def emit(self, node: dict, src: str, depth: int) -> str:
        """Statements computing `node` on the value in `src`; returns the local holding the result."""
        if node["type"] in ("current", "identity", "literal"):
            return self.node(node, src, depth)
        key = (json.dumps(node, sort_keys=True, default=repr), src)
        for block in reversed(self.blocks):
            if key in block:
                return block[key]
        out = self.blocks[-1][key] = self.node(node, src, depth)
        return out

    @contextlib.contextmanager
    def block(self) -> Iterator[None]:
        """Statements written inside an `if`, `else` or `for`: their locals are not set on every path."""
        self.blocks.append({})
        try:
            yield
        finally:
            self.blocks.pop()

    def node(self, node: dict, src: str, depth: int) -> str:  # noqa: C901 - one branch per node kind, as in jmespath's visitor
        kind = node["type"]
        children = node.get("children", [])
        if kind in ("current", "identity"):
            return src
        if kind == "literal":
            return self.constant(node["value"])
        if kind in ("subexpression", "index_expression", "pipe"):
            for child in children:
                src = self.emit(child, src, depth)
            return src
        out = self.temp()
        put = functools.partial(self.put, depth)
        if kind == "field" and src in self.structs:
            self.attribute(src, node["value"], out, depth)
        elif kind == "field":
            put(f"{out} = {self.members(src, depth)}.get({node['value']!r})")
        elif kind == "index" and isinstance(node["value"], int):
            index = node["value"]
            put(f"{out} = {src}[{index}] if isinstance({src}, list) and {-index - 1 if index < 0 else index} < len({src}) else None")
        elif kind in ("multi_select_dict", "multi_select_list"):
            put(f"if {src} is None:")
            self.put(depth + 1, f"{out} = None")
            put("else:")
            with self.block():
                values = [self.emit(c["children"][0] if kind == "multi_select_dict" else c, src, depth + 1) for c in children]
            if kind == "multi_select_dict":
                items = ", ".join(f"{c['value']!r}: {v}" for c, v in zip(children, values))
                self.put(depth + 1, f"{out} = {{{items}}}")
            else:
                self.put(depth + 1, f"{out} = [{', '.join(values)}]")
        elif kind in ("or_expression", "and_expression"):
            left = self.emit(children[0], src, depth)
            put(f"if {'not ' if kind == 'or_expression' else ''}_is_false({left}):")
            self.put(depth + 1, f"{out} = {left}")
            put("else:")
            with self.block():
                self.put(depth + 1, f"{out} = {self.emit(children[1], src, depth + 1)}")
        elif kind == "not_expression":
            inner = self.emit(children[0], src, depth)
            # 0 is true in JMESPath, so !0 is false.
            put(f"{out} = False if isinstance({inner}, (int, float)) and not isinstance({inner}, bool) "
                f"and {inner} == 0 else not {inner}")
        elif kind == "comparator" and node["value"] in ("eq", "ne"):
            left, right = self.emit(children[0], src, depth), self.emit(children[1], src, depth)
            if any(c["type"] == "literal" and isinstance(c["value"], str) for c in children):
                # Against a string, JMESPath's equality is Python's: its special
                # case (0 and 1 are not false and true) concerns numbers alone.
                put(f"{out} = {left} {'==' if node['value'] == 'eq' else '!='} {right}")
            else:
                compare = self.constant(visitor.TreeInterpreter.COMPARATOR_FUNC[node["value"]])
                put(f"{out} = {compare}({left}, {right})")
        elif kind == "function_expression" and all(c["type"] != "expref" for c in children):
            args = [self.emit(c, src, depth) for c in children]
            name = node["value"]
            bind = BOUND.get(name)
            bound = (bind(children[1]["value"])
                     if bind and len(children) == 2 and children[0]["type"] != "literal" and children[1]["type"] == "literal"
                     else None)
            if bound is not None:  # gateway/functions.py's: the literals checked and bound once
                put(f"{out} = {self.constant(bound)}({args[0]})")
                return out
            if all(c["type"] == "literal" for c in children):
                # Functions are pure, and bound once per connection: a call of
                # literals alone (`context('company_id')`) is a constant of `f`.
                memo = self.constant(_literal_call(name))
                put(f"{out} = {memo}.result if {memo}.f is f else {memo}(f, [{', '.join(args)}])")
                return out
            # jmespath checks argument types on every call, which costs more than
            # most functions themselves; the check depends only on the types, so
            # each call site remembers the type combinations that passed (a
            # literal's type is known here).
            sites, types, checked = self.constant({}), self.temp(), self.temp()
            varying = [a for a, c in zip(args, children) if c["type"] != "literal"]
            call = [f"{types} = (type(f), {''.join(f'type({a}), ' for a in varying)})",
                    f"{checked} = {sites}.get({types})",
                    f"{out} = {checked}(f, {', '.join(args)}) if {checked} is not None "
                    f"else {self.constant(_first_call)}({sites}, {types}, f, {name!r}, [{', '.join(args)}])"]
            if name not in _VALUE_MAPS or len(varying) != 1:
                for line in call:
                    put(line)
                return out
            # A page's records repeat a few enum values: each call site keeps
            # what its value map gave, per connection.
            (value,), memo, key = varying, self.constant({}), self.temp()
            # The class too: 1, 1.0 and True are one key to a dict, but a value no map holds comes back as it is.
            put(f"{key} = (f, {value}.__class__, {value}) if {value}.__class__ in _SCALARS else None")
            put(f"{out} = {memo}.get({key}, _MISSING) if {key} is not None else _MISSING")
            put(f"if {out} is _MISSING:")
            for line in call:
                self.put(depth + 1, line)
            self.put(depth + 1, f"if {key} is not None and {out}.__class__ in _SCALARS:")
            self.put(depth + 2, f"{self.constant(_remember)}({memo}, {key}, {out})")
        elif kind in ("projection", "flatten"):
            # Both walk a list into a new one, null when the value is not a list.
            base = self.emit(children[0], src, depth)
            item = self.temp()
            put(f"if isinstance({base}, list):")
            self.put(depth + 1, f"{out} = []")
            self.put(depth + 1, f"for {item} in {base}:")
            if kind == "projection":
                with self.block():
                    each = self.emit(children[1], item, depth + 2)
                self.put(depth + 2, f"if {each} is not None:")
                self.put(depth + 3, f"{out}.append({each})")
            else:
                self.put(depth + 2, f"{out}.extend({item}) if isinstance({item}, list) else {out}.append({item})")
            put("else:")
            self.put(depth + 1, f"{out} = None")
        else:  # Anything else: jmespath's own interpreter, for this subtree only, on plain objects.
            interpret = self.constant(lambda v, f, node=node: visitor.TreeInterpreter(Options(custom_functions=f)).visit(node, v))
            put(f"{out} = {interpret}({self.constant(msgspec.to_builtins) + f'({src})' if src in self.structs else src}, f)")
        return out


def _source(template: Any, key: str) -> str:
    if isinstance(template, str):
        if template.startswith("="):  # a literal string: `=ACCREC` is "ACCREC", no JMESPath quoting
            return "`" + json.dumps(template[1:]).replace("`", "\\`") + "`"
        _parse(template, key)  # report the leaf, not the whole template
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


def parse_template(template: Any, key: str) -> ParsedResult:
    """A template parsed and not compiled, for what reads its syntax tree alone."""
    return _parse(_source(template, key), key)


def leaves(template: Any, key: str) -> Iterator[tuple[str, ParsedResult]]:
    """A template's expressions, parsed (checked, never run), each with its own key:
    where a mistake in one is reported."""
    if isinstance(template, str):
        if not template.startswith("="):
            yield key, _parse(template, key)
    elif isinstance(template, dict):
        for name, value in template.items():
            yield from leaves(value, f"{key}.{name}")
    elif isinstance(template, list):
        for i, value in enumerate(template):
            yield from leaves(value, f"{key}[{i}]")


def strip_nulls(value: Any) -> Any:
    """Drop null members, and objects left empty by that: providers read a
    present null as "clear this field", which a mapping never means."""
    if isinstance(value, dict):
        out = {}
        for name, member in value.items():
            if member is None:
                continue
            kind = member.__class__  # decoded JSON and rendered templates hold plain dicts and lists
            if kind is dict or kind is list:
                member = strip_nulls(member)
                if member == {}:
                    continue
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
    if kind in ("literal", "expref"):
        # &expr reads the elements of another argument (map, sort_by), not the document.
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


def whole_reads(expression: Expression | ParsedResult) -> set[tuple[str, ...]]:
    """The document paths whose values an expression looks at as a whole,
    reached by member lookups alone; `()` is the document itself.

    Stricter than `reads`: a value is listed whole as soon as anything but a
    member lookup touches it (a test, a function, an index, a projection), so
    nothing the expression can observe lies outside these paths: a decoder may
    leave the rest of the document out."""
    return _whole(expression.parsed)


# Nodes that evaluate their first child on the value at hand, and the rest on what it gives.
_CHAINS = {"subexpression", "index_expression", "pipe", "projection", "value_projection", "filter_projection", "flatten"}
# Nodes that evaluate every child on the value at hand.
_SIBLINGS = {"comparator", "or_expression", "and_expression", "not_expression", "function_expression",
             "multi_select_dict", "multi_select_list", "key_val_pair"}


def _whole(node: dict) -> set[tuple[str, ...]]:
    kind = node["type"]
    children = node.get("children", [])
    path = field_path(node)
    if path is not None:
        return {path}
    if kind in ("literal", "expref"):  # &expr reads what another argument gives
        return set()
    if kind in _CHAINS:
        return _whole(children[0])
    if kind in _SIBLINGS:
        return set().union(*(_whole(c) for c in children))
    return {()}  # @, or what this does not know: the whole value


def field_path(node: dict) -> tuple[str, ...] | None:
    """`a.b.c` as ("a", "b", "c"); None for any other expression."""
    if node["type"] == "field":
        return (node["value"],)
    if node["type"] == "subexpression" and all(c["type"] == "field" for c in node["children"]):
        return tuple(c["value"] for c in node["children"])
    return None


def context_reads(expression: Expression | ParsedResult) -> set[str]:
    """The connection context keys an expression reads: `context.X` in the
    request document, or `context('X')` where the document has no `context`."""
    keys = {path[1] for path in reads(expression) if len(path) > 1 and path[0] == "context"}
    keys.update(args[0]["value"] for name, args in calls(expression)
                if name == "context" and args and args[0]["type"] == "literal" and isinstance(args[0]["value"], str))
    return keys


def calls(expression: Expression | ParsedResult) -> Iterator[tuple[str, list[dict]]]:
    """Every function call in an expression: its name and its argument nodes."""
    pending = [expression.parsed]
    while pending:
        node = pending.pop()
        children = [c for c in node.get("children", []) if isinstance(c, dict)]
        if node["type"] == "function_expression":
            yield node["value"], children
        pending.extend(children)
