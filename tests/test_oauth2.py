"""OAuth2 connections end to end: real `gateway serve` processes in front of
a fake provider that accepts only live bearer tokens, and a fake token
endpoint that issues 3-second access tokens and single-use, rotating refresh
tokens (tests/fake_oauth.py).

The promise: a connection stays authorized. Under steady concurrent load, no
call fails and each expiry costs one refresh; a revoked token is refreshed
and the call replayed; a restart goes on with the rotated tokens; two
instances sharing Redis never spend one refresh token twice; a refused grant
is said once and not asked again; no secret reaches a log.
"""

import concurrent.futures
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import Server, answer, clean_server
from fake_oauth import CLIENT_ID, CLIENT_SECRET, FakeTokens
from fake_provider import GATEWAY_KEY, FakeFormation, gateway_env, write_mapping

LIFETIME = 3.0
LOGS: list[str] = []  # every gateway's log in this module, for the secrets test at the end


def oauth2_mapping(directory: Path, name: str, **auth) -> Path:
    """The Formation mapping, authorized by OAuth2 instead of an API key."""
    path = write_mapping(directory, name)
    spec = yaml.safe_load(path.read_text())
    spec["auth"] = {"type": "oauth2", "token_url": "http://127.0.0.1:9/never-used", **auth}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def connections_file(path: Path, provider: str, fake: FakeFormation, tokens: FakeTokens, refresh_token: str | None,
                     **credentials: str) -> Path:
    entry = {"token": "oauth-conn", "name": "oauth-conn", "provider": provider, "base_url": fake.url,
             "token_url": tokens.url,  # the connection's overrides the mapping's
             "credentials": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, **credentials},
             "context": {"company_id": "6650f1a2e4b0c8d9f0aa0001"}}
    if refresh_token:
        entry["credentials"]["refresh_token"] = refresh_token
    path.write_text(yaml.safe_dump([entry]))
    return path


class Setup:
    """A token endpoint, a provider that trusts it, and the files of a gateway in front."""

    def __init__(self, directory: Path, provider: str = "formation_oauth", client_auth: str = "basic", **auth):
        self.directory = directory
        self.tokens = FakeTokens(LIFETIME, client_auth).start()
        self.fake = FakeFormation(authorize=self.tokens.valid).start()
        self.mappings = directory / "mappings"
        oauth2_mapping(self.mappings, provider, client_auth=client_auth, **auth)
        self.provider = provider
        self.connections = directory / "connections.yaml"
        self.gateways: list[Server] = []

    def write_connections(self, refresh_token: str | None, **credentials: str) -> None:
        connections_file(self.connections, self.provider, self.fake, self.tokens, refresh_token, **credentials)

    def gateway(self, state_url: str | None = None) -> Server:
        env = gateway_env(self.mappings, self.connections,
                          GATEWAY_STATE_URL=state_url or f"sqlite://{self.directory}/state.sqlite3")
        server = clean_server(["serve"], env)
        self.gateways.append(server)
        return server

    def stop(self, server: Server) -> str:
        log = server.stop()
        LOGS.append(log)
        assert "Traceback" not in log, log
        return log

    def close(self) -> None:
        for server in self.gateways:
            if server.process.poll() is None:
                self.stop(server)
        self.fake.stop()
        self.tokens.stop()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    built = Setup(tmp_path)
    yield built
    built.close()


def client(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30,
                        headers={"x-api-key": GATEWAY_KEY, "x-connection-token": "oauth-conn"})


def retrieve(c: httpx.Client, name: str) -> httpx.Response:
    return c.get(f"/accounting/contacts/{name}")


def load(servers: list[Server], seconds: float, threads: int = 6) -> list[int]:
    """Retrieves from `threads` threads for `seconds`, spread over the servers; their statuses."""
    stop = time.monotonic() + seconds
    statuses: list[int] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        with client(servers[n % len(servers)]) as c:
            while time.monotonic() < stop:
                response = retrieve(c, f"ok~load-{n}")
                with lock:
                    statuses.append(response.status_code)

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    return statuses


def test_under_steady_load_no_call_fails_and_each_expiry_costs_one_refresh(setup):
    setup.write_connections(setup.tokens.issue_refresh_token())
    gateway = setup.gateway()
    statuses = load([gateway], seconds=8)
    assert len(statuses) > 100 and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    # One on the first call, then one a lifetime less a tenth of it: 8 / 2.7 s.
    assert 3 <= setup.tokens.count() <= 5, setup.tokens.grants
    assert setup.tokens.reused == []


def test_a_token_the_provider_refuses_is_refreshed_and_the_call_replayed(setup):
    setup.write_connections(setup.tokens.issue_refresh_token())
    with client(setup.gateway()) as c:
        answer(retrieve(c, "ok~first"), 200)
        assert setup.tokens.count() == 1
        for token in list(setup.tokens._access):
            setup.tokens.revoke(token)  # e.g. the customer's admin revoked the app's session
        created = answer(c.post("/accounting/contacts", json={"name": "ok~replayed", "email_address": "r@example.com"}), 201)
    assert created["id"]
    assert setup.tokens.count() == 2
    # Refused once with the old token, then sent once more: one create reached the provider.
    assert setup.fake.count("POST", "/contacts", "ok~replayed") == 2
    assert setup.tokens.reused == []


def test_a_file_access_token_is_used_while_it_is_valid(setup):
    given = setup.tokens.issue_access_token(60)
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    setup.write_connections(setup.tokens.issue_refresh_token(), access_token=given, expires_at=expires)
    with client(setup.gateway()) as c:
        answer(retrieve(c, "ok~given"), 200)
    assert setup.tokens.count() == 0


def served_once(setup: Setup, name: str) -> None:
    """A gateway that serves one call, refreshing the file's tokens, then stops."""
    setup.write_connections(setup.tokens.issue_refresh_token())
    first = setup.gateway()
    with client(first) as c:
        answer(retrieve(c, name), 200)
    setup.stop(first)


def test_a_restart_goes_on_with_the_rotated_tokens(setup):
    served_once(setup, "ok~before")
    time.sleep(LIFETIME)  # the access token has died: the next call must refresh with the rotated token
    second = setup.gateway()
    with client(second) as c:
        answer(retrieve(c, "ok~after"), 200)
    assert setup.tokens.count() == 2
    assert setup.tokens.reused == []  # the file's refresh token was spent by the first: never sent again


def test_a_new_authorization_in_the_file_wins_over_the_persisted_tokens(setup):
    served_once(setup, "ok~old")
    setup.tokens.disconnect()  # the customer disconnected the app: the stored refresh token is refused...
    setup.write_connections(setup.tokens.issue_refresh_token())  # ...and authorized it again
    time.sleep(LIFETIME)  # so the next call must refresh, with the file's new token
    with client(setup.gateway()) as c:
        answer(retrieve(c, "ok~new"), 200)
    assert setup.tokens.count() == 2 and setup.tokens.reused == []


def test_a_refused_grant_is_said_once_and_not_asked_again(setup):
    setup.write_connections(setup.tokens.issue_refresh_token())
    setup.tokens.revoke_all_grants()
    gateway = setup.gateway()
    with client(gateway) as c:
        for _ in range(3):
            body = answer(retrieve(c, "ok~refused"), 502)
            assert body["code"] == "reauthorization_required", body
            assert "authorize" in body["message"]
    assert setup.tokens.count() == 1  # asked once; the refusal is remembered
    assert setup.fake.count() == 0
    log = setup.stop(gateway)
    assert log.count("must be authorized again") == 1, log
    assert log.count('"event":"token_refresh_refused"') == 1, log


def test_client_credentials_with_the_client_in_the_body(tmp_path):
    built = Setup(tmp_path, "formation_cc", client_auth="body", grant="client_credentials", scope="accounting")
    try:
        built.write_connections(None)
        with client(built.gateway()) as c:
            answer(retrieve(c, "ok~cc"), 200)
            time.sleep(LIFETIME)
            answer(retrieve(c, "ok~cc-again"), 200)
        assert built.tokens.count("client_credentials") == 2 and built.tokens.refused_clients == 0
    finally:
        built.close()


def test_two_instances_on_one_redis_never_spend_a_refresh_token_twice(setup, redis_url):
    setup.write_connections(setup.tokens.issue_refresh_token())
    pair = [setup.gateway(redis_url), setup.gateway(redis_url)]
    statuses = load(pair, seconds=8, threads=8)
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert setup.tokens.reused == []
    assert 3 <= setup.tokens.count() <= 5, setup.tokens.grants  # one per expiry, for both


def test_no_secret_reaches_a_log():
    """Every gateway log of this module: no client secret, no access or refresh token."""
    assert LOGS, "run with the rest of the module"
    text = "\n".join(LOGS)
    assert "refreshed" in text  # the logs are there, and speak of the tokens...
    for secret in (CLIENT_SECRET, "rt-", "at-"):  # ...never of their values
        assert secret not in text, secret


@pytest.mark.parametrize("expires_in, seconds", [(1800, 1800.0), ("21600", 21600.0), (None, 3600.0), ("soon", 3600.0),
                                                 (0, 3600.0)])
def test_a_lifetime_sent_as_text_is_read_as_seconds(expires_in, seconds):
    from gateway.auth import _seconds

    assert _seconds(expires_in) == seconds
