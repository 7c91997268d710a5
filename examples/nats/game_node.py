"""A game node for plain NATS clients: ``python examples/nats/game_node.py``.

It serves the NATS protocol on 127.0.0.1:4222 (or the port given as the first
argument; 0 picks a free one), runs the game layer with speculative relay on ``cell.>``,
and owns one entity, ``ship``, through an in-process replicant that rejects the move
``"bad"`` (the owner corrects it to ``"fixed"``).  It prints its NATS URL on one line,
then serves until interrupted.  ``game_client.cjs`` beside it plays against it.
"""

from __future__ import annotations

import sys

import trio

import meshgate
from meshgate.replicant import InMemoryReplicant
from meshgate.spatial import Grid


def validate(state: bytes, move: bytes) -> bytes | None:
    """The owner's verdict on a provisional move: None keeps it, bytes replace it."""
    return b"fixed" if move == b"bad" else None


async def main(port: int) -> None:
    config = meshgate.GatewayConfig(
        name="game",
        listen="127.0.0.1:0",
        nats_listen=f"127.0.0.1:{port}",
        replicants=True,
        speculative=("cell.>",),
    )
    async with meshgate.open_gateway(config) as gw:
        owner = InMemoryReplicant("owner", Grid(10.0), {"ship": (5.0, 5.0)}, validate=validate)
        gw.attach_replicant(owner)
        await owner.wait_ready()
        print(gw.nats_urls[0].replace("tcp://", "nats://"), flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    try:
        trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 4222)
    except KeyboardInterrupt:
        pass
