"""The per-client scheduler through a running gateway (issue 21): the send tick runs in
the shell, ``gw.connz()`` and ``/metrics`` show the figures, TOML and per-user budgets."""

from __future__ import annotations

import tomllib

import attrs
import trio
import trio.testing

import meshgate
from meshgate.monitor import render_metrics
from meshgate.spatial import Grid, Rings


async def test_budgeted_client_through_the_shell(autojump_clock: trio.testing.MockClock) -> None:
    cfg = meshgate.GatewayConfig(listen="memory://", client_bandwidth=4_000, send_interval=0.05)
    g = Grid(10.0)
    with trio.fail_after(60):
        async with (
            meshgate.open_gateway(cfg) as gw,
            gw.connect_local(name="world") as world,
            gw.connect_local(name="player") as player,
        ):
            gw.set_relevance(Rings(g).relevance)
            sub = await player.add_subscription("cell.>", max_buffered=100_000)
            await player.flush()
            (row,) = [c for c in gw.connz() if c.name == "player"]
            assert row.budget == 4_000
            assert gw.set_focus(row.cid, 5.0, 5.0)
            got: dict[str, int] = {}

            async def read() -> None:
                async for m in sub:
                    got[m.subject] = got.get(m.subject, 0) + 1

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                for _ in range(40):  # 2 s of 20 ships at 20 Hz: 4x the budget
                    for k in range(20):
                        await world.publish(
                            g.subject((2 * k, 0), "ship", str(k)), b"p" * 40, key=f"s{k}"
                        )
                    await trio.sleep(0.05)
                await trio.sleep(1.0)
                nursery.cancel_scope.cancel()
            (row,) = [c for c in gw.connz() if c.name == "player"]
            assert 0 < row.keyed_bytes + row.reliable_bytes <= 4_000 * 3.1 + 200
            assert row.keyed_superseded > 0
            assert row.keys_pending >= 0
            assert len(got) == 20  # nobody starved
            near = got["cell.0.0.ship.0"]
            far = got["cell.38.0.ship.19"]  # 380 units away: the 1 Hz ring
            assert near > far
            assert far <= 4
            st = gw.statistics()
            assert st.scheduled_clients == 2  # both clients have the node's budget
            text = render_metrics(gw)
            assert "meshgate_scheduled_keyed_bytes_total" in text


def test_toml_and_per_user_budget() -> None:
    cfg = meshgate.GatewayConfig.from_mapping(
        tomllib.loads(
            """
client_bandwidth = 64000
send_interval = 0.1
scheduler_max_keys = 100
[[users]]
token = "token-token-1"
client_bandwidth = 8000
[[users]]
token = "token-token-2"
"""
        )
    )
    assert (cfg.client_bandwidth, cfg.send_interval, cfg.scheduler_max_keys) == (64000, 0.1, 100)
    assert cfg.bandwidth_for(cfg.users[0]) == 8000
    assert cfg.bandwidth_for(cfg.users[1]) == 64000
    assert cfg.scheduling
    assert not meshgate.GatewayConfig().scheduling


async def test_a_reload_sets_budgets_for_connected_clients(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A node started without budgets runs no send tick; a reload that sets
    ``client_bandwidth`` starts it and gives connected clients their budget, and a later
    reload changes the budget in place."""
    cfg = meshgate.GatewayConfig(listen="memory://")
    with trio.fail_after(60):
        async with (
            meshgate.open_gateway(cfg) as gw,
            gw.connect_local(name="world") as world,
            gw.connect_local(name="player") as player,
        ):
            sub = await player.add_subscription("cell.>", max_buffered=100_000)
            await player.flush()
            assert gw.statistics().scheduled_clients == 0
            restart = gw.reconfigure(attrs.evolve(cfg, client_bandwidth=2_000, send_interval=0.05))
            assert restart == []
            assert gw.statistics().scheduled_clients == 2
            (row,) = [c for c in gw.connz() if c.name == "player"]
            assert row.budget == 2_000

            async def burst() -> int:
                """Two seconds of 10 keys at 20 Hz (about 6x 2 kB/s): bytes received."""
                got = 0
                for _ in range(40):
                    for k in range(10):
                        await world.publish(f"cell.0.0.s{k}", b"p" * 40, key=f"s{k}")
                    await trio.sleep(0.05)
                    while True:
                        try:
                            got += len(sub.receive_nowait().payload)
                        except trio.WouldBlock:
                            break
                return got

            first = await burst()
            # the send tick runs and keeps the player within its budget
            assert 0 < first <= 2 * 2_000
            gw.reconfigure(attrs.evolve(cfg, client_bandwidth=8_000, send_interval=0.05))
            (row,) = [c for c in gw.connz() if c.name == "player"]
            assert row.budget == 8_000
            second = await burst()
            assert second > 2 * first
