"""Live reload against a real `gateway serve` process: mapping files and the
connections file edited, added or removed take effect without a restart.

Under a steady stream of requests an edit changes answers with no failed
request; a call under way finishes on the configuration it started with; a
broken edit changes nothing and says file, key and reason; a new provider
and connection go live within 2 s; an unchanged connection keeps its state
(here its open circuit) while a changed one starts afresh; SIGHUP reloads.
"""

import concurrent.futures
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import ROOT, answer, clean_server, free_port
from fake_provider import GATEWAY_KEY, FakeFormation, gateway_env, write_connections, write_mapping

GOES_LIVE = 2.0  # seconds an edit may take to serve


class Setup:
    def __init__(self, directory: Path, fake: FakeFormation):
        self.fake = fake
        self.mappings = directory / "mappings"
        self.live = write_mapping(self.mappings, "formation_live", limits={"read_timeout": 5, "total_timeout": 5},
                                  retries={"attempts": 1}, breaker={"failures": 1, "reset_after": 60})
        self.connections = {"live": ("formation_live", fake.url), "other": ("formation_live", fake.url)}
        self.connections_file = directory / "connections.yaml"
        write_connections(self.connections_file, self.connections)
        self.server = clean_server(["serve"], gateway_env(self.mappings, self.connections_file))

    def edit_mapping(self, change) -> None:
        spec = yaml.safe_load(self.live.read_text())
        change(spec)
        self.live.write_text(yaml.safe_dump(spec, sort_keys=False))

    def client(self, token: str = "live") -> httpx.Client:
        return httpx.Client(base_url=self.server.url, timeout=30,
                            headers={"x-api-key": GATEWAY_KEY, "x-connection-token": token})

    def stop(self) -> str:
        log = self.server.stop()
        assert "Traceback" not in log, log
        return log


@pytest.fixture
def setup(tmp_path: Path, fake: FakeFormation) -> Iterator[Setup]:
    built = Setup(tmp_path, fake)
    yield built
    built.stop()


def rename(prefix: str):
    def change(spec: dict) -> None:
        spec["objects"]["contacts"]["unify"]["name"] = f"join(' ', ['{prefix}', full_name])"
    return change


def wait_until(check, within: float = GOES_LIVE + 3) -> float:
    """Seconds until check() holds (it must, within `within`)."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < within, "not within the time allowed"
        time.sleep(0.05)
    return time.monotonic() - start


def test_an_edit_under_a_steady_stream_changes_answers_and_fails_none(setup):
    names: list[str] = []
    statuses: list[int] = []
    stop = threading.Event()

    def stream(n: int) -> None:
        with setup.client() as c:
            while not stop.is_set():
                response = c.get(f"/accounting/contacts/ok~stream-{n}")
                statuses.append(response.status_code)
                if response.status_code == 200:
                    names.append(response.json()["name"])

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        running = [pool.submit(stream, n) for n in range(4)]
        wait_until(lambda: len(names) > 20)
        setup.edit_mapping(rename("Edited"))
        took = wait_until(lambda: names[-1:] == ["Edited Fake Contact"])
        time.sleep(0.5)
        stop.set()
        for future in running:
            future.result()
    assert took < GOES_LIVE + 0.5, took
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    switched = names.index("Edited Fake Contact")
    assert set(names[:switched]) == {"Fake Contact"}
    assert "reloaded (files changed)" in setup.stop()


def test_a_call_under_way_finishes_on_the_configuration_it_started_with(setup):
    with setup.client() as c, concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(c.get, "/accounting/contacts/slow:1.5~under-way")
        setup.fake.wait_for(1, name="slow:1.5~under-way")
        setup.edit_mapping(rename("Edited"))
        wait_until(lambda: answer(c.get("/accounting/contacts/ok~after"), 200)["name"] == "Edited Fake Contact")
        assert not slow.done(), "the reload came after the call: nothing tested"
        assert answer(slow.result(), 200)["name"] == "Fake Contact"


def test_a_broken_edit_changes_nothing_and_says_where(setup):
    with setup.client() as c:
        setup.edit_mapping(lambda spec: spec["objects"]["contacts"]["unify"].update(nmae="full_name"))
        time.sleep(GOES_LIVE)
        assert answer(c.get("/accounting/contacts/ok~kept"), 200)["name"] == "Fake Contact"
        setup.edit_mapping(lambda spec: spec["objects"]["contacts"]["unify"].pop("nmae"))  # mended
        setup.connections_file.write_text("- {token: broken\n")  # and a connections file that is not YAML
        time.sleep(GOES_LIVE)
        assert answer(c.get("/accounting/contacts/ok~still"), 200)["name"] == "Fake Contact"
    log = setup.stop()
    assert f"refused, the last good configuration keeps serving: {setup.live}: $.objects.contacts.unify.nmae: " \
           "not a field of the unified" in log, log
    assert f"refused, the last good configuration keeps serving: connections file {setup.connections_file}" in log, log
    assert log.count('"event":"reload_refused"') == 2, log


def test_a_new_provider_and_connection_go_live_within_2_s(setup):
    write_mapping(setup.mappings, "formation_new")
    write_connections(setup.connections_file, {**setup.connections, "fresh": ("formation_new", setup.fake.url)})
    with setup.client("fresh") as c:
        took = wait_until(lambda: c.get("/accounting/contacts/ok~fresh").status_code == 200)
    assert took < GOES_LIVE, took
    # And removed: the connection is gone as soon.
    write_connections(setup.connections_file, setup.connections)
    with setup.client("fresh") as c:
        wait_until(lambda: c.get("/accounting/contacts/ok~gone").status_code == 401)


def test_an_unchanged_connection_keeps_its_state_and_a_changed_one_starts_afresh(setup):
    with setup.client("live") as live, setup.client("other") as other:
        for c, token in ((live, "live"), (other, "other")):
            answer(c.get(f"/accounting/contacts/status:500~open-{token}"), 502)
            assert answer(c.get("/accounting/contacts/ok~open"), 503)["code"] == "upstream_circuit_open"
        # "other" moves (a new base URL of the same provider); "live" stays as it was.
        setup.connections["other"] = ("formation_live", setup.fake.url + "/")
        write_connections(setup.connections_file, setup.connections)
        wait_until(lambda: other.get("/accounting/contacts/ok~afresh").status_code == 200)
        assert answer(live.get("/accounting/contacts/ok~kept"), 503)["code"] == "upstream_circuit_open"


def test_sighup_reloads(setup):
    setup.edit_mapping(rename("Hup"))
    setup.server.process.send_signal(signal.SIGHUP)
    with setup.client() as c:
        wait_until(lambda: answer(c.get("/accounting/contacts/ok~hup"), 200)["name"] == "Hup Fake Contact")
    log = setup.stop()
    assert "reloaded (SIGHUP)" in log and '"event":"reloaded"' in log, log


def test_a_sighup_while_starting_does_not_end_the_gateway(tmp_path, fake):
    """SIGHUP's default ends a process: one sent by an eager reload script while the
    gateway still loads its files must not take it down."""
    mappings = tmp_path / "mappings"
    write_mapping(mappings, "formation_live")
    connections = tmp_path / "connections.yaml"
    write_connections(connections, {"live": ("formation_live", fake.url)})
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    process = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--port", str(port)], cwd=ROOT,
                               env={**env, **gateway_env(mappings, connections)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        status = Path(f"/proc/{process.pid}/status")
        deadline = time.monotonic() + 15
        while not int(re.search(r"SigIgn:\s*([0-9a-f]+)", status.read_text()).group(1), 16) & (1 << (signal.SIGHUP - 1)):
            assert process.poll() is None and time.monotonic() < deadline, "SIGHUP never ignored while starting"
            time.sleep(0.001)
        process.send_signal(signal.SIGHUP)  # while it starts
        def serving() -> bool:
            assert process.poll() is None, "the SIGHUP ended it"
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(serving, within=30)
    finally:
        process.terminate()
        process.wait(timeout=15)
