"""Differential fuzzing of the request parsing of gateway/server.py against h11.

Random request streams, several requests pipelined on one connection, reach
our server's protocol class in random pieces; h11 reads the same bytes. The
two must agree on each request (method, target, version, header section,
body, keep-alive) up to the point where one of them stops, or our server
must refuse (a JSON error, then the connection ends). A request one parser
frames differently from the other is the seed of request smuggling when a
proxy in front frames it the way h11 does.

Where h11 differs without moving a request's boundaries, a rule says why:
empty lines before a request (`theirs`), `_as_h11_reports` and `_agree`.
Anything else h11 refuses and our server accepts fails the test. It found a
request line without a version that llhttp read with headers, a body and
keep-alive (now a 505), and transfer codings the server passed on undecoded
(now a 501).
"""

import asyncio
import json
import re
from collections import deque
from typing import NamedTuple

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.server import Server, _Connection

MAX_BODY = 1024


class Message(NamedTuple):
    method: bytes
    target: bytes
    version: bytes
    headers: tuple[tuple[bytes, bytes], ...]  # the header section only: never trailer fields
    body: bytes
    keep_alive: bool


class Reading(NamedTuple):
    """What one side made of a stream."""

    messages: list[Message]
    # refused: said no (ours: a 4xx; h11: RemoteProtocolError) at the request after `messages`;
    # closed: ended the connection after the last of `messages` (ours only);
    # idle: read everything, no request begun; partial: waits for the rest of a request.
    end: str
    detail: str = ""


# -- our server, in-process, fed exactly the pieces drawn


async def _echo(scope, receive, send) -> None:
    # In a header, not the body: the server drops the body of an answer to HEAD.
    body = (await receive())["body"]
    target = scope["raw_path"] + (b"?" + scope["query_string"] if scope["query_string"] else b"")
    echo = {
        "method": scope["method"],
        "target": target.decode("latin-1"),
        "version": scope["http_version"],
        "headers": [[name.decode("latin-1"), value.decode("latin-1")] for name, value in scope["headers"]],
        "body": body.decode("latin-1"),
    }
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-echo", json.dumps(echo).encode())]})
    await send({"type": "http.response.body", "body": b""})


class _Wire:
    """The transport side of a connection, recording what the server writes."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.paused = False
        self.closed = False
        self.ended = False  # our end of the stream sent: what the client still sends is dropped

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.written += data

    def close(self) -> None:
        self.closed = True

    abort = close

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_write_buffer_size(self) -> int:
        return 0  # the client takes every write at once

    def get_extra_info(self, name: str, default=None):
        return ("127.0.0.1", 40000) if name == "peername" else default

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.ended = True


async def _settle(conn: _Connection) -> None:
    """Let the loop run until every request parsed so far is answered."""
    for _ in range(200):
        if conn.task is None and not conn.queue:
            break
        await asyncio.sleep(0)
    else:
        raise AssertionError("the server stopped answering the requests it parsed")
    await asyncio.sleep(0)  # the outbox flushes what it held at the end of the turn


async def _feed(pieces: list[bytes]) -> tuple[_Wire, bool]:
    # A task's exception would otherwise pass unseen once its answer is written.
    faults = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: faults.append(context))
    conn = _Connection(Server(_echo, "127.0.0.1", 0, max_body_bytes=MAX_BODY))
    wire = _Wire()
    conn.connection_made(wire)
    pending = deque(pieces)
    # A paused transport reads nothing: the pieces wait, as they would in the socket.
    while pending and not wire.closed and not wire.paused:
        conn.data_received(pending.popleft())
        await _settle(conn)
    assert not faults, faults
    return wire, conn.current is not None


def _responses(written: bytes):
    while written:
        head, blank, written = written.partition(b"\r\n\r\n")
        assert blank, f"a response cut short: {head!r}"
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        fields = {name.lower(): value for name, value in (line.split(b": ", 1) for line in lines[1:])}
        length = int(fields.get(b"content-length", b"0"))
        yield status, fields, written[:length]
        written = written[length:]


def ours(pieces: list[bytes]) -> Reading:
    wire, partial = asyncio.run(_feed(pieces))
    answers = [answer for answer in _responses(bytes(wire.written)) if answer[0] != 100]
    messages = []
    for status, fields, body in answers:
        if status != 200:
            # 501: a transfer coding it does not decode; 505: no HTTP/1.x version (RFC 9110 15.6).
            assert 400 <= status < 500 or status in (501, 505), f"answered {status}: {body!r}"
            assert fields[b"connection"] == b"close" and "code" in json.loads(body)
            assert (status, fields, body) == answers[-1] and (wire.closed or wire.ended), "answered or read on after a refusal"
            return Reading(messages, "refused", body.decode())
        echo = json.loads(fields[b"x-echo"])
        messages.append(Message(
            echo["method"].encode(), echo["target"].encode("latin-1"), echo["version"].encode(),
            tuple((n.encode("latin-1"), v.encode("latin-1")) for n, v in echo["headers"]),
            echo["body"].encode("latin-1"), fields.get(b"connection") != b"close"))
        if fields.get(b"connection") == b"close":
            return Reading(messages, "closed")
    return Reading(messages, "partial" if partial else "idle")


# -- h11, one request at a time


def _h11_one(data: bytes) -> tuple[Message, bytes] | None:
    """The first request in `data` and the bytes after it; None if incomplete."""
    # A fresh connection per request: h11 has no HTTP/1.0 keep-alive, and
    # would otherwise stop reading where our server rightly reads on.
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    request, body = None, b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            return None
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            break  # its headers are the trailer fields: not compared
    conn.send(h11.Response(status_code=200, headers=[(b"content-length", b"0")]))
    conn.send(h11.EndOfMessage())
    keep_alive = conn.our_state is h11.DONE
    return Message(request.method, request.target, request.http_version, tuple(request.headers), body,
                   keep_alive), conn.trailing_data[0]


_BLANK_LINES = re.compile(rb"(?:\r?\n)*")


def theirs(stream: bytes) -> Reading:
    messages, rest = [], stream
    while True:
        # RFC 9112 2.2: a server SHOULD ignore empty lines before a request line;
        # llhttp does, h11 refuses them. Dropped, they cannot move a boundary.
        rest = rest[_BLANK_LINES.match(rest).end():]
        if not rest:
            return Reading(messages, "idle")
        try:
            one = _h11_one(rest)
        except h11.RemoteProtocolError as exc:
            return Reading(messages, "refused", str(exc))
        if one is None:
            return Reading(messages, "partial")
        messages.append(one[0])
        rest = one[1]


# -- the comparison


def _as_h11_reports(message: Message) -> Message:
    # h11 lowercases Transfer-Encoding's value (`Chunked`); llhttp reads the field itself.
    headers = tuple((n, v.lower() if n == b"transfer-encoding" else v) for n, v in message.headers)
    return message._replace(headers=headers)


def _agree(mine: Message, h11s: Message) -> bool:
    mine = _as_h11_reports(mine)
    if h11s.version == b"1.0":
        # h11 never keeps an HTTP/1.0 connection open; llhttp honours `Connection: keep-alive`.
        h11s = h11s._replace(keep_alive=mine.keep_alive)
    return mine == h11s


def check(stream: bytes, pieces: list[bytes]) -> None:
    mine, h11s = ours(pieces), theirs(stream)
    where = f"\nstream: {stream!r}\npieces: {pieces!r}\nours: {mine}\nh11: {h11s}"
    for k, (a, b) in enumerate(zip(mine.messages, h11s.messages)):
        assert _agree(a, b), f"request {k} read differently{where}"
    assert len(mine.messages) <= len(h11s.messages), f"request {len(h11s.messages)} accepted by ours only{where}"
    if mine.end in ("refused", "closed"):
        return  # we stopped first (or together): nothing after is ours to agree on
    assert len(mine.messages) == len(h11s.messages), f"ours waits where h11 has a whole request{where}"
    if mine.end == "idle":
        assert h11s.end == "idle", f"ours ignored bytes h11 reads as a request{where}"
    else:
        assert h11s.end in ("partial", "refused"), f"ours waits inside a request h11 has ended{where}"


# -- the generator: well-formed requests, some given one hostile twist

_TWISTS = [
    "bare LF", "obs-fold", "space before colon", "control char", "odd method", "no version",
    "odd length", "two lengths", "length and chunked", "odd coding",
    "odd chunk size", "odd chunk end", "odd chunk extension", "odd trailer",
]
_FRAMING_OF = {
    "odd length": "length", "two lengths": "length", "length and chunked": "both", "odd coding": "chunked",
    "odd chunk size": "chunked", "odd chunk end": "chunked", "odd chunk extension": "chunked", "odd trailer": "chunked",
}
_TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_PATH_CHARS = "abcxyzABC0123456789-._~!$&'()*+,;=:@%"
_value_chars = st.sampled_from([bytes([c]) for c in range(0x21, 0x7f)] + [b" ", b"\t", b"\x80", b"\xe9", b"\xff"])

# Near misses among them (Content-Lengthy, Transfer-Encodings) must frame nothing.
_names = st.one_of(
    st.sampled_from([b"Accept", b"x-api-key", b"Content-Type", b"X-Connection-Token", b"Idempotency-Key",
                     b"cookie", b"X_Under_Score", b"Content-Lengthy", b"Transfer-Encodings"]),
    st.text(_TCHARS, min_size=1, max_size=12).map(str.encode))
_values = st.lists(_value_chars, max_size=16).map(b"".join)
_fields = st.lists(st.tuples(_names, _values), max_size=3)


@st.composite
def _targets(draw) -> bytes:
    path = "/" + "/".join(draw(st.lists(st.text(_PATH_CHARS, max_size=6), max_size=3)))
    if draw(st.booleans()):
        path += "?" + draw(st.text(_PATH_CHARS + "/?", min_size=1, max_size=10))
    return path.encode()


def _content_lengths(draw, n: int, twist: str | None) -> list[bytes]:
    good = str(n).encode()
    if twist == "odd length":
        return [draw(st.sampled_from([b"+" + good, b"-" + good, good + b", " + good, good + b" " + good, b"",
                                      b"0x" + good, b"9" * 25, str(n + 3).encode(), str(max(n - 2, 0)).encode()]))]
    if twist == "two lengths":
        return [good, draw(st.sampled_from([good, str(n + 1).encode(), b"0"]))]
    return [draw(st.sampled_from([good, good, b"00" + good, b" " + good + b" "]))]


def _codings(draw, twist: str | None) -> list[bytes]:
    """Transfer-Encoding field values, one a field."""
    if twist == "odd coding":
        return draw(st.sampled_from([
            [b"chunked, gzip"], [b"chunked,"], [b"xchunked"], [b"chunk"], [b"chunked;q=1"], [b"identity"],
            [b"chunked, chunked"], [b"chunked", b"chunked"], [b"chunked", b"gzip"], [b"chunked\x0b"],
        ]))
    # Valid, every one: codings before the final chunked, alone or in fields of their own.
    return draw(st.sampled_from([[b"chunked"]] * 4 + [
        [b"Chunked"], [b"CHUNKED"], [b" chunked "], [b"gzip, chunked"], [b",chunked"], [b"gzip", b"chunked"]]))


def _chunked(draw, body: bytes, twist: str | None) -> bytes:
    """`body` in chunks, with extensions and trailer fields; the twist lands on one of the chunk lines."""
    sizes = []
    while sum(sizes) < len(body):
        sizes.append(draw(st.integers(1, len(body) - sum(sizes))))
    odd = draw(st.integers(0, len(sizes)))  # the chunk the twist lands on, if a chunk twist; len: the last chunk
    out, at = b"", 0
    for i, size in enumerate(sizes + [0]):
        here = twist if i == odd else None
        out += _chunk_size(draw, size, here) + _chunk_ext(draw, here) + b"\r\n"
        if size:
            end = draw(st.sampled_from([b"\n", b"", b"X\r\n", b"\r\r\n"])) if here == "odd chunk end" else b"\r\n"
            out += body[at:at + size] + end
            at += size
    for name, value in draw(st.lists(st.tuples(_names, _values), max_size=2)):
        out += name + b": " + value + b"\r\n"
    if twist == "odd trailer":
        out += draw(st.sampled_from([b"X: a\r\n folded\r\n", b"X: a\x00b\r\n", b"X : a\r\n", b"X: a\n",
                                     b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n"]))
    return out + b"\r\n"


def _chunk_size(draw, size: int, twist: str | None) -> bytes:
    good = draw(st.sampled_from(["%x", "%X", "%03x"])) % size
    if twist == "odd chunk size":
        return draw(st.sampled_from(["0x" + good, " " + good, good + " ", "-" + good, "+" + good, "",
                                     "1" + "0" * 16 + good, "f" * 17, "%x" % (size + 1)])).encode()
    return good.encode()


def _chunk_ext(draw, twist: str | None) -> bytes:
    if twist == "odd chunk extension":
        return draw(st.sampled_from([b"; a=b", b";a=\x01", b";", b";a=b@c", b";a=\"x\r\ny\"", b" ;a"]))
    return draw(st.sampled_from([b""] * 4 + [b";a", b";a=b", b';n="v w"', b";a=b;c=d"]))


@st.composite
def requests(draw) -> bytes:
    # Three in four clean, so that most streams get past their first request.
    twist = draw(st.sampled_from([None] * 3 * len(_TWISTS) + _TWISTS))
    version = draw(st.sampled_from([b"HTTP/1.1"] * 7 + [b"HTTP/1.0"]))
    fields = [(b"Host", b"gateway.test")] + draw(_fields) + draw(st.sampled_from(
        [[]] * 12 + [[(b"Connection", b"close")], [(b"Connection", b"keep-alive")], [(b"Expect", b"100-continue")]]))
    if twist == "control char":
        value = draw(_values)
        at = draw(st.integers(0, len(value)))
        control = draw(st.sampled_from([b"\x00", b"\x01", b"\x7f", b"\r", b"\x0b"]))
        fields.append((draw(_names), value[:at] + control + value[at:]))
    body = draw(st.binary(max_size=40))
    framing = _FRAMING_OF.get(twist) or draw(st.sampled_from(["none", "length", "chunked"]))
    if framing in ("length", "both"):
        fields += [(b"Content-Length", v) for v in _content_lengths(draw, len(body), twist)]
    if framing in ("chunked", "both"):
        fields += [(b"Transfer-Encoding", v) for v in _codings(draw, twist)]
        body = _chunked(draw, body, twist)
    elif framing == "none":
        body = b""
    method = draw(st.sampled_from([b"get", b"FOO", b"GET\t"] if twist == "odd method" else
                                  [b"GET", b"POST", b"PUT", b"PATCH", b"DELETE", b"HEAD", b"OPTIONS"]))
    lines = [method + b" " + draw(_targets()) + (b"" if twist == "no version" else b" " + version)]
    colon = b" : " if twist == "space before colon" else b": "
    lines += [name + colon + value for name, value in draw(st.permutations(fields))]
    if twist == "obs-fold":
        lines.insert(draw(st.integers(2, len(lines))), draw(st.sampled_from([b" folded", b"\tchunked"])))
    ends = [b"\r\n"] * (len(lines) + 1)
    if twist == "bare LF":
        ends[draw(st.integers(0, len(lines)))] = b"\n"
    head = b"".join(line + end for line, end in zip(lines + [b""], ends))
    # An empty line before a request is no twist: RFC 9112 2.2 has servers ignore it.
    return draw(st.sampled_from([b""] * 6 + [b"\r\n", b"\n"])) + head + body


@st.composite
def streams(draw) -> tuple[bytes, list[bytes]]:
    stream = b"".join(draw(st.lists(requests(), min_size=1, max_size=4)))
    cuts = sorted(draw(st.sets(st.integers(1, max(len(stream) - 1, 1)), max_size=10)))
    return stream, [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)]) if a < b]


@settings(max_examples=500, deadline=None, database=None, derandomize=True)
@given(streams())
def test_ours_and_h11_read_random_streams_alike(drawn):
    check(*drawn)


# -- hand-written smuggling attempts, each followed by a request a desync would misread

_NEXT = b"GET /next HTTP/1.1\r\nHost: g\r\n\r\n"
_POST = b"POST /accounting/contacts HTTP/1.1\r\nHost: g\r\n"

SMUGGLING = {
    "CL.TE": _POST + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
    "TE.CL": _POST + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n",
    "chunked not last": _POST + b"Transfer-Encoding: chunked, identity\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "chunked not last, alone": _POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "xchunked": _POST + b"Transfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "xchunked with CL": _POST + b"Transfer-Encoding: xchunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "duplicate TE": _POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "TE then identity": _POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
    "TE split in two fields": _POST + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "coding before chunked": _POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "empty coding before chunked": _POST + b"Transfer-Encoding: ,chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "TE with vertical tab": _POST + b"Transfer-Encoding:\x0bchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "TE folded": _POST + b"Transfer-Encoding:\r\n chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "TE space before colon": _POST + b"Transfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "CL plus sign": _POST + b"Content-Length: +5\r\n\r\nhello",
    "CL minus sign": _POST + b"Content-Length: -5\r\n\r\nhello",
    "CL padded": _POST + b"Content-Length:   5  \r\n\r\nhello",
    "CL inner space": _POST + b"Content-Length: 5 0\r\n\r\nhello",
    "CL list": _POST + b"Content-Length: 5, 5\r\n\r\nhello",
    "CL twice, equal": _POST + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "CL twice, conflicting": _POST + b"Content-Length: 5\r\nContent-Length: 0\r\n\r\nhello",
    "CL hex": _POST + b"Content-Length: 0x5\r\n\r\nhello",
    "chunk size overflow": _POST + b"Transfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n",
    "chunk size wraps to 0": _POST + b"Transfer-Encoding: chunked\r\n\r\n10000000000000000\r\n\r\n",
    "chunk size sign": _POST + b"Transfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
    "chunk size 0x": _POST + b"Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
    "chunk data longer than its size": _POST + b"Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
    "chunk line bare LF": _POST + b"Transfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n",
    "trailer carries CL": _POST + b"Transfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 40\r\n\r\n",
    "head bare LF": b"POST / HTTP/1.1\nHost: g\nContent-Length: 5\n\nhello",
    "no version, then a body": b"POST /accounting/contacts\r\nHost: g\r\nContent-Length: 5\r\n\r\nhello",
    "no version, kept alive": b"POST /accounting/contacts\r\nHost: g\r\nConnection: keep-alive\r\n"
                              b"Content-Length: 5\r\n\r\nhello",
    "HTTP/1.0 with TE": b"POST / HTTP/1.0\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("attempt", SMUGGLING.values(), ids=SMUGGLING.keys())
def test_smuggling_attempt_is_refused_or_framed_as_h11_does(attempt):
    stream = attempt + _NEXT
    check(stream, [stream])
    check(stream, [stream[i:i + 1] for i in range(len(stream))])  # every byte its own read
