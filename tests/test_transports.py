"""Every transport yields conforming trio streams."""

from __future__ import annotations

import ssl

import pytest
import trio
import trustme
from trio.testing import check_two_way_stream

import meshgate
from meshgate.transports import (
    MemoryTransport,
    TCPTransport,
    TLSTransport,
    Transport,
    get_transport,
    register_transport,
    split_url,
)

CA = trustme.CA()
SERVER_CTX = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
CA.issue_cert("127.0.0.1").configure_cert(SERVER_CTX)
CLIENT_CTX = ssl.create_default_context()
CA.configure_trust(CLIENT_CTX)


def maker(transport: Transport, url: str, tls: bool = False):  # type: ignore[no-untyped-def]
    async def make() -> tuple[trio.abc.Stream, trio.abc.Stream]:
        listener, bound = await transport.listen(url, ssl_context=SERVER_CTX if tls else None)
        async with listener, trio.open_nursery() as nursery:
            accepted: list[trio.abc.Stream] = []

            async def accept() -> None:
                accepted.append(await listener.accept())

            nursery.start_soon(accept)
            client = await transport.connect(bound, ssl_context=CLIENT_CTX if tls else None)
        return client, accepted[0]

    return make


@pytest.mark.parametrize(
    ("transport", "url", "tls"),
    [
        (TCPTransport(), "tcp://127.0.0.1:0", False),
        (TLSTransport(), "tls://127.0.0.1:0", True),
        (MemoryTransport(), "memory://", False),
    ],
    ids=["tcp", "tls", "memory"],
)
async def test_two_way_stream_conformance(transport: Transport, url: str, tls: bool) -> None:
    with trio.fail_after(30):
        await check_two_way_stream(maker(transport, url, tls), None)


def test_url_parsing_and_registry() -> None:
    assert split_url("127.0.0.1:4222") == ("tcp", "127.0.0.1", 4222)
    assert split_url("tls://example.org:7") == ("tls", "example.org", 7)
    assert split_url("memory://node-a") == ("memory", "node-a", 0)
    with pytest.raises(meshgate.MeshgateError, match="needs a host and a port"):
        split_url("tcp://nohost")
    with pytest.raises(meshgate.MeshgateError, match="no transport registered for sctp://"):
        get_transport("sctp://x:1")

    class Custom(MemoryTransport):
        pass

    custom = Custom()
    register_transport("custom", custom)
    assert get_transport("custom://anything") is custom


async def test_user_transport_serves_a_gateway() -> None:
    """A registered transport is used for both listening and connecting."""

    class Counting(MemoryTransport):
        def __init__(self) -> None:
            super().__init__()
            self.connects = 0

        async def connect(
            self, url: str, *, ssl_context: ssl.SSLContext | None = None
        ) -> trio.abc.Stream:
            self.connects += 1
            return await super().connect(url, ssl_context=ssl_context)

    t = Counting()
    register_transport("counting", t)
    with trio.fail_after(10):
        async with meshgate.open_gateway(meshgate.GatewayConfig(listen="counting://n1")) as gw:
            assert gw.client_url == "memory://n1"
            async with meshgate.connect("counting://n1") as c:
                await c.flush()
    assert t.connects == 1


async def test_memory_connect_to_nothing_fails_cleanly() -> None:
    with pytest.raises(OSError, match="nothing listens at memory://ghost"):
        await MemoryTransport().connect("memory://ghost")


async def test_websocket_stream_round_trip() -> None:
    pytest.importorskip("trio_websocket", reason="the websocket extra is not installed")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            from meshgate.transports import WebSocketTransport, connect_stream

            got = trio.Event()
            received: list[bytes] = []

            async def handler(stream: trio.abc.Stream) -> None:
                data = b""
                while len(data) < 100_000:
                    data += await stream.receive_some(4096)
                received.append(data)
                await stream.send_all(data[::-1])
                got.set()
                await stream.aclose()

            url = await nursery.start(WebSocketTransport().serve, "ws://127.0.0.1:0", handler)
            assert url.startswith("ws://127.0.0.1:")
            payload = bytes(range(256)) * 400
            async with connect_stream(url) as s:
                await s.send_all(payload[:50_000])
                await s.send_all(payload[50_000:100_000])
                back = b""
                while len(back) < 100_000:
                    chunk = await s.receive_some()
                    assert chunk
                    back += chunk
                assert back == payload[:100_000][::-1]
                assert await s.receive_some() == b""  # the server closed
            await got.wait()
            assert received == [payload[:100_000]]
            nursery.cancel_scope.cancel()


async def test_gateway_over_websocket() -> None:
    pytest.importorskip("trio_websocket", reason="the websocket extra is not installed")
    with trio.fail_after(10):
        async with meshgate.open_gateway(meshgate.GatewayConfig(listen="ws://127.0.0.1:0")) as gw:
            assert gw.client_url
            assert gw.client_url.startswith("ws://")
            async with (
                meshgate.connect(gw.client_url) as a,
                meshgate.connect(gw.client_url) as b,
                b.subscribe("ws.>") as sub,
            ):
                await b.flush()
                await a.publish("ws.hello", b"over websocket")
                assert (await sub.receive()).payload == b"over websocket"
                # garbage over the websocket gets a protocol error and closes only that client
                from meshgate.transports import connect_stream

                async with connect_stream(gw.client_url) as raw_ws:
                    await raw_ws.send_all(b"GET / HTTP/1.1\r\n\r\n")
                    data = b""
                    while chunk := await raw_ws.receive_some():
                        data += chunk
                    assert b"malformed" in data or b"frame" in data
                await a.publish("ws.after", b"still fine")
                assert (await sub.receive()).payload == b"still fine"
