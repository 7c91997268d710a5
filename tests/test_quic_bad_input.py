"""Bad input on a node's QUIC port (issue 20): garbage, truncated and oversized packets,
spoofed handshake floods, a client that opens too many streams, datagrams before
authentication.  Each is refused or dropped and counted; a bystander carries on."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import meshgate
from meshgate import GatewayConfig, open_gateway
from meshgate.client import connect_with_stream
from meshgate.transports import QuicLimits, QuicStream, connect_stream, split_url

pytest.importorskip("aioquic", reason="quic:// needs aioquic (pip install 'meshgate[quic]')")
trustme = pytest.importorskip("trustme", reason="the tests' certificates need trustme")

_CA = trustme.CA()
_CERT = _CA.issue_cert("127.0.0.1", "localhost")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, ssl.SSLContext]:
    d: Path = tmp_path_factory.mktemp("quic-bad-certs")
    cert_file, key_file = d / "cert.pem", d / "key.pem"
    _CERT.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    _CERT.private_key_pem.write_to_path(str(key_file))
    client = ssl.create_default_context()
    _CA.configure_trust(client)
    return str(cert_file), str(key_file), client


def config(certs: tuple[str, str, ssl.SSLContext], **limits: object) -> GatewayConfig:
    return GatewayConfig(
        listen="quic://127.0.0.1:0",
        tls_cert_file=certs[0],
        tls_key_file=certs[1],
        quic_limits=QuicLimits(**limits) if limits else None,  # type: ignore[arg-type]
    )


def initial_packet(host: str, port: int) -> bytes:
    """A real client's first packet (an Initial, padded to 1200 bytes, no token)."""
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    quic = QuicConnection(
        configuration=QuicConfiguration(
            is_client=True, alpn_protocols=["meshgate/1"], server_name="localhost"
        )
    )
    quic.connect((host, port), now=0.0)
    return quic.datagrams_to_send(now=0.0)[0][0]


async def udp_send(port: int, packets: list[bytes], *, sockets: int = 1) -> None:
    """Send ``packets`` to the node's UDP port from ``sockets`` source ports in turn
    (a spoofed flood: nobody answers what comes back)."""
    socks = []
    for _ in range(sockets):
        s = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        await s.bind(("127.0.0.1", 0))
        socks.append(s)
    try:
        for i, p in enumerate(packets):
            await socks[i % sockets].sendto(p, ("127.0.0.1", port))
    finally:
        for s in socks:
            s.close()


@asynccontextmanager
async def bystander(gw: meshgate.Gateway, ctx: ssl.SSLContext) -> AsyncIterator[meshgate.Client]:
    assert gw.client_url is not None
    async with meshgate.connect(gw.client_url, ssl_context=ctx, reconnect=False) as c:
        yield c


async def round_trip(c: meshgate.Client, payload: bytes) -> None:
    """The bystander still publishes and receives (its packets queue behind the junk)."""
    sub = await c.add_subscription("echo")
    await c.flush()
    await c.publish("echo", payload)
    assert (await sub.receive()).payload == payload
    await sub.unsubscribe()


def stats(gw: meshgate.Gateway) -> dict[str, int]:
    assert gw.client_url is not None
    return gw.varz().quic[gw.client_url]


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    junk=st.lists(
        st.one_of(
            st.binary(max_size=1500),
            # a real Initial, truncated or with a byte changed
            st.tuples(st.integers(0, 1199), st.integers(0, 255), st.booleans()),
        ),
        min_size=1,
        max_size=20,
    )
)
async def test_garbage_and_mangled_packets_are_dropped_and_counted(
    certs: tuple[str, str, ssl.SSLContext], junk: list[bytes | tuple[int, int, bool]]
) -> None:
    with trio.fail_after(20):
        async with open_gateway(config(certs)) as gw, bystander(gw, certs[2]) as c:
            assert gw.client_url is not None
            _, host, port = split_url(gw.client_url)
            real = initial_packet(host, port)
            packets = []
            for j in junk:
                if isinstance(j, bytes):
                    packets.append(j)
                else:
                    at, value, truncate = j
                    packets.append(
                        real[:at] if truncate else real[:at] + bytes([value]) + real[at + 1 :]
                    )
            before = stats(gw)
            await udp_send(port, packets)
            await round_trip(c, b"still here")
            after = stats(gw)
            assert after["packets_in"] - before["packets_in"] >= len(packets)
            assert after["connections_opened"] == before["connections_opened"]
            refused = (
                "packets_malformed",
                "packets_unknown",
                "retries_sent",
                "version_negotiations",
            )
            # every packet without a connection is refused and counted (those naming the
            # bystander's connection ID fail aioquic's decryption and are dropped there)
            assert sum(after[k] - before[k] for k in refused) >= sum(
                1 for p in packets if len(p) < 1200 or p[:1] != real[:1]
            ) - len([p for p in packets if p[:1] and p[0] & 0x80 == 0])


async def test_an_oversized_packet_is_dropped(certs: tuple[str, str, ssl.SSLContext]) -> None:
    with trio.fail_after(20):
        async with open_gateway(config(certs)) as gw, bystander(gw, certs[2]) as c:
            assert gw.client_url is not None
            port = split_url(gw.client_url)[2]
            before = stats(gw)
            await udp_send(port, [b"\xc0" + b"\xff" * 65000, b"\x40" * 9000])
            await round_trip(c, b"fine")
            after = stats(gw)
            assert after["packets_malformed"] + after["packets_unknown"] >= (
                before["packets_malformed"] + before["packets_unknown"] + 2
            )


async def test_a_spoofed_handshake_flood_costs_one_retry_each_and_no_state(
    certs: tuple[str, str, ssl.SSLContext],
) -> None:
    with trio.fail_after(20):
        async with open_gateway(config(certs)) as gw, bystander(gw, certs[2]) as c:
            assert gw.client_url is not None
            _, host, port = split_url(gw.client_url)
            before = stats(gw)
            for _ in range(5):  # in batches the kernel's socket buffer holds
                await udp_send(port, [initial_packet(host, port) for _ in range(40)], sockets=10)
                await round_trip(c, b"unharmed")
            after = stats(gw)
            assert after["retries_sent"] - before["retries_sent"] == 200
            assert after["connections_opened"] == before["connections_opened"]
            assert len(gw.connz()) == 1  # the bystander only


async def test_without_retry_handshakes_in_flight_are_bounded(
    certs: tuple[str, str, ssl.SSLContext],
) -> None:
    with trio.fail_after(20):
        async with open_gateway(config(certs, retry=False, max_handshakes=5)) as gw:
            assert gw.client_url is not None
            _, host, port = split_url(gw.client_url)
            await udp_send(port, [initial_packet(host, port) for _ in range(40)], sockets=40)
            # a round trip of our own after the flood: the endpoint has read it all
            with trio.move_on_after(0.5):
                async with bystander(gw, certs[2]):
                    pass
            after = stats(gw)
            assert after["connections_opened"] == 5
            assert after["handshakes_refused"] >= 35


async def test_connections_are_bounded(certs: tuple[str, str, ssl.SSLContext]) -> None:
    with trio.fail_after(20):
        async with (
            open_gateway(config(certs, max_connections=1)) as gw,
            bystander(gw, certs[2]) as c,
        ):
            with trio.move_on_after(0.5) as waited:
                async with bystander(gw, certs[2]):
                    pytest.fail("a second connection was accepted")
            assert waited.cancelled_caught
            assert stats(gw)["connections_refused"] >= 1
            await round_trip(c, b"first one still served")


async def test_a_client_opening_many_streams_is_closed(
    certs: tuple[str, str, ssl.SSLContext],
) -> None:
    with trio.fail_after(20):
        async with open_gateway(config(certs, max_streams=4)) as gw, bystander(gw, certs[2]) as c:
            assert gw.client_url is not None
            async with connect_stream(gw.client_url, ssl_context=certs[2]) as stream:
                assert isinstance(stream, QuicStream)
                peer = stream.peer
                for _ in range(1000):
                    if peer.done:
                        break
                    sid = peer.quic.get_next_available_stream_id()
                    peer.send_stream_data(sid, b"\x91\x05")
                    peer.transmit()
                    await trio.lowlevel.checkpoint()
                while await stream.receive_some() != b"":
                    pass  # the node closed the connection
            assert stats(gw)["streams_refused"] == 1
            await round_trip(c, b"unaffected")


async def test_datagrams_before_authentication_are_ignored(
    certs: tuple[str, str, ssl.SSLContext],
) -> None:
    with trio.fail_after(20):
        async with open_gateway(config(certs)) as gw:
            assert gw.client_url is not None
            async with connect_stream(gw.client_url, ssl_context=certs[2]) as stream:
                assert isinstance(stream, QuicStream)
                for i in range(10):  # before any HELLO: a publish, then junk
                    assert stream.send_datagram(
                        b"\x95\x01\xa4evil\xc0\xc4\x01x\xc0" if i else b"\xc1"
                    )
                async with connect_with_stream(stream) as c:
                    await round_trip(c, b"authenticated fine")
            assert stats(gw)["datagrams_ignored"] == 10
            assert gw.statistics().messages_in == 1  # only the round trip's publish


async def test_a_bad_token_over_quic_is_refused_with_the_reason(
    certs: tuple[str, str, ssl.SSLContext],
) -> None:
    """The node's last frame (the AUTH_FAILED error) reaches the client before the
    connection closes: the node lets what it wrote leave first."""
    cfg = GatewayConfig(
        listen="quic://127.0.0.1:0",
        tls_cert_file=certs[0],
        tls_key_file=certs[1],
        users=(meshgate.User(token="good-token-0123456789"),),
    )
    with trio.fail_after(20):
        async with open_gateway(cfg) as gw:
            assert gw.client_url is not None
            with pytest.raises(meshgate.ConnectionClosedError) as info:
                async with meshgate.connect(
                    gw.client_url, ssl_context=certs[2], token="bad-token-0123456789"
                ):
                    pass
            assert info.value.error is not None
            assert info.value.error.code == meshgate.ErrorCode.AUTH_FAILED
            async with meshgate.connect(
                gw.client_url, ssl_context=certs[2], token="good-token-0123456789"
            ) as c:
                await round_trip(c, b"the right token works")


async def test_a_connection_without_a_protocol_stream_is_closed(
    certs: tuple[str, str, ssl.SSLContext],
) -> None:
    with trio.fail_after(20):
        async with open_gateway(config(certs, stream_timeout=0.2)) as gw:
            assert gw.client_url is not None
            async with connect_stream(gw.client_url, ssl_context=certs[2]) as stream:
                # a handshake, then nothing on any stream: closed after stream_timeout
                assert await stream.receive_some() == b""
            assert stats(gw)["stream_timeouts"] == 1


class _Peer:
    """What a :class:`QuicStream` asks of its connection, for the flood bound alone."""

    def __init__(self, limits: QuicLimits) -> None:
        self.endpoint_limits = limits
        self.stats = meshgate.transports.QuicStats()
        self.done = False
        self.closed_with: tuple[int, str] | None = None

    def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)
        self.done = True


async def test_a_peer_that_sends_faster_than_the_node_reads_is_closed_as_a_flood() -> None:
    """``max_buffered``: unread bytes on the protocol stream are bounded; a reader that
    keeps up never trips it, a peer that outruns the reader is closed and counted."""
    peer = _Peer(QuicLimits(max_buffered=10_000))
    stream = QuicStream(peer, 0)  # type: ignore[arg-type]
    for _ in range(20):  # 80 kB in all, read as it comes: never more than 4 kB unread
        stream.feed_data(b"x" * 4_000, False)
        assert len(await stream.receive_some()) == 4_000
    assert peer.closed_with is None
    stream.feed_data(b"x" * 6_000, False)
    stream.feed_data(b"x" * 4_000, False)  # 10,000 unread: at the bound, not past it
    assert peer.closed_with is None
    stream.feed_data(b"x", False)
    assert peer.closed_with == (0, "too much unread data")
    assert peer.stats.floods == 1
