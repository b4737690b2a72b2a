"""Unify: a provider record -> a unified object, through the object's `unify` template."""

from typing import Any, TypedDict

import msgspec
from jmespath import Options
from jmespath.exceptions import JMESPathError

from .errors import did_you_mean
from .expressions import Expression, ExpressionError, compile_template, field_path, whole_reads
from .models import Model

# The gateway fills remote_data itself, from the raw record, when asked to.
_RESERVED = {"remote_data"}


class UnifyError(ValueError):
    """A provider record the mapping cannot turn into the unified object."""


class Unifier:
    __slots__ = ("key", "model", "expression", "fields", "ids", "unset_if_null")

    def __init__(self, template: dict[str, Any], model: type[Model], key: str):
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
        defaults = {field.name: field.default for field in msgspec.structs.fields(model)}
        self.unset_if_null = tuple(name for name in self.fields if defaults[name] is msgspec.UNSET)

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

    def unify_page(self, records: list, options: Options, remote_data: bool) -> list[Model]:
        run, functions = self.expression.runner(options)
        model, unset_if_null, convert = self.model, self.unset_if_null, msgspec.convert
        out = []
        for record in records:
            if not isinstance(record, dict):
                raise UnifyError(f"expected a record object, got {type(record).__name__}")
            try:
                values = run(record, functions)
            except (JMESPathError, ValueError, TypeError, OverflowError) as exc:
                raise UnifyError(str(exc)) from None
            for name in unset_if_null:
                if values[name] is None:
                    del values[name]
            if remote_data:
                values["remote_data"] = record
            try:
                out.append(convert(values, model))
            except msgspec.ValidationError as exc:
                raise UnifyError(str(exc)) from None
        return out


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
    paths |= {records_path + ("[]",) + p for p in whole_reads(unifier.expression) or {()}}
    shape = _shape(paths, "Page")
    return None if shape is Any else msgspec.json.Decoder(shape)


def _shape(paths: set[tuple[str, ...]], name: str) -> Any:
    if () in paths:
        return Any
    heads = {p[0] for p in paths}
    if "[]" in heads:
        if len(heads) > 1:
            return Any  # read both as an array and as an object: keep it whole
        return list[_shape({p[1:] for p in paths}, name + "Item")] | None
    fields = {head: _shape({p[1:] for p in paths if p[0] == head}, f"{name}_{head}") for head in sorted(heads)}
    return TypedDict(name, fields, total=False) | None
