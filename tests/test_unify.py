"""Unifier (gateway/unify.py): a provider record -> the unified model, in process."""

import jmespath
import msgspec
import pytest

from gateway.expressions import ExpressionError
from gateway.functions import Functions
from gateway.models import InvoiceOutput, JournalEntryOutput
from gateway.unify import Unifier, UnifyError

OPTIONS = jmespath.Options(custom_functions=Functions({}, {"company_id": "c-1"}))
TEMPLATE = {"id": "to_string(id)", "remote_id": "to_string(id)", "memo": "note", "total_amount": "amount",
            "line_items": "lines[].{name: text, value: amount}"}


def unify(record, template=TEMPLATE, model=InvoiceOutput, remote_data=False):
    return Unifier(template, model, "$.objects.invoices.unify").unify(record, OPTIONS, remote_data)


def test_a_provider_null_on_a_field_that_may_be_absent_leaves_it_absent():
    """line_items may be absent but never null: a provider's null (or a missing array) reads as absent."""
    for record in ({"id": 1, "lines": None, "note": None}, {"id": 1}):
        out = unify(record)
        assert out.line_items is msgspec.UNSET and out.memo is None and out.id == "1"
        assert "line_items" not in msgspec.json.decode(msgspec.json.encode(out))
    out = unify({"id": 1, "lines": [{"text": "a", "amount": 5}], "note": "n"})
    assert [(li.name, li.value) for li in out.line_items] == [("a", 5)] and out.memo == "n"
    assert unify({"id": 1, "lines": []}).line_items == []


def test_a_nullable_field_takes_a_null_as_null():
    out = unify({"id": 1, "note": None, "amount": None})
    assert out.memo is None and out.total_amount is None
    encoded = msgspec.json.decode(msgspec.json.encode(out))
    assert encoded["memo"] is None and encoded["total_amount"] is None


def test_a_field_that_may_only_be_absent_is_absent_when_null():
    journal = {"id": "to_string(id)", "id_acc_company_info": "company", "remote_id": "to_string(id)"}
    out = unify({"id": 7, "company": None}, journal, JournalEntryOutput)
    assert out.id_acc_company_info is msgspec.UNSET and out.remote_id == "7"
    assert unify({"id": 7, "company": "c"}, journal, JournalEntryOutput).id_acc_company_info == "c"


def test_remote_data_is_the_record_when_asked_only():
    record = {"id": 1, "extra": {"x": 1}}
    assert unify(record, remote_data=True).remote_data == record
    assert unify(record).remote_data is None


@pytest.mark.parametrize("record, reason", [
    ([1, 2], "expected a record object, got list"),
    ("text", "expected a record object, got str"),
    ({"id": 1, "amount": "not a number"}, "total_amount"),
    ({"id": 1, "lines": [{"text": 5}]}, r"line_items\[0\]\.name"),
])
def test_a_record_the_model_cannot_hold_is_an_unify_error(record, reason):
    with pytest.raises(UnifyError, match=reason):
        unify(record)


def test_an_unknown_unified_field_is_refused_at_load_naming_it():
    with pytest.raises(ExpressionError, match=r"unify\.colour.*fields:"):
        Unifier({"colour": "c"}, InvoiceOutput, "$.objects.invoices.unify")
    with pytest.raises(ExpressionError, match="remote_data"):
        Unifier({"remote_data": "@"}, InvoiceOutput, "$.objects.invoices.unify")


def test_identify_salvages_the_ids_of_a_record_the_template_cannot_read():
    unifier = Unifier(TEMPLATE, InvoiceOutput, "$.objects.invoices.unify")
    assert unifier.identify({"id": 12, "amount": "bad"}, OPTIONS) == {"id": "12", "remote_id": "12"}
    assert unifier.identify({"id": True}, OPTIONS) == {"id": "true", "remote_id": "true"}  # to_string's answer
    assert unifier.identify("not a record", OPTIONS) == {}
    bare = Unifier({"id": "id", "remote_id": "code"}, InvoiceOutput, "$.objects.invoices.unify")
    assert bare.identify({"id": True, "code": 5}, OPTIONS) == {"remote_id": "5"}
    assert bare.identify({"id": {"x": 1}, "code": None}, OPTIONS) == {}
