"""What `gateway serve` logs, as a log collector reads it: every line JSON;
one line per request with its request id (the caller's X-Request-ID, or one
of the gateway's own, returned in the answer), method, path template,
connection name, provider, upstream status and time, status, duration, error
code and ignored fields; never a credential, API key or connection token."""

import json
import socket
from pathlib import Path

import httpx
import yaml
from conftest import clean_server
from fake_provider import API_KEY, COMPANY_ID, GATEWAY_KEY, FakeFormation, gateway_env, write_mapping

TOKEN = "logs-connection-token-3f9a"  # a secret: never logged


def test_every_line_is_json_and_a_request_is_one_line_without_secrets(tmp_path: Path):
    fake = FakeFormation().start()
    mappings = tmp_path / "mappings"
    write_mapping(mappings, "formation_logs")
    connections = tmp_path / "connections.yaml"
    connections.write_text(yaml.safe_dump([{"token": TOKEN, "name": "acme-books", "provider": "formation_logs",
                                            "base_url": fake.url, "credentials": {"api_key": API_KEY},
                                            "context": {"company_id": COMPANY_ID}}]))
    server = clean_server(["serve"], gateway_env(mappings, connections))
    try:
        with httpx.Client(base_url=server.url, timeout=10,
                          headers={"x-api-key": GATEWAY_KEY, "x-connection-token": TOKEN}) as c:
            created = c.post("/accounting/contacts", json={"name": "ok~logged", "currency": "EUR"},
                             headers={"x-request-id": "trace-123"})
            assert created.status_code == 201 and created.headers["x-request-id"] == "trace-123"
            retrieved = c.get("/accounting/contacts/ok~secret-id")
            made = retrieved.headers["x-request-id"]  # none given: one of the gateway's own, each request its own
            assert retrieved.status_code == 200 and made and made != created.headers["x-request-id"]
            refused = c.get("/accounting/contacts/ok~x", headers={"x-api-key": "wrong", "x-request-id": "bad id\\"})
            assert refused.status_code == 401 and refused.headers["x-request-id"] not in ("bad id\\", made)
    finally:
        log = server.stop()
        fake.stop()
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]  # every line JSON
    assert any(line["message"].startswith("listening on") for line in lines)
    # Lifecycle lines name their event, for a collector to filter on.
    assert [line["event"] for line in lines if "event" in line] == ["ready", "listening", "shutting_down"]
    requests = [line for line in lines if line["logger"] == "gateway.access"]
    create, retrieve, refusal = [r for r in requests if r["path"].startswith("/accounting/")]
    assert create["request_id"] == "trace-123" and create["time"].endswith("Z")
    assert {k: create[k] for k in ("method", "path", "status", "connection", "provider", "upstream_status",
                                   "ignored_fields")} == {
        "method": "POST", "path": "/accounting/contacts", "status": 201, "connection": "acme-books",
        "provider": "formation_logs", "upstream_status": 201, "ignored_fields": "$.currency"}
    assert create["duration_ms"] >= create["upstream_ms"] > 0
    assert retrieve["path"] == "/accounting/contacts/{id}" and retrieve["request_id"] == retrieved.headers["x-request-id"]
    assert refusal["status"] == 401 and refusal["error"] == "invalid_api_key" and "provider" not in refusal
    assert not any(line["level"] == "warning" for line in lines), "an ignored field is the request's field, not a warning"
    for secret in (TOKEN, GATEWAY_KEY, API_KEY, "wrong", "secret-id", "logged"):
        assert secret not in log, secret


def test_a_request_refused_before_any_route_and_a_path_no_route_has_are_lines_too(tmp_path: Path):
    """What the server refuses itself (bad HTTP, a head or body too large) is logged
    like any request; a path no route has is logged as `(unmatched)`, never as sent."""
    server = clean_server(["serve"], {"GATEWAY_MAX_BODY_BYTES": "100"})
    try:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            assert c.post("/accounting/contacts", content=b"x" * 300).status_code == 413
            assert c.get("/healthz").status_code == 200
            assert c.get("/docs/assets/nothing-here.js").status_code == 404
            assert c.get("/elsewhere/secret-path-7f3e").status_code == 404
            assert c.get("/accounting/contacts/a/secret-deeper-9b1d").json()["code"] == "no_such_path"
            unknown = c.put("/accounting/contact", json={})
            assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_object", unknown.text
            assert c.get("/accounting/con%0Atacts%20secret-line").json()["code"] == "unknown_object"
        host, port = server.url.removeprefix("http://").split(":")
        for raw in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n"):
            with socket.create_connection((host, int(port)), timeout=10) as s:
                s.sendall(raw)
                assert s.recv(100).split(b" ")[1] in (b"400", b"431")
    finally:
        log = server.stop()
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    requests = [(r["method"], r["path"], r["status"], r.get("error")) for r in lines if r["logger"] == "gateway.access"]
    assert requests[0][:2] == ("GET", "/health")  # the test's own wait for the server
    assert requests[1:] == [
        ("POST", "(unmatched)", 413, "body_too_large"),
        ("GET", "/healthz", 200, None),
        ("GET", "/docs/assets/{path}", 404, None),
        ("GET", "(unmatched)", 404, None),
        ("GET", "(unmatched)", 404, "no_such_path"),
        ("PUT", "(unmatched)", 404, "unknown_object"),  # an object no route has is logged as none
        ("GET", "(unmatched)", 404, "unknown_object"),  # nor can a newline in one forge a line
        (None, "(unmatched)", 400, "malformed_request"),
        ("GET", "(unmatched)", 431, "headers_too_large"),
    ], requests
    assert all(r["request_id"] for r in lines if r["logger"] == "gateway.access")
    assert "secret-" not in log


def test_text_lines_for_people_carry_the_same_fields():
    server = clean_server(["serve", "--log-format", "text"])
    try:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            assert c.get("/accounting/contacts", headers={"x-request-id": "text-1"}).status_code == 401
    finally:
        log = server.stop()
    line = next(line for line in log.splitlines() if "request_id=text-1" in line)
    assert " INFO gateway.access: request " in line and "status=401" in line and "error=" in line, line
    assert not log.lstrip().startswith("{"), "no JSON for people"
