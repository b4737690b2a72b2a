"""gateway/transport.py's pools against a real server on loopback: at most
`pool_size` connections at once, the rest waiting their turn, and a waiter
that gives up (cancelled, or past its total timeout) frees nothing it did not take."""

import asyncio

import pytest

from gateway.transport import Client, TimedOut, Timeouts

TIMEOUTS = Timeouts(connect=2, read=5, total=5)


class SlowServer:
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

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/x"

    async def __aexit__(self, *exc) -> None:
        self.server.close()


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
