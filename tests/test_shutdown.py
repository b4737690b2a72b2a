"""Graceful shutdown of a real `gateway serve` process on SIGTERM (what Docker
and Kubernetes send): calls under way finish, new connections are refused,
the process exits 0, within `--graceful-timeout` even if a call would not end.
"""

import concurrent.futures
import signal
import socket
import time
from pathlib import Path

import httpx
from conftest import Server, clean_server
from fake_provider import GATEWAY_KEY, FakeFormation, gateway_env, write_connections, write_mapping


def start(directory: Path, fake: FakeFormation, args: list[str], limits: dict) -> Server:
    mappings = directory / "mappings"
    write_mapping(mappings, "formation", limits=limits)
    connections = write_connections(directory / "connections.yaml", {"shutdown": ("formation", fake.url)})
    return clean_server(["serve", *args], gateway_env(mappings, connections,
                                                      GATEWAY_IDEMPOTENCY_URL=f"sqlite://{directory}/store.sqlite3"))


def client_for(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30,
                        headers={"x-api-key": GATEWAY_KEY, "x-connection-token": "shutdown"})


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return False
    except OSError:
        return True


def wait_refused(port: int, within: float) -> float:
    start = time.monotonic()
    while not refused(port):
        assert time.monotonic() - start < within, f"port {port} still accepts connections {within} s after SIGTERM"
        time.sleep(0.02)
    return time.monotonic() - start


def test_calls_under_way_finish_and_the_process_exits_0(tmp_path, fake):
    server = start(tmp_path, fake, [], {"read_timeout": 5, "total_timeout": 5})
    try:
        with client_for(server) as reads, client_for(server) as creates, \
                concurrent.futures.ThreadPoolExecutor(2) as pool:
            read = pool.submit(reads.get, "/accounting/contacts/slow:1~shutdown")
            created = pool.submit(creates.post, "/accounting/contacts",
                                  json={"name": "slow:1~shutdown", "email_address": "s@example.com"},
                                  headers={"idempotency-key": "shutdown-1"})
            assert fake.wait_for(1, path="/contacts/slow:1~shutdown") == 1
            assert fake.wait_for(1, method="POST", name="slow:1~shutdown") == 1
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)

            assert wait_refused(server.port, within=1.0) < 1.0
            assert read.result().status_code == 200, read.result().text
            assert read.result().json()["id"] == "slow:1~shutdown"
            assert created.result().status_code == 201, created.result().text
        assert server.process.wait(5) == 0
        assert time.monotonic() - signalled < 5
    finally:
        log = server.stop()
    assert "Traceback" not in log, log
    assert fake.count("POST", "/contacts", "slow:1~shutdown") == 1


def test_graceful_timeout_bounds_a_call_that_would_not_end(tmp_path, fake):
    # The provider never answers and the mapping would wait a minute: --graceful-timeout decides.
    limits = {"read_timeout": 60, "total_timeout": 60}
    server = start(tmp_path, fake, ["--graceful-timeout", "1"], limits)
    body = {"name": "hang~cut-short", "email_address": "s@example.com"}
    try:
        with client_for(server) as reads, client_for(server) as creates, \
                concurrent.futures.ThreadPoolExecutor(2) as pool:
            read = pool.submit(reads.get, "/accounting/contacts/hang~shutdown")
            created = pool.submit(creates.post, "/accounting/contacts", json=body,
                                  headers={"idempotency-key": "cut-short"})
            assert fake.wait_for(1, path="/contacts/hang~shutdown") == 1
            assert fake.wait_for(1, method="POST", name="hang~cut-short") == 1
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            wait_refused(server.port, within=1.0)
            assert server.process.wait(5) == 0
            assert time.monotonic() - signalled < 1 + 2.5
            for call in (read, created):
                # One of ours, saying why: JSON, never a bare 500.
                response = call.result()
                assert response.status_code == 503, response.text
                assert response.headers["content-type"].startswith("application/json")
                assert response.json()["code"] == "shutting_down"
    finally:
        log = server.stop()
    assert "Traceback" not in log, log
    # The gateway let go of the provider's connections on its way out.
    assert fake.wait_idle(5) == 0

    # The create may have happened: a retry, on the next instance, does not create again.
    server = start(tmp_path, fake, [], limits)
    try:
        with client_for(server) as client:
            again = client.post("/accounting/contacts", json=body, headers={"idempotency-key": "cut-short"})
        assert again.status_code == 503 and again.json()["code"] == "shutting_down", again.text
        assert again.headers["idempotent-replayed"] == "true"
    finally:
        server.stop()
    assert fake.count("POST", "/contacts", "hang~cut-short") == 1
