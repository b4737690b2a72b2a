"""The real Panora Python SDK (PyPI `panora-sdk`) against a real gateway process.

The SDK lives in a virtualenv of its own (conftest's `sdk_python`);
tests/sdk_client.py runs there as a subprocess.
What the SDK's models drop (remote_data's contents) is checked over raw HTTP.
"""

import json
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from conftest import E2E_API_KEYS, E2E_TOKEN, Server, clean_server, configured_gateway, contact_input, run_sdk_client

from gateway import sandbox

CLIENT = Path(__file__).with_name("sdk_client.py")
CONTACTS_CLIENT = Path(__file__).with_name("sdk_contacts_client.py")


def contacts_to_create(shared: Path) -> list[dict]:
    seed = contact_input(shared)
    # The seed's company_info_id is a Panora UUID, not a Formation company: the connection's company stands in.
    seed["company_info_id"] = sandbox.COMPANY_ID
    others = [{"name": f"SDK Contact {n}", "email_address": f"sdk{n}@example.com", "is_supplier": n % 2 == 1,
               "is_customer": n % 2 == 0, "tax_number": f"TAX-{n}"} for n in range(1, 5)]
    return [seed, *others]


@pytest.fixture(params=["embedded", "configured"])
def gateway(request: pytest.FixtureRequest, tmp_path: Path):
    """(server, api key, connection token): the embedded default, or configured against a sandbox process."""
    servers: list[Server] = []
    if request.param == "embedded":
        servers.append(clean_server(["serve"]))
        target = (servers[0], "gateway-demo-key", "sandbox-formation")
    else:
        servers.append(clean_server(["sandbox"], health="/contacts"))
        servers.append(configured_gateway(tmp_path, servers[0].url))
        target = (servers[1], E2E_API_KEYS[0], E2E_TOKEN)
    yield target
    logs = [s.stop() for s in reversed(servers)]
    assert not any("Traceback" in log for log in logs), logs


def test_sdk_create_list_retrieve(sdk_python: Path, gateway, shared: Path, tmp_path: Path) -> None:
    server, key, token = gateway
    wanted = contacts_to_create(shared)
    job = {"server_url": server.url, "api_key": key, "token": token, "contacts": wanted, "limit": 2}
    report = run_sdk_client(sdk_python, CLIENT, job, tmp_path)

    created = report["created"]
    assert [c["name"] for c in created] == [w["name"] for w in wanted]
    assert [c["email_address"] for c in created] == [w["email_address"] for w in wanted]
    assert [c["is_supplier"] for c in created] == [w["is_supplier"] for w in wanted]
    assert [c["is_customer"] for c in created] == [w["is_customer"] for w in wanted]
    assert [c["tax_number"] for c in created] == [w["tax_number"] for w in wanted]
    assert all(c["company_info_id"] == sandbox.COMPANY_ID and c["remote_id"] == c["id"] for c in created)
    assert all(isinstance(datetime.fromisoformat(c["created_at"].replace("Z", "+00:00")), datetime) for c in created)
    ids = [c["id"] for c in created]
    assert len(set(ids)) == len(ids) == 5

    # Paging with cursor= covers every contact once, two to a page.
    pages = report["pages"]
    listed = [r["id"] for page in pages for r in page["data"]]
    assert listed == ids, "a fresh gateway holds exactly the created contacts, in order"
    assert [len(p["data"]) for p in pages] == [2, 2, 1]
    assert pages[0]["prev_cursor"] is None and pages[-1]["next_cursor"] is None
    assert all(p["next_cursor"] for p in pages[:-1]) and all(p["prev_cursor"] for p in pages[1:])

    # The SDK's pager reads a null next_cursor as a cursor and starts over: why the client pages by hand.
    assert report["pager_after_last_page"] == pages[0]

    assert report["retrieved"] == created
    # The SDK's model keeps remote_data only as an empty object.
    assert report["retrieved_remote_data"]["remote_data"] == {}

    errors = report["errors"]
    for name, status, code in [("unknown_id", 404, "not_found"), ("unknown_token", 401, "invalid_connection_token"),
                               ("bad_key", 401, "invalid_api_key"), ("unmapped", 501, "operation_not_mapped"),
                               ("unmapped_create", 501, "operation_not_mapped")]:
        got = errors[name]
        assert got["raised"] == "SDKError" and got["status_code"] == status, (name, got)
        assert got["content_type"].startswith("application/json")
        body = json.loads(got["body"])
        assert body["statusCode"] == status and body["code"] == code, (name, body)
        assert body["message"] in got["text"], "the SDK shows the gateway's message"
    assert json.loads(errors["unmapped"]["body"])["operation"] == "list invoices"
    assert json.loads(errors["unmapped_create"]["body"])["operation"] == "create accounts"

    # What the SDK drops, over raw HTTP: the raw Formation record, and field_mappings (null: Formation has none).
    headers = {"x-api-key": key, "x-connection-token": token}
    raw = httpx.get(f"{server.url}/accounting/contacts/{ids[0]}", params={"remote_data": "true"}, headers=headers)
    assert raw.status_code == 200, raw.text
    record = raw.json()
    assert record["remote_data"]["id"] == ids[0]
    assert record["remote_data"]["full_name"] == wanted[0]["name"]
    assert record["remote_data"]["email"] == wanted[0]["email_address"]
    assert record["remote_data"]["type"] == "vendor"
    assert record["remote_data"]["billing"] == {"tax_id": wanted[0]["tax_number"]}
    assert isinstance(record["remote_data"]["created_at"], int)
    assert record["field_mappings"] is None
    assert {k: v for k, v in record.items() if k != "remote_data"} == {k: v for k, v in created[0].items()
                                                                      if k != "remote_data"}


def test_the_sdk_creates_panoras_documented_example_contact_as_it_is(sdk_python: Path, shared: Path,
                                                                      tmp_path: Path) -> None:
    """Panora's own example contact, sent verbatim by a new user against the embedded sandbox: its
    company_info_id is a Panora UUID, and any company id is a company in the sandbox."""
    example = contact_input(shared)
    assert example["company_info_id"] != sandbox.COMPANY_ID and example["field_mappings"]
    server = clean_server(["serve"])
    try:
        job = {"server_url": server.url, "api_key": "gateway-demo-key", "token": "sandbox-formation",
               "contacts": [example], "limit": 50, "unknown_id": "64b8f1a2e4b0c8d9f0ffffff"}
        report = run_sdk_client(sdk_python, CONTACTS_CLIENT, job, tmp_path)
    finally:
        log = server.stop()
    assert "Traceback" not in log, log
    [created] = report["created"]
    assert {k: created[k] for k in ("name", "is_supplier", "is_customer", "email_address", "tax_number", "status",
                                   "company_info_id")} == \
        {k: example[k] for k in ("name", "is_supplier", "is_customer", "email_address", "tax_number", "status",
                                 "company_info_id")}
    assert created["remote_id"] == created["id"]
    # The contact lives in the company it named; the connection's own company lists its own contacts.
    assert created["id"] not in [r["id"] for page in report["pages"] for r in page["data"]]
    assert report["retrieved"][0]["id"] == created["id"] and report["retrieved"][0]["name"] == example["name"]
