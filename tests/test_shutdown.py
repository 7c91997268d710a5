"""A node's normal shutdown is orderly and quiet: attached replicants stop before the
node closes their links, and a link closed by the shutdown ends its adapter without a
traceback (the tutorial and the examples are checked end to end in test_tutorial.py
and test_examples.py)."""

from __future__ import annotations

import logging
from functools import partial

import pytest
import trio

import meshgate
from meshgate.protocol import Role
from meshgate.replicant import AttachedReplicant, InMemoryReplicant
from meshgate.spatial import Grid

from .helpers import memory_node

TOKEN = "replicant-token-0123456"


def owners(gw: meshgate.Gateway) -> dict[str, str | None]:
    game = gw.game()
    assert game is not None
    return {e.entity: e.owner for e in game.entities}


async def test_replicants_stop_before_the_node_closes_their_links(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The owner is announced lost to the rest of the cluster while the routes are up,
    and the adapter ends by being stopped, not by a failure."""
    with trio.fail_after(20):
        async with meshgate.open_gateway(memory_node("s2", replicants=True)) as s2:
            async with meshgate.open_gateway(
                memory_node("s1", ("memory://s2-routes",), replicants=True)
            ) as s1:
                await s1.wait_routes(1)
                west = InMemoryReplicant("west", Grid(100.0), {"ship1": (5.0, 5.0)})
                handle = s1.attach_replicant(west)
                await west.wait_ready()
                while owners(s2).get("ship1") != "west":  # the claim crossed the route
                    await s1.flush_routes()
            while s2.statistics().routes:
                await s2.wait_topology_change()
            assert not handle.running
            assert handle.error is None
            assert owners(s2) == {"ship1": None}  # $AUTH.lost went out before the route closed
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_link_closed_by_the_shutdown_ends_its_adapter_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An adapter the node does not stop first (here: one the node does not know of)
    sees its link closed with SHUTTING_DOWN: that ends it without an error or a
    traceback."""
    caplog.set_level(logging.INFO, "meshgate.replicant")
    cfg = meshgate.GatewayConfig(listen="memory://", replicants=True, replicant_token=TOKEN)
    west = InMemoryReplicant("west", Grid(100.0), {"ship1": (5.0, 5.0)})
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            async with meshgate.open_gateway(cfg) as gw:
                connect = partial(gw.connect_local, name="west", token=TOKEN, role=Role.REPLICANT)
                handle = AttachedReplicant(west, connect)
                nursery.start_soon(handle.run)
                await west.wait_ready()
            await handle.wait_stopped()
    assert handle.error is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "replicant west stopped: the node is shutting down" in caplog.text
