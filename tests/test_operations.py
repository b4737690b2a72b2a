"""What a platform team's tooling asks a running `gateway serve`: is it alive
(/healthz), ready (/readyz: configuration loaded, state store answering;
connections whose circuit is open reported, not failing readiness), and
which version (/version). Unauthenticated, JSON."""

from pathlib import Path

import httpx
from conftest import answer, clean_server, free_port
from fake_provider import GATEWAY_KEY, FakeFormation, gateway_env, write_connections, write_mapping


def test_health_readiness_and_version(tmp_path: Path):
    fake = FakeFormation().start()
    mappings = tmp_path / "mappings"
    write_mapping(mappings, "formation_ops", retries={"attempts": 1}, breaker={"failures": 1, "reset_after": 60})
    connections = write_connections(tmp_path / "connections.yaml", {"ops": ("formation_ops", fake.url)})
    server = clean_server(["serve"], gateway_env(mappings, connections,
                                                 GATEWAY_STATE_URL=f"sqlite://{tmp_path}/state.sqlite3"))
    try:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            assert answer(c.get("/healthz"), 200) == {"status": "ok"}
            ready = answer(c.get("/readyz"), 200)
            assert ready["status"] == "ready" and ready["state_store"] == "ok" and ready["connections"] == 1
            assert "formation_ops" in ready["providers"] and ready["open_circuits"] == []
            version = answer(c.get("/version"), 200)
            assert version["name"] == "gateway" and version["version"]

            # A provider failing for one connection: reported, and the instance stays ready.
            headers = {"x-api-key": GATEWAY_KEY, "x-connection-token": "ops"}
            answer(c.get("/accounting/contacts/status:500~ops", headers=headers), 502)
            ready = answer(c.get("/readyz"), 200)
            assert ready["open_circuits"] == [{"connection": "ops", "provider": "formation_ops"}]
    finally:
        assert "Traceback" not in server.stop()
        fake.stop()


def test_not_ready_while_the_state_store_does_not_answer(tmp_path: Path):
    server = clean_server(["serve"], {"GATEWAY_STATE_URL": f"redis://127.0.0.1:{free_port()}/0"})
    try:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            assert answer(c.get("/healthz"), 200) == {"status": "ok"}  # alive, but...
            ready = answer(c.get("/readyz"), 503)
            assert ready["status"] == "not_ready" and ready["state_store"].startswith("unreachable: ")
    finally:
        server.stop()
