"""Idempotent creates: one upstream create per `Idempotency-Key`.

The first request with a key reserves it and runs; its answer is stored. A
retry with the same key and body, at the same time or later, gets that stored
answer; the same key with another body is a 422. State lives in SQLite (one
host) or Redis (several gateway instances), behind the same small interface.
"""

import asyncio
import functools
import hashlib
import sqlite3
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import redis.asyncio
from redis.exceptions import RedisError

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


class StoreUnavailable(Exception):
    """The store did not answer; what it holds is unknown."""


def _guarded(*errors: type[BaseException]):
    """Turn a backend's own errors into StoreUnavailable, for the caller to answer with a 503."""
    def wrap(method):
        @functools.wraps(method)
        async def guarded(*args, **kwargs):
            try:
                return await method(*args, **kwargs)
            except errors as exc:
                raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from None
        return guarded
    return wrap


_sqlite_guard = _guarded(sqlite3.Error)


class SqliteStore:
    """A file shared by the processes of one host (WAL lets them interleave)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, entry BLOB, expires REAL)")

    @_sqlite_guard
    async def reserve(self, key: str, entry: Entry) -> Entry | None:
        """None: reserved for the caller. Otherwise what the key already holds."""
        now = time.time()
        with self._db:
            self._db.execute("DELETE FROM idempotency WHERE key = ? AND expires < ?", (key, now))
            inserted = self._db.execute("INSERT OR IGNORE INTO idempotency VALUES (?, ?, ?)",
                                        (key, _encode(entry), now + TTL)).rowcount
        return None if inserted else await self.get(key)

    @_sqlite_guard
    async def get(self, key: str) -> Entry | None:
        row = self._db.execute("SELECT entry FROM idempotency WHERE key = ?", (key,)).fetchone()
        return _decode(row[0]) if row else None

    @_sqlite_guard
    async def complete(self, key: str, entry: Entry) -> None:
        self._db.execute("UPDATE idempotency SET entry = ?, expires = ? WHERE key = ?", (_encode(entry), time.time() + TTL, key))

    @_sqlite_guard
    async def release(self, key: str) -> None:
        self._db.execute("DELETE FROM idempotency WHERE key = ?", (key,))

    async def aclose(self) -> None:
        self._db.close()


_redis_guard = _guarded(RedisError, OSError)


class RedisStore:
    def __init__(self, url: str):
        # Short socket timeouts: a Redis that is down must cost a 503, not a hung create.
        self._redis = redis.asyncio.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)

    @_redis_guard
    async def reserve(self, key: str, entry: Entry) -> Entry | None:
        if await self._redis.set(key, _encode(entry), nx=True, ex=TTL):
            return None
        return await self.get(key)

    @_redis_guard
    async def get(self, key: str) -> Entry | None:
        raw = await self._redis.get(key)
        return _decode(raw) if raw else None

    @_redis_guard
    async def complete(self, key: str, entry: Entry) -> None:
        await self._redis.set(key, _encode(entry), ex=TTL)

    @_redis_guard
    async def release(self, key: str) -> None:
        await self._redis.delete(key)

    async def aclose(self) -> None:
        await self._redis.aclose()


Store = SqliteStore | RedisStore


def open_store(url: str | None) -> Store:
    """`redis://...`, `sqlite:///path`, or None for a SQLite file in the temp directory."""
    if url and url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(url)
    if url and not url.startswith("sqlite://"):
        raise ValueError(f"GATEWAY_IDEMPOTENCY_URL must be redis://... or sqlite:///path, not {urlsplit(url).scheme}://...")
    path = Path(url[len("sqlite://"):]) if url else Path(tempfile.gettempdir()) / "gateway-idempotency.sqlite3"
    return SqliteStore(path)


async def wait_for_answer(store: Store, key: str, timeout: float) -> Entry | None:
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
