"""The freee mapping (mappings/freee.yaml).

(1) its worked examples pass `gateway check --examples`;
(2) the language it needed: merge_each and paging.count, and freee's error
    bodies, in-process with freee mocked by pytest-httpx;
(3) the contract: a real gateway process in front of Prism serving freee's own
    OpenAPI spec, which answers 4xx to any request that breaks the spec and the
    spec's examples otherwise; every operation the mapping maps, over HTTP,
    decoded as Panora's models;
(4) contacts through the real Panora SDK against the same gateway and Prism.
"""

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import jmespath
import msgspec
import pytest
from conftest import ROOT, Server, answer, clean_server, contact_input, in_process, openapi, run_sdk_client, seed
from jmespath.exceptions import JMESPathTypeError
from starlette.testclient import TestClient

from gateway import models
from gateway.app import create_app
from gateway.functions import Functions
from gateway.settings import from_environ

API_KEY = "freee-gateway-key"
TOKEN = "freee-connection"
ACCESS_TOKEN = "freee-oauth-access-token"
COMPANY_ID = 1
FREEE = "https://api.freee.co.jp"
H = {"x-api-key": API_KEY, "x-connection-token": TOKEN}

# Context the freee mapping reads: the company, and the account item and tax
# code that new invoice lines are booked to (the unified line item has neither).
CONTEXT = {"company_id": COMPANY_ID, "income_account_item_id": 803, "income_tax_code": 21,
           "expense_account_item_id": 804, "expense_tax_code": 136}


def connections_file(directory: Path, base_url: str | None) -> Path:
    path = directory / "connections.yaml"
    base = f"  base_url: {base_url}\n" if base_url else ""
    context = "\n".join(f"    {k}: {v}" for k, v in CONTEXT.items())
    path.write_text(f"""\
- token: {TOKEN}
  name: freee-test
  provider: freee
{base}  credentials:
    client_id: freee-test-client
    client_secret: freee-test-secret
    refresh_token: freee-test-refresh
    access_token: ${{FREEE_ACCESS_TOKEN}}
    expires_at: "2099-01-01T00:00:00Z"   # valid: the token endpoint is never asked
  context:
{context}
""", encoding="utf-8")
    return path


# -- (1) the worked examples ---------------------------------------------------------


def test_the_freee_examples_pass() -> None:
    done = subprocess.run([sys.executable, "-m", "gateway", "check", "--examples", "mappings/freee.yaml"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"provider freee, 14 object\(s\), \d+ operation\(s\), \d+ example\(s\) passed", done.stdout), done.stdout


# -- (2) the language: merge_each ----------------------------------------------------


def search(expression: str, data):
    return jmespath.search(expression, data, options=jmespath.Options(custom_functions=Functions({}, {})))


def test_merge_each_carries_a_parents_fields_into_its_children() -> None:
    deals = {"deals": [{"id": 1, "partner_id": 7, "payments": [{"id": 10, "amount": 5}, {"id": 11, "amount": 6}]},
                       {"id": 2, "partner_id": None},
                       {"id": 3, "partner_id": 8, "payments": []}]}
    assert search("deals[].merge_each(payments, {deal_id: id, partner_id: partner_id})[]", deals) == [
        {"id": 10, "amount": 5, "deal_id": 1, "partner_id": 7},
        {"id": 11, "amount": 6, "deal_id": 1, "partner_id": 7},
    ]


def test_merge_each_lets_the_object_win_and_passes_null_through() -> None:
    assert search("merge_each(items, {a: `2`})", {"items": [{"a": 1, "b": 1}]}) == [{"a": 2, "b": 1}]
    assert search("merge_each(missing, {a: `2`})", {}) is None
    assert search("merge_each(`[]`, {a: `2`})", {}) == []
    with pytest.raises(JMESPathTypeError):
        search("merge_each(`[1]`, {a: `2`})", {})
    with pytest.raises(JMESPathTypeError):
        search("merge_each(items, `3`)", {"items": []})


# -- (2) in-process: paging.count and freee's errors -----------------------------------


@pytest.fixture
def client(tmp_path) -> Iterator[TestClient]:
    environ = {"GATEWAY_API_KEYS": API_KEY, "GATEWAY_CONNECTIONS": str(connections_file(tmp_path, None)),
               "GATEWAY_CURSOR_SECRET": "freee-test-cursor-secret", "FREEE_ACCESS_TOKEN": ACCESS_TOKEN}
    app = create_app(from_environ(environ), environ=environ, transport=httpx.AsyncHTTPTransport())
    with TestClient(app) as c:
        yield c


def deals_url(offset: int, limit: int) -> str:
    return f"{FREEE}/api/1/deals?company_id={COMPANY_ID}&offset={offset}&limit={limit}"


def deal(n: int, payments: list[dict] | None = None) -> dict:
    out = {"id": n, "company_id": COMPANY_ID, "issue_date": "2024-06-15", "amount": 1000, "due_amount": 0,
           "type": "income", "partner_id": 200 + n, "status": "settled" if payments else "unsettled"}
    if payments is not None:
        out["payments"] = payments
    return out


def payment(n: int) -> dict:
    return {"id": n, "date": "2024-06-16", "from_walletable_type": "wallet", "from_walletable_id": 3, "amount": 500}


def test_payments_page_by_deals_not_by_payments(client, httpx_mock) -> None:
    """paging.count: two deals holding three payments move the offset by two."""
    httpx_mock.add_response(url=deals_url(0, 2), json={
        "deals": [deal(1, [payment(11), payment(12)]), deal(2, [payment(13)])], "meta": {"total_count": 3}})
    httpx_mock.add_response(url=deals_url(2, 2), json={"deals": [deal(3)], "meta": {"total_count": 3}})

    first = client.get("/accounting/payments", params={"limit": 2}, headers=H)
    assert first.status_code == 200, first.text
    page = first.json()
    assert [(p["id"], p["invoice_id"], p["contact_id"]) for p in page["data"]] == [
        ("11", "1", "201"), ("12", "1", "201"), ("13", "2", "202")]
    assert page["data"][0]["type"] == "Cash" and page["data"][0]["transaction_date"] == "2024-06-16T00:00:00Z"
    assert page["next_cursor"] and page["prev_cursor"] is None

    second = client.get("/accounting/payments", params={"limit": 2, "cursor": page["next_cursor"]}, headers=H)
    assert second.status_code == 200, second.text
    assert second.json()["data"] == []  # the last deal has no payment row
    assert second.json()["next_cursor"] is None  # offset 2 + 1 deal reaches the total of 3
    # Each call named the connection's company and carried its bearer token.
    for sent in httpx_mock.get_requests():
        assert sent.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"


def test_profit_and_loss_accounts_are_revenue_or_expense(client, httpx_mock) -> None:
    """freee's category hierarchy, from the top (大分類): 損益 says neither; the levels below do."""
    httpx_mock.add_response(url=f"{FREEE}/api/1/account_items?company_id={COMPANY_ID}", json={"account_items": [
        {"id": 1, "name": "売上高", "account_category": "売上高", "categories": ["損益", "営業損益", "売上高"]},
        {"id": 2, "name": "仕入高", "account_category": "売上原価", "categories": ["損益", "営業損益", "売上原価"]},
        {"id": 3, "name": "通信費", "account_category": "販売管理費", "categories": ["損益", "営業損益", "販売管理費"]},
        {"id": 4, "name": "雑収入", "account_category": "営業外収益", "categories": ["損益", "営業外損益", "営業外収益"]},
        {"id": 5, "name": "支払利息", "account_category": "営業外費用", "categories": ["損益", "営業外損益", "営業外費用"]},
        {"id": 6, "name": "普通預金", "account_category": "現金・預金", "categories": ["資産", "流動資産", "現金・預金"]},
        {"id": 7, "name": "資本金", "account_category": "資本金", "categories": ["純資産", "株主資本", "資本金"]},
        {"id": 8, "name": "謎", "account_category": "謎", "categories": ["損益", "謎"]}]})
    response = client.get("/accounting/accounts", headers=H)
    assert response.status_code == 200, response.text
    assert [a["classification"] for a in response.json()["data"]] == [
        "Revenue", "Expense", "Expense", "Revenue", "Expense", "Asset", "Equity", None]


def test_a_payment_is_sent_with_an_account_item_only_where_freee_takes_one(client, httpx_mock) -> None:
    """freee's from_walletable_id is a 口座 id, or an account item id for private_account_item only."""
    body = {"invoice_id": "101", "transaction_date": "2024-06-15T00:00:00Z", "total_amount": 500, "account_id": "160"}
    for kind in ("Bank Account", "Credit Card", "Cash"):
        refused = client.post("/accounting/payments", json={**body, "type": kind}, headers=H)
        assert refused.status_code == 422 and refused.json()["code"] == "invalid_request", refused.text
        assert refused.json()["path"] == "$.type" and refused.json()["errors"][0]["accepted"] == ["Private Account"]
    assert httpx_mock.get_requests() == [], "an account item id is never sent as a 口座 id"

    httpx_mock.add_response(method="POST", url=f"{FREEE}/api/1/deals/101/payments", json={"deal": deal(101, [
        {"id": 7, "date": "2024-06-15", "from_walletable_type": "private_account_item", "from_walletable_id": 160,
         "amount": 500}])})
    made = client.post("/accounting/payments", json={**body, "type": "Private Account"}, headers=H)
    assert made.status_code == 201, made.text
    assert made.json()["account_id"] == "160" and made.json()["type"] == "Private Account"
    sent = json.loads(httpx_mock.get_requests()[0].content)
    assert sent["from_walletable_type"] == "private_account_item" and sent["from_walletable_id"] == 160


def test_a_payments_walletable_is_not_read_as_its_account(client, httpx_mock) -> None:
    httpx_mock.add_response(url=deals_url(0, 50), json={"deals": [deal(1, [payment(11)])], "meta": {"total_count": 1}})
    page = client.get("/accounting/payments", params={"remote_data": "true"}, headers=H).json()
    assert page["data"][0]["account_id"] is None and page["data"][0]["type"] == "Cash"
    assert page["data"][0]["remote_data"]["from_walletable_id"] == 3, "the 口座 stays in remote_data"


NESTED_MAPPING = """\
provider: nested
base_url: https://nested.test
auth: {type: none}
objects:
  payments:
    unify: {id: to_string(id), invoice_id: to_string(invoice)}
    list:
      path: /invoices
      query: {offset: page.offset, limit: page.limit}
      records: "invoices[].merge_each(payments, {invoice: id})[]"
      paging: {style: offset, max_limit: 10, count: meta.count}
"""


@pytest.fixture
def nested(tmp_path) -> Iterator[TestClient]:
    """A provider of payments nested in invoices whose pages say their own size."""
    with in_process(tmp_path, f"- token: {TOKEN}\n  provider: nested\n", {"nested": NESTED_MAPPING}, api_key=API_KEY) as c:
        yield c


def test_paging_count_sets_the_offset_and_the_end(nested, httpx_mock) -> None:
    invoices = [{"id": 1, "payments": [{"id": 10}, {"id": 11}, {"id": 12}]}, {"id": 2}]
    httpx_mock.add_response(url="https://nested.test/invoices?offset=0&limit=2",
                            json={"invoices": invoices, "meta": {"count": 2}})
    httpx_mock.add_response(url="https://nested.test/invoices?offset=2&limit=2",
                            json={"invoices": [{"id": 3, "payments": [{"id": 13}]}], "meta": {"count": 1}})
    first = nested.get("/accounting/payments", params={"limit": 2}, headers=H).json()
    assert [(r["id"], r["invoice_id"]) for r in first["data"]] == [("10", "1"), ("11", "1"), ("12", "1")]
    assert first["next_cursor"]  # two invoices on a page of two: maybe more
    second = nested.get("/accounting/payments", params={"limit": 2, "cursor": first["next_cursor"]}, headers=H).json()
    assert [(r["id"], r["invoice_id"]) for r in second["data"]] == [("13", "3")]
    assert second["next_cursor"] is None  # one invoice on a page of two: the end


@pytest.mark.parametrize("count", [None, "two", True, -1, 1.5])
def test_a_paging_count_that_is_no_count_is_a_502(nested, httpx_mock, count) -> None:
    httpx_mock.add_response(url="https://nested.test/invoices?offset=0&limit=10",
                            json={"invoices": [{"id": 1, "payments": [{"id": 10}]}], "meta": {"count": count}})
    response = nested.get("/accounting/payments", params={"limit": 10}, headers=H)
    assert response.status_code == 502, response.text
    assert response.json()["code"] == "upstream_unmappable"


def test_freee_validation_messages_survive_as_a_422(client, httpx_mock) -> None:
    httpx_mock.add_response(method="POST", url=f"{FREEE}/api/1/partners", status_code=400, json={
        "status_code": 400, "errors": [{"type": "status", "messages": ["不正なリクエストです。"]},
                                       {"type": "validation", "messages": ["取引先名 は既に使用されています。"]}]})
    response = client.post("/accounting/contacts", json={"name": "ABC商店"}, headers=H)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "upstream_rejected" and body["provider"] == "freee"
    assert body["provider_code"] == "validation" and body["provider_status"] == 400
    assert body["provider_message"] == "不正なリクエストです。 取引先名 は既に使用されています。"
    sent = json.loads(httpx_mock.get_requests()[0].content)
    assert sent == {"company_id": COMPANY_ID, "name": "ABC商店"}


def test_freee_not_found_and_auth_errors(client, httpx_mock) -> None:
    httpx_mock.add_response(url=f"{FREEE}/api/1/deals/9?company_id={COMPANY_ID}", status_code=404, json={
        "status_code": 404, "errors": [{"type": "status", "messages": ["リソースが見つかりません。"]}]})
    missing = client.get("/accounting/invoices/9", headers=H)
    assert missing.status_code == 404 and missing.json()["provider_message"] == "リソースが見つかりません。"

    # A 401: the token is refreshed at freee's token endpoint, the client in the form
    # body, and the call sent once more; refused again, it is the connection's to fix.
    for _ in range(2):
        httpx_mock.add_response(url=f"{FREEE}/api/1/partners/9?company_id={COMPANY_ID}", status_code=401,
                                json={"message": "アクセストークンが無効です"})
    httpx_mock.add_response(method="POST", url="https://accounts.secure.freee.co.jp/public_api/token",
                            json={"access_token": "fresh", "token_type": "bearer", "expires_in": 21600,
                                  "refresh_token": "rotated"})
    denied = client.get("/accounting/contacts/9", headers=H)
    assert denied.status_code == 502 and denied.json()["code"] == "upstream_auth_failed"
    assert denied.json()["provider_message"] == "アクセストークンが無効です"
    token_request, replay = httpx_mock.get_requests()[-2:]
    assert dict(parse_qsl(token_request.content.decode())) == {
        "grant_type": "refresh_token", "refresh_token": "freee-test-refresh",
        "client_id": "freee-test-client", "client_secret": "freee-test-secret"}
    assert "authorization" not in token_request.headers
    assert replay.headers["authorization"] == "Bearer fresh"


def test_ids_freee_cannot_have_are_404_without_a_call(client) -> None:
    for path in ("/accounting/contacts/not-a-number", "/accounting/trackingcategories/7",
                 "/accounting/trackingcategories/segment-1", "/accounting/invoices/801f9ede-c698"):
        response = client.get(path, headers=H)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["code"] == "not_found"


def test_what_freee_cannot_serve_is_501(client) -> None:
    for method, path in [("GET", "/accounting/payments/1"), ("POST", "/accounting/journalentries"),
                         ("POST", "/accounting/attachments"), ("GET", "/accounting/addresses"),
                         ("GET", "/accounting/creditnotes"), ("POST", "/accounting/purchaseorders")]:
        response = client.request(method, path, headers=H, json={} if method == "POST" else None)
        assert response.status_code == 501, (method, path, response.text)
        assert response.json()["code"] == "operation_not_mapped"


def test_an_invoice_of_an_unknown_type_is_not_guessed(client) -> None:
    response = client.post("/accounting/invoices", json={"type": "Credit Memo", "issue_date": "2024-06-15T00:00:00Z",
                                                         "total_amount": 100}, headers=H)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_request" and response.json()["path"] == "$.type"
    assert response.json()["errors"][0]["accepted"] == ["Sales", "Purchase"]


# -- (3) the contract: gateway + Prism on freee's spec --------------------------------


@pytest.fixture(scope="module")
def prism(start_prism, shared: Path):
    return start_prism(shared / "reference" / "freee-accounting-openapi.json")


@pytest.fixture(scope="module")
def gateway(prism, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("freee")
    server = clean_server(["serve"], {
        "GATEWAY_API_KEYS": API_KEY,
        "GATEWAY_CONNECTIONS": str(connections_file(directory, prism.url)),
        "FREEE_ACCESS_TOKEN": ACCESS_TOKEN,
    })
    yield server
    log = server.stop()
    assert "Traceback" not in log and "unexpected error" not in log, log
    assert ACCESS_TOKEN not in log, "credentials never reach the log"


@pytest.fixture(scope="module")
def http(gateway: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, headers=H, timeout=30) as c:
        yield c


OUTPUTS = {
    "contacts": models.ContactOutput, "accounts": models.AccountOutput, "invoices": models.InvoiceOutput,
    "payments": models.PaymentOutput, "journalentries": models.JournalEntryOutput, "items": models.ItemOutput,
    "taxrates": models.TaxRateOutput, "trackingcategories": models.TrackingCategoryOutput,
    "companyinfos": models.CompanyInfoOutput, "expenses": models.ExpenseOutput,
    "transactions": models.TransactionOutput, "attachments": models.AttachmentOutput,
    "balancesheets": models.BalanceSheetOutput, "incomestatements": models.IncomeStatementOutput,
}


def unified(obj: str, record: dict) -> dict:
    """A unified record that decodes as Panora's model of `obj`."""
    msgspec.convert(record, OUTPUTS[obj])
    return record




def create(http: httpx.Client, obj: str, body: dict) -> tuple[dict, list[str]]:
    response = http.post(f"/accounting/{obj}", json=body)
    created = unified(obj, answer(response, 201))
    ignored = response.headers.get("x-gateway-ignored-fields", "")
    return created, [f for f in ignored.split(", ") if f]


def list_pages(http: httpx.Client, obj: str, limit: int, pages: int = 2) -> list[dict]:
    """Up to `pages` pages of `obj`, following next_cursor."""
    out, cursor = [], None
    for _ in range(pages):
        page = answer(http.get(f"/accounting/{obj}", params={"limit": limit, **({"cursor": cursor} if cursor else {})}),
                      200)
        assert set(page) == {"prev_cursor", "next_cursor", "data"}
        for record in page["data"]:
            unified(obj, record)
        out.append(page)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    return out


def retrieve(http: httpx.Client, obj: str, record_id: str) -> dict:
    return unified(obj, answer(http.get(f"/accounting/{obj}/{record_id}"), 200))


def seed_output(shared: Path, prefix: str) -> dict:
    """The unified object a seed page shows: the first JSON object after its SDK snippet."""
    text = seed(shared, prefix)
    start = text.index("{", text.index("run();"))
    found, _ = json.JSONDecoder().raw_decode(text, start)
    return found


def seed_input(shared: Path, prefix: str, schema: str) -> dict:
    """The seed's fields that the contract's input schema defines."""
    fields = openapi(shared)["components"]["schemas"][schema]["properties"]
    return {k: v for k, v in seed_output(shared, prefix).items() if k in fields}


# freee's examples, as Prism answers them, unified.
PARTNER = {"id": "1", "remote_id": "1", "name": "ABC商店", "email_address": "contact@example.com",
           "tax_number": "T1000000000001", "status": "Active", "company_info_id": "1",
           "remote_updated_at": "2024-12-17T00:00:00Z", "modified_at": "2024-12-17T00:00:00Z",
           "is_supplier": None, "is_customer": None, "currency": None}
ACCOUNT_ITEM = {"id": "1", "remote_id": "1", "name": "ソフトウェア", "classification": "Asset", "type": "現金・預金",
                "status": "Active", "account_number": "123", "currency": "JPY", "company_info_id": "1"}
DEAL = {"id": "101", "remote_id": "101", "type": "Sales", "number": "123-456", "issue_date": "2019-12-17T00:00:00Z",
        "due_date": "2019-12-17T00:00:00Z", "currency": "JPY", "status": "Open", "total_tax_amount": 250,
        "total_amount": 5250, "balance": 0, "contact_id": "201",
        "line_items": [{"name": "備考", "value": 5250, "type": None, "parent_item": None, "remote_id": "11",
                        "remote_generated_at": None, "company_info_id": None}]}
DEAL_PAYMENT = {"id": "202", "remote_id": "202", "invoice_id": "101", "contact_id": "201",
                "transaction_date": "2019-12-17T00:00:00Z", "total_amount": 5250, "account_id": None,
                "type": "Bank Account", "currency": "JPY", "company_info_id": "1"}


def subset(actual: dict, expected: dict) -> None:
    assert {k: actual.get(k) for k in expected} == expected


def test_contract_contacts(http: httpx.Client, shared: Path) -> None:
    body = contact_input(shared)  # the seed contact, as a Panora user sends it
    # Its tax number is no Japanese registration number (T + 13 digits): freee's
    # spec refuses it, and the refusal reaches the caller.
    refused = http.post("/accounting/contacts", json=body)
    assert refused.status_code == 400 and refused.json()["provider"] == "freee", refused.text
    assert refused.json()["provider_message"]
    body["tax_number"] = "T1000000000001"
    created, ignored = create(http, "contacts", body)
    subset(created, PARTNER)
    # freee partners have no supplier/customer flags, status, currency or company override.
    assert set(ignored) == {"$.is_supplier", "$.is_customer", "$.status", "$.currency", "$.remote_updated_at",
                            "$.company_info_id", "$.field_mappings"}, ignored

    pages = list_pages(http, "contacts", limit=1)
    assert len(pages) == 2 and pages[1]["prev_cursor"]
    for page in pages:
        assert [r["id"] for r in page["data"]] == ["1"]
        subset(page["data"][0], PARTNER)
    assert retrieve(http, "contacts", "1") == pages[0]["data"][0]


def test_contract_accounts(http: httpx.Client, shared: Path) -> None:
    body = seed_input(shared, "001", "UnifiedAccountingAccountInput")
    assert body["name"] == "Cash" and body["account_number"] == "1000"
    # freee's required fields the unified account lacks.
    body["field_mappings"] = {"tax_code": 34, "group_name": "その他預金", "account_category_id": 1,
                              "corresponding_income_id": 1, "corresponding_expense_id": 1}
    created, ignored = create(http, "accounts", body)
    subset(created, ACCOUNT_ITEM)
    assert "$.name" not in ignored and "$.account_number" not in ignored and "$.description" in ignored

    pages = list_pages(http, "accounts", limit=1)
    assert len(pages) == 1 and pages[0]["next_cursor"] is None  # freee answers every account item at once
    subset(pages[0]["data"][0], {**ACCOUNT_ITEM, "account_number": "123", "modified_at": "2020-06-15T00:00:00Z"})
    subset(retrieve(http, "accounts", "1"), ACCOUNT_ITEM)


def test_contract_invoices(http: httpx.Client, shared: Path) -> None:
    body = seed_input(shared, "003", "UnifiedAccountingInvoiceInput")
    assert body["type"] == "Sales" and body["line_items"]
    # As the seed has it, in dollars with a Panora UUID for a partner: freee
    # keeps yen only and numbers its partners, so one 422 names both, before any call.
    refused = answer(http.post("/accounting/invoices", json=body), 422)
    assert refused["code"] == "invalid_request" and refused["provider"] == "freee"
    assert [e["path"] for e in refused["errors"]] == ["$.currency", "$.contact_id"], refused
    assert refused["errors"][0]["accepted"] == ["JPY"]
    body.update(contact_id="201", currency="JPY")  # a freee partner; yen
    created, ignored = create(http, "invoices", body)
    subset(created, DEAL)
    assert "$.line_items[0].type" in ignored and "$.currency" in ignored
    # freee's deal amount is the sum of its details: next to line items, the total and memo are not sent.
    assert "$.total_amount" in ignored and "$.memo" in ignored
    assert "$.number" not in ignored and "$.line_items[0].name" not in ignored

    bill = {"type": "Purchase", "issue_date": "2024-06-15T12:00:00Z", "due_date": "2024-07-15T12:00:00Z",
            "contact_id": "201", "total_amount": 11000, "memo": "Office supplies"}
    created_bill, _ = create(http, "invoices", bill)
    subset(created_bill, DEAL)  # Prism answers the spec's example deal either way

    pages = list_pages(http, "invoices", limit=1)
    assert len(pages) == 2  # meta.total_count says 100
    for page in pages:
        assert [r["id"] for r in page["data"]] == ["101"]
        subset(page["data"][0], DEAL)
    subset(retrieve(http, "invoices", "101"), DEAL)


def test_contract_payments(http: httpx.Client, shared: Path) -> None:
    body = seed_input(shared, "002", "UnifiedAccountingPaymentInput")
    assert body["type"] == "Credit Card"
    body.update(invoice_id="101", account_id="103", contact_id="201")  # freee ids for the seed's UUIDs
    assert body["currency"] == "USD" and body["total_amount"] == 10000
    # Not sent as ¥10,000, and a card payment's account_id names an account item, not the 口座 freee wants.
    refused = answer(http.post("/accounting/payments", json=body), 422)
    assert {e["path"]: e.get("accepted") for e in refused["errors"]} == {
        "$.type": ["Private Account"], "$.currency": ["JPY"]}
    body.update(currency="JPY", type="Private Account")  # freee's private_account_item takes an account item
    created, ignored = create(http, "payments", body)
    subset(created, DEAL_PAYMENT)
    assert "$.contact_id" in ignored and "$.currency" in ignored  # a payment row has no partner of its own

    pages = list_pages(http, "payments", limit=1)
    assert len(pages) == 2
    for page in pages:
        assert [p["id"] for p in page["data"]] == ["202"]
        subset(page["data"][0], DEAL_PAYMENT)
    # freee has no endpoint for one payment row.
    assert answer(http.get("/accounting/payments/202"), 501)["code"] == "operation_not_mapped"


def test_contract_expenses(http: httpx.Client) -> None:
    body = {"transaction_date": "2019-12-17T00:00:00Z", "total_amount": 30000, "memo": "大阪出張",
            "currency": "JPY", "tracking_categories": ["tag-202", "section-101"],
            "line_items": [{"name": "交通費：新幹線往復（東京〜大阪）", "value": 30000}]}
    expected = {"id": "1", "remote_id": "1", "transaction_date": "2019-12-17T00:00:00Z", "total_amount": 30000,
                "memo": "大阪出張", "currency": "JPY", "company_info_id": "1",
                "tracking_categories": ["tag-202", "section-101"]}
    created, ignored = create(http, "expenses", body)
    subset(created, expected)
    # The line is the amount (the total is not sent); the memo is the title.
    assert "$.total_amount" in ignored and "$.memo" not in ignored and "$.tracking_categories" not in ignored
    assert [(li["name"], li["value"]) for li in created["line_items"]] == [("交通費：新幹線往復（東京〜大阪）", 30000)]
    pages = list_pages(http, "expenses", limit=1)
    assert len(pages) == 2
    subset(pages[1]["data"][0], expected)
    subset(retrieve(http, "expenses", "1"), expected)


def test_contract_expense_of_the_contract_example_reports_what_freee_has_no_place_for(http: httpx.Client,
                                                                                   shared: Path) -> None:
    body = seed_input_example(shared, "UnifiedAccountingExpenseInput")
    body["tracking_categories"] = ["tag-202", "section-101"]  # freee's kinds; the example's UUID is none
    assert body["currency"] == "USD"
    body["currency"] = "JPY"  # freee keeps yen only (and refuses dollars); its expense has no currency field either
    body.update(sub_total=None, unknown=1)  # a null carries nothing to lose, and the scan goes on
    body["line_items"] = [{"name": "交通費", "type": None, "value": 10000, "foo": "bar"}]
    _, ignored = create(http, "expenses", body)
    assert set(ignored) == {"$.unknown", "$.line_items[0].foo", "$.account_id", "$.contact_id",
                            "$.total_tax_amount", "$.currency", "$.exchange_rate", "$.company_info_id",
                            "$.field_mappings", "$.total_amount"}, ignored
    assert len(ignored) == len(set(ignored))


def seed_input_example(shared: Path, schema: str) -> dict:
    """The contract's example value of each field of an input schema."""
    fields = openapi(shared)["components"]["schemas"][schema]["properties"]
    return {name: field["example"] for name, field in fields.items() if field.get("example") is not None}


@pytest.mark.parametrize("obj, record_id, expected, paged", [
    ("journalentries", "1", {"id": "1", "transaction_date": "2019-12-17T00:00:00Z", "journal_number": "2CX05",
                             "currency": "JPY", "id_acc_company_info": "1"}, True),
    ("items", "101", {"id": "101", "name": "タクシー代", "status": "Active", "company_info_id": "1",
                      "remote_updated_at": "2019-12-17T00:00:00Z"}, True),
    ("transactions", "1", {"id": "1", "transaction_type": "Deposit", "transaction_date": "2019-12-17T00:00:00Z",
                           "total_amount": "5000", "currency": "JPY", "account_id": "1"}, True),
    ("attachments", "1", {"id": "1", "file_name": "タクシー利用", "created_at": "2019-12-17T09:30:24Z"}, True),
    ("companyinfos", "1", {"id": "1", "name": "freee事務所", "legal_name": "freee事務所", "tax_number": "1234567890123",
                           "fiscal_year_end_month": 12, "fiscal_year_end_day": 17, "currency": "JPY"}, False),
    ("balancesheets", "2019", {"id": "2019", "name": "Balance Sheet 2019", "currency": "JPY", "company_info_id": "1",
                               "date": "2019-12-31T00:00:00Z", "remote_generated_at": "2019-12-17T04:47:24Z"}, False),
    ("incomestatements", "2019", {"id": "2019", "name": "Income Statement 2019", "currency": "JPY",
                                  "start_period": "2019-01-01T00:00:00Z", "end_period": "2019-12-31T00:00:00Z"}, False),
])
def test_contract_read_only_objects(http: httpx.Client, obj: str, record_id: str, expected: dict, paged: bool) -> None:
    pages = list_pages(http, obj, limit=1)
    assert len(pages) == (2 if paged else 1)
    for page in pages:
        assert len(page["data"]) == 1
        subset(page["data"][0], expected)
    subset(retrieve(http, obj, record_id), expected)


def test_contract_journal_lines_and_balance_sheet_rows(http: httpx.Client) -> None:
    journal = retrieve(http, "journalentries", "1")
    assert [(li["name"], li["value"], li["type"], li["remote_id"]) for li in journal["line_items"]] == [
        ("備考", 108000, "Credit", "1")]
    sheet = retrieve(http, "balancesheets", "2019")
    assert [(li["name"], li["value"], li["type"], li["remote_id"]) for li in sheet["line_items"]] == [
        ("現金", -25920, "販売管理費", "192")]


def test_contract_tax_rates(http: httpx.Client) -> None:
    listed = list_pages(http, "taxrates", limit=10)
    assert len(listed) == 1 and listed[0]["next_cursor"] is None  # every tax code at once
    subset(listed[0]["data"][0], {"id": "21", "remote_id": "21", "description": "課税売上", "total_tax_ratge": 500,
                                  "effective_tax_rate": 500, "company_id": "1"})
    # The single-code lookup knows the name, not the rate.
    subset(retrieve(http, "taxrates", "21"), {"id": "21", "description": "課税売上", "total_tax_ratge": None})


def test_contract_tracking_categories(http: httpx.Client) -> None:
    # Tags, then sections, behind one cursor.
    pages = list_pages(http, "trackingcategories", limit=50, pages=3)
    assert [[r["id"] for r in p["data"]] for p in pages] == [["tag-1"], ["section-1"]]
    subset(pages[0]["data"][0], {"remote_id": "1", "name": "メモタグ", "category_type": "tag"})
    subset(pages[1]["data"][0], {"remote_id": "1", "name": "開発部門", "category_type": "section", "status": "Active",
                                 "parent_category": "section-1"})
    assert retrieve(http, "trackingcategories", "tag-1") == pages[0]["data"][0]
    assert retrieve(http, "trackingcategories", "section-1") == pages[1]["data"][0]


def test_contract_remote_data_is_the_freee_record(http: httpx.Client) -> None:
    record = answer(http.get("/accounting/contacts/1", params={"remote_data": "true"}), 200)
    assert record["remote_data"]["id"] == 1 and record["remote_data"]["name"] == "ABC商店"
    assert record["remote_data"]["partner_bank_account_attributes"]["bank_name"] == "freee銀行"


# -- (4) the Panora SDK -----------------------------------------------------------------

# Written as a Panora user writes one; only server_url points it at the gateway.
# It runs in the SDK's own virtualenv (see tests/test_sdk.py), reads a JSON job on
# stdin and prints a JSON report; paging passes cursor= (the SDK's pager never ends).
SDK_CLIENT = """\
import json, sys
from panora_sdk import Panora, models

job = json.load(sys.stdin)
token = job["token"]
contacts = Panora(api_key=job["api_key"], server_url=job["server_url"]).accounting.contacts
report = {"created": [contacts.create(x_connection_token=token, unified_accounting_contact_input=c,
                                      remote_data=False).model_dump(mode="json") for c in job["contacts"]]}
pages, cursor = [], None
for _ in range(job["max_pages"]):
    page = contacts.list(x_connection_token=token, limit=job["limit"], cursor=cursor).result
    pages.append(page.model_dump(mode="json"))
    cursor = page.next_cursor
    if cursor is None:
        break
report["pages"] = pages
report["retrieved"] = [contacts.retrieve(x_connection_token=token, id=c["id"]).model_dump(mode="json")
                       for c in report["created"]]
try:
    contacts.retrieve(x_connection_token=token, id="801f9ede-c698-4e66-a7fc-48d19eebaa4f")
    report["unknown_id"] = None
except models.SDKError as exc:
    report["unknown_id"] = {"status_code": exc.status_code, "body": json.loads(exc.body)}
json.dump(report, sys.stdout)
"""


def test_sdk_contacts_create_list_retrieve(sdk_python: Path, gateway: Server, shared: Path,
                                           tmp_path: Path) -> None:
    seed_contact = {**contact_input(shared), "tax_number": "1234567890123"}  # freee's format, without the T
    wanted = [seed_contact, {"name": "SDK Contact", "email_address": "sdk@example.com",
                             "tax_number": "T1234567890123"}]
    client = tmp_path / "freee_sdk_client.py"
    client.write_text(SDK_CLIENT, encoding="utf-8")
    job = {"server_url": gateway.url, "api_key": API_KEY, "token": TOKEN, "contacts": wanted, "limit": 1,
           "max_pages": 2}
    report = run_sdk_client(sdk_python, client, job, tmp_path)

    # Prism answers freee's example partner to every create.
    assert len(report["created"]) == 2
    for created in report["created"]:
        subset(created, PARTNER)
        unified("contacts", created)
    pages = report["pages"]
    assert len(pages) == 2 and pages[0]["prev_cursor"] is None and pages[1]["prev_cursor"]
    assert all([r["id"] for r in page["data"]] == ["1"] for page in pages)
    assert report["retrieved"] == report["created"]
    # A Panora UUID is no freee id: 404 without asking freee.
    assert report["unknown_id"]["status_code"] == 404
    assert report["unknown_id"]["body"]["code"] == "not_found"
