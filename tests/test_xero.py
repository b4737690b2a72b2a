"""Xero: mappings/xero.yaml, held to Xero's own OpenAPI contract.

- the mapping's worked examples (`gateway check --examples`);
- the contract: Prism serves Xero's spec as a validating mock (a request that
  breaks the spec is a 4xx there, so a 4xx through the gateway), a real gateway
  process sits in front of it, and every operation the mapping maps is called
  over HTTP: each answer must be 200/201, decode as Panora's model and carry
  the values of Xero's example answers (which Prism returns);
- the real Panora SDK on contacts, through the gateway and Prism;
- `multiply`, the function the mapping language gained for Xero.
"""

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import jmespath
import msgspec
import pytest
import yaml
from conftest import ROOT, Server, answer, clean_server, contact_input, openapi, run_sdk_client, seed
from fake_oauth import CLIENT_ID, CLIENT_SECRET, FakeTokens
from jmespath.exceptions import JMESPathTypeError

from gateway import models
from gateway.functions import Functions, multiply

MAPPING = ROOT / "mappings" / "xero.yaml"
API_KEY = "xero-test-key"
TOKEN = "xero-test-connection"
WITH_ACCOUNTS = "xero-test-connection-with-account-codes"
ACCESS_TOKEN = "xero-test-access-token"
TENANT_ID = "b2c885a9-4bb9-4a00-9b6e-6c2bf60b1a2b"

# Ids of the records in Xero's example answers.
CONTACT = "8138a266-fb42-49b2-a104-014b7045753d"
INVOICE = "a03ffcd2-5d91-4c7e-b483-318584e9e439"
CUSTOMER_CREDIT = "249f15fa-f2a7-4acc-8769-0984103f2225"
SUPPLIER_CREDIT = "f8021bd2-9a6a-4c19-8477-163da0b9290f"
RECEIVE = "db54aab0-ad40-4ced-bcff-0940ba20db2c"


# -- the mapping language ------------------------------------------------------------


def test_examples_pass() -> None:
    done = subprocess.run([sys.executable, "-m", "gateway", "check", "--examples", str(MAPPING)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("ok ") and "example(s) passed" in done.stdout, done.stdout


def test_multiply() -> None:
    assert multiply(46.0, 100) == 4600 and isinstance(multiply(46.0, 100), int)
    assert multiply(0.07, 100) == 7, "decimal, not binary floating point"
    assert multiply(148062.76, 100) == 14806276
    assert multiply(10000, 0.01) == 100 and multiply(1050, 0.01) == 10.5
    assert multiply(15, 100) == 1500 and multiply(-2.5, 2) == -5
    options = jmespath.Options(custom_functions=Functions({}, {}))
    assert jmespath.search("multiply(a, `100`)", {"a": 2.55}, options=options) == 255
    assert jmespath.search("multiply(a, `100`)", {}, options=options) is None, "null passes through"
    with pytest.raises(JMESPathTypeError):
        jmespath.search("multiply(a, `100`)", {"a": "46.0"}, options=options)


# -- the contract: Prism on Xero's spec, a gateway in front ----------------------------


@pytest.fixture(scope="module")
def prism(start_prism, shared: Path):
    return start_prism(shared / "reference" / "xero-accounting-openapi.yaml")


@pytest.fixture(scope="module")
def gateway(prism, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("xero")
    tokens = FakeTokens().start()
    # Only this mapping, so the test stands on it alone.
    mappings = directory / "mappings"
    mappings.mkdir()
    shutil.copy(MAPPING, mappings / MAPPING.name)
    connections = directory / "connections.yaml"
    def connection(token: str, **context: str) -> dict:
        return {"token": token, "provider": "xero", "base_url": prism.url, "token_url": tokens.url,
                # valid: the token endpoint is never asked
                "credentials": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                                "refresh_token": tokens.issue_refresh_token(),
                                "access_token": "${XERO_TEST_ACCESS_TOKEN}", "expires_at": "2099-01-01T00:00:00Z"},
                # NZD: the example organisation's base currency
                "context": {"tenant_id": TENANT_ID, "currency": "NZD", **context}}

    connections.write_text(yaml.safe_dump([{**connection(TOKEN), "name": "xero-prism"},
                                           connection(WITH_ACCOUNTS, sales_account_code="200")]), encoding="utf-8")
    server = clean_server(["serve"], {"GATEWAY_API_KEYS": API_KEY, "GATEWAY_CONNECTIONS": str(connections),
                                      "GATEWAY_MAPPINGS": str(mappings), "XERO_TEST_ACCESS_TOKEN": ACCESS_TOKEN})
    yield server
    log = server.stop()
    assert "Traceback" not in log and "unexpected error" not in log, log
    assert ACCESS_TOKEN not in log, "the access token reaches Xero in a header and never the log"
    assert tokens.grants == []
    tokens.stop()


@pytest.fixture(scope="module")
def client(gateway: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, headers={"x-api-key": API_KEY, "x-connection-token": TOKEN},
                      timeout=30) as c:
        yield c




def decoded(value: dict, model: type[models.Model]) -> models.Model:
    """A unified answer as Panora's model: every field of the contract (those that
    cannot be null only when known), each of its type."""
    fields = msgspec.structs.fields(model)
    always = {f.name for f in fields if f.default is not msgspec.UNSET}
    assert always <= set(value) <= {f.name for f in fields}, sorted(set(value) ^ always)
    return msgspec.convert(value, model)


def listed(client: httpx.Client, obj: str, model: type[models.Model], **params) -> tuple[list, dict]:
    page = answer(client.get(f"/accounting/{obj}", params=params), 200)
    assert set(page) == {"prev_cursor", "next_cursor", "data"}
    return [decoded(r, model) for r in page["data"]], page


def retrieved(client: httpx.Client, obj: str, record_id: str, model: type[models.Model]) -> models.Model:
    return decoded(answer(client.get(f"/accounting/{obj}/{record_id}"), 200), model)


def created(client: httpx.Client, obj: str, body: dict, model: type[models.Model]) -> tuple[models.Model, list[str]]:
    response = client.post(f"/accounting/{obj}", json=body)
    record = decoded(answer(response, 201), model)
    ignored = [f.strip() for f in response.headers.get("x-gateway-ignored-fields", "").split(",") if f.strip()]
    return record, ignored


def seed_input(shared: Path, prefix: str, schema: str) -> dict:
    """A seed's unified request body (the first JSON object after its SDK snippet),
    less the fields the contract's input schema does not define."""
    text = seed(shared, prefix)
    body, _ = json.JSONDecoder().raw_decode(text, text.index("{", text.index("run();")))
    fields = openapi(shared)["components"]["schemas"][schema]["properties"]
    return {k: v for k, v in body.items() if k in fields}


def second_page(client: httpx.Client, obj: str, model: type[models.Model]) -> list:
    """Page 2 at one record a page, through page 1's next_cursor (Prism answers its
    whole example to any page and size; a unified page still holds one)."""
    one, first = listed(client, obj, model, limit=1)
    assert len(one) == 1 and first["next_cursor"], f"{obj}: a full first page has a next page"
    records, page = listed(client, obj, model, limit=1, cursor=first["next_cursor"])
    assert page["prev_cursor"], "page 2 leads back to page 1"
    assert len(records) == 1
    return records


def test_contacts(client: httpx.Client, shared: Path) -> None:
    model = models.ContactOutput
    records, first = listed(client, "contacts", model)
    assert [(c.id, c.name, c.email_address, c.is_supplier, c.is_customer, c.status) for c in records] == [
        ("5cc8cf28-567e-4d43-b287-687cfcaec47c", "Katherine Warren", "kat.warren@clampett.com", True, True, "Active"),
        ("3ec601ad-eddc-4ccb-a8ac-736e88293b1b", "Lisa Parker", "lparker@parkerandco.com", False, False, "Active")]
    assert all(c.remote_id == c.id for c in records)
    assert records[0].remote_updated_at == "2017-08-21T20:49:04.227000Z"
    assert second_page(client, "contacts", model)

    contact = retrieved(client, "contacts", CONTACT, model)
    assert (contact.id, contact.remote_id, contact.name, contact.email_address, contact.tax_number, contact.currency,
            contact.status, contact.is_supplier, contact.is_customer) == (
        CONTACT, CONTACT, "Acme Parts Co.", "bk@krave.co", "123-22-3456", "USD", "Active", True, True)
    assert contact.modified_at.isoformat() == "2019-03-01T17:02:57.193000+00:00"

    # remote_data: Xero's record as Xero gave it.
    raw = answer(client.get(f"/accounting/contacts/{CONTACT}", params={"remote_data": "true"}), 200)["remote_data"]
    assert raw["ContactID"] == CONTACT and raw["ContactNumber"] == "SB2" and raw["Phones"][0]["PhoneType"] == "DDI"

    made, ignored = created(client, "contacts", contact_input(shared), model)
    assert (made.id, made.name, made.email_address, made.status) == (
        "3ff6d40c-af9a-40a3-89ce-3c1556a25591", "Foo9987", "sid32476@blah.com", "Active")
    # Xero sets IsSupplier and IsCustomer itself; the seed's Panora company and custom fields have no place there.
    assert set(ignored) == {"$.is_supplier", "$.is_customer", "$.remote_updated_at", "$.company_info_id",
                            "$.field_mappings"}


def test_a_status_xero_does_not_know_is_refused_before_any_call(client: httpx.Client) -> None:
    body = answer(client.post("/accounting/contacts", json={"name": "Buzz Lightyear", "status": "Bogus"}), 422)
    assert body["code"] == "invalid_request" and body["path"] == "$.status"
    assert body["errors"][0]["accepted"] == ["Active", "Archived", "Deleted"]
    assert "provider_status" not in body  # Xero was never asked


def test_a_validation_error_keeps_xeros_message(client: httpx.Client) -> None:
    # A currency code outside Xero's list passes through; Prism refuses it with
    # the spec's own 400 for createContacts, a ValidationException.
    body = answer(client.post("/accounting/contacts", json={"name": "Buzz Lightyear", "currency": "BOGUS"}), 422)
    assert body["code"] == "upstream_rejected" and body["provider"] == "xero"
    assert body["provider_status"] == 400 and body["provider_code"] == "ValidationException"
    assert body["provider_message"] == ("The contact name Buzz Lightyear is already assigned to another contact. "
                                        "The contact name must be unique across all active contacts.")
    assert body["provider_message"] in body["message"]


def test_accounts(client: httpx.Client, shared: Path) -> None:
    model = models.AccountOutput
    records, first = listed(client, "accounts", model)
    # The chart of accounts comes whole: one page...
    assert first["next_cursor"] is None
    # ...served a record at a time when the limit asks, the cursor at the next one.
    one, page = listed(client, "accounts", model, limit=1)
    assert [a.id for a in one] == [records[0].id] and page["next_cursor"]
    two, page = listed(client, "accounts", model, limit=1, cursor=page["next_cursor"])
    assert [a.id for a in two] == [records[1].id] and page["next_cursor"] is None
    assert [(a.id, a.name, a.type, a.account_number, a.currency, a.description) for a in records] == [
        ("ebd06280-af70-4bed-97c6-7451a454ad85", "Business Savings Account", "Bank", "091", "NZD", None),
        ("7d05a53d-613d-4eb2-a2fc-dcb6adb80b80", "Sales", "Revenue", "200", None,
         "Income from any normal business activity")]

    account = retrieved(client, "accounts", "99ce6032-0678-4aa0-8148-240c75fee33a", model)
    assert (account.name, account.classification, account.type, account.status, account.account_number,
            account.description) == ("FooBar", "Expense", "Expense", "Active", "123456", "Hello World")

    body = seed_input(shared, "001", "UnifiedAccountingAccountInput")
    assert body["type"] == "Current Asset"
    made, ignored = created(client, "accounts", body, model)
    assert (made.id, made.remote_id, made.name, made.classification, made.status) == (
        "66b262e2-561e-423e-8937-47d558f13442", "66b262e2-561e-423e-8937-47d558f13442", "Foobar", "Expense", "Active")
    # Xero works out the class and the balance; it has no parent accounts, and a
    # currency for bank accounts only.
    assert {"$.classification", "$.current_balance", "$.parent_account", "$.company_info_id",
            "$.currency"} <= set(ignored)
    # A bank account is the other alternative: it carries its currency.
    _, ignored = created(client, "accounts", {"name": "Business Savings Account", "type": "Bank", "currency": "NZD",
                                              "account_number": "091", "status": "Active"}, model)
    assert ignored == []


def test_invoices(client: httpx.Client, shared: Path) -> None:
    model = models.InvoiceOutput
    records, first = listed(client, "invoices", model)
    assert [(i.number, i.type, i.status, i.total_amount, i.balance) for i in records] == [
        ("INV-0001", "Sales", "Void", 40, 0), ("INV-0002", "Sales", "Paid", 46, 0),
        ("INV-0003", "Sales", "Authorized", 115, 115)]
    assert records[1].paid_on_date.isoformat() == "2018-11-29T00:00:00+00:00"
    assert records[2].contact_id == "a3675fc4-f8dd-4f03-ba5b-f1870566bcd7" and records[2].total_tax_amount == 15
    assert second_page(client, "invoices", model)

    invoice = retrieved(client, "invoices", INVOICE, model)
    assert (invoice.id, invoice.number, invoice.memo, invoice.currency, invoice.status, invoice.total_amount) == (
        INVOICE, "INV-0006", "Tour", "NZD", "Paid", 148062.76)
    assert invoice.issue_date.isoformat() == "2019-03-07T00:00:00+00:00"
    assert invoice.due_date.isoformat() == "2019-03-13T00:00:00+00:00"
    assert float(invoice.exchange_rate) == 1.0
    assert [(li.name, li.value, li.remote_id) for li in invoice.line_items] == [
        ("Guitars Fender Strat", 148062.76, "b18f39d9-7739-4246-9288-72afe939d2d5")]

    body = seed_input(shared, "003", "UnifiedAccountingInvoiceInput")
    assert body["type"] == "Sales" and body["line_items"]
    made, ignored = created(client, "invoices", body, model)
    assert (made.id, made.number, made.type, made.status, made.total_amount) == (
        "ed255415-e141-4150-aab7-89c3bbbb851c", "INV-0007", "Sales", "Authorized", 40)
    assert [(li.name, li.value) for li in made.line_items] == [("Acme Tires", 40)]
    # Totals and the balance are Xero's to work out; a line is a name and a value.
    assert {"$.total_amount", "$.balance", "$.paid_on_date", "$.line_items[0].type",
            "$.line_items[0].parent_item"} <= set(ignored)
    assert "$.number" not in ignored and "$.line_items[0].value" not in ignored

    # Xero keeps Reference for sales invoices only, and a bill has no other memo: not sent, and said so.
    assert "$.memo" not in ignored
    bill = {**body, "type": "Purchase", "memo": "Tyres for the van"}
    _, ignored = created(client, "invoices", bill, model)
    assert "$.memo" in ignored and "$.number" not in ignored


def test_an_approved_invoice_needs_an_account_code_on_its_lines(client: httpx.Client) -> None:
    body = {"type": "Sales", "status": "Authorized", "contact_id": CONTACT, "issue_date": "2024-06-15T00:00:00Z",
            "due_date": "2024-07-15T00:00:00Z", "line_items": [{"name": "Consulting", "value": 400}]}
    refused = answer(client.post("/accounting/invoices", json=body), 422)
    assert refused["code"] == "invalid_request" and refused["context_key"] == "sales_account_code"
    assert "account code on each line" in refused["message"] and "provider_status" not in refused  # Xero never asked
    # A draft may go without; a connection that names its sales account sends it on each line.
    assert answer(client.post("/accounting/invoices", json={**body, "status": "Draft"}), 201)
    approved = client.post("/accounting/invoices", json=body, headers={"x-connection-token": WITH_ACCOUNTS})
    assert answer(approved, 201)["id"] == "ed255415-e141-4150-aab7-89c3bbbb851c"
    # Approved without a due date: refused too, naming the field.
    undated = answer(client.post("/accounting/invoices", json={**body, "due_date": None},
                                 headers={"x-connection-token": WITH_ACCOUNTS}), 422)
    assert undated["path"] == "$.due_date"


def test_payments(client: httpx.Client, shared: Path) -> None:
    model = models.PaymentOutput
    records, first = listed(client, "payments", model)
    assert [(p.id, p.type, p.total_amount, p.invoice_id) for p in records] == [
        ("99ea7f6b-c513-4066-bc27-b7c65dcd76c2", "ACCRECPAYMENT", 4600, "046d8a6d-1ae1-4b4d-9340-5601bdf41b87"),
        # A credit note's refund: Xero names the credit note as its Invoice, which is no unified invoice.
        ("6b037c9b-2e5d-4905-84d3-eabfb3438242", "ARCREDITPAYMENT", 200, None)]
    assert records[0].account_id == "5690f1e8-1d02-4893-90c2-ee1a69eff942" and records[0].currency == "NZD"
    assert records[0].contact_id == "a3675fc4-f8dd-4f03-ba5b-f1870566bcd7"
    assert second_page(client, "payments", model)

    payment = retrieved(client, "payments", "99ea7f6b-c513-4066-bc27-b7c65dcd76c2", model)
    assert (payment.total_amount, payment.invoice_id, payment.transaction_date.isoformat()) == (
        4600, "046d8a6d-1ae1-4b4d-9340-5601bdf41b87", "2018-11-29T00:00:00+00:00")

    body = seed_input(shared, "002", "UnifiedAccountingPaymentInput")
    assert body["total_amount"] == 10000  # cents: Xero is sent Amount 100
    made, ignored = created(client, "payments", body, model)
    assert (made.id, made.total_amount, made.invoice_id, made.type) == (
        "61ed71fc-01bf-4eb8-8419-8a18789ff45f", 100, "c7c37b83-ac95-45ea-88ba-8ad83a5f22fe", "ACCRECPAYMENT")
    # The invoice decides the contact and the currency; Xero sets the payment type.
    assert {"$.contact_id", "$.type", "$.line_items"} <= set(ignored)
    assert "$.currency" not in ignored  # it says what total_amount's minor units are


def test_tax_rates(client: httpx.Client) -> None:
    model = models.TaxRateOutput
    records, first = listed(client, "taxrates", model)
    assert first["next_cursor"] is None
    assert [(t.id, t.description, t.total_tax_ratge, t.effective_tax_rate) for t in records] == [
        ("INPUT2", "15% GST on Expenses", 1500, 1500), ("OUTPUT2", "15% GST on Income", 1500, 1500),
        ("GSTONIMPORTS", "GST on Imports", 0, 0), ("NONE", "No GST", 0, 0), ("ZERORATED", "Zero Rated", 0, 0)]
    rate = retrieved(client, "taxrates", "INPUT2", model)
    assert (rate.id, rate.remote_id, rate.effective_tax_rate) == ("INPUT2", "INPUT2", 1500)


def test_items(client: httpx.Client) -> None:
    model = models.ItemOutput
    records, first = listed(client, "items", model)
    assert first["next_cursor"] is None
    assert [(i.id, i.name, i.unit_price, i.purchase_price) for i in records] == [
        ("c8c54d65-f3f2-452d-926e-bf450b12fb07", "Guitars", 500000, None),
        ("a4544d51-48f6-441f-a623-99ecbced6ab7", "Hello11350", None, None)]
    item = retrieved(client, "items", "c8c54d65-f3f2-452d-926e-bf450b12fb07", model)
    assert (item.unit_price, item.purchase_price) == (500000, 250000)
    assert item.remote_updated_at.isoformat() == "2019-03-11T19:41:49.387000+00:00"


def test_tracking_categories(client: httpx.Client) -> None:
    model = models.TrackingCategoryOutput
    records, _ = listed(client, "trackingcategories", model)
    assert [(t.id, t.name, t.status) for t in records] == [
        ("22f10184-0deb-44ae-a312-b1f6ea70e51f", "BarFoo", "Active"),
        ("0c9fce3e-a111-4d99-803a-62cf3f40e633", "HelloWorld", "Active")]
    category = retrieved(client, "trackingcategories", "22f10184-0deb-44ae-a312-b1f6ea70e51f", model)
    assert (category.name, category.status) == ("Foo41157", "Deleted")


def test_company_info(client: httpx.Client) -> None:
    records, first = listed(client, "companyinfos", models.CompanyInfoOutput)
    assert first["next_cursor"] is None and len(records) == 1
    company = records[0]
    assert (company.id, company.name, company.currency, company.tax_number, company.fiscal_year_end_month,
            company.fiscal_year_end_day) == (TENANT_ID, "Dev Evangelist - Sid Test 3 (NZ-2016-02)", "NZD",
                                             "071-138-054", 3, 31)
    assert company.remote_created_at.isoformat() == "2016-02-18T20:29:53+00:00"
    # /Organisation serves one organisation whatever the id: no retrieve.
    assert answer(client.get(f"/accounting/companyinfos/{TENANT_ID}"), 501)["code"] == "operation_not_mapped"


def test_credit_notes_and_vendor_credits(client: httpx.Client) -> None:
    # One Xero endpoint, two unified objects: customer credit notes, and supplier credits.
    notes, first = listed(client, "creditnotes", models.CreditNoteOutput)
    assert [(n.id, n.number, n.status, n.total_amount, n.remaining_credit, n.payments) for n in notes] == [
        (CUSTOMER_CREDIT, "CN-0005", "Authorized", 34.5, 32.5, ["6b037c9b-2e5d-4905-84d3-eabfb3438242"])]
    # A page of one, full; but Xero's pagination says it is the only page (pageCount 1):
    # the list ends there, with no call for an empty page after it.
    one, page = listed(client, "creditnotes", models.CreditNoteOutput, limit=1)
    assert [n.id for n in one] == [CUSTOMER_CREDIT] and page["next_cursor"] is None
    note = retrieved(client, "creditnotes", CUSTOMER_CREDIT, models.CreditNoteOutput)
    assert (note.contact_id, note.currency, note.transaction_date.isoformat()) == (
        "430fa14a-f945-44d3-9f97-5df5e28441b8", "NZD", "2019-03-05T00:00:00+00:00")

    # (Paging this endpoint is shown above: Prism answers slowly here, so once is enough.)
    credits, first = listed(client, "vendorcredits", models.VendorCreditOutput, limit=1)
    assert [(c.id, c.vendor, float(c.total_amount), c.currency) for c in credits] == [
        (SUPPLIER_CREDIT, "430fa14a-f945-44d3-9f97-5df5e28441b8", 46.0, "NZD")]
    assert first["next_cursor"] is None, "full, but Xero's only page"

    # The spec's one credit note example (Prism's answer to any id) is a customer's:
    # no vendor credit, so a 404 of the gateway's own, after Prism accepted the call.
    body = answer(client.get(f"/accounting/vendorcredits/{SUPPLIER_CREDIT}"), 404)
    assert body["code"] == "not_found" and "provider_status" not in body


def test_journal_entries(client: httpx.Client) -> None:
    model = models.JournalEntryOutput
    records, first = listed(client, "journalentries", model)
    assert [(j.id, j.posting_status) for j in records] == [
        ("0b159335-606b-485f-b51b-97b3b32bad32", "Posted"), ("99cb8353-ce73-4a5d-8e0d-8b0edf86cfc4", "Posted"),
        ("ecb6b362-c78f-462a-a229-a66abf115e92", "Draft")]
    assert records[2].memo == "Foo bar" and records[2].transaction_date.isoformat() == "2019-03-11T00:00:00+00:00"
    assert second_page(client, "journalentries", model)

    journal = retrieved(client, "journalentries", "99cb8353-ce73-4a5d-8e0d-8b0edf86cfc4", model)
    assert journal.remote_id == journal.id == "99cb8353-ce73-4a5d-8e0d-8b0edf86cfc4"
    assert [(li.name, li.value) for li in journal.line_items] == [
        ("These aren''t the droids you are looking for", 100), ("Yes the are", -100)]
    # A journal line's account has no unified field: creating one is not mapped.
    assert answer(client.post("/accounting/journalentries", json={"memo": "x"}), 501)["code"] == "operation_not_mapped"


def test_purchase_orders(client: httpx.Client) -> None:
    model = models.PurchaseOrderOutput
    records, first = listed(client, "purchaseorders", model)
    assert [(p.purchase_order_number, p.status, p.total_amount, p.vendor) for p in records] == [
        ("PO-0001", "Deleted", 2000, "430fa14a-f945-44d3-9f97-5df5e28441b8"),
        ("PO-0002", "Deleted", 2000, "430fa14a-f945-44d3-9f97-5df5e28441b8")]
    assert second_page(client, "purchaseorders", model)

    order = retrieved(client, "purchaseorders", "15369a9f-17b6-4235-83c4-0029256d1c37", model)
    assert (order.purchase_order_number, order.status, order.memo, order.total_amount) == (
        "PO-0006", "Draft", "foobar", 258750)
    assert order.delivery_date.isoformat() == "2019-03-28T00:00:00+00:00"
    assert order.tracking_categories == ["6a68adde-f210-4465-b0a9-0d8cc6f50762"]
    assert [(li.name, li.value) for li in order.line_items] == [("Brand new Fender Strats", 2250)]

    body = {"status": "Draft", "issue_date": "2019-03-13T00:00:00Z", "purchase_order_number": "PO-0004",
            "delivery_date": "2019-03-20T00:00:00Z", "vendor": "430fa14a-f945-44d3-9f97-5df5e28441b8",
            "memo": "Q3 inventory", "currency": "NZD", "exchange_rate": "1.0", "total_amount": 2300,
            "line_items": [{"name": "Foobar", "value": 20}]}
    made, ignored = created(client, "purchaseorders", body, model)
    assert (made.id, made.purchase_order_number, made.status, made.total_amount) == (
        "56204648-8fbe-46f8-b09c-2125f7939533", "PO-0004", "Draft", 2300)
    assert ignored == ["$.total_amount"]


def test_expenses_and_transactions(client: httpx.Client) -> None:
    transactions, first = listed(client, "transactions", models.TransactionOutput)
    assert [(t.id, t.transaction_type, float(t.total_amount)) for t in transactions] == [
        (RECEIVE, "RECEIVE", 10), ("29a69c45-64ca-4805-a1cc-34990de837b3", "SPEND-OVERPAYMENT", 9),
        ("0b89bf5c-d40b-4514-96be-36a739fb0188", "SPEND-OVERPAYMENT", 8)]
    assert all(t.account_id == "6f7594f2-f059-4d56-9e67-47ac9733bfe9" for t in transactions)
    assert second_page(client, "transactions", models.TransactionOutput)
    transaction = retrieved(client, "transactions", RECEIVE, models.TransactionOutput)
    assert (transaction.contact_id, transaction.currency) == ("9c2c64de-12c9-4167-b503-e2c0e1aa1f49", "USD")
    assert [(li.name, li.value) for li in transaction.line_items] == [("hello", 10)]

    # Expenses are SPEND transactions; the spec's examples hold none (money
    # received, overpayments), so the list is empty and the example record no expense.
    expenses, page = listed(client, "expenses", models.ExpenseOutput, limit=1)
    assert expenses == [] and page["next_cursor"] is None
    body = answer(client.get(f"/accounting/expenses/{RECEIVE}"), 404)
    assert body["code"] == "not_found" and "provider_status" not in body
    assert answer(client.post("/accounting/expenses", json={"memo": "x"}), 501)["code"] == "operation_not_mapped"


# -- the Panora SDK --------------------------------------------------------------------

SDK_CLIENT = '''
import json, sys
from panora_sdk import Panora

job = json.load(sys.stdin)
contacts = Panora(api_key=job["api_key"], server_url=job["server_url"]).accounting.contacts
token = job["token"]
dump = lambda result: result.model_dump(mode="json")
created = contacts.create(x_connection_token=token, unified_accounting_contact_input=job["contact"])
first = contacts.list(x_connection_token=token, limit=1)
second = contacts.list(x_connection_token=token, limit=1, cursor=first.result.next_cursor)
retrieved = contacts.retrieve(x_connection_token=token, id=job["id"])
json.dump({"created": dump(created), "pages": [dump(first.result), dump(second.result)],
           "retrieved": dump(retrieved)}, sys.stdout)
'''


def test_sdk_contacts(sdk_python: Path, gateway: Server, shared: Path, tmp_path: Path) -> None:
    script = tmp_path / "xero_sdk_client.py"
    script.write_text(SDK_CLIENT, encoding="utf-8")
    job = {"server_url": gateway.url, "api_key": API_KEY, "token": TOKEN, "contact": contact_input(shared),
           "id": CONTACT}
    report = run_sdk_client(sdk_python, script, job, tmp_path)

    made = report["created"]
    assert (made["id"], made["remote_id"], made["name"], made["email_address"], made["status"]) == (
        "3ff6d40c-af9a-40a3-89ce-3c1556a25591", "3ff6d40c-af9a-40a3-89ce-3c1556a25591", "Foo9987",
        "sid32476@blah.com", "Active")
    first, second = report["pages"]
    # One a page, though Prism answers both to pageSize=1: the limit holds, the second comes next.
    assert [c["name"] for c in first["data"]] == ["Katherine Warren"]
    assert [c["name"] for c in second["data"]] == ["Lisa Parker"]
    assert first["next_cursor"] and first["prev_cursor"] is None and second["prev_cursor"]
    got = report["retrieved"]
    assert (got["id"], got["name"], got["email_address"], got["tax_number"], got["currency"], got["is_supplier"]) == (
        CONTACT, "Acme Parts Co.", "bk@krave.co", "123-22-3456", "USD", True)
