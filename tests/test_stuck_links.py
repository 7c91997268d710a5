"""A stuck route costs only the traffic that crosses it.

A route peer that stops reading holds nobody: local subscribers and the subscribers
behind other routes and gateways receive every message without a gap; the stuck link
is closed as a slow consumer after ``peer_write_deadline`` (or once it holds
``peer_max_pending_bytes``), counted, and redialed with a growing backoff.  A link that
drains, however slowly, still gets back-pressure and is not closed.

In-process nodes on the memory transport under ``autojump_clock``: every time below
is the virtual clock's, so the figures are exact and nothing sleeps for real.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import meshgate
from meshgate.protocol import PROTOCOL_VERSION, Decoder, Hello, RouteMessage, RouteSub
from meshgate.topology import fetch_json
from meshgate.transports import connect_stream, get_transport

from .helpers import Raw

LIMIT = 64 * 1024  # max_pending_bytes: publishers wait for a link from here on
BOUND = 512 * 1024  # peer_max_pending_bytes: a link holding more is closed
DEADLINE = 2.0  # peer_write_deadline: a link that takes nothing this long is closed
WAIT = 1.0  # reconnect_wait: the dialers' backoff base
RATE = 100.0  # messages per second on the stream
#: the longest silence allowed to a subscriber whose traffic does not cross the link
UNAFFECTED_GAP = 0.5


def node(name: str, cluster: str = "A", **kw: Any) -> meshgate.GatewayConfig:
    """Node ``name`` on memory listeners ``memory://<name>-clients|routes|gw``, with
    keepalive out of the way (a stuck link is found by its deadline or bound here)."""
    fields: dict[str, Any] = {
        "name": name,
        "cluster": cluster,
        "listen": f"memory://{name}-clients",
        "cluster_listen": f"memory://{name}-routes",
        "gateway_listen": f"memory://{name}-gw",
        "ping_interval": 600.0,
        "max_pending_bytes": LIMIT,
        "max_payload": LIMIT,
        "peer_write_deadline": DEADLINE,
        "peer_max_pending_bytes": BOUND,
        "reconnect_wait": WAIT,
        **kw,
    }
    return meshgate.GatewayConfig(**fields)


class Follower:
    """What one subscriber received of the numbered stream, and when."""

    def __init__(self, sub: meshgate.Subscription) -> None:
        self.sub = sub
        self.got: list[tuple[int, float]] = []
        self.progress = trio.Event()

    async def run(self) -> None:
        async for msg in self.sub:
            if msg.payload.isdigit():
                self.got.append((int(msg.payload), trio.current_time()))
                self.progress.set()
                self.progress = trio.Event()

    async def until(self, last: int) -> None:
        while not self.got or self.got[-1][0] < last:
            await self.progress.wait()

    def longest_gap(self) -> float:
        times = [t for _, t in self.got]
        return max(b - a for a, b in itertools.pairwise(times))


@asynccontextmanager
async def three_nodes(
    a0_config: meshgate.GatewayConfig,
) -> AsyncIterator[tuple[meshgate.Gateway, dict[str, Follower], meshgate.Client]]:
    """a0 (given), a1 (a route to a0) and b0 (cluster B, a gateway to a0), a subscriber
    to ``s.n`` on each and a publisher on a0; every subscriber already gets the stream."""
    async with AsyncExitStack() as stack:
        a0 = await stack.enter_async_context(meshgate.open_gateway(a0_config))
        await stack.enter_async_context(
            meshgate.open_gateway(node("a1", routes=["memory://a0-routes"]))
        )
        await stack.enter_async_context(
            meshgate.open_gateway(node("b0", "B", gateways={"A": ["memory://a0-gw"]}))
        )
        await a0.wait_gateways(1, 1)
        followers = {}
        for name in ("a0", "a1", "b0"):
            client = await stack.enter_async_context(meshgate.connect(f"memory://{name}-clients"))
            followers[name] = Follower(await client.add_subscription("s.n"))
        pub = await stack.enter_async_context(meshgate.connect("memory://a0-clients"))
        waiting = set(followers.values())
        while waiting:  # interest crosses nodes asynchronously: delivery is the proof
            await pub.publish("s.n", b"probe")
            with trio.move_on_after(0.05):
                for f in list(waiting):
                    await f.sub.receive()
                    waiting.discard(f)
        yield a0, followers, pub


class Stream:
    """Publishes 0, 1, 2, ... on ``s.n`` at ``RATE`` until stopped."""

    def __init__(self, pub: meshgate.Client) -> None:
        self.pub = pub
        self.stopping = False
        self.done = trio.Event()
        #: the last number published, once done
        self.last = -1

    async def run(self) -> None:
        start = trio.current_time()
        seq = 0
        while True:
            await trio.sleep_until(start + seq / RATE)  # the stream's schedule
            await self.pub.publish("s.n", str(seq).encode())
            if self.stopping:
                self.last = seq
                self.done.set()
                return
            seq += 1

    async def stop(self) -> int:
        """Stop after the next message; its number."""
        self.stopping = True
        await self.done.wait()
        return self.last


def assert_unaffected(followers: dict[str, Follower], last: int) -> None:
    for name, f in followers.items():
        assert [seq for seq, _ in f.got] == list(range(last + 1)), name
        assert f.longest_gap() < UNAFFECTED_GAP, (name, f.longest_gap())


async def test_a_route_that_stops_reading_is_closed_after_its_deadline_and_redialed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """a0 dials route peer a9, which handshakes, wants ``s.>`` and never reads again,
    every time it is dialed.  Each such link is closed as a slow consumer
    ``peer_write_deadline`` after it took its last byte, counted, and redialed after a
    backoff that grows with each stuck link in a row; meanwhile the stream reaches a0's
    own subscriber, a1's (a route) and b0's (a gateway) whole and without a gap."""
    accepted = trio.Event()

    async def hung(stream: trio.abc.Stream) -> None:
        r = Raw(stream)
        assert isinstance(await r.next(), Hello)  # the dialer's HELLO
        await r.send(
            Hello(version=PROTOCOL_VERSION, role="route", name="a9", cluster="A"),
            RouteSub("$G", "s.>", None, 1),
        )
        accepted.set()
        await trio.sleep_forever()  # reads nothing ever again

    ups: list[float] = []  # when a0's route to a9 came up
    downs: list[float] = []  # and went

    async def watch(a0: meshgate.Gateway) -> None:
        up = False
        while True:
            now_up = any(r.remote_name == "a9" for r in a0.routez())
            if now_up != up:
                (ups if now_up else downs).append(trio.current_time())
                up = now_up
            await a0.wait_topology_change()

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await nursery.start(get_transport("memory://hung").serve, "memory://hung", hung)
            async with three_nodes(node("a0", routes=["memory://hung"])) as (a0, followers, pub):
                await accepted.wait()
                async with trio.open_nursery() as run:
                    run.start_soon(watch, a0)
                    for f in followers.values():
                        run.start_soon(f.run)
                    stream = Stream(pub)
                    run.start_soon(stream.run)
                    while len(ups) < 4:  # three stuck links closed, and a fourth dialed
                        await a0.wait_topology_change()
                        await trio.testing.wait_all_tasks_blocked()
                    last = await stream.stop()
                    for f in followers.values():
                        await f.until(last)
                    stats = a0.statistics()
                    (row,) = [r for r in a0.routez() if r.remote_name == "a9"]
                    run.cancel_scope.cancel()
            nursery.cancel_scope.cancel()
    assert_unaffected(followers, last)
    # each stuck link was closed at its deadline: it took its last byte as it came up
    for up, down in zip(ups, downs, strict=False):
        assert DEADLINE - 1e-6 <= down - up < DEADLINE + 0.05, (up, down)
    # and redialed after a jittered backoff growing 1.5x per stuck link in a row
    for k, (down, up) in enumerate(zip(downs, ups[1:], strict=False), start=1):
        assert 0.5 * WAIT * 1.5**k <= up - down <= WAIT * 1.5**k + 0.05, (k, up - down)
    assert ups[3] - downs[2] > ups[1] - downs[0]  # the bounds alone make it grow
    assert (stats.stalled_links, stats.stalled_routes, stats.stalled_gateways) == (3, 3, 0)
    assert stats.slow_consumers == 0  # clients only
    assert row.slow_consumers == 3  # the fourth link's row tells its peer's history


async def test_a_flooded_route_that_stops_reading_holds_nobody_and_is_closed_at_its_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Route peer a9 (it dialed a0) stops reading while a bulk publisher on a0 floods
    it.  Publishers wait for it only ``STALLED_AFTER`` (it takes nothing), then carry
    on; once it holds ``peer_max_pending_bytes`` it is closed as a slow consumer, well
    before its deadline.  The stream reaches everyone else whole, without a gap."""
    with trio.fail_after(120):
        async with (
            three_nodes(node("a0")) as (a0, followers, pub),
            connect_stream("memory://a0-routes") as peer,
            meshgate.connect("memory://a0-clients") as bulk,
            trio.open_nursery() as run,
        ):
            r = Raw(peer)
            await r.send(
                Hello(version=PROTOCOL_VERSION, role="route", name="a9", cluster="A"),
                RouteSub("$G", "s.>", None, 1),
                RouteSub("$G", "bulk", None, 1),
            )
            assert isinstance(await r.next(), Hello)  # then a9 reads nothing ever again
            await a0.wait_routes(2)  # a1 and a9
            for f in followers.values():
                run.start_soon(f.run)
            stream = Stream(pub)
            run.start_soon(stream.run)
            await trio.sleep(0.5)  # the stream's schedule: the flood starts half a second in
            flood_at = trio.current_time()
            for _ in range(3 * BOUND // LIMIT):  # three times the bound, in max_payload pieces
                await bulk.publish("bulk", b"x" * (LIMIT - 1024))
            await bulk.flush()
            while a0.statistics().stalled_links == 0:
                await a0.wait_topology_change()
            closed_at = trio.current_time()
            await trio.sleep(1.0)  # the stream's schedule: one more second of it
            last = await stream.stop()
            for f in followers.values():
                await f.until(last)
            stats = a0.statistics()
            run.cancel_scope.cancel()
    assert_unaffected(followers, last)
    assert closed_at - flood_at < DEADLINE / 2  # the bound, not the deadline
    assert (stats.stalled_links, stats.stalled_routes) == (1, 1)
    assert all(r.remote_name != "a9" for r in a0.routez())


async def test_a_slow_route_that_drains_gets_back_pressure_and_stays(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Route peer a9 reads, but slowly (8 KiB every 20 ms, 400 KB/s), while a bulk
    publisher floods it with eight times ``max_pending_bytes``.  It never stalls: the
    publisher waits for it, it never holds much more than ``max_pending_bytes``, it is
    not closed, and it receives every message."""
    count = 8 * LIMIT // 8192
    received = 0
    done = trio.Event()
    peak = 0

    async def read_slowly(stream: trio.abc.Stream) -> None:
        nonlocal received
        dec = Decoder(max_frame_bytes=2 * LIMIT)
        while True:
            data = await stream.receive_some(8192)
            dec.feed(data)
            received += sum(1 for f in dec if isinstance(f, RouteMessage) and f.subject == "bulk")
            if received == count:
                done.set()
            await trio.sleep(0.02)  # the peer's pace

    async def sample(a0: meshgate.Gateway) -> None:
        nonlocal peak
        while True:
            peak = max([peak, *(r.pending_size for r in a0.routez() if r.remote_name == "a9")])
            await trio.sleep(0.005)  # a sampling period, not synchronisation

    with trio.fail_after(120):
        async with (
            meshgate.open_gateway(node("a0")) as a0,
            connect_stream("memory://a0-routes") as peer,
            meshgate.connect("memory://a0-clients") as bulk,
            trio.open_nursery() as run,
        ):
            r = Raw(peer)
            await r.send(
                Hello(version=PROTOCOL_VERSION, role="route", name="a9", cluster="A"),
                RouteSub("$G", "bulk", None, 1),
            )
            assert isinstance(await r.next(), Hello)
            await a0.wait_routes(1)
            run.start_soon(read_slowly, peer)
            run.start_soon(sample, a0)
            for _ in range(count):
                await bulk.publish("bulk", b"x" * 8000)
            await done.wait()
            (row,) = a0.routez()
            stats = a0.statistics()
            run.cancel_scope.cancel()
    assert received == count
    assert (row.stalled, row.stalls, stats.stalled_links) == (False, 0, 0)
    assert peak < LIMIT + 2 * 64 * 1024  # held back: one batch of input past the limit


async def test_monitoring_shows_a_stuck_link_and_its_peer_history() -> None:
    """Over HTTP: a route peer a9 that stops reading is closed as a slow consumer at its
    deadline; ``/varz`` counts it (``stalled_links``, ``slow_consumer_stats``) and, once
    a9 is back, its ``/routez`` row says how often a route to it was closed so; every
    ``/gatewayz`` connection has the same fields."""
    from ._nats import free_port

    monitor = f"127.0.0.1:{free_port()}"
    cfg = meshgate.GatewayConfig(
        name="a0",
        cluster="A",
        listen="127.0.0.1:0",
        cluster_listen="127.0.0.1:0",
        gateway_listen="127.0.0.1:0",
        monitor_listen=monitor,
        peer_write_deadline=0.3,
    )
    hello = Hello(version=PROTOCOL_VERSION, role="route", name="a9", cluster="A")
    with trio.fail_after(30):
        async with (
            meshgate.open_gateway(cfg) as a0,
            meshgate.open_gateway(
                meshgate.GatewayConfig(
                    name="b0",
                    cluster="B",
                    listen="127.0.0.1:0",
                    gateway_listen="127.0.0.1:0",
                    gateways={"A": [str(a0.gateway_url)]},
                )
            ),
        ):
            await a0.wait_gateways(1, 1)
            assert a0.cluster_url is not None
            async with connect_stream(a0.cluster_url) as stuck:
                r = Raw(stuck)
                await r.send(hello, RouteSub("$G", "s.>", None, 1))
                assert isinstance(await r.next(), Hello)  # then a9 reads nothing again
                await a0.wait_routes(1)
                async with meshgate.connect(str(a0.client_url)) as pub:
                    payload = b"x" * 60000  # more than the kernel's buffers take
                    while a0.statistics().routes:
                        await pub.publish("s.x", payload)
                        await pub.flush()
            varz = await fetch_json(f"http://{monitor}", "/varz")
            async with connect_stream(a0.cluster_url) as back:
                r = Raw(back)
                await r.send(hello)
                assert isinstance(await r.next(), Hello)
                await a0.wait_routes(1)
                routez = await fetch_json(f"http://{monitor}", "/routez")
                gatewayz = await fetch_json(f"http://{monitor}", "/gatewayz")
    assert varz["stalled_links"] == 1
    assert varz["slow_consumer_stats"] == {"clients": 0, "routes": 1, "gateways": 0, "leafs": 0}
    (row,) = routez["routes"]
    assert (row["remote_name"], row["slow_consumers"], row["stalled"]) == ("a9", 1, False)
    assert isinstance(row["stalls"], int)
    connections = [g["connection"] for g in gatewayz["outbound_gateways"].values()]
    connections += [g["connection"] for gs in gatewayz["inbound_gateways"].values() for g in gs]
    assert len(connections) == 2
    for c in connections:
        assert (c["stalled"], c["stalls"], c["slow_consumers"]) == (False, 0, 0), c
        assert isinstance(c["pending_bytes"], int)


def test_the_deadline_and_bound_default_to_the_node_wide_limits_and_are_checked() -> None:
    cfg = meshgate.GatewayConfig(write_deadline=3.0, max_pending_bytes=1 << 20)
    assert (cfg.link_write_deadline, cfg.link_max_pending_bytes) == (3.0, 8 << 20)
    cfg = meshgate.GatewayConfig.from_mapping(
        {"peer_write_deadline": 0.5, "peer_max_pending_bytes": 16 << 20}
    )
    assert (cfg.link_write_deadline, cfg.link_max_pending_bytes) == (0.5, 16 << 20)
    with pytest.raises(meshgate.ConfigError, match="peer_max_pending_bytes: must be at least"):
        meshgate.GatewayConfig(max_pending_bytes=1 << 20, peer_max_pending_bytes=1 << 19)
    with pytest.raises(meshgate.ConfigError, match="peer_write_deadline: must be a positive"):
        meshgate.GatewayConfig(peer_write_deadline=0)
