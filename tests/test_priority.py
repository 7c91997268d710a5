"""Publisher priority end to end (issue 21, part 2): over TCP with the real client, a
budgeted client gets a high-priority key more often than a low one; the priority
survives a gateway hop and a route hop; an ungranted publisher's priority is ignored;
the replicant link carries it; the client library refuses bad values locally."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import meshgate
from meshgate import User
from meshgate.monitor import render_metrics
from meshgate.replicant import connect_replicant

from .supercluster import supercluster

PUB_TOKEN = "publisher-token-1"
PLAYER_TOKEN = "player-token-01"
ANON_TOKEN = "nobody-token-01"
#: one 100-byte value per 50 ms tick: the budget carries one of the two keys per tick
BUDGET = 2_400
USERS = (
    User(token=PUB_TOKEN, name="world", max_priority=8.0),
    User(token=PLAYER_TOKEN, name="player", client_bandwidth=BUDGET),
    User(token=ANON_TOKEN, name="nobody"),
)


async def _race(
    publisher: meshgate.Client,
    players: list[meshgate.Client],
    hi: float | None,
    *,
    ticks: int = 60,
) -> list[dict[str, int]]:
    """``hi`` and ``lo`` each get a new value five times per send tick for ``ticks``
    ticks; how many values of each every player received."""
    counts: list[dict[str, int]] = [{"hi": 0, "lo": 0} for _ in players]
    subs = []
    async with trio.open_nursery() as nursery:
        for i, p in enumerate(players):
            sub = await p.add_subscription("cell.>", max_buffered=100_000)
            subs.append(sub)

            async def read(sub: Any = sub, got: dict[str, int] = counts[i]) -> None:
                async for m in sub:
                    got[m.subject.rsplit(".", 1)[1]] += 1

            nursery.start_soon(read)
        for p in players:
            await p.flush()
        await publisher.flush()
        for step in range(ticks * 5):
            payload = b"x" * 80 + step.to_bytes(4, "big")
            await publisher.publish("cell.0.0.hi", payload, key="hi", priority=hi)
            await publisher.publish("cell.0.0.lo", payload, key="lo")
            await trio.sleep(0.01)
        await trio.sleep(1.0)  # what is pending drains
        nursery.cancel_scope.cancel()
    return counts


@asynccontextmanager
async def _node_with_player(
    token: str,
) -> AsyncIterator[tuple[meshgate.Gateway, meshgate.Client, meshgate.Client]]:
    """A node over TCP, a publisher with ``token`` and a player with a budget."""
    cfg = meshgate.GatewayConfig(
        listen="tcp://127.0.0.1:0", users=USERS, send_interval=0.05, trusted_network=True
    )
    async with (
        meshgate.open_gateway(cfg) as gw,
        meshgate.connect(gw.client_url, token=token, name="publisher") as publisher,
        meshgate.connect(gw.client_url, token=PLAYER_TOKEN, name="player") as player,
    ):
        yield gw, publisher, player


async def test_high_priority_key_sent_more_often_over_tcp(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(120):
        async with _node_with_player(PUB_TOKEN) as (gw, world, player):
            (got,) = await _race(world, [player], 4.0)
            assert got["lo"] > 0, got  # nothing starves
            assert got["hi"] >= 2.5 * got["lo"], got
            st = gw.statistics()
            assert st.priority_honoured == 300
            assert st.priority_ignored == 0
            (line,) = [
                x
                for x in render_metrics(gw).splitlines()
                if x.startswith("meshgate_priority_honoured_total")
            ]
            assert float(line.rsplit(" ", 1)[1]) == 300


async def test_ungranted_priority_is_ignored_over_tcp(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(120):
        async with _node_with_player(ANON_TOKEN) as (gw, nobody, player):
            (got,) = await _race(nobody, [player], 16.0, ticks=40)
            assert 0.7 <= got["hi"] / got["lo"] <= 1.4, got
            assert gw.statistics().priority_ignored == 200
            await nobody.flush()  # ignored, not refused: the connection carries on


async def test_priority_survives_a_gateway_and_a_route_hop(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Publisher on cluster A; a budgeted player on each node of cluster B: the copy to
    B crosses a gateway to one B node and a route to the other, and both players get
    the high key more often."""
    extra = {"users": USERS, "send_interval": 0.05, "trusted_network": True}
    with trio.fail_after(180):
        async with supercluster({"A": 1, "B": 2}, scheme="tcp", extra=lambda c, i: extra) as sc:
            a0 = sc["A"][0]
            b0, b1 = sc["B"]
            async with (
                meshgate.connect(a0.client_url, token=PUB_TOKEN, name="world") as world,
                meshgate.connect(b0.client_url, token=PLAYER_TOKEN, name="p0") as p0,
                meshgate.connect(b1.client_url, token=PLAYER_TOKEN, name="p1") as p1,
            ):
                counts = await _race(world, [p0, p1], 4.0)
                for got in counts:
                    assert got["lo"] > 0, counts
                    assert got["hi"] >= 2.5 * got["lo"], counts
                # one B node got the copy over the gateway and relayed it on a route
                relayed = [g.statistics() for g in (b0, b1)]
                assert all(s.scheduled_clients == 1 for s in relayed)


async def test_replicant_link_carries_priority() -> None:
    """A replicant's credential grants priorities like any user's: honoured with
    ``max_priority``, ignored (counted) without."""
    users = (
        *USERS,
        User(token="replicant-token-1", replicant=True, max_priority=4.0),
        User(token="replicant-token-2", replicant=True),
    )
    cfg = meshgate.GatewayConfig(listen="memory://", users=users, replicants=True)
    with trio.fail_after(30):
        async with (
            meshgate.open_gateway(cfg) as gw,
            meshgate.connect(gw.client_url, token=PLAYER_TOKEN) as player,
            connect_replicant(gw.client_url, "r1", token="replicant-token-1") as granted,
            connect_replicant(gw.client_url, "r2", token="replicant-token-2") as ungranted,
        ):
            async with player.subscribe("cell.>") as sub:
                await player.flush()
                await granted.publish("cell.0.0.e", b"s", key="e", priority=2.0)
                await granted.client.flush()
                await ungranted.publish("cell.0.0.f", b"t", key="f", priority=2.0)
                await ungranted.client.flush()
                assert (await sub.receive()).payload == b"s"
                assert (await sub.receive()).payload == b"t"
            st = gw.statistics()
            assert (st.priority_honoured, st.priority_ignored) == (1, 1)


@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf, 16.01, "high", True])
async def test_client_refuses_bad_priority_locally(value: Any) -> None:
    cfg = meshgate.GatewayConfig(listen="memory://")
    with trio.fail_after(30):
        async with (
            meshgate.open_gateway(cfg) as gw,
            meshgate.connect(gw.client_url) as c,
        ):
            with pytest.raises(ValueError, match="priority"):
                await c.publish("a.b", b"", key="k", priority=value)
            await c.flush()  # nothing was sent; the connection is fine
