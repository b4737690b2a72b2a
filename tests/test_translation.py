"""The unified API translated to Formation and back, with the provider mocked by pytest-httpx.

The app runs in-process under starlette's TestClient (whose transport
pytest-httpx leaves alone); the gateway's own calls to https://formation.test
are answered by `httpx_mock`, which also fails a test on any upstream call it
was not told to expect and on any expected call that did not happen. The
TestClient re-raises unhandled server errors, so no test here can pass on a 500.
"""

import json
from datetime import datetime, timezone
from urllib.parse import quote, unquote

import anyio
import httpx
import pytest
from starlette.testclient import TestClient

from conftest import seed
from gateway.app import create_app
from gateway.models import ContactInput
from gateway.settings import from_environ

API_KEY = "gw-key-one"
API_KEY_2 = "gw-key-two"
TOKEN_A = "conn-token-a"
TOKEN_B = "conn-token-b"
COMPANY_A = "6650f1a2e4b0c8d9f0aa0001"
COMPANY_B = "6650f1a2e4b0c8d9f0aa0002"
FORMATION_KEY_A = "formation-key-a"
FORMATION_KEY_B = "formation-key-b"
BASE = "https://formation.test"
BASE_B = "https://formation-b.test"
H = {"x-api-key": API_KEY, "x-connection-token": TOKEN_A}
H_B = {"x-api-key": API_KEY, "x-connection-token": TOKEN_B}
T0 = 1718452800  # 2024-06-15T12:00:00Z

CONNECTIONS = f"""\
- token: {TOKEN_A}
  name: formation-a
  provider: formation
  base_url: {BASE}
  credentials: {{api_key: "${{FORMATION_KEY_A}}"}}
  context: {{company_id: "{COMPANY_A}"}}
- token: {TOKEN_B}
  name: formation-b
  provider: formation
  base_url: {BASE_B}
  credentials: {{api_key: "${{FORMATION_KEY_B}}"}}
  context: {{company_id: "{COMPANY_B}"}}
"""


@pytest.fixture
def environ(tmp_path) -> dict[str, str]:
    path = tmp_path / "connections.yaml"
    path.write_text(CONNECTIONS)
    return {"GATEWAY_API_KEYS": f"{API_KEY},{API_KEY_2}", "GATEWAY_CONNECTIONS": str(path),
            "GATEWAY_CURSOR_SECRET": "test-cursor-secret", "FORMATION_KEY_A": FORMATION_KEY_A,
            "FORMATION_KEY_B": FORMATION_KEY_B}


def make_client(environ: dict[str, str]) -> TestClient:
    # httpx's own transport, which pytest-httpx mocks; the network path (gateway/transport.py)
    # is exercised by the end-to-end tests.
    return TestClient(create_app(from_environ(environ), environ=environ, transport=httpx.AsyncHTTPTransport()))


@pytest.fixture
def client(environ):
    with make_client(environ) as c:
        yield c


# -- Formation's side -------------------------------------------------------------


def iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")


def record(n: int = 1, **changes) -> dict:
    """A Formation contact as its API returns it."""
    return {"id": f"64b8f1a2e4b0c8d9f00000{n:02d}", "created_at": T0 + n, "updated_at": T0 + 10 * n,
            "type": "customer", "status": "active", "full_name": f"Contact {n}", "email": f"c{n}@example.com",
            "description": "", "cc_emails": [], "bcc_emails": [], "billing": {"tax_id": f"TAX-{n}"}, **changes}


def unified(rec: dict, company: str = COMPANY_A, remote_data=None) -> dict:
    """What the Formation mapping makes of `rec`, written out by hand."""
    return {
        "name": rec["full_name"], "is_supplier": rec["type"] == "vendor", "is_customer": rec["type"] == "customer",
        "email_address": rec["email"], "tax_number": rec["billing"].get("tax_id"),
        "status": {"active": "Active", "inactive": "Inactive", "archived": "Archived"}.get(rec["status"], rec["status"]),
        "currency": None, "remote_updated_at": iso(rec["updated_at"]), "company_info_id": company,
        "field_mappings": None, "id": rec["id"], "remote_id": rec["id"], "remote_data": remote_data,
        "created_at": iso(rec["created_at"]), "modified_at": iso(rec["updated_at"]),
    }


def ok(data, message: str = "ok") -> dict:
    return {"success": True, "message": message, "data": data}


def fail(code: str, details: str, message: str = "Invalid request") -> dict:
    return {"success": False, "message": message, "data": None, "error": {"code": code, "details": details}}


def list_url(skip: int, limit: int, company: str = COMPANY_A, base: str = BASE) -> str:
    return f"{base}/contacts?company_id={company}&skip={skip}&limit={limit}"


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["statusCode"] == status
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["error"], str) and body["error"]
    return body


# -- the seed contact -----------------------------------------------------------------


def seed_contact(shared) -> dict:
    """The JSON object after the SDK snippet of seed 000: Panora's unified contact."""
    lines = seed(shared, "000").splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "run();")
    first = next(i for i in range(start, len(lines)) if lines[i].strip() == "{")
    depth = 0
    for last in range(first, len(lines)):
        depth += lines[last].count("{") - lines[last].count("}")
        if depth == 0:
            break
    return json.loads("\n".join(lines[first:last + 1]))


INPUT_FIELDS = set(ContactInput.__struct_fields__)


@pytest.fixture
def seed_payload(shared) -> dict:
    payload = seed_contact(shared)
    # The seed carries input and output fields alike; the tests rely on both kinds being there.
    assert {"name", "is_supplier", "email_address", "tax_number", "company_info_id"} <= set(payload)
    assert {"id", "remote_id", "remote_data", "created_at", "modified_at"} <= set(payload) - INPUT_FIELDS
    return payload


def seed_upstream_body(payload: dict) -> dict:
    return {"full_name": payload["name"], "email": payload["email_address"], "type": "vendor",
            "company_id": payload["company_info_id"], "status": "active",
            "billing": {"tax_id": payload["tax_number"]}}


def created_record(payload: dict) -> dict:
    return record(7, type="vendor", full_name=payload["name"], email=payload["email_address"],
                  billing={"tax_id": payload["tax_number"]}, created_at=T0, updated_at=T0)


def ignored(response: httpx.Response) -> list[str]:
    header = response.headers.get("x-gateway-ignored-fields")
    return header.split(", ") if header else []


def test_the_seed_contact_reaches_formation_and_comes_back_unified(client, httpx_mock, seed_payload):
    body = {k: v for k, v in seed_payload.items() if k in INPUT_FIELDS}
    rec = created_record(seed_payload)
    httpx_mock.add_response(method="POST", url=f"{BASE}/contacts", match_json=seed_upstream_body(seed_payload),
                            match_headers={"X-API-KEY": FORMATION_KEY_A, "content-type": "application/json"},
                            status_code=201, json=ok(rec, "Contact created successfully"))
    response = client.post("/accounting/contacts", headers=H, json=body)
    assert response.status_code == 201, response.text
    out = response.json()
    assert out.pop("company_info_id") == body["company_info_id"]
    assert out == {
        "name": "John Doe", "is_supplier": True, "is_customer": False, "email_address": "john.doe@example.com",
        "tax_number": "123456789", "status": "Active", "currency": None, "remote_updated_at": "2024-06-15T12:00:00Z",
        "field_mappings": None, "id": rec["id"], "remote_id": rec["id"], "remote_data": None,
        "created_at": "2024-06-15T12:00:00Z", "modified_at": "2024-06-15T12:00:00Z",
    }
    # Formation has no currency, no remote_updated_at and no custom fields: the caller is told. A
    # contact is one type there, and is_supplier decides it: is_customer is never read.
    assert sorted(ignored(response)) == ["$.currency", "$.field_mappings", "$.is_customer", "$.remote_updated_at"]


def test_the_upstream_request_carries_the_provider_credentials_only(client, httpx_mock, seed_payload):
    httpx_mock.add_response(method="POST", url=f"{BASE}/contacts", status_code=201,
                            json=ok(created_record(seed_payload)))
    client.post("/accounting/contacts", headers={**H, "authorization": "Bearer caller"},
                json={k: v for k, v in seed_payload.items() if k in INPUT_FIELDS})
    sent = httpx_mock.get_request()
    assert sent.headers["x-api-key"] == FORMATION_KEY_A
    assert "x-connection-token" not in sent.headers
    assert "authorization" not in sent.headers
    assert API_KEY not in str(sent.headers) and TOKEN_A not in str(sent.headers) and TOKEN_A not in str(sent.url)
    assert sent.headers["accept"] == "application/json"
    assert sent.headers["content-type"] == "application/json"
    assert json.loads(sent.content) == seed_upstream_body(seed_payload)


def test_the_whole_seed_payload_reports_the_output_only_fields_as_ignored(client, httpx_mock, seed_payload):
    # The upstream body is exactly the same: output-only fields never reach Formation.
    httpx_mock.add_response(method="POST", url=f"{BASE}/contacts", match_json=seed_upstream_body(seed_payload),
                            status_code=201, json=ok(created_record(seed_payload)))
    response = client.post("/accounting/contacts", headers=H, json=seed_payload)
    assert response.status_code == 201, response.text
    assert sorted(ignored(response)) == sorted([
        "$.id", "$.remote_id", "$.remote_data", "$.created_at", "$.modified_at",
        "$.currency", "$.remote_updated_at", "$.field_mappings", "$.is_customer"])
    assert response.json()["id"] == created_record(seed_payload)["id"]  # Formation's id, not the one sent


def test_a_created_contact_reports_the_company_it_was_created_in(client, httpx_mock, seed_payload):
    httpx_mock.add_response(method="POST", url=f"{BASE}/contacts", status_code=201,
                            json=ok(created_record(seed_payload)))
    response = client.post("/accounting/contacts", headers=H, json=seed_payload)
    assert response.json()["company_info_id"] == seed_payload["company_info_id"]


def test_a_body_the_mapping_carries_whole_reports_nothing(client, httpx_mock):
    body = {"name": "Ann", "email_address": "ann@example.com", "is_customer": True, "status": "Inactive",
            "tax_number": "T", "currency": None, "field_mappings": {}}
    httpx_mock.add_response(method="POST", url=f"{BASE}/contacts", status_code=201, json=ok(record(1)),
                            match_json={"full_name": "Ann", "email": "ann@example.com", "type": "customer",
                                        "company_id": COMPANY_A, "status": "inactive", "billing": {"tax_id": "T"}})
    response = client.post("/accounting/contacts", headers=H, json=body)
    assert response.status_code == 201, response.text
    assert "x-gateway-ignored-fields" not in response.headers


@pytest.mark.parametrize("key, reported", [
    ("名前", "$.\\u540d\\u524d"),
    ("ñame", "$.\\xf1ame"),
    ("a\r\nX-Evil: 1", "$.a\\r\\nX-Evil: 1"),
    ("tab\there", "$.tab\\there"),
    ("back\\slash", "$.back\\\\slash"),
])
def test_ignored_field_names_are_escaped_into_the_header(client, httpx_mock, key, reported):
    # The create has happened upstream by then: an unsendable header must not turn it into an error.
    httpx_mock.add_response(method="POST", url=f"{BASE}/contacts", status_code=201, json=ok(record(1)))
    response = client.post("/accounting/contacts", headers=H, json={"name": "A", "email_address": "a@x", key: 1})
    assert response.status_code == 201, response.text
    value = response.headers["x-gateway-ignored-fields"]
    assert value == reported
    assert value.isascii() and value.isprintable()
    assert "x-evil" not in response.headers


@pytest.mark.parametrize("flags, kind", [
    ({"is_supplier": True}, "vendor"),
    ({"is_customer": True}, "customer"),
    ({"is_supplier": True, "is_customer": True}, "vendor"),
    ({"is_supplier": False, "is_customer": False}, "customer"),
    ({}, "customer"),
])
def test_the_two_unified_flags_become_formations_one_type(client, httpx_mock, flags, kind):
    httpx_mock.add_response(method="POST", url=f"{BASE}/contacts", status_code=201, json=ok(record(1, type=kind)),
                            match_json={"full_name": "A", "email": "a@x.test", "type": kind, "company_id": COMPANY_A})
    response = client.post("/accounting/contacts", headers=H, json={"name": "A", "email_address": "a@x.test", **flags})
    assert response.status_code == 201, response.text
    assert response.json()["is_supplier"] is (kind == "vendor")


def test_nulls_are_not_sent_and_the_company_comes_from_the_connection(client, httpx_mock):
    httpx_mock.add_response(method="POST", url=f"{BASE_B}/contacts", status_code=201, json=ok(record(1)),
                            match_headers={"X-API-KEY": FORMATION_KEY_B},
                            match_json={"full_name": "A", "email": "a@x.test", "type": "customer", "company_id": COMPANY_B})
    body = {"name": "A", "email_address": "a@x.test", "tax_number": None, "status": None, "company_info_id": None}
    response = client.post("/accounting/contacts", headers=H_B, json=body)
    assert response.status_code == 201, response.text
    assert response.json()["company_info_id"] == COMPANY_B


def test_create_with_remote_data_returns_the_raw_record(client, httpx_mock):
    rec = record(3)
    httpx_mock.add_response(method="POST", url=f"{BASE}/contacts", status_code=201, json=ok(rec))
    response = client.post("/accounting/contacts?remote_data=true", headers=H, json={"name": "A", "email_address": "a@x"})
    assert response.status_code == 201
    assert response.json() == unified(rec, remote_data=rec)


# -- list and paging -------------------------------------------------------------------


def page(records: list, total: int) -> dict:
    return ok({"contacts": records, "total": total}, "Contacts retrieved successfully")


def test_list_pages_forward_and_back_with_signed_cursors(client, httpx_mock):
    recs = [record(n) for n in range(1, 6)]
    for skip in (0, 2, 4, 2, 0):
        httpx_mock.add_response(method="GET", url=list_url(skip, 2), json=page(recs[skip:skip + 2], 5),
                                match_headers={"X-API-KEY": FORMATION_KEY_A})

    first = client.get("/accounting/contacts?limit=2", headers=H).json()
    assert first["data"] == [unified(r) for r in recs[0:2]]
    assert first["prev_cursor"] is None and isinstance(first["next_cursor"], str)

    second = client.get("/accounting/contacts", params={"limit": 2, "cursor": first["next_cursor"]}, headers=H).json()
    assert second["data"] == [unified(r) for r in recs[2:4]]
    assert second["prev_cursor"] and second["next_cursor"]

    third = client.get("/accounting/contacts", params={"limit": 2, "cursor": second["next_cursor"]}, headers=H).json()
    assert third["data"] == [unified(recs[4])]
    assert third["next_cursor"] is None and third["prev_cursor"]

    back = client.get("/accounting/contacts", params={"limit": 2, "cursor": third["prev_cursor"]}, headers=H).json()
    assert back["data"] == second["data"]
    start = client.get("/accounting/contacts", params={"limit": 2, "cursor": back["prev_cursor"]}, headers=H).json()
    assert start["data"] == first["data"] and start["prev_cursor"] is None


def test_list_defaults_to_50_and_asks_formation_for_at_most_100(client, httpx_mock):
    httpx_mock.add_response(url=list_url(0, 50), json=page([], 0))
    httpx_mock.add_response(url=list_url(0, 100), json=page([], 0))
    assert client.get("/accounting/contacts", headers=H).json() == {"prev_cursor": None, "next_cursor": None, "data": []}
    assert client.get("/accounting/contacts?limit=1000", headers=H).status_code == 200


def test_a_full_page_without_a_total_has_a_next_page(client, httpx_mock):
    httpx_mock.add_response(url=list_url(0, 2), json=ok({"contacts": [record(1), record(2)]}))
    httpx_mock.add_response(url=list_url(2, 2), json=ok({"contacts": [record(3)]}))
    first = client.get("/accounting/contacts?limit=2", headers=H).json()
    second = client.get("/accounting/contacts", params={"limit": 2, "cursor": first["next_cursor"]}, headers=H).json()
    assert [c["name"] for c in second["data"]] == ["Contact 3"] and second["next_cursor"] is None


def test_list_with_remote_data_returns_the_raw_records(client, httpx_mock):
    recs = [record(1), record(2, type="vendor", status="archived")]
    httpx_mock.add_response(url=list_url(0, 50), json=page(recs, 2))
    response = client.get("/accounting/contacts?remote_data=true", headers=H)
    assert response.json()["data"] == [unified(r, remote_data=r) for r in recs]
    assert response.json()["data"][1]["status"] == "Archived" and response.json()["data"][1]["is_supplier"] is True


def test_list_on_another_connection_uses_its_company_url_and_key(client, httpx_mock):
    httpx_mock.add_response(url=list_url(0, 50, COMPANY_B, BASE_B), match_headers={"X-API-KEY": FORMATION_KEY_B},
                            json=page([record(1)], 1))
    assert client.get("/accounting/contacts", headers=H_B).json()["data"] == [unified(record(1), COMPANY_B)]


def test_the_callers_other_query_parameters_are_not_forwarded(client, httpx_mock):
    httpx_mock.add_response(url=list_url(0, 50), json=page([], 0))  # matches the query exactly
    assert client.get("/accounting/contacts?company_id=evil&skip=99&foo=bar", headers=H).status_code == 200


@pytest.mark.parametrize("limit", ["0", "-1", "1001", "2.5", "abc", "nan", "inf", "1e9"])
def test_a_bad_limit_is_400_without_an_upstream_call(client, limit):
    body = assert_error(client.get(f"/accounting/contacts?limit={limit}", headers=H), 400, "invalid_query")
    assert "limit" in body["message"]


@pytest.mark.parametrize("value, as_bool", [("true", True), ("1", True), ("TRUE", True), ("false", False), ("0", False)])
def test_remote_data_flag_values(client, httpx_mock, value, as_bool):
    httpx_mock.add_response(url=list_url(0, 50), json=page([record(1)], 1))
    data = client.get(f"/accounting/contacts?remote_data={value}", headers=H).json()["data"]
    assert (data[0]["remote_data"] is not None) is as_bool


def test_a_bad_remote_data_flag_is_400(client):
    body = assert_error(client.get("/accounting/contacts?remote_data=yes", headers=H), 400, "invalid_query")
    assert "remote_data" in body["message"]


# -- cursors -----------------------------------------------------------------------------


@pytest.fixture
def cursor(client, httpx_mock) -> str:
    httpx_mock.add_response(url=list_url(0, 1), json=page([record(1)], 3))
    return client.get("/accounting/contacts?limit=1", headers=H).json()["next_cursor"]


def flip(text: str, at: int) -> str:
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1:]


@pytest.mark.parametrize("where", [0, 5, -1, -3])
def test_a_tampered_cursor_is_400(client, cursor, where):
    assert_error(client.get("/accounting/contacts", params={"cursor": flip(cursor, where % len(cursor))}, headers=H),
                 400, "invalid_cursor")


@pytest.mark.parametrize("bad", ["x", "not-a-cursor", "%%%", "é", "AAAA" * 10, "W1swLDAsMCxudWxsXQ"])
def test_a_cursor_the_gateway_did_not_issue_is_400(client, bad):
    assert_error(client.get("/accounting/contacts", params={"cursor": bad}, headers=H), 400, "invalid_cursor")


def test_a_cursor_from_another_connection_is_400(client, cursor):
    assert_error(client.get("/accounting/contacts", params={"cursor": cursor}, headers=H_B), 400, "invalid_cursor")


def test_a_cursor_for_another_object_is_400(client, cursor):
    assert_error(client.get("/accounting/invoices", params={"cursor": cursor}, headers=H), 400, "invalid_cursor")


def test_a_cursor_works_on_another_instance_sharing_the_secret(environ, cursor, httpx_mock):
    httpx_mock.add_response(url=list_url(1, 1), json=page([record(2)], 3))
    with make_client(environ) as other:
        response = other.get("/accounting/contacts", params={"limit": 1, "cursor": cursor}, headers=H)
    assert response.json()["data"] == [unified(record(2))]


def test_a_cursor_from_an_instance_with_another_secret_is_400(environ, cursor):
    with make_client({**environ, "GATEWAY_CURSOR_SECRET": "another"}) as other:
        assert_error(other.get("/accounting/contacts", params={"cursor": cursor}, headers=H), 400, "invalid_cursor")


# -- retrieve -------------------------------------------------------------------------------


def test_retrieve(client, httpx_mock):
    rec = record(4, type="vendor", status="inactive")
    httpx_mock.add_response(method="GET", url=f"{BASE}/contacts/{rec['id']}", json=ok(rec),
                            match_headers={"X-API-KEY": FORMATION_KEY_A})
    response = client.get(f"/accounting/contacts/{rec['id']}", headers=H)
    assert response.status_code == 200
    assert response.json() == unified(rec)
    assert response.json()["status"] == "Inactive"


def test_retrieve_with_remote_data(client, httpx_mock):
    rec = record(4, billing={}, extra={"kept": [1, 2]})
    httpx_mock.add_response(url=f"{BASE}/contacts/{rec['id']}", json=ok(rec))
    out = client.get(f"/accounting/contacts/{rec['id']}?remote_data=true", headers=H).json()
    assert out["remote_data"] == rec
    assert out["tax_number"] is None


@pytest.mark.parametrize("record_id, encoded", [
    ("a/b", "a%2Fb"),
    ("a?b=c", "a%3Fb%3Dc"),
    ("a#b", "a%23b"),
    ("100%", "100%25"),
    ("a b", "a%20b"),
    ("../../admin", "..%2F..%2Fadmin"),
    ("x/?#%", "x%2F%3F%23%25"),
    ("ünï", "%C3%BCn%C3%AF"),
    ("line\nend\n", "line%0Aend%0A"),
    ("\r\n", "%0D%0A"),
    ("nul\x00", "nul%00"),
])
def test_retrieve_keeps_the_id_inside_one_path_segment(client, httpx_mock, record_id, encoded):
    httpx_mock.add_response(method="GET", url=f"{BASE}/contacts/{encoded}", json=ok(record(1, id=record_id)))
    response = client.get("/accounting/contacts/" + quote(record_id, safe=""), headers=H)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == record_id
    sent = httpx_mock.get_request()
    assert sent.url.raw_path == f"/contacts/{encoded}".encode()
    assert sent.url.query == b""
    assert sent.url.host == "formation.test"


def asgi_get(app, raw_path: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    """One GET straight through ASGI, with the scope gateway/server.py builds: `path`
    percent-decoded once. (starlette's TestClient decodes it twice, so it
    cannot send an id that itself holds an escape like %2F.)"""
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "server": ("testserver", 80), "client": ("127.0.0.1", 1234), "root_path": "",
             "path": unquote(raw_path.decode("ascii")), "raw_path": raw_path, "query_string": b"",
             "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    anyio.run(app, scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))


@pytest.mark.parametrize("record_id, encoded", [("%2F", "%252F"), ("a%2F..%2Fb", "a%252F..%252Fb"), ("%", "%25")])
def test_an_id_holding_percent_escapes_is_sent_as_written(environ, httpx_mock, record_id, encoded):
    httpx_mock.add_response(method="GET", url=f"{BASE}/contacts/{encoded}", json=ok(record(1, id=record_id)))
    app = create_app(from_environ(environ), environ=environ, transport=httpx.AsyncHTTPTransport())
    status, body = asgi_get(app, ("/accounting/contacts/" + quote(record_id, safe="")).encode(), H)
    assert status == 200, body
    assert body["id"] == record_id
    assert httpx_mock.get_request().url.raw_path == f"/contacts/{encoded}".encode()


@pytest.mark.parametrize("path", ["%2E%2E", "%2e%2e", "%2E", ".%2E"])
def test_a_dot_segment_id_is_refused_without_an_upstream_call(client, path):
    response = client.get(f"/accounting/contacts/{path}", headers=H)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["statusCode"] == response.status_code


def test_an_empty_id_is_the_list(client, httpx_mock):
    httpx_mock.add_response(url=list_url(0, 50), json=page([], 0))
    assert client.get("/accounting/contacts/", headers=H).json()["data"] == []


# -- provider errors ---------------------------------------------------------------------------

ERRORS = {
    # name: (provider status, provider body, provider headers) -> (our status, our code, provider_code, provider_message)
    "invalid request": ((400, fail("INVALID_REQUEST", "company_id is required"), None),
                        (400, "upstream_rejected", "INVALID_REQUEST", "company_id is required")),
    "validation failed": ((400, fail("VALIDATION_FAILED", "email must be a string"), None),
                          (422, "upstream_rejected", "VALIDATION_FAILED", "email must be a string")),
    "400 without a body": ((400, None, None), (400, "upstream_rejected", None, None)),
    "other 4xx": ((418, {"message": "teapot"}, None), (400, "upstream_rejected", None, "teapot")),
    "contact not found": ((404, fail("CONTACT_NOT_FOUND", "contact not found", "Contact not found"), None),
                          (404, "not_found", "CONTACT_NOT_FOUND", "contact not found")),
    "company not found": ((404, fail("COMPANY_NOT_FOUND", "company x not found"), None),
                          (422, "upstream_rejected", "COMPANY_NOT_FOUND", "company x not found")),
    "rate limited": ((429, fail("RATE_LIMIT_EXCEEDED", "slow down", "Too many requests"), {"Retry-After": "30"}),
                     (429, "upstream_rate_limited", "RATE_LIMIT_EXCEEDED", "slow down")),
    "rate limited without retry-after": ((429, {"message": "Too many requests"}, None),
                                         (429, "upstream_rate_limited", None, "Too many requests")),
    "missing key": ((401, fail("API_KEY_REQUIRED", "the X-API-KEY header is required", "Unauthorized"), None),
                    (502, "upstream_auth_failed", "API_KEY_REQUIRED", "the X-API-KEY header is required")),
    "invalid key": ((401, fail("INVALID_API_KEY", "the API key is not valid", "Unauthorized"), None),
                    (502, "upstream_auth_failed", "INVALID_API_KEY", "the API key is not valid")),
    "access denied": ((403, fail("ACCESS_DENIED", "no access to this company", "Forbidden"), None),
                      (502, "upstream_auth_failed", "ACCESS_DENIED", "no access to this company")),
    "internal error": ((500, fail("INTERNAL_ERROR", "boom", "Internal error"), None),
                       (502, "upstream_error", "INTERNAL_ERROR", "boom")),
    "unavailable, html": ((503, "<html>down for maintenance</html>", None), (502, "upstream_error", None, None)),
    "redirect": ((302, None, {"Location": "https://elsewhere.test/steal"}), (502, "upstream_error", None, None)),
}


def add_upstream(httpx_mock, url: str, status: int, body, headers, method: str = "GET") -> None:
    # A GET that fails with a 5xx, 429 or 503 is retried (tests/test_upstream.py
    # counts the attempts); here only the mapping of the final answer matters.
    kwargs = {"method": method, "url": url, "status_code": status, "headers": headers,
              "is_reusable": method == "GET"}
    if isinstance(body, str):
        httpx_mock.add_response(text=body, **kwargs)
    elif body is None:
        httpx_mock.add_response(**kwargs)
    else:
        httpx_mock.add_response(json=body, **kwargs)


def check_provider_error(response, upstream_status, expected) -> dict:
    status, code, provider_code, provider_message = expected
    body = assert_error(response, status, code)
    assert body["provider"] == "formation"
    assert body["provider_status"] == upstream_status
    assert body.get("provider_code") == provider_code
    assert body.get("provider_message") == provider_message
    if provider_message:
        assert provider_message in body["message"]
    return body


@pytest.mark.parametrize("case", ERRORS)
def test_provider_errors_on_retrieve(client, httpx_mock, case):
    (upstream_status, upstream_body, upstream_headers), expected = ERRORS[case]
    add_upstream(httpx_mock, f"{BASE}/contacts/abc", upstream_status, upstream_body, upstream_headers)
    response = client.get("/accounting/contacts/abc", headers=H)
    check_provider_error(response, upstream_status, expected)
    if upstream_headers and "Retry-After" in upstream_headers:
        assert response.headers["retry-after"] == "30"
    else:
        assert "retry-after" not in response.headers
    assert "location" not in response.headers


@pytest.mark.parametrize("case", ["validation failed", "company not found", "rate limited", "invalid key", "internal error"])
def test_provider_errors_on_create(client, httpx_mock, case):
    (upstream_status, upstream_body, upstream_headers), expected = ERRORS[case]
    add_upstream(httpx_mock, f"{BASE}/contacts", upstream_status, upstream_body, upstream_headers, "POST")
    response = client.post("/accounting/contacts", headers=H, json={"name": "A", "email_address": "a@x"})
    check_provider_error(response, upstream_status, expected)


@pytest.mark.parametrize("case", ["invalid request", "company not found", "rate limited", "access denied", "unavailable, html"])
def test_provider_errors_on_list(client, httpx_mock, case):
    (upstream_status, upstream_body, upstream_headers), expected = ERRORS[case]
    add_upstream(httpx_mock, list_url(0, 50), upstream_status, upstream_body, upstream_headers)
    check_provider_error(client.get("/accounting/contacts", headers=H), upstream_status, expected)


@pytest.mark.parametrize("value", ["Wed, 21 Oct 2015 07:28:00 GMT", "0", "120"])
def test_retry_after_passes_through_as_given(client, httpx_mock, value):
    httpx_mock.add_response(url=f"{BASE}/contacts/abc", status_code=429, headers={"Retry-After": value},
                            is_reusable=True)
    assert client.get("/accounting/contacts/abc", headers=H).headers["retry-after"] == value


@pytest.mark.parametrize("raw", ["３０".encode(), b"\xf1", b"1\x7f"])
def test_a_retry_after_that_cannot_be_passed_on_is_dropped(client, httpx_mock, raw):
    httpx_mock.add_response(url=f"{BASE}/contacts/abc", status_code=429, headers=[(b"Retry-After", raw)],
                            json=fail("RATE_LIMIT_EXCEEDED", "slow down"), is_reusable=True)
    response = client.get("/accounting/contacts/abc", headers=H)
    assert_error(response, 429, "upstream_rate_limited")
    assert "retry-after" not in response.headers


def test_a_provider_error_never_echoes_credentials(client, httpx_mock):
    add_upstream(httpx_mock, f"{BASE}/contacts/abc", 401, fail("INVALID_API_KEY", "bad key"), None)
    text = client.get("/accounting/contacts/abc", headers=H).text
    assert FORMATION_KEY_A not in text and API_KEY not in text and TOKEN_A not in text


# -- transport failures and odd successes ---------------------------------------------------------


@pytest.mark.parametrize("exception, status, code", [
    (httpx.ReadTimeout("read timed out"), 504, "upstream_timeout"),
    (httpx.ConnectTimeout("connect timed out"), 504, "upstream_timeout"),
    (httpx.WriteTimeout("write timed out"), 504, "upstream_timeout"),
    (httpx.PoolTimeout("pool timed out"), 504, "upstream_timeout"),
    (httpx.ConnectError("connection refused"), 502, "upstream_unreachable"),
    (httpx.RemoteProtocolError("server disconnected"), 502, "upstream_unreachable"),
    (httpx.ReadError("connection reset"), 502, "upstream_unreachable"),
])
def test_transport_failures(client, httpx_mock, exception, status, code):
    httpx_mock.add_exception(exception, url=f"{BASE}/contacts/abc", is_reusable=True)
    body = assert_error(client.get("/accounting/contacts/abc", headers=H), status, code)
    assert body["provider"] == "formation"


def test_a_timeout_on_create_is_504(client, httpx_mock):
    httpx_mock.add_exception(httpx.ReadTimeout("slow"), method="POST", url=f"{BASE}/contacts")
    assert_error(client.post("/accounting/contacts", headers=H, json={"name": "A"}), 504, "upstream_timeout")


@pytest.mark.parametrize("text", ["<html>ok</html>", "{not json", "\xff\xfe"])
def test_a_200_that_is_not_json_is_502(client, httpx_mock, text):
    httpx_mock.add_response(url=f"{BASE}/contacts/abc", text=text)
    body = assert_error(client.get("/accounting/contacts/abc", headers=H), 502, "upstream_invalid_response")
    assert body["provider_status"] == 200


@pytest.mark.parametrize("payload", [
    ok("a string where the contact should be"),
    ok([record(1)]),
    ok(42),
    ok(record(1, full_name=5)),  # a field of the wrong type
    ok(record(1, created_at="yesterday")),  # not an epoch
    ok(record(1, created_at=[1])),
    ok(record(1, id={"oid": "1"})),
])
def test_a_retrieved_record_of_the_wrong_shape_is_502(client, httpx_mock, payload):
    httpx_mock.add_response(url=f"{BASE}/contacts/abc", json=payload)
    assert_error(client.get("/accounting/contacts/abc", headers=H), 502, "upstream_unmappable")


@pytest.mark.parametrize("payload", [
    ok({"contacts": {"not": "a list"}, "total": 1}),
    ok({"contacts": "x", "total": 1}),
    ok({"contacts": [record(1), "not a record"], "total": 2}),
    ok({"contacts": [record(1, email={"a": 1})], "total": 1}),
])
def test_a_list_of_the_wrong_shape_is_502(client, httpx_mock, payload):
    httpx_mock.add_response(url=list_url(0, 50), json=payload)
    assert_error(client.get("/accounting/contacts", headers=H), 502, "upstream_unmappable")


@pytest.mark.parametrize("payload", [None, ok(None), ok("created"), {"success": True}])
def test_a_create_answer_without_a_record_is_still_a_create(client, httpx_mock, payload):
    # The provider said 201: the record exists. An error would invite a duplicate create,
    # so the caller gets a 201, marked, with the provider's whole answer in remote_data.
    httpx_mock.add_response(method="POST", url=f"{BASE}/contacts", status_code=201, json=payload)
    response = client.post("/accounting/contacts", headers=H, json={"name": "A"})
    assert response.status_code == 201, response.text
    assert "formation" in response.headers["x-gateway-unmapped"]
    out = response.json()
    assert out["remote_data"] == payload and out["id"] is None and out["name"] is None


def test_a_created_record_that_does_not_unify_keeps_its_ids_and_raw_payload(client, httpx_mock):
    broken = {**record(7), "created_at": "not a timestamp"}
    httpx_mock.add_response(method="POST", url=f"{BASE}/contacts", status_code=201, json=ok(broken))
    response = client.post("/accounting/contacts", headers=H, json={"name": "A"})
    assert response.status_code == 201, response.text
    assert response.headers["x-gateway-unmapped"]
    out = response.json()
    assert out["id"] == broken["id"] and out["remote_id"] == broken["id"]
    assert out["remote_data"] == ok(broken)


def test_a_retrieve_answer_without_a_record_is_404(client, httpx_mock):
    httpx_mock.add_response(url=f"{BASE}/contacts/abc", json=ok(None))
    body = assert_error(client.get("/accounting/contacts/abc", headers=H), 404, "not_found")
    assert "abc" in body["message"]


# -- the caller's request ---------------------------------------------------------------------------


LEDGER_TOKEN = "conn-token-ledger"
LEDGER_H = {"x-api-key": API_KEY, "x-connection-token": LEDGER_TOKEN}
# A provider that creates invoices and journal entries, so their bodies get validated
# (an object the connection's provider cannot create is a 501 before any body check).
LEDGER_MAPPING = """\
provider: ledger
base_url: https://ledger.test
auth: {type: none}
objects:
  contacts:
    unify: {id: id}
    create: {method: POST, path: /contacts, body: body}
  invoices:
    unify: {id: id}
    create: {method: POST, path: /invoices, body: body}
  journalentries:
    unify: {id: id}
    create: {method: POST, path: /journals, body: body}
"""


@pytest.fixture
def ledger_client(tmp_path, environ):
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    (mappings / "ledger.yaml").write_text(LEDGER_MAPPING)
    connections = tmp_path / "ledger-connections.yaml"
    connections.write_text(f"- {{token: {LEDGER_TOKEN}, provider: ledger}}\n")
    env = {**environ, "GATEWAY_MAPPINGS": str(mappings), "GATEWAY_CONNECTIONS": str(connections)}
    with make_client(env) as c:
        yield c


@pytest.mark.parametrize("path, body, field", [
    ("/accounting/contacts", {"is_supplier": "yes"}, "$.is_supplier"),
    ("/accounting/contacts", {"name": 5}, "$.name"),
    ("/accounting/contacts", {"name": "A", "field_mappings": "x"}, "$.field_mappings"),
    ("/accounting/invoices", {"line_items": [{"value": "ten"}]}, "$.line_items[0].value"),
    ("/accounting/invoices", {"line_items": [{"name": "a"}, {"name": ["b"]}]}, "$.line_items[1].name"),
    ("/accounting/invoices", {"line_items": {"value": 1}}, "$.line_items"),
    ("/accounting/invoices", {"issue_date": "next tuesday"}, "$.issue_date"),
    ("/accounting/invoices", {"total_amount": "100"}, "$.total_amount"),
    ("/accounting/journalentries", {"line_items": [{"remote_generated_at": 5}]}, "$.line_items[0].remote_generated_at"),
])
def test_wrong_body_types_are_422_naming_the_field(ledger_client, path, body, field):
    response = ledger_client.post(path, headers=LEDGER_H, json=body)
    out = assert_error(response, 422, "invalid_body")
    assert out["path"] == field
    assert field in out["message"]


def test_a_body_with_several_type_errors_names_them_all_in_one_422(ledger_client):
    body = {"number": 7, "issue_date": "next tuesday", "contact_id": "c1",
            "line_items": [{"value": "ten"}, {"name": "ok", "value": 1}, {"name": ["b"], "remote_id": 3}]}
    out = assert_error(ledger_client.post("/accounting/invoices", headers=LEDGER_H, json=body), 422, "invalid_body")
    paths = ["$.number", "$.issue_date", "$.line_items[0].value", "$.line_items[2].name", "$.line_items[2].remote_id"]
    assert [e["path"] for e in out["errors"]] == paths
    assert out["path"] == "$.number"
    for path, error in zip(paths, out["errors"]):
        assert error["message"].endswith(f"at `{path}`") and path in out["message"]


@pytest.mark.parametrize("content", [b"[1, 2]", b'"text"', b"42", b"null", b"true"])
def test_a_body_that_is_not_an_object_is_422(client, content):
    out = assert_error(client.post("/accounting/contacts", headers={**H, "content-type": "application/json"},
                                   content=content), 422, "invalid_body")
    assert out["path"] == "$"


@pytest.mark.parametrize("content", [b'{"name": ', b"{'name': 'A'}", b"{name: A}", b'{"a": 1} trailing', b"\xff"])
def test_broken_json_is_400(client, content):
    assert_error(client.post("/accounting/contacts", headers={**H, "content-type": "application/json"}, content=content),
                 400, "invalid_json")


@pytest.mark.parametrize("content", [
    b'{"name": "A", "field_mappings": ' + b"[" * 5000 + b"]" * 5000 + b"}",  # too deep
    b'{"name": "A", "field_mappings": {"x": 1e400}}',  # out of range
    b'{"name": "\\ud800"}',  # a lone surrogate
])
def test_json_the_gateway_cannot_hold_is_400(client, content):
    assert_error(client.post("/accounting/contacts", headers={**H, "content-type": "application/json"}, content=content),
                 400, "invalid_json")


@pytest.mark.parametrize("content", [b"", b"  \n"])
def test_a_missing_body_is_400(client, content):
    assert_error(client.post("/accounting/contacts", headers=H, content=content), 400, "missing_body")


# -- who is calling ------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers, code", [
    ({"x-connection-token": TOKEN_A}, "missing_api_key"),
    ({"x-api-key": "", "x-connection-token": TOKEN_A}, "missing_api_key"),
    ({"x-api-key": "wrong", "x-connection-token": TOKEN_A}, "invalid_api_key"),
    ({"x-api-key": API_KEY + " ", "x-connection-token": TOKEN_A}, "invalid_api_key"),
    ({"x-api-key": FORMATION_KEY_A, "x-connection-token": TOKEN_A}, "invalid_api_key"),
    ({"x-api-key": API_KEY}, "missing_connection_token"),
    ({"x-api-key": API_KEY, "x-connection-token": "unknown"}, "invalid_connection_token"),
    ({"x-api-key": API_KEY, "x-connection-token": TOKEN_A.upper()}, "invalid_connection_token"),
])
@pytest.mark.parametrize("method, path", [
    ("GET", "/accounting/contacts"), ("GET", "/accounting/contacts/abc"), ("POST", "/accounting/contacts"),
    ("GET", "/accounting/invoices"),  # refused before telling whether the provider maps it
])
def test_callers_without_a_valid_key_and_connection_get_401(client, headers, code, method, path):
    response = client.request(method, path, headers=headers, json={"name": "A"} if method == "POST" else None)
    body = assert_error(response, 401, code)
    assert "provider" not in body


def test_every_configured_api_key_works(client, httpx_mock):
    httpx_mock.add_response(url=list_url(0, 50), json=page([], 0))
    response = client.get("/accounting/contacts", headers={"x-api-key": API_KEY_2, "x-connection-token": TOKEN_A})
    assert response.status_code == 200


# -- what the mapping does not map --------------------------------------------------------------------


@pytest.mark.parametrize("method, path, body, operation", [
    ("GET", "/accounting/invoices", None, "list invoices"),
    ("GET", "/accounting/invoices/inv-1", None, "retrieve invoices"),
    ("POST", "/accounting/invoices", {"number": "1"}, "create invoices"),
    ("POST", "/accounting/accounts", {}, "create accounts"),
    ("GET", "/accounting/taxrates", None, "list taxrates"),
])
def test_an_unmapped_operation_is_501_naming_provider_and_operation(client, method, path, body, operation):
    out = assert_error(client.request(method, path, headers=H, json=body), 501, "operation_not_mapped")
    assert out["provider"] == "formation"
    assert out["operation"] == operation
    assert "formation" in out["message"] and operation in out["message"]


def test_an_unknown_object_is_404(client):
    out = assert_error(client.get("/accounting/widgets", headers=H), 404, "unknown_object")
    assert "widgets" in out["message"] and "contacts" in out["message"]
    out = assert_error(client.get("/accounting/contakts", headers=H), 404, "unknown_object")
    assert out["message"].endswith("did you mean 'contacts'?"), out


def test_an_object_the_unified_api_cannot_create_is_405(client):
    response = client.post("/accounting/addresses", headers=H, json={})
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET"


def test_a_trailing_slash_on_a_retrieve_is_the_same_retrieve(client, httpx_mock):
    rec = record(4)
    httpx_mock.add_response(method="GET", url=f"{BASE}/contacts/{rec['id']}", json=ok(rec))
    response = client.get(f"/accounting/contacts/{rec['id']}/", headers=H)
    assert response.status_code == 200 and response.json() == unified(rec)


@pytest.mark.parametrize("path", ["/accounting/contacts/a/b", "/accounting/contacts/abc//"])
def test_a_path_deeper_than_a_record_is_404_without_a_provider_call(client, httpx_mock, path):
    assert_error(client.get(path, headers=H), 404, "no_such_path")
    assert httpx_mock.get_requests() == []


@pytest.mark.parametrize("method, path, code", [
    ("DELETE", "/accounting/contacts/abc", "method_not_allowed"),
    ("PATCH", "/accounting/contacts/abc", "method_not_allowed"),
    ("PUT", "/accounting/contacts", "method_not_allowed"),
    ("GET", "/accounting", "no_such_path"),
    ("GET", "/crm/contacts", "no_such_path"),
])
def test_other_paths_and_methods_answer_json_errors(client, method, path, code):
    response = client.request(method, path, headers=H)
    assert_error(response, response.status_code, code)
    assert response.status_code in (404, 405)
    if response.status_code == 405:
        assert response.headers["allow"], "every 405 says what is allowed"


def test_a_list_answer_without_its_records_array_is_502(client, httpx_mock):
    # A changed envelope must not look like an empty list.
    httpx_mock.add_response(url=list_url(0, 50), json={"success": True, "message": "ok", "data": {"total": 3}})
    assert_error(client.get("/accounting/contacts", headers=H), 502, "upstream_unmappable")


def test_an_unmapped_create_is_501_before_its_body_is_checked(client):
    body = assert_error(client.post("/accounting/invoices", headers=H, json={"total_amount": "not a number"}),
                        501, "operation_not_mapped")
    assert body["provider"] == "formation" and body["operation"] == "create invoices"
