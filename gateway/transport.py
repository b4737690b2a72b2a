"""A small HTTP/1.1 client for the upstream hot path: keep-alive pools per
origin, httptools (the C parser uvicorn uses) for answers.

Measured on the benchmark's machine, one call through aiohttp cost about
190 us of CPU, through httpx's own transport far more; through this 30 to
66 us (README, "Benchmark"). It does only what
the gateway needs: JSON requests with a body of known length, answers with
Content-Length, chunked or read-to-close bodies, interim (1xx) answers
skipped, gzip, TLS, timeouts, caps on the head and the body.
"""

import asyncio
import ssl
import time
import zlib
from collections import deque
from urllib.parse import urlencode, urlsplit

import httptools

from .outbox import Outbox


class Unreachable(Exception):
    """No (whole) answer. `sent`: whether request bytes may have reached the provider."""

    def __init__(self, reason: str, sent: bool):
        super().__init__(reason)
        self.sent = sent


class TimedOut(Exception):
    pass


class TooLarge(Exception):
    """An answer over a cap: `part` says which ("answer", or "head" for the status line and headers)."""

    def __init__(self, part: str = "answer"):
        super().__init__(part)
        self.part = part


class Answer:
    __slots__ = ("status", "body", "retry_after")

    def __init__(self, status: int, body: bytes, retry_after: str | None):
        self.status = status
        self.body = body
        self.retry_after = retry_after


_IDLE_SECONDS = 15.0  # drop pooled connections before most servers would
# The status line and headers of one answer, interim (1xx) answers included. Without
# a cap a provider's endless header holds memory and, as the parser joins the
# pieces of a value, time that grows with the square of its size.
MAX_HEAD_BYTES = 64 * 1024


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection; one request at a time on it.

    A connection goes back to the pool only after one whole final answer to
    the one request sent, and is closed on any byte it was not asked for (a
    stray or late answer, or an answer's surplus): such bytes would otherwise
    be read as the next call's answer, one customer's record in another's."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        # One parser for the connection's life: llhttp starts each answer afresh
        # on a kept-alive connection, and any failure closes the connection.
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        # Kept: on Python 3.11 each asyncio.get_running_loop() makes a getpid() system call.
        self.loop = asyncio.get_running_loop()
        self._reset_exchange(None, 0)

    def _reset_exchange(self, done: asyncio.Future | None, cap: int) -> None:
        self.done = done
        self.cap = cap
        self.head_bytes = 0  # bytes that arrived before the final answer's head was whole
        self.received = 0  # bytes of the answer so far: the sweeper watches it move
        self._reset_message()

    def _reset_message(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.retry_after: str | None = None
        self.encoding = b""
        self.framed = False  # Content-Length or chunked: the parser knows where the body ends
        self.head_done = False  # the final (non-1xx) answer's head is whole
        self.interim = False  # the message being read is a 1xx, to skip
        self.keep_alive = False

    def _expecting(self) -> bool:
        return self.done is not None and not self.done.done()

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self._expecting():
            self.close()  # nobody asked: never let it be read as the next call's answer
            return
        self.received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(_switched())
        except httptools.HttpParserError as exc:
            self._fail(Unreachable(f"malformed answer: {exc}", sent=True))
        else:
            if not self.head_done and self._expecting():
                self.head_bytes += len(data)  # counted whole: a chunk that ends in the head is all head
                if self.head_bytes > MAX_HEAD_BYTES:
                    self._fail(TooLarge("head"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self._expecting():
            return
        if self.head_done and not self.framed and exc is None:
            self._finish()  # a body delimited by the connection's end (a reset is no end)
        else:
            self._fail(Unreachable("the connection closed before a whole answer", sent=True))

    # -- httptools callbacks

    def on_message_begin(self) -> None:
        if not self._expecting():
            # A second answer behind the one asked for, in the same read.
            raise _Surplus()
        self._reset_message()

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"retry-after":
            self.retry_after = value.decode("latin-1")
        elif lowered == b"content-encoding":
            self.encoding = value.strip().lower()
        elif lowered == b"content-length":
            self.framed = True
            if value.isdigit() and int(value) > self.cap and self.parser.get_status_code() >= 200:
                self._fail(TooLarge())
        elif lowered == b"transfer-encoding":
            self.framed = True

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status == 101:
            self._fail(_switched())
            return
        if status < 200:
            # 100 Continue, 103 Early Hints...: the real answer follows (RFC 9110 15.2).
            self.interim = True
            return
        self.head_done = True
        # Asked here: once the message is complete the parser has moved on.
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.cap:
            self._fail(TooLarge())
            return
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if not self.interim:
            self._finish()

    # --

    def _finish(self) -> None:
        if not self._expecting():
            return
        body = b"".join(self.chunks)
        if self.encoding in (b"gzip", b"deflate"):
            try:
                body = _inflate(body, self.cap)
            except (zlib.error, TooLarge) as exc:
                self._fail(exc if isinstance(exc, TooLarge) else Unreachable("a compressed answer that does not inflate", sent=True))
                return
        self.done.set_result(Answer(self.parser.get_status_code(), body, self.retry_after))

    def _fail(self, exc: Exception) -> None:
        if self._expecting():
            self.done.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def reusable(self) -> bool:
        return not self.closed and self.keep_alive and not self.transport.is_closing()


def _switched() -> Unreachable:
    return Unreachable("the provider switched protocols (101), which the gateway does not speak", sent=True)


class _Surplus(Exception):
    """Bytes after the answer: the parser stops, and the connection closes."""


def _inflate(body: bytes, cap: int) -> bytes:
    inflater = zlib.decompressobj(47)  # 47: gzip or zlib headers, detected
    out = inflater.decompress(body, cap + 1)
    if len(out) > cap or inflater.unconsumed_tail:
        raise TooLarge()
    return out


class Pool:
    """Keep-alive connections to one origin, at most `size` at once."""

    def __init__(self, scheme: str, host: str, port: int, size: int, tls: ssl.SSLContext | None):
        self.host, self.port, self.tls = host, port, tls
        self.authority = host if port == (443 if scheme == "https" else 80) else f"{host}:{port}"
        self.idle: deque[_Connection] = deque()
        self.slots = asyncio.Semaphore(size)

    async def _connect(self, timeout: float) -> _Connection:
        while self.idle:
            conn = self.idle.pop()
            if conn.reusable() and time.monotonic() - conn.idle_since < _IDLE_SECONDS:
                return conn
            conn.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    _Connection, self.host, self.port, ssl=self.tls,
                    server_hostname=self.host if self.tls else None)
        except TimeoutError:
            raise TimedOut() from None
        except (OSError, ssl.SSLError) as exc:
            raise Unreachable(type(exc).__name__, sent=False) from None
        return conn

    async def request(self, head: bytes, body: bytes | None, cap: int, timeouts: "Timeouts",
                      sweeper: "Sweeper", outbox: Outbox) -> Answer:
        # acquire() and release() rather than `async with`, which adds two coroutines a call (some 3,000 instructions).
        await self.slots.acquire()
        try:
            conn = await self._connect(timeouts.connect)
            conn._reset_exchange(conn.loop.create_future(), cap)
            outbox.write(conn.transport, head + body if body else head, hold_in=conn.loop if sweeper.busy() else None)
            sweeper.watch(conn, timeouts)
            try:
                answer = await conn.done
            except BaseException:
                conn.close()  # mid-exchange: the connection's state is unknown
                raise
            finally:
                sweeper.forget(conn)
            if conn.reusable():
                conn.idle_since = time.monotonic()
                conn.done = None
                self.idle.append(conn)
            else:
                conn.close()
            return answer
        finally:
            self.slots.release()

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()


class Timeouts:
    __slots__ = ("connect", "read", "total")

    def __init__(self, connect: float, read: float, total: float):
        self.connect, self.read, self.total = connect, read, total


class Sweeper:
    """One task checks every exchange under way a few times a second, failing
    those past their total timeout or silent for longer than their read
    timeout. Two timers per call cost more than the rest of the client."""

    TICK = 0.05

    def __init__(self) -> None:
        self._watched: dict[_Connection, list] = {}
        self._task: asyncio.Task | None = None

    def watch(self, conn: _Connection, timeouts: Timeouts) -> None:
        now = time.monotonic()
        # [deadline, read timeout, bytes seen at the last tick, when they last moved]
        self._watched[conn] = [now + timeouts.total, timeouts.read, 0, now]
        if self._task is None or self._task.done():
            self._task = conn.loop.create_task(self._run())

    def busy(self) -> bool:
        """Whether other exchanges are under way."""
        return bool(self._watched)

    def forget(self, conn: _Connection) -> None:
        self._watched.pop(conn, None)

    async def _run(self) -> None:
        while self._watched:
            await asyncio.sleep(self.TICK)
            now = time.monotonic()
            for conn, state in list(self._watched.items()):
                deadline, read_timeout, seen, moved = state
                if conn.received != seen:
                    state[2] = conn.received
                    state[3] = moved = now
                if now > deadline or now - moved > read_timeout:
                    conn._fail(TimedOut())
                    self.forget(conn)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()


class Client:
    """Pools by origin; `send` is the whole interface."""

    def __init__(self) -> None:
        self._pools: dict[tuple[str, str], Pool] = {}
        self._header_blocks: dict[tuple, str] = {}
        self._tls = ssl.create_default_context()
        self._sweeper = Sweeper()
        self._outbox = Outbox()

    def _pool(self, url: str, size: int) -> tuple[Pool, str]:
        scheme, _, rest = url.partition("://")
        authority, slash, target = rest.partition("/")
        pool = self._pools.get((scheme, authority))
        if pool is None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"not an http(s) URL: {url!r}")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            pool = self._pools[scheme, authority] = Pool(parts.scheme, parts.hostname, port, size,
                                                         self._tls if parts.scheme == "https" else None)
        return pool, (slash + target).partition("#")[0] if slash else "/"

    def _header_lines(self, headers: dict[str, str]) -> str:
        """The header block for these headers, checked once for each set seen."""
        key = tuple(headers.items())
        lines = self._header_blocks.get(key)
        if lines is None:
            for name, value in key:
                if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
                    raise ValueError(f"header {name!r} holds a line break or colon")  # no header injection
            lines = "".join(f"{name}: {value}\r\n" for name, value in key)
            if len(self._header_blocks) >= 1024:  # per-call values (ids, signatures): keep it bounded
                self._header_blocks.clear()
            self._header_blocks[key] = lines
        return lines

    async def send(self, method: str, url: str, query: list[tuple[str, str]], headers: dict[str, str],
                   body: bytes | None, *, cap: int, pool_size: int, timeouts: Timeouts) -> Answer:
        pool, target = self._pool(url, pool_size)
        if query:
            target += ("&" if "?" in target else "?") + urlencode(query)
        head = f"{method} {target} HTTP/1.1\r\nhost: {pool.authority}\r\n{self._header_lines(headers)}"
        if body is not None:
            head += f"content-length: {len(body)}\r\n"
        try:
            encoded = (head + "\r\n").encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError("a header or the path holds characters HTTP/1.1 cannot carry") from None
        if pool.slots.locked():  # waiting for a free connection counts against the total
            try:
                async with asyncio.timeout(timeouts.total):
                    return await pool.request(encoded, body, cap, timeouts, self._sweeper, self._outbox)
            except TimeoutError:
                raise TimedOut() from None
        return await pool.request(encoded, body, cap, timeouts, self._sweeper, self._outbox)

    async def aclose(self) -> None:
        self._sweeper.close()
        for pool in self._pools.values():
            pool.close()
