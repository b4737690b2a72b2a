"""GET /openapi.json and GET /docs of a running `gateway serve`.

The description is checked three ways: it is a valid OpenAPI 3 document; it
says what Panora's own description (../shared/reference) says, for the
accounting paths, their parameters, status codes and the unified objects'
schemas, every difference listed below with its reason; and it says what the
gateway does: every operation it describes is answered, and real answers fit
its schemas. The docs page is loaded in headless Chromium, which reaches
nothing but the gateway."""

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Server, answer, clean_server, contact_input, openapi
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import OpenAPIV30SpecValidator

from gateway.settings import DEMO_API_KEY, SANDBOX_TOKEN

DEMO = {"x-api-key": DEMO_API_KEY, "x-connection-token": SANDBOX_TOKEN}
METHODS = {"get", "post", "put", "patch", "delete"}

# -- where the gateway's description and Panora's legitimately differ --

# Parameters (name, in) the gateway adds, by operation kind.
ADDED_PARAMETERS = {
    # Creates run once per Idempotency-Key (gateway/idempotency.py); Panora has no such header.
    "create": {("Idempotency-Key", "header")},
}
# Parameters whose schema differs: (name, in) -> (Panora's type, the gateway's).
PARAMETER_TYPES = {
    # The gateway refuses a fractional limit and more than 1000 records (gateway/call.py).
    ("limit", "query"): ("number", "integer"),
}
# Panora's operation ids follow no rule (lists singular for some objects and
# plural for others, `Phonenumber`, `TrackingCategorys`); the gateway's derive
# from the object's model name, lists plural. Panora's -> the gateway's.
OPERATION_IDS = {
    "listAccountingAddress": "listAccountingAddresses",
    "listAccountingCashflowStatement": "listAccountingCashflowStatements",
    "listAccountingCreditNote": "listAccountingCreditNotes",
    "listAccountingExpense": "listAccountingExpenses",
    "listAccountingIncomeStatement": "listAccountingIncomeStatements",
    "listAccountingInvoice": "listAccountingInvoices",
    "listAccountingItem": "listAccountingItems",
    "listAccountingJournalEntry": "listAccountingJournalEntries",
    "listAccountingPayment": "listAccountingPayments",
    "listAccountingPhonenumber": "listAccountingPhoneNumbers",
    "retrieveAccountingPhonenumber": "retrieveAccountingPhoneNumber",
    "listAccountingPurchaseOrder": "listAccountingPurchaseOrders",
    "listAccountingTaxRate": "listAccountingTaxRates",
    "listAccountingTrackingCategorys": "listAccountingTrackingCategories",
    "listAccountingTransaction": "listAccountingTransactions",
    "listAccountingVendorCredit": "listAccountingVendorCredits",
}
# Schemas the gateway adds: its one error shape (gateway/errors.py), which
# Panora's description leaves out, answered by every operation.
ADDED_SCHEMAS = {"Error", "ErrorDetail"}
# Panora's /passthrough (and its request schema) is not part of the unified accounting API.
PANORA_ONLY_SCHEMAS = {"PassThroughRequestDto"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The embedded default: the demo key, the in-memory Formation sandbox."""
    state = tmp_path_factory.mktemp("docs-state")
    server = clean_server(["serve"], {"GATEWAY_STATE_URL": f"sqlite://{state}/state.sqlite3"})
    yield server
    assert "Traceback" not in server.stop()


@pytest.fixture(scope="module")
def ours(gateway: Server) -> dict:
    response = httpx.get(gateway.url + "/openapi.json", timeout=10)  # no x-api-key: unauthenticated
    return answer(response, 200)


@pytest.fixture(scope="module")
def panora(shared: Path) -> dict:
    return openapi(shared)


def operations(doc: dict) -> dict[tuple[str, str], dict]:
    """The accounting operations by (path, method)."""
    return {(path, method): op for path, item in doc["paths"].items() if path.startswith("/accounting/")
            for method, op in item.items() if method in METHODS}


def kind(op: dict) -> str:
    return next(k for k in ("list", "create", "retrieve") if op["operationId"].startswith(k))


def resolve(doc: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def unified_schema(doc: dict, op: dict, status: str) -> str:
    """The name of the unified object's schema an operation answers with `status`, a list inside its page."""
    schema = op["responses"][status]["content"]["application/json"]["schema"]
    if "allOf" in schema:
        page, data = schema["allOf"]
        assert page == {"$ref": "#/components/schemas/PaginatedDto"}, schema
        schema = data["properties"]["data"]["items"]
    return schema["$ref"].rsplit("/", 1)[1]


def shape(schema: dict) -> Any:
    """What a property's schema says of its values: the schema it refers to, or type, format, nullability, items."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[1]
    out = {k: schema[k] for k in ("type", "format") if k in schema}
    out["nullable"] = schema.get("nullable", False)
    if schema.get("type") == "array":
        out["items"] = shape(schema["items"])
    return out


def schema_differences(panora: dict, ours: dict, name: str) -> list[str]:
    theirs, mine = panora["components"]["schemas"][name], ours["components"]["schemas"].get(name)
    if mine is None:
        return [f"{name}: missing"]
    found = []
    p, o = theirs.get("properties", {}), mine.get("properties", {})
    for field in sorted(p.keys() - o.keys()):
        found.append(f"{name}.{field}: Panora's, missing from the gateway's")
    for field in sorted(o.keys() - p.keys()):
        found.append(f"{name}.{field}: the gateway's, not Panora's")
    for field in sorted(p.keys() & o.keys()):
        if shape(p[field]) != shape(o[field]):
            found.append(f"{name}.{field}: Panora {shape(p[field])}, gateway {shape(o[field])}")
    if sorted(theirs.get("required", [])) != sorted(mine.get("required", [])):
        found.append(f"{name}: required Panora {theirs.get('required')}, gateway {mine.get('required')}")
    return found


def fits(doc: dict, schema: dict, instance: Any) -> list[str]:
    """How `instance` fails `schema` of the document (OpenAPI 3.0 semantics: `nullable`)."""
    validator = OAS30Validator({"allOf": [schema], "components": doc["components"]})
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)]


# -- the document --

def test_the_description_is_a_valid_openapi_3_document(ours: dict) -> None:
    OpenAPIV30SpecValidator(ours).validate()
    assert ours["openapi"].startswith("3.0.")


def test_same_accounting_paths_and_methods_as_panora(panora: dict, ours: dict) -> None:
    theirs, mine = set(operations(panora)), set(operations(ours))
    assert mine == theirs, f"Panora's only: {sorted(theirs - mine)}; the gateway's only: {sorted(mine - theirs)}"


def test_same_parameters_as_panora(panora: dict, ours: dict) -> None:
    mine = operations(ours)
    found = []
    for key, op in operations(panora).items():
        theirs = {(p["name"], p["in"]): p for p in op.get("parameters", [])}
        ours_ = {(p["name"], p["in"]): p for p in mine[key].get("parameters", [])}
        added = ADDED_PARAMETERS.get(kind(op), set())
        if ours_.keys() - theirs.keys() != added:
            found.append(f"{key}: added {sorted(ours_.keys() - theirs.keys())}, expected {sorted(added)}")
        for name in sorted(theirs.keys() - ours_.keys()):
            found.append(f"{key}: Panora's {name} missing")
        for name in sorted(theirs.keys() & ours_.keys()):
            p, o = theirs[name], ours_[name]
            if p.get("required", False) != o.get("required", False):
                found.append(f"{key} {name}: required {p.get('required')} in Panora, {o.get('required')} here")
            types = (p["schema"]["type"], o["schema"]["type"])
            if types[0] != types[1] and PARAMETER_TYPES.get(name) != types:
                found.append(f"{key} {name}: type {types[0]} in Panora, {types[1]} here")
    assert not found, "\n".join(found)


def test_same_api_key_scheme_as_panora(panora: dict, ours: dict) -> None:
    # x-api-key is a security scheme in Panora's description, not a parameter.
    assert ours["components"]["securitySchemes"] == panora["components"]["securitySchemes"]
    assert ours["security"] == panora["security"]


def test_same_success_statuses_and_every_error_described(panora: dict, ours: dict) -> None:
    mine = operations(ours)
    for key, op in operations(panora).items():
        success = {s for s in mine[key]["responses"] if s.startswith("2")}
        assert success == set(op["responses"]), key
        for status, response in mine[key]["responses"].items():
            if not status.startswith("2"):  # the gateway's additions: Panora's description has no errors
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


def test_same_schemas_as_panora(panora: dict, ours: dict) -> None:
    """Each operation takes and answers the schema Panora names, and each
    schema has Panora's properties with Panora's types."""
    mine = operations(ours)
    found = []
    for key, op in operations(panora).items():
        for status in op["responses"]:
            if unified_schema(panora, op, status) != unified_schema(ours, mine[key], status):
                found.append(f"{key} {status}: answers {unified_schema(ours, mine[key], status)}, "
                             f"Panora {unified_schema(panora, op, status)}")
        if "requestBody" in op:
            if op["requestBody"] != mine[key].get("requestBody"):
                found.append(f"{key}: takes {mine[key].get('requestBody')}, Panora {op['requestBody']}")
    theirs_names = set(panora["components"]["schemas"]) - PANORA_ONLY_SCHEMAS
    assert set(ours["components"]["schemas"]) - ADDED_SCHEMAS == theirs_names
    for name in sorted(theirs_names):
        found += schema_differences(panora, ours, name)
    assert not found, "\n".join(found)


def test_operation_ids_differ_only_where_panoras_are_irregular(panora: dict, ours: dict) -> None:
    mine = operations(ours)
    differ = {op["operationId"]: mine[key]["operationId"] for key, op in operations(panora).items()
              if op["operationId"] != mine[key]["operationId"]}
    assert differ == OPERATION_IDS


# -- the document says what the gateway does --

def test_every_described_operation_is_served_and_no_other(gateway: Server, ours: dict) -> None:
    """Without an API key every described operation is refused for want of it (401),
    not unknown (404) or not allowed (405); a create the description leaves out is a 405."""
    with httpx.Client(base_url=gateway.url, timeout=10) as c:
        for path, method in operations(ours):
            response = c.request(method, path.replace("{id}", "some-id"), json={} if method == "post" else None)
            assert answer(response, 401)["code"] == "missing_api_key", (method, path)
        for path, item in ours["paths"].items():
            if path.startswith("/accounting/") and not path.endswith("{id}") and "post" not in item:
                answer(c.post(path, headers=DEMO, json={}), 405)
        for path, item in ours["paths"].items():
            if not path.startswith("/accounting/"):
                assert c.get(path).status_code in {int(s) for s in item["get"]["responses"]}, path


def test_real_answers_fit_the_described_schemas(gateway: Server, ours: dict, shared: Path) -> None:
    list_contacts = ours["paths"]["/accounting/contacts"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    create_contact = ours["paths"]["/accounting/contacts"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    # Closed: a field errors.py answers that the description leaves out fails too.
    error = {**ours["components"]["schemas"]["Error"], "additionalProperties": False}
    contact = {k: v for k, v in contact_input(shared).items() if k != "company_info_id"}  # the sandbox has its own
    with httpx.Client(base_url=gateway.url, timeout=10) as c:
        created = answer(c.post("/accounting/contacts", headers=DEMO, json=contact, params={"remote_data": "true"}), 201)
        assert not fits(ours, create_contact, created)
        page = answer(c.get("/accounting/contacts", headers=DEMO, params={"limit": 1, "remote_data": "true"}), 200)
        assert page["data"] and not fits(ours, list_contacts, page)
        for method, wrong in (("get", c.get("/accounting/contacts")),
                              ("get", c.get("/accounting/contacts", headers=DEMO, params={"limit": 0})),
                              ("post", c.post("/accounting/contacts", headers=DEMO, json={"name": 1})),
                              # every fault at once; a value the mapping's value map does not hold
                              ("post", c.post("/accounting/contacts", headers=DEMO, json={"name": 1, "is_supplier": 2})),
                              ("post", c.post("/accounting/contacts", headers=DEMO, json={"name": "x", "status": "Bogus"})),
                              # no email, which Formation requires: the provider's refusal, answered 422
                              ("post", c.post("/accounting/contacts", headers=DEMO, json={"name": "No Email"}))):
            described = ours["paths"]["/accounting/contacts"][method]["responses"]
            assert str(wrong.status_code) in described and wrong.status_code >= 400, wrong.text
            assert not fits(ours, error, wrong.json()), wrong.text
    # The check can fail: a page whose records have a number where the schema says a string does not fit.
    assert fits(ours, list_contacts, {**page, "data": [{"name": 1}]})


# -- the docs page --

def test_docs_page_assets_come_from_the_gateway(gateway: Server) -> None:
    """Served with their content types, one after the other on one connection
    (a file response waits for the client's disconnect: it must not end the next request's wait)."""
    with httpx.Client(base_url=gateway.url, timeout=10) as c:
        page = c.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        # The browser is told to load nothing from elsewhere.
        assert page.headers["content-security-policy"].startswith("default-src 'self';")
        assert "http" not in page.text, page.text  # no absolute URL: no CDN
        for asset, content_type in (("swagger-ui.css", "text/css"), ("swagger-ui-bundle.js", "javascript"),
                                    ("favicon-32x32.png", "image/png")):
            response = c.get(f"/docs/assets/{asset}")
            assert response.status_code == 200 and content_type in response.headers["content-type"], asset
            assert f'"/docs/assets/{asset}"' in page.text, asset
        answer(c.get("/docs/assets/missing.js"), 404)
        answer(c.get("/docs/assets/..%2F..%2Fpyproject.toml"), 404)


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        message = "Debian's chromium is not installed (apt-get install chromium; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def test_docs_page_renders_the_contacts_operations_in_chromium(gateway: Server, tmp_path: Path) -> None:
    """Every request but to the gateway on loopback goes to a proxy that does
    not exist: the page renders only if its assets come from the gateway."""
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
               "--proxy-server=http://127.0.0.1:9", "--virtual-time-budget=30000",
               "--dump-dom", gateway.url + "/docs"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    dom = run.stdout
    assert run.returncode == 0, run.stderr[-2000:]
    # Swagger UI has fetched /openapi.json and rendered the contacts' three operations.
    assert 'data-tag="accounting/contacts"' in dom, dom[-2000:]
    for op, path in (("listAccountingContacts", "/accounting/contacts"), ("createAccountingContact", "/accounting/contacts"),
                     ("retrieveAccountingContact", "/accounting/contacts/{id}")):
        assert f'data-path="{path}"><a class="nostyle" href="#/accounting/contacts/{op}">' in dom, op
    assert "List contacts" in dom and "Create a contact" in dom and "Retrieve a contact" in dom
