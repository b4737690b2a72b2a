"""Which fields of a create's body reach the provider, and which do not.

A create answers `x-gateway-ignored-fields`: the body fields that did not make
it into the provider request. Which fields an operation can carry is known at
load, from its expressions; which it does carry can depend on the request, for
an expression may take one branch or another (`body.line_items[].{...} ||
[{amount: body.total_amount}]` sends the total only when there are no lines).

So the analysis runs once, at load, into a `Reach`: a tree of the body paths
the operation reads, each read under the branch conditions ("guards") it sits
behind. Per request, the body is walked against that tree, and a guard is
evaluated only when a present field depends on it.

A read is one of:
- whole: the value is carried (`body.memo`, `to_number(body.contact_id)`);
- a test: only its truth is (`body.tracking_categories && ...`, `!body.x`, a
  `when`), which carries a boolean and nothing of a string, list or object;
and a filter carries the elements its condition keeps (`[?starts_with(@, 'tag-')]`).
"""

from collections.abc import Iterable
from typing import Any

from jmespath import Options
from jmespath.parser import ParsedResult

from .expressions import Expression, _is_false

EACH = "[]"  # each element of a list
MEMBERS = "*"  # each member of an object


class Guard:
    """A branch condition: `expression`, evaluated on the value at `scope`
    (a path pattern of the request document), must be true (or false). The
    scope is a prefix of the guarded read's path: of a body read, the document
    itself or a body path the walk passes through."""

    __slots__ = ("expression", "expected", "scope")

    def __init__(self, expression: Expression, expected: bool, scope: tuple | None):
        self.expression = expression
        self.expected = expected
        self.scope = scope  # None: the value it reads is no document path; it is taken to hold

    def under(self, prefix: tuple | None) -> "Guard":
        scope = None if prefix is None or self.scope is None else prefix + self.scope
        return Guard(self.expression, self.expected, scope)


class Read:
    """A path an expression reads (relative to its input), behind `guards`.
    `plain`: the expression's value is the document's value at `path`, so what
    follows it (`.name`, `[0]`) reads inside it; a function's or an operator's
    value is not, and consumes what it reads whole."""

    __slots__ = ("path", "guards", "plain", "test")

    def __init__(self, path: tuple, guards: tuple = (), plain: bool = True, test: bool = False):
        self.path = path
        self.guards = guards
        self.plain = plain
        self.test = test

    def derived(self, test: bool = False) -> "Read":
        return Read(self.path, self.guards, False, self.test or test)

    def guarded(self, guard: Guard) -> "Read":
        return Read(self.path, self.guards + (guard,), self.plain, self.test)


def _join(prefix: Read, rest: Read) -> Read:
    """`rest`, read from the value `prefix` reads."""
    if not prefix.plain:
        return Read(prefix.path, prefix.guards + tuple(g.under(None) for g in rest.guards), False,
                    prefix.test or rest.test)
    return Read(prefix.path + rest.path, prefix.guards + tuple(g.under(prefix.path) for g in rest.guards),
                rest.plain, prefix.test or rest.test)


def _joined(prefixes: list[Read], rests: list[Read]) -> list[Read]:
    return [_join(p, r) for p in prefixes for r in rests]


def _guard(node: dict, expected: bool) -> Guard:
    return Guard(Expression(ParsedResult("<guard>", node)), expected, ())


def analyze(node: dict, test: bool = False) -> list[Read]:  # noqa: C901 - one branch per node kind
    """The reads of a parsed expression, relative to its input."""
    kind = node["type"]
    children = node.get("children", [])
    if kind == "field":
        return [Read((node["value"],), test=test)]
    if kind in ("literal", "expref"):  # &expr reads the elements of another argument, not the document
        return []
    if kind in ("current", "identity"):
        return [Read((), test=test)]
    if kind == "index":
        return [Read((node["value"],), test=test)]
    if kind == "slice":
        return [Read((EACH,), test=test)]
    if kind in ("subexpression", "index_expression"):
        reads = analyze(children[0], test)
        for child in children[1:]:
            reads = _joined(reads, analyze(child, test))
        return reads
    if kind == "pipe":  # after a projection, a pipe reads the projected list: no document path
        left = analyze(children[0], test)
        return _joined([r.derived() if EACH in r.path or MEMBERS in r.path else r for r in left], analyze(children[1], test))
    if kind in ("flatten", "projection", "value_projection", "filter_projection"):
        step = MEMBERS if kind == "value_projection" else EACH
        base = [r if r.path[-1:] == (EACH,) or not r.plain else Read(r.path + (step,), r.guards, True, r.test)
                for r in analyze(children[0], test)]
        if kind == "flatten":
            return base
        right = analyze(children[1], test)
        if kind == "filter_projection":  # the elements the condition keeps
            condition = _guard(children[2], True)
            right = [r.guarded(condition) for r in right]
        return _joined(base, right)
    if kind == "or_expression":  # the right side is read when the left one is false
        left = analyze(children[0], test)
        otherwise = _guard(children[0], False)
        return [r.derived() for r in left] + [r.derived().guarded(otherwise) for r in analyze(children[1], test)]
    if kind == "and_expression":  # the left side is a test; the right side is read when it holds
        left = analyze(children[0], True)
        then = _guard(children[0], True)
        return [r.derived() for r in left] + [r.derived().guarded(then) for r in analyze(children[1], test)]
    if kind == "not_expression":
        return [r.derived(test=True) for r in analyze(children[0], True)]
    if kind == "function_expression" and node["value"] == "merge_each" and len(children) == 2:
        # Each element of merge_each(list, object) is the list's, the object's
        # members added: what follows reads inside the list's elements. (A line
        # field named as an added member is taken as carried: none is a unified one.)
        return analyze(children[0], test) + [r.derived() for r in analyze(children[1], test)]
    if kind == "comparator":  # a comparison carries what it compares
        return [r.derived() for c in children for r in analyze(c)]
    return [r.derived() for c in children for r in analyze(c, test)]  # functions, multi-selects


class _Node:
    """The reads that end at one path pattern, and the patterns below it."""

    __slots__ = ("whole", "tests", "fields", "each", "members", "index")

    def __init__(self) -> None:
        self.whole: list[tuple[Guard, ...]] = []  # alternatives: carried whole when one's guards all hold
        self.tests: list[tuple[Guard, ...]] = []
        self.fields: dict[str, _Node] = {}
        self.each: _Node | None = None
        self.members: _Node | None = None
        self.index: dict[int, _Node] = {}

    def child(self, step: Any) -> "_Node":
        if step == EACH:
            self.each = self.each or _Node()
            return self.each
        if step == MEMBERS:
            self.members = self.members or _Node()
            return self.members
        table = self.index if isinstance(step, int) else self.fields
        return table.setdefault(step, _Node())


def _empty(value: Any) -> bool:
    return value is None or value == {} or value == []


class Reach:
    """What of a body one operation carries: compiled at load from the reads of
    its `when`, path, query, headers and body (the `when` as a test)."""

    __slots__ = ("root", "carried", "tested", "everything")

    def __init__(self, reads: Iterable[Read]):
        self.root = _Node()
        for read in reads:
            node = self.root
            for step in read.path:
                node = node.child(step)
            (node.tests if read.test else node.whole).append(read.guards)
        body = self.root.fields.get("body")
        # The common case, decided without a walk: every field read whole, unconditionally.
        self.everything = () in self.root.whole or (body is not None and () in body.whole)
        fields = body.fields.items() if body else ()
        self.carried = frozenset(name for name, node in fields if () in node.whole)
        self.tested = frozenset(name for name, node in fields if () in node.tests)  # a boolean's value carried

    @classmethod
    def of(cls, when: Expression | None, others: Iterable[Expression]) -> "Reach":
        reads = analyze(when.parsed, True) if when is not None else []
        for expression in others:
            reads += analyze(expression.parsed)
        return cls(reads)

    def ignored(self, doc: dict, options: Options | None = None) -> list[str]:
        """Paths (`$.memo`, `$.line_items[0].type`) of the non-empty body fields this request does not carry."""
        body = doc.get("body")
        if not isinstance(body, dict) or self.everything:
            return []
        # The common case, decided without a walk: each field carried whole, a
        # boolean tested, or empty, whatever any branch takes (as the walk finds).
        carried, tested = self.carried, self.tested
        if all(name in carried or (name in tested and (value is True or value is False)) or _empty(value)
               for name, value in body.items()):
            return []
        walk = _Walk(doc, options)
        walk.within(body, [self.root.fields["body"]] if "body" in self.root.fields else [], "$", [doc, body])
        return walk.out


class _Walk:
    __slots__ = ("doc", "options", "out", "memo")

    def __init__(self, doc: dict, options: Options | None):
        self.doc = doc
        self.options = options
        self.out: list[str] = []
        self.memo: dict[tuple[int, int], bool] = {}

    def holds(self, guards: tuple[Guard, ...], trail: list) -> bool:
        for guard in guards:
            if guard.scope is None:
                continue  # nothing to evaluate it on: taken to hold
            value = trail[len(guard.scope)]
            key = (id(guard), id(value))
            found = self.memo.get(key)
            if found is None:
                try:
                    found = self.memo[key] = (not _is_false(guard.expression.search(value, self.options))) == guard.expected
                except Exception:  # noqa: BLE001 - the request's own rendering reports the failure
                    found = self.memo[key] = True
            if not found:
                return False
        return True

    def visit(self, value: Any, nodes: list[_Node], at: str, trail: list) -> None:
        if any(self.holds(g, trail) for n in nodes for g in n.whole):
            return
        if (value is True or value is False) and any(self.holds(g, trail) for n in nodes for g in n.tests):
            return
        if not self.within(value, nodes, at, trail):
            self.out.append(at)

    def within(self, value: Any, nodes: list[_Node], at: str, trail: list) -> bool:
        """Visit the members or elements of `value` the nodes read into; False if they read into none."""
        if isinstance(value, dict):
            members = [n.members for n in nodes if n.members is not None]
            if not members and not any(n.fields for n in nodes) and at != "$":
                return False
            for name, member in value.items():
                if not _empty(member):
                    trail.append(member)
                    self.visit(member, [n.fields[name] for n in nodes if name in n.fields] + members, f"{at}.{name}", trail)
                    trail.pop()
            return True
        if isinstance(value, list):
            each = [n.each for n in nodes if n.each is not None]
            if not each and not any(n.index for n in nodes):
                return False
            size = len(value)
            for i, item in enumerate(value):
                if not _empty(item):
                    trail.append(item)
                    self.visit(item, each + [n.index[k] for n in nodes for k in (i, i - size) if k in n.index],
                               f"{at}[{i}]", trail)
                    trail.pop()
            return True
        return False
