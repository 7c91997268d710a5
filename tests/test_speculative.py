"""Speculative relay: provisional at once, then the owner's confirm or correction reaches
exactly the clients that got the provisional update, the sender included."""

from __future__ import annotations

from contextlib import AsyncExitStack

import trio
from trio.testing import wait_all_tasks_blocked

import meshgate
from meshgate.monitor import render_metrics
from meshgate.replicant import InMemoryReplicant
from meshgate.spatial import Grid

from .helpers import drain
from .supercluster import supercluster

GRID = Grid(10.0)


def kinds(msgs: list[meshgate.Message]) -> list[tuple[str, bytes]]:
    """(marker, payload) for the speculation traffic, ignoring plain state updates."""
    return [
        (m.reply.split(".", 1)[0], m.payload)
        for m in msgs
        if m.reply is not None and m.reply[:5] in ("$PROV", "$CONF", "$CORR")
    ]


def validate(state: bytes, data: bytes) -> bytes | None:
    return b"fixed" if data == b"bad" else None


async def test_full_loop_within_a_cluster_and_across_clusters() -> None:
    def extra(cluster: str, i: int) -> dict[str, object]:
        return {"replicants": True, "speculative": ("cell.>",)}

    with trio.fail_after(30):
        async with supercluster({"A": 2, "B": 1}, extra=extra) as sc, AsyncExitStack() as stack:
            a0, a1 = sc["A"]
            (b0,) = sc["B"]
            owner = InMemoryReplicant("owner", GRID, {"ship": (5, 5)}, validate=validate)
            b0.attach_replicant(owner)  # the owner lives in the other cluster
            await owner.wait_ready()

            async def client(gw: meshgate.Gateway) -> meshgate.Client:
                return await stack.enter_async_context(meshgate.connect(gw.client_url))  # type: ignore[arg-type]

            sender = await client(a0)
            near_a1 = await client(a1)
            near_b0 = await client(b0)
            far = await client(a0)
            sender_sub = await stack.enter_async_context(sender.subscribe("cell.0.0.>"))
            seen_a1 = await stack.enter_async_context(near_a1.subscribe("cell.0.0.>"))
            seen_b0 = await stack.enter_async_context(near_b0.subscribe("cell.0.0.>"))
            elsewhere = await stack.enter_async_context(far.subscribe("cell.9.9.>"))
            await wait_all_tasks_blocked()

            await sender.send_input("ship", 0, b"good", relay="cell.0.0.ship")
            await sender.send_input("ship", 1, b"bad", relay="cell.0.0.ship")
            await wait_all_tasks_blocked()
            # a client that subscribes after the provisional updates were relayed
            late = await stack.enter_async_context(near_a1.subscribe("cell.0.0.>"))
            await sender.send_input("ship", 2, b"plain")  # not speculative
            await wait_all_tasks_blocked()

            expected = [
                ("$PROV", b"good"),
                ("$PROV", b"bad"),
                ("$CONF", b""),
                ("$CORR", b"fixed"),
            ]
            for sub in (seen_a1, seen_b0, sender_sub):
                got = kinds(drain(sub))
                # provisional first (in order); the answers follow, each exactly once
                assert sorted(got) == sorted(expected), got
                assert got.index(("$PROV", b"good")) < got.index(("$CONF", b""))
                assert got.index(("$PROV", b"bad")) < got.index(("$CORR", b"fixed"))
            assert kinds(drain(late)) == []  # it never got the provisional update
            assert drain(elsewhere) == []
            # the sender is told through its own channel too
            answers = {(await sender.receive_correction()).reply for _ in range(2)}
            assert {r.split(".", 1)[0] for r in answers} == {"$CONF", "$CORR"}
            assert owner.states["ship"] == b"goodbadplain"  # the owner applied everything
            # counted: a1's clients got both provisional updates, then one verdict each
            game = a1.game()
            assert game is not None
            assert (game.confirmed, game.corrected) == (1, 1)
            waited = sum(n for _, n in game.relay_latency_buckets) + game.relay_latency_beyond
            assert waited == 2
            assert game.relay_latency_sum >= 0.0
            text = render_metrics(a1)
            assert "meshgate_game_relay_latency_seconds_count{" in text
            count = next(
                line
                for line in text.splitlines()
                if line.startswith("meshgate_game_relay_latency_seconds_count{")
            )
            assert float(count.rpartition(" ")[2]) == 2
            assert "meshgate_game_corrected_total{" in text
            # each node counts the verdicts on the provisional updates it delivered
            for gw in (a0, a1, b0):
                info = gw.game()
                assert info is not None
                assert (info.confirmed, info.corrected) == (1, 1), gw.config.name
                assert info.relay_latency_sum > 0  # the owner answered later
