"""Once (gateway/idempotency.py) in process, on a SQLite state store: what an
interrupted or failed create leaves under its Idempotency-Key. A create that may
have reached the provider keeps its answer, so a retry replays it and never
creates twice; one that cannot have reached it frees the key."""

import asyncio
import json
from pathlib import Path

import pytest
from starlette.responses import Response

from gateway.errors import GatewayError, bad_gateway, shutting_down
from gateway.idempotency import REPLAYED_HEADER, Once
from gateway.records import REPLAYED_HEADERS
from gateway.store import SqliteStore, StoreUnavailable

SCOPE = (b"conn", b"contacts")
BODY = (b'{"name": "Ann"}', b"")


class Creates:
    """A create that does what it is told, counting its runs."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.runs = 0

    async def __call__(self) -> Response:
        self.runs += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome == "hang":
            await asyncio.sleep(60)
        return Response(b'{"id": "1"}', 201, {"x-gateway-ignored-fields": "$.currency", "x-other": "no"},
                        media_type="application/json")


@pytest.fixture
def once(tmp_path: Path) -> Once:
    return Once(SqliteStore(tmp_path / "state.sqlite3"), REPLAYED_HEADERS)


def run(once: Once, create: Creates, key: str = "key-1", body: tuple = BODY) -> Response:
    return asyncio.run(once.run(key, SCOPE, body, 0.2, create))


def test_a_create_cut_short_by_shutdown_is_not_run_again(once):
    create = Creates("hang", "ok")

    async def shutdown() -> None:
        task = asyncio.ensure_future(once.run("key-1", SCOPE, BODY, 0.2, create))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(shutdown())
    again = run(once, create)
    assert create.runs == 1, "the create may have reached the provider: a retry must not create again"
    assert again.status_code == 503 and json.loads(again.body)["code"] == "shutting_down"
    assert again.headers[REPLAYED_HEADER] == "true" and again.headers["retry-after"] == "1"


def test_the_shutdown_error_says_a_create_may_have_happened():
    error = shutting_down()
    assert error.maybe_done and error.status == 503 and error.headers["Connection"] == "close"
    assert not bad_gateway("x", "y").maybe_done and bad_gateway("x", "y", maybe_done=True).maybe_done
    assert not GatewayError(400, "x", "y").maybe_done


@pytest.mark.parametrize("error", [shutting_down(), bad_gateway("upstream_timeout", "no answer", maybe_done=True),
                                   GatewayError(500, "upstream_error", "5xx", maybe_done=True)])
def test_an_error_after_the_create_may_have_happened_is_kept_and_replayed(once, error):
    create = Creates(error, "ok")
    first = run(once, create)
    again = run(once, create)
    assert create.runs == 1
    assert first.status_code == again.status_code == error.status
    assert json.loads(again.body) == json.loads(first.body) and json.loads(first.body)["code"] == error.code
    assert REPLAYED_HEADER not in first.headers and again.headers[REPLAYED_HEADER] == "true"


@pytest.mark.parametrize("error", [GatewayError(422, "rejected", "no"), bad_gateway("upstream_refused", "refused"),
                                   RuntimeError("bug")])
def test_a_create_that_cannot_have_happened_frees_its_key(once, error):
    create = Creates(error, "ok")
    with pytest.raises(type(error)):
        run(once, create)
    created = run(once, create)
    assert create.runs == 2 and created.status_code == 201 and REPLAYED_HEADER not in created.headers


def test_a_success_is_replayed_with_the_headers_that_describe_it(once):
    create = Creates("ok", "ok")
    first = run(once, create)
    again = run(once, create)
    assert create.runs == 1 and again.status_code == 201 and again.body == first.body
    assert again.headers["x-gateway-ignored-fields"] == "$.currency" and "x-other" not in again.headers


def test_keys_are_scoped_and_bound_to_their_request(once):
    create = Creates("ok", "ok", "ok")
    run(once, create)
    with pytest.raises(GatewayError) as reused:
        run(once, create, body=(b'{"name": "Bob"}', b""))
    assert reused.value.status == 422 and reused.value.code == "idempotency_key_reused"
    asyncio.run(once.run("key-1", (b"conn", b"invoices"), BODY, 0.2, create))  # another object: another key
    run(once, create, key="key-2")
    assert create.runs == 3


@pytest.mark.parametrize("key, ok", [("", False), ("k", True), ("k" * 255, True), ("k" * 256, False)])
def test_a_key_is_1_to_255_characters(once, key, ok):
    create = Creates("ok")
    if ok:
        assert run(once, create, key=key).status_code == 201
    else:
        with pytest.raises(GatewayError) as refused:
            run(once, create, key=key)
        assert refused.value.status == 400 and create.runs == 0


def test_a_store_that_does_not_answer_is_a_503_before_any_create(once):
    async def broken(*args, **kwargs):
        raise StoreUnavailable("down")

    once.store.store.add = broken
    create = Creates("ok")
    with pytest.raises(GatewayError) as refused:
        run(once, create)
    assert refused.value.status == 503 and refused.value.code == "idempotency_unavailable" and create.runs == 0
