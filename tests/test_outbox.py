"""gateway/outbox.py: writes held to the end of the loop's turn keep their
order, per transport and against the writes sent at once."""

import asyncio

from gateway.outbox import Outbox


class Recorder:
    """A transport that records what reaches it, in order, across all of them."""

    def __init__(self, name: str, wire: list):
        self.name, self.wire, self.closed = name, wire, False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.wire.append((self.name, data))

    def is_closing(self) -> bool:
        return self.closed


async def _turn() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


def run(scenario) -> None:
    """scenario(outbox, loop, wire) on a loop of its own; `wire` records every write."""
    async def main():
        await scenario(Outbox(), asyncio.get_running_loop(), [])

    asyncio.run(main())


def test_writes_are_held_until_the_turn_ends_then_sent_in_order():
    async def scenario(outbox: Outbox, loop: asyncio.AbstractEventLoop, wire: list):
        a, b = Recorder("a", wire), Recorder("b", wire)
        outbox.write(a, b"1", hold_in=loop)
        outbox.write(b, b"2", hold_in=loop)
        outbox.write(a, b"3", hold_in=loop)
        assert wire == []  # nothing before the turn ends
        await _turn()
        assert wire == [("a", b"1"), ("b", b"2"), ("a", b"3")]
        outbox.write(b, b"4", hold_in=loop)  # a new turn holds, and sends, again
        await _turn()
        assert wire[-1] == ("b", b"4")

    run(scenario)


def test_a_write_sent_at_once_goes_after_those_held():
    async def scenario(outbox: Outbox, loop: asyncio.AbstractEventLoop, wire: list):
        a = Recorder("a", wire)
        outbox.write(a, b"answer", hold_in=loop)
        outbox.write(a, b"refusal", hold_in=None)
        assert wire == [("a", b"answer"), ("a", b"refusal")]
        await _turn()
        assert len(wire) == 2  # the turn's end sends nothing twice

    run(scenario)


def test_a_transport_closed_meanwhile_gets_nothing_and_the_others_still_do():
    async def scenario(outbox: Outbox, loop: asyncio.AbstractEventLoop, wire: list):
        gone, stays = Recorder("gone", wire), Recorder("stays", wire)
        outbox.write(gone, b"lost", hold_in=loop)
        outbox.write(stays, b"kept", hold_in=loop)
        gone.closed = True
        await _turn()
        assert wire == [("stays", b"kept")]

    run(scenario)
