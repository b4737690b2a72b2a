"""The upstream path under provider faults: a real `gateway serve` process in
front of a fault-injecting fake Formation (tests/fake_provider.py) on loopback.

For every fault: the README's unified error (status and code, never a 500),
within the mapping's time bounds, the gateway healthy afterwards, and the
number of attempts that reached the provider: a GET is retried, a create is
not once its bytes may have arrived (no duplicate), except a 429 or 503, which
the provider answers before doing anything. Then the circuit breaker, the
per-connection concurrency cap, the request body cap, "nothing lost" on an
unreadable create answer, and no sockets left behind.
"""

import concurrent.futures
import json
import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import Server, answer, clean_server, free_port
from fake_provider import (FAST_LIMITS, FAST_RETRIES, GATEWAY_KEY, FakeFormation, gateway_env, sockets,
                           write_connections, write_mapping)

ATTEMPTS = FAST_RETRIES["attempts"]
TOTAL = FAST_LIMITS["total_timeout"]
READ = FAST_LIMITS["read_timeout"]
SLACK = 2.0  # seconds of grace on every time bound: loaded CI machines
BREAKER = {"failures": 3, "reset_after": 1.0}
MAX_BODY = 4096


@pytest.fixture(scope="module")
def gateway(fake: FakeFormation, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("faults")
    mappings = directory / "mappings"
    write_mapping(mappings, "formation")
    # Slow enough a probe (slow:1) that a second call surely comes while it is under way.
    write_mapping(mappings, "formation_breaker", limits={"read_timeout": 3, "total_timeout": 3},
                  retries={"attempts": 1}, breaker=BREAKER)
    write_mapping(mappings, "formation_busy", limits={"max_in_flight": 2, "read_timeout": 3, "total_timeout": 3})
    write_mapping(mappings, "formation_retrying", breaker={"failures": 2, "reset_after": 30})
    write_mapping(mappings, "formation_put", create_method="PUT")  # as Xero creates
    connections = write_connections(directory / "connections.yaml", {
        "faults": ("formation", fake.url),
        "breaker": ("formation_breaker", fake.url),
        "busy": ("formation_busy", fake.url),
        "retrying": ("formation_retrying", fake.url),
        "put": ("formation_put", fake.url),
        "nobody-home": ("formation", f"http://127.0.0.1:{free_port()}"),
    })
    server = clean_server(["serve"], gateway_env(mappings, connections, GATEWAY_MAX_BODY_BYTES=str(MAX_BODY),
                                                 GATEWAY_IDEMPOTENCY_URL=f"sqlite://{directory}/idempotency.sqlite3"))
    yield server
    log = server.stop()
    assert "Traceback" not in log and "unexpected error" not in log, log
    assert "retrying: circuit open after 2 failed call(s) in a row" in log, log
    assert "breaker: circuit closed, the probe succeeded" in log, log
    events = [json.loads(line) for line in log.splitlines() if '"event":"circuit_' in line]
    assert {(e["event"], e["connection"]) for e in events} >= {("circuit_open", "retrying"), ("circuit_closed", "breaker")}


def client_for(gateway: Server, token: str) -> httpx.Client:
    return httpx.Client(base_url=gateway.url, timeout=30,
                        headers={"x-api-key": GATEWAY_KEY, "x-connection-token": token})


@pytest.fixture
def client(gateway: Server) -> Iterator[httpx.Client]:
    with client_for(gateway, "faults") as c:
        yield c


@pytest.fixture(autouse=True)
def stays_healthy(request: pytest.FixtureRequest, gateway: Server) -> Iterator[None]:
    """After every test, the gateway still serves: /health and a plain retrieve."""
    yield
    with client_for(gateway, "faults") as c:
        assert c.get("/health").json() == {"status": "ok"}
        tag = request.node.name[-40:].replace("/", "_")
        answer(c.get(f"/accounting/contacts/ok~health-{tag}"), 200)
    assert gateway.process.poll() is None, "the gateway process died"




def error(response: httpx.Response, status: int, code: str) -> dict:
    body = answer(response, status)
    assert body["statusCode"] == status and body["code"] == code, body
    assert isinstance(body["error"], str) and body["error"] and isinstance(body["message"], str) and body["message"]
    return body


def timed(call, *args, **kwargs) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    response = call(*args, **kwargs)
    return response, time.monotonic() - start


def contact(name: str) -> dict:
    return {"name": name, "email_address": "fault@example.com", "is_customer": True}


# -- reads: retried up to `attempts` --------------------------------------------------

# spec, status, code, attempts that reach the provider, seconds at least, seconds at most (before SLACK)
READ_FAULTS = [
    ("hang", 504, "upstream_timeout", ATTEMPTS, ATTEMPTS * READ, ATTEMPTS * TOTAL),
    ("drop", 502, "upstream_unreachable", ATTEMPTS, 0, 1),
    ("reset", 502, "upstream_unreachable", ATTEMPTS, 0, 1),
    ("status:500", 502, "upstream_error", ATTEMPTS, 0, 1),
    ("status:502", 502, "upstream_error", ATTEMPTS, 0, 1),
    ("status:503", 502, "upstream_error", ATTEMPTS, 0, 1),
    ("html:502", 502, "upstream_error", ATTEMPTS, 0, 1),
    ("status:429:0", 429, "upstream_rate_limited", ATTEMPTS, 0, 1),
    # A pause beyond the retry budget is the caller's to wait, not the gateway's.
    ("status:429:30", 429, "upstream_rate_limited", 1, 0, 1),
    ("status:401", 502, "upstream_auth_failed", 1, 0, 1),
    ("status:400", 400, "upstream_rejected", 1, 0, 1),
    ("status:404", 404, "not_found", 1, 0, 1),
    ("html", 502, "upstream_invalid_response", 1, 0, 1),
    ("truncated", 502, "upstream_invalid_response", 1, 0, 1),
    ("shape", 502, "upstream_unmappable", 1, 0, 1),
    ("big", 502, "upstream_response_too_large", 1, 0, 1),
    ("big:chunked", 502, "upstream_response_too_large", 1, 0, 1),
    # A head cut by the connection's end is no answer (never an empty 200, so never a 404).
    ("cuthead", 502, "upstream_unreachable", ATTEMPTS, 0, 1),
    ("hugehead", 502, "upstream_response_too_large", 1, 0, 1),
    ("switch", 502, "upstream_unreachable", ATTEMPTS, 0, 1),
    # Each pause shorter than the read timeout: the total timeout ends each attempt.
    ("dribble:0.3:10", 504, "upstream_timeout", ATTEMPTS, ATTEMPTS * TOTAL, ATTEMPTS * TOTAL),
    # A pause longer than the read timeout ends it sooner.
    ("dribble:0.8:3", 504, "upstream_timeout", ATTEMPTS, ATTEMPTS * READ, ATTEMPTS * TOTAL),
]


@pytest.mark.parametrize("spec, status, code, attempts, at_least, at_most", READ_FAULTS,
                         ids=[f[0] for f in READ_FAULTS])
def test_a_read_fault_is_a_unified_error(client, fake, spec, status, code, attempts, at_least, at_most):
    name = f"{spec}~read"
    response, elapsed = timed(client.get, f"/accounting/contacts/{name}")
    body = error(response, status, code)
    assert body["provider"] == "formation", body
    assert fake.count("GET", f"/contacts/{name}") == attempts
    assert at_least * 0.9 <= elapsed <= at_most + SLACK, elapsed
    if spec.startswith("status:"):
        assert body["provider_status"] == int(spec.split(":")[1]), body
    if spec == "status:429:0":
        assert response.headers["retry-after"] == "0"
    if spec == "status:429:30":
        assert response.headers["retry-after"] == "30"


@pytest.mark.parametrize("spec, attempts", [
    ("flaky:1:500", 2),
    ("flaky:2:503", 3),
    ("flaky:1:429:0", 2),
])
def test_a_read_recovers_on_retry(client, fake, spec, attempts):
    name = f"{spec}~recover"
    record = answer(client.get(f"/accounting/contacts/{name}"), 200)
    assert record["id"] == name
    assert fake.count("GET", f"/contacts/{name}") == attempts


@pytest.mark.parametrize("spec", ["dribble:0.05:8", "pieces:60000", "interim:100", "interim:103", "gzip", "eof",
                                  "trailers"])
def test_an_answer_in_many_pieces_within_the_bounds_is_read_whole(client, fake, spec):
    """Slow or large, but inside the read timeout, total timeout and response cap: a good answer."""
    name = f"{spec}~whole"
    record = answer(client.get(f"/accounting/contacts/{name}", params={"remote_data": "true"}), 200)
    assert record["id"] == name and record["name"] == "Fake Contact"
    if spec.startswith("pieces"):
        assert len(record["remote_data"]["description"]) > 50_000
    assert fake.count("GET", f"/contacts/{name}") == 1


@pytest.mark.parametrize("spec", ["surplus", "late:0.1"])
def test_an_answer_nobody_asked_for_never_reaches_another_call(client, fake, spec):
    """A provider that answers twice: the second answer must not be read as the
    next call's, on the connection the pool would hand out next."""
    name = f"{spec}~stray"
    assert answer(client.get(f"/accounting/contacts/{name}"), 200)["id"] == name
    time.sleep(0.25)  # the stray head has come; its body comes once the next call is under way
    for n in range(10):
        assert answer(client.get(f"/accounting/contacts/ok~after-{spec}-{n}"), 200)["id"] == f"ok~after-{spec}-{n}"


def test_a_create_answered_100_continue_then_201_is_created_once(client, fake):
    name = "interim:100~create"
    created = answer(client.post("/accounting/contacts", json=contact(name)), 201)
    assert created["id"] and fake.count("POST", "/contacts", name) == 1


def test_a_list_of_the_wrong_shape_is_unmappable(client, fake):
    with fake.override("GET", "/contacts", "shape"):
        error(client.get("/accounting/contacts"), 502, "upstream_unmappable")
    assert answer(client.get("/accounting/contacts"), 200)["data"][0]["id"] == "a" * 24


def test_an_unreachable_provider(gateway):
    with client_for(gateway, "nobody-home") as c:
        for response in (c.get("/accounting/contacts/ok"), c.post("/accounting/contacts", json=contact("ok"))):
            error(response, 502, "upstream_unreachable")


# -- creates: never sent twice once bytes may have arrived -------------------------

# spec, status, code, creates that reach the provider, seconds at most (before SLACK)
CREATE_FAULTS = [
    ("hang", 504, "upstream_timeout", 1, TOTAL),
    ("drop", 502, "upstream_unreachable", 1, 1),
    ("reset", 502, "upstream_unreachable", 1, 1),
    ("status:500", 502, "upstream_error", 1, 1),
    ("status:502", 502, "upstream_error", 1, 1),
    ("html:502", 502, "upstream_error", 1, 1),
    ("dribble:0.3:10", 504, "upstream_timeout", 1, TOTAL),
    ("truncated", 502, "upstream_invalid_response", 1, 1),
    ("html", 502, "upstream_invalid_response", 1, 1),
    ("big", 502, "upstream_response_too_large", 1, 1),
    ("cuthead", 502, "upstream_unreachable", 1, 1),
    ("hugehead", 502, "upstream_response_too_large", 1, 1),
    ("switch", 502, "upstream_unreachable", 1, 1),
    ("status:400", 400, "upstream_rejected", 1, 1),
    ("status:401", 502, "upstream_auth_failed", 1, 1),
    # Refusals made before doing anything (RetrySpec): safe to retry even for a create.
    ("status:429:0", 429, "upstream_rate_limited", ATTEMPTS, 1),
    ("status:503", 502, "upstream_error", ATTEMPTS, 1),
]


@pytest.mark.parametrize("spec, status, code, creates, at_most", CREATE_FAULTS, ids=[f[0] for f in CREATE_FAULTS])
def test_a_create_fault_is_a_unified_error_and_never_a_second_create(client, fake, spec, status, code, creates, at_most):
    name = f"{spec}~create"
    response, elapsed = timed(client.post, "/accounting/contacts", json=contact(name))
    error(response, status, code)
    assert fake.count("POST", "/contacts", name) == creates
    assert elapsed <= at_most + SLACK, elapsed


def test_a_429_with_retry_after_0_is_retried_for_a_create_too(client, fake):
    name = "flaky:1:429:0~create"
    created = answer(client.post("/accounting/contacts", json=contact(name)), 201)
    assert created["id"] and fake.count("POST", "/contacts", name) == 2


def test_a_create_sent_with_put_is_not_resent_when_the_connection_drops(gateway, fake):
    """PUT is an idempotent method to HTTP clients, which resend it on a dropped
    connection; a provider's PUT may be a create (Xero's are)."""
    with client_for(gateway, "put") as c:
        error(c.post("/accounting/contacts", json=contact("drop~put")), 502, "upstream_unreachable")
        assert answer(c.post("/accounting/contacts", json=contact("ok~put")), 201)["id"]
    assert fake.count("PUT", "/contacts", "drop~put") == 1
    assert fake.count("PUT", "/contacts", "ok~put") == 1


def test_nothing_lost_when_the_created_record_cannot_be_unified(client, fake):
    name = "shape~nothing-lost"
    response = client.post("/accounting/contacts", json=contact(name))
    created = answer(response, 201)
    assert response.headers["x-gateway-unmapped"], response.headers
    raw = created["remote_data"]
    assert raw["success"] is True and raw["data"]["full_name"] == ["not", "a", "name"], raw
    assert created["id"] == created["remote_id"] == raw["data"]["id"]
    assert fake.count("POST", "/contacts", name) == 1


# -- the circuit breaker -----------------------------------------------------------


def test_the_breaker_opens_after_n_failures_and_a_probe_closes_it(gateway, fake):
    with client_for(gateway, "breaker") as c:
        for _ in range(BREAKER["failures"]):
            error(c.get("/accounting/contacts/status:500~breaker"), 502, "upstream_error")
        assert fake.count("GET", "/contacts/status:500~breaker") == BREAKER["failures"]

        # Open: calls fail fast and never reach the provider.
        response, elapsed = timed(c.get, "/accounting/contacts/ok~while-open")
        body = error(response, 503, "upstream_circuit_open")
        assert body["provider"] == "formation_breaker"
        assert 1 <= int(response.headers["retry-after"]) <= BREAKER["reset_after"] + 1
        assert elapsed < 0.5 and fake.count(path="/contacts/ok~while-open") == 0

        # Half-open after reset_after: one probe goes; others wait for its verdict.
        time.sleep(BREAKER["reset_after"] + 0.1)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            probe = pool.submit(c.get, "/accounting/contacts/slow:1~probe")
            assert fake.wait_for(1, path="/contacts/slow:1~probe") == 1
            error(c.get("/accounting/contacts/ok~during-probe"), 503, "upstream_circuit_open")
            answer(probe.result(), 200)
        assert fake.count(path="/contacts/ok~during-probe") == 0

        # The probe succeeded: closed again.
        answer(c.get("/accounting/contacts/ok~closed"), 200)

        # A failed probe opens it again at once.
        for _ in range(BREAKER["failures"]):
            error(c.get("/accounting/contacts/status:500~again"), 502, "upstream_error")
        time.sleep(BREAKER["reset_after"] + 0.1)
        error(c.get("/accounting/contacts/status:500~failed-probe"), 502, "upstream_error")
        error(c.get("/accounting/contacts/ok~reopened"), 503, "upstream_circuit_open")
        assert fake.count(path="/contacts/ok~reopened") == 0


def test_the_breaker_counts_a_call_and_its_retries_as_one_failure(gateway, fake):
    with client_for(gateway, "retrying") as c:
        error(c.get("/accounting/contacts/status:500~retried"), 502, "upstream_error")
        assert fake.count("GET", "/contacts/status:500~retried") == ATTEMPTS  # three attempts, one failed call
        answer(c.get("/accounting/contacts/ok~still-closed"), 200)
        for n in range(2):
            error(c.get(f"/accounting/contacts/status:500~retried-{n}"), 502, "upstream_error")
        error(c.get("/accounting/contacts/ok~now-open"), 503, "upstream_circuit_open")


def test_another_providers_breaker_is_not_affected(client):
    answer(client.get("/accounting/contacts/ok~other-provider"), 200)


# -- the per-connection concurrency cap -----------------------------------------------


def test_calls_beyond_max_in_flight_are_refused_with_retry_after(gateway, fake):
    with client_for(gateway, "busy") as c, concurrent.futures.ThreadPoolExecutor(6) as pool:
        names = [f"slow:1~busy{i}" for i in range(6)]
        responses = list(pool.map(lambda n: c.get(f"/accounting/contacts/{n}"), names))
        ok = [r for r in responses if r.status_code == 200]
        busy = [r for r in responses if r.status_code != 200]
        assert len(ok) == 2, [r.text for r in responses]
        for response in busy:
            error(response, 503, "connection_busy")
            assert int(response.headers["retry-after"]) >= 1
        assert sum(fake.count(path=f"/contacts/{n}") for n in names) == 2
        # The slots are given back.
        answer(c.get("/accounting/contacts/ok~after-busy"), 200)


# -- the request body cap --------------------------------------------------------------


def test_a_body_over_the_cap_is_413(client, fake):
    name = "ok~" + "n" * MAX_BODY
    error(client.post("/accounting/contacts", json=contact(name)), 413, "body_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap holds while reading
        yield b'{"name": "ok~chunked", "email_address": "'
        for _ in range(MAX_BODY // 100 + 1):
            yield b"e" * 100
        yield b'"}'

    error(client.post("/accounting/contacts", content=chunks(), headers={"content-type": "application/json"}),
          413, "body_too_large")
    assert fake.count("POST", "/contacts", name) == 0 and fake.count("POST", "/contacts", "ok~chunked") == 0
    # Just under the cap is fine.
    fits = "ok~" + "f" * (MAX_BODY - 200)
    assert answer(client.post("/accounting/contacts", json=contact(fits)), 201)["name"] == fits


# -- nothing left behind (keep last: it looks at what the tests above left) -------------


def test_no_connection_is_left_behind(gateway, fake):
    # Every hung or dribbled call was given up by the gateway: the fake answers nothing any more.
    assert fake.wait_idle(5) == 0, "the gateway left a provider connection hanging"
    deadline = time.monotonic() + 5
    while True:
        total, tcp = sockets(gateway.process.pid)
        to_provider = [s for s in tcp if s.remote_port == fake.port]
        stale = [s for s in tcp if s.state == "CLOSE_WAIT"]
        # Idle keep-alive connections may stay pooled, as many as calls ran at once (a handful here).
        if not stale and len(to_provider) <= 8 and total <= 16:
            break
        assert time.monotonic() < deadline, f"{total} sockets: {tcp}"
        time.sleep(0.1)
    assert fake.open <= 8, fake.open
