"""meshgate.spatial: cells, hysteresis, and a client that moves its area of interest."""

from __future__ import annotations

import math

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import meshgate
from meshgate.spatial import AreaOfInterest, Grid, interest_area

coords = st.floats(-1000, 1000, allow_nan=False)


def brute_cells_within(grid: Grid, x: float, y: float, r: float) -> set[tuple[int, int]]:
    s = grid.cell_size
    out = set()
    for i in range(math.floor((x - r) / s) - 1, math.floor((x + r) / s) + 2):
        for j in range(math.floor((y - r) / s) - 1, math.floor((y + r) / s) + 2):
            nx = min(max(x, i * s), (i + 1) * s)
            ny = min(max(y, j * s), (j + 1) * s)
            if math.hypot(nx - x, ny - y) <= r:
                out.add((i, j))
    return out


def test_subjects_and_cells() -> None:
    g = Grid(10.0)
    assert g.cell_of(5, 5) == (0, 0)
    assert g.cell_of(-0.1, 25) == (-1, 2)
    assert g.subject((3, -2), "ship", "42") == "cell.3.-2.ship.42"
    assert g.pattern((3, -2)) == "cell.3.-2.>"
    assert meshgate.subjects.is_valid_subject(g.subject((-1, -1), "x"))
    assert g.cells_within(5, 5, 0) == {(0, 0)}
    assert g.cells_within(9, 5, 2) == {(0, 0), (1, 0)}
    with pytest.raises(ValueError, match="cell_size"):
        Grid(0)
    with pytest.raises(ValueError, match="enter_radius"):
        AreaOfInterest(g, 5, 4)


@given(coords, coords, st.floats(0, 60))
def test_cells_within_matches_brute_force(x: float, y: float, r: float) -> None:
    g = Grid(7.5)
    assert g.cells_within(x, y, r) == brute_cells_within(g, x, y, r)


@given(st.lists(st.tuples(coords, coords), min_size=1, max_size=30))
def test_hysteresis_invariants(path: list[tuple[float, float]]) -> None:
    g = Grid(10.0)
    aoi = AreaOfInterest(g, enter_radius=8, exit_radius=14)
    cells: set[tuple[int, int]] = set()
    for x, y in path:
        added, removed = aoi.move(x, y)
        assert not added & removed
        cells = (cells - removed) | added
        assert cells == aoi.cells
        assert g.cells_within(x, y, 8) <= aoi.cells  # everything near is in
        assert aoi.cells <= g.cells_within(x, y, 14)  # nothing far is kept


@given(st.floats(-0.9, 0.9), st.integers(2, 50))
def test_moving_along_a_cell_edge_does_not_churn(jitter: float, steps: int) -> None:
    g = Grid(10.0)
    aoi = AreaOfInterest(g, enter_radius=3, exit_radius=5)
    aoi.move(10.0, 15.0)  # on the edge between cells (0, 1) and (1, 1)
    for k in range(steps):
        added, removed = aoi.move(10.0 + (jitter if k % 2 else -jitter), 15.0 + 0.5 * (k % 3))
        assert not added
        assert not removed
    # without hysteresis the same walk would churn
    plain = AreaOfInterest(g, enter_radius=0.0)
    changes = 0
    for k in range(steps):
        a, r = plain.move(10.0 + (0.5 if k % 2 else -0.5), 15.0)
        changes += len(a) + len(r)
    assert changes > 0


async def test_client_area_moves_and_merges() -> None:
    g = Grid(10.0)
    with trio.fail_after(10):
        async with (
            meshgate.open_gateway(meshgate.GatewayConfig(listen="memory://")) as gw,
            gw.connect_local() as world,
            gw.connect_local() as player,
            interest_area(player, g, enter_radius=2, exit_radius=4) as area,
        ):
            added, _ = await area.move(5, 5)
            assert added == {(0, 0)}
            await player.flush()
            await world.publish(g.subject((0, 0), "ship", "1"), b"near")
            await world.publish(g.subject((3, 3), "ship", "2"), b"far")
            await world.flush()
            await player.flush()
            assert (await area.receive()).payload == b"near"
            with pytest.raises(trio.WouldBlock):
                area.receive_nowait()
            added, removed = await area.move(15, 5)  # fly east one cell
            assert added == {(1, 0)}
            assert removed == {(0, 0)}
            await player.flush()
            assert gw.statistics().subscriptions == 1
            await world.publish(g.subject((0, 0), "ship", "1"), b"left behind")
            await world.publish(g.subject((1, 0), "ship", "3"), b"new cell")
            await world.flush()
            await player.flush()
            assert (await area.receive()).payload == b"new cell"
            with pytest.raises(trio.WouldBlock):
                area.receive_nowait()
            assert (area.subscribes, area.unsubscribes) == (2, 1)
        assert gw.statistics().subscriptions == 0
