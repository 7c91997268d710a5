"""meshgate nodes over a nats-server super-cluster (``GatewayConfig.backbone``).

Three nats-server clusters joined by gateways; a meshgate node attached to each as a
leaf node; clients and replicants on the meshgate nodes.  One scenario script runs on
this deployment and on meshgate's own mesh (three clusters joined by meshgate
gateways), and each subscriber must see the same thing on both.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import trio

import meshgate
from meshgate.replicant import InMemoryReplicant, connect_replicant
from meshgate.spatial import Grid

from ._nats import free_port, run_nats
from .supercluster import supercluster

CLUSTERS = ("A", "B", "C")
TOKEN = "backbone-replicant-token-0123"
GRID = Grid(100.0)


@contextlib.contextmanager
def nats_supercluster() -> Iterator[dict[str, int]]:
    """One nats-server per cluster, the clusters joined by gateways; yields each
    cluster's leafnode port."""
    gw_ports = {c: free_port() for c in CLUSTERS}
    leaf_ports = {c: free_port() for c in CLUSTERS}
    with contextlib.ExitStack() as stack:
        for c in CLUSTERS:
            remotes = ", ".join(
                f"{{name: {o}, url: nats://127.0.0.1:{gw_ports[o]}}}" for o in CLUSTERS if o != c
            )
            stack.enter_context(
                run_nats(
                    # leaf nodes beside gateways need a system account; anonymous clients
                    # and leaf nodes land in APP
                    "accounts { SYS: { users: [{user: sys, password: sys-secret}] }, "
                    "APP: { users: [{user: app, password: app-secret}] } }\n"
                    "system_account: SYS\nno_auth_user: app\n"
                    f"server_name: hub{c}\n"
                    f"gateway {{ name: {c}, listen: 127.0.0.1:{gw_ports[c]}, gateways: [{remotes}] }}\n"
                    f"leafnodes {{ listen: 127.0.0.1:{leaf_ports[c]} }}\n"
                )
            )
        yield leaf_ports


def game(**extra: Any) -> dict[str, Any]:
    return {"replicants": True, "replicant_token": TOKEN, "reconnect_wait": 0.05, **extra}


@asynccontextmanager
async def backbone_nodes() -> AsyncIterator[dict[str, meshgate.Gateway]]:
    with nats_supercluster() as leaf_ports:
        async with AsyncExitStack() as stack:
            nodes = {}
            for c in CLUSTERS:
                cfg = meshgate.GatewayConfig(
                    name=f"m{c}",
                    cluster=c,
                    listen="127.0.0.1:0",
                    backbone=(f"nats://127.0.0.1:{leaf_ports[c]}",),
                    **game(),
                )
                nodes[c] = await stack.enter_async_context(meshgate.open_gateway(cfg))
            for gw in nodes.values():
                await gw.wait_backbone()
            yield nodes


@asynccontextmanager
async def own_mesh_nodes() -> AsyncIterator[dict[str, meshgate.Gateway]]:
    async with supercluster(
        dict.fromkeys(CLUSTERS, 1), scheme="tcp", extra=lambda c, i: game()
    ) as sc:
        yield {c: sc[c][0] for c in CLUSTERS}


async def until_delivered(
    pub: meshgate.Client, subs: list[meshgate.Subscription], subject: str
) -> None:
    """Probe until every subscription has a probe: interest crosses the deployment
    asynchronously, so the delivery itself is the proof; then drain the probes."""
    waiting = list(subs)
    while waiting:
        await pub.publish(subject, b"probe")
        with trio.move_on_after(0.2):
            for s in list(waiting):
                while (await s.receive()).payload != b"probe":
                    pass
                waiting.remove(s)


def drain(sub: meshgate.Subscription) -> list[bytes]:
    out = []
    while True:
        try:
            m = sub.receive_nowait()
        except trio.WouldBlock:
            return out
        if m.payload != b"probe":
            out.append(m.payload)


async def scenario(nodes: dict[str, meshgate.Gateway]) -> dict[str, Any]:
    """Plain subscriptions, queue groups (local members first), request/reply and a
    cross-cluster hand-over; returns what each subscriber and the owners saw."""
    out: dict[str, Any] = {}
    async with AsyncExitStack() as stack:

        async def client(c: str) -> meshgate.Client:
            url = nodes[c].client_url
            assert url
            return await stack.enter_async_context(meshgate.connect(url, reconnect_wait=0.05))

        pa, pb, pc = await client("A"), await client("B"), await client("C")
        sub_b = await pb.add_subscription("orders.*")
        sub_c = await pc.add_subscription("orders.>")
        await until_delivered(pa, [sub_b, sub_c], "orders.probe")
        for i in range(20):
            await pa.publish(f"orders.{i}", str(i).encode())
        # queue group "workers": one member on A, two on B
        wa = await pa.add_subscription("work", queue="workers")
        wb1 = await pb.add_subscription("work", queue="workers")
        wb2 = await pb.add_subscription("work", queue="workers")
        probe_c = await pc.add_subscription("work.ready")
        await until_delivered(pb, [probe_c], "work.ready")
        for i in range(30):
            await pa.publish("work", b"a%d" % i)  # A has a member: all served on A
        await pa.flush()
        # from C, where there is no member: served once each, by A or B
        seen: dict[str, list[bytes]] = {"a": [], "b1": [], "b2": []}
        progress = [trio.Event()]

        async def served(n: int) -> None:
            while sum(len(x) for x in seen.values()) < n:
                await progress[0].wait()

        async def collect(name: str, sub: meshgate.Subscription) -> None:
            async for m in sub:
                if m.payload != b"probe":
                    seen[name].append(m.payload)
                    progress[0].set()
                    progress[0] = trio.Event()

        async with trio.open_nursery() as nursery:
            for name, sub in (("a", wa), ("b1", wb1), ("b2", wb2)):
                nursery.start_soon(collect, name, sub)
            with trio.fail_after(10):
                await served(30)
            # the interest of a queue group crosses clusters too: probe from C until
            # served, then count only what follows
            while True:
                before = sum(len(x) for x in seen.values())
                await pc.publish("work", b"probe-c")
                with trio.move_on_after(0.2):
                    await served(before + 1)
                    break
            mark = {k: len(v) for k, v in seen.items()}
            for i in range(30):
                await pc.publish("work", b"c%d" % i)
            with trio.fail_after(10):
                await served(sum(mark.values()) + 30)
            await pa.flush()
            await pb.flush()
            nursery.cancel_scope.cancel()
        from_a = sorted(p for v in seen.values() for p in v if p.startswith(b"a"))
        from_c = sorted(p for k, v in seen.items() for p in v[mark[k] :] if p.startswith(b"c"))
        out["queue_from_a"] = (from_a, sorted(seen["a"][: len(from_a)]) == from_a)
        out["queue_from_c"] = from_c
        # request/reply across clusters
        svc = await pc.add_subscription("svc.echo")

        async def serve() -> None:
            async for m in svc:
                if m.reply:
                    await pc.publish(m.reply, m.payload.upper())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            with trio.fail_after(20):
                while True:
                    try:
                        with trio.move_on_after(0.3):
                            reply = await pa.request("svc.echo", b"hello")
                            break
                    except meshgate.NoRespondersError:
                        # the responder's interest has not reached this node through
                        # the hub yet: the node says so at once; ask again after a
                        # round trip on both sides
                        await pc.flush()
                        await pa.flush()
            out["reply"] = reply.payload
            nursery.cancel_scope.cancel()
        await pa.flush()
        await pc.flush()
        out["orders_b"] = sorted(drain(sub_b), key=int)
        out["orders_c"] = sorted(drain(sub_c), key=int)

        # the game layer: an owner on A, a pilot on C, a hand-over to a replicant on B
        owner_a = InMemoryReplicant("owner-a", GRID, {"ship": (5.0, 5.0)})
        owner_b = InMemoryReplicant("owner-b", GRID)
        nursery_cm = trio.open_nursery()
        games = await stack.enter_async_context(nursery_cm)
        for owner, c in ((owner_a, "A"), (owner_b, "B")):
            url = nodes[c].client_url
            assert url
            link = await stack.enter_async_context(connect_replicant(url, owner.name, token=TOKEN))
            games.start_soon(owner.run, link)
        await owner_a.wait_ready()
        await owner_b.wait_ready()
        pilot = await client("C")

        async def applied(owner: InMemoryReplicant, n: int) -> None:
            with trio.fail_after(20):
                while len(owner.log.get("ship", [])) < n:
                    await pilot.flush()  # a round trip through the deployment each time

        for seq in range(10):
            await pilot.send_input("ship", seq, b"+")
        await applied(owner_a, 10)
        await owner_a.hand_over("ship", owner_b)
        for seq in range(10, 20):
            await pilot.send_input("ship", seq, b"+")
        await applied(owner_b, 20)
        out["inputs"] = [s for _, s in owner_b.log["ship"]]
        out["state"] = owner_b.states["ship"]
        games.cancel_scope.cancel()
    return out


def check(out: dict[str, Any]) -> None:
    numbers = [str(i).encode() for i in range(20)]
    assert out["orders_b"] == numbers  # exactly once each
    assert out["orders_c"] == numbers
    from_a, local_first = out["queue_from_a"]
    assert from_a == sorted(b"a%d" % i for i in range(30))  # each once ...
    assert local_first  # ... all by the member on A
    assert out["queue_from_c"] == sorted(b"c%d" % i for i in range(30))  # once each
    assert out["reply"] == b"HELLO"
    assert out["inputs"] == list(range(20))  # every input once, in order, across a hand-over
    assert out["state"] == b"+" * 20


async def test_the_same_game_on_a_nats_server_backbone_and_on_meshgates_own_mesh() -> None:
    with trio.fail_after(120):
        async with backbone_nodes() as nodes:
            on_backbone = await scenario(nodes)
        async with own_mesh_nodes() as nodes:
            on_own_mesh = await scenario(nodes)
    check(on_backbone)
    check(on_own_mesh)
    assert on_backbone == on_own_mesh


async def test_accounts_stay_apart_across_the_backbone() -> None:
    """Two nodes on one nats-server; accounts X and Y on both.  X's messages reach X's
    subscribers on the other node and never Y's, on the same subject."""
    users = (
        meshgate.User("token-of-x-0123", account="X"),
        meshgate.User("token-of-y-0123", account="Y"),
    )
    leaf = free_port()
    with run_nats(f"leafnodes {{ listen: 127.0.0.1:{leaf} }}"), trio.fail_after(20):
        async with AsyncExitStack() as stack:
            nodes = []
            for name in ("n0", "n1"):
                cfg = meshgate.GatewayConfig(
                    name=name,
                    listen="127.0.0.1:0",
                    users=users,
                    backbone=(f"nats://127.0.0.1:{leaf}",),
                )
                nodes.append(await stack.enter_async_context(meshgate.open_gateway(cfg)))
            for gw in nodes:
                await gw.wait_backbone()

            async def client(gw: meshgate.Gateway, token: str) -> meshgate.Client:
                assert gw.client_url
                return await stack.enter_async_context(meshgate.connect(gw.client_url, token=token))

            x_pub = await client(nodes[0], "token-of-x-0123")
            y_pub = await client(nodes[0], "token-of-y-0123")
            x_sub = await (await client(nodes[1], "token-of-x-0123")).add_subscription("news")
            y_sub = await (await client(nodes[1], "token-of-y-0123")).add_subscription("news")
            await until_delivered(x_pub, [x_sub], "news")
            await until_delivered(y_pub, [y_sub], "news")
            await x_pub.publish("news", b"for X")
            await y_pub.publish("news", b"for Y")
            assert (await x_sub.receive()).payload == b"for X"
            assert (await y_sub.receive()).payload == b"for Y"
            await x_pub.flush()
            await y_pub.flush()
            assert drain(x_sub) == []
            assert drain(y_sub) == []
