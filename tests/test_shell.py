"""The shell's conventions: uptime, exceptions out of our context managers, snapshots."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import meshgate
from meshgate.replicant import connect_replicant
from meshgate.spatial import AreaOfInterest, Grid


class Boom(Exception):
    pass


def config(**kw: object) -> meshgate.GatewayConfig:
    fields: dict[str, object] = {"listen": "memory://", **kw}
    return meshgate.GatewayConfig(**fields)  # type: ignore[arg-type]


async def test_uptime_grows_and_start_stays(autojump_clock: trio.testing.MockClock) -> None:
    async with meshgate.open_gateway(config()) as gw:
        first = gw.varz()
        assert first.uptime_seconds < 1
        async with meshgate.connect(gw.client_url) as c:  # type: ignore[arg-type]
            for _ in range(3):
                await c.publish("x", b"")
                await c.flush()
                await trio.sleep(50)
        later = gw.varz()
        assert later.uptime_seconds >= 150
        assert later.start == first.start


async def test_exception_in_open_gateway_body_comes_out_as_itself() -> None:
    with trio.fail_after(10), pytest.raises(Boom):
        async with meshgate.open_gateway(config()):
            raise Boom


async def test_exception_in_connect_body_comes_out_as_itself() -> None:
    with trio.fail_after(10):
        async with meshgate.open_gateway(config(listen="127.0.0.1:0")) as gw:
            with pytest.raises(Boom):
                async with meshgate.connect(gw.client_url) as c:  # type: ignore[arg-type]
                    await c.flush()
                    raise Boom
            # the node carries on
            async with meshgate.connect(gw.client_url) as c:  # type: ignore[arg-type]
                await c.flush()


async def test_exception_in_connect_replicant_body_comes_out_as_itself() -> None:
    with trio.fail_after(10):
        token = "test-replicant-token-0123"
        async with meshgate.open_gateway(config(replicants=True, replicant_token=token)) as gw:
            assert gw.client_url
            with pytest.raises(Boom):
                async with connect_replicant(gw.client_url, "r1", token=token):
                    raise Boom


async def test_background_failure_is_not_hidden_by_unwrapping() -> None:
    """A group with more than the body's exception stays a group."""
    with trio.fail_after(10), pytest.raises(BaseExceptionGroup) as info:
        async with meshgate.open_gateway(config()) as gw:

            async def fails() -> None:
                raise KeyError("background")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(fails)
                await trio.sleep_forever()
    assert info.group_contains(KeyError)
    del gw


def test_area_of_interest_keeps_cells_until_the_exit_radius() -> None:
    aoi = AreaOfInterest(Grid(10.0), enter_radius=5.0, exit_radius=15.0)
    added, _ = aoi.move(5.0, 5.0)
    assert (0, 0) in added
    # 8 units from cell (0, 0): beyond the enter radius, within the exit radius
    _, removed = aoi.move(18.0, 5.0)
    assert (0, 0) in aoi.cells
    assert (0, 0) not in removed
    _, removed = aoi.move(26.0, 5.0)  # 16 units away: beyond the exit radius
    assert (0, 0) in removed


async def test_snapshots_describe_a_running_node() -> None:
    with trio.fail_after(10):
        async with meshgate.open_gateway(config(replicants=True)) as gw:
            assert gw.client_url
            async with (
                meshgate.connect(gw.client_url, name="c1") as c,
                c.subscribe("a.>"),
            ):
                await c.send_input("ship1", 0, b"thrust")
                await c.flush()
                (conn,) = gw.connz()
                assert (conn.name, conn.kind, conn.subscriptions) == ("c1", "client", 1)
                (acct,) = [a for a in gw.accountz() if a.name == "$G"]
                assert (acct.name, acct.clients, acct.subscriptions) == ("$G", 1, 1)
                game = gw.game()
                assert game is not None
                (entity,) = game.entities
                assert (entity.entity, entity.owner, entity.held) == ("ship1", None, 1)
                assert gw.routez() == []
                assert gw.subsz().num_subscriptions == 1
