"""The HTTP/1.1 server `gateway serve` runs: an asyncio protocol around
httptools' request parser (llhttp, the C parser uvicorn uses), speaking ASGI
to the app.

Chosen by measurement (README, "Benchmark"): in front of the same app and
upstream client, uvicorn's per-request machinery cost more CPU than the
gateway's translation does. This server does what the gateway needs and no
more: keep-alive, pipelined requests answered in order, a request body read
whole before the app runs (capped: 413), a header cap counted on the wire
(431), trailer fields dropped, Expect: 100-continue, idle, slow-request and
send timeouts, back-pressure from slow readers, a lingering close after a
refusal, and a graceful shutdown on SIGTERM. Every refusal is the gateway's
JSON error. No TLS, no HTTP/2, no WebSockets: it serves a sidecar port.
"""

import asyncio
import itertools
import logging
import os
import re
import secrets
import signal
import socket
import time
from collections import deque
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import unquote

import httptools
from starlette.types import ASGIApp

from . import logs
from .errors import GatewayError, internal_error
from .outbox import Outbox

log = logging.getLogger("gateway")

MAX_HEADER_BYTES = 64 * 1024
# Apache's LimitRequestFields: each field costs Python objects well beyond its bytes.
MAX_HEADER_FIELDS = 100
# After a refusal, what the client still sends is read and dropped for up to this
# long and this much (nginx's lingering close): closed with unread bytes, the
# socket would answer them with a reset, and a client that writes its whole body
# before reading (urllib, requests) would see the reset, never the refusal.
LINGER_SECONDS = 5.0
LINGER_BYTES = 16 * 1024 * 1024
_TICK = 0.5

_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _Clock:
    """The Date header, rendered once a second rather than once a response."""

    def __init__(self) -> None:
        self.header = b""
        self.tick()

    def tick(self) -> None:
        self.header = b"date: " + formatdate(usegmt=True).encode() + b"\r\n"


class _Request:
    __slots__ = ("scope", "body", "keep_alive", "started")

    def __init__(self, scope: dict, keep_alive: bool, started: float):
        self.scope = scope
        self.body: list[bytes] = []
        self.keep_alive = keep_alive
        self.started = started


class _Refusal(Exception):
    """A request the server answers itself, and closes the connection after."""

    def __init__(self, error: GatewayError):
        self.error = error


def _too_large_head() -> _Refusal:
    return _Refusal(GatewayError(431, "headers_too_large", f"the request line and headers exceed {MAX_HEADER_BYTES} bytes"))


def _too_many_fields() -> _Refusal:
    return _Refusal(GatewayError(431, "headers_too_large", f"the request has more than {MAX_HEADER_FIELDS} header fields"))


def _error_bytes(error: GatewayError, clock: _Clock) -> bytes:
    response = error.response()
    headers = [(k, v) for k, v in response.raw_headers if k != b"connection"] + [(b"connection", b"close")]
    return _head(response.status_code, headers, clock) + response.body


def _head(status: int, headers: list[tuple[bytes, bytes]], clock: _Clock) -> bytes:
    line = _STATUS_LINES.get(status) or f"HTTP/1.1 {status} Status\r\n".encode()
    block = b"".join([name + b": " + value + b"\r\n" for name, value in headers])
    # A line break inside a name or value would add headers, or a body, of the app's making.
    if block.count(b"\r") != len(headers) or block.count(b"\n") != len(headers) or b"\0" in block \
            or any(b":" in name for name, _ in headers):
        raise ValueError("the app sent a header HTTP/1.1 cannot carry")
    return line + clock.header + block + b"\r\n"


class _Connection(asyncio.Protocol):
    """One client connection: parses requests, runs them one at a time, in order."""

    def __init__(self, server: "Server"):
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client: tuple | None = None
        self.queue: deque[_Request] = deque()  # parsed, waiting their turn
        self.current: _Request | None = None  # parsing, until complete
        self.task: asyncio.Task | None = None  # the request being answered
        self.closing = False
        self.last = False  # no more requests on this connection: close once those parsed are answered
        self.final: bytes | None = None  # a refusal to write after them
        self.writable = True
        self.blocked_since = 0.0  # when the client last took some of what is buffered for it
        self.buffered = 0  # what was buffered then
        self.closing_since = 0.0
        self.lingering = False
        self.linger_left = 0
        self.in_head = False  # parsing a request's head, or its trailer section
        self.messages = 0  # heads (requests, trailer sections) begun on this connection
        self.head_wire = 0  # bytes of reads that began and ended in the current head
        self.idle_since = time.monotonic()
        # Kept: on Python 3.11 each asyncio.get_running_loop() makes a getpid() system call.
        self.loop = asyncio.get_running_loop()
        self.disconnected = self.loop.create_future()
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.fields = 0
        self.body_bytes = 0
        self.head_done = False

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client = tuple(peer[:2]) if isinstance(peer, tuple) else None
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.connections.discard(self)
        self.queue.clear()
        if not self.disconnected.done():
            self.disconnected.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            self.linger_left -= len(data)
            if self.linger_left < 0:
                self.transport.abort()
            return
        in_head, message = self.in_head, self.messages
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # An upgrade (h2c, websocket) the server does not do: answer the
            # request as HTTP/1.1, which RFC 9110 allows, then close.
            self.transport.pause_reading()
            self.last = True
        except httptools.HttpParserError as exc:
            # A callback's own refusal reaches here as the cause of the parser's error.
            refusal = exc.__context__
            self._refuse(refusal.error if isinstance(refusal, _Refusal) else
                         GatewayError(400, "malformed_request", f"the request is not valid HTTP/1.1: {exc}"))
        else:
            # The parser keeps a field's pieces until the field is whole, so the
            # callbacks alone cannot bound a head that arrives in many reads.
            if in_head and self.in_head and message == self.messages:
                self.head_wire += len(data)
                if self.head_wire > MAX_HEADER_BYTES:
                    self._refuse(_too_large_head().error)

    def pause_writing(self) -> None:
        self.writable = False  # a slow reader: answer nothing more until it catches up
        self.blocked_since = time.monotonic()
        self.buffered = self.transport.get_write_buffer_size()

    def resume_writing(self) -> None:
        self.writable = True
        self._next()

    # -- httptools callbacks

    def on_message_begin(self) -> None:
        self._reset()
        self.current = _Request({}, False, time.monotonic())
        self.in_head = True
        self.messages += 1
        self.head_wire = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.header_bytes += len(url)
        if self.header_bytes > MAX_HEADER_BYTES:
            raise _too_large_head()

    def on_header(self, name: bytes, value: bytes) -> None:
        # Counted as on the wire (": " and the line's end), so empty fields cost too;
        # trailer fields count against the same caps.
        self.header_bytes += len(name) + len(value) + 4
        self.fields += 1
        if self.header_bytes > MAX_HEADER_BYTES:
            raise _too_large_head()
        if self.fields > MAX_HEADER_FIELDS:
            raise _too_many_fields()
        if not self.head_done:
            # A chunked body's trailer fields are dropped: they must never pass for
            # headers (RFC 9112 7.1.2), or x-api-key or Idempotency-Key could hide there.
            if value[-1:] in (b" ", b"\t"):
                value = value.rstrip(b" \t")  # trailing whitespace is no part of a value (RFC 9110 5.5)
            self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.head_done = True
        self.in_head = False
        request = self.current
        request.keep_alive = self.parser.should_keep_alive()
        version = self.parser.get_http_version()
        if version not in ("1.1", "1.0"):
            # A request line without a version: llhttp reads it as HTTP/0.9, yet
            # with headers, a body and keep-alive, which no other reader would.
            raise _Refusal(GatewayError(505, "http_version_not_supported", "the request line names no HTTP/1.x version"))
        try:
            url = httptools.parse_url(self.url)
            path = url.path.decode("ascii")
        except (httptools.HttpParserInvalidURLError, UnicodeDecodeError):
            raise _Refusal(GatewayError(400, "malformed_request", "the request target is not a valid path")) from None
        request.scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": version,
            "server": self.server.address,
            "client": self.client,
            "scheme": "http",
            "method": self.parser.get_method().decode("ascii"),
            "root_path": "",
            "path": unquote(path) if "%" in path else path,
            "raw_path": url.path,
            "query_string": url.query or b"",
            "headers": self.headers,
            "state": {},
        }
        limit = self.server.max_body_bytes
        expects = False
        codings = 0
        for name, value in self.headers:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise _Refusal(GatewayError(413, "body_too_large", f"the request body exceeds {limit} bytes"))
            if name == b"transfer-encoding":
                codings += 1
                # Only chunked is decoded: a body in any other coding (gzip, chunked)
                # would reach the app still encoded (RFC 9112 6.1: 501).
                if codings > 1 or value.strip().lower() != b"chunked":
                    raise _Refusal(GatewayError(501, "unsupported_transfer_coding",
                                                "only Transfer-Encoding: chunked is supported"))
            expects = expects or (name == b"expect" and value.lower() == b"100-continue")
        # HTTP/1.0 has no 100 (Continue): a 1.0 client's Expect is ignored (RFC 9110 10.1.1).
        if expects and self.task is None and not self.queue and request.scope["http_version"] == "1.1":
            self.server.outbox.write(self.transport, _CONTINUE, hold_in=None)

    def on_chunk_header(self) -> None:
        # The last chunk's header is followed by the trailer section, a head of
        # its own; any other chunk's by data, which ends it (on_body). Each is
        # counted afresh: a read ending after a chunk's size line is no head.
        self.in_head = True
        self.messages += 1
        self.head_wire = 0

    def on_body(self, body: bytes) -> None:
        self.in_head = False
        self.body_bytes += len(body)
        if self.body_bytes > self.server.max_body_bytes:
            raise _Refusal(GatewayError(413, "body_too_large", f"the request body exceeds {self.server.max_body_bytes} bytes"))
        self.current.body.append(body)

    def on_message_complete(self) -> None:
        self.in_head = False
        self.queue.append(self.current)
        self.current = None
        if len(self.queue) > 1 or self.task is not None:
            self.transport.pause_reading()  # pipelined: hold the rest until these are answered
        self._next()

    # -- answering

    def _next(self) -> None:
        if self.task is not None or not self.writable or self.closing:
            return
        if not self.queue:
            if self.last:
                if self.final is not None:
                    self.server.outbox.write(self.transport, self.final, hold_in=None)
                    self._linger()
                else:
                    self._close()
                return
            self.idle_since = time.monotonic()
            if self.current is not None:
                # Its first bytes came in with the requests before it and waited
                # unread behind them: its time to arrive whole starts now.
                self.current.started = self.idle_since
            self.transport.resume_reading()
            return
        request = self.queue.popleft()
        self.task = self.loop.create_task(self._answer(request))
        self.server.tasks.add(self.task)

    async def _answer(self, request: _Request) -> None:
        exchange = _Exchange(self, request)
        # The app names the path's route; until it does, the path is no route's.
        fields = {"request_id": exchange.request_id, "method": request.scope["method"], "path": logs.UNMATCHED}
        logs.begin(fields)  # this task's: the app adds its own fields as it answers
        try:
            await self.server.app(request.scope, exchange.receive, exchange.send)
            if not exchange.complete:
                raise RuntimeError("the app returned without completing its response")
        except Exception:
            log.exception("unexpected error on %s %s", request.scope["method"], request.scope["path"])
            if exchange.written:
                self._close()  # an answer went out and then the app failed: the connection cannot be trusted
            else:  # answers are written whole, so nothing of this one has gone out yet
                exchange.status = 500
                exchange.write(_error_bytes(internal_error(), self.server.clock), keep_alive=False)
        finally:
            self.server.tasks.discard(self.task)
            self.task = None
        if self.server.access is not None:
            fields.update(status=exchange.status, duration_ms=round((time.monotonic() - request.started) * 1000, 3))
            self.server.access.write(fields, self.loop)
        self._next()

    def _refuse(self, error: GatewayError) -> None:
        """Answer a request the parser refused, after those before it, and close."""
        if self.server.access is not None:  # a line like any request's: the path is no route's
            request = self.current
            scope = request.scope if request is not None else {}
            started = request.started if request is not None else time.monotonic()
            self.server.access.write({
                "request_id": _request_id(scope.get("headers", self.headers)), "method": scope.get("method") or self._method(),
                "path": logs.UNMATCHED, "status": error.status, "error": error.code,
                "duration_ms": round((time.monotonic() - started) * 1000, 3)}, self.loop)
        self.transport.pause_reading()
        self.current = None
        self.last = True
        self.final = _error_bytes(error, self.server.clock)
        self._next()

    def _method(self) -> str | None:
        """The request line's method, once the parser has read one."""
        try:
            return self.parser.get_method().decode("ascii") if self.url else None
        except (httptools.HttpParserError, UnicodeDecodeError):
            return None

    def _close(self) -> None:
        self.closing = True
        self.closing_since = self.blocked_since = time.monotonic()
        self.buffered = self.transport.get_write_buffer_size()
        self.server.outbox.flush()  # what is held for this connection goes before the close
        self.transport.close()

    def _linger(self) -> None:
        """Close after a refusal: send all, then read and drop what the client
        still sends until it closes, or for LINGER_SECONDS and LINGER_BYTES."""
        self.closing = self.lingering = True
        self.closing_since = time.monotonic()
        self.linger_left = LINGER_BYTES
        self.server.outbox.flush()
        if self.transport.can_write_eof():
            self.transport.write_eof()  # after what is buffered: the refusal, then our end of the stream
        self.transport.resume_reading()

    def shutdown(self) -> None:
        """Server shutdown: read no more; close once what was parsed is answered."""
        self.transport.pause_reading()
        self.current = None
        self.last = True
        self._next()

    def _reading(self, now: float) -> bool:
        """Whether the client has taken any of what is buffered for it within the send timeout."""
        buffered = self.transport.get_write_buffer_size()
        if buffered < self.buffered:  # a slow reader is still a reader
            self.blocked_since = now
        self.buffered = buffered
        return now - self.blocked_since <= self.server.send_timeout

    def check_timeouts(self, now: float) -> None:
        if self.closing:
            # A close waits for the client to take what is buffered; a lingering
            # one for it to stop sending. Neither waits for ever.
            if self.lingering:
                if now - self.closing_since > LINGER_SECONDS:
                    self.transport.abort()
            elif not self._reading(now):
                self.transport.abort()
            return
        if not self.writable and not self._reading(now):
            # Answers it does not read (pipelined requests it never reads the answers of).
            log.info("closing a connection whose client has read nothing for %g s", self.server.send_timeout)
            self.closing = True
            self.transport.abort()
            return
        if self.task is not None or self.queue:
            return  # answering: reading waits until the requests read are answered
        limit = self.server.request_timeout
        if self.current is not None:
            if now - self.current.started > limit:
                self._refuse(GatewayError(408, "request_timeout", f"the request did not arrive whole within {limit:g} s"))
        elif now - self.idle_since > self.server.keep_alive:
            self._close()


class _Exchange:
    """The ASGI receive and send of one request."""

    __slots__ = ("conn", "request", "request_id", "started", "complete", "written", "status", "head", "chunks", "read")

    def __init__(self, conn: _Connection, request: _Request):
        self.conn = conn
        self.request = request
        self.request_id = _request_id(request.scope["headers"])
        self.started = self.complete = self.written = self.read = False
        self.status = 0
        self.head: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []

    async def receive(self) -> dict:
        if not self.read:
            self.read = True
            body = self.request.body
            return {"type": "http.request", "body": body[0] if len(body) == 1 else b"".join(body), "more_body": False}
        # Shielded: a waiter cancelled once its response is sent (Starlette's
        # FileResponse) would otherwise cancel the connection's future for every later request on it.
        await asyncio.shield(self.conn.disconnected)
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        kind = message["type"]
        if kind == "http.response.start" and not self.started:
            self.started = True
            self.status = message["status"]
            self.head = list(message.get("headers", ()))
        elif kind == "http.response.body" and self.started and not self.complete:
            self.chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                self.complete = True
                self._finish()
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} at this point of the response")

    def _finish(self) -> None:
        # The whole answer in one write: one packet, one wake-up of the client.
        body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        conn = self.conn
        keep_alive = self.request.keep_alive and not conn.server.stopping and not (conn.last and not conn.queue and conn.final is None)
        headers = self.head
        sized = False
        for name, value in headers:
            name = name.lower()
            if name == b"content-length":
                sized = True
            elif name == b"connection" and b"close" in value.lower():
                keep_alive = False
        if not sized:
            headers.append((b"content-length", str(len(body)).encode()))
        headers.append((b"x-request-id", self.request_id.encode()))
        if not keep_alive:
            headers = [(k, v) for k, v in headers if k.lower() != b"connection"] + [(b"connection", b"close")]
        if self.request.scope["method"] == "HEAD" or self.status in (204, 304):
            body = b""
        self.write(_head(self.status, headers, conn.server.clock) + body, keep_alive)

    def write(self, data: bytes, keep_alive: bool) -> None:
        conn = self.conn
        self.written = True
        if conn.closing:
            return  # the client has gone; the answer has nowhere to go
        # Held while other requests are under way (the one answered here is among the tasks).
        hold = keep_alive and len(conn.server.tasks) > 1
        conn.server.outbox.write(conn.transport, data, hold_in=conn.loop if hold else None)
        if not keep_alive:
            conn._close()


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The caller's X-Request-ID, if it is a plain token, so a trace can be
    followed through; otherwise one of the gateway's own."""
    for name, value in headers:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(text):
                return text
            break
    return f"{_ID_PREFIX}{next(_ID_NUMBERS):x}"


# The gateway's own request ids: a random prefix for this process, then a count.
# uuid4() would cost a getrandom() system call a request.
_ID_PREFIX = secrets.token_hex(8) + "-"
_ID_NUMBERS = itertools.count(1)


class _Lifespan:
    """The ASGI lifespan protocol: the app starts up before the port opens
    and shuts down (closing its pools and stores) after the last answer."""

    def __init__(self, app: ASGIApp):
        self.app = app
        self.inbox: asyncio.Queue[dict] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self.started, self.stopped = loop.create_future(), loop.create_future()
        self.task = loop.create_task(self._run())

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
        try:
            await self.app(scope, self.inbox.get, self._send)
        except BaseException as exc:
            for step in (self.started, self.stopped):
                if not step.done():
                    step.set_exception(exc)
        else:  # an app that returns at once has no lifespan to run
            for step in (self.started, self.stopped):
                if not step.done():
                    step.set_result(None)

    async def _send(self, message: dict) -> None:
        step = self.started if message["type"].startswith("lifespan.startup.") else self.stopped
        if message["type"].endswith(".failed"):
            step.set_exception(RuntimeError(message.get("message") or message["type"]))
        else:
            step.set_result(None)

    async def startup(self) -> None:
        await self.inbox.put({"type": "lifespan.startup"})
        await self.started

    async def shutdown(self) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self.stopped


class Server:
    def __init__(self, app: ASGIApp, host: str, port: int, *, max_body_bytes: int, keep_alive: float = 5.0,
                 request_timeout: float = 30.0, send_timeout: float = 30.0, access_log: bool = True,
                 sock: socket.socket | None = None, parent: int | None = None):
        """`sock`: a listening socket to serve (a worker's, gateway/workers.py) rather than one bound here;
        `parent`: the supervisor's pid; when it is gone, the server shuts down."""
        self.app = app
        self.sock = sock
        self.parent = parent
        self.address = tuple(sock.getsockname()[:2]) if sock is not None else (host, port)
        self.max_body_bytes = max_body_bytes
        self.keep_alive = keep_alive  # an idle connection is closed after this
        self.request_timeout = request_timeout  # a request must arrive whole within this of its first byte
        self.send_timeout = send_timeout  # a client may leave answers unread for this long
        self.access = logs.AccessLines() if access_log else None
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task] = set()
        self.clock = _Clock()
        self.outbox = Outbox()
        self.stopping = False

    async def serve(self, graceful_timeout: float, stop: asyncio.Event | None = None) -> None:
        """Serve until SIGTERM or SIGINT (or `stop` is set), then shut down gracefully."""
        loop = asyncio.get_running_loop()
        stop = stop or asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        lifespan = _Lifespan(self.app)
        await lifespan.startup()
        if self.sock is not None:
            listener = await loop.create_server(lambda: _Connection(self), sock=self.sock, backlog=2048)
        else:
            listener = await loop.create_server(lambda: _Connection(self), *self.address, backlog=2048)
        log.info("listening on http://%s:%d", *self.address, extra=logs.event("listening"))
        ticker = loop.create_task(self._tick(stop))
        await stop.wait()
        log.info("shutting down: no new connections; up to %g s for the calls under way", graceful_timeout,
                 extra=logs.event("shutting_down"))
        self.stopping = True
        listener.close()
        ticker.cancel()
        for conn in list(self.connections):
            conn.shutdown()
        deadline = loop.time() + graceful_timeout
        while self.tasks and loop.time() < deadline:  # answers may start the requests pipelined behind them
            await asyncio.wait(set(self.tasks), timeout=deadline - loop.time())
        if self.tasks:
            log.warning("cancelling %d call(s) still under way", len(self.tasks))
            for task in self.tasks:
                task.cancel()
            await asyncio.wait(set(self.tasks), timeout=1.0)
        for conn in list(self.connections):
            conn._close()
        await listener.wait_closed()
        await lifespan.shutdown()
        if self.access is not None:
            self.access.flush()

    async def _tick(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(_TICK)
            self.clock.tick()
            if self.parent is not None and os.getppid() != self.parent:
                log.error("the supervisor has gone; shutting down")
                stop.set()
            now = time.monotonic()
            for conn in list(self.connections):
                conn.check_timeouts(now)


def run(app: ASGIApp, host: str, port: int, *, graceful_timeout: float, **options) -> None:
    serving = Server(app, host, port, **options).serve(graceful_timeout)
    try:
        import uvloop
    except ImportError:  # not built for this platform: the standard loop, slower
        asyncio.run(serving)
    else:
        uvloop.run(serving)
