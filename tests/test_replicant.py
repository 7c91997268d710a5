"""The game layer: replicants own entities; inputs follow authority; state follows interest."""

from __future__ import annotations

import trio
from trio.testing import wait_all_tasks_blocked

import meshgate
from meshgate.replicant import InMemoryReplicant, connect_replicant, open_replicant_link
from meshgate.spatial import Grid, interest_area

from .supercluster import supercluster

GRID = Grid(10.0)


REPLICANT_TOKEN = "test-replicant-token-0123"


def node(**kw: object) -> meshgate.GatewayConfig:
    return meshgate.GatewayConfig(
        listen="memory://", replicants=True, replicant_token=REPLICANT_TOKEN, **kw
    )  # type: ignore[arg-type]


async def test_inputs_reach_the_owner_and_state_reaches_only_wanted_cells() -> None:
    with trio.fail_after(20):
        async with meshgate.open_gateway(node()) as gw:
            rep = InMemoryReplicant("r1", GRID, {"ship1": (5, 5), "ship2": (55, 55)})
            gw.attach_replicant(rep)
            await rep.wait_ready()
            async with gw.connect_local(name="player") as player:
                async with player.subscribe(GRID.pattern((0, 0))) as near:
                    await wait_all_tasks_blocked()
                    assert rep.link is not None
                    assert rep.link.interest == {"cell.0.0.>"}  # learned as a delta
                    for seq in range(5):
                        await player.send_input("ship1", seq, bytes([seq]))
                        await player.send_input("ship2", seq, bytes([seq]))
                    await wait_all_tasks_blocked()
                    assert rep.log["ship1"] == [(rep.log["ship1"][0][0], s) for s in range(5)]
                    assert [s for _, s in rep.log["ship2"]] == list(range(5))
                    assert rep.states["ship1"] == bytes(range(5))
                    # the wanted cell's updates were published, in order; the other
                    # cell's never crossed the adapter
                    got = []
                    while True:
                        try:
                            got.append(near.receive_nowait().payload)
                        except trio.WouldBlock:
                            break
                    assert got[-1] == bytes(range(5))
                    assert rep.skipped >= 1
                    published_before = rep.published
                    # nobody wants cell (5, 5): ship2 inputs change state but publish nothing
                    await player.send_input("ship2", 5, b"x")
                    await wait_all_tasks_blocked()
                    assert rep.published == published_before
                await wait_all_tasks_blocked()
                assert rep.link.interest == frozenset()  # the removal arrived too


async def test_handovers_across_clusters_lose_and_duplicate_nothing() -> None:
    def extra(cluster: str, i: int) -> dict[str, object]:
        return {"replicants": True}

    with trio.fail_after(60):
        async with supercluster({"A": 1, "B": 1}, extra=extra) as sc:
            a, b = sc["A"][0], sc["B"][0]
            r1 = InMemoryReplicant("r1", GRID, {"ship": (5, 5)})
            r2 = InMemoryReplicant("r2", GRID)
            a.attach_replicant(r1)
            b.attach_replicant(r2)
            await r1.wait_ready()
            await r2.wait_ready()
            async with meshgate.connect(a.client_url) as pilot:  # type: ignore[arg-type]
                await wait_all_tasks_blocked()
                owners = [r1, r2]
                seq = 0
                for round_ in range(6):
                    for _ in range(20):
                        await pilot.send_input("ship", seq, b".")
                        seq += 1
                    # hand over while inputs are still in flight
                    src, dst = owners[round_ % 2], owners[(round_ + 1) % 2]
                    await src.hand_over("ship", dst)
                await wait_all_tasks_blocked()
                final = owners[6 % 2]
                assert final.epochs["ship"] == 7
                # each node saw six hand-overs (the first claim is none)
                for node in (a, b):
                    info = node.game()
                    assert info is not None
                    assert info.handovers == 6
                assert [s for _, s in final.log["ship"]] == list(range(seq))
                assert final.states["ship"] == b"." * seq


async def test_owner_loss_redelivers_unacknowledged_inputs() -> None:
    with trio.fail_after(20):
        async with meshgate.open_gateway(node()) as gw, gw.connect_local(name="player") as player:
            # a bare replicant that takes inputs and dies before acknowledging most of them
            with trio.CancelScope() as doomed:
                async with (
                    gw.connect_local(
                        name="r-doomed",
                        role=meshgate.protocol.Role.REPLICANT,
                        token=REPLICANT_TOKEN,
                    ) as c,
                    open_replicant_link(c, "r-doomed") as link,
                ):
                    await link.claim("ship", 1)
                    await wait_all_tasks_blocked()
                    for s in range(3):
                        await player.send_input("ship", s, b"i")
                    first = await link.receive_input()
                    assert (first.entity, first.epoch, first.seq) == ("ship", 1, 0)
                    await link.ack("ship", 1, {first.client: 0})  # only the first is durable
                    await wait_all_tasks_blocked()
                    doomed.cancel()
            await wait_all_tasks_blocked()  # the node noticed and told every router
            heir = InMemoryReplicant("r-heir", GRID)
            gw.attach_replicant(heir)
            await heir.wait_ready()
            await heir.own("ship", 2, b"i", {first.client: 0})  # from the durable state
            await player.send_input("ship", 3, b"i")
            await wait_all_tasks_blocked()
            assert [s for _, s in heir.log["ship"]] == [1, 2, 3]
            assert heir.states["ship"] == b"iiii"


async def test_remote_replicant_and_one_client_many_replicants() -> None:
    cfg = meshgate.GatewayConfig(
        listen="127.0.0.1:0", replicants=True, replicant_token=REPLICANT_TOKEN
    )
    with trio.fail_after(20):
        async with meshgate.open_gateway(cfg) as gw:
            assert gw.client_url
            west = InMemoryReplicant("west", GRID, {"w1": (5, 5)})
            east = InMemoryReplicant("east", GRID, {"e1": (15, 5)})
            # "east" runs as a remote adapter over TCP, as another process would
            async with (
                connect_replicant(gw.client_url, "east", token=REPLICANT_TOKEN) as link,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(east.run, link)
                gw.attach_replicant(west)
                await west.wait_ready()
                await east.wait_ready()
                async with (
                    meshgate.connect(gw.client_url) as player,
                    interest_area(player, GRID, 9, 11) as area,
                ):
                    await area.move(10, 5)  # between both replicants' cells
                    assert area.cells >= {(0, 0), (1, 0)}
                    await player.flush()
                    # interest reaches the remote replicant over TCP: wait for the delta
                    assert east.link is not None
                    assert west.link is not None
                    while not east.link.wants("cell.1.0.e1"):
                        await east.link.interest_change()
                    while not west.link.wants("cell.0.0.w1"):
                        await west.link.interest_change()
                    await player.send_input("w1", 0, b"W")
                    await player.send_input("e1", 0, b"E")
                    seen = {(await area.receive()).payload for _ in range(2)}
                    assert seen == {b"W", b"E"}  # one merged stream from two replicants
                nursery.cancel_scope.cancel()


async def test_hand_over_between_a_local_and_a_remote_replicant() -> None:
    cfg = meshgate.GatewayConfig(
        listen="127.0.0.1:0", replicants=True, replicant_token=REPLICANT_TOKEN
    )
    with trio.fail_after(20):
        async with meshgate.open_gateway(cfg) as gw:
            assert gw.client_url
            local = InMemoryReplicant("local", GRID, {"ship": (5, 5)})
            remote = InMemoryReplicant("remote", GRID)
            async with (
                connect_replicant(gw.client_url, "remote", token=REPLICANT_TOKEN) as link,
                trio.open_nursery() as nursery,
                meshgate.connect(gw.client_url) as player,
            ):
                nursery.start_soon(remote.run, link)
                gw.attach_replicant(local)
                await local.wait_ready()
                await remote.wait_ready()
                for seq in range(3):
                    await player.send_input("ship", seq, b"a")
                await player.flush()
                while len(local.log.get("ship", [])) < 3:
                    await player.flush()
                await local.hand_over("ship", remote)  # to the replicant over TCP
                for seq in range(3, 6):
                    await player.send_input("ship", seq, b"b")
                await player.flush()
                while len(remote.log.get("ship", [])) < 6:
                    await player.flush()
                    await link.client.flush()
                assert [s for _, s in remote.log["ship"]] == list(range(6))
                assert remote.states["ship"] == b"aaabbb"
                nursery.cancel_scope.cancel()
