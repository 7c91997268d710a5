"""Example game: ships in a 2-D world, served by a cluster of two gateway nodes over TCP.

* Two replicants own the world's regions: "west" (x < 20) and "east" (x >= 20).  When a
  ship crosses the border its owner hands it over to the other replicant; inputs in
  flight are held and reach the new owner in order.
* Each pilot client flies one ship: it sends movement inputs with a per-client sequence
  number, relayed *speculatively* to every client whose area of interest covers the
  ship's cell, and keeps a moving area of interest (grid cells with hysteresis).
* The owning replicant validates every move: faster than the speed limit is corrected,
  and the correction reaches exactly the clients that saw the provisional move, the
  pilot included.

Run: ``python examples/space_game.py``
"""

from __future__ import annotations

import random
import struct
from contextlib import AsyncExitStack

import trio

import meshgate
from meshgate.replicant import InMemoryReplicant
from meshgate.spatial import Grid, interest_area

GRID = Grid(10.0)
BORDER = 20.0
SPEED_LIMIT = 3.0
POS = struct.Struct("!dd")


def move(state: bytes, data: bytes) -> bytes:
    """Apply a move, clamped to the speed limit."""
    x, y = POS.unpack(state) if state else (0.0, 0.0)
    dx, dy = POS.unpack(data)
    dx = max(-SPEED_LIMIT, min(SPEED_LIMIT, dx))
    dy = max(-SPEED_LIMIT, min(SPEED_LIMIT, dy))
    return POS.pack(x + dx, y + dy)


def validate(state: bytes, data: bytes) -> bytes | None:
    """None if the pilot's predicted move stands, else the authoritative position."""
    dx, dy = POS.unpack(data)
    if abs(dx) <= SPEED_LIMIT and abs(dy) <= SPEED_LIMIT:
        return None
    return move(state, data)


def locate(entity: str, state: bytes) -> tuple[float, float]:
    return POS.unpack(state) if state else (0.0, 0.0)


async def main(ticks: int = 40, seed: int = 3) -> dict[str, int]:
    rng = random.Random(seed)
    stats = {"provisional": 0, "corrections": 0, "confirms": 0, "handovers": 0, "updates": 0}
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            base = {
                "listen": "127.0.0.1:0",
                "cluster": "game",
                "replicants": True,
                "speculative": ("cell.>",),
                "cluster_listen": "127.0.0.1:0",
            }
            n1 = await stack.enter_async_context(
                meshgate.open_gateway(meshgate.GatewayConfig(name="n1", **base))  # type: ignore[arg-type]
            )
            n2 = await stack.enter_async_context(
                meshgate.open_gateway(
                    meshgate.GatewayConfig(name="n2", routes=(n1.cluster_url,), **base)  # type: ignore[arg-type]
                )
            )
            await n1.wait_routes(1)
            # start positions and headings: two ships will cross the border
            ships = {
                "ship0": (18.0, 15.0),
                "ship1": (22.0, 25.0),
                "ship2": (5.0, 5.0),
                "ship3": (35.0, 35.0),
            }
            headings = {"ship0": 1.0, "ship1": -1.0, "ship2": 0.4, "ship3": -0.4}
            west = InMemoryReplicant("west", GRID, apply=move, validate=validate, locate=locate)
            east = InMemoryReplicant("east", GRID, apply=move, validate=validate, locate=locate)
            n1.attach_replicant(west)
            n2.attach_replicant(east)
            await west.wait_ready()
            await east.wait_ready()
            for ship, (x, y) in ships.items():
                owner = west if x < BORDER else east
                await owner.own(ship, 1, POS.pack(x, y))

            async def pilot(ship: str, node: meshgate.Gateway) -> None:
                x, y = ships[ship]
                async with (
                    meshgate.connect(node.client_url) as client,  # type: ignore[arg-type]
                    interest_area(client, GRID, 8, 12) as area,
                ):
                    await area.move(x, y)
                    heading = headings[ship]

                    async def watch() -> None:
                        async for m in area:
                            if m.reply and m.reply.startswith("$PROV."):
                                stats["provisional"] += 1
                            elif m.reply and m.reply.startswith("$CORR."):
                                stats["corrections"] += 1
                            elif m.reply and m.reply.startswith("$CONF."):
                                stats["confirms"] += 1
                            else:
                                stats["updates"] += 1

                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(watch)
                        for seq in range(ticks):
                            # now and then a pilot's client predicts an illegal jump
                            dx = 6.0 if seq % 10 == 5 else heading
                            dy = rng.uniform(-1, 1)
                            x, y = x + dx, y + dy
                            await client.send_input(
                                ship,
                                seq,
                                POS.pack(dx, dy),
                                relay=GRID.subject(GRID.cell_of(x, y), ship),
                            )
                            await area.move(x, y)
                            await trio.sleep(0.02)
                        await client.flush()
                        nursery.cancel_scope.cancel()

            async def borders() -> None:
                """Hand ships over when they cross the border between the regions."""
                while True:
                    await trio.sleep(0.05)
                    for src, dst, wrong_side in (
                        (west, east, lambda x: x >= BORDER),
                        (east, west, lambda x: x < BORDER),
                    ):
                        for ship in list(src.epochs):
                            x, _ = locate(ship, src.states[ship])
                            if wrong_side(x):
                                await src.hand_over(ship, dst)
                                stats["handovers"] += 1

            async with trio.open_nursery() as nursery:
                nursery.start_soon(borders)
                async with trio.open_nursery() as pilots:
                    for i, ship in enumerate(ships):
                        pilots.start_soon(pilot, ship, n1 if i % 2 else n2)
                nursery.cancel_scope.cancel()
            for ship in ships:
                owner = west if ship in west.epochs else east
                x, y = locate(ship, owner.states[ship])
                applied = len(owner.log[ship])
                print(
                    f"{ship}: owner={owner.name} epoch={owner.epochs[ship]} "
                    f"at ({x:6.1f}, {y:6.1f}) inputs applied={applied}/{ticks}"
                )
                assert applied == ticks, "an input was lost or duplicated"
    print(" ".join(f"{k}={v}" for k, v in stats.items()))
    assert stats["handovers"] >= 2, "ships crossing the border are handed over"
    assert stats["corrections"] >= 1, "illegal jumps are corrected"
    return stats


if __name__ == "__main__":
    trio.run(main)
