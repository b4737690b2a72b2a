"""Unify: a provider record -> a unified object, through the object's `unify` template."""

from typing import Any, TypedDict

import msgspec
from jmespath import Options
from jmespath.exceptions import JMESPathError

from .errors import did_you_mean
from .expressions import Expression, ExpressionError, compile_template, compile_typed, field_path, parse_template, whole_reads
from .models import Model
from .shapes import Shape

# The gateway fills remote_data itself, from the raw record, when asked to.
_RESERVED = {"remote_data"}


class UnifyError(ValueError):
    """A provider record the mapping cannot turn into the unified object."""


class Unifier:
    __slots__ = ("key", "model", "expression", "fields", "ids", "unset_if_null", "record", "page", "page_source",
                 "wire", "checks", "unset")

    def __init__(self, template: dict[str, Any], model: type[Model], key: str, values: dict[str, dict] | None = None,
                 declared: dict[str, Any] | None = None, pages: bool = True):
        known = set(model.__struct_fields__) - _RESERVED
        for name in template:
            if name in _RESERVED:
                raise ExpressionError(f"{key}.{name}", "the gateway fills it itself, with the provider's record "
                                                       "whole, when a client asks remote_data=true")
            if name not in known:
                raise ExpressionError(f"{key}.{name}", f"not a field of the unified {model.__name__}"
                                                       f"{did_you_mean(name, known, 'fields')}")
        self.key = key
        self.model = model
        self.fields = tuple(template)
        # In the model's order: msgspec matches a dict's keys to the fields fastest in their own order.
        self.expression = compile_template({name: template[name] for name in model.__struct_fields__ if name in template}, key)
        self.ids = {name: compile_template(template[name], f"{key}.{name}") for name in ("id", "remote_id") if name in template}
        # A null is absent for the fields that may be absent but never null (UNSET
        # by default); a nullable field takes it as it is.
        unset = [(i, f.name) for i, f in enumerate(msgspec.structs.fields(model)) if f.default is msgspec.UNSET]
        self.unset_if_null = tuple(name for _, name in unset)
        self.unset = tuple(i for i, _ in unset)  # their places in the model
        self.record = self.page = self.page_source = self.wire = self.checks = None
        if pages:  # a list's: create and retrieve read one record, decoded whole
            self._page(template, model, values or {}, declared or {})

    def _page(self, template: dict[str, Any], model: type[Model], values: dict, declared: dict) -> None:
        """A page's records decode into `record` (gateway/shapes.py) and go
        through `page`, the template compiled for that Struct. Where no field
        needs msgspec's conversion, `page` gives the model's fields in order,
        each checked by class unless proven, and `wire` holds them as they
        are: a Struct of the model's fields, which msgspec encodes as it would
        the model."""
        fields = model.__struct_fields__
        leaves = {name: parse_template(template[name], f"{self.key}.{name}") for name in fields if name in template}
        shape = Shape(leaves, model, values, declared)
        self.record, self.checks = shape.record, shape.checks()
        if self.checks is None:
            source = "{" + ", ".join(f"{f}: {leaves[f].expression}" for f in fields if f in leaves) + "}"
        else:
            source = "[" + ", ".join(leaves[f].expression if f in leaves else "`null`" for f in fields) + "]"
            self.wire = msgspec.defstruct(model.__name__, [(f, Any, None) for f in fields], gc=False)
        # Compiled at the first page that decodes so, not here: start-up would pay
        # for every list's, and a mistake in a leaf was caught compiling `expression`.
        self.page_source = source

    def identify(self, record: Any, options: Options) -> dict[str, str]:
        """The ids alone, from a record the whole template cannot read."""
        found = {}
        for name, expression in self.ids.items():
            try:
                value = expression.search(record, options=options) if isinstance(record, dict) else None
            except Exception:  # the point is to salvage what can be read
                value = None
            if isinstance(value, (str, int)) and not isinstance(value, bool):
                found[name] = str(value)
        return found

    def unify(self, record: Any, options: Options, remote_data: bool) -> Model:
        return self.unify_page([record], options, remote_data)[0]

    def unify_page(self, records: list, options: Options, remote_data: bool) -> list:
        """The unified objects of a page's records: models, or `wire` Structs that encode as they would."""
        if records and records[0].__class__ is self.record and not remote_data:
            return self._unify_records(records, options)
        run, functions = self.expression.runner(options)
        out = []
        for record in records:
            if not isinstance(record, dict):
                raise UnifyError(f"expected a record object, got {type(record).__name__}")
            try:
                values = run(record, functions)
            except (JMESPathError, ValueError, TypeError, OverflowError) as exc:
                raise UnifyError(str(exc)) from None
            if remote_data:
                values["remote_data"] = record
            out.append(self._convert(values))
        return out

    def _unify_records(self, records: list, options: Options) -> list:
        """A page decoded into `record` Structs: the template compiled for them."""
        if self.page is None:
            try:
                self.page = compile_typed(self.page_source, self.key, self.record)
            except ExpressionError:  # past Python's nesting limits where `expression` was not: the generic way
                return self.unify_page(msgspec.to_builtins(records), options, False)
        run, functions = self.page.runner(options)
        wire, checks, unset, names = self.wire, self.checks, self.unset, self.model.__struct_fields__
        out = []
        try:
            for record in records:
                values = run(record, functions)
                if wire is None:
                    out.append(self._convert(values))
                    continue
                for i, takes in checks:
                    if values[i].__class__ not in takes:  # msgspec says why, or takes it (an int for a float)
                        out.append(self._convert(dict(zip(names, values))))
                        break
                else:
                    for i in unset:
                        if values[i] is None:
                            values[i] = msgspec.UNSET
                    out.append(wire(*values))
        except UnifyError:
            raise
        except (JMESPathError, ValueError, TypeError, OverflowError) as exc:
            raise UnifyError(str(exc)) from None
        return out

    def _convert(self, values: dict) -> Model:
        for name in self.unset_if_null:
            if name in values and values[name] is None:
                del values[name]
        try:
            return msgspec.convert(values, self.model)
        except msgspec.ValidationError as exc:
            raise UnifyError(str(exc)) from None


def page_decoder(records: Expression, others: list[Expression], unifier: Unifier) -> msgspec.json.Decoder | None:
    """A decoder for a list answer that leaves out what the mapping never reads.

    Most of a list's cost is a provider's fields no template names, each
    decoded into a Python object only to be dropped. `records` must be a plain
    path (`data.contacts`, or one `|| literal`) and everything else read (`others`: the total, the
    next page; each record through the template) is read by `whole_reads`, so
    what is left out is never observed. The answer must then have the expected
    shape where it matters (objects and arrays, or null); one that has not is
    decoded whole, as before. None when nothing can be left out."""
    node = records.parsed
    if node["type"] == "or_expression" and node["children"][1]["type"] == "literal":
        node = node["children"][0]  # `QueryResponse.Item || `[]``: an array is true by its length alone
    records_path = field_path(node)
    if records_path is None:
        return None
    paths = set().union(*(whole_reads(e) for e in others))
    item = records_path + ("[]",)
    if unifier.record is not None and not any(p[:len(records_path)] == records_path for p in paths):
        shape = _shape(paths | {item}, "Page", (item, unifier.record))  # each record a Struct, see gateway/shapes.py
    else:  # the records read by something else too: plain objects, as the template reads them
        shape = _shape(paths | {item + p for p in whole_reads(unifier.expression) or {()}}, "Page")
    return None if shape is Any else msgspec.json.Decoder(shape)


def _shape(paths: set[tuple[str, ...]], name: str, records: tuple[tuple[str, ...], type] | None = None,
           at: tuple[str, ...] = ()) -> Any:
    if records is not None and at == records[0]:
        return records[1]
    if () in paths:
        return Any
    heads = {p[0] for p in paths}
    if "[]" in heads:
        if len(heads) > 1:
            return Any  # read both as an array and as an object: keep it whole
        return list[_shape({p[1:] for p in paths}, name + "Item", records, at + ("[]",))] | None
    fields = {head: _shape({p[1:] for p in paths if p[0] == head}, f"{name}_{head}", records, at + (head,))
              for head in sorted(heads)}
    return TypedDict(name, fields, total=False) | None
