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
    with pytest.raises(meshgate.MeshgateError, match="no transport registered for quic://"):
        get_transport("quic://x:1")

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
