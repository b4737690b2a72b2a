"""Templates (YAML -> one JMESPath expression), strip_nulls, and reads() path analysis.

Also the request side of a compiled Operation, which is built from these:
path filling, query rendering and the fields a create leaves behind.
"""

import datetime

import jmespath
import msgspec

from gateway.models import InvoiceOutput
from gateway.unify import Unifier, page_decoder
import pytest

from gateway.expressions import (ExpressionError, calls, compile_expression, compile_template, context_reads, reads,
                                 strip_nulls, whole_reads)
from gateway.functions import Functions
from gateway.mapping import OperationSpec
from gateway.operation import MappingBug, Operation, RequestRefused, TranslationError

OPTIONS = jmespath.Options(custom_functions=Functions({"status": {"Active": "active"}}, {"company_id": "c-1"}))


def render(template, data, key="$.t"):
    return compile_template(template, key).search(data, options=OPTIONS)


# -- compile_expression -------------------------------------------------------


def test_compile_expression_compiles_once_for_reuse():
    expression = compile_expression("a.b", "$.x")
    assert expression.search({"a": {"b": 1}}) == 1
    assert expression.search({"a": {"b": 2}}) == 2


@pytest.mark.parametrize("source", ["a[", "a.", "foo(", "`{\"a\"`", "a ||", "[?]"])
def test_compile_expression_reports_the_key_and_the_source(source):
    with pytest.raises(ExpressionError) as info:
        compile_expression(source, "$.objects.contacts.unify.name")
    assert info.value.key == "$.objects.contacts.unify.name"
    assert repr(source) in info.value.reason
    assert "bad JMESPath expression" in info.value.reason
    assert "\n" not in str(info.value)  # one line, fit for a log or a terminal
    assert str(info.value).startswith("$.objects.contacts.unify.name: ")


# Compiled expressions must agree with jmespath's own interpreter on every
# node kind, including those it hands back to the interpreter.
DOCUMENTS = [
    None, 0, "", [], {}, True,
    {"a": {"b": 1, "c": [1, 2, 3]}, "b": 0, "c": "", "d": [], "e": False, "f": None},
    {"a": [{"b": 1}, {"b": None}, {"c": 2}, [{"b": 3}], 7], "b": [[1, [2]], 3, None], "n": 0},
    {"a": "x", "b": "x", "l": [{"k": "p", "v": 1}, {"k": "q", "v": 2}], "when": "2024-06-15T00:00:00Z"},
]
EXPRESSIONS = [
    "a", "a.b", "a.b.c", "a.c[0]", "a.c[-1]", "a.c[-3]", "a.c[-4]", "a.c[3]", "a[0]", "@", "a[*].b", "a[].b", "a[]",
    "b[]", "b[][]", "a[*]", "a[*][*]", "*", "*.b", "a.*", "a | [0]", "a[*].b | [0]", "{x: a, y: [b, c]}", "[a, b]",
    "a || b", "b || c || d || e || f || `\"z\"`", "a && b", "c && a", "!a", "!b", "!n", "!c", "!`0`", "a == b", "a != b",
    "b == `0`", "b == `false`", "e == `false`", "a == 'x'", "'x' != b", "n == '0'", "e == ''", "d != 'x'", "a.b > `0`", "l[?k == 'q'].v", "l[?v > `1`] | [0].k", "a.c[1:]",
    "length(a)", "keys(a)", "to_string(b)", "default(f, `3`)", "to_iso(when, 'iso')", "context('company_id')",
    "to_unified(a, 'status')", "max_by(l, &v).k", "sort_by(l, &v)[].k", "l[*].{key: k, twice: [v, v]}",
    "`{\"literal\": [1, 2]}`", "'raw'", "a.b.{x: @}", "not_there[].x || `[]`",
    # Repeated subexpressions, computed once where a block allows it
    "{x: a.b, y: a.b, z: [a.b, a.c], w: a.c[0]}", "{p: a || b, q: a || b, r: a && b}", "[a || b.c, b.c || a, b.c]",
    "[a[*].b, a[*].b, a[*].{b: b, c: b}]", "[c || a.b, c || a.b, a.b]", "{d: to_string(b), e: to_string(b)}",
    "b || a.b || a.b", "l[*].[k, k, v] || l[*].k",
]


@pytest.mark.parametrize("source", EXPRESSIONS)
def test_compiled_expressions_agree_with_jmespath(source):
    expression = compile_expression(source, "$.x")
    for document in DOCUMENTS:
        try:
            expected = ("value", jmespath.search(source, document, options=OPTIONS))
        except jmespath.exceptions.JMESPathError as exc:
            expected = ("error", type(exc))
        try:
            got = ("value", expression.search(document, options=OPTIONS))
        except jmespath.exceptions.JMESPathError as exc:
            got = ("error", type(exc))
        assert got == expected, document


def test_field_names_and_literals_never_become_code():
    hostile = "x'] or __import__('os')._exit(3) or ['\n\"\\"
    quoted = '"' + hostile.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    assert compile_expression(quoted, "$.x").search({hostile: 1}) == 1
    assert compile_expression(f"{quoted}.{quoted}", "$.x").search({hostile: {hostile: 2}}) == 2
    text = hostile.rstrip("\\")  # a raw string literal escapes only its quote
    assert compile_expression("'" + text.replace("'", "\\'") + "'", "$.x").search({}) == text
    assert compile_template({hostile: "a"}, "$.t").search({"a": 1}) == {hostile: 1}


def test_deeply_nested_templates_compile_or_are_refused_cleanly():
    template = "a"
    for _ in range(40):
        template = {"n": template}
    rendered = compile_template(template, "$.t").search({"a": 1})
    for _ in range(40):
        rendered = rendered["n"]
    assert rendered == 1
    for _ in range(200):
        template = {"n": template}
    with pytest.raises(ExpressionError, match=r"^\$\.t: expression nested too deeply") as refused:
        compile_template(template, "$.t")
    assert refused.value.key == "$.t"


# -- templates ----------------------------------------------------------------


def test_a_string_leaf_is_an_expression():
    assert render("a.b", {"a": {"b": "x"}}) == "x"
    assert render("a || b", {"b": 2}) == 2
    assert render("a | length(@)", {"a": [1, 2, 3]}) == 3  # a pipe stays inside its leaf


def test_a_mapping_becomes_an_object_of_its_rendered_leaves():
    template = {"full_name": "body.name", "billing": {"tax_id": "body.tax_number", "country": "'US'"}}
    assert render(template, {"body": {"name": "Ann", "tax_number": "9"}}) == {
        "full_name": "Ann", "billing": {"tax_id": "9", "country": "US"}}


def test_missing_values_render_as_null():
    assert render({"a": "nothing.here", "b": {"c": "nope"}}, {}) == {"a": None, "b": {"c": None}}


def test_a_list_becomes_an_array_of_its_rendered_leaves():
    assert render(["a", "b", ["c"]], {"a": 1, "b": 2, "c": 3}) == [1, 2, [3]]


@pytest.mark.parametrize("leaf, expected", [
    (1, 1), (0, 0), (-7, -7), (2.5, 2.5), (True, True), (False, False), (None, None), (10 ** 15, 10 ** 15),
])
def test_number_boolean_and_null_leaves_are_literals(leaf, expected):
    result = render({"v": leaf, "nested": [leaf]}, {"v": "not this"})
    assert result == {"v": expected, "nested": [expected]}
    assert type(result["v"]) is type(expected)


def test_a_string_leaf_that_looks_like_a_number_is_still_an_expression():
    # In JMESPath a bare `'1'` is a raw string literal and `1` does not parse.
    assert render({"v": "'1'"}, {}) == {"v": "1"}
    assert render({"v": "`1`"}, {}) == {"v": 1}


def test_empty_mappings_and_lists_are_literals():
    assert render({"e": {}, "l": []}, {"e": "not this", "l": "nor this"}) == {"e": {}, "l": []}
    assert render({}, {"x": 1}) == {}
    assert render([], {"x": 1}) == []


@pytest.mark.parametrize("name", [
    "b c", "x-api-key", "1st", "a.b", "with\"quote", "back\\slash", "ünïcode", "", "@", "a|b", "`tick`", "new\nline",
])
def test_keys_that_are_not_identifiers_are_quoted(name):
    assert render({name: "v", "plain": "v"}, {"v": 1}) == {name: 1, "plain": 1}


def test_keys_are_never_evaluated_as_expressions():
    # A key like "a), evil: (b" must be one quoted key, not template syntax.
    key = "a), evil: (b"
    assert render({key: "v"}, {"v": 1, "a": 2, "b": 3}) == {key: 1}


def test_non_string_keys_from_yaml_become_strings():
    assert render({1: "v", 2.5: "v", False: "v"}, {"v": "x"}) == {"1": "x", "2.5": "x", "False": "x"}


def test_a_leaf_cannot_break_out_of_its_parentheses():
    with pytest.raises(ExpressionError) as info:
        compile_template({"a": "x), evil: (y"}, "$.t")
    assert info.value.key == "$.t.a"


def test_a_bad_leaf_is_reported_at_its_own_key():
    with pytest.raises(ExpressionError) as info:
        compile_template({"billing": {"tax_id": "body.tax["}}, "$.objects.contacts.create.body")
    assert info.value.key == "$.objects.contacts.create.body.billing.tax_id"
    assert "'body.tax['" in info.value.reason


def test_a_bad_list_leaf_is_reported_with_its_index():
    with pytest.raises(ExpressionError) as info:
        compile_template({"items": ["a", "b["]}, "$.q")
    assert info.value.key == "$.q.items[1]"


@pytest.mark.parametrize("leaf, kind", [
    (datetime.date(2024, 6, 15), "date"),  # YAML reads an unquoted 2024-06-15 as a date
    (b"bytes", "bytes"),
    ({1, 2}, "set"),
])
def test_other_leaf_types_are_refused_naming_the_type(leaf, kind):
    with pytest.raises(ExpressionError) as info:
        compile_template({"when": leaf}, "$.x")
    assert info.value.key == "$.x.when"
    assert kind in info.value.reason


def test_a_template_renders_in_one_search_with_custom_functions():
    template = {"status": "to_remote(body.status, 'status')", "company": "context('company_id')",
                "at": "from_iso(body.at, 'epoch')"}
    doc = {"body": {"status": "Active", "at": "2024-06-15T12:00:00Z"}}
    assert render(template, doc) == {"status": "active", "company": "c-1", "at": 1718452800}



def test_a_call_site_still_checks_argument_types_it_has_not_seen():
    # Each call site remembers the argument types that passed jmespath's check;
    # a value of another type, or an array (checked element by element), is checked again.
    to_iso = compile_expression("to_iso(v, 'epoch')", "$.t")
    assert to_iso.search({"v": 0}, options=OPTIONS) == "1970-01-01T00:00:00Z"
    for bad in (True, [0], {"a": 0}):
        with pytest.raises(jmespath.exceptions.JMESPathTypeError):
            to_iso.search({"v": bad}, options=OPTIONS)
    assert to_iso.search({"v": 0}, options=OPTIONS) == "1970-01-01T00:00:00Z"
    total = compile_expression("sum(v)", "$.t")
    assert total.search({"v": [1, 2]}, options=OPTIONS) == 3
    with pytest.raises(jmespath.exceptions.JMESPathTypeError):
        total.search({"v": [1, "2"]}, options=OPTIONS)

# -- strip_nulls --------------------------------------------------------------


def test_strip_nulls_drops_null_members_and_objects_left_empty():
    value = {"a": None, "b": {"c": None}, "d": {"e": {"f": None}}, "g": 1}
    assert strip_nulls(value) == {"g": 1}


def test_strip_nulls_keeps_falsy_values_that_are_not_null():
    value = {"zero": 0, "false": False, "empty": "", "list": []}
    assert strip_nulls(value) == value


def test_strip_nulls_recurses_into_lists_but_keeps_their_length():
    value = {"items": [{"a": None, "b": 1}, None, {"c": None}]}
    assert strip_nulls(value) == {"items": [{"b": 1}, None, {}]}


def test_strip_nulls_leaves_scalars_and_does_not_mutate():
    assert strip_nulls(None) is None
    assert strip_nulls("x") == "x"
    original = {"a": None, "b": {"c": None}}
    strip_nulls(original)
    assert original == {"a": None, "b": {"c": None}}


# -- reads() ------------------------------------------------------------------


@pytest.mark.parametrize("source, expected", [
    ("body.name", {("body", "name")}),
    ("body.billing.tax_id", {("body", "billing", "tax_id")}),
    ("body", {("body",)}),
    ("@", {()}),
    ("`1`", set()),
    ("'vendor'", set()),
    ("body.a || body.b", {("body", "a"), ("body", "b")}),
    ("body.a && body.b", {("body", "a"), ("body", "b")}),
    ("!body.a", {("body", "a")}),
    ("body.a == 'x'", {("body", "a")}),
    ("(body.is_supplier && 'vendor') || (body.is_customer && 'customer') || 'customer'",
     {("body", "is_supplier"), ("body", "is_customer")}),
    ("body.company_info_id || context.company_id", {("body", "company_info_id"), ("context", "company_id")}),
    ("to_remote(body.status, 'contact_status')", {("body", "status")}),
    ("length(body)", {("body",)}),
    ("{a: body.a, b: body.b.c}", {("body", "a"), ("body", "b", "c")}),
    ("[body.a, body.b]", {("body", "a"), ("body", "b")}),
    ("body.{a: x, b: y}", {("body", "x"), ("body", "y")}),
    ("body.items[*].value", {("body", "items", "[]", "value")}),
    ("body.items[].value", {("body", "items", "[]", "value")}),
    ("body.items[]", {("body", "items", "[]")}),
    ("body.groups[][]", {("body", "groups", "[]", "[]")}),  # flattened twice: the elements of its elements
    ("body.items[*]", {("body", "items", "[]")}),
    ("body.items[?value > `1`].name", {("body", "items", "[]", "value"), ("body", "items", "[]", "name")}),
    ("body.fields.*", {("body", "fields", "[]")}),
    ("body.items[0]", {("body", "items")}),
    ("body.items[0:2]", {("body", "items", "[]")}),  # a slice projects: each element, whole
    ("body.items[::-1].value", {("body", "items", "[]", "value")}),
    ("body | name", {("body", "name")}),
    ("body.items[*].{n: name, v: value}", {("body", "items", "[]", "name"), ("body", "items", "[]", "value")}),
])
def test_reads(source, expected):
    assert reads(jmespath.compile(source)) == expected


@pytest.mark.parametrize("source, keys", [
    ("context.company_id", {"company_id"}),
    ("context('region')", {"region"}),
    ("{a: context.a, b: context('b'), c: body.c}", {"a", "b"}),
    ("context", set()),  # the whole context: no key of it in particular
    ("context(body.key)", set()),  # a key not known until run time
    ("body.context.x", set()),
])
def test_context_reads_names_the_keys_an_expression_reads(source, keys):
    assert context_reads(compile_expression(source, "$.t")) == keys


def test_calls_lists_every_function_call_with_its_arguments():
    found = sorted((name, [a["type"] for a in args])
                   for name, args in calls(compile_expression("to_remote(join('-', [a, b]), 'm') || length(c)", "$.t")))
    assert found == [("join", ["literal", "multi_select_list"]), ("length", ["field"]),
                     ("to_remote", ["function_expression", "literal"])]


def test_reads_of_a_whole_template():
    template = compile_template({"full_name": "body.name", "billing": {"tax_id": "body.tax_number"},
                                 "company_id": "body.company_info_id || context.company_id", "kind": "'x'",
                                 "n": 1}, "$.t")
    assert reads(template) == {("body", "name"), ("body", "tax_number"), ("body", "company_info_id"),
                               ("context", "company_id")}


# -- the request side of an Operation ----------------------------------------


def operation(verb="create", **spec):
    unifier = Unifier({"id": "id"}, InvoiceOutput, "$.objects.invoices.unify")
    return Operation(msgspec.convert(spec, OperationSpec), verb, f"$.objects.invoices.{verb}", unifier)


def test_path_expressions_are_filled_and_percent_encoded():
    op = operation("retrieve", path="/companies/{context.company_id}/contacts/{id}")
    request = op.request({"id": "a/b?c#d%e f", "context": {"company_id": "c 1"}}, OPTIONS)
    assert request.path == "/companies/c%201/contacts/a%2Fb%3Fc%23d%25e%20f"


@pytest.mark.parametrize("value", ["..", ".", "", None, {"a": 1}, [1], True])
def test_path_values_that_would_leave_the_segment_or_mean_nothing_are_refused(value):
    op = operation("retrieve", path="/contacts/{id}")
    with pytest.raises(TranslationError, match="id"):
        op.request({"id": value}, OPTIONS)


def test_a_number_in_a_path_is_written_as_text():
    assert operation("retrieve", path="/contacts/{id}").request({"id": 42}, OPTIONS).path == "/contacts/42"


def test_a_path_must_start_with_a_slash():
    with pytest.raises(ExpressionError) as info:
        operation("retrieve", path="contacts/{id}")
    assert info.value.key == "$.objects.invoices.retrieve.path"


def test_query_values_render_as_strings_dropping_nulls_and_repeating_lists():
    op = operation("list", path="/x", query={"skip": "page.offset", "flag": "`true`", "off": "`false`", "gone": "nothing",
                                             "ids": "`[1, \"b\"]`", "name": "'a b'"})
    request = op.request({"page": {"offset": 0}}, OPTIONS)
    assert request.query == [("skip", "0"), ("flag", "true"), ("off", "false"), ("ids", "1"), ("ids", "b"),
                             ("name", "a b")]


def test_an_object_as_a_query_value_cannot_be_translated():
    op = operation("list", path="/x", query={"filter": "`{\"a\": 1}`"})
    with pytest.raises(TranslationError, match="filter"):
        op.request({}, OPTIONS)


def test_body_and_headers_lose_their_nulls():
    op = operation(path="/x", method="POST", headers={"X-Company": "context('company_id')", "X-None": "nothing"},
                   body={"a": "body.a", "b": {"c": "body.c"}})
    request = op.request({"body": {"a": 1}}, OPTIONS)
    assert request.method == "POST"
    assert request.headers == {"X-Company": "c-1"}
    assert request.body == {"a": 1}


def test_a_value_a_function_cannot_convert_is_refused_naming_its_field():
    op = operation(path="/x", method="POST", body={"at": "from_iso(body.at, 'epoch')"})
    with pytest.raises(RequestRefused, match="not a date") as info:
        op.request({"body": {"at": "not a date"}}, OPTIONS)
    assert [v.path for v in info.value.violations] == ["$.at"]


def test_a_function_failing_on_what_the_caller_did_not_send_is_the_mappings_bug():
    op = operation(path="/x", method="POST", body={"at": "from_iso(body.at, 'unix')", "n": "split(body.n, '-')"})
    with pytest.raises(MappingBug) as info:
        op.request({"body": {"at": "2024-01-01"}}, OPTIONS)
    assert info.value.key.endswith(".body") and "unix" in info.value.reason
    with pytest.raises(MappingBug, match="split"):
        op.request({"body": {"n": 5}}, OPTIONS)  # a typed field of the wrong type only a mapping can meet


def test_when_selects_an_alternative():
    op = operation(path="/x", when="body.is_supplier")
    assert op.applies({"body": {"is_supplier": True}}, OPTIONS)
    assert not op.applies({"body": {"is_supplier": False}}, OPTIONS)
    assert operation(path="/x").applies({}, OPTIONS)


def test_ignored_names_the_body_fields_the_operation_does_not_carry():
    op = operation(path="/x", method="POST", body={"number": "body.number", "memo": "body.memo"})
    body = {"number": "1", "memo": "m", "currency": "USD", "status": None, "tracking_categories": [], "field_mappings": {}}
    assert op.ignored({"body": body}) == ["$.currency"]  # null and empty values carry nothing to lose


def test_ignored_looks_inside_list_items_a_mapping_reads_elementwise():
    op = operation(path="/x", method="POST", body={"lines": "body.line_items[*].{amount: value, text: name}"})
    body = {"line_items": [{"value": 1, "name": "a", "type": "t"}, {"value": 2, "currency": "EUR", "name": None}]}
    assert op.ignored({"body": body}) == ["$.line_items[0].type", "$.line_items[1].currency"]


def test_ignored_is_empty_when_the_whole_body_or_a_whole_field_is_read():
    assert operation(path="/x", method="POST", body="body").ignored({"body": {"anything": 1}}) == []
    assert operation(path="/x", method="POST", body={"raw": "@"}).ignored({"body": {"anything": 1}}) == []
    whole = operation(path="/x", method="POST", body={"lines": "body.line_items"})
    assert whole.ignored({"body": {"line_items": [{"value": 1, "other": 2}]}}) == []


def test_ignored_counts_fields_read_by_when_path_query_and_headers_too():
    op = operation(path="/x/{body.contact_id}", method="POST", when="body.type == 'A'",
                   query={"m": "body.memo"}, headers={"X-C": "body.currency"}, body={"n": "body.number"})
    body = {"contact_id": "c", "type": "A", "memo": "m", "currency": "USD", "number": "1", "balance": 3}
    assert op.ignored({"body": body}) == ["$.balance"]


# -- whole_reads and the list decoder built on it --------------------------------


def _prune(document, paths):
    """`document` with only what `paths` reach: what a page decoder keeps."""
    if () in paths or not isinstance(document, dict):
        return document
    heads = {p[0] for p in paths}
    return {k: _prune(v, {p[1:] for p in paths if p[0] == k}) for k, v in document.items() if k in heads}


@pytest.mark.parametrize("source", EXPRESSIONS)
def test_an_expression_sees_nothing_outside_its_whole_reads(source):
    expression = compile_expression(source, "$.x")
    paths = whole_reads(expression)
    for document in DOCUMENTS + [{"a": {"b": {"c": 1}, "x": 2}, "b": {"c": [1]}, "y": 3}]:
        try:
            expected = ("value", expression.search(document, options=OPTIONS))
        except jmespath.exceptions.JMESPathError as exc:
            expected = ("error", type(exc))
        try:
            got = ("value", expression.search(_prune(document, paths), options=OPTIONS))
        except jmespath.exceptions.JMESPathError as exc:
            got = ("error", type(exc))
        assert got == expected, (document, paths)


def test_whole_reads_are_member_paths_to_what_is_looked_at():
    def paths(source):
        return whole_reads(compile_expression(source, "$.x"))
    assert paths("{a: a.b.c, b: to_iso(d, 'epoch'), c: type == 'x', d: context('company_id')}") == {
        ("a", "b", "c"), ("d",), ("type",)}
    assert paths("(a || b).c") == {("a",), ("b",)}  # tested for truth: whole
    assert paths("lines[*].amount") == {("lines",)}
    assert paths("keys(@)") == {()}


def _page_unifier():
    template = {"id": "id", "number": "number", "total_amount": "total", "currency": "to_unified(cur, 'status')",
                "contact_id": "contact.id"}
    return Unifier(template, InvoiceOutput, "$.objects.invoices.unify")


def test_a_list_answer_decodes_only_what_the_mapping_reads():
    unifier = _page_unifier()
    decoder = page_decoder(compile_expression("data.items", "$.r"), [compile_expression("data.total", "$.t")], unifier)
    page = {"data": {"total": 2, "items": [
        {"id": "1", "number": "N1", "total": 5, "cur": "Active", "contact": {"id": "c", "name": "x"}, "notes": {"a": [1]}},
        {"id": "2", "contact": None, "unread": "x"},
    ]}, "meta": [1, 2]}
    raw = msgspec.json.encode(page)
    decoded = decoder.decode(raw)
    # Each record a Struct of what the template reads (gateway/shapes.py): an absent member is null.
    assert msgspec.to_builtins(decoded) == {"data": {"total": 2, "items": [
        {"id": "1", "number": "N1", "total": 5, "cur": "Active", "contact": {"id": "c"}},
        {"id": "2", "number": None, "total": None, "cur": None, "contact": None}]}}
    whole = [unifier.unify(r, OPTIONS, False) for r in page["data"]["items"]]
    # A page's objects answer as the model's do, whatever class holds them.
    assert msgspec.json.encode(unifier.unify_page(decoded["data"]["items"], OPTIONS, False)) == msgspec.json.encode(whole)


@pytest.mark.parametrize("page", [
    {"data": {"items": {"not": "an array"}}},
    {"data": {"items": ["not an object"]}},
    {"data": {"items": [{"id": "1", "contact": "not an object"}]}},
    {"data": "not an object"},
    [],
])
def test_an_answer_of_another_shape_is_decoded_whole(page):
    from gateway.upstream import _decode
    unifier = _page_unifier()
    decoder = page_decoder(compile_expression("data.items || `[]`", "$.r"), [], unifier)
    assert decoder is not None
    raw = msgspec.json.encode(page)
    assert _decode(raw, decoder) == page


def test_a_list_answer_that_is_not_utf8_is_refused_even_where_unread():
    from gateway.upstream import _INVALID, _decode
    decoder = page_decoder(compile_expression("data.items", "$.r"), [], _page_unifier())
    assert _decode(b'{"data": {"items": [], "skipped": "\xff"}}', decoder) is _INVALID
    decoded = _decode(b'{"data": {"items": [{"id": "\xc3\xa9"}]}}', decoder)
    assert msgspec.to_builtins(decoded)["data"]["items"][0]["id"] == "\u00e9"


def test_a_template_that_reads_a_record_whole_keeps_it_whole():
    unifier = Unifier({"id": "id", "field_mappings": "@"}, InvoiceOutput, "$.objects.invoices.unify")
    decoder = page_decoder(compile_expression("items", "$.r"), [], unifier)
    assert decoder.decode(b'{"items": [{"id": "1", "x": [1]}], "y": 1}') == {"items": [{"id": "1", "x": [1]}]}
