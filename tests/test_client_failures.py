"""The client when its connection fails: nothing waits forever."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import meshgate
from meshgate.client import connect_with_stream
from meshgate.protocol import PROTOCOL_VERSION, Decoder, Encoder, Hello, Ping, Pong


async def fake_node(stream: trio.abc.Stream, handshaken: trio.Event) -> None:
    """Answers the handshake (HELLO, then a PONG for the client's flush), then stops
    reading: the client's output backs up."""
    enc, dec = Encoder(), Decoder(max_frame_bytes=1 << 24)
    await stream.send_all(
        enc.encode(Hello(version=PROTOCOL_VERSION, role="node", name="n", max_payload=1 << 21))
    )
    while not handshaken.is_set():
        dec.feed(await stream.receive_some(65536))
        for frame in dec:
            if isinstance(frame, Ping):
                await stream.send_all(enc.encode(Pong()))
                handshaken.set()


async def test_a_publish_blocked_by_back_pressure_raises_when_the_connection_dies() -> None:
    ours, theirs = trio.testing.lockstep_stream_pair()
    handshaken = trio.Event()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fake_node, theirs, handshaken)
            async with connect_with_stream(ours, name="c") as client:
                outcome: list[BaseException] = []

                async def publish_a_lot() -> None:
                    try:
                        for _ in range(8):
                            await client.publish("big", b"x" * (1 << 20))
                    except meshgate.ConnectionClosedError as exc:
                        outcome.append(exc)

                async with trio.open_nursery() as inner:
                    inner.start_soon(publish_a_lot)
                    await trio.testing.wait_all_tasks_blocked()
                    assert outcome == []  # blocked: the node reads nothing
                    await theirs.aclose()  # the connection dies
                assert len(outcome) == 1
                assert client.is_closed
                with pytest.raises(meshgate.ConnectionClosedError):
                    await client.publish("after", b"")


async def test_a_peer_still_sending_when_closed_reads_the_error_and_a_clean_end() -> None:
    """The node shuts down its write side and drains what the peer still sends, instead
    of closing with unread input (a TCP reset): the peer's writes succeed, it reads the
    error frame, then an orderly end of stream."""
    from meshgate.protocol import Error, Publish

    from .helpers import Raw, config

    with trio.fail_after(20):
        async with meshgate.open_gateway(config("127.0.0.1:0")) as gw:
            assert gw.client_url
            host, port = gw.client_url.removeprefix("tcp://").rsplit(":", 1)
            stream = await trio.open_tcp_stream(host, int(port))
            r = Raw(stream)
            await r.hello()
            flood = Encoder().encode(Publish("flood", None, b"x" * 1000)) * 4000  # ~4 MB

            async def send() -> None:
                await stream.send_all(b"\xc1" + flood)  # \xc1: never valid msgpack

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                frames = []
                while (f := await r.next()) is not None:  # BrokenResourceError on a reset
                    frames.append(f)
            assert isinstance(frames[-1], Error), frames
            await stream.aclose()
