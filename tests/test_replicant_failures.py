"""A replicant's failures end its link, never the node; a closed link says so."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import meshgate
from meshgate.replicant import InterestDelta, ReplicantAdapter, ReplicantLink, open_replicant_link

TOKEN = "replicant-token-0123456"


def config() -> meshgate.GatewayConfig:
    return meshgate.GatewayConfig(listen="memory://", replicants=True, replicant_token=TOKEN)


class Crashing(ReplicantAdapter):
    name = "crashy"

    def __init__(self) -> None:
        self.claimed = trio.Event()

    async def run(self, link: ReplicantLink) -> None:
        await link.claim("ship1", 1)
        await link.client.flush()
        self.claimed.set()
        await link.receive_input()
        raise RuntimeError("bug in the adapter")


async def test_an_adapter_exception_closes_its_link_not_the_node() -> None:
    with trio.fail_after(10):
        async with meshgate.open_gateway(config()) as gw:
            assert gw.client_url
            adapter = Crashing()
            handle = gw.attach_replicant(adapter)
            await adapter.claimed.wait()
            async with meshgate.connect(gw.client_url) as player:
                await player.send_input("ship1", 0, b"go")
                await handle.wait_stopped()
                assert isinstance(handle.error, RuntimeError)
                assert not handle.running
                await player.flush()  # the node carries on
                game = gw.game()
                assert game is not None
                assert [(e.entity, e.owner) for e in game.entities] == [("ship1", None)]


async def test_a_closed_link_raises_instead_of_waiting_forever() -> None:
    with trio.fail_after(10):
        async with (
            meshgate.open_gateway(config()) as gw,
            gw.connect_local(name="r1", role=meshgate.protocol.Role.REPLICANT, token=TOKEN) as c,
            open_replicant_link(c, "r1") as link,
        ):
            async with trio.open_nursery() as nursery:

                async def wait_input() -> None:
                    with pytest.raises(meshgate.ConnectionClosedError):
                        await link.receive_input()

                nursery.start_soon(wait_input)
                await trio.testing.wait_all_tasks_blocked()
                await c.aclose()
            with pytest.raises(meshgate.ConnectionClosedError):
                await link.receive_input()


async def test_interest_churn_past_the_buffer_degrades_to_a_full_resync() -> None:
    with trio.fail_after(20):
        async with (
            meshgate.open_gateway(config()) as gw,
            gw.connect_local(name="r1", role=meshgate.protocol.Role.REPLICANT, token=TOKEN) as c,
            open_replicant_link(c, "r1", max_buffered=8) as link,
            gw.connect_local() as player,
        ):
            for i in range(40):  # 40 interest changes; nobody reads them
                await player.add_subscription(f"cell.{i}.>")
            await player.flush()
            await c.flush()
            await trio.testing.wait_all_tasks_blocked()
            assert link.interest_resyncs >= 1
            deltas: list[InterestDelta] = []
            while True:
                try:
                    deltas.append(link.interest_change_nowait())
                except trio.WouldBlock:
                    break
            resets = [i for i, d in enumerate(deltas) if d.reset]
            assert resets
            wanted: set[str] = set()
            for d in deltas[resets[-1] :]:
                wanted = set(d.added) if d.reset else (wanted | d.added) - d.removed
            assert wanted == {f"cell.{i}.>" for i in range(40)}
            assert wanted == set(link.interest)


async def test_a_replicant_hears_that_another_owner_was_lost() -> None:
    with trio.fail_after(10):
        async with meshgate.open_gateway(config()) as gw:
            watcher_done = trio.Event()
            heard: list[str] = []

            class Watcher(ReplicantAdapter):
                name = "watcher"

                async def run(self, link: ReplicantLink) -> None:
                    heard.append(await link.owner_lost())
                    watcher_done.set()

            class Doomed(ReplicantAdapter):
                name = "doomed"

                async def run(self, link: ReplicantLink) -> None:
                    await link.claim("ship9", 1)
                    await link.client.flush()
                    raise RuntimeError("gone")

            gw.attach_replicant(Watcher())
            await trio.testing.wait_all_tasks_blocked()  # the watcher is listening
            doomed = gw.attach_replicant(Doomed())
            await doomed.wait_stopped()  # the crashing owner's link closed: lost
            await watcher_done.wait()
            assert heard == ["doomed"]
