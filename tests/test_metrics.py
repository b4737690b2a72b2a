"""GET /metrics of a real `gateway serve` process in front of a fake provider
(tests/fake_provider.py) and a fake OAuth2 token endpoint (tests/fake_oauth.py),
read back with prometheus-client's own parser of the exposition format.

Every figure moves by exactly what was done: calls by provider, object,
operation and status, both latency histograms, retries, calls under way,
circuit state and openings, token refreshes and refusals, idempotency
replays, reloads and refused reloads. Labels stay bounded whatever a client
sends.
"""

import concurrent.futures
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Server, answer, clean_server
from fake_provider import GATEWAY_KEY, FakeFormation, gateway_env, write_connections, write_mapping
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset], float]


def scrape(url: str) -> Samples:
    return parse(httpx.get(url + "/metrics", timeout=10))


def parse(response: httpx.Response) -> Samples:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version="), response.headers
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(labels)[label] for (sample, labels) in samples if sample == name and label in dict(labels)}


class Setup:
    def __init__(self, directory: Path, fake: FakeFormation):
        mappings = directory / "mappings"
        write_mapping(mappings, "formation")
        write_mapping(mappings, "formation_fragile", limits={"read_timeout": 5, "total_timeout": 5}, retries={"attempts": 1},
                      breaker={"failures": 2, "reset_after": 60})
        self.connections = directory / "connections.yaml"
        self.entries = {"metered": ("formation", fake.url), "fragile": ("formation_fragile", fake.url)}
        write_connections(self.connections, self.entries)
        self.server = clean_server(["serve"], gateway_env(mappings, self.connections,
                                                           GATEWAY_STATE_URL=f"sqlite://{directory}/state.sqlite3"))

    def client(self, token: str = "metered") -> httpx.Client:
        return httpx.Client(base_url=self.server.url, timeout=30,
                            headers={"x-api-key": GATEWAY_KEY, "x-connection-token": token})


@pytest.fixture(scope="module")
def setup(fake: FakeFormation, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    built = Setup(tmp_path_factory.mktemp("metrics"), fake)
    yield built
    log = built.server.stop()
    assert "Traceback" not in log and "unexpected error" not in log, log


def contact(name: str) -> dict:
    return {"name": name, "email_address": "metrics@example.com"}


def test_calls_are_counted_by_provider_object_operation_and_status(setup):
    before = scrape(setup.server.url)
    with setup.client() as c:
        for _ in range(3):
            answer(c.post("/accounting/contacts", json=contact("ok~count")), 201)
        for _ in range(4):
            answer(c.get("/accounting/contacts"), 200)
        answer(c.get("/accounting/contacts/ok~one"), 200)
        answer(c.get("/accounting/contacts/status:404~missing"), 404)
        assert answer(c.post("/accounting/contacts", json=["not", "an", "object"]), 422)["code"] == "invalid_body"
        answer(c.get("/accounting/contacts", headers={"x-api-key": "wrong"}), 401)
    after = scrape(setup.server.url)
    requests = "gateway_requests_total"
    assert moved(before, after, requests, provider="formation", object="contacts", operation="create", status="201") == 3
    assert moved(before, after, requests, provider="formation", object="contacts", operation="list", status="200") == 4
    assert moved(before, after, requests, provider="formation", object="contacts", operation="retrieve", status="200") == 1
    assert moved(before, after, requests, provider="formation", object="contacts", operation="retrieve", status="404") == 1
    assert moved(before, after, requests, provider="formation", object="contacts", operation="create", status="422") == 1
    assert moved(before, after, requests, provider="none", object="contacts", operation="list", status="401") == 1
    # Each call once in the gateway's histogram, in a bucket no lower than its own: +Inf holds all.
    duration = "gateway_request_duration_seconds"
    assert moved(before, after, duration + "_count", provider="formation", object="contacts", operation="create") == 4
    assert moved(before, after, duration + "_bucket", provider="formation", object="contacts", operation="list",
                 le="+Inf") == 4
    assert moved(before, after, duration + "_sum", provider="formation", object="contacts", operation="list") > 0
    # The 422 never reached the provider; the 401 knew no provider: nine upstream calls.
    assert moved(before, after, "gateway_upstream_duration_seconds_count", provider="formation") == 9
    buckets = sorted((float(dict(labels)["le"]), v) for (name, labels), v in after.items()
                     if name == duration + "_bucket" and dict(labels)["operation"] == "list"
                     and dict(labels)["provider"] == "formation")
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative


def test_labels_stay_bounded_whatever_a_client_sends(setup):
    with setup.client() as c:
        for n in range(5):
            answer(c.get(f"/accounting/made-up-{uuid.uuid4().hex}"), 404)
            answer(c.delete(f"/accounting/contacts/{n}"), 405)
    samples = scrape(setup.server.url)
    objects = label_values(samples, "gateway_requests_total", "object")
    assert not any(o.startswith("made-up") for o in objects), objects
    assert {"contacts", "other"} <= objects
    # An unknown object is refused before any connection is looked up, whatever the method.
    assert value(samples, "gateway_requests_total", provider="none", object="other", operation="list",
                 status="404") >= 5
    assert value(samples, "gateway_requests_total", provider="none", object="contacts", operation="other",
                 status="405") >= 5
    assert label_values(samples, "gateway_upstream_in_flight", "connection") == set(setup.entries)


def test_retries_are_counted_by_reason(setup):
    before = scrape(setup.server.url)
    with setup.client() as c:
        answer(c.get("/accounting/contacts/flaky:2:503~retried"), 200)
        answer(c.get("/accounting/contacts/flaky:1:500~retried"), 200)
    after = scrape(setup.server.url)
    assert moved(before, after, "gateway_upstream_retries_total", provider="formation", reason="throttled") == 2
    assert moved(before, after, "gateway_upstream_retries_total", provider="formation", reason="status_5xx") == 1


def test_calls_under_way_and_the_circuit(setup, fake):
    with setup.client("fragile") as c, concurrent.futures.ThreadPoolExecutor(2) as pool:
        slow = [pool.submit(c.get, f"/accounting/contacts/slow:1~under-way-{n}") for n in range(2)]
        assert fake.wait_for(1, name="slow:1~under-way-0") == fake.wait_for(1, name="slow:1~under-way-1") == 1
        during = scrape(setup.server.url)
        for future in slow:
            answer(future.result(), 200)
        assert value(during, "gateway_upstream_in_flight", connection="fragile", provider="formation_fragile") == 2
        assert value(scrape(setup.server.url), "gateway_upstream_in_flight", connection="fragile",
                     provider="formation_fragile") == 0
        assert value(during, "gateway_circuit_state", connection="fragile", provider="formation_fragile") == 0
        for _ in range(2):
            answer(c.get("/accounting/contacts/status:500~trip"), 502)
        assert answer(c.get("/accounting/contacts/ok~paused"), 503)["code"] == "upstream_circuit_open"
    samples = scrape(setup.server.url)
    assert value(samples, "gateway_circuit_state", connection="fragile", provider="formation_fragile") == 1
    assert value(samples, "gateway_circuit_openings_total", connection="fragile") == 1
    assert value(samples, "gateway_circuit_state", connection="metered", provider="formation") == 0


def test_idempotency_replays(setup):
    before = scrape(setup.server.url)
    key = uuid.uuid4().hex
    with setup.client() as c:
        for _ in range(3):
            answer(c.post("/accounting/contacts", json=contact("ok~replay"), headers={"idempotency-key": key}), 201)
    assert moved(before, scrape(setup.server.url), "gateway_idempotency_replays_total") == 2


def test_reloads_and_refused_reloads(setup):
    before = scrape(setup.server.url)
    good = setup.connections.read_text()
    setup.connections.write_text("- {token: broken, provider: no-such-provider}\n")
    deadline = time.monotonic() + 5
    while moved(before, scrape(setup.server.url), "gateway_reloads_total", outcome="refused") < 1:
        assert time.monotonic() < deadline, "the broken edit was not refused"
        time.sleep(0.1)
    setup.connections.write_text(good)
    while moved(before, scrape(setup.server.url), "gateway_reloads_total", outcome="applied") < 1:
        assert time.monotonic() < deadline + 5, "the mended file was not reloaded"
        time.sleep(0.1)
    after = scrape(setup.server.url)
    assert moved(before, after, "gateway_reloads_total", outcome="refused") == 1
    assert moved(before, after, "gateway_reloads_total", outcome="applied") == 1
    with setup.client() as c:
        answer(c.get("/accounting/contacts/ok~after-reload"), 200)


def test_token_refreshes_and_their_failures(tmp_path):
    from test_oauth2 import Setup as OAuthSetup, client as oauth_client

    built = OAuthSetup(tmp_path)
    try:
        built.write_connections(built.tokens.issue_refresh_token())
        gateway: Server = built.gateway()
        with oauth_client(gateway) as c:
            answer(c.get("/accounting/contacts/ok~authorized"), 200)
            first = scrape(gateway.url)
            for token in list(built.tokens._access):
                built.tokens.revoke(token)  # refused with a 401: new tokens, and the call sent once more
            answer(c.get("/accounting/contacts/ok~renewed"), 200)
            renewed = scrape(gateway.url)
            built.tokens.disconnect()  # the customer revoked the app: its refresh token is refused
            for token in list(built.tokens._access):
                built.tokens.revoke(token)
            for _ in range(2):
                assert answer(c.get("/accounting/contacts/ok~revoked"), 502)["code"] == "reauthorization_required"
        after = scrape(gateway.url)
    finally:
        built.close()
    labels = {"connection": "oauth-conn", "provider": built.provider}
    assert value(first, "gateway_token_refreshes_total", outcome="ok", **labels) == 1
    assert value(renewed, "gateway_token_refreshes_total", outcome="ok", **labels) == 2
    assert value(renewed, "gateway_upstream_retries_total", provider=built.provider, reason="auth") == 1
    assert value(after, "gateway_token_refreshes_total", outcome="ok", **labels) == 2
    assert value(after, "gateway_token_refreshes_total", outcome="refused", **labels) == 1  # asked once, then remembered
    assert value(after, "gateway_upstream_retries_total", provider=built.provider, reason="auth") == 1
    assert "at-" not in str(after) and "rt-" not in str(after)  # no token in a label


def test_a_worker_whose_figures_cannot_be_written_says_so_and_tries_again(tmp_path, caplog):
    """A shared directory gone (a cleaner, a full disk): the worker keeps serving and sharing."""
    from types import SimpleNamespace

    from gateway.metrics import Metrics

    runtime = SimpleNamespace(current=SimpleNamespace(connections=[]), reloads=0, refused=0)
    shared = tmp_path / "shared"
    shared.mkdir()
    figures = Metrics(runtime, shared)
    figures.write()
    assert figures.mine.exists()
    shared.rename(tmp_path / "gone")
    figures.write()  # no exception
    assert "cannot share this worker's figures" in caplog.text
    shared.mkdir()
    figures.write()
    assert figures.mine.exists(), "the next write shares again"
