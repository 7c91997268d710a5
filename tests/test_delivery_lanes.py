"""Per-client delivery: a keyed state lane, a bounded event lane, and the graded
slow-client policy (coalesce -> resync -> disconnect), with a client that stops reading."""

from __future__ import annotations

import trio
from trio.testing import wait_all_tasks_blocked

import meshgate
from meshgate import ErrorCode
from meshgate.protocol import Error, Message, Subscribe

from .helpers import collect, raw

LIMIT = 64 * 1024


def config() -> meshgate.GatewayConfig:
    return meshgate.GatewayConfig(
        listen="memory://",
        slow_consumer_policy="coalesce",
        max_pending_bytes=LIMIT,
        max_payload=1024,
        max_resyncs=2,
    )


async def test_stalled_client_costs_bounded_memory_and_delays_nobody() -> None:
    with trio.fail_after(20):
        async with meshgate.open_gateway(config()) as gw:
            assert gw.client_url
            async with (
                raw(gw.client_url) as stalled,
                meshgate.connect(gw.client_url) as pub,
                meshgate.connect(gw.client_url) as fast,
                fast.subscribe("state.>") as fast_state,
            ):
                await stalled.hello()
                await stalled.send(Subscribe(1, "state.>", None), Subscribe(2, "ev.>", None))
                await pub.flush()
                await fast.flush()

                def stalled_info() -> meshgate.ConnectionInfo:
                    return next(c for c in gw.connz() if c.subscriptions == 2)

                cid = stalled_info().cid
                # keyed state: 10 ships x 300 updates; the stalled client keeps the latest each
                for n in range(300):
                    for ship in range(10):
                        await pub.publish(
                            f"state.{ship}", n.to_bytes(2, "big") * 200, key=f"s{ship}"
                        )
                    # the fast client is never delayed by the stalled one
                    got = await collect(fast_state, 10)
                    assert {m.payload[:2] for m in got} == {n.to_bytes(2, "big")}
                await pub.flush()
                info = stalled_info()
                assert info.keyed_frames == 10
                assert info.pending_bytes <= LIMIT
                assert gw.statistics().coalesced_messages > 2000
                assert info.state == "OPEN"
                # events overflow the bounded lane: resync, resync, then disconnect
                for _ in range(3 * LIMIT // 1000 + 10):
                    await pub.publish("ev.x", b"e" * 1000)
                await pub.flush()
                stats = gw.statistics()
                assert stats.resyncs == 2
                assert stats.slow_consumers >= 1
                # closed: gone from connz, or still flushing within the bound
                left = [c for c in gw.connz() if c.cid == cid]
                assert not left or (left[0].state == "CLOSING" and left[0].pending_bytes <= LIMIT)
                # everyone else carries on
                await pub.publish("state.0", b"after", key="s0")
                assert (await fast_state.receive()).payload == b"after"


async def test_slow_reader_gets_resync_notice_and_latest_state() -> None:
    with trio.fail_after(20):
        async with meshgate.open_gateway(config()) as gw:
            assert gw.client_url
            async with raw(gw.client_url) as slow, meshgate.connect(gw.client_url) as pub:
                await slow.hello()
                await slow.send(Subscribe(1, "state.>", None), Subscribe(2, "ev.>", None))
                await pub.flush()
                await wait_all_tasks_blocked()
                for n in range(50):
                    await pub.publish("state.ship", bytes([n]), key="ship")
                for _ in range(LIMIT // 1000 + 5):  # one overflow of the event lane
                    await pub.publish("ev.boom", b"e" * 1000)
                await pub.flush()
                await pub.publish("ev.marker", b"end")
                await pub.flush()
                # now the slow client reads everything that is queued for it
                frames = []
                marker = latest = False
                while not (marker and latest):  # the two lanes interleave per batch
                    f = await slow.next()
                    assert f is not None, "the node closed a client that was only slow"
                    frames.append(f)
                    if isinstance(f, Message):
                        marker = marker or f.subject == "ev.marker"
                        latest = latest or (f.sid == 1 and f.payload == bytes([49]))
                errors = [f for f in frames if isinstance(f, Error)]
                assert [e.code for e in errors] == [ErrorCode.RESYNC]
                assert "events dropped" in errors[0].reason
                states = [f.payload for f in frames if isinstance(f, Message) and f.sid == 1]
                assert states[-1] == bytes([49])  # the latest state arrives, last
                assert len(states) < 50  # the rest was coalesced away
                assert gw.statistics().resyncs == 1
                assert gw.statistics().clients == 2
