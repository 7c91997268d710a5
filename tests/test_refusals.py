"""No silent mistakes: what the node refuses reaches the caller.

What the client can check itself raises at the call; what only the node can judge
comes back as an error frame (the connection stays) and raises at the next
``flush()``, from a refused subscription's ``receive()``, and reaches ``on_error``."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest
import trio

import meshgate
from meshgate import ErrorCode, Permissions, User
from meshgate.client import ClientProtocol, ServerErrorReceived, connect_with_stream
from meshgate.protocol import PROTOCOL_VERSION, Decoder, Encoder, Error, Hello, Pong, Subscribe
from meshgate.replicant import InMemoryReplicant
from meshgate.spatial import Grid
from meshgate.transports import connect_stream

from .test_monitor import get


def node(**kw: Any) -> meshgate.GatewayConfig:
    return meshgate.GatewayConfig(**{"listen": "127.0.0.1:0", **kw})


async def test_an_input_to_a_node_without_the_game_layer_raises_at_the_call() -> None:
    with trio.fail_after(10):
        async with meshgate.open_gateway(node()) as gw:
            assert gw.client_url is not None
            async with meshgate.connect(gw.client_url) as pilot:
                with pytest.raises(meshgate.NoGameLayerError, match="replicants=True"):
                    await pilot.send_input("ship1", 0, b"thrust")
                await pilot.flush()  # nothing was sent: nothing to refuse


async def test_the_node_refuses_an_input_it_has_no_game_layer_for() -> None:
    """A client that cannot know (here: one that publishes the input itself, as a NATS
    client would) is refused by the node, with the reason, at its next flush."""
    seen: list[meshgate.ServerError] = []
    with trio.fail_after(10):
        async with meshgate.open_gateway(node()) as gw:
            assert gw.client_url is not None
            async with meshgate.connect(gw.client_url, on_error=seen.append) as pilot:
                await pilot.publish("$IN.ship1", msgpack.packb((0, b"thrust")))
                with pytest.raises(meshgate.PermissionDeniedError) as refused:
                    await pilot.flush()
                await pilot.flush()  # raised once; the connection stays
                assert not pilot.is_closed
    assert refused.value.code == ErrorCode.PERMISSION_DENIED
    assert "$IN.ship1" in refused.value.reason
    assert "replicants=True" in refused.value.reason
    assert seen == [refused.value]
    assert list(pilot.errors) == [refused.value]


async def test_a_relay_subject_that_is_not_speculative_is_refused_and_counted() -> None:
    """The input still reaches its owner; the relay does not happen; the client is told
    and the node counts it (``GameInfo.relays_refused``, ``/varz``)."""
    owner = InMemoryReplicant("west", Grid(100.0), {"ship1": (5.0, 5.0)})
    cfg = node(replicants=True, speculative=("cell.>",), monitor_listen="127.0.0.1:0")
    with trio.fail_after(20):
        async with meshgate.open_gateway(cfg) as gw:
            assert gw.client_url is not None
            assert gw.monitor_url is not None
            gw.attach_replicant(owner)
            await owner.wait_ready()
            async with (
                meshgate.connect(gw.client_url) as watcher,
                watcher.subscribe("chat.>") as chat,
                meshgate.connect(gw.client_url) as pilot,
            ):
                await watcher.flush()
                await pilot.send_input("ship1", 0, b"+", relay="chat.ship1")
                with pytest.raises(meshgate.PermissionDeniedError, match="speculative"):
                    await pilot.flush()
                await pilot.send_input("ship1", 1, b"+")  # the game goes on
                await pilot.flush()
                async with gw.connect_local() as probe:
                    while len(owner.log.get("ship1", [])) < 2:
                        await probe.flush()
                        await trio.testing.wait_all_tasks_blocked()
                await watcher.flush()
                with pytest.raises(trio.WouldBlock):
                    chat.receive_nowait()  # nothing was relayed
            game = gw.game()
            assert game is not None
            assert game.relays_refused == 1
            status, body = await get(gw.monitor_url, "/varz")
            assert status == 200
            assert json.loads(body)["relays_refused"] == 1
    assert [seq for _, seq in owner.log["ship1"]] == [0, 1]


async def test_a_refused_subscription_raises_instead_of_waiting_forever() -> None:
    with trio.fail_after(10):
        async with meshgate.open_gateway(node(replicants=True)) as gw:
            assert gw.client_url is not None
            async with meshgate.connect(gw.client_url) as spy:
                async with spy.subscribe("$AUTH.>") as claims:
                    with pytest.raises(meshgate.PermissionDeniedError) as at_flush:
                        await spy.flush()
                    with pytest.raises(meshgate.PermissionDeniedError) as at_receive:
                        await claims.receive()
                    with pytest.raises(meshgate.PermissionDeniedError):
                        async for _ in claims:
                            pass
                assert at_flush.value.sid == claims.sid
                assert at_receive.value is at_flush.value
                assert claims.error is at_flush.value
                assert "$AUTH.>" in at_flush.value.reason
                async with spy.subscribe("ship.*.pos") as fine:  # the client carries on
                    await spy.flush()
                    await spy.publish("ship.1.pos", b"here")
                    assert (await fine.receive()).payload == b"here"


async def test_a_denied_publish_raises_at_the_next_flush_and_reaches_on_error() -> None:
    user = User(token="pilot-token-0123", publish=Permissions(allow=("ship.>",)))
    seen: list[meshgate.ServerError] = []
    with trio.fail_after(10):
        async with meshgate.open_gateway(node(users=(user,))) as gw:
            assert gw.client_url is not None
            async with meshgate.connect(
                gw.client_url, token=user.token, on_error=seen.append
            ) as pilot:
                await pilot.publish("admin.kick", b"x")
                await pilot.publish("ship.1.pos", b"ok")
                with pytest.raises(meshgate.PermissionDeniedError) as denied:
                    await pilot.flush()
                assert denied.value.sid is None
                assert "admin.kick" in denied.value.reason
                assert seen == [denied.value]
                # a flush cancelled before its answer does not swallow a refusal
                await pilot.publish("admin.ban", b"x")
                with trio.CancelScope() as scope:
                    scope.cancel()
                    await pilot.flush()
                with pytest.raises(meshgate.PermissionDeniedError, match=r"admin\.ban"):
                    await pilot.flush()
                await pilot.flush()


def test_the_protocol_forgets_a_refused_subscription() -> None:
    """An ERROR naming a sid ends that subscription: a resume does not send it again."""
    enc = Encoder()
    p = ClientProtocol(name="c")
    p.connection_made(0.0)
    p.data_to_send()
    hello = Hello(version=PROTOCOL_VERSION, role="node", name="n1", features=("game",))
    p.receive_data(enc.encode(hello) + enc.encode(Pong()))
    kept, refused = p.subscribe("ship.>"), p.subscribe("$AUTH.>")
    p.data_to_send()
    reason = "subscribe to '$AUTH.>' denied: reserved subject"
    (event,) = p.receive_data(enc.encode(Error(int(ErrorCode.PERMISSION_DENIED), reason, refused)))
    assert isinstance(event, ServerErrorReceived)
    assert not event.fatal
    assert isinstance(event.error, meshgate.PermissionDeniedError)
    assert event.error.sid == refused
    assert p.subscriptions == {kept: ("ship.>", None)}
    p.connection_lost()
    p.connection_made(1.0)
    dec = Decoder()
    dec.feed(p.data_to_send())
    assert [f for f in dec if isinstance(f, Subscribe)] == [Subscribe(kept, "ship.>")]


async def test_a_malformed_input_raises_at_the_next_flush_and_the_connection_stays() -> None:
    """The game layer refuses an input it cannot read with MALFORMED and keeps the
    connection: an error code that usually ends one, so the flush that proves the
    connection survived raises it."""
    with trio.fail_after(10):
        async with meshgate.open_gateway(node(replicants=True)) as gw:
            assert gw.client_url is not None
            async with meshgate.connect(gw.client_url) as pilot:
                await pilot.publish("$IN.ship1", b"not msgpack [seq, data]")
                with pytest.raises(meshgate.ServerError) as refused:
                    await pilot.flush()
                assert refused.value.code == ErrorCode.MALFORMED
                await pilot.flush()
                assert not pilot.is_closed


class Gated(trio.abc.Stream):
    """A stream whose reader can be held (a client that stops reading for a while)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.gate = trio.Event()
        self.gate.set()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        await self.gate.wait()
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_resync_notice_is_not_a_refusal() -> None:
    """A client that fell behind is told (RESYNC, in ``errors``), but nothing it sent
    was refused: its flush does not raise."""
    limit = 64 * 1024
    cfg = meshgate.GatewayConfig(
        listen="memory://",
        slow_consumer_policy="coalesce",
        max_pending_bytes=limit,
        max_payload=1024,
    )
    with trio.fail_after(20):
        async with meshgate.open_gateway(cfg) as gw:
            assert gw.client_url is not None
            async with (
                connect_stream(gw.client_url) as stream,
                connect_with_stream(gated := Gated(stream)) as slow,
                meshgate.connect(gw.client_url) as pub,
            ):
                await slow.add_subscription("ev.>")
                await slow.flush()
                gated.gate = trio.Event()  # the slow client stops reading
                for _ in range(4 * limit // 1000):  # past what one read takes, and the lane
                    await pub.publish("ev.boom", b"e" * 1000)
                await pub.flush()
                await trio.testing.wait_all_tasks_blocked()
                gated.gate.set()
                await slow.flush()  # does not raise
                assert slow.resyncs == 1
                assert [e.code for e in slow.errors] == [ErrorCode.RESYNC]
