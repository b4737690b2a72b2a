"""`gateway serve --workers N` as real processes: a supervisor and its
workers on one port, in front of a fake provider (tests/fake_provider.py) and
a fake OAuth2 token endpoint (tests/fake_oauth.py).

/metrics is the sum over the workers whichever answers the scrape; SIGTERM
ends every worker after the calls under way, SIGHUP reloads every one; a
worker that dies stops the rest and the supervisor exits non-zero; two
workers on one SQLite state store never spend a refresh token twice, and an
Idempotency-Key creates once.
"""

import concurrent.futures
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, Server, answer, clean_server, free_port, without_gateway_env
from fake_provider import GATEWAY_KEY, FakeFormation, gateway_env, write_connections, write_mapping
from test_metrics import parse, scrape, value

WORKERS = 2


def workers_of(server: Server) -> list[int]:
    """The worker pids the supervisor names when it has started them."""
    deadline = time.monotonic() + 10
    while not (found := re.search(r"supervising \d+ workers on \S+ \(pids ([\d, ]+)\)", "".join(server._lines))):
        assert time.monotonic() < deadline, "".join(server._lines)
        time.sleep(0.05)
    return [int(pid) for pid in found.group(1).split(", ")]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")  # exited, not yet reaped


def wait_exit(server: Server, timeout: float = 20) -> int:
    code = server.process.wait(timeout)
    server.stop()
    return code


def worker_of(response: httpx.Response) -> str:
    """Which worker answered: the gateway's own request ids begin with a prefix of each process's."""
    return response.headers["x-request-id"].rsplit("-", 1)[0]


def start(directory: Path, fake: FakeFormation, *extra: str) -> Server:
    mappings = directory / "mappings"
    write_mapping(mappings, "formation", limits={"read_timeout": 5, "total_timeout": 5})
    connections = write_connections(directory / "connections.yaml", {"pooled": ("formation", fake.url)})
    return clean_server(["serve", "--workers", str(WORKERS), *extra],
                        gateway_env(mappings, connections, GATEWAY_STATE_URL=f"sqlite://{directory}/state.sqlite3"))


def call(server: Server, method: str, path: str, **kwargs) -> httpx.Response:
    """One call on a connection of its own: the kernel picks the worker for each."""
    headers = {"x-api-key": GATEWAY_KEY, "x-connection-token": "pooled", **kwargs.pop("headers", {})}
    return httpx.request(method, server.url + path, headers=headers, timeout=30, **kwargs)


def test_metrics_are_the_sum_over_the_workers_whichever_answers(tmp_path, fake):
    server = start(tmp_path, fake)
    answered = set()
    for n in range(30):
        response = call(server, "GET", f"/accounting/contacts/ok~summed-{n}")
        answer(response, 200)
        answered.add(worker_of(response))
    for n in range(10):
        answer(call(server, "POST", "/accounting/contacts", json={"name": f"ok~summed-{n}"}), 201)
    assert len(answered) == WORKERS, "the kernel gave every connection to one worker"
    scraped: dict[str, tuple[float, float]] = {}
    deadline = time.monotonic() + 20
    while len(scraped) < WORKERS or set(scraped.values()) != {(30, 10)}:
        assert time.monotonic() < deadline, scraped
        response = httpx.get(server.url + "/metrics", timeout=10)
        samples = parse(response)
        labels = {"provider": "formation", "object": "contacts"}
        scraped[worker_of(response)] = (
            value(samples, "gateway_requests_total", operation="retrieve", status="200", **labels),
            value(samples, "gateway_requests_total", operation="create", status="201", **labels))
        time.sleep(0.05)
    samples = scrape(server.url)
    assert value(samples, "gateway_request_duration_seconds_count", operation="retrieve", provider="formation",
                 object="contacts") == 30
    assert value(samples, "gateway_upstream_duration_seconds_count", provider="formation") == 40
    assert value(samples, "gateway_circuit_state", connection="pooled", provider="formation") == 0
    assert wait_exit(_terminate(server)) == 0


def _terminate(server: Server) -> Server:
    server.process.send_signal(signal.SIGTERM)
    return server


def test_sigterm_ends_every_worker_after_the_calls_under_way(tmp_path, fake):
    server = start(tmp_path, fake)
    pids = workers_of(server)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        slow = [pool.submit(call, server, "GET", f"/accounting/contacts/slow:1~draining-{n}") for n in range(4)]
        assert all(fake.wait_for(1, name=f"slow:1~draining-{n}") == 1 for n in range(4))
        server.process.send_signal(signal.SIGTERM)
        for future in slow:
            answer(future.result(), 200)
    assert wait_exit(server) == 0
    assert all(gone(pid) for pid in pids), pids
    assert server.log.count("shutting down: no new connections") == WORKERS, server.log
    assert "Traceback" not in server.log, server.log


def test_sighup_reloads_every_worker(tmp_path, fake):
    server = start(tmp_path, fake)
    workers_of(server)
    deadline = time.monotonic() + 10
    while server.log.count("listening on") < WORKERS:
        server.log = "".join(server._lines)
        assert time.monotonic() < deadline, server.log
        time.sleep(0.05)
    server.process.send_signal(signal.SIGHUP)
    while value(scrape(server.url), "gateway_reloads_total", outcome="applied") < WORKERS:
        assert time.monotonic() < deadline + 5, "".join(server._lines)
        time.sleep(0.1)
    answer(call(server, "GET", "/accounting/contacts/ok~reloaded"), 200)
    assert wait_exit(_terminate(server)) == 0
    assert server.log.count("reloaded (SIGHUP)") == WORKERS, server.log


def test_a_worker_that_dies_stops_the_others_and_the_supervisor_exits_non_zero(tmp_path, fake):
    server = start(tmp_path, fake)
    killed, other = workers_of(server)
    answer(call(server, "GET", "/accounting/contacts/ok~before-the-crash"), 200)
    os.kill(killed, signal.SIGKILL)
    assert wait_exit(server) == 1
    assert gone(other)
    assert f"worker {killed} exited unexpectedly (signal SIGKILL)" in server.log, server.log


def test_a_configuration_the_workers_cannot_load_exits_2(tmp_path):
    env = {**without_gateway_env(), "GATEWAY_API_KEYS": "k", "GATEWAY_CONNECTIONS": str(tmp_path / "missing.yaml")}
    done = subprocess.run([sys.executable, "-m", "gateway", "serve", "--workers", "2", "--port", str(free_port())],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "cannot start" in done.stderr and "missing.yaml" in done.stderr


@pytest.mark.parametrize("workers", ["0", "-1", "many"])
def test_workers_must_be_a_count_or_auto(workers):
    done = subprocess.run([sys.executable, "-m", "gateway", "serve", "--workers", workers], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--workers" in done.stderr, done.stderr


def test_two_workers_on_one_sqlite_store_create_once_per_idempotency_key(tmp_path, fake):
    server = start(tmp_path, fake)
    key, name = uuid.uuid4().hex, "slow:0.5~workers-once"
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda _: call(server, "POST", "/accounting/contacts", json={"name": name},
                                                 headers={"idempotency-key": key}), range(16)))
    for response in responses:
        answer(response, 201)
    assert len({worker_of(r) for r in responses}) == WORKERS, "the kernel gave every connection to one worker"
    assert len({r.content for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") != "true" for r in responses) == 1
    assert fake.count("POST", "/contacts", name) == 1
    assert value(scrape(server.url), "gateway_idempotency_replays_total") >= 1
    assert wait_exit(_terminate(server)) == 0


def test_two_workers_on_one_sqlite_store_never_spend_a_refresh_token_twice(tmp_path):
    from test_oauth2 import Setup, load

    built = Setup(tmp_path)
    try:
        built.write_connections(built.tokens.issue_refresh_token())
        env = gateway_env(built.mappings, built.connections, GATEWAY_STATE_URL=f"sqlite://{tmp_path}/state.sqlite3")
        server = clean_server(["serve", "--workers", str(WORKERS)], env)
        built.gateways.append(server)
        # One client per thread, so connections spread over the workers and stay there.
        statuses = load([server], seconds=8, threads=8)
        assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
        assert built.tokens.reused == []
        assert 3 <= built.tokens.count() <= 5, built.tokens.grants  # one per expiry, for both workers
        refreshed = value(scrape(server.url), "gateway_token_refreshes_total", connection="oauth-conn",
                          provider=built.provider, outcome="ok")
        assert refreshed == built.tokens.count()
    finally:
        built.close()


def _open_store(path: str, barrier) -> str:
    from gateway.store import SqliteStore

    barrier.wait()
    try:
        SqliteStore(Path(path))
        return "ok"
    except Exception as exc:  # noqa: BLE001 - what a worker's start would die of
        return repr(exc)


def test_workers_starting_together_all_open_a_new_sqlite_store(tmp_path):
    """Workers set up the state file at once: the one SQLite answers "locked" tries again."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, concurrent.futures.ProcessPoolExecutor(4, mp_context=context) as pool:
        for round_ in range(25):
            barrier = manager.Barrier(4)
            path = str(tmp_path / f"state{round_}.sqlite3")
            results = list(pool.map(_open_store, [path] * 4, [barrier] * 4))
            assert results == ["ok"] * 4, results
