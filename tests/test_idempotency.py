"""Idempotency-Key on creates: the stores, then real gateway processes in front
of the fault-injecting fake Formation (tests/fake_provider.py), then two
gateway processes sharing one real redis-server.

The promise under test: one Idempotency-Key, one upstream create, whatever the
retries, their timing or the instance they reach; the same answer to each.
"""

import asyncio
import concurrent.futures
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Server, clean_server
from fake_provider import GATEWAY_KEY, FakeFormation, gateway_env, write_connections, write_mapping

from gateway import idempotency
from gateway.idempotency import Entries, Entry
from gateway.store import RedisStore, SqliteStore, open_store as open_state_store

# A waiting retry waits up to total_timeout for the first request's answer.
LIMITS = {"read_timeout": 1.0, "total_timeout": 2.0}


# -- (a) the stores ----------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "redis"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable:
    """A factory of stores on one backend: each call is another process's view of it."""
    if request.param == "sqlite":
        return lambda: Entries(SqliteStore(tmp_path / "state.sqlite3"))
    url = request.getfixturevalue("redis_url")
    return lambda: Entries(RedisStore(url))


def test_reserve_get_complete_release(open_store):
    async def scenario() -> None:
        store = open_store()
        key = uuid.uuid4().hex
        try:
            assert await store.get(key) is None
            assert await store.reserve(key, Entry("print-1")) is None  # ours
            held = await store.get(key)
            assert held == Entry("print-1") and held.pending
            # A second claim, same request or not, gets what the key holds.
            assert await store.reserve(key, Entry("print-1")) == held
            assert await store.reserve(key, Entry("print-2")) == held

            done = Entry("print-1", 201, {"content-type": "application/json", "x-gateway-unmapped": "why"},
                         b'{"id": "1"}\x00\xff')
            await store.complete(key, done)
            assert await store.get(key) == done and not done.pending
            assert await store.reserve(key, Entry("print-1")) == done

            await store.release(key)
            assert await store.get(key) is None
            assert await store.reserve(key, Entry("print-3")) is None  # free again
            await store.release(key)
        finally:
            await store.store.aclose()

    asyncio.run(scenario())


def test_two_processes_share_one_store(open_store):
    async def scenario() -> None:
        first, second = open_store(), open_store()
        key = uuid.uuid4().hex
        try:
            assert await first.reserve(key, Entry("a")) is None
            assert (await second.reserve(key, Entry("a"))).pending
            await first.complete(key, Entry("a", 201, {}, b"{}"))
            assert await second.get(key) == Entry("a", 201, {}, b"{}")
            await second.release(key)
            assert await first.get(key) is None
        finally:
            await first.store.aclose()
            await second.store.aclose()

    asyncio.run(scenario())


def test_a_waiting_retry_sees_the_answer_or_the_release(open_store):
    async def scenario() -> None:
        store = open_store()
        answered, released = uuid.uuid4().hex, uuid.uuid4().hex
        try:
            for key in (answered, released):
                assert await store.reserve(key, Entry("a")) is None

            async def finish() -> None:
                await asyncio.sleep(0.1)
                await store.complete(answered, Entry("a", 201, {}, b"{}"))
                await store.release(released)

            finishing = asyncio.create_task(finish())
            assert (await idempotency.wait_for_answer(store, answered, 5)).status == 201
            assert await idempotency.wait_for_answer(store, released, 5) is None
            await finishing
            # Still pending at the deadline: the pending entry, after about the timeout.
            pending = uuid.uuid4().hex
            await store.reserve(pending, Entry("a"))
            start = time.monotonic()
            assert (await idempotency.wait_for_answer(store, pending, 0.3)).pending
            assert 0.25 < time.monotonic() - start < 2
            await store.release(pending)
        finally:
            await store.store.aclose()

    asyncio.run(scenario())


def test_open_store_reads_the_url(tmp_path, redis_url, monkeypatch):
    assert isinstance(open_state_store(redis_url), RedisStore)
    store = open_state_store(f"sqlite://{tmp_path}/here.sqlite3")
    assert isinstance(store, SqliteStore) and (tmp_path / "here.sqlite3").exists()
    asyncio.run(store.aclose())
    with pytest.raises(ValueError, match="redis://"):
        open_state_store("http://example.com/store")
    # Unset: a file that survives restarts, where XDG says state goes.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    store = open_state_store(None)
    assert (tmp_path / "state" / "gateway" / "state.sqlite3").exists()
    asyncio.run(store.aclose())


def test_a_redis_that_does_not_answer_is_a_503_before_any_create(tmp_path):
    import httpx
    from starlette.testclient import TestClient

    from conftest import free_port
    from gateway.app import create_app
    from gateway.settings import from_environ

    connections = tmp_path / "c.yaml"
    connections.write_text("- {token: t, provider: formation, base_url: 'https://formation.test', "
                           "credentials: {api_key: k}, context: {company_id: c}}\n")
    env = {"GATEWAY_API_KEYS": "key", "GATEWAY_CONNECTIONS": str(connections),
           "GATEWAY_IDEMPOTENCY_URL": f"redis://127.0.0.1:{free_port()}/0"}
    # No provider is mocked: a call upstream would fail the request differently.
    app = create_app(from_environ(env), environ=env, transport=httpx.MockTransport(lambda r: httpx.Response(500)))
    with TestClient(app) as client:
        response = client.post("/accounting/contacts", json={"name": "A"},
                               headers={"x-api-key": "key", "x-connection-token": "t", "Idempotency-Key": "k1"})
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "idempotency_unavailable" and response.headers["retry-after"] == "1"


# -- (b) end to end: one gateway, SQLite -----------------------------------------------


def _configure(directory: Path, fake: FakeFormation) -> tuple[Path, Path]:
    mappings = directory / "mappings"
    write_mapping(mappings, "formation", limits=LIMITS)
    connections = write_connections(directory / "connections.yaml", {
        "idem": ("formation", fake.url), "idem-other": ("formation", fake.url)})
    return mappings, connections


def _stop(server: Server) -> None:
    log = server.stop()
    assert "Traceback" not in log and "unexpected error" not in log, log


@pytest.fixture(scope="module")
def gateway(fake: FakeFormation, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("idempotency")
    mappings, connections = _configure(directory, fake)
    server = clean_server(["serve"], gateway_env(mappings, connections,
                                                 GATEWAY_IDEMPOTENCY_URL=f"sqlite://{directory}/store.sqlite3"))
    yield server
    _stop(server)


def client_for(server: Server, token: str = "idem") -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30, headers={"x-api-key": GATEWAY_KEY, "x-connection-token": token})


@pytest.fixture
def client(gateway: Server) -> Iterator[httpx.Client]:
    with client_for(gateway) as c:
        yield c


def contact(name: str, **extra) -> dict:
    return {"name": name, "email_address": "idem@example.com", "is_supplier": True, **extra}


def create(client: httpx.Client, key: str, body: dict, **params) -> httpx.Response:
    return client.post("/accounting/contacts", json=body, headers={"idempotency-key": key}, params=params)


def status(response: httpx.Response, expected: int, code: str | None = None) -> httpx.Response:
    assert response.status_code != 500, response.text
    assert response.status_code == expected, response.text
    assert response.headers["content-type"].startswith("application/json")
    if code is not None:
        assert response.json()["code"] == code, response.text
    return response


def replayed(response: httpx.Response) -> bool:
    return response.headers.get("idempotent-replayed") == "true"


def assert_created_once(responses: list[httpx.Response], fake, name: str) -> None:
    """Concurrent creates under one key: one ran, the others replayed its answer."""
    for response in responses:
        status(response, 201)
    assert len({r.content for r in responses}) == 1, [r.text for r in responses]
    assert sum(not replayed(r) for r in responses) == 1
    assert fake.count("POST", "/contacts", name) == 1


def test_a_retry_replays_the_first_answer_and_creates_nothing(client, fake):
    key, name = uuid.uuid4().hex, "ok~replay"
    body = contact(name, currency="EUR")  # a field Formation does not carry: x-gateway-ignored-fields
    first = status(create(client, key, body), 201)
    assert not replayed(first) and first.headers["x-gateway-ignored-fields"] == "$.currency"
    again = status(create(client, key, body), 201)
    assert replayed(again)
    assert again.content == first.content
    assert again.headers["x-gateway-ignored-fields"] == "$.currency"
    assert fake.count("POST", "/contacts", name) == 1


def test_a_key_reused_with_another_request_is_422(client, fake):
    key, name = uuid.uuid4().hex, "ok~reused"
    status(create(client, key, contact(name)), 201)
    status(create(client, key, contact(name, tax_number="other")), 422, "idempotency_key_reused")
    status(create(client, key, contact(name), remote_data="true"), 422, "idempotency_key_reused")
    assert fake.count("POST", "/contacts", name) == 1


def test_concurrent_retries_wait_for_one_create(client, fake):
    key, name = uuid.uuid4().hex, "slow:0.5~concurrent"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: create(client, key, contact(name)), range(8)))
    assert_created_once(responses, fake, name)


def test_another_request_under_a_pending_key_is_refused_at_once(client, fake):
    key, name = uuid.uuid4().hex, "slow:0.8~pending"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(create, client, key, contact(name))
        assert fake.wait_for(1, name=name) == 1
        start = time.monotonic()
        status(create(client, key, contact(name, tax_number="other")), 422, "idempotency_key_reused")
        assert time.monotonic() - start < 0.5, "it waited for the other request's answer"
        status(first.result(), 201)
    assert fake.count("POST", "/contacts", name) == 1


def test_a_create_the_provider_rejected_may_run_again(client, fake):
    key, name = uuid.uuid4().hex, "flaky:1:400~rejected"
    status(create(client, key, contact(name)), 400, "upstream_rejected")
    created = status(create(client, key, contact(name)), 201)
    assert not replayed(created)
    assert replayed(status(create(client, key, contact(name)), 201))
    assert fake.count("POST", "/contacts", name) == 2


def test_a_rate_limited_create_may_run_again(client, fake):
    key, name = uuid.uuid4().hex, "status:429:30~limited"
    for _ in range(2):
        status(create(client, key, contact(name)), 429, "upstream_rate_limited")
    assert fake.count("POST", "/contacts", name) == 2


@pytest.mark.parametrize("spec, code, answer", [
    ("hang", "upstream_timeout", 504),
    ("status:500", "upstream_error", 502),
    ("drop", "upstream_unreachable", 502),
    ("truncated", "upstream_invalid_response", 502),
    ("big", "upstream_response_too_large", 502),
    ("cuthead", "upstream_unreachable", 502),
    ("hugehead", "upstream_response_too_large", 502),
    ("switch", "upstream_unreachable", 502),
])
def test_a_create_that_may_have_happened_keeps_its_answer(client, fake, spec, code, answer):
    """The provider may have created the record: the answer stays, no second create."""
    key, name = uuid.uuid4().hex, f"{spec}~maybe-done"
    first = status(create(client, key, contact(name)), answer, code)
    again = status(create(client, key, contact(name)), answer, code)
    assert replayed(again) and again.content == first.content
    assert fake.count("POST", "/contacts", name) == 1


@pytest.mark.parametrize("spec", [
    "shape",  # an answer the mapping cannot read
    "interim:100",  # 100 Continue first, then the 201
])
def test_a_created_record_is_kept_for_replay_however_it_was_answered(client, fake, spec):
    key, name = uuid.uuid4().hex, f"{spec}~idem"
    first = status(create(client, key, contact(name)), 201)
    again = status(create(client, key, contact(name)), 201)
    assert replayed(again) and again.content == first.content
    assert ("x-gateway-unmapped" in first.headers) == (spec == "shape")
    assert again.headers.get("x-gateway-unmapped") == first.headers.get("x-gateway-unmapped")
    assert fake.count("POST", "/contacts", name) == 1


def test_keys_belong_to_their_connection(gateway, client, fake):
    key, name = uuid.uuid4().hex, "ok~scoped"
    status(create(client, key, contact(name)), 201)
    with client_for(gateway, "idem-other") as other:
        assert not replayed(status(create(other, key, contact(name)), 201))
    assert fake.count("POST", "/contacts", name) == 2


@pytest.mark.parametrize("key", ["", "k" * 256])
def test_a_key_of_the_wrong_length_is_400(client, fake, key):
    status(create(client, key, contact("ok~badkey")), 400, "invalid_idempotency_key")
    assert fake.count("POST", "/contacts", "ok~badkey") == 0


# -- (c) two gateway processes, one Redis ------------------------------------------------


@pytest.fixture(scope="module")
def pair(fake: FakeFormation, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    mappings, connections = _configure(tmp_path_factory.mktemp("pair"), fake)
    env = gateway_env(mappings, connections, GATEWAY_IDEMPOTENCY_URL=redis_url)
    servers = []
    try:
        for _ in range(2):
            servers.append(clean_server(["serve"], env))
        yield servers
    finally:
        for server in servers:
            _stop(server)


def test_two_instances_one_create_concurrently(pair, fake):
    key, name = uuid.uuid4().hex, "slow:0.5~pair-concurrent"
    clients = [client_for(server) for server in pair]
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda i: create(clients[i % 2], key, contact(name)), range(8)))
    finally:
        for c in clients:
            c.close()
    assert_created_once(responses, fake, name)


def test_two_instances_one_create_sequentially(pair, fake):
    key, name = uuid.uuid4().hex, "ok~pair-sequential"
    with client_for(pair[0]) as first, client_for(pair[1]) as second:
        created = status(create(first, key, contact(name)), 201)
        again = status(create(second, key, contact(name)), 201)
        assert replayed(again) and again.content == created.content
        status(create(second, key, contact(name, tax_number="other")), 422, "idempotency_key_reused")
        # A timeout on one instance is kept for the other too.
        hung = uuid.uuid4().hex
        status(create(first, hung, contact("hang~pair")), 504, "upstream_timeout")
        assert replayed(status(create(second, hung, contact("hang~pair")), 504, "upstream_timeout"))
    assert fake.count("POST", "/contacts", name) == 1
    assert fake.count("POST", "/contacts", "hang~pair") == 1
