"""The whole unified surface: every operation of Panora's accounting contract.

The operations are read from the contract at test time. Against the embedded
default, the operations Formation's mapping covers (contacts create, list and
retrieve) work; every other one answers 501 with JSON naming the provider and
the operation, never a 404 for a documented path, never a 500.
"""

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import contact_input, openapi, without_gateway_env

from gateway.app import create_app

with warnings.catch_warnings():  # starlette's advice to move to httpx2: not the gateway's concern
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

HEADERS = {"x-api-key": "gateway-demo-key", "x-connection-token": "sandbox-formation"}
METHODS = ("get", "post", "put", "patch", "delete")
MAPPED = {("create", "contacts"), ("list", "contacts"), ("retrieve", "contacts")}
EXPECTED_OPERATIONS = 48


@pytest.fixture(scope="module")
def spec(shared: Path) -> dict:
    return openapi(shared)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    app = create_app(environ=without_gateway_env())
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def resolve(spec: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def example(spec: dict, schema: dict) -> Any:
    """A request body built from the contract's own examples."""
    schema = resolve(spec, schema)
    if "example" in schema:
        return schema["example"]
    if schema.get("type") == "array":
        return [example(spec, schema["items"])]
    if schema.get("type") == "object" or "properties" in schema:
        return {name: example(spec, prop) for name, prop in schema.get("properties", {}).items()}
    return None


def operations(spec: dict) -> list[tuple[str, str, dict]]:
    return [(method, path, op) for path, item in spec["paths"].items() if path != "/passthrough"
            for method, op in item.items() if method in METHODS]


def query_for(op: dict) -> dict[str, str]:
    """Every documented query parameter, with a valid value (no cursor: only the gateway issues those)."""
    values = {"remote_data": "false", "limit": "10"}
    names = [p["name"] for p in op.get("parameters", []) if p.get("in") == "query"]
    assert set(names) <= {"remote_data", "limit", "cursor"}, names
    return {n: values[n] for n in names if n in values}


def test_every_operation_of_the_contract(client: TestClient, spec: dict, shared: Path) -> None:
    contact_fields = set(resolve(spec, {"$ref": "#/components/schemas/UnifiedAccountingContactOutput"})["properties"])
    body = contact_input(shared)
    del body["company_info_id"]  # the seed's Panora UUID is no Formation company: use the connection's
    seeded = client.post("/accounting/contacts", headers=HEADERS, json=body)
    assert seeded.status_code == 201, seeded.text
    known_id = seeded.json()["id"]

    exercised: list[tuple[str, str]] = []
    mapped_seen: set[tuple[str, str]] = set()
    problems: list[str] = []
    for method, path, op in operations(spec):
        obj = path.split("/")[2]
        verb = "create" if method == "post" else "retrieve" if "{id}" in path else "list"
        mapped = (verb, obj) in MAPPED
        if mapped:
            mapped_seen.add((verb, obj))
        kwargs: dict[str, Any] = {"params": query_for(op)}
        if method == "post":
            request_schema = op["requestBody"]["content"]["application/json"]["schema"]
            kwargs["json"] = example(spec, request_schema)
            if mapped:
                kwargs["json"].pop("company_info_id", None)
        url = path.replace("{id}", known_id if mapped else "some-id")
        response = client.request(method.upper(), url, headers=HEADERS, **kwargs)
        exercised.append((method, path))
        where = f"{method.upper()} {path}"

        if not response.headers.get("content-type", "").startswith("application/json"):
            problems.append(f"{where}: not JSON: {response.headers.get('content-type')}")
            continue
        data = response.json()
        if response.status_code == 500:
            problems.append(f"{where}: 500 {data}")
        elif mapped:
            expected = {"create": (201,), "list": (200,), "retrieve": (200, 404)}[verb]
            if response.status_code not in expected:
                problems.append(f"{where}: {response.status_code}, expected {expected}: {data}")
            elif verb == "list":
                if set(data) != {"prev_cursor", "next_cursor", "data"}:
                    problems.append(f"{where}: list keys {sorted(data)}")
                elif not data["data"] or any(set(r) != contact_fields for r in data["data"]):
                    problems.append(f"{where}: records do not carry the contract's fields: {data['data']}")
            elif set(data) != contact_fields:
                problems.append(f"{where}: keys {sorted(data)} are not the contract's {sorted(contact_fields)}")
        else:
            operation = f"{verb} {obj}"
            if response.status_code != 501:
                problems.append(f"{where}: {response.status_code}, expected 501: {data}")
            elif (data.get("statusCode"), data.get("code"), data.get("provider"), data.get("operation")) != (
                    501, "operation_not_mapped", "formation", operation):
                problems.append(f"{where}: 501 without provider 'formation' and operation {operation!r}: {data}")
            elif "formation" not in data.get("message", "") or operation not in data.get("message", ""):
                problems.append(f"{where}: message names neither provider nor operation: {data}")

    assert problems == []
    assert len(exercised) == len(set(exercised)) == EXPECTED_OPERATIONS
    assert mapped_seen == MAPPED


def test_retrieve_of_a_missing_contact_is_a_json_404(client: TestClient) -> None:
    response = client.get("/accounting/contacts/64b8f1a2e4b0c8d9f0ffffff", headers=HEADERS)
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_list_response_keys_and_paging(client: TestClient) -> None:
    for n in range(3):
        created = client.post("/accounting/contacts", headers=HEADERS,
                              json={"name": f"Surface {n}", "email_address": f"surface{n}@example.com"})
        assert created.status_code == 201, created.text
    seen: list[str] = []
    cursor = None
    for _ in range(50):
        params = {"limit": "1", **({"cursor": cursor} if cursor else {})}
        response = client.get("/accounting/contacts", headers=HEADERS, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert list(page) == ["prev_cursor", "next_cursor", "data"]
        assert len(page["data"]) == 1
        seen += [r["id"] for r in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) >= 3
