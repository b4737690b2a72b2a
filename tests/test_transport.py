"""gateway/transport.py against real servers on loopback.

Its pools: at most `pool_size` connections at once, the rest waiting their
turn, and a waiter that gives up (cancelled, or past its total timeout) frees
nothing it did not take. Then a hostile provider playing raw bytes (RFC 9110
and 9112): interim answers, stray and late answers, cut heads and bodies,
endless heads, a protocol switch; no connection is reused after an answer it
could not read whole or bytes nobody asked for."""

import asyncio
import gzip
import socket
import struct

import pytest

from gateway.transport import Client, TimedOut, Timeouts, TooLarge, Unreachable

TIMEOUTS = Timeouts(connect=2, read=5, total=5)


class Loopback:
    """A server on 127.0.0.1 for the test's `handle`; `async with` gives its URL."""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> str:
        self.tasks: set[asyncio.Task] = set()
        self.server = await asyncio.start_server(self._track, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/x"

    async def _track(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.tasks.add(asyncio.current_task())
        await self.handle(reader, writer)

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=2)  # they end when the client has closed


class SlowServer(Loopback):
    """Answers every request after `delay` seconds; counts the connections open at once."""

    def __init__(self, delay: float):
        self.delay = delay
        self.open = self.peak = self.answered = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.peak = max(self.peak, self.open)
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                await asyncio.sleep(self.delay)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                await writer.drain()
                self.answered += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()


def send(client: Client, url: str, pool_size: int, timeouts: Timeouts = TIMEOUTS):
    return client.send("GET", url, [], {}, None, cap=1000, pool_size=pool_size, timeouts=timeouts)


def test_no_more_connections_than_the_pool_allows_and_every_call_is_answered():
    async def scenario():
        server, client = SlowServer(0.05), Client()
        async with server as url:
            answers = await asyncio.gather(*(send(client, url, pool_size=2) for _ in range(7)))
        await client.aclose()
        assert [a.status for a in answers] == [200] * 7
        assert server.peak == 2

    asyncio.run(scenario())


def test_a_waiter_that_gives_up_leaves_the_slot_to_the_others():
    async def scenario():
        server, client = SlowServer(0.2), Client()
        async with server as url:
            first = asyncio.ensure_future(send(client, url, pool_size=1))
            await asyncio.sleep(0.05)  # the first holds the one slot
            waiting = asyncio.ensure_future(send(client, url, pool_size=1))
            await asyncio.sleep(0.05)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            with pytest.raises(TimedOut):  # waiting for a connection counts against the total
                await send(client, url, pool_size=1, timeouts=Timeouts(connect=2, read=5, total=0.05))
            assert (await first).status == 200
            # Both gave up without taking the slot, and the first gave it back.
            assert (await send(client, url, pool_size=1)).status == 200
        await client.aclose()
        assert server.answered == 2

    asyncio.run(scenario())


# -- a hostile provider: answers played as raw bytes ------------------------------------

class Scripted(Loopback):
    """A provider that answers each request it reads with the next script: a
    list of bytes to write, seconds to wait, and CLOSE. Counts connections,
    so a test can tell whether the client kept one."""

    CLOSE = object()
    RESET = object()  # a close with a TCP RST

    def __init__(self, *scripts: list):
        self.scripts = list(scripts)
        self.accepted = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                for step in self.scripts.pop(0):
                    if step is self.CLOSE:
                        return
                    if step is self.RESET:
                        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                                   struct.pack("ii", 1, 0))
                        writer.transport.abort()
                        return
                    if isinstance(step, (int, float)):
                        await asyncio.sleep(step)
                    else:
                        writer.write(step)
                        await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def ok(body: bytes = b'{"id":"mine"}', status: str = "200 OK") -> bytes:
    return f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body


def play(*scripts: list, calls: int = 1, pause: float = 0.0, timeouts: Timeouts = TIMEOUTS):
    """Make `calls` calls in turn (`pause` seconds apart) through one client; the
    answers (or exceptions), how many connections the provider accepted, and
    whether the event loop's exception handler was called."""

    async def scenario():
        server, client = Scripted(*scripts), Client()
        loop = asyncio.get_running_loop()
        unhandled = []
        loop.set_exception_handler(lambda _, context: unhandled.append(context))
        results = []
        async with server as url:
            for n in range(calls):
                if n:
                    await asyncio.sleep(pause)
                try:
                    results.append(await send(client, url, pool_size=4, timeouts=timeouts))
                except Exception as exc:  # noqa: BLE001 - the test looks at which
                    results.append(exc)
            await client.aclose()
        return results, server.accepted, unhandled

    return asyncio.run(scenario())


def test_interim_answers_are_skipped_and_the_connection_kept():
    """RFC 9110 15.2: 1xx answers come before the final one, which is the answer."""
    results, accepted, _ = play(
        [b"HTTP/1.1 100 Continue\r\n\r\n", 0.02, ok()],
        [b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n" + ok(b"{}", "201 Created")],
        calls=2)
    assert [(r.status, r.body) for r in results] == [(200, b'{"id":"mine"}'), (201, b"{}")]
    assert accepted == 1


@pytest.mark.parametrize("stray", [
    [ok(), ok(b'{"id":"stray"}')],  # a second answer in the same write
    [ok(), 0.05, ok(b'{"id":"stray"}')],  # a late one, while the connection is idle
    [ok() + b'xyz'],  # more body than its Content-Length
    [ok(), 0.05, b"HTTP/1.1 200 OK\r\ncontent-length: 14\r\n\r\n", 0.3, b'{"id":"stray"}'],  # a late head, then its body
])
def test_a_connection_that_received_what_nobody_asked_for_is_never_reused(stray):
    results, accepted, _ = play(stray, [ok(b'{"id":"next"}')], calls=2, pause=0.15)
    assert [r.body for r in results] == [b'{"id":"mine"}', b'{"id":"next"}']
    assert accepted == 2


@pytest.mark.parametrize("script", [
    [b"HTTP/1.1 200 OK\r\nContent-Le", Scripted.CLOSE],  # a cut head
    [b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"id\":", Scripted.CLOSE],  # a cut body
    [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"id\"", Scripted.CLOSE],  # a cut chunk
    [b"HTTP/1.1 100 Continue\r\n\r\n", Scripted.CLOSE],  # an interim answer and no final one
    [b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n\x00\x00\x12", 0.1],
    [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}"],  # framing the client cannot trust
    [b"NOT HTTP\r\n\r\n"],
])
def test_an_answer_the_client_could_not_read_whole_may_have_happened(script):
    (result,), _, unhandled = play(script)
    assert isinstance(result, Unreachable) and result.sent, result
    assert not unhandled, unhandled  # no traceback from the event loop


def test_an_endless_head_is_cut_at_the_cap_without_holding_it():
    import tracemalloc

    endless = [b"HTTP/1.1 200 OK\r\nx-padding: "] + [b"p" * 65536] * 128  # 8 MiB of one header
    tracemalloc.start()
    try:
        (result,), _, _ = play(endless)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(result, TooLarge) and result.part == "head"
    assert peak < 2 * 1024 * 1024, peak


def test_an_endless_run_of_interim_answers_is_cut_at_the_head_cap():
    (result,), _, _ = play([b"HTTP/1.1 100 Continue\r\n\r\n" * 4000])
    assert isinstance(result, TooLarge) and result.part == "head"


@pytest.mark.parametrize("script", [
    [b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"id\":", 0.02, b"\"mine\"}", Scripted.CLOSE],  # to EOF
    [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\n{\"id\":\r\n7\r\n\"mine\"}\r\n0\r\nx-sum: 1\r\n\r\n"],
    [b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n%s"
     % (len(gzip.compress(b'{"id":"mine"}')), gzip.compress(b'{"id":"mine"}'))],
    [bytes([b]) for b in b"HTTP/1.1 100 Continue\r\n\r\n" + ok()],  # a byte at a time
])
def test_well_framed_answers_are_read_whole(script):
    (result,), _, _ = play(script)
    assert (result.status, result.body) == (200, b'{"id":"mine"}')


RESET = Scripted.RESET


def test_a_body_ended_by_a_reset_is_not_whole():
    """A body delimited by the connection's end ends with a close, not a reset."""
    (result,), _, _ = play([b'HTTP/1.1 200 OK\r\n\r\n{"id": 1, "na', 0.05, RESET])
    assert isinstance(result, Unreachable) and result.sent, result


def test_an_interim_answer_is_not_held_to_the_body_cap():
    (result,), _, _ = play([b"HTTP/1.1 103 Early Hints\r\ncontent-length: 99999999\r\n\r\n" + ok()])
    assert (result.status, result.body) == (200, b'{"id":"mine"}')
