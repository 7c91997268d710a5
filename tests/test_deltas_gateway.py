"""Deltas against acknowledged keyed state end to end (issue 21, part 4): a running
gateway with ``keyed_deltas = true`` (TOML), a publisher and a real :class:`Client` over
TCP; the subscriber receives exactly the values published, most of them as deltas."""

from __future__ import annotations

import random
import tomllib

import msgpack
import trio

import meshgate


def _state(i: int, step: int) -> bytes:
    return msgpack.packb({"id": f"ship-{i}", "x": 10.0 + step * 0.25, "y": float(i), "hp": 100})


async def test_deltas_over_tcp_with_the_real_client() -> None:
    cfg = meshgate.GatewayConfig.from_mapping(
        tomllib.loads('listen = "tcp://127.0.0.1:0"\nkeyed_deltas = true\n')
    )
    assert cfg.keyed_deltas
    with trio.fail_after(30):
        async with meshgate.open_gateway(cfg) as gw:
            assert gw.client_url
            async with (
                meshgate.connect(gw.client_url, name="world") as world,
                meshgate.connect(gw.client_url, name="player") as player,
            ):
                sub = await player.add_subscription("ships.>", max_buffered=10_000)
                await player.flush()
                published = []
                got = []
                for step in range(30):
                    for i in range(4):
                        v = _state(i, step)
                        published.append(v)
                        await world.publish(f"ships.{i}", v, key=f"s{i}")
                    await world.flush()
                    got += [(await sub.receive()).payload for _ in range(4)]
                    await player.flush()  # a round trip per step: the acks get there
                assert got == published
                st = gw.statistics()
                assert st.delta_msgs > 0
                assert st.delta_acks > 0
                assert st.delta_bytes_saved > 0
                assert st.delta_acks_ignored == 0
                (row,) = [c for c in gw.connz() if c.name == "player"]
                assert row.deltas_sent == st.delta_msgs
                assert row.delta_bytes_saved == st.delta_bytes_saved


async def test_state_deltas_cannot_shrink_is_given_up_and_shown() -> None:
    """Random state (no delta shrinks it) over TCP: the key is given up, its values go
    plain, every value arrives, and connz shows the give-up."""
    rng = random.Random(1)
    cfg = meshgate.GatewayConfig(listen="tcp://127.0.0.1:0", keyed_deltas=True)
    with trio.fail_after(30):
        async with (
            meshgate.open_gateway(cfg) as gw,
            meshgate.connect(gw.client_url, name="world") as world,
            meshgate.connect(gw.client_url, name="player") as player,
        ):
            sub = await player.add_subscription("ships.>", max_buffered=10_000)
            await player.flush()
            published = []
            got = []
            for _ in range(40):
                v = rng.randbytes(16)
                published.append(v)
                await world.publish("ships.1", v, key="s1")
                await world.flush()
                got.append((await sub.receive()).payload)
                await player.flush()
            assert got == published
            st = gw.statistics()
            assert st.delta_gave_up == 1
            assert st.delta_skipped >= 30
            assert st.delta_msgs == 0
            assert st.delta_acks_ignored == 0
            (row,) = [c for c in gw.connz() if c.name == "player"]
            assert row.delta_gave_up == 1
