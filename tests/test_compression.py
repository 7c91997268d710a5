"""lz4 on route and gateway links (issue 24, part 6): negotiated in the HELLO exchange,
``off`` / ``on`` / ``auto``, both sides must agree; a decompression bomb is refused."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import msgpack
import pytest
import trio

import meshgate
from meshgate.monitor import render_metrics
from meshgate.protocol import PROTOCOL_VERSION, Encoder, Hello
from meshgate.transports import connect_stream

from .helpers import drain, tcp_node
from .supercluster import settle, supercluster

lz4_frame = pytest.importorskip("lz4.frame", reason="the compression extra (lz4) is not installed")

PAYLOAD = b'{"entity": 1234, "x": 10.5, "y": -3.25, "hp": 100, "state": "walking"}' * 4


async def _traffic(sc: dict[str, list[meshgate.Gateway]], stack: AsyncExitStack) -> None:
    """Every node publishes; every node receives every message exactly once."""
    gws = [g for gs in sc.values() for g in gs]
    clients = [await stack.enter_async_context(meshgate.connect(g.client_url)) for g in gws]  # type: ignore[arg-type]
    subs = [await stack.enter_async_context(c.subscribe("cell.>")) for c in clients]
    await settle(gws, clients)
    sent = []
    for i, c in enumerate(clients * 20):
        await c.publish(f"cell.{i % 7}", PAYLOAD)
        sent.append(f"cell.{i % 7}")
    await settle(gws, clients)
    for s in subs:
        got = drain(s)
        assert Counter(m.subject for m in got) == Counter(sent)
        assert all(m.payload == PAYLOAD for m in got)


def _modes(modes: dict[str, str], auto_rtt: float = 60.0) -> Any:
    """Each node's compression mode; ``auto`` links count as near unless their connect
    took ``auto_rtt`` seconds or more (60: always near; 0: always far)."""

    def extra(cluster: str, i: int) -> dict[str, Any]:
        mode = modes.get(f"{cluster}{i}", "off")
        return {
            "cluster_compression": mode,
            "gateway_compression": mode,
            "compression_auto_rtt": auto_rtt,
        }

    return extra


async def test_compressed_links_carry_everything_in_fewer_bytes() -> None:
    everyone_on = dict.fromkeys(("A0", "A1", "B0", "B1"), "on")
    with trio.fail_after(60):
        async with (
            supercluster({"A": 2, "B": 2}, scheme="tcp", extra=_modes(everyone_on)) as sc,
            AsyncExitStack() as stack,
        ):
            await _traffic(sc, stack)
            for g in (g for gs in sc.values() for g in gs):
                c = g.compression()
                # every node: its route and its outbound gateway at least (inbound
                # gateways land on either node of the remote cluster)
                assert c["links"] >= 2, (g.config.name, c)
                assert c["refused"] == 0
                assert 0 < c["wire_out"] < c["raw_out"] / 2, c
                assert 0 < c["wire_in"] < c["raw_in"] / 2, c


@pytest.mark.parametrize(
    ("modes", "auto_rtt", "compressed"),
    [
        ({"A0": "on", "B0": "off"}, 0.0, False),  # the peer said off: uncompressed
        ({"A0": "off", "B0": "on"}, 0.0, False),
        ({"A0": "auto", "B0": "auto"}, 60.0, False),  # a near link: auto leaves it off
        ({"A0": "auto", "B0": "auto"}, 0.0, True),  # a far one: compressed
        ({"A0": "auto", "B0": "on"}, 60.0, True),  # auto follows a peer that wants it
        ({"A0": "on", "B0": "auto"}, 60.0, True),
    ],
)
async def test_both_sides_must_agree(
    modes: dict[str, str], auto_rtt: float, compressed: bool
) -> None:
    with trio.fail_after(60):
        async with (
            supercluster({"A": 1, "B": 1}, scheme="tcp", extra=_modes(modes, auto_rtt)) as sc,
            AsyncExitStack() as stack,
        ):
            await _traffic(sc, stack)
            for g in (sc["A"][0], sc["B"][0]):
                c = g.compression()
                assert (c["links"] == 2) is compressed, (g.config.name, c)
                assert (c["wire_out"] > 0) is compressed


@asynccontextmanager
async def _route_peer(
    url: str, features: tuple[str, ...]
) -> AsyncIterator[tuple[trio.abc.Stream, list[str]]]:
    """Dial a node's route port as a route peer offering ``features``; the stream and
    the node's HELLO features."""
    async with connect_stream(url) as stream:
        yield stream, await _handshake(stream, features)


async def _handshake(stream: trio.abc.Stream, features: tuple[str, ...]) -> list[str]:
    hello = Hello(
        version=PROTOCOL_VERSION,
        role="route",
        name="peer",
        cluster="C",
        token="route-secret-0123456789",
        features=features,
    )
    await stream.send_all(Encoder().encode(hello))
    unpacker = msgpack.Unpacker(raw=False)
    while True:
        unpacker.feed(await stream.receive_some(65536))
        try:
            frame = unpacker.unpack()
        except msgpack.OutOfData:
            continue
        assert frame[0] == 0
        return list(frame[1].get("features", []))


async def test_decompression_bomb_is_refused_and_counted() -> None:
    cfg = tcp_node(
        "n0",
        cluster_compression="on",
        cluster_secret="route-secret-0123456789",
        max_payload=16 * 1024,
    )
    with trio.fail_after(30):
        async with meshgate.open_gateway(cfg) as gw:
            assert gw.cluster_url is not None
            async with _route_peer(gw.cluster_url, ("lz4",)) as (stream, features):
                assert "lz4" in features
                # 4 MiB of zeros in a few KiB: far above 16 frames of the largest size
                bomb = lz4_frame.LZ4FrameCompressor(block_linked=True, auto_flush=True)
                data = bomb.begin() + bomb.compress(bytes(4 * 1024 * 1024))
                assert len(data) < 64 * 1024
                await stream.send_all(data)
                # the node closes the link
                while True:
                    try:
                        if not await stream.receive_some(65536):
                            break
                    except trio.BrokenResourceError:
                        break
            assert gw.compression()["refused"] == 1
            # and an operator sees it in /varz and /metrics
            assert gw.varz().compression["refused"] == 1
            assert "meshgate_compression_refused_total{" in render_metrics(gw)
            line = next(
                x
                for x in render_metrics(gw).splitlines()
                if x.startswith("meshgate_compression_refused_total{")
            )
            assert float(line.rpartition(" ")[2]) == 1


async def test_peer_without_lz4_gets_an_uncompressed_link() -> None:
    cfg = tcp_node("n0", cluster_compression="on", cluster_secret="route-secret-0123456789")
    with trio.fail_after(30):
        async with meshgate.open_gateway(cfg) as gw:
            assert gw.cluster_url is not None
            async with _route_peer(gw.cluster_url, ()) as (stream, features):
                assert "lz4" not in features
                # what follows the HELLO is plain msgpack (the node's interest, gossip)
                await stream.send_all(Encoder().encode(meshgate.protocol.Ping()))
                data = await stream.receive_some(65536)
                unpacker = msgpack.Unpacker(raw=False)
                unpacker.feed(data)
                assert all(isinstance(f, list) for f in unpacker)
            assert gw.compression()["links"] == 0


def test_compression_fields_are_checked() -> None:
    cfg = meshgate.GatewayConfig.from_mapping(
        {"cluster_compression": "on", "gateway_compression": "auto", "compression_auto_rtt": 0.05}
    )
    assert (cfg.cluster_compression, cfg.gateway_compression) == ("on", "auto")
    assert cfg.compression_auto_rtt == 0.05
    assert meshgate.GatewayConfig().gateway_compression == "off"
    with pytest.raises(meshgate.ConfigError, match="gateway_compression: must be 'off', 'on'"):
        meshgate.GatewayConfig.from_mapping({"gateway_compression": "fast"})
    with pytest.raises(meshgate.ConfigError, match="compression_auto_rtt"):
        meshgate.GatewayConfig(compression_auto_rtt=-1)
