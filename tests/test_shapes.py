"""A list page's records decoded into Structs and unified the short way
(gateway/shapes.py) answer exactly what the generic way answers: the same
bytes, or the same error, for every list operation of every mapping, on
records taken from the mappings' own examples and then damaged at random."""

import copy
import random
from pathlib import Path
from types import NoneType
from typing import Any

import msgspec
import pytest
from jmespath import Options

from gateway.expressions import compile_expression, compile_template, compile_typed, field_path
from gateway.functions import Functions
from gateway.mapping import ContextKey, load
from gateway.models import ContactOutput, InvoiceOutput
from gateway.shapes import ISO, Shape, accepts
from gateway.unify import Unifier, UnifyError, page_decoder
from gateway.upstream import _decode

MAPPINGS = sorted((Path(__file__).parent.parent / "mappings").glob("*.yaml"))
# Values a provider could send where a template reads: each a way to miss a type.
POOL = [None, "", "x", "Active", "2023-01-02T03:04:05Z", "/Date(1700000000000+0000)/", "2023-01-02", 0, 1, -1, 7.5,
        1700000000, 10**20, True, False, [], ["a"], {}, {"Id": "1", "name": "n"}, "1700000000"]


def _context(provider) -> dict[str, Any]:
    sample = {"string": "ctx-1", "integer": 7, "number": 2.5, "boolean": True, "list": ["a"], "object": {"a": 1}}
    return {name: key.default if key.default is not None else sample[key.type] for name, key in provider.context.items()}


def _paths(struct: type[msgspec.Struct], at: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for field in msgspec.structs.fields(struct):
        inner = [a for a in getattr(field.type, "__args__", ()) if isinstance(a, type) and issubclass(a, msgspec.Struct)]
        found += _paths(inner[0], at + (field.encode_name,)) if inner else [at + (field.encode_name,)]
    return found


def _set(record: dict, path: tuple[str, ...], value: Any) -> None:
    for name in path[:-1]:
        if not isinstance(record.get(name), dict):
            record[name] = {}
        record = record[name]
    if value is _DROP:
        record.pop(path[-1], None)
    else:
        record[path[-1]] = value


_DROP = object()


def _envelope(path: tuple[str, ...], records: list) -> dict:
    page: Any = records
    for name in reversed(path):
        page = {name: page}
    return page


def _cases():
    for source in MAPPINGS:
        provider = load(source)
        for name, obj in sorted(provider.objects.items()):
            for i, op in enumerate(obj.operations.get("list", ())):
                if op.page_decoder is not None and op.unifier.record is not None:
                    yield pytest.param(provider, op, id=f"{source.stem}-{name}-{i}")


@pytest.mark.parametrize("provider, op", list(_cases()))
def test_a_page_unified_the_short_way_answers_what_the_generic_way_does(provider, op):
    options = Options(custom_functions=Functions(provider.values, _context(provider)))
    node = op.records.parsed
    if node["type"] == "or_expression":
        node = node["children"][0]
    records_path = field_path(node)
    seeds = []
    for example in op.spec.examples:
        if example.response is not msgspec.UNSET:
            found = op.records.search(example.response, options)
            seeds += [r for r in found or [] if isinstance(r, dict)]
    leaves = _paths(op.unifier.record)
    paths = sorted({p[:n] for p in leaves for n in range(1, len(p) + 1)})  # a member read further may be anything too
    seeds.append({})
    rng = random.Random(f"{op.key}")
    short = pages = 0

    def outcome(raw: bytes, *decoder) -> tuple[str, Any]:
        data = _decode(raw, *decoder)
        records = op.records.search(data, options)
        try:
            return "ok", msgspec.json.encode(op.unifier.unify_page(records, options, False))
        except UnifyError as exc:
            return "error", str(exc)

    for _ in range(200):
        page = []
        for _ in range(rng.randint(1, 4)):
            record = copy.deepcopy(rng.choice(seeds))
            for path in rng.sample(paths, k=min(len(paths), rng.choice((0, 0, 1, 2)))):
                _set(record, path, _DROP if rng.random() < 0.1 else copy.deepcopy(rng.choice(POOL)))
            page.append(record if rng.random() > 0.02 else copy.deepcopy(rng.choice(POOL)))
        raw = msgspec.json.encode(_envelope(records_path, page))
        decoded = _decode(raw, op.page_decoder)
        records = op.records.search(decoded, options)
        short += bool(records) and records[0].__class__ is op.unifier.record
        pages += 1
        assert outcome(raw, op.page_decoder) == outcome(raw), raw
    assert short > pages // 4  # the short way was taken, not only the generic one


def _options(values=None, context=None):
    return Options(custom_functions=Functions(values or {}, context or {}))


def test_a_template_over_a_record_struct_reads_members_as_attributes():
    record = msgspec.defstruct("R", [("f0", Any, None), ("f1", msgspec.defstruct("B", [("f0", Any, None)], rename={"f0": "tax-id"}) | None, None)],
                               rename={"f0": "Name", "f1": "billing"})
    source = '{a: Name, b: billing."tax-id", c: billing."tax-id" || Name, d: Name == `"x"`}'
    typed, plain = compile_typed(source, "$.t", record), compile_template({"a": "Name", "b": 'billing."tax-id"',
                                                                           "c": 'billing."tax-id" || Name', "d": "Name == 'x'"}, "$.t")
    for raw in (b'{"Name": "x", "billing": {"tax-id": 5}}', b'{"billing": null}', b'{"Name": [1]}', b'{}'):
        assert typed.search(msgspec.json.decode(raw, type=record)) == plain.search(msgspec.json.decode(raw))


def test_the_classes_a_field_takes_as_they_are():
    fields = {f.name: f.type for f in msgspec.structs.fields(InvoiceOutput)}
    assert accepts(fields["number"]) == {str, NoneType}
    assert accepts(fields["total_amount"]) == {int, float, NoneType}
    assert accepts(fields["created_at"]) == {ISO, NoneType}
    assert accepts(fields["line_items"]) is None  # a list goes through msgspec
    assert accepts(fields["tracking_categories"]) is None


def _shape(template, values=None, context=None, model=ContactOutput):
    leaves = {name: compile_template(leaf, f"$.u.{name}") for name, leaf in template.items()}
    return Shape(leaves, model, values or {}, context or {})


def test_a_copied_or_mapped_field_decodes_as_its_unified_type_and_its_leaf_is_proven():
    shape = _shape({"name": "n", "email_address": "contact.mail", "status": "to_unified(s, 'status')",
                    "is_supplier": "kind == 'vendor'", "created_at": "to_iso(t, 'epoch')", "tax_number": "`\"T\"`"},
                   values={"status": {"Active": "A"}})
    decoded = msgspec.json.decode(b'{"n": "a", "contact": {"mail": "m"}, "s": "A", "kind": 1, "t": 5}', type=shape.record)
    assert msgspec.to_builtins(decoded) == {"n": "a", "contact": {"mail": "m"}, "s": "A", "kind": 1, "t": 5}
    with pytest.raises(msgspec.ValidationError):  # checked while decoding: the page then decodes whole
        msgspec.json.decode(b'{"n": 5}', type=shape.record)
    assert shape.kinds == {"name": {str, NoneType}, "email_address": {str, NoneType}, "status": {str, NoneType},
                           "is_supplier": {bool}, "created_at": {ISO, NoneType}, "tax_number": {str}}


def test_a_field_read_two_ways_or_mapped_from_other_types_stays_as_sent():
    # `n` copied into a string and into a boolean; the map's provider values are numbers.
    shape = _shape({"name": "n", "is_customer": "n", "status": "to_unified(s, 'status')"},
                   values={"status": {"Active": 1}})
    decoded = msgspec.json.decode(b'{"n": 5, "s": 1}', type=shape.record)
    assert msgspec.to_builtins(decoded) == {"n": 5, "s": 1}
    assert shape.kinds == {"name": None, "is_customer": None, "status": None}


def test_a_context_key_is_proven_by_its_declared_type():
    context = {"company": ContextKey(description="d"), "count": ContextKey(description="d", type="integer"),
               "tags": ContextKey(description="d", type="list")}
    shape = _shape({"name": "context('company')", "status": "context('count')", "email_address": "context('tags')"},
                   context=context)
    assert shape.kinds == {"name": {str, NoneType}, "status": {int, NoneType}, "email_address": None}


def test_a_page_that_fails_a_check_goes_through_msgspec_and_says_why():
    unifier = Unifier({"id": "id", "status": "to_unified(s, 'st')", "total_amount": "amount"}, InvoiceOutput,
                      "$.objects.invoices.unify", {"st": {"Open": 1}})  # a map of numbers: `status` checked
    assert unifier.wire is not None and [InvoiceOutput.__struct_fields__[i] for i, _ in unifier.checks] == ["status"]
    decoder = page_decoder(compile_expression("items", "$.r"), [], unifier)
    good = decoder.decode(b'{"items": [{"id": "1", "s": 1, "amount": 2}]}')["items"]
    assert msgspec.json.encode(unifier.unify_page(good, _options({"st": {"Open": 1}}), False)).count(b'"status":"Open"') == 1
    bad = decoder.decode(b'{"items": [{"id": "1", "s": 2, "amount": 2}]}')["items"]
    with pytest.raises(UnifyError, match=r"Expected `str \| null`, got `int` - at `\$.status`"):
        unifier.unify_page(bad, _options({"st": {"Open": 1}}), False)


@pytest.mark.parametrize("fmt, values", [
    ("epoch", [0, -1, 1700000000, 1700000000.5, 1700000000.123456, -62135596800, 253402300799, "1700000000"]),
    ("epoch_ms", [0, 1700000000123, -1, 253402300799999]),
    ("iso", ["2023-01-02T03:04:05Z", "2023-01-02T03:04:05.5+09:00", "2023-01-02T03:04:05", "0001-01-01T00:00:00Z",
             "9999-12-31T23:59:59.999999Z", "2023-01-02T03:04:05.000001-07:00"]),
    ("date", ["2023-01-02", "0001-01-01", "9999-12-31"]),
    ("msjson", ["/Date(1700000000000+0000)/", "/Date(-1000)/", "/Date(0)/"]),
])
def test_an_iso_string_to_iso_made_answers_as_its_datetime_would(fmt, values):
    # The wire holds to_iso's strings where the model holds datetimes: both must answer the same bytes.
    from datetime import datetime

    from gateway.functions import to_iso
    for value in values:
        made = to_iso(value, fmt)
        assert msgspec.json.encode(made) == msgspec.json.encode(msgspec.convert(made, datetime)), (value, made)


@pytest.mark.parametrize("value", [253402300800, -62135596801, 10**12])
def test_an_epoch_beyond_the_years_a_datetime_holds_is_refused(value):
    from gateway.functions import ConversionError, bind_to_iso, to_iso
    with pytest.raises(ConversionError, match="not a date in the epoch format"):
        to_iso(value, "epoch")
    with pytest.raises(ConversionError):
        bind_to_iso("epoch")(value)



def test_a_provider_key_msgspec_cannot_rename_keeps_the_generic_way():
    unifier = Unifier({"name": 'billing."tax\\"id"', "id": 'id'}, ContactOutput, "$.objects.contacts.unify")
    assert unifier.record is None
    record = msgspec.json.decode(b'{"id": "1", "billing": {"tax\\"id": "T"}}')
    assert unifier.unify_page([record], _options(), False)[0].name == "T"


def test_a_model_off_the_usual_pattern_goes_through_msgspec():
    from gateway.models import Model

    class Odd(Model):
        flag: bool = False
        codes: list[str] = []
        label: str | None = None

    assert accepts(list[str]) is None and accepts(dict[str, str]) is None and accepts(bool) == {bool}
    # `flag` left out would answer false, not null: no wire.
    assert Unifier({"label": "l"}, Odd, "$.u").wire is None
    # A typed member absent from the record is null, whatever its field's type: checked, so msgspec refuses it.
    unifier = Unifier({"flag": "f", "label": "l", "codes": "`[]`"}, Odd, "$.u")
    decoder = page_decoder(compile_expression("items", "$.r"), [], unifier)
    records = decoder.decode(b'{"items": [{"l": "x"}]}')["items"]
    with pytest.raises(UnifyError, match="Expected `bool`, got `null`"):
        unifier.unify_page(records, _options(), False)


def test_a_page_template_past_pythons_limits_unifies_the_generic_way(monkeypatch):
    import gateway.unify
    from gateway.expressions import ExpressionError

    def too_deep(source, key, record):
        raise ExpressionError(key, "expression nested too deeply")

    unifier = Unifier({"id": "id", "name": "n"}, ContactOutput, "$.objects.contacts.unify")
    decoder = page_decoder(compile_expression("items", "$.r"), [], unifier)
    records = decoder.decode(b'{"items": [{"id": "1", "n": "a"}]}')["items"]
    monkeypatch.setattr(gateway.unify, "compile_typed", too_deep)
    whole = unifier.unify_page([{"id": "1", "n": "a"}], _options(), False)
    assert msgspec.json.encode(unifier.unify_page(records, _options(), False)) == msgspec.json.encode(whole)
