"""End to end: real `gateway serve` processes, spoken to over real HTTP. No mocks.

(a) the embedded default (no GATEWAY_* at all): the demo key and sandbox token;
(b) a configured gateway (GATEWAY_API_KEYS, GATEWAY_CONNECTIONS) in front of the
    Formation sandbox running as its own process.
"""

import json
import contextlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from conftest import (E2E_API_KEYS, E2E_BAD_CREDENTIAL_TOKEN, E2E_TOKEN, Server, clean_server, configured_gateway,
                      answer, contact_input, free_port, openapi, seed_contact)

from gateway import sandbox

DEMO_KEY = "gateway-demo-key"
DEMO_TOKEN = "sandbox-formation"
HEX_ID = re.compile(r"^[0-9a-f]{24}$")




def error(response: httpx.Response, status: int, code: str) -> dict:
    body = answer(response, status)
    assert body["statusCode"] == status
    assert body["code"] == code, body
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["message"], str) and body["message"]
    return body


def iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def list_all(client: httpx.Client, limit: int, **query) -> list[dict]:
    """Every page of /accounting/contacts, following next_cursor until it is null."""
    pages: list[dict] = []
    cursor = None
    for _ in range(100):  # bounded: a cursor that never ends fails below
        params = {"limit": limit, **query, **({"cursor": cursor} if cursor else {})}
        page = answer(client.get("/accounting/contacts", params=params), 200)
        assert set(page) == {"prev_cursor", "next_cursor", "data"}, page
        pages.append(page)
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
    pytest.fail("next_cursor did not end after 100 pages")


def sandbox_contacts(sandbox_url: str) -> list[dict]:
    """Formation's own view, asked directly (not through the gateway)."""
    response = httpx.get(sandbox_url + "/contacts", params={"company_id": sandbox.COMPANY_ID, "limit": 100},
                         headers={"X-API-KEY": sandbox.API_KEY})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["total"] == len(data["contacts"]), "more contacts than one sandbox page holds"
    return data["contacts"]


# -- (a) the embedded default ------------------------------------------------------


def test_embedded_default_serves_the_demo_sandbox(shared: Path) -> None:
    server = clean_server(["serve"])
    try:
        environ = Path(f"/proc/{server.process.pid}/environ")
        if environ.exists():  # Linux: prove the child really has no GATEWAY_* variable
            names = [item.split(b"=", 1)[0] for item in environ.read_bytes().split(b"\0") if item]
            assert not [n for n in names if n.startswith(b"GATEWAY_")], names

        body = contact_input(shared)
        del body["company_info_id"]  # the demo connection's own company
        demo = {"x-api-key": DEMO_KEY, "x-connection-token": DEMO_TOKEN}
        with httpx.Client(base_url=server.url, headers=demo, timeout=10) as client:
            created = answer(client.post("/accounting/contacts", json=body), 201)
            assert HEX_ID.match(created["id"])
            assert created["name"] == body["name"]
            assert created["email_address"] == body["email_address"]
            assert created["is_supplier"] is True and created["is_customer"] is False
            assert created["company_info_id"] == sandbox.COMPANY_ID

            listed = answer(client.get("/accounting/contacts"), 200)
            assert listed == {"prev_cursor": None, "next_cursor": None, "data": [created]}

            assert answer(client.get(f"/accounting/contacts/{created['id']}"), 200) == created

            # The demo credentials are the only ones.
            error(client.get("/accounting/contacts", headers={"x-api-key": "another-key"}), 401, "invalid_api_key")
            error(client.get("/accounting/contacts", headers={"x-connection-token": "another-token"}), 401,
                  "invalid_connection_token")
    finally:
        log = server.stop()

    # A connection is logged by its name, never its token, even the demo's public one.
    requests = [json.loads(line) for line in log.splitlines() if '"gateway.access"' in line]
    assert {r.get("connection") for r in requests if r["path"].startswith("/accounting/")} >= {"embedded-sandbox"}
    assert not [line for line in log.splitlines() if DEMO_TOKEN in line and "DEMO MODE" not in line
                and "connection token" not in line]

    banner = [line for line in log.splitlines() if "DEMO MODE" in line]
    assert banner and all(json.loads(line)["level"] == "warning" for line in banner), log
    assert "=" * 40 in log, "the demo warning should stand out"
    assert DEMO_KEY in log and DEMO_TOKEN in log and "Do not expose" in log, log
    assert "Traceback" not in log, log


# -- (b) configured in front of the sandbox process --------------------------------


@pytest.fixture(scope="module")
def gateway(formation_sandbox: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = configured_gateway(tmp_path_factory.mktemp("e2e"), formation_sandbox.url)
    yield server
    log = server.stop()
    assert "Traceback" not in log and "unexpected error" not in log, log
    # Credentials reach Formation in a header and never the log.
    assert sandbox.API_KEY not in log and "not-the-formation-key" not in log, log


@pytest.fixture
def client(gateway: Server) -> Iterator[httpx.Client]:
    headers = {"x-api-key": E2E_API_KEYS[1], "x-connection-token": E2E_TOKEN}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=10) as c:
        yield c


def contact(n: int, supplier: bool) -> dict:
    return {"name": f"E2E Contact {n}", "email_address": f"e2e{n}@example.com",
            "is_supplier": supplier, "is_customer": not supplier, "status": "Active"}


def test_create_the_seed_contact(client: httpx.Client, formation_sandbox: Server, shared: Path) -> None:
    body = contact_input(shared)
    # The seed names a Panora company-info UUID that is no Formation company; the
    # connection's own company stands in for it (see the test below for the seed's own).
    body["company_info_id"] = sandbox.COMPANY_ID
    response = client.post("/accounting/contacts", json=body)
    created = answer(response, 201)

    spec = openapi(shared)["components"]["schemas"]["UnifiedAccountingContactOutput"]["properties"]
    assert set(created) == set(spec), "every field of the contract, null when unknown"
    assert HEX_ID.match(created["id"]) and created["remote_id"] == created["id"]
    assert {k: created[k] for k in ("name", "is_supplier", "is_customer", "email_address", "tax_number", "status",
                                   "company_info_id")} == {k: body[k] for k in ("name", "is_supplier", "is_customer",
                                                                               "email_address", "tax_number", "status",
                                                                               "company_info_id")}
    assert iso(created["created_at"]) <= iso(created["modified_at"])
    assert created["remote_updated_at"] == created["modified_at"]
    # Formation has no currency and no custom fields: null, and the caller is told what was dropped.
    assert created["currency"] is None and created["field_mappings"] is None and created["remote_data"] is None
    ignored = [f.strip() for f in response.headers["x-gateway-ignored-fields"].split(",")]
    # is_supplier makes it a vendor, so is_customer is never read: reported too.
    assert set(ignored) == {"$.currency", "$.remote_updated_at", "$.field_mappings", "$.is_customer"}

    # Formation itself holds the translated record.
    raw = next(c for c in sandbox_contacts(formation_sandbox.url) if c["id"] == created["id"])
    assert raw["full_name"] == "John Doe" and raw["email"] == "john.doe@example.com"
    assert raw["type"] == "vendor" and raw["status"] == "active" and raw["billing"] == {"tax_id": "123456789"}


def test_the_seed_contact_verbatim_is_created_in_the_company_it_names(client: httpx.Client,
                                                                       formation_sandbox: Server, shared: Path) -> None:
    seed_input = contact_input(shared)
    assert seed_input["company_info_id"] != sandbox.COMPANY_ID
    created = answer(client.post("/accounting/contacts", json=seed_input), 201)
    assert created["company_info_id"] == seed_input["company_info_id"], "the sandbox takes any company id"
    # Kept in that company: the connection's own company does not list it.
    assert created["id"] not in [c["id"] for c in sandbox_contacts(formation_sandbox.url)]


def test_list_every_page(client: httpx.Client, formation_sandbox: Server) -> None:
    created = [answer(client.post("/accounting/contacts", json=contact(n, n % 2 == 0)), 201)["id"] for n in range(5)]
    expected = [c["id"] for c in sandbox_contacts(formation_sandbox.url)]
    assert len(expected) >= 5

    pages = list_all(client, limit=2)
    ids = [r["id"] for page in pages for r in page["data"]]
    assert len(ids) == len(set(ids)), "a record came twice"
    assert set(created) <= set(ids), "a created record is missing"
    assert ids == expected, "the pages, in order, are Formation's list"
    assert [len(p["data"]) for p in pages[:-1]] == [2] * (len(pages) - 1) and 1 <= len(pages[-1]["data"]) <= 2
    assert pages[0]["prev_cursor"] is None and all(p["prev_cursor"] for p in pages[1:])

    # prev_cursor leads back to the page before.
    back = answer(client.get("/accounting/contacts", params={"limit": 2, "cursor": pages[1]["prev_cursor"]}), 200)
    assert back["data"] == pages[0]["data"]

    # A cursor is bound to its connection and object.
    error(client.get("/accounting/contacts", params={"cursor": pages[0]["next_cursor"]},
                     headers={"x-connection-token": E2E_BAD_CREDENTIAL_TOKEN}), 400, "invalid_cursor")


def test_retrieve_and_remote_data(client: httpx.Client, formation_sandbox: Server) -> None:
    created = answer(client.post("/accounting/contacts", json=contact(9, True)), 201)
    assert created["remote_data"] is None

    got = answer(client.get(f"/accounting/contacts/{created['id']}"), 200)
    assert got == created
    assert answer(client.get(f"/accounting/contacts/{created['id']}", params={"remote_data": "false"}), 200) == created

    direct = httpx.get(f"{formation_sandbox.url}/contacts/{created['id']}", headers={"X-API-KEY": sandbox.API_KEY})
    raw = direct.json()["data"]
    with_raw = answer(client.get(f"/accounting/contacts/{created['id']}", params={"remote_data": "true"}), 200)
    assert with_raw["remote_data"] == raw
    assert raw["full_name"] == "E2E Contact 9" and raw["type"] == "vendor"
    assert {k: v for k, v in with_raw.items() if k != "remote_data"} == {k: v for k, v in got.items() if k != "remote_data"}

    made = answer(client.post("/accounting/contacts", params={"remote_data": "true"}, json=contact(10, False)), 201)
    assert made["remote_data"]["type"] == "customer" and made["remote_data"]["id"] == made["id"]

    pages = list_all(client, limit=50, remote_data="true")
    records = [r for page in pages for r in page["data"]]
    assert records and all(r["remote_data"]["id"] == r["id"] for r in records)


CASES = [
    # id, method, path, headers (None drops one), kwargs, status, code
    ("unknown-token", "GET", "/accounting/contacts", {"x-connection-token": "no-such-token"}, {}, 401,
     "invalid_connection_token"),
    ("missing-token", "GET", "/accounting/contacts", {"x-connection-token": None}, {}, 401, "missing_connection_token"),
    ("bad-key", "GET", "/accounting/contacts", {"x-api-key": "wrong-key"}, {}, 401, "invalid_api_key"),
    ("missing-key", "GET", "/accounting/contacts", {"x-api-key": None}, {}, 401, "missing_api_key"),
    ("demo-key-not-configured", "GET", "/accounting/contacts", {"x-api-key": DEMO_KEY}, {}, 401, "invalid_api_key"),
    ("demo-token-not-configured", "GET", "/accounting/contacts", {"x-connection-token": DEMO_TOKEN}, {}, 401,
     "invalid_connection_token"),
    ("broken-json", "POST", "/accounting/contacts", {}, {"content": b'{"name": "x",'}, 400, "invalid_json"),
    ("empty-body", "POST", "/accounting/contacts", {}, {}, 400, "missing_body"),
    ("wrong-type", "POST", "/accounting/contacts", {}, {"json": {"name": 123}}, 422, "invalid_body"),
    ("not-an-object", "POST", "/accounting/contacts", {}, {"json": [{"name": "x"}]}, 422, "invalid_body"),
    ("formation-rejects", "POST", "/accounting/contacts", {}, {"json": {"name": "No Email"}}, 422, "upstream_rejected"),
    ("unmapped-list", "GET", "/accounting/invoices", {}, {}, 501, "operation_not_mapped"),
    ("unmapped-retrieve", "GET", "/accounting/accounts/abc", {}, {}, 501, "operation_not_mapped"),
    ("unmapped-create", "POST", "/accounting/payments", {}, {"json": {}}, 501, "operation_not_mapped"),
    ("unknown-object", "GET", "/accounting/widgets", {}, {}, 404, "unknown_object"),
    ("unknown-path", "GET", "/nothing/here", {}, {}, 404, "no_such_path"),
    ("method-not-allowed", "DELETE", "/accounting/contacts/abc", {}, {}, 405, "method_not_allowed"),
    ("unknown-id", "GET", "/accounting/contacts/64b8f1a2e4b0c8d9f0ffffff", {}, {}, 404, "not_found"),
    ("limit-zero", "GET", "/accounting/contacts", {}, {"params": {"limit": 0}}, 400, "invalid_query"),
    ("limit-too-big", "GET", "/accounting/contacts", {}, {"params": {"limit": 100000}}, 400, "invalid_query"),
    ("forged-cursor", "GET", "/accounting/contacts", {}, {"params": {"cursor": "bm90LWEtY3Vyc29y"}}, 400,
     "invalid_cursor"),
    ("bad-remote-data", "GET", "/accounting/contacts", {}, {"params": {"remote_data": "maybe"}}, 400, "invalid_query"),
    ("bad-upstream-credential", "GET", "/accounting/contacts", {"x-connection-token": E2E_BAD_CREDENTIAL_TOKEN}, {},
     502, "upstream_auth_failed"),
]


@pytest.mark.parametrize(("method", "path", "headers", "kwargs", "status", "code"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_errors_are_json_and_never_500(gateway: Server, method: str, path: str, headers: dict, kwargs: dict,
                                       status: int, code: str) -> None:
    sent = {"x-api-key": E2E_API_KEYS[0], "x-connection-token": E2E_TOKEN, **headers}
    sent = {k: v for k, v in sent.items() if v is not None}
    response = httpx.request(method, gateway.url + path, headers=sent, timeout=10, **kwargs)
    body = error(response, status, code)
    if status == 501:
        assert body["provider"] == "formation"
        obj = path.split("/")[2]
        assert body["operation"].endswith(obj) and body["operation"] in body["message"]
    if code.startswith("upstream_") or code == "not_found":
        assert body["provider"] == "formation" and body["provider_status"] in (400, 401, 404)


def test_a_stopped_provider_is_a_502(tmp_path: Path) -> None:
    box = clean_server(["sandbox"], health="/contacts")
    server = configured_gateway(tmp_path, box.url)
    headers = {"x-api-key": E2E_API_KEYS[0], "x-connection-token": E2E_TOKEN}
    try:
        with httpx.Client(base_url=server.url, headers=headers, timeout=15) as client:
            created = answer(client.post("/accounting/contacts", json=contact(1, False)), 201)
            box.stop()
            body = error(client.get(f"/accounting/contacts/{created['id']}"), 502, "upstream_unreachable")
            assert body["provider"] == "formation"
            # Failures in a row open the provider's circuit: then calls fail fast with 503.
            seen = []
            for _ in range(10):
                response = client.post("/accounting/contacts", json=contact(2, False))
                seen.append(response.json()["code"])
                if response.status_code == 503:
                    break
                error(response, 502, "upstream_unreachable")
            body = error(response, 503, "upstream_circuit_open")
            assert int(response.headers["retry-after"]) >= 1 and body["provider"] == "formation", seen
            assert answer(client.get("/health"), 200) == {"status": "ok"}
    finally:
        box.stop()
        log = server.stop()
    assert "Traceback" not in log and "unexpected error" not in log, log
    assert "e2e-formation: GET /contacts/" in log and "failed" in log, "the unreachable provider is logged"


def test_seed_parsing_reads_the_first_json_object(shared: Path) -> None:
    # Guards the helper the tests above rely on.
    contact_seed = seed_contact(shared)
    assert contact_seed["name"] == "John Doe" and contact_seed["remote_id"] == "contact_1234"
    assert set(contact_input(shared)) == {"name", "is_supplier", "is_customer", "email_address", "tax_number", "status",
                                          "currency", "remote_updated_at", "company_info_id", "field_mappings"}


# Formations that misbehave, each its own process: `overcounting` gives a `total`
# that counts records no page returns (archived ones, say); `deep` answers JSON
# nested deeper than any decoder goes.
MISBEHAVING_FORMATION = """
import sys
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

MODE = sys.argv[2]
RECORDS = [{"id": f"{n:024x}", "created_at": 1700000000, "updated_at": 1700000000, "type": "customer",
            "status": "active", "full_name": f"Counted {n}", "email": f"c{n}@example.com", "description": "",
            "cc_emails": [], "bcc_emails": [], "billing": {}} for n in range(1, 4)]
DEEP = b'{"success": true, "data": ' + b'[' * 100000 + b']' * 100000 + b'}'

async def contacts(request):
    if MODE == "deep":
        return Response(DEEP, media_type="application/json")
    skip, limit = int(request.query_params["skip"]), int(request.query_params["limit"])
    return JSONResponse({"success": True, "message": "ok",
                         "data": {"contacts": RECORDS[skip:skip + limit], "total": len(RECORDS) + 4}})

uvicorn.run(Starlette(routes=[Route("/contacts", contacts), Route("/contacts/{id}", contacts)]),
            host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


@contextlib.contextmanager
def misbehaving_formation(mode: str) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    provider = subprocess.Popen([sys.executable, "-c", MISBEHAVING_FORMATION, str(port), mode],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(url + "/", timeout=0.5)
                break
            except httpx.HTTPError:
                assert provider.poll() is None, provider.stdout.read()
                assert time.monotonic() < deadline, "the misbehaving Formation did not start"
                time.sleep(0.05)
        yield url
    finally:
        provider.terminate()
        provider.wait(10)
        provider.stdout.close()


def test_an_empty_page_ends_the_list_whatever_the_total_says(tmp_path: Path) -> None:
    with misbehaving_formation("overcounting") as url:
        server = configured_gateway(tmp_path, url)
        try:
            headers = {"x-api-key": E2E_API_KEYS[0], "x-connection-token": E2E_TOKEN}
            with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
                pages = list_all(client, limit=2)  # fails if next_cursor never ends
        finally:
            server.stop()
    assert [r["name"] for page in pages for r in page["data"]] == ["Counted 1", "Counted 2", "Counted 3"]
    assert len(pages) <= 3 and pages[-1]["next_cursor"] is None


def test_json_nested_too_deeply_is_no_500(tmp_path: Path, gateway: Server) -> None:
    deep = b"[" * 100000 + b"]" * 100000
    headers = {"x-api-key": E2E_API_KEYS[0], "x-connection-token": E2E_TOKEN}
    error(httpx.post(gateway.url + "/accounting/contacts", content=deep, headers=headers, timeout=10), 400,
          "invalid_json")
    with misbehaving_formation("deep") as url:
        server = configured_gateway(tmp_path, url)
        try:
            with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
                for path in ("/accounting/contacts", "/accounting/contacts/64b8f1a2e4b0c8d9f0000001"):
                    body = error(client.get(path), 502, "upstream_invalid_response")
                    assert body["provider"] == "formation"
        finally:
            log = server.stop()
    assert "Traceback" not in log, log
