"""A request nobody can receive is answered at once, as soon as the node can know it
(``NoRespondersError`` from ``Client.request``; a 503 status for NATS clients), never
by waiting until the caller's deadline; where the node cannot know, it waits."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import trio
import trio.testing

import meshgate

from .helpers import memory_node
from .supercluster import settle, supercluster


async def serve(client: meshgate.Client, subject: str, task_status: Any) -> None:
    """Answer every request on ``subject`` with ``pong``."""
    async with client.subscribe(subject) as requests:
        await client.flush()
        task_status.started()
        async for m in requests:
            assert m.reply is not None
            await client.publish(m.reply, b"pong")


async def test_a_request_to_nobody_raises_at_once() -> None:
    with trio.fail_after(10):  # a hang here is the bug: nobody answers, nothing is said
        async with meshgate.open_gateway(meshgate.GatewayConfig(listen="127.0.0.1:0")) as gw:
            assert gw.client_url is not None
            async with meshgate.connect(gw.client_url) as c, trio.open_nursery() as n:
                with pytest.raises(meshgate.NoRespondersError) as nobody:
                    await c.request("svc.nobody", b"?")
                assert nobody.value.subject == "svc.nobody"
                await n.start(serve, c, "svc.echo")
                assert (await c.request("svc.echo", b"?")).payload == b"pong"
                n.cancel_scope.cancel()


async def test_the_cluster_is_asked_through_its_routes() -> None:
    """A responder on another node of the cluster answers; with none anywhere in the
    cluster, the requester's node says so at once (it knows its routes' interest)."""
    with trio.fail_after(20):
        async with (
            meshgate.open_gateway(memory_node("nr0")) as n0,
            meshgate.open_gateway(memory_node("nr1", ("memory://nr0-routes",))) as n1,
        ):
            await n1.wait_routes(1)
            async with (
                meshgate.connect("memory://nr0-clients") as requester,
                meshgate.connect("memory://nr1-clients") as responder,
                trio.open_nursery() as n,
            ):
                await n.start(serve, responder, "svc.echo")
                await n1.flush_routes()
                await n0.flush_routes()
                assert (await requester.request("svc.echo")).payload == b"pong"
                with pytest.raises(meshgate.NoRespondersError):
                    await requester.request("svc.nobody")
                n.cancel_scope.cancel()


async def test_across_one_gateway_the_remote_cluster_answers_for_itself() -> None:
    """An optimistic gateway has not heard yet that the remote cluster has nobody: the
    request's one copy goes there, and that cluster answers no-responders back over
    the routed reply, for meshgate's and NATS clients alike."""
    nats = pytest.importorskip("nats", reason="nats-py is not installed")

    async def nats_request(url: str) -> str:
        nc = await nats.connect(url)
        try:
            await nc.request("svc.nats.nobody", b"?", timeout=20)
        except nats.errors.NoRespondersError:
            return "no responders"
        finally:
            await nc.close()
        return "answered"  # pragma: no cover - a wrong answer

    def extra(cluster: str, i: int) -> dict[str, Any]:
        return {"nats_listen": "127.0.0.1:0"}

    with trio.fail_after(30):
        async with supercluster({"A": 1, "B": 1}, scheme="tcp", extra=extra) as sc:
            a0, b0 = sc["A"][0], sc["B"][0]
            assert a0.client_url
            assert b0.client_url
            async with meshgate.connect(a0.client_url) as c:
                with pytest.raises(meshgate.NoRespondersError):
                    await c.request("svc.nobody")  # B answered it
                with pytest.raises(meshgate.NoRespondersError):
                    await c.request("svc.nobody")  # now A knows: at once
                url = a0.nats_urls[0].replace("tcp://", "nats://")
                got = await trio.to_thread.run_sync(lambda: asyncio.run(nats_request(url)))
                assert got == "no responders"
                async with meshgate.connect(b0.client_url) as r, trio.open_nursery() as n:
                    await n.start(serve, r, "svc.echo")
                    await settle([a0, b0])
                    assert (await c.request("svc.echo")).payload == b"pong"
                    n.cancel_scope.cancel()


async def test_with_several_optimistic_gateways_the_first_request_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two remote clusters that have not said they have nobody: neither can answer for
    the other, so the first request waits for the caller's deadline (the documented
    limit); their no-interest notices arrive with it, and the next request is answered
    at once."""
    async with supercluster({"A": 1, "B": 1, "C": 1}) as sc:
        a0 = sc["A"][0]
        assert a0.client_url
        async with meshgate.connect(a0.client_url) as c:
            with trio.move_on_after(5) as waited:
                await c.request("svc.nobody")
            assert waited.cancelled_caught
            await a0.flush_gateways()  # B's and C's "no interest" have arrived
            with trio.fail_after(1):
                with pytest.raises(meshgate.NoRespondersError):
                    await c.request("svc.nobody")


async def test_one_cluster_without_a_responder_never_answers_for_another() -> None:
    """Requests that go to two remote clusters, one of them with the responder: the
    other one's silence is not taken for no responders."""
    async with supercluster({"A": 1, "B": 1, "C": 1}) as sc:
        a0, c0 = sc["A"][0], sc["C"][0]
        assert a0.client_url
        assert c0.client_url
        with trio.fail_after(20):
            async with (
                meshgate.connect(a0.client_url) as c,
                meshgate.connect(c0.client_url) as r,
                trio.open_nursery() as n,
            ):
                for i in range(5):  # each subject new: every gateway is still optimistic
                    await n.start(serve, r, f"svc.{i}")
                    assert (await c.request(f"svc.{i}")).payload == b"pong"
                n.cancel_scope.cancel()
