"""Optional OpenTelemetry traces (gateway/tracing.py): a real `gateway serve`
with the SDK's console exporter, in front of a fake provider that keeps the
headers it was sent.

A call continues its caller's W3C trace: the gateway's server span is the
child of the caller's `traceparent`, its call to the provider a child of that,
and the provider receives the client span's `traceparent`. Unconfigured,
nothing of OpenTelemetry is imported.
"""

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from conftest import ROOT, answer, clean_server, without_gateway_env
from fake_provider import API_KEY, GATEWAY_KEY, FakeFormation, gateway_env, write_connections, write_mapping

pytest.importorskip("opentelemetry.sdk", reason="the tracing tests need opentelemetry-sdk (pip install -e '.[test]')")

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def fake() -> Iterator[tuple[FakeFormation, list[dict]]]:
    sent: list[dict] = []
    provider = FakeFormation(authorize=lambda headers: sent.append(dict(headers)) or headers.get("x-api-key") == API_KEY)
    yield provider.start(), sent
    provider.stop()


def spans(log: str) -> list[dict]:
    """The console exporter's spans: JSON objects, one after another, among the log's lines."""
    found, decoder, at = [], json.JSONDecoder(), 0
    while (at := log.find("{\n", at)) != -1:
        span, at = decoder.raw_decode(log, at)
        found.append(span)
    return found


def test_a_call_continues_its_callers_trace_to_the_provider(tmp_path, fake):
    provider, sent = fake
    mappings = tmp_path / "mappings"
    write_mapping(mappings, "formation")
    connections = write_connections(tmp_path / "connections.yaml", {"traced": ("formation", provider.url)})
    server = clean_server(["serve", "--no-access-log"], gateway_env(
        mappings, connections, GATEWAY_STATE_URL=f"sqlite://{tmp_path}/state.sqlite3", OTEL_TRACES_EXPORTER="console",
        OTEL_SERVICE_NAME="gateway-under-test"))
    import httpx

    with httpx.Client(base_url=server.url, timeout=30, headers={"x-api-key": GATEWAY_KEY, "x-connection-token": "traced"}) as c:
        answer(c.get("/accounting/contacts/ok~traced", headers={"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"}), 200)
    log = server.stop()
    traceparent = sent[-1]["traceparent"]
    version, trace_id, parent, flags = traceparent.split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
    ours = {s["context"]["span_id"][2:]: s for s in spans(log) if s["context"]["trace_id"] == "0x" + TRACE_ID}
    assert len(ours) == 2, log
    client = ours[parent]  # the provider was sent the client span's context
    assert client["kind"] == "SpanKind.CLIENT" and client["attributes"]["gateway.provider"] == "formation"
    assert client["attributes"]["http.response.status_code"] == 200
    server_span = ours[client["parent_id"][2:]]
    assert server_span["kind"] == "SpanKind.SERVER" and server_span["parent_id"] == "0x" + CALLER_SPAN
    assert server_span["name"] == "GET /accounting/contacts/{id}"
    assert server_span["attributes"]["http.response.status_code"] == 200
    assert server_span["resource"]["attributes"]["service.name"] == "gateway-under-test"
    assert "ok~traced" not in json.dumps(list(ours.values()))  # no id in a span


def test_unconfigured_the_request_path_has_no_tracing():
    # (redis-py imports OpenTelemetry's metrics API when it is installed: the tracing SDK stays out.)
    code = ("import sys; from gateway.app import create_app; from gateway.routes import Gateway; app = create_app(); "
            "assert type(app.gateway) is Gateway, app.gateway; "
            "assert 'opentelemetry.sdk.trace' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=without_gateway_env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


def test_an_exporter_that_is_not_installed_stops_the_start(tmp_path):
    env = {**without_gateway_env(), "OTEL_TRACES_EXPORTER": "no-such-exporter"}
    done = subprocess.run([sys.executable, "-m", "gateway", "serve", "--port", "1"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "no trace exporter 'no-such-exporter'" in done.stderr, done.stderr
