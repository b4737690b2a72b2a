"""Idempotent creates: one upstream create per `Idempotency-Key`.

The first request with a key reserves it and runs; its answer is stored. A
retry with the same key and body, at the same time or later, gets that stored
answer; the same key with another body is a 422. Entries live in the state
store (gateway/store.py): SQLite for one host, Redis for several.
"""

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable

import msgspec
from starlette.responses import Response

from . import metrics
from .errors import GatewayError, bad_request, shutting_down, unprocessable
from .store import Store, StoreUnavailable

log = logging.getLogger("gateway")

TTL = 24 * 3600  # how long an answer is kept for replay
_PENDING = -1  # the status of a reservation whose create is still under way


class Entry(msgspec.Struct, array_like=True):
    fingerprint: str
    status: int = _PENDING
    headers: dict[str, str] = {}
    body: bytes = b""

    @property
    def pending(self) -> bool:
        return self.status == _PENDING


_encode = msgspec.msgpack.encode
_decode = msgspec.msgpack.Decoder(Entry).decode


def fingerprint(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


class Entries:
    """Idempotency entries in the state store, under keys of their own."""

    def __init__(self, store: Store):
        self.store = store

    async def reserve(self, key: str, entry: Entry) -> Entry | None:
        """None: reserved for the caller. Otherwise what the key already holds."""
        held = await self.store.add("idempotency:" + key, _encode(entry), TTL)
        return None if held is None else _decode(held)

    async def get(self, key: str) -> Entry | None:
        raw = await self.store.get("idempotency:" + key)
        return _decode(raw) if raw else None

    async def complete(self, key: str, entry: Entry) -> None:
        await self.store.set("idempotency:" + key, _encode(entry), TTL)

    async def release(self, key: str) -> None:
        await self.store.delete("idempotency:" + key)


async def wait_for_answer(store: Entries, key: str, timeout: float) -> Entry | None:
    """A concurrent retry waits for the first request's answer, briefly polling."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while time.monotonic() < deadline:
        entry = await store.get(key)
        if entry is None or not entry.pending:
            return entry
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.25)
    return await store.get(key)


REPLAYED_HEADER = "idempotent-replayed"


class Once:
    """Runs a create once per Idempotency-Key; replays its answer to retries.

    A key belongs to its connection and object. An answer is kept whenever
    the create may have happened (it succeeded, or failed after its bytes may
    have reached the provider); otherwise the key is freed for a retry."""

    def __init__(self, store: Store, replayed_headers: frozenset[str]):
        self.store = Entries(store)
        self.replayed_headers = replayed_headers  # the answer's headers a replay repeats

    async def run(self, key: str, scope: tuple[bytes, ...], request: tuple[bytes, ...], wait: float,
                  create: Callable[[], Awaitable[Response]]) -> Response:
        """`scope`: whose keys (connection, object); `request`: what a retry must
        repeat to be one; `wait`: how long a retry waits for the first answer."""
        if not 1 <= len(key) <= 255:
            raise bad_request("invalid_idempotency_key", "Idempotency-Key must be 1 to 255 characters")
        scoped = fingerprint(*scope, key.encode())
        claim = Entry(fingerprint(*request))
        try:
            held = await self._claim(scoped, claim, wait)
        except StoreUnavailable as exc:
            log.error("idempotency store unavailable: %s", exc)
            raise GatewayError(503, "idempotency_unavailable", "cannot honour the Idempotency-Key now: its store does not answer",
                               {"Retry-After": "1"}) from None
        if held is not None:
            if held.fingerprint != claim.fingerprint:
                raise unprocessable("idempotency_key_reused", "this Idempotency-Key was used with a different request body")
            if held.pending:
                raise GatewayError(409, "idempotency_in_progress", "a request with this Idempotency-Key is still under way",
                                   {"Retry-After": "1"})
            metrics.count("gateway_idempotency_replays")
            return Response(held.body, held.status, {**held.headers, REPLAYED_HEADER: "true"})
        try:
            response = await create()
        except GatewayError as exc:
            if not exc.maybe_done:
                await self._settle(scoped, claim, None)
                raise
            response = exc.response()
        except asyncio.CancelledError:
            # Cut short by a shutdown: the create may have reached the provider, so
            # keep the answer, as for a timeout, rather than let a retry create again.
            await self._settle(scoped, claim, shutting_down().response())
            raise
        except BaseException:
            await self._settle(scoped, claim, None)
            raise
        await self._settle(scoped, claim, response)
        return response

    async def _claim(self, scoped: str, claim: Entry, wait: float) -> Entry | None:
        """None: the key is ours to run. Otherwise the entry it already holds."""
        held = await self.store.reserve(scoped, claim)
        # Only a retry of the same request waits for the first one's answer;
        # another request under the key is refused at once.
        if held is not None and held.pending and held.fingerprint == claim.fingerprint:
            held = await wait_for_answer(self.store, scoped, wait)
            if held is None:  # the first attempt failed before reaching the provider: take over
                held = await self.store.reserve(scoped, claim)
        return held

    async def _settle(self, scoped: str, claim: Entry, response: Response | None) -> None:
        """Keep the answer for replay, or free the key (None) when nothing was created."""
        try:
            if response is None:
                await self.store.release(scoped)
            else:
                kept = {k: v for k, v in response.headers.items() if k in self.replayed_headers}
                await self.store.complete(scoped, Entry(claim.fingerprint, response.status_code, kept, response.body))
        except StoreUnavailable as exc:
            # The create is done either way: answer it; a retry may find the key pending.
            log.error("idempotency store unavailable, the answer for a key is not kept: %s", exc)
