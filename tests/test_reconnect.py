"""A client that survives its node: reconnect, resubscribe, keepalive, a clear end."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest
import trio
import trio.testing

import meshgate
from meshgate.protocol import PROTOCOL_VERSION, Decoder, Encoder, Hello, Ping, Pong
from meshgate.transports import get_transport

from .helpers import memory_node


async def run_node(
    config: meshgate.GatewayConfig,
    *,
    task_status: trio.TaskStatus[
        tuple[meshgate.Gateway, trio.CancelScope]
    ] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A node in its own task, stopped by cancelling the scope it reports."""
    with trio.CancelScope() as scope:
        async with meshgate.open_gateway(config) as gw:
            task_status.started((gw, scope))
            await trio.sleep_forever()


node = memory_node


async def test_a_client_moves_to_another_node_and_resumes_its_subscriptions() -> None:
    with trio.fail_after(20):
        async with meshgate.open_gateway(node("a1")) as a1, trio.open_nursery() as nodes:
            _, stop_a0 = await nodes.start(run_node, node("a0", ("memory://a1-routes",)))
            await a1.wait_routes(1)
            async with meshgate.connect(
                ["memory://a0-clients", "memory://a1-clients"], reconnect_wait=0.01
            ) as client:
                assert client.url == "memory://a0-clients"
                sub = await client.add_subscription("x.>")
                await client.flush()
                events: list[meshgate.client.ConnectionEvent] = []
                async with trio.open_nursery() as nursery:

                    async def watch() -> None:
                        async for event in client.connection_events():
                            events.append(event)
                            if event.kind == "disconnected":  # buffered until reconnected
                                await client.publish("x.queued", b"sent while away")
                            if event.kind == "reconnected":
                                nursery.cancel_scope.cancel()

                    nursery.start_soon(watch)
                    stop_a0.cancel()  # a0 goes away
                assert [e.kind for e in events] == ["disconnected", "reconnected"]
                assert client.url == "memory://a1-clients"
                assert client.reconnects == 1
                await client.flush()
                async with meshgate.connect("memory://a1-clients") as other:
                    await other.publish("x.after", b"hello again")
                    await other.flush()
                got = [(await sub.receive()).subject for _ in range(2)]
                assert got == ["x.queued", "x.after"]


async def test_a_client_that_gives_up_says_so(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nodes:
        _, stop = await nodes.start(run_node, node("solo"))
        async with meshgate.connect("memory://solo-clients", max_reconnect_attempts=2) as client:
            sub = await client.add_subscription("x")
            await client.flush()
            stop.cancel()  # the only node is gone for good
            with pytest.raises(meshgate.ConnectionClosedError):
                async for _ in sub:
                    pass
            assert client.is_closed
            kinds = [e.kind async for e in client.connection_events()]
            assert kinds == ["disconnected", "closed"]


async def test_a_hung_node_is_detected_by_keepalive(autojump_clock: trio.testing.MockClock) -> None:
    """The first node answers the handshake and then nothing: no PONG, ever."""

    async def hung(stream: trio.abc.Stream) -> None:
        enc, dec = Encoder(), Decoder()
        await stream.send_all(enc.encode(Hello(version=PROTOCOL_VERSION, role="node", name="h")))
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            dec.feed(data)
            for frame in dec:
                if isinstance(frame, Ping) and not answered:
                    answered.append(frame)
                    await stream.send_all(enc.encode(Pong()))  # the handshake's flush only

    answered: list[Ping] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(get_transport("memory://hung").serve, "memory://hung", hung)
        async with (
            meshgate.open_gateway(node("good")) as good,
            meshgate.connect(
                ["memory://hung", "memory://good-clients"], ping_interval=1.0, max_pings_out=2
            ) as client,
        ):
            assert client.url == "memory://hung"
            start = trio.current_time()
            async for event in client.connection_events():
                if event.kind == "disconnected":
                    assert "no PONG" in event.reason
                if event.kind == "reconnected":
                    break
            assert client.url == "memory://good-clients"
            assert trio.current_time() - start <= 3.5  # 2 pings unanswered, then gone
            await client.flush()
            assert good.statistics().clients == 1
        nursery.cancel_scope.cancel()


async def test_a_game_session_survives_its_node() -> None:
    """Inputs sent before and after a move to another node are applied once each, in
    order: the session key keeps the client's identity; the retries are deduplicated."""
    from meshgate.replicant import InMemoryReplicant
    from meshgate.spatial import Grid

    def game_node(name: str, seeds: tuple[str, ...] = ()) -> meshgate.GatewayConfig:
        return memory_node(name, seeds, replicants=True)

    with trio.fail_after(20):
        async with meshgate.open_gateway(game_node("g1")) as g1, trio.open_nursery() as nodes:
            owner = InMemoryReplicant("west", Grid(100.0), {"ship1": (5.0, 5.0)})
            g1.attach_replicant(owner)
            await owner.wait_ready()
            _, stop_g0 = await nodes.start(run_node, game_node("g0", ("memory://g1-routes",)))
            await g1.wait_routes(1)

            async def applied(n: int) -> None:
                while len(owner.log.get("ship1", [])) < n:
                    await g1.flush_routes()

            async with meshgate.connect(
                ["memory://g0-clients", "memory://g1-clients"], reconnect_wait=0.01
            ) as pilot:
                for seq in range(5):
                    await pilot.send_input("ship1", seq, b"+")
                await pilot.flush()
                await applied(5)
                stop_g0.cancel()  # the pilot's node dies
                async for event in pilot.connection_events():
                    if event.kind == "reconnected":
                        break
                for seq in range(5, 10):
                    await pilot.send_input("ship1", seq, b"+")
                await pilot.flush()
                await applied(10)
                await pilot.flush()
            (client,) = {c for c, _ in owner.log["ship1"]}  # one identity throughout
            assert client.startswith("s-")
            assert [s for _, s in owner.log["ship1"]] == list(range(10))


async def test_lame_duck_moves_clients_away_a_few_at_a_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with meshgate.open_gateway(node("m1")) as m1, trio.open_nursery() as nodes:
        m0, _ = await nodes.start(run_node, node("m0", ("memory://m1-routes",)))
        await m1.wait_routes(1)
        urls = ["memory://m0-clients", "memory://m1-clients"]
        async with AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(meshgate.connect(urls, name=f"c{i}"))
                for i in range(10)
            ]
            subs = [await c.add_subscription("news") for c in clients]
            for c in clients:
                await c.flush()
            assert m0.statistics().clients == 10
            moved_at: list[float] = []
            async with trio.open_nursery() as watchers:

                async def watch(c: meshgate.Client) -> None:
                    async for event in c.connection_events():
                        if event.kind == "reconnected":
                            moved_at.append(trio.current_time())
                            return

                for c in clients:
                    watchers.start_soon(watch, c)
                start = trio.current_time()
                await m0.lame_duck(window=5.0)
            assert all(c.url == "memory://m1-clients" for c in clients)
            assert max(moved_at) - start >= 4.0  # spread over the window ...
            assert min(moved_at) - start < 1.0  # ... not all at the end
            async with meshgate.connect("memory://m1-clients") as pub:
                for c in clients:
                    await c.flush()
                await pub.publish("news", b"everyone moved")
                await pub.flush()
            assert [(await s.receive()).payload for s in subs] == [b"everyone moved"] * 10
        nodes.cancel_scope.cancel()


async def test_a_client_learns_the_other_nodes_and_fails_over_to_them() -> None:
    with trio.fail_after(20):
        async with meshgate.open_gateway(node("k1")) as k1, trio.open_nursery() as nodes:
            _, stop_k0 = await nodes.start(run_node, node("k0", ("memory://k1-routes",)))
            await k1.wait_routes(1)
            async with meshgate.connect("memory://k0-clients", reconnect_wait=0.01) as client:
                await client.flush()
                assert client.known_urls == ("memory://k0-clients", "memory://k1-clients")
                sub = await client.add_subscription("y")
                await client.flush()
                stop_k0.cancel()
                async for event in client.connection_events():
                    if event.kind == "reconnected":
                        break
                assert client.url == "memory://k1-clients"
                await client.flush()
                async with meshgate.connect("memory://k1-clients") as pub:
                    await pub.publish("y", b"found you")
                    await pub.flush()
                assert (await sub.receive()).payload == b"found you"


async def test_clients_hear_of_nodes_that_join_later() -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nodes:
            _, stop_j0 = await nodes.start(run_node, node("j0"))
            async with meshgate.connect("memory://j0-clients", reconnect_wait=0.01) as client:
                await client.flush()
                assert client.known_urls == ()  # alone so far
                async with meshgate.open_gateway(node("j1", ("memory://j0-routes",))) as j1:
                    await j1.wait_routes(1)
                    while client.known_urls != ("memory://j0-clients", "memory://j1-clients"):
                        await client.flush()
                    stop_j0.cancel()
                    async for event in client.connection_events():
                        if event.kind == "reconnected":
                            break
                    assert client.url == "memory://j1-clients"
            nodes.cancel_scope.cancel()
