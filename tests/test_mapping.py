"""Loading mapping files: every mistake is a MappingError naming the file, the key and the reason.

And `python -m gateway check`, which is how an operator finds those mistakes.
"""

import copy
import subprocess
import sys
from pathlib import Path

import jmespath
import pytest
import yaml

from gateway import cli, mapping
from gateway.functions import Functions
from gateway.mapping import MappingError
from gateway.settings import bundled_mappings

OPTIONS = jmespath.Options(custom_functions=Functions({"status": {"Active": "ACTIVE"}}, {}, strict=True))

ROOT = Path(__file__).resolve().parent.parent

# A small but complete mapping; each test breaks one thing in a copy of it.
VALID = {
    "provider": "acme",
    "base_url": "https://api.acme.test/v1/",
    "auth": {"type": "bearer"},
    "errors": {"message": "error.message", "code": "error.code", "status": {"BAD": 422}},
    "values": {"status": {"Active": "ACTIVE"}},
    "objects": {
        "contacts": {
            "unify": {"id": "id", "name": "name", "status": "to_unified(status, 'status')"},
            "create": {"method": "POST", "path": "/contacts", "body": {"name": "body.name"}, "record": "data",
                       "examples": [{"input": {"body": {"name": "Acme"}}, "request": {"body": {"name": "Acme"}}}]},
            "list": {"path": "/contacts", "query": {"offset": "page.offset"}, "records": "items",
                     "paging": {"style": "offset", "max_limit": 50},
                     "examples": [{"request": {"query": {"offset": 0}}}]},
            "retrieve": {"path": "/contacts/{id}", "examples": [{"input": {"id": "7"}, "request": {"path": "/contacts/7"}}]},
        },
    },
}


def write(tmp_path: Path, content, name: str = "acme.yaml") -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
    return path


def broken(tmp_path: Path, change) -> Path:
    spec = copy.deepcopy(VALID)
    change(spec)
    return write(tmp_path, spec)


def load_error(path: Path) -> str:
    with pytest.raises(MappingError) as info:
        mapping.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message  # the file comes first, as an editor expects
    return message


# -- what loads ---------------------------------------------------------------


def test_a_valid_file_loads_into_a_provider(tmp_path):
    provider = mapping.load(write(tmp_path, VALID))
    assert provider.name == "acme"
    assert provider.base_url == "https://api.acme.test/v1"  # the trailing slash goes
    assert provider.auth.type == "bearer" and provider.auth.credential == "api_key"
    assert provider.error_status == {"BAD": 422}
    assert [op.verb for op in provider.operations("contacts", "create")] == ["create"]
    assert provider.operations("contacts", "list")[0].spec.paging.max_limit == 50
    assert provider.operations("invoices", "list") == ()
    assert provider.operations("contacts", "delete") == ()
    assert provider.source == tmp_path / "acme.yaml"


def test_alternatives_compile_in_order(tmp_path):
    path = broken(tmp_path, lambda s: s["objects"]["contacts"].update(retrieve=[
        {"path": "/people/{id}", "when": "starts_with(id, 'p')"}, {"path": "/companies/{id}"}]))
    ops = mapping.load(path).operations("contacts", "retrieve")
    assert [op.key for op in ops] == ["$.objects.contacts.retrieve[0]", "$.objects.contacts.retrieve[1]"]


def test_the_bundled_formation_mapping_loads():
    providers = mapping.load_dir(bundled_mappings())
    formation = providers["formation"]
    assert formation.base_url == "https://api.clemta.com"
    assert formation.auth.header == "X-API-KEY"
    assert set(formation.objects) == {"contacts"}
    assert {verb for verb in ("create", "list", "retrieve") if formation.operations("contacts", verb)} == {
        "create", "list", "retrieve"}


def test_a_request_side_slice_compiles(tmp_path):
    # reads() used to crash on a slice's numeric children, with a TypeError instead of loading.
    path = broken(tmp_path, lambda s: s["objects"]["contacts"]["create"].update(
        body={"name": "body.name", "first": "body.field_mappings.tags[0:1]"}))
    assert mapping.load(path).operations("contacts", "create")


# -- broken YAML --------------------------------------------------------------


def test_broken_yaml(tmp_path):
    path = write(tmp_path, "provider: acme\nauth: {type: bearer\nbase_url: https://x.test\n")
    message = load_error(path)
    assert ": $: cannot read YAML" in message
    assert "line" in message  # PyYAML says where


def test_a_file_that_is_not_a_mapping(tmp_path):
    message = load_error(write(tmp_path, "- just\n- a list\n"))
    assert ": $: " in message and "Expected `object`, got `array`" in message


def test_an_empty_file(tmp_path):
    message = load_error(write(tmp_path, ""))
    assert ": $: " in message and "got `null`" in message


def test_a_missing_file(tmp_path):
    message = load_error(tmp_path / "nope.yaml")
    assert "cannot read YAML" in message and "No such file" in message


# -- unknown keys and wrong types ---------------------------------------------


@pytest.mark.parametrize("change, key, field", [
    (lambda s: s.update(providr="x"), "$", "providr"),
    (lambda s: s["auth"].update(heder="X"), "$.auth", "heder"),
    (lambda s: s["errors"].update(mesage="m"), "$.errors", "mesage"),
    (lambda s: s["objects"]["contacts"].update(lists={"path": "/x"}), "$.objects.contacts", "lists"),
    (lambda s: s["objects"]["contacts"]["list"].update(recrods="x"), "$.objects.contacts.list", "recrods"),
    (lambda s: s["objects"]["contacts"]["list"]["paging"].update(stlye="page"), "$.objects.contacts.list.paging", "stlye"),
])
def test_unknown_keys(tmp_path, change, key, field):
    message = load_error(broken(tmp_path, change))
    assert f": {key}: " in message
    assert "unknown field" in message and f"`{field}`" in message


@pytest.mark.parametrize("change, key, reason", [
    (lambda s: s.update(provider=["acme"]), "$.provider", "Expected `str`, got `array`"),
    (lambda s: s.update(base_url=42), "$.base_url", "Expected `str`, got `int`"),
    (lambda s: s.update(objects=["contacts"]), "$.objects", "Expected `object`, got `array`"),
    (lambda s: s["auth"].update(type="oauth"), "$.auth.type", "'oauth'"),
    (lambda s: s["objects"]["contacts"]["list"]["paging"].update(max_limit="ten"),
     "$.objects.contacts.list.paging.max_limit", "Expected `int`, got `str`"),
    (lambda s: s["objects"]["contacts"]["list"]["paging"].update(style="cursor"),
     "$.objects.contacts.list.paging.style", "'cursor'"),
    (lambda s: s["objects"]["contacts"]["create"].update(method="FETCH"),
     "$.objects.contacts.create.method", "'FETCH'"),
    (lambda s: s["objects"]["contacts"]["create"].update(path=7), "$.objects.contacts.create.path", "got `int`"),
    (lambda s: s["errors"]["status"].update(BAD="four-two-two"), "$.errors.status.BAD", "Expected `int`, got `str`"),
    (lambda s: s["objects"]["contacts"].update(unify=["id"]), "$.objects.contacts.unify", "Expected `object`"),
    (lambda s: s["values"].update(status="Active"), "$.values.status", "Expected `object`, got `str`"),
])
def test_wrong_types(tmp_path, change, key, reason):
    message = load_error(broken(tmp_path, change))
    assert f": {key}: " in message
    assert reason in message


def test_the_key_names_which_object_is_wrong(tmp_path):
    # msgspec writes dict keys as `[...]`; with several objects the key must say which one.
    def change(s):
        s["objects"]["accounts"] = {"unify": {"id": "id"}, "list": {"path": "/accounts"}}
        s["objects"]["invoices"] = {"unify": {"id": "id"}, "list": {"path": "/invoices", "paging": {"max_limit": "x"}}}
    message = load_error(broken(tmp_path, change))
    assert ": $.objects.invoices.list.paging.max_limit: Expected `int`, got `str`" in message
    assert "[...]" not in message


def test_the_key_names_the_entry_inside_a_list_alternative(tmp_path):
    path = broken(tmp_path, lambda s: s["objects"]["contacts"].update(retrieve=[
        {"path": "/a/{id}"}, {"path": "/b/{id}", "paging": {"stlye": "x"}}]))
    assert ": $.objects.contacts.retrieve[1].paging: Object contains unknown field `stlye`" in load_error(path)


def test_a_key_that_is_not_a_string(tmp_path):
    path = write(tmp_path, yaml.safe_dump(VALID).replace("  status:\n    Active: ACTIVE", "  status:\n    1: ACTIVE"))
    message = load_error(path)
    assert ": $.values.status: Expected `str`, got `int`" in message
    assert "key`" not in message


def test_missing_required_keys(tmp_path):
    message = load_error(broken(tmp_path, lambda s: s.pop("auth")))
    assert ": $: " in message and "missing required field `auth`" in message
    message = load_error(broken(tmp_path, lambda s: s["objects"]["contacts"]["retrieve"].pop("path")))
    assert ": $.objects.contacts.retrieve: " in message and "`path`" in message


def test_a_base_url_that_is_not_http(tmp_path):
    message = load_error(broken(tmp_path, lambda s: s.update(base_url="ftp://acme.test")))
    assert ": $.base_url: " in message and "http:// or https://" in message


# -- bad JMESPath ---------------------------------------------------------------


@pytest.mark.parametrize("change, key, source", [
    (lambda s: s["objects"]["contacts"]["unify"].update(name="full_name["), "$.objects.contacts.unify.name", "full_name["),
    (lambda s: s["objects"]["contacts"]["create"]["body"].update(name="body.name ||"),
     "$.objects.contacts.create.body.name", "body.name ||"),
    (lambda s: s["objects"]["contacts"]["create"].update(record="data."), "$.objects.contacts.create.record", "data."),
    (lambda s: s["objects"]["contacts"]["create"].update(when="body.["), "$.objects.contacts.create.when", "body.["),
    (lambda s: s["objects"]["contacts"]["list"].update(records="items[?"), "$.objects.contacts.list.records", "items[?"),
    (lambda s: s["objects"]["contacts"]["list"].update(total="meta..total"), "$.objects.contacts.list.total", "meta..total"),
    (lambda s: s["objects"]["contacts"]["list"]["query"].update(offset="page.(offset"),
     "$.objects.contacts.list.query.offset", "page.(offset"),
    (lambda s: s["objects"]["contacts"]["list"]["paging"].update(style="token", next="meta.next["),
     "$.objects.contacts.list.paging.next", "meta.next["),
    (lambda s: s["objects"]["contacts"]["retrieve"].update(path="/contacts/{id[}"),
     "$.objects.contacts.retrieve.path", "id["),
    (lambda s: s["errors"].update(message="error.["), "$.errors.message", "error.["),
    (lambda s: s["errors"].update(code="error.code]"), "$.errors.code", "error.code]"),
    (lambda s: s.update(headers={"X-Tenant": "context.tenant["}), "$.headers.X-Tenant", "context.tenant["),
])
def test_bad_jmespath(tmp_path, change, key, source):
    message = load_error(broken(tmp_path, change))
    assert f": {key}: " in message
    assert f"bad JMESPath expression {source!r}" in message


def test_a_bad_leaf_in_a_list_alternative_names_its_index(tmp_path):
    path = broken(tmp_path, lambda s: s["objects"]["contacts"].update(retrieve=[
        {"path": "/people/{id}"}, {"path": "/companies/{id}", "when": "id.["}]))
    assert ": $.objects.contacts.retrieve[1].when: " in load_error(path)


def test_a_template_leaf_of_the_wrong_type(tmp_path):
    # An unquoted 2024-06-15 in YAML is a date, not an expression.
    path = write(tmp_path, yaml.safe_dump(VALID).replace("name: body.name", "name: 2024-06-15"))
    message = load_error(path)
    assert ": $.objects.contacts.create.body.name: " in message and "not date" in message


# -- the unified API's shape ----------------------------------------------------


def test_an_unknown_unified_object(tmp_path):
    path = broken(tmp_path, lambda s: s["objects"].update(contactz={"unify": {"id": "id"}}))
    message = load_error(path)
    assert ": $.objects.contactz: " in message
    assert "unknown unified object; did you mean 'contacts'?" in message
    message = load_error(broken(tmp_path, lambda s: s["objects"].update(ledgers={"unify": {"id": "id"}})))
    assert "unknown unified object; known: accounts, addresses" in message  # nothing near: every one


def test_create_on_an_object_that_has_no_create(tmp_path):
    path = broken(tmp_path, lambda s: s["objects"].update(
        addresses={"unify": {"id": "id"}, "create": {"method": "POST", "path": "/addresses"}}))
    message = load_error(path)
    assert ": $.objects.addresses.create: " in message
    assert "no create for addresses" in message


def test_list_and_retrieve_on_an_object_without_create_are_fine(tmp_path):
    path = broken(tmp_path, lambda s: s["objects"].update(
        addresses={"unify": {"id": "id", "street_1": "line1"}, "list": {"path": "/addresses"}}))
    assert mapping.load(path).operations("addresses", "list")


@pytest.mark.parametrize("field, reason", [
    ("full_name", "not a field of the unified ContactOutput; did you mean 'name'?"),
    ("Name", "not a field of the unified ContactOutput; did you mean 'name'?"),
    ("xyz", "not a field of the unified ContactOutput; fields: company_info_id, created_at, currency, email_address"),
    ("remote_data", "the gateway fills it itself"),
])
def test_a_unify_key_that_is_not_a_unified_field(tmp_path, field, reason):
    path = broken(tmp_path, lambda s: s["objects"]["contacts"]["unify"].update({field: "x"}))
    message = load_error(path)
    assert f": $.objects.contacts.unify.{field}: {reason}" in message, message


def test_a_unify_key_near_a_unified_field_names_it(tmp_path):
    message = load_error(broken(tmp_path, lambda s: s["objects"]["contacts"]["unify"].update(remote_idd="id")))
    assert "$.objects.contacts.unify.remote_idd: not a field of the unified ContactOutput; did you mean 'remote_id'?" in message


@pytest.mark.parametrize("verb", ["create", "list", "retrieve"])
def test_a_path_not_starting_with_a_slash(tmp_path, verb):
    path = broken(tmp_path, lambda s: s["objects"]["contacts"][verb].update(path="contacts"))
    message = load_error(path)
    assert f": $.objects.contacts.{verb}.path: " in message
    assert "starts with /" in message


def test_a_full_url_as_a_path_is_refused(tmp_path):
    # A path is relative to the connection's base URL; it cannot name another host.
    path = broken(tmp_path, lambda s: s["objects"]["contacts"]["retrieve"].update(path="https://evil.test/{id}"))
    assert ": $.objects.contacts.retrieve.path: " in load_error(path)


# -- a directory of mappings ----------------------------------------------------


def test_load_dir_indexes_providers_by_name(tmp_path):
    write(tmp_path, VALID, "acme.yaml")
    write(tmp_path, {**VALID, "provider": "other"}, "other.yaml")
    (tmp_path / "notes.txt").write_text("not a mapping")
    assert set(mapping.load_dir(tmp_path)) == {"acme", "other"}


def test_load_dir_refuses_two_files_for_one_provider(tmp_path):
    write(tmp_path, VALID, "a.yaml")
    second = write(tmp_path, VALID, "b.yaml")
    with pytest.raises(MappingError) as info:
        mapping.load_dir(tmp_path)
    assert str(info.value).startswith(f"{second}: $.provider: ")
    assert str(tmp_path / "a.yaml") in str(info.value)


def test_load_dir_on_a_missing_directory(tmp_path):
    with pytest.raises(MappingError, match="no such directory"):
        mapping.load_dir(tmp_path / "missing")


def test_load_dir_reports_the_broken_file(tmp_path):
    write(tmp_path, VALID, "a.yaml")
    bad = broken(tmp_path, lambda s: s.update(provider="zz", base_url="nope"))
    with pytest.raises(MappingError) as info:
        mapping.load_dir(tmp_path)
    assert str(info.value).startswith(f"{bad}: $.base_url: ")


# -- gateway check ----------------------------------------------------------------


def run_check(*paths: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", "check", *paths], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_check_passes_on_the_bundled_mappings():
    result = run_check()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok" in result.stdout and "formation" in result.stdout
    assert "Traceback" not in result.stderr


def test_check_fails_on_a_broken_file_naming_file_key_and_reason(tmp_path):
    bad = broken(tmp_path, lambda s: s["objects"]["contacts"]["unify"].update(nmae="name"))
    result = run_check(str(bad))
    assert result.returncode != 0
    assert f"FAIL {bad}: $.objects.contacts.unify.nmae: not a field of the unified ContactOutput" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_check_reports_every_file_of_a_directory(tmp_path):
    good = write(tmp_path, VALID, "a.yaml")
    bad = write(tmp_path, "provider: [\n", "b.yaml")
    result = run_check(str(tmp_path))
    assert result.returncode == 1
    assert f"ok   {good}: provider acme, 1 object(s), 3 operation(s)" in result.stdout
    assert f"FAIL {bad}: $: cannot read YAML" in result.stdout


def test_check_in_process(tmp_path, capsys):
    good = write(tmp_path, VALID, "a.yaml")
    assert cli.main(["check", str(good)]) == 0
    bad = broken(tmp_path, lambda s: s["objects"]["contacts"]["list"].update(path="contacts"))
    assert cli.main(["check", str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {bad}: $.objects.contacts.list.path: a path starts with /" in out


def test_check_with_no_mapping_files_fails(tmp_path, capsys):
    assert cli.main(["check", str(tmp_path)]) == 2
    assert "no mapping files" in capsys.readouterr().err


def test_echo_names_input_fields_of_a_create_only(tmp_path):
    from gateway.mapping import MappingError, load

    base = "provider: p\nbase_url: https://p.test\nauth: {type: none}\nobjects:\n  contacts:\n    unify: {id: id}\n"
    bad_field = tmp_path / "a.yaml"
    bad_field.write_text(base + "    create: {method: POST, path: /c, echo: [remote_id]}\n")
    with pytest.raises(MappingError, match=r"objects\.contacts\.create\.echo.*remote_id"):
        load(bad_field)
    on_list = tmp_path / "b.yaml"
    on_list.write_text(base + "    list: {path: /c, echo: [name]}\n")
    with pytest.raises(MappingError, match=r"objects\.contacts\.list\.echo"):
        load(on_list)


def test_ignored_fields_of_a_filter_over_a_list_of_strings(tmp_path):
    # A filter over a list of scalars reads each element whole: ("body", "tags", "[]"). It used to
    # crash ignored() with an IndexError (a bare 500 on every create that sent the list).
    path = broken(tmp_path, lambda s: s["objects"]["contacts"]["create"].update(body={
        "name": "body.name",
        "group": {"value": "split(body.field_mappings.tags[?starts_with(@, 'group-')] | [0], '-')[1]"},
        "first": "body.tracking_categories[?starts_with(@, 'class-')] | [0]"}))
    op = mapping.load(path).operations("contacts", "create")[0]
    # dept-2 is no class: the filter keeps it out of the request, and the caller is told.
    assert op.ignored({"body": {"name": "x", "tracking_categories": ["class-1", "dept-2"], "email_address": "a@b.c"}}) == \
        ["$.tracking_categories[1]", "$.email_address"]


# -- the context a mapping reads ---------------------------------------------------


@pytest.mark.parametrize("where, expression, key", [
    ("query", "context.region", "$.objects.contacts.list.query.region"),
    ("unify", "context('region')", "$.objects.contacts.unify.company_info_id"),
])
def test_a_context_key_read_but_not_declared_is_refused(tmp_path, where, expression, key):
    def change(spec):
        if where == "query":
            spec["objects"]["contacts"]["list"]["query"]["region"] = expression
        else:
            spec["objects"]["contacts"]["unify"]["company_info_id"] = expression
    message = load_error(broken(tmp_path, change))
    assert f": {key}: reads context key 'region', which the mapping's `context` does not declare" in message, message
    declared = broken(tmp_path, lambda spec: (change(spec), spec.update(context={"region": {"description": "where"}})))
    assert mapping.load(declared).context["region"].description == "where"


def test_a_context_key_needs_its_description(tmp_path):
    message = load_error(broken(tmp_path, lambda spec: spec.update(context={"region": {"type": "string"}})))
    assert "$.context.region" in message and "description" in message, message


# -- mistakes no single expression shows ------------------------------------------


def _set(path: str, value):
    """A change setting spec[a][b]... = value, path dotted."""
    def change(spec: dict) -> None:
        *parents, last = path.split(".")
        node = spec
        for part in parents:
            node = node[part]
        node[last] = value
    return change


@pytest.mark.parametrize("path, value, key, reason", [
    # each mistake named by the template's own key: the leaf it is in
    ("objects.contacts.unify.name", "to_strin(name)", "$.objects.contacts.unify.name",
     "unknown function to_strin(); did you mean 'to_string'?"),
    ("objects.contacts.unify.name", "to_string(name, name)", "$.objects.contacts.unify.name",
     "to_string() takes 1 argument(s), not 2"),
    ("objects.contacts.unify.created_at", "to_iso(created, 'unix')", "$.objects.contacts.unify.created_at",
     "to_iso() names the date format 'unix', which is none; formats: date, epoch, epoch_ms, iso, msjson"),
    ("objects.contacts.create.body", {"d": "from_iso(body.x, 'isoo')"}, "$.objects.contacts.create.body.d",
     "from_iso() names the date format 'isoo', which is none; did you mean 'iso'?"),
    ("objects.contacts.unify.status", "to_unified(status, 'statuz')", "$.objects.contacts.unify.status",
     "to_unified() names the value map 'statuz', which `values` does not hold; did you mean 'status'?"),
    ("objects.contacts.list.query", {"offset": "paeg.offset"}, "$.objects.contacts.list.query.offset",
     "reads 'paeg', which the request document does not hold: it holds body, id, query, page, context; did you mean 'page'?"),
    ("objects.contacts.list.query", {"offset": "page.numbr"}, "$.objects.contacts.list.query.offset",
     "reads page.numbr, which a page does not hold; did you mean 'number'?"),
    ("objects.contacts.retrieve.path", "/contacts/{`7`}", "$.objects.contacts.retrieve.path",
     "the placeholder {`7`} reads nothing from the request"),
    ("objects.contacts.retrieve.path", "/contacts/{idd}", "$.objects.contacts.retrieve.path",
     "reads 'idd', which the request document does not hold"),
    ("objects.contacts.unify.name", "context.region", "$.objects.contacts.unify.name",
     "reads context.region, but unify reads a provider record: use context('region')"),
    ("objects.contacts.create.body", {"n": "to_number(body.name)"}, "$.objects.contacts.create.body.n",
     "to_number() gives null for what it cannot read"),
    # the request document's members are no record's: unify reads the provider's record
    ("objects.contacts.unify.name", "body.name", "$.objects.contacts.unify.name",
     "reads body.name, a member of the request document, but unify reads a provider record"),
    ("objects.contacts.unify.name", "page.limit || name", "$.objects.contacts.unify.name", "reads page.limit"),
    ("objects.contacts.unify.name", "query.q", "$.objects.contacts.unify.name", "reads query.q"),
    # in a nested template, the whole way down
    ("objects.contacts.create.body", {"billing": {"tax": [{"id": "bdy.tax_number"}]}},
     "$.objects.contacts.create.body.billing.tax[0].id", "reads 'bdy', which the request document does not hold"),
])
def test_a_mistake_no_single_expression_shows_is_refused_at_load(tmp_path, path, value, key, reason):
    message = load_error(broken(tmp_path, _set(path, value)))
    assert f": {key}: {reason}" in message, message


def test_fragments_stand_in_for_templates_wherever_a_template_may_be(tmp_path):
    def change(spec):
        spec["fragments"] = {"display": "upper_name || name", "person": {"full_name": "body.name", "kind": "=person"}}
        spec["objects"]["contacts"]["unify"]["name"] = "$display"
        spec["objects"]["contacts"]["create"]["body"] = "$person"
        spec["objects"]["contacts"]["create"]["examples"][0]["request"]["body"] = {"full_name": "Acme", "kind": "person"}
    provider = mapping.load(broken(tmp_path, change))
    create = provider.operations("contacts", "create")[0]
    assert create.request({"body": {"name": "Acme"}}, OPTIONS).body == {"full_name": "Acme", "kind": "person"}
    assert create.unify({"id": "1", "name": "a", "upper_name": "A"}, OPTIONS, False).name == "A"
    assert provider.warnings == []


def test_a_fragment_nobody_uses_is_a_warning(tmp_path):
    provider = mapping.load(broken(tmp_path, _set("fragments", {"spare": "name"})))
    assert provider.warnings == ["$.fragments.spare: no template uses this fragment"]


@pytest.mark.parametrize("leaf, value", [("=ACCREC", "ACCREC"), ("=", ""), ("==x", "=x"), ("=it's \"quoted\" `x`", "it's \"quoted\" `x`"),
                                         ("=Type==\"SPEND\"", 'Type=="SPEND"')])
def test_a_literal_leaf_needs_no_inner_quotes(tmp_path, leaf, value):
    provider = mapping.load(broken(tmp_path, _set("objects.contacts.list.query", {"where": leaf, "offset": "page.offset"})))
    op = provider.operations("contacts", "list")[0]
    assert op.request({"page": {"offset": 0}}, OPTIONS).query == [("where", value), ("offset", "0")]


def _fragment_and_context(spec: dict) -> None:
    """VALID with a fragment in use and a context key declared: what the cases below break."""
    spec["context"] = {"region": {"description": "where"}}
    spec["fragments"] = {"name": "name"}
    spec["objects"]["contacts"]["unify"]["name"] = "$name"


@pytest.mark.parametrize("path, value, key, reason", [
    ("objects.contacts.unify.status", "$nam", "$.objects.contacts.unify.status", "unknown fragment 'nam'; did you mean 'name'?"),
    ("objects.contacts.create.body", {"x": ["$nope"]}, "$.objects.contacts.create.body.x[0]",
     "unknown fragment 'nope'; known: name"),
    ("fragments", {"name": {"a": "$loop"}, "loop": {"b": "$name"}}, "$.fragments.name",
     "the fragments name -> loop -> name use each other"),
    ("fragments.name", "nam(e", "$.fragments.name", "bad JMESPath expression"),
    ("passthrough", ["statuz"], "$.passthrough[0]", "no value map named 'statuz'; did you mean 'status'?"),
    ("objects.contacts.create.checks", {"body.nmae": {"required": True}}, "$.objects.contacts.create.checks.body.nmae",
     "body.nmae: not a field of the unified ContactInput; did you mean 'name'?"),
    ("objects.contacts.create.checks", {"context.regoin": {"required": True}},
     "$.objects.contacts.create.checks.context.regoin", "context.regoin is not a key the mapping's `context` declares"),
    ("objects.contacts.create.checks", {"body.name": {"or": ["context.nope"]}},
     "$.objects.contacts.create.checks.body.name", "context.nope is not a key"),
    ("objects.contacts.create.checks", {"body.name": {"required": "bdoy.name"}},
     "$.objects.contacts.create.checks.body.name", "reads 'bdoy', which the request document does not hold"),
    ("objects.contacts.create.checks", {"body.name": {"pattern": "("}}, "$.objects.contacts.create.checks.body.name.pattern",
     "not a regular expression"),
    ("objects.contacts.create.checks", {"body.name.": {"required": True}}, "$.objects.contacts.create.checks.body.name.",
     "'body.name.' is not a path of the request document"),
    ("objects.contacts.list.checks", {"body.name": {"required": True}}, "$.objects.contacts.list.checks.body.name",
     "only a create has a body to check"),
])
def test_a_mistake_in_fragments_and_checks_is_refused_at_load(tmp_path, path, value, key, reason):
    def change(spec):
        _fragment_and_context(spec)
        _set(path, value)(spec)
    message = load_error(broken(tmp_path, change))
    assert f": {key}: {reason}" in message, message


def test_a_value_map_nobody_uses_is_a_warning(tmp_path):
    provider = mapping.load(broken(tmp_path, _set("values.unused", {"A": "a"})))
    assert provider.warnings == ["$.values.unused: no expression uses this value map"]
    done = subprocess.run([sys.executable, "-m", "gateway", "check", str(tmp_path)], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert done.returncode == 0 and "warn " in done.stdout and "$.values.unused" in done.stdout, done.stdout


def test_a_read_through_an_expression_reference_is_the_elements_not_the_document(tmp_path):
    """`map(&integer(@), body.ids)` reads body.ids; `@` there is each id, not the whole body."""
    provider = mapping.load(broken(tmp_path, _set("objects.contacts.create.body", {"ids": "map(&integer(@), body.ids)"})))
    create = provider.operations("contacts", "create")[0]
    assert create.ignored({"body": {"ids": ["1"], "name": "Acme"}}) == ["$.name"]


# -- the command line, as a person meets it -------------------------------------------


def test_version_and_serve_help_say_what_a_new_user_needs():
    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert run("--version").startswith("gateway ")
    helped = run("serve", "--help")
    assert "(default: 30.0)" in helped and "(default: 8000)" in helped
    assert "GATEWAY_STATE_URL" in helped and "GATEWAY_CONNECTIONS" in helped


def test_output_into_a_closed_pipe_ends_quietly():
    import os

    read, write = os.pipe()
    os.close(read)  # the reader (`| head -1`) has gone before the first line
    done = subprocess.run([sys.executable, "-m", "gateway", "coverage"], stdout=write, stderr=subprocess.PIPE,
                          text=True, cwd=ROOT, timeout=60)
    os.close(write)
    assert done.returncode == 0 and done.stderr == "", done.stderr


@pytest.mark.parametrize("change, key, hint", [
    (_set("auth.type", "oauth"), "$.auth.type", "Invalid enum value 'oauth'; valid: api_key, basic, bearer, none, oauth2"),
    (_set("objects.contacts.list.paging.style", "cursor"), "$.objects.contacts.list.paging.style",
     "valid: link, none, offset, page, token"),
    (_set("limitz", {}), "$", "Object contains unknown field `limitz`; did you mean 'limits'?"),
    (_set("objects.contacts.retrieve.recrod", "data"), "$.objects.contacts.retrieve",
     "unknown field `recrod`; did you mean 'record'?"),
])
def test_a_schema_mistake_says_what_is_allowed(tmp_path, change, key, hint):
    message = load_error(broken(tmp_path, change))
    assert f": {key}: " in message and hint in message, message


# -- the mapping file's JSON Schema, for editors ---------------------------------------


def test_the_shipped_json_schema_is_the_one_the_types_make():
    shipped = (bundled_mappings() / "mapping.schema.json").read_text()
    assert shipped.strip() == mapping.json_schema().strip(), \
        "mappings/mapping.schema.json is stale: run `gateway schema > mappings/mapping.schema.json`"


def test_every_bundled_mapping_validates_against_the_schema_its_editor_is_pointed_to():
    import json

    import jsonschema

    schema = json.loads((bundled_mappings() / "mapping.schema.json").read_text())
    for path in sorted(bundled_mappings().glob("*.yaml")):
        assert path.read_text().startswith("# yaml-language-server: $schema=mapping.schema.json\n"), path
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    with pytest.raises(jsonschema.ValidationError, match="oauth"):
        jsonschema.validate({**VALID, "auth": {"type": "oauth"}}, schema)


def test_check_fails_on_an_operation_without_a_worked_example(tmp_path):
    bad = broken(tmp_path, lambda spec: spec["objects"]["contacts"]["retrieve"].pop("examples"))
    result = run_check(str(bad))
    assert result.returncode == 1
    assert f"FAIL {bad}: $.objects.contacts.retrieve: no worked example" in result.stdout, result.stdout
