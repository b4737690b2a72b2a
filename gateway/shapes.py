"""What a list page's records decode into, and what a `unify` template is
known to give: worked out once, at load, so a page's records skip the steps a
single record needs.

A record of a list costs most where Python touches it: a dict per record and
a lookup per field, the template, then msgspec checking every value against
the unified model. Here, from the template and the model:

- `record`: the msgspec Struct a page's records decode into. Only what the
  template reads by member lookups is kept (gateway/unify.py's
  `page_decoder`), and a field is an attribute, not a dict key. Where the
  template copies a provider field straight into a unified field of a JSON
  type (string, number, boolean), or maps it through `to_unified`, the field
  is decoded as that type, so msgspec checks it in C while decoding.
- `kinds`: the classes each template leaf can give. A leaf is *proven* when
  these fit its field: a decoded field of the field's type, a comparison (a
  boolean), `to_iso` (an ISO string: the form a datetime is answered in), a
  declared context key, a literal. Proven leaves need no check; others of a
  JSON type are checked by class; a page whose every field is one or the
  other is built without msgspec's conversion (`Wire`).

Nothing here changes what a page answers: a record that does not decode
into `record` makes its page decode whole, and goes the generic way, and a
value that fails its class check goes through msgspec's conversion, which
says why it does not fit.
"""

from datetime import datetime
from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin

import msgspec

from jmespath.parser import ParsedResult

from .expressions import field_path, whole_reads
from .functions import DATE_FORMATS

_JSON = frozenset({str, int, float, bool, NoneType})


class ISO:
    """A kind, not a class of values: a string to_iso made. It is how a
    datetime answers (tests/test_shapes.py holds msgspec to that), so a
    datetime field takes one as it is, and a string field as a string."""

_NUMBER = frozenset({int, float, NoneType})
# What our own functions give whatever their arguments (gateway/functions.py),
# where the record's values cannot change it.
_RESULTS = {"to_string": frozenset({str}), "number": _NUMBER, "integer": _NUMBER, "multiply": _NUMBER,
            "to_minor": _NUMBER, "from_minor": _NUMBER}
_CONTEXT = {"string": frozenset({str, NoneType}), "integer": frozenset({int, NoneType}),
            "number": frozenset({int, float, NoneType}), "boolean": frozenset({bool, NoneType})}


def accepts(annotation: Any) -> frozenset | None:
    """The kinds a field of this type takes as they are; None when a value of
    it must go through msgspec (a list, an object). A null in a field that may
    be absent but never null (UNSET) is left out, as unify does."""
    args = set(get_args(annotation)) if get_origin(annotation) in (Union, UnionType) else {annotation}
    if msgspec.UnsetType in args:
        args = (args - {msgspec.UnsetType}) | {NoneType}
    if datetime in args:
        args = (args - {datetime}) | {ISO}
    return frozenset(args) if args <= _JSON | {ISO} else None


class Shape:
    """One template's record Struct and its leaves' kinds, for `model`."""

    __slots__ = ("fields", "record", "kinds")

    def __init__(self, leaves: dict[str, ParsedResult], model: type[msgspec.Struct],
                 values: dict[str, dict], declared: dict[str, Any]):
        """`leaves`: the template's, by unified field; `values`: the mapping's
        value maps; `declared`: its context keys (`ContextKey`), whose values
        a connection has made of their type (gateway/connections.py)."""
        self.fields = msgspec.structs.fields(model)
        types = {f.name: f.type for f in self.fields}
        self.kinds: dict[str, frozenset | None] = {}
        # A provider field copied, or mapped, into unified fields: decoded as their type, where they agree.
        wanted: dict[tuple[str, ...], set[frozenset]] = {}
        for name, leaf in leaves.items():
            for path, kinds in _demands(leaf.parsed, accepts(types[name]), values):
                wanted.setdefault(path, set()).add(kinds)
        typed = {path: next(iter(k)) for path, k in wanted.items() if len(k) == 1}
        reads = set().union(*(whole_reads(leaf) for leaf in leaves.values())) if leaves else set()
        # msgspec renames a member to any key but one with a quote, a backslash or a control character.
        plain = all(c not in '"\\' and c >= " " for path in reads for key in path for c in key)
        # Each typed member's path and its classes: null too, as absent or under a null it is null whatever its type.
        decoded: dict[tuple[str, ...], frozenset] = {}
        self.record = _struct(reads, typed, decoded, f"{model.__name__}Record", ()) if reads and () not in reads and plain else None
        for name, leaf in leaves.items():
            self.kinds[name] = _kinds(leaf.parsed, decoded, values, declared)

    def checks(self) -> tuple[tuple[int, frozenset], ...] | None:
        """Per field whose leaf is not proven: its place in the model and the
        classes its value is checked against (none at all: every leaf proven).
        None when a field's value must go through msgspec's conversion: a list
        or an object, a datetime that to_iso did not make, or a field the
        template leaves out whose default is not null (or UNSET)."""
        checks = []
        for i, field in enumerate(self.fields):
            if field.name not in self.kinds:
                if field.default is not None and field.default is not msgspec.UNSET:
                    return None
                continue
            takes, gives = accepts(field.type), self.kinds[field.name]
            if takes is None:
                return None
            if gives is not None and str in takes:
                gives = {str if k is ISO else k for k in gives}
            if gives is None or not gives <= takes:
                if ISO in takes:
                    return None
                checks.append((i, takes))
        return tuple(checks)


def _demands(node: dict, field: frozenset | None, values: dict) -> list[tuple[tuple[str, ...], frozenset]]:
    """The record paths a leaf would have decoded as its field's type: a
    straight copy, and `to_unified`'s input. The latter only where the map's
    provider values are of that type too: a page holding one that is not
    would fail to decode, and go the slow way, though its value maps fine."""
    if field is None or not field <= _JSON:
        return []
    path = field_path(node)
    if path is not None:
        return [(path, field)]
    if node["type"] == "function_expression" and node["value"] == "to_unified":
        args = node["children"]
        table = _table(args, values)
        path = field_path(args[0]) if len(args) == 2 else None
        if path is not None and table is not None and {v.__class__ for v in table.values()} <= field:
            return [(path, field)]
    return []


def _table(args: list[dict], values: dict) -> dict | None:
    if len(args) != 2 or args[1]["type"] != "literal":
        return None
    table = args[1]["value"]
    table = values.get(table) if isinstance(table, str) else table
    return table if isinstance(table, dict) else None


def _kinds(node: dict, decoded: dict, values: dict, declared: dict) -> frozenset | None:  # noqa: C901 - one case per leaf kind
    """The classes a leaf gives, for any record that decodes; None when unknown."""
    kind = node["type"]
    args = node.get("children", [])
    path = field_path(node)
    if path is not None:
        return decoded.get(path)
    if kind == "literal":
        return frozenset({node["value"].__class__}) if node["value"].__class__ in _JSON else None
    if kind == "not_expression" or (kind == "comparator" and node["value"] in ("eq", "ne")):
        return frozenset({bool})
    if kind in ("or_expression", "and_expression"):
        left, right = (_kinds(a, decoded, values, declared) for a in args)
        return left | right if left is not None and right is not None else None
    if kind != "function_expression":
        return None
    name = node["value"]
    if name in _RESULTS:
        return _RESULTS[name]
    if name == "to_iso" and len(args) == 2 and args[0]["type"] != "literal" and args[1]["type"] == "literal" \
            and args[1]["value"] in DATE_FORMATS:
        return frozenset({ISO, NoneType})
    if name == "context" and len(args) == 1 and args[0]["type"] == "literal" and args[0]["value"] in declared:
        key = declared[args[0]["value"]]
        kinds = _CONTEXT.get(key.type)
        return kinds if kinds is not None and key.default.__class__ in kinds else None
    if name == "to_unified":
        table, given = _table(args, values), _kinds(args[0], decoded, values, declared) if args else None
        if table is not None and given is not None:
            return given | {k.__class__ for k in table}
    return None


def _struct(paths: set[tuple[str, ...]], typed: dict, decoded: dict, name: str,
            at: tuple[str, ...]) -> type[msgspec.Struct]:
    """A Struct of the members `paths` read: a member read whole is its own
    type (`Any` unless typed, and then noted in `decoded`), one read further
    is a Struct of its own, or null. Attributes are f0, f1, ...: a provider's
    keys need not be names."""
    fields, rename = [], {}
    for i, head in enumerate(sorted({p[0] for p in paths})):
        rest = {p[1:] for p in paths if p[0] == head}
        here = at + (head,)
        if () in rest:
            kinds = typed.get(here) if rest == {()} else None
            if kinds is not None:
                decoded[here] = kinds | {NoneType}
            annotation = Any if kinds is None else Union[tuple(k for k in (str, bool, int, float, NoneType) if k in kinds)]
        else:
            annotation = _struct(rest, typed, decoded, f"{name}_{head}", here) | None
        fields.append((f"f{i}", annotation, None))
        rename[f"f{i}"] = head
    return msgspec.defstruct(name, fields, rename=rename, gc=False)
