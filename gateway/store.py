"""The state store: what must outlive a request, survive a restart and be
shared by the instances serving the same clients. Idempotency-Key answers
(gateway/idempotency.py), OAuth2 tokens as they rotate, and the locks that
let one instance at a time refresh a connection's tokens (gateway/auth.py).

One small interface of keys and byte values, on SQLite (one host: a file
its processes share) or Redis (several hosts)."""

import functools
import os
import sqlite3
import time
from pathlib import Path
from urllib.parse import urlsplit

import redis.asyncio
from redis.exceptions import RedisError


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
        # Workers starting together race to set up a new file, and SQLite answers
        # the loser's switch to WAL "locked" at once, without waiting: it tries again.
        deadline = time.monotonic() + 5
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value BLOB, expires REAL)")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    @_sqlite_guard
    async def add(self, key: str, value: bytes, ttl: float) -> bytes | None:
        """Set `key` unless it holds a live value. None: set; otherwise the value it holds."""
        now = time.time()
        with self._db:
            self._db.execute("DELETE FROM state WHERE key = ? AND expires < ?", (key, now))
            if self._db.execute("INSERT OR IGNORE INTO state VALUES (?, ?, ?)", (key, value, now + ttl)).rowcount:
                return None
            row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    @_sqlite_guard
    async def get(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM state WHERE key = ? AND expires >= ?", (key, time.time())).fetchone()
        return row[0] if row else None

    @_sqlite_guard
    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        expires = time.time() + ttl if ttl is not None else float("inf")
        self._db.execute("INSERT OR REPLACE INTO state VALUES (?, ?, ?)", (key, value, expires))

    @_sqlite_guard
    async def ping(self) -> None:
        self._db.execute("SELECT 1").fetchone()

    @_sqlite_guard
    async def delete(self, key: str, only_if: bytes | None = None) -> None:
        """Delete `key`; with `only_if`, only while it holds that value (a lock's owner)."""
        if only_if is None:
            self._db.execute("DELETE FROM state WHERE key = ?", (key,))
        else:
            self._db.execute("DELETE FROM state WHERE key = ? AND value = ?", (key, only_if))

    async def aclose(self) -> None:
        self._db.close()


_redis_guard = _guarded(RedisError, OSError)

# Delete a key only while it holds the caller's value: a lock whose lease ran
# out and was taken by another instance must not be released by the first.
_DELETE_IF = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class RedisStore:
    def __init__(self, url: str):
        # Short socket timeouts: a Redis that is down must cost a 503, not a hung create.
        self._redis = redis.asyncio.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)

    @_redis_guard
    async def add(self, key: str, value: bytes, ttl: float) -> bytes | None:
        if await self._redis.set(key, value, nx=True, px=max(1, int(ttl * 1000))):
            return None
        return await self._redis.get(key)

    @_redis_guard
    async def get(self, key: str) -> bytes | None:
        return await self._redis.get(key)

    @_redis_guard
    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        await self._redis.set(key, value, px=int(ttl * 1000) if ttl is not None else None)

    @_redis_guard
    async def ping(self) -> None:
        await self._redis.ping()

    @_redis_guard
    async def delete(self, key: str, only_if: bytes | None = None) -> None:
        if only_if is None:
            await self._redis.delete(key)
        else:
            await self._redis.eval(_DELETE_IF, 1, key, only_if)

    async def aclose(self) -> None:
        await self._redis.aclose()


Store = SqliteStore | RedisStore


def default_path() -> Path:
    """Where state lives when GATEWAY_STATE_URL is unset: a file that survives restarts."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "gateway" / "state.sqlite3"


def open_store(url: str | None) -> Store:
    """`redis://...`, `sqlite:///path`, or None for the default file."""
    if url and url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(url)
    if url and not url.startswith("sqlite://"):
        raise ValueError(f"must be redis://... or sqlite:///path, not {urlsplit(url).scheme}://...")
    return SqliteStore(Path(url[len("sqlite://"):]) if url else default_path())
