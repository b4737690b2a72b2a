"""QuickBooks Online, end to end: a real `gateway serve` process, configured with
mappings/quickbooks.yaml, in front of a fake QuickBooks (tests/fake_quickbooks.py)
served over loopback HTTP. The fake checks what it receives as QuickBooks does
(bearer token, realm, minorversion, the query language, required fields,
references), so a request the mapping renders wrongly fails here.

Every operation the mapping maps is called over HTTP; every answer must decode
as the unified model; the Panora SDK drives contacts at the end.
"""

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
from conftest import ROOT, Server, answer, clean_server, free_port, run_sdk_client
from fake_oauth import CLIENT_ID, CLIENT_SECRET, FakeTokens
from fake_quickbooks import REALM, TOKEN, FakeQuickBooks, RunningFake, parse_query

from gateway import mapping
from gateway.models import OBJECTS

MAPPING = ROOT / "mappings" / "quickbooks.yaml"
API_KEY = "qbo-e2e-key"
CONNECTION = "e2e-quickbooks"
EXPIRED = "e2e-quickbooks-expired-token"
OTHER_REALM = "e2e-quickbooks-other-realm"
NO_DEFAULTS = "e2e-quickbooks-no-defaults"

READ_ONLY = ["attachments", "companyinfos", "creditnotes", "items", "taxrates", "trackingcategories", "vendorcredits"]
WRITABLE = ["accounts", "contacts", "expenses", "invoices", "journalentries", "payments", "purchaseorders"]


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qbo() -> Iterator[RunningFake]:
    running = RunningFake(FakeQuickBooks(), free_port())
    yield running
    running.stop()


@pytest.fixture(scope="module")
def fake(qbo: RunningFake) -> FakeQuickBooks:
    return qbo.fake


def write_connections(directory: Path, base_url: str, tokens: FakeTokens) -> Path:
    def credentials(access_token: str) -> str:
        return f"""\
  token_url: {tokens.url}
  credentials:
    client_id: {CLIENT_ID}
    client_secret: {CLIENT_SECRET}
    refresh_token: {tokens.issue_refresh_token()}
    access_token: {access_token}
    expires_at: "2099-01-01T00:00:00Z"
"""

    path = directory / "connections.yaml"
    path.write_text(f"""\
- token: {CONNECTION}
  provider: quickbooks
  name: e2e-quickbooks
  base_url: {base_url}
{credentials('${QBO_E2E_ACCESS_TOKEN}')}  context:
    realm_id: "{REALM}"
    currency: USD
    default_item_id: "1"
    default_expense_account_id: "13"
- token: {EXPIRED}
  provider: quickbooks
  base_url: {base_url}
{credentials('not-the-access-token')}  context:
    realm_id: "{REALM}"
- token: {OTHER_REALM}
  provider: quickbooks
  base_url: {base_url}
{credentials('${QBO_E2E_ACCESS_TOKEN}')}  context:
    realm_id: "4620816365"
- token: {NO_DEFAULTS}
  provider: quickbooks
  base_url: {base_url}
{credentials('${QBO_E2E_ACCESS_TOKEN}')}  context:
    realm_id: "{REALM}"
""", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def gateway(qbo: RunningFake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("quickbooks")
    tokens = FakeTokens(lifetime=3600).start()
    server = clean_server(["serve"], {"GATEWAY_API_KEYS": API_KEY,
                                      "GATEWAY_CONNECTIONS": str(write_connections(directory, qbo.url, tokens)),
                                      "GATEWAY_STATE_URL": f"sqlite://{directory}/state.sqlite3",
                                      "QBO_E2E_ACCESS_TOKEN": TOKEN})
    yield server
    log = server.stop()
    assert "Traceback" not in log and "unexpected error" not in log, log
    assert TOKEN not in log, "the access token must never be logged"
    tokens.stop()


@pytest.fixture
def client(gateway: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, headers={"x-api-key": API_KEY, "x-connection-token": CONNECTION},
                      timeout=15) as c:
        yield c


# -- helpers ------------------------------------------------------------------------------------




def error(response: httpx.Response, status: int, code: str) -> dict:
    body = answer(response, status)
    assert body["statusCode"] == status and body["code"] == code, body
    return body


def unified(obj: str, data: dict) -> dict:
    """`data` must decode as the unified output model of `obj`."""
    msgspec.convert(data, OBJECTS[obj].output)
    return data


def create(client: httpx.Client, obj: str, body: dict) -> dict:
    return unified(obj, answer(client.post(f"/accounting/{obj}", json=body), 201))


def retrieve(client: httpx.Client, obj: str, record_id: str, **params) -> dict:
    return unified(obj, answer(client.get(f"/accounting/{obj}/{record_id}", params=params), 200))


def list_pages(client: httpx.Client, obj: str, limit: int) -> list[dict]:
    pages, cursor = [], None
    for _ in range(200):
        page = answer(client.get(f"/accounting/{obj}", params={"limit": limit, **({"cursor": cursor} if cursor else {})}), 200)
        assert set(page) == {"prev_cursor", "next_cursor", "data"}
        assert len(page["data"]) <= limit
        for record in page["data"]:
            unified(obj, record)
        pages.append(page)
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
    pytest.fail(f"listing {obj} did not end")


def list_all(client: httpx.Client, obj: str, limit: int = 50) -> list[dict]:
    return [r for page in list_pages(client, obj, limit) for r in page["data"]]


def ids(records: list[dict]) -> list[str]:
    return [r["id"] for r in records]


def by_id(records: dict[str, dict]) -> list[dict]:
    return sorted(records.values(), key=lambda r: int(r["Id"]))


def contact(name: str, supplier: bool, **more) -> dict:
    slug = name.lower().replace(" ", ".")
    return {"name": name, "is_supplier": supplier, "is_customer": not supplier,
            "email_address": f"{slug}@example.com", "status": "Active", "currency": "USD", **more}


# -- the mapping file ----------------------------------------------------------------------------


def test_the_mapping_and_its_examples_check() -> None:
    done = subprocess.run([sys.executable, "-m", "gateway", "check", "--examples", str(MAPPING)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "provider quickbooks" in done.stdout and "example(s) passed" in done.stdout


def test_every_operation_has_an_example() -> None:
    provider = mapping.load(MAPPING)
    for obj in provider.objects.values():
        for ops in obj.operations.values():
            for op in ops:
                assert op.spec.examples, f"{op.key} has no example"


def test_the_tests_below_cover_every_mapped_operation() -> None:
    provider = mapping.load(MAPPING)
    mapped = {(name, verb) for name, obj in provider.objects.items() for verb in obj.operations}
    covered = {(o, v) for o in READ_ONLY for v in ("list", "retrieve")}
    covered |= {(o, v) for o in WRITABLE for v in ("create", "list", "retrieve")}
    assert mapped == covered


# -- the fake itself behaves as QuickBooks documents -------------------------------------------------


def test_the_fake_checks_requests_as_quickbooks_does(qbo: RunningFake) -> None:
    base = f"{qbo.url}/v3/company/{REALM}"
    auth = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
    minor = {"minorversion": "75"}

    denied = httpx.get(f"{base}/customer/1", params=minor)
    assert denied.status_code == 401 and denied.json()["fault"]["error"][0]["code"] == "3200"
    other = httpx.get(f"{qbo.url}/v3/company/123/customer/1", params=minor, headers=auth)
    assert other.status_code == 403 and other.json()["fault"]["error"][0]["code"] == "3100"
    no_minor = httpx.get(f"{base}/customer/1", headers=auth)
    assert no_minor.status_code == 400 and "minorversion" in no_minor.json()["Fault"]["Error"][0]["Detail"]

    def query(text: str) -> httpx.Response:
        return httpx.get(f"{base}/query", params={"query": text, **minor}, headers=auth)

    assert query("select * from Widget").json()["Fault"]["Error"][0]["code"] == "4000"
    assert query("select * from customer").json()["Fault"]["Error"][0]["code"] == "4000", "entity names are case-sensitive"
    assert query("select * from Customer MAXRESULTS 1001").json()["Fault"]["Error"][0]["code"] == "4001"
    page = query("select * from Customer STARTPOSITION 2 MAXRESULTS 1").json()["QueryResponse"]
    assert page["startPosition"] == 2 and page["maxResults"] == 1 and [c["Id"] for c in page["Customer"]] == ["2"]
    assert query("select * from Customer STARTPOSITION 500 MAXRESULTS 10").json()["QueryResponse"] == {}
    active = [c["Id"] for c in query("select * from Customer").json()["QueryResponse"]["Customer"]]
    everyone = [c["Id"] for c in query("select * from Customer where Active IN (true, false)").json()["QueryResponse"]["Customer"]]
    assert "3" not in active and "3" in everyone, "name lists hide inactive records unless asked"
    assert parse_query("SELECT * FROM Invoice where DocNumber = '1001' STARTPOSITION 1 MAXRESULTS 5")["conditions"] == \
        [("DocNumber", ["1001"])]

    missing = httpx.get(f"{base}/customer/999", params=minor, headers=auth)
    assert missing.status_code == 400 and missing.json()["Fault"]["Error"][0]["code"] == "610"
    nameless = httpx.post(f"{base}/customer", params=minor, headers=auth, json={"Notes": "no name"})
    assert nameless.json()["Fault"]["Error"][0]["code"] == "2020"
    typo = httpx.post(f"{base}/vendor", params=minor, headers=auth, json={"DisplayName": "X", "TaxIdentifer": "1"})
    assert typo.json()["Fault"]["Error"][0]["code"] == "2010"
    lineless = httpx.post(f"{base}/invoice", params=minor, headers=auth, json={"CustomerRef": {"value": "1"}})
    assert lineless.json()["Fault"]["Error"][0]["code"] == "2020"
    unknown = httpx.post(f"{base}/widget", params=minor, headers=auth, json={})
    assert unknown.status_code == 400 and unknown.json()["Fault"]["Error"][0]["code"] == "500"


# -- contacts: customers and vendors ------------------------------------------------------------------


def test_a_supplier_becomes_a_vendor_and_a_customer_a_customer(client: httpx.Client, fake: FakeQuickBooks) -> None:
    response = client.post("/accounting/contacts", json=contact("Northwind Supplies", True, tax_number="123-45-6789"))
    supplier = unified("contacts", answer(response, 201))
    assert supplier["id"] == f"vendor-{supplier['remote_id']}"
    assert supplier["is_supplier"] is True and supplier["is_customer"] is False
    assert supplier["name"] == "Northwind Supplies" and supplier["email_address"] == "northwind.supplies@example.com"
    assert supplier["status"] == "Active" and supplier["currency"] == "USD" and supplier["company_info_id"] == REALM
    # QuickBooks keeps the tax id write-only and answers a mask: no tax number to read, the mask in remote_data.
    assert supplier["tax_number"] is None
    # QuickBooks has no flag for "also a customer": the caller is told it was not carried.
    assert response.headers["x-gateway-ignored-fields"] == "$.is_customer"
    raw = fake.store["Vendor"][supplier["remote_id"]]
    assert raw["DisplayName"] == "Northwind Supplies" and raw["PrimaryEmailAddr"] == {"Address": "northwind.supplies@example.com"}
    assert supplier["remote_id"] not in fake.store["Customer"] or \
        fake.store["Customer"][supplier["remote_id"]]["DisplayName"] != "Northwind Supplies"

    customer = create(client, "contacts", contact("Contoso Retail", False, status="Inactive"))
    assert customer["id"] == f"customer-{customer['remote_id']}"
    assert customer["is_customer"] is True and customer["is_supplier"] is False and customer["status"] == "Inactive"
    assert fake.store["Customer"][customer["remote_id"]]["Active"] is False

    neither = create(client, "contacts", {"name": "Walk-in Guest"})
    assert neither["id"].startswith("customer-"), "a contact that is no supplier is a customer"

    for made in (supplier, customer, neither):
        assert retrieve(client, "contacts", made["id"]) == made
    with_raw = retrieve(client, "contacts", supplier["id"], remote_data="true")
    assert with_raw["remote_data"]["DisplayName"] == "Northwind Supplies" and with_raw["remote_data"]["Id"] == supplier["remote_id"]
    assert with_raw["tax_number"] is None and with_raw["remote_data"]["TaxIdentifier"] == "XXXXXX56789"


def test_customers_and_vendors_share_ids_but_not_unified_ids(client: httpx.Client, fake: FakeQuickBooks) -> None:
    customer, vendor = retrieve(client, "contacts", "customer-1"), retrieve(client, "contacts", "vendor-1")
    assert customer["remote_id"] == vendor["remote_id"] == "1"
    assert customer["name"] == fake.store["Customer"]["1"]["DisplayName"]
    assert vendor["name"] == fake.store["Vendor"]["1"]["DisplayName"]
    assert customer["is_customer"] and vendor["is_supplier"]

    # Creating one of each until their new Ids meet.
    made = [create(client, "contacts", contact(f"Twin {n} {kind}", kind == "vendor"))
            for n in range(3) for kind in ("vendor", "customer")]
    numbers = {}
    for record in made:
        numbers.setdefault(record["remote_id"], []).append(record["id"])
    assert any(len(v) == 2 for v in numbers.values()), numbers
    for record in made:
        assert retrieve(client, "contacts", record["id"]) == record


def test_listing_contacts_walks_every_customer_then_every_vendor(client: httpx.Client, fake: FakeQuickBooks) -> None:
    for n in range(3):
        create(client, "contacts", contact(f"Paging Customer {n}", False))
        create(client, "contacts", contact(f"Paging Vendor {n}", True))
    expected = [f"customer-{r['Id']}" for r in by_id(fake.store["Customer"])]
    expected += [f"vendor-{r['Id']}" for r in by_id(fake.store["Vendor"])]
    assert "customer-3" in expected, "inactive customers are listed too"

    for limit in (1, 2, 3, 7, 1000):
        pages = list_pages(client, "contacts", limit)
        listed = [r["id"] for page in pages for r in page["data"]]
        assert listed == expected, f"limit {limit}: a record is missing, repeated or out of order across the boundary"
        # Only the last page may be empty: QuickBooks gives no total, so a source that ends on a page
        # boundary takes one more call to show it has ended.
        assert all(page["data"] for page in pages[:-1]), f"limit {limit}: an empty page"
        assert pages[0]["prev_cursor"] is None and pages[-1]["next_cursor"] is None
    records = list_all(client, "contacts", 4)
    inactive = next(r for r in records if r["id"] == "customer-3")
    assert inactive["status"] == "Inactive"
    for record in records:
        assert retrieve(client, "contacts", record["id"]) == record
        assert record["is_supplier"] is record["id"].startswith("vendor-")

    # The list queries QuickBooks as documented: one entity, STARTPOSITION and MAXRESULTS.
    queries = [parse_query(r["query"]["query"]) for r in fake.requests if r["path"].endswith("/query")
               and r["user_agent"] == "panora-gateway" and r["query"]["query"].split()[3] in ("Customer", "Vendor")]
    assert {q["entity"] for q in queries} == {"Customer", "Vendor"} and {q["max"] for q in queries} >= {1, 2, 3, 7, 1000}


def test_contact_errors(client: httpx.Client, fake: FakeQuickBooks) -> None:
    create(client, "contacts", contact("Duplicate Name Co", False))
    for supplier in (False, True):  # display names are unique across customers and vendors
        body = error(client.post("/accounting/contacts", json=contact("Duplicate Name Co", supplier)), 409,
                     "upstream_rejected")
        assert body["provider"] == "quickbooks" and body["provider_code"] == "6240" and body["provider_status"] == 400
        assert "already" in body["message"]

    body = error(client.get("/accounting/contacts/customer-99999"), 404, "not_found")
    assert body["provider_code"] == "610" and body["provider_status"] == 400

    calls = len(fake.requests)
    for odd in ("99999", "employee-1", "supplier-3"):
        error(client.get(f"/accounting/contacts/{odd}"), 404, "not_found")
    assert len(fake.requests) == calls, "an id of no known kind never reaches QuickBooks"

    body = error(client.post("/accounting/contacts", json={"name": "Bad Mail", "email_address": "not-an-address"}), 422,
                 "upstream_rejected")
    assert body["provider_code"] == "6000"


# -- accounts ---------------------------------------------------------------------------------------------


def test_accounts(client: httpx.Client, fake: FakeQuickBooks) -> None:
    seedlike = {"name": "Petty Cash E2E", "description": "Main cash account for daily operations",
                "classification": "Asset", "type": "Current Asset", "status": "Active", "current_balance": 10000,
                "currency": "USD", "account_number": "1000"}
    response = client.post("/accounting/accounts", json=seedlike)
    made = unified("accounts", answer(response, 201))
    assert made["id"] == made["remote_id"] and made["name"] == "Petty Cash E2E"
    assert made["classification"] == "Asset" and made["type"] == "Current Asset" and made["status"] == "Active"
    assert made["account_number"] == "1000" and made["current_balance"] == 0 and made["company_info_id"] == REALM
    assert fake.store["Account"][made["id"]]["AccountType"] == "Other Current Asset"
    # QuickBooks sets an account's balance and currency itself, and its classification from
    # the account type: the type is sent, the classification is not (the child below has no type).
    assert set(response.headers["x-gateway-ignored-fields"].split(", ")) == {"$.current_balance", "$.currency",
                                                                            "$.classification"}

    child = create(client, "accounts", {"name": "Office Snacks", "classification": "Expense", "parent_account": "29"})
    assert child["type"] == "Expense" and child["classification"] == "Expense" and child["parent_account"] == "29"

    error(client.post("/accounting/accounts", json={"name": "Petty Cash E2E", "type": "Bank"}), 409, "upstream_rejected")
    # Values QuickBooks does not know are refused before any call, naming the field and what it takes.
    calls = len(fake.requests)
    body = error(client.post("/accounting/accounts", json={"name": "Oddity", "type": "Current Thing"}), 422,
                 "invalid_request")
    assert body["path"] == "$.type" and "Other Current Asset" in body["errors"][0]["accepted"]
    body = error(client.post("/accounting/accounts", json={"name": "Oddity", "type": "Bank", "status": "Archived"}),
                 422, "invalid_request")
    assert body["path"] == "$.status" and body["errors"][0]["accepted"] == ["Active", "Inactive"]
    assert len(fake.requests) == calls
    # The unified name of a type QuickBooks calls otherwise is its QuickBooks type.
    revenue = create(client, "accounts", {"name": "Consulting Revenue E2E", "type": "Revenue"})
    assert fake.store["Account"][revenue["id"]]["AccountType"] == "Income" and revenue["classification"] == "Revenue"
    error(client.post("/accounting/accounts", json={"name": "Orphan", "type": "Bank", "parent_account": "4040"}), 422,
          "upstream_rejected")

    records = list_all(client, "accounts", 4)
    assert ids(records) == [r["Id"] for r in by_id(fake.store["Account"])]
    for record in records:
        assert retrieve(client, "accounts", record["id"]) == record
    assert retrieve(client, "accounts", "33")["classification"] == "Liability"
    error(client.get("/accounting/accounts/424242"), 404, "not_found")


# -- invoices and payments ---------------------------------------------------------------------------------


def test_invoices_and_the_payments_against_them(client: httpx.Client, fake: FakeQuickBooks) -> None:
    invoice = create(client, "invoices", {
        "contact_id": "customer-1", "number": "E2E-INV-1", "issue_date": "2024-06-15T12:00:00Z",
        "due_date": "2024-07-15T12:00:00Z", "memo": "Payment for services rendered", "currency": "USD",
        "tracking_categories": ["class-1", "department-1"],
        "line_items": [{"name": "Pump", "value": 150, "parent_item": "11"},
                       {"name": "Installation", "value": 100.5}],
    })
    assert invoice["contact_id"] == "customer-1" and invoice["number"] == "E2E-INV-1"
    assert invoice["issue_date"] == "2024-06-15T00:00:00Z" and invoice["due_date"] == "2024-07-15T00:00:00Z"
    assert invoice["total_amount"] == 250.5 and invoice["balance"] == 250.5 and invoice["sub_total"] == 250.5
    assert invoice["status"] == "Open" and invoice["memo"] == "Payment for services rendered"
    assert invoice["tracking_categories"] == ["class-1", "department-1"]
    assert [(l["name"], l["value"], l["parent_item"]) for l in invoice["line_items"]] == \
        [("Pump", 150, "11"), ("Installation", 100.5, "1")], "a line without an item takes the connection's default"
    raw = fake.store["Invoice"][invoice["id"]]
    assert raw["CustomerRef"]["value"] == "1" and raw["ClassRef"] == {"value": "1"} and raw["TxnDate"] == "2024-06-15"
    # A tracking category of no kind would be dropped on the way: refused, before any call, naming it.
    calls = len(fake.requests)
    body = error(client.post("/accounting/invoices", json={"contact_id": "customer-1", "tracking_categories": ["1"]}),
                 422, "invalid_request")
    assert body["path"] == "$.tracking_categories[0]" and len(fake.requests) == calls

    payment = create(client, "payments", {"contact_id": "customer-1", "invoice_id": invoice["id"], "total_amount": 10000,
                                          "transaction_date": "2024-06-20T09:00:00Z", "account_id": "4", "currency": "USD"})
    assert payment["invoice_id"] == invoice["id"] and payment["contact_id"] == "customer-1"
    assert payment["total_amount"] == 10000 and payment["account_id"] == "4", "cents, as Panora's contract says"
    assert fake.store["Payment"][payment["id"]]["TotalAmt"] == 100
    assert payment["transaction_date"] == "2024-06-20T00:00:00Z"
    assert payment["line_items"] == [{"name": None, "value": 100, "type": "Invoice", "parent_item": invoice["id"],
                                      "remote_id": None, "remote_generated_at": None, "company_info_id": None}]
    partly = retrieve(client, "invoices", invoice["id"])
    assert partly["balance"] == 150.5 and partly["status"] == "Partially Paid"

    rest = create(client, "payments", {"contact_id": "1", "invoice_id": invoice["id"], "total_amount": 15050})
    assert rest["contact_id"] == "customer-1"
    paid = retrieve(client, "invoices", invoice["id"])
    assert paid["balance"] == 0 and paid["status"] == "Paid"
    unapplied = create(client, "payments", {"contact_id": "customer-2", "total_amount": 2500})
    assert unapplied["invoice_id"] is None and unapplied["line_items"] == []

    invoices = list_all(client, "invoices", 1)
    assert invoice["id"] in ids(invoices)
    for record in invoices:
        assert retrieve(client, "invoices", record["id"]) == record
    payments = list_all(client, "payments", 2)
    assert ids(payments) == [r["Id"] for r in by_id(fake.store["Payment"])]
    assert {payment["id"], rest["id"], unapplied["id"]} <= set(ids(payments))
    for record in payments:
        assert retrieve(client, "payments", record["id"]) == record

    # An invoice bills a customer: a vendor's id cannot serve, and QuickBooks is not asked.
    body = error(client.post("/accounting/invoices", json={"contact_id": "vendor-1", "line_items": [{"value": 5}]}), 422,
                 "no_matching_operation")
    assert "when" in body["message"]
    error(client.post("/accounting/payments", json={"contact_id": "vendor-1", "total_amount": 5}), 422, "no_matching_operation")
    body = error(client.post("/accounting/invoices", json={"contact_id": "customer-1", "line_items": [
        {"value": 5, "parent_item": "999"}]}), 422, "upstream_rejected")
    assert body["provider_code"] == "2500"
    body = error(client.post("/accounting/invoices", json={"contact_id": "customer-1"}), 422, "upstream_rejected")
    assert body["provider_code"] == "2020", "QuickBooks wants at least one line"
    body = error(client.post("/accounting/payments", json={"contact_id": "customer-2", "invoice_id": invoice["id"],
                                                          "total_amount": 5}), 422, "upstream_rejected")
    assert body["provider_code"] == "6000", "the invoice belongs to another customer (and is paid)"
    error(client.get("/accounting/invoices/77777"), 404, "not_found")


def test_a_purchase_invoice_is_a_bill(client: httpx.Client, fake: FakeQuickBooks) -> None:
    bill = create(client, "invoices", {
        "type": "Purchase", "contact_id": "vendor-2", "number": "HH-7731", "issue_date": "2024-06-15T12:00:00Z",
        "memo": "Hardware for the deck", "currency": "USD", "tracking_categories": ["class-1", "department-1"],
        "line_items": [{"name": "Pump", "value": 150, "parent_item": "11"}, {"name": "Fitting", "value": 25.5}],
    })
    assert bill["id"] == f"bill-{bill['remote_id']}" and bill["type"] == "Purchase"
    assert bill["contact_id"] == "vendor-2" and bill["number"] == "HH-7731" and bill["memo"] == "Hardware for the deck"
    assert bill["total_amount"] == 175.5 and bill["balance"] == 175.5 and bill["status"] == "Open"
    assert bill["tracking_categories"] == ["class-1", "department-1"]
    assert [(l["name"], l["value"], l["parent_item"]) for l in bill["line_items"]] == [("Pump", 150, "11"), ("Fitting", 25.5, "1")]
    raw = fake.store["Bill"][bill["remote_id"]]
    assert raw["VendorRef"]["value"] == "2" and "ClassRef" not in raw
    assert [l["ItemBasedExpenseLineDetail"]["ClassRef"] for l in raw["Line"]] == [{"value": "1"}] * 2
    assert not any(i.get("DocNumber") == "HH-7731" for i in fake.store["Invoice"].values()), "no sales invoice was made"

    assert retrieve(client, "invoices", bill["id"]) == bill
    listed = list_all(client, "invoices", 2)
    assert ids(listed) == [r["Id"] for r in by_id(fake.store["Invoice"])] + \
        [f"bill-{r['Id']}" for r in by_id(fake.store["Bill"])], "every invoice, then every bill"
    error(client.get("/accounting/invoices/bill-77777"), 404, "not_found")
    error(client.post("/accounting/payments", json={"contact_id": "customer-1", "invoice_id": bill["id"],
                                                    "total_amount": 500}), 422, "no_matching_operation")

    # A bill comes from a vendor; a type QuickBooks has no document for is no sales invoice either.
    before = len(fake.requests)
    error(client.post("/accounting/invoices", json={"type": "Purchase", "contact_id": "customer-1",
                                                    "line_items": [{"value": 5, "parent_item": "1"}]}), 422, "no_matching_operation")
    error(client.post("/accounting/invoices", json={"type": "Credit", "contact_id": "customer-1",
                                                    "line_items": [{"value": 5, "parent_item": "1"}]}), 422, "no_matching_operation")
    assert len(fake.requests) == before


def test_a_voided_invoice_is_void_and_a_bundle_is_one_line(client: httpx.Client) -> None:
    voided = retrieve(client, "invoices", "129")
    assert voided["status"] == "Void" and voided["balance"] == 0 and voided["total_amount"] == 0
    bundle = retrieve(client, "invoices", "130")
    assert [(l["type"], l["value"], l["parent_item"]) for l in bundle["line_items"]] == \
        [("SalesItemLineDetail", 50.0, "1"), ("GroupLineDetail", 45.0, "19")]
    assert sum(l["value"] for l in bundle["line_items"]) == bundle["total_amount"], "the bundle's amount is not lost"


def test_a_line_without_an_item_and_no_default_item_is_refused_before_any_call(gateway: Server, fake: FakeQuickBooks) -> None:
    headers = {"x-api-key": API_KEY, "x-connection-token": NO_DEFAULTS}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=15) as bare:
        before = len(fake.requests)
        for kind, contact_id in (("Sales", "customer-1"), ("Purchase", "vendor-1")):
            body = {"type": kind, "contact_id": contact_id,
                    "line_items": [{"name": "Pump", "value": 15, "parent_item": "11"}, {"name": "Labour", "value": 40}]}
            refused = error(bare.post("/accounting/invoices", json=body), 422, "invalid_request")
            assert refused["errors"] == [{"message": refused["errors"][0]["message"], "path": "$.line_items[1].parent_item",
                                          "context_key": "default_item_id"}], refused
            assert "default_item_id" in refused["message"]
        assert len(fake.requests) == before, "QuickBooks would book the itemless line's amount to nothing"
        body["line_items"][1].update(parent_item="1", type="Labour")
        response = bare.post("/accounting/invoices", json=body)
        assert unified("invoices", answer(response, 201))["total_amount"] == 55
        assert response.headers["x-gateway-ignored-fields"] == "$.line_items[1].type", "checking lines carries none"


# -- journal entries, purchase orders, expenses --------------------------------------------------------------


def test_journal_entries(client: httpx.Client, fake: FakeQuickBooks) -> None:
    entry = create(client, "journalentries", {
        "transaction_date": "2024-06-15T12:00:00Z", "journal_number": "JE-001", "memo": "Monthly expense journal entry",
        "line_items": [{"name": "Office supplies", "value": 252, "type": "Debit", "parent_item": "29"},
                       {"name": "Paid from checking", "value": -252, "parent_item": "35"}],
    })
    assert entry["journal_number"] == "JE-001" and entry["memo"] == "Monthly expense journal entry"
    assert entry["posting_status"] == "Posted" and entry["id_acc_company_info"] == REALM
    assert [(l["type"], l["value"], l["parent_item"]) for l in entry["line_items"]] == [("Debit", 252, "29"),
                                                                                       ("Credit", 252, "35")]
    assert [l["JournalEntryLineDetail"]["PostingType"] for l in fake.store["JournalEntry"][entry["id"]]["Line"]] == \
        ["Debit", "Credit"]

    body = error(client.post("/accounting/journalentries", json={"line_items": [
        {"value": 10, "type": "Debit", "parent_item": "29"}, {"value": 9, "type": "Credit", "parent_item": "35"}]}),
        422, "upstream_rejected")
    assert body["provider_code"] == "6000"

    records = list_all(client, "journalentries", 1)
    assert ids(records) == [r["Id"] for r in by_id(fake.store["JournalEntry"])]
    for record in records:
        assert retrieve(client, "journalentries", record["id"]) == record


def test_purchase_orders(client: httpx.Client, fake: FakeQuickBooks) -> None:
    order = create(client, "purchaseorders", {
        "vendor": "vendor-2", "customer": "customer-2", "purchase_order_number": "PO-001", "memo": "Q3 inventory",
        "issue_date": "2024-06-15T12:00:00Z", "delivery_date": "2024-07-15T12:00:00Z", "currency": "USD",
        "tracking_categories": ["class-1"],
        "line_items": [{"name": "Pumps", "value": 250, "parent_item": "11"}, {"name": "Anything", "value": 20}],
    })
    assert order["vendor"] == "vendor-2" and order["customer"] == "customer-2" and order["status"] == "Open"
    assert order["purchase_order_number"] == "PO-001" and order["total_amount"] == 27000 and order["memo"] == "Q3 inventory"
    assert order["delivery_date"] == "2024-07-15T00:00:00Z" and order["tracking_categories"] == ["class-1"]
    assert [(l["value"], l["parent_item"]) for l in order["line_items"]] == [(250, "11"), (20, "1")]
    assert fake.store["PurchaseOrder"][order["id"]]["VendorRef"]["value"] == "2"

    error(client.post("/accounting/purchaseorders", json={"vendor": "customer-1", "line_items": [{"value": 1}]}), 422,
          "no_matching_operation")
    error(client.post("/accounting/purchaseorders", json={"vendor": "vendor-2", "status": "Pending",
                                                          "line_items": [{"value": 1}]}), 422, "upstream_rejected")

    records = list_all(client, "purchaseorders", 1)
    assert order["id"] in ids(records)
    for record in records:
        assert retrieve(client, "purchaseorders", record["id"]) == record


def test_expenses(client: httpx.Client, fake: FakeQuickBooks) -> None:
    lunch = create(client, "expenses", {
        "transaction_date": "2024-06-15T12:00:00Z", "account_id": "35", "contact_id": "vendor-1",
        "memo": "Business lunch with client", "currency": "USD", "tracking_categories": ["department-1"],
        "line_items": [{"name": "Lunch", "value": 52.5, "parent_item": "13"}, {"name": "Tip", "value": 7.5}],
    })
    assert lunch["contact_id"] == "vendor-1" and lunch["account_id"] == "35" and lunch["total_amount"] == 60
    assert lunch["memo"] == "Business lunch with client" and lunch["tracking_categories"] == ["department-1"]
    assert [(l["value"], l["parent_item"]) for l in lunch["line_items"]] == [(52.5, "13"), (7.5, "13")]
    raw = fake.store["Purchase"][lunch["id"]]
    assert raw["PaymentType"] == "Cash" and raw["EntityRef"]["type"] == "Vendor" and raw["EntityRef"]["value"] == "1"

    for_customer = create(client, "expenses", {"account_id": "35", "contact_id": "customer-2",
                                               "line_items": [{"value": 10, "parent_item": "7"}]})
    assert for_customer["contact_id"] == "customer-2"
    body = error(client.post("/accounting/expenses", json={"account_id": "41", "line_items": [{"value": 1}]}), 422,
                 "upstream_rejected")
    assert body["provider_code"] == "6000", "a cash purchase is paid from a bank account"

    records = list_all(client, "expenses", 1)
    assert {lunch["id"], for_customer["id"]} <= set(ids(records))
    for record in records:
        assert retrieve(client, "expenses", record["id"]) == record


# -- what QuickBooks only reads ---------------------------------------------------------------------------


@pytest.mark.parametrize("obj", READ_ONLY)
def test_read_only_objects(client: httpx.Client, obj: str) -> None:
    everything = list_all(client, obj, 50)
    assert everything, f"the fake holds {obj}"
    assert list_all(client, obj, 1) == everything, "paging one at a time lists the same records"
    for record in everything:
        assert retrieve(client, obj, record["id"]) == record
    error(client.post(f"/accounting/{obj}", json={}), 405 if OBJECTS[obj].input is None else 501,
          "method_not_allowed" if OBJECTS[obj].input is None else "operation_not_mapped")


def test_read_only_details(client: httpx.Client) -> None:
    categories = list_all(client, "trackingcategories", 1)
    assert ids(categories) == ["class-1", "class-2", "department-1"]
    france = retrieve(client, "trackingcategories", "class-2")
    assert france["parent_category"] == "class-1" and france["status"] == "Inactive" and france["category_type"] == "Class"
    assert retrieve(client, "trackingcategories", "department-1")["category_type"] == "Department"
    error(client.get("/accounting/trackingcategories/1"), 404, "not_found")

    [company] = list_all(client, "companyinfos")
    assert company["id"] == REALM and company["remote_id"] == "1" and company["name"] == "Larry's Bakery"
    assert company["fiscal_year_end_month"] == 12 and company["fiscal_year_end_day"] == 31
    error(client.get("/accounting/companyinfos/1"), 404, "not_found")

    [credit] = list_all(client, "creditnotes")
    assert credit["contact_id"] == "customer-1" and credit["remaining_credit"] == 100 and credit["tracking_categories"] == ["class-1"]
    [vendor_credit] = list_all(client, "vendorcredits")
    assert vendor_credit["vendor"] == "vendor-1" and vendor_credit["total_amount"] == "90.0"
    [attachment] = list_all(client, "attachments")
    assert attachment["file_name"] == "receipt_nov15.jpg" and attachment["account_id"] == "35"
    pump = retrieve(client, "items", "11")
    assert pump["unit_price"] == 1500 and pump["purchase_price"] == 1000 and pump["sales_account"] == "79"
    rates = {r["id"]: r for r in list_all(client, "taxrates")}
    assert rates["3"]["description"] == "Sales Tax" and rates["3"]["total_tax_ratge"] == 710


# -- what the mapping leaves out, and failures upstream ----------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [("GET", "/accounting/balancesheets"), ("GET", "/accounting/addresses"),
                                              ("GET", "/accounting/transactions/1"), ("GET", "/accounting/phonenumbers"),
                                              ("POST", "/accounting/attachments")])
def test_what_quickbooks_cannot_serve_is_501(client: httpx.Client, method: str, path: str) -> None:
    body = error(client.request(method, path, json={} if method == "POST" else None), 501, "operation_not_mapped")
    assert body["provider"] == "quickbooks"


def test_refused_credentials_are_a_502(gateway: Server) -> None:
    for token, code in ((EXPIRED, "3200"), (OTHER_REALM, "3100")):
        response = httpx.get(f"{gateway.url}/accounting/contacts", timeout=15,
                             headers={"x-api-key": API_KEY, "x-connection-token": token})
        body = error(response, 502, "upstream_auth_failed")
        assert body["provider_code"] == code and body["provider_message"]


def test_every_request_carried_the_token_realm_and_minorversion(client: httpx.Client, fake: FakeQuickBooks) -> None:
    list_all(client, "contacts")
    ours = [r for r in fake.requests if r["user_agent"] == "panora-gateway"]
    assert len(ours) > 20
    assert all(r["query"].get("minorversion") == "75" for r in ours)
    assert {r["path"].split("/")[3] for r in ours} == {REALM, "4620816365"}, "each connection's own realm"


# -- the Panora SDK ------------------------------------------------------------------------------------

SDK_CLIENT = Path(__file__).with_name("sdk_contacts_client.py")


def test_the_panora_sdk_creates_lists_and_retrieves_contacts(sdk_python: Path, gateway: Server, fake: FakeQuickBooks,
                                                              tmp_path: Path) -> None:
    wanted = [{"name": f"SDK Contact {n}", "email_address": f"sdk{n}@example.com", "is_supplier": n % 2 == 1,
               "is_customer": n % 2 == 0, "tax_number": f"TAX-0000{n}", "status": "Active", "currency": "USD"}
              for n in range(1, 6)]
    job = {"server_url": gateway.url, "api_key": API_KEY, "token": CONNECTION, "contacts": wanted, "limit": 2,
           "unknown_id": "64b8f1a2e4b0c8d9f0ffffff"}
    report = run_sdk_client(sdk_python, SDK_CLIENT, job, tmp_path)

    created = report["created"]
    assert [c["name"] for c in created] == [w["name"] for w in wanted]
    assert [c["id"].split("-")[0] for c in created] == ["vendor", "customer", "vendor", "customer", "vendor"]
    assert [c["is_supplier"] for c in created] == [w["is_supplier"] for w in wanted]
    assert [c["is_customer"] for c in created] == [w["is_customer"] for w in wanted]
    assert all(c["remote_id"] == c["id"].split("-")[1] and c["company_info_id"] == REALM for c in created)
    assert all(c["tax_number"] is None for c in created), "write-only in QuickBooks, answered masked"

    # Paging with cursor= covers every customer, then every vendor, once.
    pages = report["pages"]
    listed = [r["id"] for page in pages for r in page["data"]]
    expected = [f"customer-{r['Id']}" for r in by_id(fake.store["Customer"])]
    expected += [f"vendor-{r['Id']}" for r in by_id(fake.store["Vendor"])]
    assert listed == expected
    assert {c["id"] for c in created} <= set(listed)
    assert all(1 <= len(p["data"]) <= 2 for p in pages[:-1]) and pages[-1]["next_cursor"] is None
    assert pages[0]["prev_cursor"] is None

    assert report["retrieved"] == created
    assert report["unknown"]["status_code"] == 404 and json.loads(report["unknown"]["body"])["code"] == "not_found"
