"""x-gateway-ignored-fields: exactly the body fields that do not reach the provider.

Operations compiled from YAML-shaped specs (as a mapping file holds them) and
the bundled freee mapping, with the contract's own example bodies (read from
../shared at test time); no gateway process (the freee contract suite checks
the header over HTTP against Prism)."""

from pathlib import Path

import jmespath
import msgspec
import pytest
from conftest import MAPPINGS, openapi, seed

from gateway import mapping
from gateway.functions import Functions
from gateway.mapping import OperationSpec
from gateway.models import (
    ExpenseInput,
    InvoiceInput,
    InvoiceOutput,
    LineItem,
    Model,
    unknown_fields,
)
from gateway.operation import Operation
from gateway.unify import Unifier

FREEE_CONTEXT = {"company_id": 1, "income_account_item_id": 803, "income_tax_code": 21,
                 "expense_account_item_id": 804, "expense_tax_code": 136}


def operation(**spec) -> Operation:
    unifier = Unifier({"id": "id"}, InvoiceOutput, "$.objects.invoices.unify")
    return Operation(msgspec.convert({"path": "/x", "method": "POST", **spec}, OperationSpec), "create",
                     "$.objects.invoices.create", unifier)


def ignored(op: Operation, body: dict, context: dict | None = None) -> list[str]:
    options = jmespath.Options(custom_functions=Functions({"kind": {"A": "a"}}, context or {}))
    return op.ignored({"body": body, "context": context or {}}, options)


# -- branches: a field read only where the request does not go is not carried --------------


def test_the_right_of_or_is_carried_only_when_the_left_is_false():
    op = operation(body={"lines": "body.line_items[].{amount: value} || [{amount: body.total_amount, text: body.memo}]"})
    with_lines = {"line_items": [{"value": 1}], "total_amount": 5, "memo": "m"}
    assert ignored(op, with_lines) == ["$.total_amount", "$.memo"]
    assert ignored(op, {**with_lines, "line_items": []}) == []
    assert ignored(op, {"total_amount": 5, "memo": "m"}) == []


def test_the_right_of_and_is_carried_only_when_the_left_holds():
    op = operation(body={"flag": "body.urgent && body.reason"})
    assert ignored(op, {"urgent": False, "reason": "late"}) == ["$.reason"]
    assert ignored(op, {"urgent": True, "reason": "late"}) == []


def test_the_left_of_and_is_a_test_that_carries_a_boolean_only():
    op = operation(body={"kind": "(body.is_supplier && 'vendor') || (body.is_customer && 'customer') || 'other'"})
    assert ignored(op, {"is_supplier": True, "is_customer": True}) == ["$.is_customer"]
    assert ignored(op, {"is_supplier": False, "is_customer": True}) == []
    # A string tested for presence is not sent: its text is lost.
    assert ignored(operation(body={"flag": "body.memo && `true`"}), {"memo": "text"}) == ["$.memo"]
    assert ignored(operation(body={"flag": "!(body.memo)"}), {"memo": "text"}) == ["$.memo"]
    assert ignored(operation(body={"flag": "!(body.done)"}), {"done": True}) == []


def test_a_when_carries_what_it_tests_and_what_it_compares():
    assert ignored(operation(when="body.is_supplier", body={"n": "body.name"}), {"is_supplier": True, "name": "a"}) == []
    assert ignored(operation(when="body.kind == 'A'", body={"n": "body.name"}), {"kind": "A", "name": "a"}) == []
    assert ignored(operation(when="body.memo", body={"n": "body.name"}), {"memo": "x", "name": "a"}) == ["$.memo"]


def test_a_condition_inside_line_items_is_decided_per_line():
    op = operation(body={"lines": "body.line_items[*].{text: name || type}"})
    body = {"line_items": [{"name": "a", "type": "t"}, {"type": "u"}, None, {"name": "", "type": "v"}]}
    assert ignored(op, body) == ["$.line_items[0].type"]


def test_a_condition_under_a_path_is_evaluated_there():
    op = operation(body={"to": "body.address | (street || city)"})
    assert ignored(op, {"address": {"street": "s", "city": "c"}}) == ["$.address.city"]
    assert ignored(op, {"address": {"city": "c"}}) == []


def test_a_filter_carries_the_elements_it_keeps():
    op = operation(body={
        "tags": "body.tracking_categories && map(&to_number(split(@, '-')[1]), body.tracking_categories[?starts_with(@, 'tag-')])",
        "section": "to_number(split(body.tracking_categories[?starts_with(@, 'section-')] | [0], '-')[1])"})
    assert ignored(op, {"tracking_categories": ["tag-1", "section-2", "tag-3"]}) == []
    assert ignored(op, {"tracking_categories": ["tag-1", "801f9ede-c698", None, "section-2"]}) == \
        ["$.tracking_categories[1]"]


def test_a_condition_that_fails_to_evaluate_is_taken_to_hold():
    # The request's own rendering fails on it and answers for it; the header never turns it into a 500.
    op = operation(body={"a": "abs(body.text) || body.other"})
    assert ignored(op, {"text": "x", "other": 1}) == []


# -- where in a field: elements, indexes, members ----------------------------------------


def test_an_index_carries_its_element_only():
    op = operation(body={"title": "body.line_items[0].name", "last": "body.line_items[-1].value"})
    body = {"line_items": [{"name": "a", "value": 1}, {"name": "b", "value": 2}, {"name": "c", "value": 3}]}
    assert ignored(op, body) == ["$.line_items[0].value", "$.line_items[1]", "$.line_items[2].name"]


def test_members_of_an_object_are_named_by_their_path():
    op = operation(body={"code": "body.field_mappings.tax_code"})
    assert ignored(op, {"field_mappings": {"tax_code": 1, "other": "x"}}) == ["$.field_mappings.other"]
    every = operation(body={"all": "body.field_mappings.*"})
    assert ignored(every, {"field_mappings": {"tax_code": 1, "other": "x"}}) == []


def test_a_scalar_read_into_is_not_carried():
    op = operation(body={"n": "body.memo.text"})
    assert ignored(op, {"memo": "plain"}) == ["$.memo"]


def test_a_body_the_operation_reads_nothing_of_is_reported_field_by_field():
    assert ignored(operation(body={"kind": "'fixed'"}), {"a": 1, "b": {"c": 2}, "d": [3]}) == ["$.a", "$.b", "$.d"]


def test_a_list_read_into_as_an_object_is_not_carried():
    op = operation(body={"n": "body.lines.name", "m": "body.meta[0]"})
    assert ignored(op, {"lines": [{"name": "a"}], "meta": {"k": 1}}) == ["$.lines", "$.meta"]


def test_what_a_function_reads_it_reads_whole():
    # sort_by's answer is no document path: what follows it reads inside the whole list it consumed.
    op = operation(body={"lines": "sort_by(body.line_items, &value)[].{v: value, w: weight || unit}"})
    assert ignored(op, {"line_items": [{"value": 2, "weight": 1, "unit": "kg", "extra": 1}]}) == []
    assert ignored(operation(body={"n": "length(body.line_items)"}), {"line_items": [{"a": 1}]}) == []
    # However far what follows goes.
    op = operation(body={"first": "sort_by(body.items, &n)[0].name", "code": "to_number(split(body.code, '-')[1])"})
    assert ignored(op, {"items": [{"n": 2, "name": "b"}, {"n": 1, "name": "a"}], "code": "x-1"}) == []


def test_flatten_slices_and_pipes_read_elements():
    assert ignored(operation(body={"all": "body.groups[]"}), {"groups": [[1], [2, 3]], "x": 1}) == ["$.x"]
    assert ignored(operation(body={"rest": "body.items[1:]"}), {"items": [1, 2, 3]}) == []
    # After a projection, a pipe reads the projected list: [0] is its first name, of some line.
    op = operation(body={"first": "body.lines[].name | [0]"})
    assert ignored(op, {"lines": [{"name": "a", "other": 1}, {"name": "b"}]}) == ["$.lines[0].other"]


def test_a_filter_inside_line_items_is_decided_per_element_of_each_line():
    op = operation(body={"lines": "body.line_items[].{tags: tags[?starts_with(@, 'a')], v: value}"})
    body = {"line_items": [{"tags": ["a1", "b2"], "value": 1}, {"tags": ["b3", "a4"]}]}
    assert ignored(op, body) == ["$.line_items[0].tags[1]", "$.line_items[1].tags[0]"]


def test_a_pipe_after_the_members_of_an_object_reads_them_whole():
    op = operation(body={"first": "body.field_mappings.* | [0]"})
    assert ignored(op, {"field_mappings": {"a": "x", "b": "y"}, "other": 1}) == ["$.other"]


def test_either_side_of_or_in_a_when_is_a_test():
    op = operation(when="body.memo || body.note", body={"n": "body.number"})
    assert ignored(op, {"memo": "m", "note": "n", "number": "1"}) == ["$.memo", "$.note"]
    assert ignored(operation(when="body.draft || body.final", body={}), {"draft": False, "final": True}) == []


def test_a_document_without_a_body_has_nothing_to_report():
    assert ignored(operation(body={"n": "body.name"}), None) == []
    assert operation(body={"n": "body.name"}).ignored({}) == []


def test_nulls_and_empty_values_do_not_stop_the_scan():
    op = operation(body={"lines": "body.line_items[].{v: value}", "n": "body.number"})
    body = {"status": None, "line_items": [None, {"value": None, "foo": 1}, {}, {"value": 2, "bar": [], "baz": "z"}],
            "tracking_categories": [], "field_mappings": {}, "currency": "USD", "number": "1"}
    assert ignored(op, body) == ["$.line_items[1].foo", "$.line_items[3].baz", "$.currency"]


def test_a_body_read_whole_carries_everything_and_so_does_the_document():
    assert ignored(operation(body="body"), {"a": 1, "b": [{"c": 2}]}) == []
    assert ignored(operation(body={"raw": "@"}), {"a": 1}) == []
    assert ignored(operation(body={"n": "body.name"}), {"name": "x"}) == []


def test_path_and_query_and_headers_carry_too():
    op = operation(path="/x/{body.contact_id}", query={"m": "body.memo"}, headers={"X-C": "body.currency"},
                   body={"n": "body.number"})
    body = {"contact_id": "c", "memo": "m", "currency": "USD", "number": "1", "balance": 3}
    assert ignored(op, body) == ["$.balance"]


# -- the bundled freee mapping, with the contract's example bodies -------------------------


@pytest.fixture(scope="module")
def freee():
    provider = mapping.load(MAPPINGS / "freee.yaml")
    options = jmespath.Options(custom_functions=Functions(provider.values, FREEE_CONTEXT))
    return provider, options


def example(shared: Path, schema: str) -> dict:
    """The contract's example of each field of an input schema."""
    fields = openapi(shared)["components"]["schemas"][schema]["properties"]
    return {name: field["example"] for name, field in fields.items() if field.get("example") is not None}


def freee_ignored(freee, obj: str, body: dict) -> list[str]:
    provider, options = freee
    doc = {"body": body, "context": FREEE_CONTEXT}
    op = next(o for o in provider.operations(obj, "create") if o.applies(doc, options))
    return op.ignored(doc, options)


def test_freee_expense_reports_what_an_expense_application_has_no_place_for(freee, shared):
    body = example(shared, "UnifiedAccountingExpenseInput")
    body["tracking_categories"] = ["tag-202", "section-101"]
    assert set(freee_ignored(freee, "expenses", body)) == {
        "$.account_id", "$.contact_id", "$.sub_total", "$.total_tax_amount", "$.currency", "$.exchange_rate",
        "$.company_info_id", "$.field_mappings"}
    # With line items, the lines are the amounts: the total is not sent.
    body["line_items"] = [{"name": "交通費", "value": 30000, "type": "travel"}]
    assert set(freee_ignored(freee, "expenses", body)) >= {"$.total_amount", "$.line_items[0].type"}
    assert "$.memo" not in freee_ignored(freee, "expenses", body)  # the title


def test_freee_invoice_memo_and_total_are_dropped_next_to_line_items(freee, shared):
    text = seed(shared, "003")
    body = {k: v for k, v in example(shared, "UnifiedAccountingInvoiceInput").items()}
    assert "memo" in body and "total_amount" in body and "INV-001" in text
    without_lines = freee_ignored(freee, "invoices", body)
    assert "$.memo" not in without_lines and "$.total_amount" not in without_lines
    body["line_items"] = [{"name": "Net Income", "value": 100000, "type": "Operating Activities"}]
    with_lines = freee_ignored(freee, "invoices", body)
    assert {"$.memo", "$.total_amount", "$.line_items[0].type"} <= set(with_lines)
    assert "$.number" not in with_lines and "$.line_items[0].name" not in with_lines


# -- unknown_fields: members the unified model does not define -------------------------------


def test_unknown_fields_inside_line_items_add_to_the_top_level_ones():
    body = {"memo": "m", "foo": 1, "line_items": [{"name": "a", "bar": 2}, None, {"value": 1, "baz": 3}], "zed": 4}
    assert unknown_fields(body, InvoiceInput) == ["$.foo", "$.zed", "$.line_items[0].bar", "$.line_items[2].baz"]
    assert unknown_fields({"line_items": [{"name": "a", "bar": 2}]}, ExpenseInput) == ["$.line_items[0].bar"]


def test_unknown_fields_of_a_nested_object_name_its_path():
    class Address(Model):
        street: str | None = None

    class Holder(Model):
        name: str | None = None
        address: Address | None = None
        lines: list[LineItem] | None = None

    assert unknown_fields({"name": "n", "address": {"street": "s", "zip": "1"}, "x": None}, Holder) == \
        ["$.x", "$.address.zip"]
    assert unknown_fields({"name": "n", "address": None, "lines": None}, Holder) == []
    assert unknown_fields({"name": "n"}, Holder) == []


def test_merge_each_reads_inside_the_elements_of_the_list_it_extends():
    """Xero's and QuickBooks' lines carry an account code or class from elsewhere
    (merge_each): the line fields no template names are still reported."""
    op = operation(body={"Line": "merge_each(body.line_items, {code: context.code, cls: body.tracking_categories[0]})"
                                 "[*].{Description: name, Amount: value, Code: code, Class: cls}"})
    body = {"line_items": [{"name": "n", "value": 1, "type": "t"}, {"value": 2, "parent_item": "9"}],
            "tracking_categories": ["class-1"], "memo": "m"}
    assert ignored(op, body, {"code": "200"}) == ["$.line_items[0].type", "$.line_items[1].parent_item", "$.memo"]
