"""A node that joins after an entity was claimed learns the owner when it needs it."""

from __future__ import annotations

import trio

import meshgate
from meshgate.replicant import InMemoryReplicant
from meshgate.spatial import Grid

from .helpers import memory_node


def node(name: str, seeds: tuple[str, ...] = ()) -> meshgate.GatewayConfig:
    return memory_node(name, seeds, replicants=True)


async def test_inputs_from_a_late_node_reach_the_current_owner() -> None:
    with trio.fail_after(20):
        async with meshgate.open_gateway(node("a0")) as a0:
            owner = InMemoryReplicant("west", Grid(100.0), {"ship1": (5.0, 5.0)})
            a0.attach_replicant(owner)
            await owner.wait_ready()  # claimed before a1 exists
            async with meshgate.open_gateway(node("a1", ("memory://a0-routes",))) as a1:
                await a1.wait_routes(1)
                await a1.flush_routes()
                assert a1.client_url
                async with meshgate.connect(a1.client_url) as player:
                    for seq in range(3):
                        await player.send_input("ship1", seq, b"go")
                    await player.flush()
                    while len(owner.log.get("ship1", [])) < 3:
                        await a1.flush_routes()
                        await a0.flush_routes()
                assert [s for _, s in owner.log["ship1"]] == [0, 1, 2]
                game = a1.game()
                assert game is not None
                assert [(e.entity, e.owner, e.epoch) for e in game.entities] == [
                    ("ship1", "west", 1)
                ]
