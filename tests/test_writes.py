"""How the shell writes: straight from the producing task when it can, the rest through
the connection's writer, and clients' output held to a ``flush_window`` when set."""

from __future__ import annotations

import statistics
from contextlib import AsyncExitStack
from typing import cast

import attrs
import pytest
import trio
import trio.testing

import meshgate
from meshgate.protocol import Message, Ping, Pong, Publish, Subscribe

from .helpers import raw


async def test_a_full_socket_loses_and_reorders_nothing() -> None:
    """Subscribers that stop reading make the node's direct writes come up short; each
    one's writer task (started then) must send the remainder before anything newer,
    while the publisher keeps producing more for it."""
    count, size, subscribers = 400, 16 * 1024, 8  # ~6.5 MB each: more than sockets hold
    cfg = meshgate.GatewayConfig(listen="127.0.0.1:0", max_pending_bytes=64 * 1024 * 1024)
    with trio.fail_after(60):
        async with meshgate.open_gateway(cfg) as gw:
            assert gw.client_url is not None
            async with AsyncExitStack() as stack:
                subs = [
                    await stack.enter_async_context(raw(gw.client_url)) for _ in range(subscribers)
                ]
                for sub in subs:
                    await sub.hello()
                    await sub.send(Subscribe(1, "bulk"), Ping())
                    assert isinstance(await sub.next(), Pong)
                pub = await stack.enter_async_context(meshgate.connect(gw.client_url))
                for i in range(count):
                    await pub.publish("bulk", i.to_bytes(4, "big") + b"x" * (size - 4))
                    if i % 8 == 0:
                        await pub.flush()  # small batches: output keeps coming after a short write
                await pub.flush()
                for sub in subs:
                    seen = []
                    while len(seen) < count:
                        frame = await sub.next()
                        assert isinstance(frame, Message), frame
                        assert len(frame.payload) == size
                        seen.append(int.from_bytes(frame.payload[:4], "big"))
                    assert seen == list(range(count))


async def test_flush_window_holds_client_output_until_the_window_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    window = 0.05
    cfg = meshgate.GatewayConfig(listen="memory://", flush_window=window)
    async with meshgate.open_gateway(cfg) as gw:
        assert gw.client_url is not None
        async with meshgate.connect(gw.client_url) as sub, meshgate.connect(gw.client_url) as pub:
            s = await sub.add_subscription("tick")
            await sub.flush()
            await trio.sleep(0.012)  # somewhere inside a window
            sent_at = trio.current_time()
            for i in range(3):
                await pub.publish("tick", bytes([i]))
            got = [await s.receive() for _ in range(3)]
            received_at = trio.current_time()
            assert [m.payload for m in got] == [b"\0", b"\1", b"\2"]
            boundary = (sent_at // window + 1) * window
            # held until the next multiple of the window, not sent at once, not later
            assert abs(received_at - boundary) < 1e-9, (sent_at, received_at)


async def test_without_a_flush_window_output_is_not_held(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cfg = meshgate.GatewayConfig(listen="memory://")
    async with meshgate.open_gateway(cfg) as gw:
        assert gw.client_url is not None
        async with meshgate.connect(gw.client_url) as sub, meshgate.connect(gw.client_url) as pub:
            s = await sub.add_subscription("tick")
            await sub.flush()
            await trio.sleep(0.012)
            sent_at = trio.current_time()
            await pub.publish("tick", b"now")
            assert (await s.receive()).payload == b"now"
            assert trio.current_time() == sent_at


async def test_flush_window_is_reloadable_and_bounded() -> None:
    cfg = meshgate.GatewayConfig(listen="memory://")
    with trio.fail_after(10):
        async with meshgate.open_gateway(cfg) as gw:
            assert gw.reconfigure(attrs.evolve(cfg, flush_window=0.01)) == []
            assert gw.config.flush_window == 0.01
    with pytest.raises(meshgate.ConfigError, match="flush_window"):
        meshgate.GatewayConfig(flush_window=2.0)


async def test_raw_publish_frames_reach_a_windowed_subscriber_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Output of several batches inside one window goes out together and in order."""
    cfg = meshgate.GatewayConfig(listen="memory://", flush_window=0.1)
    async with meshgate.open_gateway(cfg) as gw:
        assert gw.client_url is not None
        async with raw(gw.client_url) as sub, raw(gw.client_url) as pub:
            await sub.hello()
            await sub.send(Subscribe(1, "s"), Ping())
            assert isinstance(await sub.next(), Pong)
            await pub.hello()
            for i in range(5):
                await pub.send(Publish("s", None, bytes([i])))
                await trio.sleep(0.01)
            got = [await sub.next() for _ in range(5)]
            assert [f.payload for f in got if isinstance(f, Message)] == [
                bytes([i]) for i in range(5)
            ]


class _Polls:
    """A trio instrument counting the run loop's polls for I/O (one per scheduling round)."""

    def __init__(self) -> None:
        self.count = 0

    def before_io_wait(self, timeout: float) -> None:
        self.count += 1


async def test_output_goes_out_in_the_round_its_input_came_in() -> None:
    """A message read from a TCP client is written to its subscriber when the scheduling
    round that read it ends, not in a round of its own (a flusher task's): the node reads
    the send in the round the send's own checkpoint ends, so the message is back after
    one more poll (a flusher task took two: one round more per message, which is what
    request/reply latency lost to it)."""
    cfg = meshgate.GatewayConfig(listen="127.0.0.1:0")
    with trio.fail_after(10):
        async with meshgate.open_gateway(cfg) as gw:
            assert gw.client_url is not None
            async with raw(gw.client_url) as c:
                await c.hello()
                await c.send(Subscribe(1, "echo"), Ping())
                assert isinstance(await c.next(), Pong)
                polls = _Polls()
                instrument = cast("trio.abc.Instrument", polls)
                rounds = []
                trio.lowlevel.add_instrument(instrument)
                try:
                    for _ in range(21):
                        await c.send(Publish("echo", None, b"hi", None))
                        sent = polls.count
                        frame = await c.next()
                        assert isinstance(frame, Message), frame
                        rounds.append(polls.count - sent)
                finally:
                    trio.lowlevel.remove_instrument(instrument)
                assert statistics.median(rounds) <= 1, rounds
