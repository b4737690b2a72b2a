"""What a request cannot give the provider is refused before any call, naming
the unified field or the context key that would supply it; a mapping that fails
on a request is the gateway's 500, naming the mapping, never the caller's 4xx.

In process: a small mapping of its own, the provider mocked by pytest-httpx
(which fails the test on any call it was not told to expect), so "before any
call" is checked too. Then amounts in minor units through the bundled Xero,
QuickBooks and freee mappings: one unified body, the same sum for each.
"""

import json
from collections.abc import Iterator

import httpx
import pytest
from conftest import in_process
from starlette.testclient import TestClient

API_KEY = "checks-key"
TOKEN = "checks-connection"
H = {"x-api-key": API_KEY, "x-connection-token": TOKEN}
BASE = "https://checked.test"

MAPPING = """\
provider: checked
base_url: https://checked.test
auth: {type: none}
context:
  currency: {description: the company's currency}
  tax_code: {type: integer, description: the tax code of every line}
  default_partner: {description: the partner of a deal that names none}
values:
  kind: {Sales: income, Purchase: expense}
  state: {Open: open, Paid: settled}
  loose: {Draft: draft}
passthrough: [loose]
objects:
  invoices:
    unify: {id: to_string(id)}
    create:
      method: POST
      path: /deals
      body:
        type: to_remote(body.type, 'kind')
        status: to_remote(body.status, 'state')
        stage: to_remote(body.memo, 'loose')
        partner: integer(body.contact_id || context.default_partner)
        amount: from_minor(body.total_amount, body.currency || context.currency)
        lines: "body.line_items[].{amount: value, tax: context('tax_code'), description: name}"
        tags: "map(&integer(split(@, '-')[1]), body.tracking_categories || `[]`)"
      record: deal
      checks:
        body.currency: {enum: [JPY, USD], why: the ledger keeps yen and dollars}
        body.line_items[].name: {required: true, why: every line is described}
        context.tax_code: {required: body.line_items, why: each line needs a tax code}
        body.contact_id: {required: true, or: [context.default_partner]}
        body.tracking_categories[]: {pattern: "tag-[0-9]+"}
  contacts:
    unify: {id: to_string(id)}
    create:
      method: POST
      path: /partners
      body: {name: "split(body.is_supplier, '-')"}   # a mapping bug: is_supplier is a boolean
      record: partner
  payments:
    unify: {id: to_string(id)}
    create:
      method: POST
      path: /deals/{body.invoice_id}/payments
      body: {amount: body.total_amount}
      record: payment
"""


def client_for(tmp_path, context: dict) -> TestClient:
    connections = json.dumps([{"token": TOKEN, "provider": "checked", "context": context}])
    return in_process(tmp_path, connections, {"checked": MAPPING}, api_key=API_KEY)


@pytest.fixture
def client(tmp_path) -> Iterator[TestClient]:
    with client_for(tmp_path, {"currency": "JPY", "tax_code": 21}) as c:
        yield c


@pytest.fixture
def bare(tmp_path) -> Iterator[TestClient]:
    """The same mapping on a connection whose context sets nothing."""
    with client_for(tmp_path, {}) as c:
        yield c


def refused(response: httpx.Response) -> dict:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_request" and body["provider"] == "checked", body
    return body


def test_a_request_that_satisfies_the_checks_is_sent(client, httpx_mock) -> None:
    httpx_mock.add_response(method="POST", url=f"{BASE}/deals", json={"deal": {"id": 1}})
    body = {"type": "Sales", "status": "Paid", "memo": "anything", "contact_id": "201", "total_amount": 5000,
            "line_items": [{"name": "a", "value": 10}], "tracking_categories": ["tag-7"]}
    response = client.post("/accounting/invoices", json=body, headers=H)
    assert response.status_code == 201, response.text
    sent = json.loads(httpx_mock.get_requests()[0].content)
    # The connection's currency is the yen's: 5000 minor units are 5000 yen. A
    # passthrough map lets a value it does not hold through as it is.
    assert sent == {"type": "income", "status": "settled", "stage": "anything", "partner": 201, "amount": 5000,
                    "lines": [{"amount": 10, "tax": 21, "description": "a"}], "tags": [7]}


def test_every_failed_check_is_named_in_one_422_before_any_call(bare) -> None:
    body = {"currency": "EUR", "line_items": [{"name": "ok", "value": 1}, {"value": 2}],
            "tracking_categories": ["tag-1", "section-2"]}
    out = refused(bare.post("/accounting/invoices", json=body, headers=H))
    errors = {(e.get("path"), e.get("context_key")): e for e in out["errors"]}
    assert set(errors) == {("$.currency", None), ("$.line_items[1].name", None), (None, "tax_code"),
                           ("$.contact_id", "default_partner"), ("$.tracking_categories[1]", None)}, out
    assert errors[("$.currency", None)]["accepted"] == ["JPY", "USD"]
    assert "the ledger keeps yen and dollars" in errors[("$.currency", None)]["message"]
    assert "each line needs a tax code" in errors[(None, "tax_code")]["message"]
    assert errors[("$.contact_id", "default_partner")]["message"] == (
        "$.contact_id or the connection's context key default_partner must be set")
    assert out["path"] == "$.currency"  # the first, for clients reading one
    for error in out["errors"]:
        assert error["message"] in out["message"]


def test_a_conditional_requirement_holds_only_when_its_expression_does(bare, httpx_mock) -> None:
    httpx_mock.add_response(method="POST", url=f"{BASE}/deals", json={"deal": {"id": 2}})
    # No lines: no tax code needed; the partner comes from the body; no amount, no currency needed.
    response = bare.post("/accounting/invoices", json={"contact_id": "5"}, headers=H)
    assert response.status_code == 201, response.text
    assert json.loads(httpx_mock.get_requests()[0].content) == {"partner": 5, "tags": []}


@pytest.mark.parametrize("body, path, accepted", [
    ({"contact_id": "801f9ede-c698-4e66-a7fc-48d19eebaa4f"}, "$.contact_id", None),  # to_number's silent null, no more
    ({"contact_id": "1", "type": "Refund"}, "$.type", ["Sales", "Purchase"]),  # a value map's unknown value
    ({"contact_id": "1", "tracking_categories": ["tag-x1"]}, "$.tracking_categories[0]", None),
    ({"contact_id": "1", "total_amount": 100, "currency": "USD", "line_items": [{"name": "3"}]}, None, None),
])
def test_a_value_the_mapping_cannot_convert_is_a_422_naming_its_field(client, httpx_mock, body, path, accepted) -> None:
    if path is None:  # the control: it converts, and is sent
        httpx_mock.add_response(method="POST", url=f"{BASE}/deals", json={"deal": {"id": 3}})
        assert client.post("/accounting/invoices", json=body, headers=H).status_code == 201
        assert json.loads(httpx_mock.get_requests()[0].content)["amount"] == 1  # 100 US cents
        return
    out = refused(client.post("/accounting/invoices", json=body, headers=H))
    assert out["path"] == path and out["errors"][0]["path"] == path, out
    assert out["errors"][0].get("accepted") == accepted
    assert path in out["message"]


def test_a_currency_without_minor_units_is_refused_not_guessed(client) -> None:
    body = {"contact_id": "1", "total_amount": 100, "currency": "XAU"}
    out = refused(client.post("/accounting/invoices", json=body, headers=H))
    # The check names the accepted codes first; without it the conversion would refuse XAU itself.
    assert out["path"] == "$.currency" and out["errors"][0]["accepted"] == ["JPY", "USD"]


def test_a_mapping_that_fails_on_a_request_is_a_500_naming_the_mapping(client) -> None:
    response = client.post("/accounting/contacts", json={"name": "A", "is_supplier": True}, headers=H)
    assert response.status_code == 500, response.text
    out = response.json()
    assert out["code"] == "mapping_error" and out["mapping"] == "checked.yaml: $.objects.contacts.create.body"
    assert "checked.yaml" in out["message"] and "split" in out["message"]


def test_a_path_placeholder_without_a_value_names_the_field_to_set(client) -> None:
    response = client.post("/accounting/payments", json={"total_amount": 5}, headers=H)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "untranslatable" and "set $.invoice_id" in response.json()["message"]


# -- paging.more: the provider's own word on whether pages follow ---------------------------

PAGED = """\
provider: paged
base_url: https://paged.test
auth: {type: none}
objects:
  contacts:
    unify: {id: to_string(id)}
    list:
      path: /contacts
      query: {page: page.number, size: page.limit}
      records: items
      paging: {style: page, max_limit: 2, more: has_more}
"""


@pytest.fixture
def paged(tmp_path) -> Iterator[TestClient]:
    with in_process(tmp_path, f"- token: {TOKEN}\n  provider: paged\n", {"paged": PAGED}, api_key=API_KEY) as c:
        yield c


def test_a_full_last_page_that_says_so_costs_no_further_call(paged, httpx_mock) -> None:
    httpx_mock.add_response(url="https://paged.test/contacts?page=1&size=2",
                            json={"items": [{"id": 1}, {"id": 2}], "has_more": True})
    httpx_mock.add_response(url="https://paged.test/contacts?page=2&size=2",
                            json={"items": [{"id": 3}, {"id": 4}], "has_more": False})
    first = paged.get("/accounting/contacts", params={"limit": 2}, headers=H).json()
    assert [r["id"] for r in first["data"]] == ["1", "2"] and first["next_cursor"]
    second = paged.get("/accounting/contacts", params={"limit": 2, "cursor": first["next_cursor"]}, headers=H).json()
    assert [r["id"] for r in second["data"]] == ["3", "4"]
    assert second["next_cursor"] is None  # full, but the provider said it was the last
    assert len(httpx_mock.get_requests()) == 2


def test_without_the_flag_a_full_page_may_have_more(paged, httpx_mock) -> None:
    httpx_mock.add_response(url="https://paged.test/contacts?page=1&size=2", json={"items": [{"id": 1}, {"id": 2}]})
    httpx_mock.add_response(url="https://paged.test/contacts?page=1&size=2",
                            json={"items": [{"id": 1}, {"id": 2}], "has_more": None})
    httpx_mock.add_response(url="https://paged.test/contacts?page=1&size=2", json={"items": [{"id": 1}]})
    for expected in (True, True, False):
        page = paged.get("/accounting/contacts", params={"limit": 2}, headers=H).json()
        assert bool(page["next_cursor"]) is expected


# -- one unified body, the same sum in every provider ------------------------------------------

REALM = "9341452"
PROVIDERS = """\
- token: xero
  provider: xero
  credentials: {client_id: c, client_secret: s, refresh_token: r, access_token: a, expires_at: "2099-01-01T00:00:00Z"}
  context: {tenant_id: t1}
- token: quickbooks
  provider: quickbooks
  credentials: {client_id: c, client_secret: s, refresh_token: r, access_token: a, expires_at: "2099-01-01T00:00:00Z"}
  context: {realm_id: "9341452"}
- token: freee
  provider: freee
  credentials: {client_id: c, client_secret: s, refresh_token: r, access_token: a, expires_at: "2099-01-01T00:00:00Z"}
  context: {company_id: 1}
"""

# Where each provider takes a payment, what it answers, and where the amount sits in what it was sent.
PAYMENT_CALLS = {
    "xero": ("PUT", "https://api.xero.com/api.xro/2.0/Payments?summarizeErrors=true",
             lambda amount, currency: {"Payments": [{"PaymentID": "p1", "Amount": amount,
                                                     "Invoice": {"InvoiceID": "101", "CurrencyCode": currency}}]},
             lambda sent: sent["Payments"][0]["Amount"]),
    "quickbooks": ("POST", f"https://quickbooks.api.intuit.com/v3/company/{REALM}/payment?minorversion=75",
                   lambda amount, currency: {"Payment": {"Id": "1", "TotalAmt": amount, "CurrencyRef": {"value": currency}}},
                   lambda sent: sent["TotalAmt"]),
    "freee": ("POST", "https://api.freee.co.jp/api/1/deals/101/payments",
              lambda amount, currency: {"deal": {"id": 101, "payments": [{"id": 1, "amount": amount}]}},
              lambda sent: sent["amount"]),
}
PAYMENT = {"invoice_id": "101", "account_id": "103", "contact_id": "1", "transaction_date": "2024-06-15T00:00:00Z",
           "type": "Bank Account"}


@pytest.fixture
def providers(tmp_path) -> Iterator[TestClient]:
    with in_process(tmp_path, PROVIDERS, api_key=API_KEY) as c:
        yield c


@pytest.mark.parametrize("provider", list(PAYMENT_CALLS))
@pytest.mark.parametrize("total_amount, currency, units", [
    (5000, "JPY", 5000),  # ¥5,000: the yen has no minor unit
    (500000, "USD", 5000),  # $5,000.00
    (5000, "KWD", 5),  # KWD 5.000
])
def test_one_unified_payment_is_the_same_sum_in_every_provider(providers, httpx_mock, provider, total_amount,
                                                                currency, units) -> None:
    method, url, answer, amount = PAYMENT_CALLS[provider]
    headers = {"x-api-key": API_KEY, "x-connection-token": provider}
    body = {**PAYMENT, "total_amount": total_amount, "currency": currency}
    if provider == "freee":
        body["type"] = "Private Account"  # the only freee wallet an account id names
    if provider == "freee" and currency != "JPY":
        response = providers.post("/accounting/payments", json=body, headers=headers)
        assert response.status_code == 422 and response.json()["path"] == "$.currency", response.text
        return  # freee keeps yen only: refused, never sent as yen
    httpx_mock.add_response(method=method, url=url, json=answer(units, currency))
    response = providers.post("/accounting/payments", json=body, headers=headers)
    assert response.status_code == 201, response.text
    assert amount(json.loads(httpx_mock.get_requests()[0].content)) == units
    assert response.json()["total_amount"] == total_amount  # and back, in the same minor units


@pytest.mark.parametrize("provider", ["xero", "quickbooks"])
def test_an_amount_whose_currency_nobody_names_is_refused_naming_the_field_and_the_context_key(providers, provider):
    response = providers.post("/accounting/payments", json={**PAYMENT, "total_amount": 5000},
                              headers={"x-api-key": API_KEY, "x-connection-token": provider})
    assert response.status_code == 422, response.text
    assert (response.json()["path"], response.json()["context_key"]) == ("$.currency", "currency")


@pytest.mark.parametrize("provider", ["xero", "quickbooks"])
def test_a_context_value_that_cannot_be_converted_is_refused_naming_the_context_key(tmp_path, httpx_mock, provider):
    """The operator's mistake, not the mapping's: a 422 saying which context key to mend, not a 500."""
    connections = PROVIDERS.replace('tenant_id: t1}', 'tenant_id: t1, currency: usd}').replace(
        'realm_id: "9341452"}', 'realm_id: "9341452", currency: usd}')
    with in_process(tmp_path, connections, api_key=API_KEY) as client:
        response = client.post("/accounting/payments", json={**PAYMENT, "total_amount": 5000},
                               headers={"x-api-key": API_KEY, "x-connection-token": provider})
    assert response.status_code == 422, response.text
    assert response.json()["context_key"] == "currency" and response.json().get("path") is None
    assert "'usd' is not an ISO 4217 currency" in response.json()["message"]
    assert httpx_mock.get_requests() == []


@pytest.mark.parametrize("provider", ["xero", "quickbooks"])
@pytest.mark.parametrize("path", ["/accounting/items", "/accounting/items/1"])
def test_item_prices_without_the_base_currency_are_refused_naming_the_context_key(providers, httpx_mock, provider,
                                                                                 path):
    """Item prices name no currency: without the connection's, their minor units are unknown."""
    response = providers.get(path, headers={"x-api-key": API_KEY, "x-connection-token": provider})
    assert response.status_code == 422, response.text
    assert response.json()["context_key"] == "currency" and response.json()["code"] == "invalid_request"
    assert httpx_mock.get_requests() == []


# -- freee's account items: what the unified account lacks, from field_mappings or the context ---------


def test_a_freee_account_without_its_required_fields_names_each_field_and_context_key(providers) -> None:
    # Panora's SDK empties field_mappings on the way out: what its user sends.
    response = providers.post("/accounting/accounts", json={"name": "新しい勘定科目", "field_mappings": {}},
                              headers={"x-api-key": API_KEY, "x-connection-token": "freee"})
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert [(e["path"], e["context_key"]) for e in errors] == [
        ("$.field_mappings.tax_code", "account_tax_code"), ("$.field_mappings.group_name", "account_group_name"),
        ("$.field_mappings.account_category_id", "account_category_id"),
        ("$.field_mappings.corresponding_income_id", "account_corresponding_income_id"),
        ("$.field_mappings.corresponding_expense_id", "account_corresponding_expense_id")]
    assert "the connection's context key account_tax_code" in errors[0]["message"]


def test_a_free_form_value_of_the_wrong_type_is_the_callers_422(providers) -> None:
    fields = {"tax_code": [34], "group_name": "その他預金", "account_category_id": 1, "corresponding_income_id": 1,
              "corresponding_expense_id": 1}
    response = providers.post("/accounting/accounts", json={"name": "x", "field_mappings": fields},
                              headers={"x-api-key": API_KEY, "x-connection-token": "freee"})
    assert response.status_code == 422, response.text
    assert response.json()["path"] == "$.field_mappings.tax_code"
