"""A game client that restarts presents its session key again (``connect(session=)``
or the NATS ``Meshgate-Session`` header) and stays the same client: its retried
inputs are applied once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import trio

import meshgate
from meshgate.replicant import InMemoryReplicant
from meshgate.spatial import Grid

KEY = "pilot-7-session-key-0123456789"


def game_node(**kw: Any) -> meshgate.GatewayConfig:
    return meshgate.GatewayConfig(listen="127.0.0.1:0", replicants=True, **kw)


async def applied(owner: InMemoryReplicant, client_seq: int, gw: meshgate.Gateway) -> None:
    """Wait until the owner applied some client's input ``client_seq`` (each client's
    inputs are applied in order, so all its earlier ones are applied too)."""
    async with gw.connect_local() as probe:
        while not any(seq == client_seq for _, seq in owner.log.get("ship1", [])):
            await probe.flush()  # a round trip through the node: the owner had its turn
            await trio.testing.wait_all_tasks_blocked()


async def test_a_restarted_client_with_its_session_key_has_each_input_applied_once() -> None:
    owner = InMemoryReplicant("west", Grid(100.0), {"ship1": (5.0, 5.0)})
    with trio.fail_after(20):
        async with meshgate.open_gateway(game_node()) as gw:
            assert gw.client_url is not None
            gw.attach_replicant(owner)
            await owner.wait_ready()
            with trio.CancelScope() as crash:
                async with meshgate.connect(gw.client_url, session=KEY) as first:
                    assert first.session == KEY
                    for seq in range(5):
                        await first.send_input("ship1", seq, b"+")
                    await first.flush()
                    await applied(owner, 4, gw)
                    crash.cancel()  # the game client dies without a goodbye
                    await trio.sleep_forever()
            # the restarted client does not know what arrived: it sends everything again
            async with meshgate.connect(gw.client_url, session=KEY) as second:
                for seq in range(10):
                    await second.send_input("ship1", seq, b"+")
                await second.flush()
                await applied(owner, 9, gw)
    (identity,) = {client for client, _ in owner.log["ship1"]}
    assert identity.startswith("s-")  # derived from the key, never the key itself
    assert KEY not in identity
    assert [seq for _, seq in owner.log["ship1"]] == list(range(10))


async def test_the_session_key_is_the_same_client_on_the_nats_port() -> None:
    """A NATS client's ``Meshgate-Session`` header and ``connect(session=)`` name the
    same client: a game can move between the two ports without inputs applied twice."""
    nats = pytest.importorskip("nats", reason="nats-py is not installed")

    async def nats_pilot(url: str) -> None:
        nc = await nats.connect(url)
        for seq in range(3):
            headers = {"Meshgate-Seq": str(seq), "Meshgate-Session": KEY}
            await nc.publish("$IN.ship1", b"+", headers=headers)
        await nc.flush()
        await nc.close()

    owner = InMemoryReplicant("west", Grid(100.0), {"ship1": (5.0, 5.0)})
    with trio.fail_after(30):
        async with meshgate.open_gateway(game_node(nats_listen=("127.0.0.1:0",))) as gw:
            assert gw.client_url is not None
            gw.attach_replicant(owner)
            await owner.wait_ready()
            url = gw.nats_urls[0].replace("tcp://", "nats://")
            await trio.to_thread.run_sync(lambda: asyncio.run(nats_pilot(url)))
            await applied(owner, 2, gw)
            async with meshgate.connect(gw.client_url, session=KEY) as pilot:
                for seq in range(6):
                    await pilot.send_input("ship1", seq, b"+")
                await pilot.flush()
                await applied(owner, 5, gw)
    assert len({client for client, _ in owner.log["ship1"]}) == 1
    assert [seq for _, seq in owner.log["ship1"]] == list(range(6))


@pytest.mark.parametrize("key", ["short", "k" * 257, b"bytes-are-not-a-key-0123"])
async def test_a_bad_session_key_is_refused_before_connecting(key: Any) -> None:
    with pytest.raises(ValueError, match="session key"):
        async with meshgate.connect("tcp://127.0.0.1:9", session=key):
            pass  # pragma: no cover - never connects
