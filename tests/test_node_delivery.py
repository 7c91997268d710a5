"""Local delivery on one node: wildcards, queue groups, request/reply, unsubscribe, flush."""

from __future__ import annotations

from collections import Counter

import pytest
import trio

import meshgate

from .helpers import LISTENS, collect, config

pytestmark = pytest.mark.parametrize("listen", LISTENS)


async def test_wildcards_and_exactly_once(listen: str) -> None:
    with trio.fail_after(10):
        async with meshgate.open_gateway(config(listen)) as gw:
            assert gw.client_url is not None
            async with (
                meshgate.connect(gw.client_url) as pub,
                meshgate.connect(gw.client_url) as c,
                c.subscribe("ship.*.pos") as star,
                c.subscribe("ship.>") as tail,
                c.subscribe("ship.1.pos") as lit,
                c.subscribe("other") as other,
            ):
                await c.flush()
                for s in ("ship.1.pos", "ship.2.pos", "ship.1.hp"):
                    await pub.publish(s, s.encode())
                await pub.flush()
                await c.flush()
                assert [m.subject for m in await collect(star, 2)] == ["ship.1.pos", "ship.2.pos"]
                assert [m.payload for m in await collect(tail, 3)] == [
                    b"ship.1.pos",
                    b"ship.2.pos",
                    b"ship.1.hp",
                ]
                assert (await lit.receive()).subject == "ship.1.pos"
                for s in (star, tail, lit, other):
                    with pytest.raises(trio.WouldBlock):
                        s.receive_nowait()
            stats = gw.statistics()
            assert stats.messages_in == 3
            assert stats.messages_out == 6


async def test_queue_group_one_member_each_spread(listen: str) -> None:
    with trio.fail_after(10):
        async with meshgate.open_gateway(config(listen)) as gw:
            assert gw.client_url
            async with (
                meshgate.connect(gw.client_url) as pub,
                meshgate.connect(gw.client_url) as c,
            ):
                subs = []
                async with (
                    c.subscribe("job.*", queue="workers") as w1,
                    c.subscribe("job.*", queue="workers") as w2,
                    c.subscribe("job.>", queue="workers") as w3,
                    c.subscribe("job.*", queue="auditors") as a1,
                    c.subscribe("job.*") as plain,
                ):
                    subs = [w1, w2, w3]
                    await c.flush()
                    for i in range(300):
                        await pub.publish(f"job.{i}", b"")
                    await pub.flush()
                    await c.flush()
                    counts = Counter()
                    for i, s in enumerate(subs):
                        while True:
                            try:
                                s.receive_nowait()
                            except trio.WouldBlock:
                                break
                            counts[i] += 1
                    assert sum(counts.values()) == 300  # exactly one member per message
                    assert all(counts[i] >= 50 for i in range(3)), counts  # spread
                    assert len(await collect(a1, 300)) == 300
                    assert len(await collect(plain, 300)) == 300


async def test_request_reply(listen: str) -> None:
    with trio.fail_after(10):
        async with meshgate.open_gateway(config(listen)) as gw:
            assert gw.client_url
            async with (
                meshgate.connect(gw.client_url) as requester,
                meshgate.connect(gw.client_url) as responder,
                responder.subscribe("svc.upper") as svc,
            ):
                await responder.flush()

                async def serve() -> None:
                    async for m in svc:
                        assert m.reply is not None
                        await responder.publish(m.reply, m.payload.upper())

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(serve)
                    answers = [await requester.request("svc.upper", w) for w in (b"a", b"bc")]
                    nursery.cancel_scope.cancel()
                assert [a.payload for a in answers] == [b"A", b"BC"]


async def test_unsubscribe_and_auto_unsubscribe(listen: str) -> None:
    with trio.fail_after(10):
        async with meshgate.open_gateway(config(listen)) as gw:
            assert gw.client_url
            async with meshgate.connect(gw.client_url) as c:
                async with c.subscribe("x") as sub:
                    await sub.unsubscribe(max_msgs=2)
                    for i in range(5):
                        await c.publish("x", bytes([i]))
                    await c.flush()
                    got = [m.payload async for m in sub]  # ends after two
                    assert got == [b"\x00", b"\x01"]
                assert gw.statistics().subscriptions == 0
                async with c.subscribe("y") as sub2:
                    await c.flush()
                    assert gw.statistics().subscriptions == 1
                    await sub2.unsubscribe()
                    await c.publish("y", b"late")
                    await c.flush()
                    assert gw.statistics().subscriptions == 0
                    with pytest.raises(meshgate.ConnectionClosedError):
                        sub2.receive_nowait()


async def test_flush_is_a_round_trip(listen: str) -> None:
    with trio.fail_after(10):
        async with meshgate.open_gateway(config(listen)) as gw:
            assert gw.client_url
            async with meshgate.connect(gw.client_url) as c:
                for i in range(100):
                    await c.publish("nobody", b"x" * i)
                await c.flush()
                assert gw.statistics().messages_in == 100


async def test_connect_local(listen: str) -> None:
    with trio.fail_after(10):
        async with (
            meshgate.open_gateway(config(listen)) as gw,
            gw.connect_local(name="host") as a,
            gw.connect_local() as b,
            b.subscribe("h.>") as sub,
        ):
            await b.flush()
            await a.publish("h.1", b"in-process")
            assert (await sub.receive()).payload == b"in-process"
