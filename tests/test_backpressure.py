"""Back-pressure isolates: a hung route or gateway peer slows only the publishers whose
messages wait for it, and only briefly (it takes nothing, so nobody waits for it); it is
closed as a slow consumer at ``peer_max_pending_bytes`` or ``peer_write_deadline``."""

from __future__ import annotations

import trio
import trio.testing

import meshgate
from meshgate.protocol import PROTOCOL_VERSION, Hello, RouteSub

from .helpers import Raw

LIMIT = 256 * 1024
DEADLINE = 2.0


async def hung_route_peer(url: str) -> trio.abc.Stream:
    """A route peer that handshakes, wants ``to-peer.>``, then never reads again."""
    host, port = url.removeprefix("tcp://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    r = Raw(stream)
    await r.send(
        Hello(version=PROTOCOL_VERSION, role="route", name="a9", cluster="A"),
        RouteSub("$G", "to-peer.>", None, 1),
    )
    assert isinstance(await r.next(), Hello)
    return stream


async def test_a_hung_route_slows_only_its_publishers_and_is_closed_as_a_slow_consumer() -> None:
    cfg = meshgate.GatewayConfig(
        name="a0",
        cluster="A",
        listen="127.0.0.1:0",
        cluster_listen="127.0.0.1:0",
        max_pending_bytes=LIMIT,
        max_payload=64 * 1024,
        write_deadline=DEADLINE,
    )
    with trio.fail_after(60):
        async with meshgate.open_gateway(cfg) as gw, trio.open_nursery() as nursery:
            assert gw.client_url
            assert gw.cluster_url
            peer = await hung_route_peer(gw.cluster_url)
            await gw.wait_routes(1)
            async with (
                meshgate.connect(gw.client_url, name="flooder") as flooder,
                meshgate.connect(gw.client_url, name="bystander") as bystander,
                bystander.subscribe("local.>") as local,
                meshgate.connect(gw.client_url, name="other") as other,
            ):
                await bystander.flush()

                flooding = trio.CancelScope()

                async def flood() -> None:
                    payload = b"x" * (64 * 1024)
                    with flooding:
                        for _ in range(2000):
                            await flooder.publish("to-peer.x", payload)

                nursery.start_soon(flood)
                # the hung peer's buffers fill up, then the node's
                while not (
                    any(r.pending_size > LIMIT for r in gw.routez())
                    or gw.statistics().stalled_links
                ):
                    await trio.testing.wait_all_tasks_blocked(cushion=0.01)
                # everyone else carries on at once: reading, routing, round trips
                with trio.fail_after(DEADLINE / 2):
                    for i in range(20):
                        await other.publish(f"local.{i}", b"still here")
                    await other.flush()
                    assert [(await local.receive()).subject for _ in range(20)] == [
                        f"local.{i}" for i in range(20)
                    ]
                    await bystander.flush()
                # the route takes nothing, so the flooder is not held for it: the route
                # fills up to its bound (8 x max_pending_bytes) and is closed as a slow
                # consumer, well before its deadline; its publisher goes on
                with trio.fail_after(DEADLINE):
                    while gw.statistics().routes:
                        await gw.wait_topology_change()
                    await flooder.flush()
                flooding.cancel()
                stats = gw.statistics()
                assert (stats.stalled_links, stats.stalled_routes) == (1, 1)
            await trio.aclose_forcefully(peer)
