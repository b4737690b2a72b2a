"""A fault-injecting fake of Formation's contacts API, for the upstream tests.

A real HTTP/1.1 server on loopback (raw asyncio, in a thread of the test
process), so the gateway meets faults as it would over the network: answers
that never come, connections reset midway, bodies dribbled byte by byte. It
speaks Formation's envelopes and checks `X-API-KEY` (a wrong key is a 401).

Each request picks its fault by a spec, read from:
- GET /contacts/{spec}: the contact id;
- POST or PUT /contacts: the body's `full_name`;
- anything, while `override(method, path, spec)` is set (e.g. GET /contacts, a list).

A spec is `name[:arg...]`, optionally followed by `~tag`, which is ignored but
makes the request's key (method, path, name) unique to one test, so counts
never mix. Names:

| spec | the answer |
|---|---|
| `ok` (or anything unknown) | a normal answer: the record, a list of two, a 201 for a create |
| `slow:S` | a normal answer after S seconds |
| `hang` | none: the request is read, then nothing, until the client closes |
| `drop` | the connection reset right after the request, before any byte of answer |
| `reset` | headers and part of the body, then the connection reset |
| `status:CODE[:RETRY_AFTER]` | a Formation error envelope with that status |
| `flaky:N:CODE[:RETRY_AFTER]` | the first N requests of this key get `status:...`, the others `ok` |
| `html[:CODE]` | an HTML page (default 200) |
| `truncated` | a 2xx whose JSON stops midway (its Content-Length is right) |
| `shape` | a 2xx JSON of the wrong shape (retrieve, list) or an unreadable record (create) |
| `dribble:PAUSE:N` | a normal answer whose body comes in N pieces, PAUSE seconds apart |
| `big[:chunked]` | a valid answer of 200 kB, with a Content-Length (or chunked) |
| `pieces:SIZE` | a valid answer padded to SIZE bytes, written in 8 pieces 20 ms apart |
| `interim[:CODE]` | an interim answer (100 Continue, or 103 Early Hints with a Link), then the normal one |
| `surplus` | the normal answer and, in the same write, the head of a second one for another record (`stray`), whose body follows 0.3 s later |
| `late:S` | the same, but the stray head comes S seconds after the answer |
| `cuthead` | `HTTP/1.1 200 OK` and half a header, then the connection closed |
| `hugehead` | a 200 whose headers go on for 8 MiB, or until the client leaves |
| `switch` | `101 Switching Protocols` to h2c, then nothing |
| `gzip` | the normal answer gzipped, with `Content-Encoding: gzip` |
| `eof` | the normal answer with no Content-Length, its end the connection's |
| `trailers` | the normal answer chunked, with trailer fields after the last chunk |

Every request is recorded before its fault plays (`requests`, `count`), so a
test can assert how many attempts reached the provider.
"""

import asyncio
import contextlib
import gzip
import http
import itertools
import json
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

API_KEY = "fake-formation-key"
COMPANY_ID = "6650f1a2e4b0c8d9f0aa0001"


class Seen(NamedTuple):
    method: str
    path: str
    name: str  # the spec that chose the fault, tag included
    at: float  # time.monotonic() on arrival
    body: Any


def record(contact_id: str, name: str = "Fake Contact", **extra: Any) -> dict:
    return {"id": contact_id, "created_at": 1640995200, "updated_at": 1640995200, "type": "customer",
            "status": "active", "full_name": name, "email": "fake@example.com", "description": "",
            "cc_emails": [], "bcc_emails": [], "billing": {"tax_id": "12-3456789"}, **extra}


def _envelope(data: Any) -> dict:
    return {"success": True, "message": "ok", "data": data}


_ERROR_CODES = {400: "INVALID_REQUEST", 401: "INVALID_API_KEY", 403: "ACCESS_DENIED", 404: "CONTACT_NOT_FOUND",
                429: "RATE_LIMIT_EXCEEDED"}


class FakeFormation:
    def __init__(self, api_key: str = API_KEY, authorize: "Callable[[dict[str, str]], bool] | None" = None):
        self.api_key = api_key
        # Another check of a request's headers than X-API-KEY (e.g. a bearer token's, tests/fake_oauth.py).
        self.authorize = authorize or (lambda headers: headers.get("x-api-key") == self.api_key)
        self.port = 0
        self.url = ""
        self.requests: list[Seen] = []
        self.accepted = 0  # TCP connections accepted
        self.open = 0  # TCP connections open now
        self.answering = 0  # requests read and not yet answered (or given up)
        self._overrides: dict[tuple[str, str], str] = {}
        self._tries: Counter = Counter()
        self._ids = (f"{n:024x}" for n in itertools.count(0x64B8F1A2E4B0C8D9F0000001))
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None

    # -- the test's side ------------------------------------------------------

    def start(self) -> "FakeFormation":
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-formation", daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._connection, "127.0.0.1", 0), self._loop).result(5)
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def shutdown() -> None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
        self._loop = None

    def count(self, method: str | None = None, path: str | None = None, name: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if (method is None or r.method == method)
                       and (path is None or r.path == path) and (name is None or r.name == name))

    def wait_for(self, n: int, timeout: float = 5.0, **where: str) -> int:
        """Wait until at least n matching requests arrived; the count."""
        deadline = time.monotonic() + timeout
        while (seen := self.count(**where)) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return seen

    def wait_idle(self, timeout: float = 5.0) -> int:
        """Wait until no request is being answered (a hang ends when its client leaves)."""
        deadline = time.monotonic() + timeout
        while self.answering and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.answering

    @contextlib.contextmanager
    def override(self, method: str, path: str, spec: str):
        """Every `method path` request plays `spec` while the block runs."""
        self._overrides[(method, path)] = spec
        try:
            yield
        finally:
            del self._overrides[(method, path)]

    # -- the server's side ------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        self.accepted += 1
        self.open += 1
        try:
            while await self._exchange(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass  # the client left, or sent what is not HTTP
        finally:
            self.open -= 1
            self._tasks.discard(task)
            writer.close()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """One request and its answer; whether the connection stays open."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = {}
        for line in lines:
            if ":" in line:
                key, value = line.split(":", 1)
                headers[key.strip().lower()] = value.strip()
        raw = await _body(reader, headers)
        path = unquote(urlsplit(target).path)  # %3A and : name the same resource
        body = _json_or_none(raw)
        name = self._name(method, path, body)
        with self._lock:
            self.requests.append(Seen(method, path, name, time.monotonic(), body))
            self._tries[(method, path, name)] += 1
            tries = self._tries[(method, path, name)]
        self.answering += 1
        try:
            if not self.authorize(headers):
                await _send_json(writer, 401, _error(401, "INVALID_API_KEY", "the API key is not valid"))
                return True
            return await self._play(name.split("~", 1)[0], tries, method, path, body, reader, writer)
        finally:
            self.answering -= 1

    def _name(self, method: str, path: str, body: Any) -> str:
        if (method, path) in self._overrides:
            return self._overrides[(method, path)]
        if method == "GET" and path.startswith("/contacts/"):
            return path[len("/contacts/"):]
        if method in ("POST", "PUT") and path == "/contacts" and isinstance(body, dict):
            return str(body.get("full_name", "ok"))
        return "ok"

    def _normal(self, method: str, path: str, body: Any) -> tuple[int, dict]:
        if method in ("POST", "PUT"):
            fields = {k: body[k] for k in ("type", "status", "full_name", "email", "billing") if k in (body or {})}
            return 201, _envelope({**record(next(self._ids)), **fields})
        if path == "/contacts":
            return 200, _envelope({"contacts": [record("a" * 24), record("b" * 24)], "total": 2})
        return 200, _envelope(record(path[len("/contacts/"):]))

    async def _play(self, spec: str, tries: int, method: str, path: str, body: Any,
                    reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        fault, *args = spec.split(":")
        status, answer = self._normal(method, path, body)
        if fault == "slow":
            await asyncio.sleep(float(args[0]))
        elif fault == "hang":
            # Nothing until the client gives up and closes (bounded, so a leak shows as a stuck count).
            with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
                await asyncio.wait_for(reader.read(1), 30)
            return False
        elif fault == "drop":
            _reset(writer)
            return False
        elif fault == "reset":
            payload = json.dumps(answer).encode()
            writer.write(_head(status, "application/json", len(payload) + 1000) + payload[:40])
            await writer.drain()
            await asyncio.sleep(0.05)  # let the partial body reach the client before the reset
            _reset(writer)
            return False
        elif fault == "status" or (fault == "flaky" and tries <= int(args[0])):
            code, retry_after = (args[0], args[1:2]) if fault == "status" else (args[1], args[2:3])
            error = _error(int(code), _ERROR_CODES.get(int(code), "INTERNAL_ERROR"), f"fake fault {spec}")
            await _send_json(writer, int(code), error, {"Retry-After": retry_after[0]} if retry_after else None)
            return True
        elif fault == "html":
            page = b"<html><head><title>Bad gateway</title></head><body><h1>Oops</h1></body></html>"
            await _send(writer, int(args[0]) if args else status, page, "text/html")
            return True
        elif fault == "truncated":
            await _send(writer, status, json.dumps(answer).encode()[:-25], "application/json")
            return True
        elif fault == "shape":
            if method in ("POST", "PUT"):
                # Created, with an id; but its name is no string and its date no epoch.
                answer["data"].update(full_name=["not", "a", "name"], created_at="yesterday")
            elif path == "/contacts":
                answer = _envelope({"items": answer["data"]["contacts"]})
            else:
                answer = _envelope("not a record")
        elif fault == "dribble":
            pause, pieces = float(args[0]), int(args[1])
            payload = json.dumps(answer).encode()
            writer.write(_head(status, "application/json", len(payload)))
            size = -(-len(payload) // pieces)
            for start in range(0, len(payload), size):
                writer.write(payload[start:start + size])
                await writer.drain()
                await asyncio.sleep(pause)
            return True
        elif fault == "big":
            answer["data"]["description"] = "x" * 200_000
            payload = json.dumps(answer).encode()
            if args[:1] == ["chunked"]:
                writer.write(_head(status, "application/json", None))
                for start in range(0, len(payload), 16384):
                    piece = payload[start:start + 16384]
                    writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
            else:
                writer.write(_head(status, "application/json", len(payload)) + payload)
            await writer.drain()
            return True
        elif fault == "interim":
            code = int(args[0]) if args else 100
            hint = "Link: </style.css>; rel=preload\r\n" if code == 103 else ""
            writer.write(f"HTTP/1.1 {code} {http.HTTPStatus(code).phrase}\r\n{hint}\r\n".encode())
            await writer.drain()
            await asyncio.sleep(0.02)  # the real answer in a read of its own
        elif fault in ("surplus", "late"):
            payload = json.dumps(answer).encode()
            stray = json.dumps(_envelope(record("stray", "Stray Contact"))).encode()
            writer.write(_head(status, "application/json", len(payload)) + payload)
            if fault == "late":
                await writer.drain()
                await asyncio.sleep(float(args[0]))
            # Its end comes when a client that kept the connection has sent its next request on it.
            await _in_two(writer, _head(200, "application/json", len(stray)) + stray[:10], stray[10:], 0.3)
            return True
        elif fault == "cuthead":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Le")
            await writer.drain()
            return False
        elif fault == "hugehead":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Padding: ")
            for _ in range(128):  # 8 MiB
                writer.write(b"p" * 65536)
                await writer.drain()
                if writer.is_closing():
                    break
            return False
        elif fault == "switch":
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n")
            await writer.drain()
            with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
                await asyncio.wait_for(reader.read(1), 5)
            return False
        elif fault == "gzip":
            await _send(writer, status, gzip.compress(json.dumps(answer).encode()), "application/json",
                        {"Content-Encoding": "gzip"})
            return True
        elif fault == "eof":
            payload = json.dumps(answer).encode()
            head = f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\n\r\n".encode()
            await _in_two(writer, head + payload[:50], payload[50:], 0.02)
            return False
        elif fault == "trailers":
            payload = json.dumps(answer).encode()
            writer.write(_head(status, "application/json", None) + b"%x\r\n%s\r\n" % (len(payload), payload)
                         + b"0\r\nX-Checksum: abc\r\nX-Record-Count: 1\r\n\r\n")
            await writer.drain()
            return True
        elif fault == "pieces":
            target = int(args[0])
            answer["data"]["description"] = ""
            answer["data"]["description"] = "y" * max(0, target - len(json.dumps(answer)))
            payload = json.dumps(answer).encode()
            writer.write(_head(status, "application/json", len(payload)))
            size = -(-len(payload) // 8)
            for start in range(0, len(payload), size):
                writer.write(payload[start:start + size])
                await writer.drain()
                await asyncio.sleep(0.02)
            return True
        await _send_json(writer, status, answer)
        return True


async def _in_two(writer: asyncio.StreamWriter, first: bytes, rest: bytes, pause: float) -> None:
    """Bytes in two reads of the client's, `pause` seconds apart."""
    writer.write(first)
    await writer.drain()
    await asyncio.sleep(pause)
    writer.write(rest)
    await writer.drain()


async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if not size:
                return b"".join(chunks)
            chunks.append(chunk[:-2])
    return await reader.readexactly(int(headers.get("content-length", "0")))


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _error(status: int, code: str, details: str) -> dict:
    return {"success": False, "message": http.HTTPStatus(status).phrase, "data": None,
            "error": {"code": code, "details": details}}


def _head(status: int, content_type: str, length: int | None, extra: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}", f"Content-Type: {content_type}"]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _send(writer: asyncio.StreamWriter, status: int, payload: bytes, content_type: str,
                extra: dict[str, str] | None = None) -> None:
    writer.write(_head(status, content_type, len(payload), extra) + payload)
    await writer.drain()


async def _send_json(writer: asyncio.StreamWriter, status: int, data: Any, extra: dict[str, str] | None = None) -> None:
    await _send(writer, status, json.dumps(data).encode(), "application/json", extra)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST, not a FIN: what a crashed peer or a middlebox does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# -- a gateway in front of the fake ------------------------------------------------

# Small bounds, so a fault costs a test a second or so, not a minute.
FAST_LIMITS = {"connect_timeout": 0.5, "read_timeout": 0.5, "total_timeout": 1.0, "max_response_bytes": 65536,
               "max_connections": 20}
FAST_RETRIES = {"attempts": 3, "backoff": 0.05, "max_backoff": 0.1, "budget": 5.0}
NO_BREAKER = {"failures": 100_000, "reset_after": 1.0}  # faults of one test must not trip another's breaker


def write_mapping(directory, provider: str, limits: dict | None = None, retries: dict | None = None,
                  breaker: dict | None = None, create_method: str | None = None):
    """A copy of mappings/formation.yaml named `provider`, with these limits, retries and breaker."""
    from pathlib import Path

    import yaml

    source = Path(__file__).resolve().parent.parent / "mappings" / "formation.yaml"
    spec = yaml.safe_load(source.read_text(encoding="utf-8"))
    spec["provider"] = provider
    spec["limits"] = {**spec.get("limits", {}), **FAST_LIMITS, **(limits or {})}
    spec["retries"] = {**spec.get("retries", {}), **FAST_RETRIES, **(retries or {})}
    spec["breaker"] = {**spec.get("breaker", {}), **NO_BREAKER, **(breaker or {})}
    if create_method:
        spec["objects"]["contacts"]["create"]["method"] = create_method
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{provider}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def write_connections(path, connections: dict[str, tuple[str, str]]):
    """token -> (provider, base_url); every connection uses the fake's key and company."""
    import yaml

    entries = [{"token": token, "name": token, "provider": provider, "base_url": base_url,
                "credentials": {"api_key": API_KEY}, "context": {"company_id": COMPANY_ID}}
               for token, (provider, base_url) in connections.items()]
    path.write_text(yaml.safe_dump(entries, sort_keys=False), encoding="utf-8")
    return path


GATEWAY_KEY = "faults-api-key"


def gateway_env(mappings, connections, **extra: str) -> dict[str, str]:
    return {"GATEWAY_API_KEYS": GATEWAY_KEY, "GATEWAY_MAPPINGS": str(mappings),
            "GATEWAY_CONNECTIONS": str(connections), **extra}


# -- the sockets a process holds ---------------------------------------------------

_TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
               "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN",
               "0B": "CLOSING"}


class Socket(NamedTuple):
    state: str
    local_port: int
    remote_port: int


def sockets(pid: int) -> tuple[int, list[Socket]]:
    """How many socket fds process `pid` holds, and the TCP ones among them (Linux /proc)."""
    import os

    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    found = []
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/net/{table}") as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[9] in inodes:
                    local, remote = fields[1], fields[2]
                    found.append(Socket(_TCP_STATES.get(fields[3], fields[3]), int(local.rsplit(":", 1)[1], 16),
                                        int(remote.rsplit(":", 1)[1], 16)))
    return len(inodes), found
