"""Super-clusters: gateways, discovery, counts, delivery, queue groups, interest modes."""

from __future__ import annotations

from collections import Counter
from contextlib import AsyncExitStack

import pytest
import trio

import meshgate
from meshgate import ErrorCode
from meshgate.protocol import PROTOCOL_VERSION, GatewaySub, Hello, Message

from .helpers import Raw, drain, refused
from .supercluster import settle, supercluster


def everyone(sc: dict[str, list[meshgate.Gateway]]) -> list[meshgate.Gateway]:
    return [g for gs in sc.values() for g in gs]


@pytest.mark.parametrize(
    ("n", "scheme", "topology"),
    [(1, "tcp", "star"), (2, "tcp", "chain"), (3, "memory", "star")],
)
async def test_connection_counts_from_minimal_config(n: int, scheme: str, topology: str) -> None:
    with trio.fail_after(60):
        async with supercluster({"A": n, "B": n, "C": n}, scheme=scheme, topology=topology) as sc:
            stats = [g.statistics() for g in everyone(sc)]
            total_out = sum(s.outbound_gateways for s in stats)
            total_in = sum(s.inbound_gateways for s in stats)
            # sum over clusters of N_i (M - 1): 6, 12, 18 for 3 x 1, 2, 3
            assert total_out == 3 * n * 2 == total_in
            assert all(s.outbound_gateways == 2 for s in stats)  # one per remote cluster
            assert all(s.routes == n - 1 for s in stats)


async def test_uneven_clusters_1_2_3() -> None:
    with trio.fail_after(60):
        async with supercluster({"A": 1, "B": 2, "C": 3}) as sc:
            stats = [g.statistics() for g in everyone(sc)]
            assert sum(s.outbound_gateways for s in stats) == 1 * 2 + 2 * 2 + 3 * 2
            assert sum(s.inbound_gateways for s in stats) == 12


async def test_exactly_once_everywhere_and_request_reply() -> None:
    with trio.fail_after(60):
        async with (
            supercluster({"A": 2, "B": 2, "C": 1}, scheme="tcp") as sc,
            AsyncExitStack() as stack,
        ):
            gws = everyone(sc)
            clients = [
                await stack.enter_async_context(meshgate.connect(g.client_url))  # type: ignore[arg-type]
                for g in gws
            ]
            subs = [await stack.enter_async_context(c.subscribe("ev.>")) for c in clients]
            await settle(gws, clients)
            sent = []
            for i, c in enumerate(clients * 4):
                await c.publish(f"ev.{i}", b"")
                sent.append(f"ev.{i}")
            await settle(gws, clients)
            for s in subs:
                assert Counter(m.subject for m in drain(s)) == Counter(sent)
            # request/reply between clusters: the requester subscribes to its inbox and
            # publishes at once; interest and data travel on different connections
            responder = clients[-1]  # cluster C
            async with responder.subscribe("svc.time") as svc:
                await settle(gws, clients)

                async def serve() -> None:
                    async for m in svc:
                        assert m.reply
                        await responder.publish(m.reply, b"t:" + m.payload)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(serve)
                    for c in clients[:4]:  # clusters A and B
                        assert (await c.request("svc.time", b"q")).payload == b"t:q"
                    nursery.cancel_scope.cancel()


async def test_queue_groups_local_first_with_failover() -> None:
    with trio.fail_after(60):
        async with supercluster({"A": 2, "B": 1, "C": 1}) as sc, AsyncExitStack() as stack:
            gws = everyone(sc)
            a0, a1 = [
                await stack.enter_async_context(meshgate.connect(g.client_url)) for g in sc["A"]
            ]  # type: ignore[arg-type]
            b = await stack.enter_async_context(meshgate.connect(sc["B"][0].client_url))  # type: ignore[arg-type]
            c = await stack.enter_async_context(meshgate.connect(sc["C"][0].client_url))  # type: ignore[arg-type]
            clients = [a0, a1, b, c]
            qb = await stack.enter_async_context(b.subscribe("job.*", queue="w"))
            qc = await stack.enter_async_context(c.subscribe("job.*", queue="w"))
            only_c = await stack.enter_async_context(c.subscribe("job.*", queue="c-only"))
            async with a1.subscribe("job.*", queue="w") as qa:
                await settle(gws, clients)
                for i in range(20):
                    await a0.publish(f"job.{i}", b"")
                await settle(gws, clients)
                # the publisher's cluster has a member: it serves every message
                assert len(drain(qa)) == 20
                assert drain(qb) == drain(qc) == []
                assert len(drain(only_c)) == 20  # a group only in C gets everything
            await settle(gws, clients)
            for i in range(20):
                await a0.publish(f"job.{i}", b"")
            await settle(gws, clients)
            # failover: exactly one other cluster serves each message, never both
            served_b, served_c = len(drain(qb)), len(drain(qc))
            assert served_b + served_c == 20
            assert {served_b, served_c} == {0, 20}  # the lowest-RTT cluster, consistently
            assert len(drain(only_c)) == 20


async def test_optimistic_no_interest_once_and_cancelled_by_wildcard() -> None:
    with trio.fail_after(60):
        async with supercluster({"A": 1, "B": 1}) as sc, AsyncExitStack() as stack:
            gws = everyone(sc)
            a = await stack.enter_async_context(meshgate.connect(sc["A"][0].client_url))  # type: ignore[arg-type]
            b = await stack.enter_async_context(meshgate.connect(sc["B"][0].client_url))  # type: ignore[arg-type]
            await stack.enter_async_context(b.subscribe("other"))  # the account is known in B
            await settle(gws, [a, b])
            out_b = lambda: sc["A"][0].gatewayz()["outbound_gateways"]["B"]  # noqa: E731
            before = out_b()["connection"]["out_msgs"]
            await a.publish("nobody.x", b"")
            await settle(gws, [a, b])  # B answers "no interest" once
            for _ in range(9):
                await a.publish("nobody.x", b"")
            await settle(gws, [a, b])
            # only the first message crossed; the rest stayed home
            assert out_b()["connection"]["out_msgs"] - before == 1
            assert (
                sc["B"][0].gatewayz()["inbound_gateways"]["A"][0]["accounts"][0][
                    "no_interest_count"
                ]
                == 1
            )
            acct = out_b()["accounts"][0]
            assert acct == {
                "name": "$G",
                "interest_mode": "Optimistic",
                "no_interest_count": 1,
                "interest_only_threshold": 1000,
                "num_subs": 0,
            }
            async with b.subscribe("nobody.*") as late:
                await settle(gws, [a, b])
                assert out_b()["accounts"][0]["no_interest_count"] == 0
                await a.publish("nobody.x", b"now")
                await settle(gws, [a, b])
                assert [m.payload for m in drain(late)] == [b"now"]


async def test_switch_to_interest_only_at_threshold() -> None:
    def cfg(cluster: str, i: int) -> dict[str, object]:
        return {"interest_only_threshold": 5}

    with trio.fail_after(60):
        async with supercluster({"A": 1, "B": 1}, extra=cfg) as sc, AsyncExitStack() as stack:
            gws = everyone(sc)
            a = await stack.enter_async_context(meshgate.connect(sc["A"][0].client_url))  # type: ignore[arg-type]
            b = await stack.enter_async_context(meshgate.connect(sc["B"][0].client_url))  # type: ignore[arg-type]
            keep = await stack.enter_async_context(b.subscribe("keep.>"))
            await settle(gws, [a, b])
            for i in range(8):
                await a.publish(f"noise.{i}", b"")
            await settle(gws, [a, b])
            out = sc["A"][0].gatewayz()["outbound_gateways"]["B"]["accounts"][0]
            inb = sc["B"][0].gatewayz()["inbound_gateways"]["A"][0]["accounts"][0]
            assert out["interest_mode"] == inb["interest_mode"] == "Interest-Only"
            assert out["num_subs"] == 1  # the dump: keep.>
            sent = sc["A"][0].gatewayz()["outbound_gateways"]["B"]["connection"]["out_msgs"]
            await a.publish("noise.new", b"")  # no interest: not sent any more
            await a.publish("keep.1", b"k")
            async with b.subscribe("late.x") as late:
                await settle(gws, [a, b])
                await a.publish("late.x", b"l")
                await settle(gws, [a, b])
                assert [m.payload for m in drain(late)] == [b"l"]
            assert [m.payload for m in drain(keep)] == [b"k"]
            after = sc["A"][0].gatewayz()["outbound_gateways"]["B"]["connection"]["out_msgs"]
            assert after - sent == 2
            # the account was silenced by nothing: with zero subscriptions left in B a
            # late message arrives, and a new subscription is still honoured (nats E6)
            await keep.unsubscribe()
            await settle(gws, [a, b])
            async with b.subscribe("bar") as bar:
                await settle(gws, [a, b])
                await a.publish("bar", b"still here")
                await settle(gws, [a, b])
                assert [m.payload for m in drain(bar)] == [b"still here"]


async def test_forced_interest_only_mode() -> None:
    def cfg(cluster: str, i: int) -> dict[str, object]:
        return {"interest_mode": "interest-only"}

    with trio.fail_after(60):
        async with supercluster({"A": 1, "B": 1}, extra=cfg) as sc, AsyncExitStack() as stack:
            gws = everyone(sc)
            a = await stack.enter_async_context(meshgate.connect(sc["A"][0].client_url))  # type: ignore[arg-type]
            b = await stack.enter_async_context(meshgate.connect(sc["B"][0].client_url))  # type: ignore[arg-type]
            sub = await stack.enter_async_context(b.subscribe("want.*"))
            await settle(gws, [a, b])
            gz = sc["A"][0].gatewayz()["outbound_gateways"]["B"]
            assert gz["accounts"][0]["interest_mode"] == "Interest-Only"
            before = gz["connection"]["out_msgs"]
            await a.publish("unwanted", b"")
            await a.publish("want.1", b"w")
            await settle(gws, [a, b])
            assert [m.payload for m in drain(sub)] == [b"w"]
            after = sc["A"][0].gatewayz()["outbound_gateways"]["B"]["connection"]["out_msgs"]
            assert after - before == 1
            # cross-cluster request/reply still works in interest-only mode
            async with trio.open_nursery() as nursery, b.subscribe("svc") as svc:
                await settle(gws, [a, b])

                async def serve() -> None:
                    m = await svc.receive()
                    assert m.reply
                    await b.publish(m.reply, b"ok")

                nursery.start_soon(serve)
                assert (await a.request("svc", b"")).payload == b"ok"


async def test_wrong_direction_role_and_cluster_are_refused() -> None:
    with trio.fail_after(60):
        async with supercluster({"A": 1, "B": 1}) as sc:
            url = sc["B"][0].gateway_url
            assert url
            cases = [
                (Hello(PROTOCOL_VERSION, "client", "c", None, None, 0, (), ()), "gateway port"),
                (Hello(PROTOCOL_VERSION, "route", "r", "B", None, 0, (), ()), "gateway port"),
                (
                    Hello(PROTOCOL_VERSION, "gateway", "b9", "B", None, 0, (), ()),
                    "different clusters",
                ),
            ]
            for hello, reason in cases:
                err = await refused(url, hello)
                assert err.code == ErrorCode.HANDSHAKE_REFUSED
                assert reason in err.reason
            # interest arriving on an inbound (data-only) connection is a protocol error
            async with meshgate.transports.connect_stream(url) as stream:
                r = Raw(stream)
                await r.send(Hello(PROTOCOL_VERSION, "gateway", "z0", "Z", None, 0, (), ()))
                await r.send(GatewaySub("$G", "x", None))
                err = await r.error_and_close()
                assert err.code == ErrorCode.ILLEGAL_FOR_ROLE
            # a client frame on a gateway connection too
            async with meshgate.transports.connect_stream(url) as stream:
                r = Raw(stream)
                await r.send(Hello(PROTOCOL_VERSION, "gateway", "z0", "Z", None, 0, (), ()))
                await r.send(Message(1, "x", None, b""))
                err = await r.error_and_close()
                assert err.code == ErrorCode.ILLEGAL_FOR_ROLE
            assert sc["B"][0].statistics().inbound_gateways == 1  # only A's


async def test_dialing_the_wrong_cluster_and_reject_unknown() -> None:
    with trio.fail_after(60):
        async with supercluster({"A": 1, "B": 1}) as sc:
            b_url = sc["B"][0].gateway_url
            # C believes that URL belongs to cluster "D": it is refused and never registered
            cfg = meshgate.GatewayConfig(
                name="c0",
                cluster="C",
                listen="memory://c0-client",
                gateway_listen="memory://c0-gw",
                gateways={"D": [b_url], "C": ["memory://ignored-own-name"]},  # type: ignore[list-item]
                reconnect_wait=0.05,
            )
            async with meshgate.open_gateway(cfg) as c:
                await sc["B"][0].flush_gateways()
                assert c.statistics().outbound_gateways == 0
                assert "C" not in c.gatewayz()["known_urls"]  # own cluster name ignored
            # reject_unknown: a cluster B does not know is refused
            strict = meshgate.GatewayConfig(
                name="s0",
                cluster="S",
                listen="memory://s0-client",
                gateway_listen="memory://s0-gw",
                reject_unknown=True,
                gateways={"A": [sc["A"][0].gateway_url]},  # type: ignore[list-item]
                reconnect_wait=0.05,
            )
            async with meshgate.open_gateway(strict) as s:
                await s.wait_gateways(1)  # S -> A is configured, so allowed
                await settle([s, *everyone(sc)])
                # A learned about S and dialed back; S accepts A (configured) ...
                assert s.statistics().inbound_gateways == 1
                # ... but S never dials B: B is unknown to S and S refuses B's dial
                assert "B" not in s.gatewayz()["outbound_gateways"]
                assert "B" not in s.gatewayz()["known_urls"]


async def test_node_restart_resyncs_interest() -> None:
    """Kill a node of B: A notices; B's node returns; subscribers behind it receive again."""
    with trio.fail_after(60):
        async with supercluster({"A": 1, "B": 1}) as sc, AsyncExitStack() as stack:
            a_gw = sc["A"][0]
            a = await stack.enter_async_context(meshgate.connect(a_gw.client_url))  # type: ignore[arg-type]
            b_cfg = meshgate.GatewayConfig(
                name="b9",
                cluster="B",
                listen="memory://b9-client",
                cluster_listen="memory://b9-route",
                routes=(sc["B"][0].cluster_url,),  # type: ignore[arg-type]
                gateway_listen="memory://b9-gw",
                reconnect_wait=0.05,
            )
            for _ in range(2):
                async with meshgate.open_gateway(b_cfg) as b9:
                    await b9.wait_gateways(1)
                    async with (
                        meshgate.connect(b9.client_url) as bc,  # type: ignore[arg-type]
                        bc.subscribe("r.>") as sub,
                    ):
                        await settle([*everyone(sc), b9], [a, bc])
                        await a.publish("r.1", b"hello")
                        await settle([*everyone(sc), b9], [a, bc])
                        assert [m.payload for m in drain(sub)] == [b"hello"]
                # b9 is gone: A's inbound from it goes away, B0 stays
                while a_gw.statistics().inbound_gateways != 1:
                    await a_gw.wait_topology_change()
