"""Routes: one cluster of nodes in a full mesh, learned by gossip from one seed."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio

import meshgate
from meshgate import ErrorCode
from meshgate.protocol import PROTOCOL_VERSION, Hello

from .helpers import Raw, collect, drain, refused


def node(
    i: int,
    cluster: str = "A",
    seeds: tuple[str, ...] = (),
    route_listen: str = "127.0.0.1:0",
    **kw: object,
) -> meshgate.GatewayConfig:
    return meshgate.GatewayConfig(
        name=f"{cluster.lower()}{i}",
        cluster=cluster,
        listen="127.0.0.1:0",
        cluster_listen=route_listen,
        routes=seeds,
        reconnect_wait=0.05,
        **kw,  # type: ignore[arg-type]
    )


@asynccontextmanager
async def cluster(n: int, route_scheme: str = "tcp") -> AsyncIterator[list[meshgate.Gateway]]:
    """n nodes; every node but the first knows only the first node's route URL."""
    async with AsyncExitStack() as stack:
        gws: list[meshgate.Gateway] = []
        for i in range(n):
            listen = "127.0.0.1:0" if route_scheme == "tcp" else f"memory://route-{id(gws)}-{i}"
            seeds = (gws[0].cluster_url,) if gws else ()
            assert all(seeds)
            gw = await stack.enter_async_context(
                meshgate.open_gateway(node(i, seeds=seeds, route_listen=listen))  # type: ignore[arg-type]
            )
            gws.append(gw)
        for gw in gws:
            await gw.wait_routes(n - 1)
        yield gws


async def settle(gws: list[meshgate.Gateway], clients: list[meshgate.Client]) -> None:
    """Everything sent so far has been processed everywhere and delivered to client buffers."""
    for c in clients:
        await c.flush()
    for gw in gws:
        await gw.flush_routes()
    for c in clients:
        await c.flush()


@pytest.mark.parametrize(("n", "scheme"), [(3, "tcp"), (5, "memory")])
async def test_full_mesh_from_one_seed(n: int, scheme: str) -> None:
    with trio.fail_after(20):
        async with cluster(n, scheme) as gws:
            routes = [gw.statistics().routes for gw in gws]
            assert routes == [n - 1] * n
            assert sum(routes) // 2 == n * (n - 1) // 2  # N(N-1)/2 route connections


async def test_exactly_once_everywhere_and_queue_groups_cluster_wide() -> None:
    with trio.fail_after(20):
        async with cluster(3) as gws, AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(meshgate.connect(gw.client_url))  # type: ignore[arg-type]
                for gw in gws
            ]
            plain = [await stack.enter_async_context(c.subscribe("ev.>")) for c in clients]
            # two members on node 0 and one on node 2; none on node 1
            members = [
                await stack.enter_async_context(clients[0].subscribe("ev.*", queue="work")),
                await stack.enter_async_context(clients[0].subscribe("ev.*", queue="work")),
                await stack.enter_async_context(clients[2].subscribe("ev.>", queue="work")),
            ]
            await settle(gws, clients)
            sent = []
            for i in range(60):
                c = clients[i % 3]
                await c.publish(f"ev.{i}", b"x")
                sent.append(f"ev.{i}")
            await settle(gws, clients)
            for sub in plain:
                got = [m.subject for m in drain(sub)]
                assert Counter(got) == Counter(sent)  # exactly once, no loops over routes
            per_member = [len(drain(m)) for m in members]
            assert sum(per_member) == 60  # one member per message, cluster-wide
            assert min(per_member) >= 10, per_member  # spread over nodes and members
            assert [gw.statistics().subscriptions for gw in gws] == [3, 1, 2]


async def test_unsubscribe_propagates_and_remote_only_queue() -> None:
    with trio.fail_after(20):
        async with cluster(2) as gws, AsyncExitStack() as stack:
            c0, c1 = [
                await stack.enter_async_context(meshgate.connect(gw.client_url))  # type: ignore[arg-type]
                for gw in gws
            ]
            async with c1.subscribe("svc", queue="q") as member:
                await settle(gws, [c0, c1])
                await c0.publish("svc", b"1")
                await settle(gws, [c0, c1])
                assert [m.payload for m in drain(member)] == [b"1"]
            await settle(gws, [c0, c1])
            before = gws[0].statistics().messages_out
            await c0.publish("svc", b"2")  # nobody anywhere: nothing crosses the route
            await settle(gws, [c0, c1])
            assert gws[0].statistics().messages_out == before


async def test_request_reply_across_routes() -> None:
    with trio.fail_after(20):
        async with cluster(2) as gws, AsyncExitStack() as stack:
            req, resp = [
                await stack.enter_async_context(meshgate.connect(gw.client_url))  # type: ignore[arg-type]
                for gw in gws
            ]
            svc = await stack.enter_async_context(resp.subscribe("echo"))
            await settle(gws, [req, resp])

            async def serve() -> None:
                async for m in svc:
                    assert m.reply
                    await resp.publish(m.reply, m.payload[::-1])

            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve)
                # the inbox subscription is created by this call: its interest travels on the
                # same route as the request, ahead of it, so the reply finds its way back
                answer = await req.request("echo", b"abc")
                nursery.cancel_scope.cancel()
            assert answer.payload == b"cba"


async def test_route_from_other_cluster_or_client_is_refused() -> None:
    with trio.fail_after(20):
        async with cluster(1) as gws:
            url = gws[0].cluster_url
            assert url
            for hello, reason in [
                (Hello(PROTOCOL_VERSION, "route", "b9", "B", None, 0, (), ()), "cluster 'B'"),
                (Hello(PROTOCOL_VERSION, "client", "c", None, None, 0, (), ()), "cluster port"),
            ]:
                err = await refused(url, hello)
                assert err.code == ErrorCode.HANDSHAKE_REFUSED
                assert reason in err.reason
            # and a node of another cluster configured with this seed never joins
            async with meshgate.open_gateway(node(0, cluster="B", seeds=(url,))) as other:
                await gws[0].flush_routes()
                assert other.statistics().routes == 0
                assert gws[0].statistics().routes == 0


async def test_seed_list_may_include_self() -> None:
    with trio.fail_after(20):
        async with (
            meshgate.open_gateway(node(0, route_listen="memory://selfish")) as gw,
            meshgate.open_gateway(
                node(
                    1,
                    seeds=("memory://selfish", "memory://selfish-2"),
                    route_listen="memory://selfish-2",
                )
            ) as gw2,
        ):
            await gw2.wait_routes(1)
            await gw.wait_routes(1)
            assert gw2.statistics().routes == 1
            assert {r.url for r in gw2.routez()} == {"memory://selfish"}


async def test_restarted_peer_reconnects_and_resyncs_without_double_counting() -> None:
    with trio.fail_after(30):
        async with meshgate.open_gateway(node(0, route_listen="memory://r0")) as g0:
            cfg1 = node(1, seeds=("memory://r0",), route_listen="memory://r1")
            async with meshgate.connect(g0.client_url) as pub:  # type: ignore[arg-type]
                for generation in range(2):
                    async with meshgate.open_gateway(cfg1) as g1:
                        await g0.wait_routes(1)
                        await g1.wait_routes(1)
                        async with (
                            meshgate.connect(g1.client_url) as c1,  # type: ignore[arg-type]
                            c1.subscribe("w", queue="q") as m1,
                            c1.subscribe("w", queue="q") as m2,
                            c1.subscribe("p.>") as plain,
                        ):
                            await settle([g0, g1], [pub, c1])
                            entries = [e for r in g0.routez(interest=True) for e in r.interest]
                            assert sorted((e[1], e[2], e[3]) for e in entries) == [
                                ("p.>", None, 1),
                                ("w", "q", 2),
                            ], generation
                            for i in range(10):
                                await pub.publish("w", b"")
                                await pub.publish(f"p.{i}", b"")
                            await settle([g0, g1], [pub, c1])
                            assert len(drain(m1)) + len(drain(m2)) == 10
                            assert len(await collect(plain, 10)) == 10
                    # node 1 is gone: node 0 forgets its interest
                    while g0.statistics().routes:
                        await g0.wait_topology_change()
                    assert g0.accountz()[0].interest_entries == 0


async def test_mutual_seeds_end_with_one_route() -> None:
    """Both nodes dial each other at once: one connection survives, on both sides alike."""
    with trio.fail_after(20):
        async with (
            meshgate.open_gateway(
                node(0, seeds=("memory://m1",), route_listen="memory://m0")
            ) as g0,
            meshgate.open_gateway(
                node(1, seeds=("memory://m0",), route_listen="memory://m1")
            ) as g1,
        ):
            await g0.wait_routes(1)
            await g1.wait_routes(1)
            await trio.testing.wait_all_tasks_blocked()
            await g0.flush_routes()
            await g1.flush_routes()
            assert g0.statistics().routes == g1.statistics().routes == 1
            (r0,) = g0.routez()
            (r1,) = g1.routez()
            assert (r0.remote_name, r1.remote_name) == ("a1", "a0")
            assert r0.did_solicit != r1.did_solicit  # both sides kept the same connection


async def test_route_hello_with_own_name_is_dropped_quietly() -> None:
    with trio.fail_after(20):
        async with meshgate.open_gateway(node(0, route_listen="memory://me")) as gw:
            async with meshgate.transports.connect_stream("memory://me") as stream:
                r = Raw(stream)
                await r.send(
                    Hello(PROTOCOL_VERSION, "route", "a0", "A", None, 0, (), ("memory://alias",))
                )
                assert await r.until_closed() == []  # the acceptor never even said HELLO
            assert "memory://alias" in gw.varz().self_urls
            assert gw.statistics().routes == 0
