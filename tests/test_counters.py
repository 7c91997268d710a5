"""Every message counter, for a message from each kind of origin (issue 19, item 2).

A message enters a node from a meshgate client, a replicant, a NATS client (the NATS
port), a route peer, an inbound gateway, the nats-server backbone, or the node itself
(the game layer's speculative relay).  For each, the test publishes a few messages of
known sizes to several subscribers (so a counter added once too often, or per
subscriber instead of per message, shows) and checks the *change* of every counter the
public API shows -- node (``statistics()``), connection (``connz()``), account
(``accountz()``, ``account_statistics()``), route (``routez()``) and gateway
(``gatewayz()``) -- against exact values computed from the payload sizes and the
subscriber counts.  Every other counter must not move.

Wire bytes (``bytes_in``/``bytes_out``) are checked against the other end of each link
after a round trip: what a client, a NATS client, a route or a gateway peer sent is
what the node counted in, and the reverse; and a node's totals move by the sum of its
connections'.  ``/gatewayz`` follows the monitoring convention of docs/operations.md
(``in_bytes``/``out_bytes``: payload; ``*_wire_bytes``: the wire).  The backbone
connection has no view of its own: its share is what the node's totals show beyond
its other connections', and the hub's ``/leafz`` counts it from the other end.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import msgpack
import trio

import meshgate
from meshgate.client import connect_with_stream
from meshgate.protocol import Role
from meshgate.replicant import InMemoryReplicant, open_replicant_link
from meshgate.spatial import Grid
from meshgate.transports import connect_stream

from ._nats import free_port, run_nats
from .helpers import drain, timeless
from .supercluster import settle, supercluster

#: the payload sizes of the messages each scenario publishes (sum: ``PAYLOAD``)
SIZES = (0, 1, 200, 3000)
PAYLOAD = sum(SIZES)
K = len(SIZES)

#: no timer pings while a test runs (they would move the wire counters mid-check)
QUIET: dict[str, Any] = {"ping_interval": 3600.0, "interest_mode": "interest-only"}

Key = tuple[str, ...]


def payloads(tag: str) -> list[bytes]:
    """The messages of one scenario: ``SIZES`` bytes each, told apart by ``tag``."""
    return [(tag.encode() * n)[:n] for n in SIZES]


# -- what a node shows --------------------------------------------------------------------------


def counters(gw: meshgate.Gateway) -> dict[Key, int]:
    """Every message and payload counter ``gw`` shows, by (scope, name, counter).

    Connections are keyed by client name; names ``group:member`` are summed under
    ``group:*`` (which member of a queue group gets a message is not fixed)."""
    out: dict[Key, int] = {}

    def put(key: Key, value: int) -> None:
        out[key] = out.get(key, 0) + value

    st = gw.statistics()
    for f in ("messages_in", "messages_out", "payload_bytes_in", "payload_bytes_out"):
        put(("node", f), getattr(st, f))
    for c in gw.connz():
        name = c.name.split(":")[0] + ":*" if ":" in c.name else c.name
        for f in ("in_msgs", "out_msgs", "in_payload_bytes", "out_payload_bytes"):
            put(("conn", name, f), getattr(c, f))
    for a in gw.accountz():
        put(("account", a.name, "in_msgs"), a.in_msgs)
        put(("account", a.name, "out_msgs"), a.out_msgs)
        s = gw.account_statistics(a.name)
        assert (s.messages_in, s.messages_out) == (a.in_msgs, a.out_msgs), a.name
    for r in gw.routez():
        assert r.remote_name is not None
        for f in ("in_msgs", "out_msgs", "in_payload_bytes", "out_payload_bytes"):
            put(("route", r.remote_name, f), getattr(r, f))
    # /gatewayz is the JSON body itself: ``in_bytes``/``out_bytes`` are payload bytes there,
    # as on every monitoring path (docs/operations.md), the wire is ``*_wire_bytes``
    gz = gw.gatewayz()
    conns = [("gateway-out", c, o["connection"]) for c, o in gz["outbound_gateways"].items()]
    conns += [
        ("gateway-in", row["connection"]["name"], row["connection"])
        for rows in gz["inbound_gateways"].values()
        for row in rows
    ]
    for scope, name, conn in conns:
        for f, field in GATEWAY_FIELDS:
            put((scope, name, f), conn[field])
    return out


#: (our name, /gatewayz connection field) of the gateway message and payload counters
GATEWAY_FIELDS = (
    ("in_msgs", "in_msgs"),
    ("out_msgs", "out_msgs"),
    ("in_payload_bytes", "in_bytes"),
    ("out_payload_bytes", "out_bytes"),
)
#: the /gatewayz connection fields of the wire bytes in and out
GATEWAY_WIRE = ("in_wire_bytes", "out_wire_bytes")


def delta(before: dict[Key, int], after: dict[Key, int]) -> dict[Key, int]:
    """What changed (keys that moved only)."""
    keys = set(before) | set(after)
    moved = {k: after.get(k, 0) - before.get(k, 0) for k in keys}
    return {k: v for k, v in sorted(moved.items()) if v}


def flow(
    *,
    node: tuple[int, int, int, int] = (0, 0, 0, 0),
    conns: Iterable[tuple[str, int, int, int, int]] = (),
    accounts: Iterable[tuple[str, int, int]] = (),
    routes: Iterable[tuple[str, int, int, int, int]] = (),
    gateways_out: Iterable[tuple[str, int, int, int, int]] = (),
    gateways_in: Iterable[tuple[str, int, int, int, int]] = (),
) -> dict[Key, int]:
    """The expected change, in the shape of :func:`delta`: ``node`` is (messages in,
    messages out, payload in, payload out); connections, routes and gateways (name, in
    msgs, out msgs, in payload, out payload; an outbound gateway by its cluster, an
    inbound one by its node); accounts (name, in msgs, out msgs)."""
    out: dict[Key, int] = {}
    for f, v in zip(
        ("messages_in", "messages_out", "payload_bytes_in", "payload_bytes_out"), node, strict=True
    ):
        out[("node", f)] = v
    for scope, rows in (
        ("conn", conns),
        ("route", routes),
        ("gateway-out", gateways_out),
        ("gateway-in", gateways_in),
    ):
        for name, *vals in rows:
            for f, v in zip(
                ("in_msgs", "out_msgs", "in_payload_bytes", "out_payload_bytes"), vals, strict=True
            ):
                out[(scope, name, f)] = v
    for name, i, o in accounts:
        out[("account", name, "in_msgs")] = i
        out[("account", name, "out_msgs")] = o
    return {k: v for k, v in sorted(out.items()) if v}


def sums_agree(
    gw: meshgate.Gateway, change: dict[Key, int], *, hidden: tuple[int, int] = (0, 0)
) -> None:
    """The change of the node's message counters is the sum of its connections' (clients,
    routes, gateways), and of its accounts'.  ``hidden``: messages in and out on the
    backbone connection, which has no view of its own."""
    for d, f, extra in (("in", "messages_in", hidden[0]), ("out", "messages_out", hidden[1])):
        parts = extra + sum(
            v for k, v in change.items() if k[0] not in ("node", "account") and k[2] == f"{d}_msgs"
        )
        assert change.get(("node", f), 0) == parts, (gw.config.name, f, change)
        accounts = sum(v for k, v in change.items() if k[0] == "account" and k[2] == f"{d}_msgs")
        assert change.get(("node", f), 0) == accounts, (gw.config.name, "accounts", f, change)


# -- byte-counting ends of links ----------------------------------------------------------------


class Counted(trio.abc.Stream):
    """A stream that counts the bytes crossing it: what the node must count at its end."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.sent = 0
        self.received = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)
        self.sent += memoryview(data).nbytes

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        self.received += len(data)
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


@asynccontextmanager
async def counted_client(url: str, name: str) -> AsyncIterator[tuple[meshgate.Client, Counted]]:
    """A meshgate client whose every byte is counted (no keepalive pings)."""
    async with connect_stream(url) as stream:
        counted = Counted(stream)
        async with connect_with_stream(counted, name=name) as client:
            yield client, counted


def wire(gw: meshgate.Gateway, name: str) -> tuple[int, int]:
    """(bytes in, bytes out) on the wire of client ``name`` of ``gw``."""
    (row,) = [c for c in gw.connz() if c.name == name]
    return row.in_bytes, row.out_bytes


# -- a meshgate client, and what its messages are on the route and gateway peers ----------------


def landing(
    sc: dict[str, list[meshgate.Gateway]], node: meshgate.Gateway, cluster: str
) -> meshgate.Gateway:
    """The node of ``cluster`` that ``node``'s outbound gateway connection reaches."""
    name = node.gatewayz()["outbound_gateways"][cluster]["connection"]["name"]
    (gw,) = [g for g in sc[cluster] if g.config.name == name]
    return gw


async def http_json(port: int, path: str) -> Any:
    """GET ``path`` from an HTTP server on 127.0.0.1:``port``; the JSON body."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = bytearray()
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert head.split()[1] == b"200", head
    return json.loads(body)


async def monitor_agrees(gw: meshgate.Gateway) -> None:
    """The HTTP monitoring paths show the snapshots' counters, payload bytes under
    nats-server's ``in_bytes``/``out_bytes`` and the wire under ``*_wire_bytes``."""
    assert gw.monitor_url
    port = int(gw.monitor_url.rpartition(":")[2])
    st = gw.statistics()
    varz = await http_json(port, "/varz")
    assert (varz["in_msgs"], varz["out_msgs"]) == (st.messages_in, st.messages_out)
    assert (varz["in_bytes"], varz["out_bytes"]) == (st.payload_bytes_in, st.payload_bytes_out)
    assert (varz["in_wire_bytes"], varz["out_wire_bytes"]) == (st.bytes_in, st.bytes_out)
    rows = {c["cid"]: c for c in (await http_json(port, "/connz"))["connections"]}
    for c in gw.connz():
        row = rows[c.cid]
        assert (row["in_msgs"], row["out_msgs"]) == (c.in_msgs, c.out_msgs)
        assert (row["in_bytes"], row["out_bytes"]) == (c.in_payload_bytes, c.out_payload_bytes)
        assert (row["in_wire_bytes"], row["out_wire_bytes"]) == (c.in_bytes, c.out_bytes)
    routes = {r["rid"]: r for r in (await http_json(port, "/routez"))["routes"]}
    for r in gw.routez():
        row = routes[r.rid]
        assert (row["in_msgs"], row["out_msgs"]) == (r.in_msgs, r.out_msgs)
        assert (row["in_bytes"], row["out_bytes"]) == (r.in_payload_bytes, r.out_payload_bytes)
        assert (row["in_wire_bytes"], row["out_wire_bytes"]) == (r.in_bytes, r.out_bytes)
    accounts = {a["name"]: a for a in (await http_json(port, "/accountz"))["accounts"]}
    for a in gw.accountz():
        assert (accounts[a.name]["in_msgs"], accounts[a.name]["out_msgs"]) == (
            a.in_msgs,
            a.out_msgs,
        )
    assert timeless(await http_json(port, "/gatewayz")) == timeless(
        json.loads(json.dumps(gw.gatewayz(), default=str))
    )


def wire_counters(gw: meshgate.Gateway) -> dict[Key, int]:
    """Every wire-byte counter ``gw`` shows: the node's and each connection's."""
    st = gw.statistics()
    out: dict[Key, int] = {("node", "in"): st.bytes_in, ("node", "out"): st.bytes_out}
    for c in gw.connz():
        out[("conn", str(c.cid), "in")] = c.in_bytes
        out[("conn", str(c.cid), "out")] = c.out_bytes
    for r in gw.routez():
        out[("route", str(r.rid), "in")] = r.in_bytes
        out[("route", str(r.rid), "out")] = r.out_bytes
    gz = gw.gatewayz()
    rows = [o["connection"] for o in gz["outbound_gateways"].values()]
    rows += [i["connection"] for ins in gz["inbound_gateways"].values() for i in ins]
    for row in rows:
        out[("gateway", str(row["cid"]), "in")] = row[GATEWAY_WIRE[0]]
        out[("gateway", str(row["cid"]), "out")] = row[GATEWAY_WIRE[1]]
    return out


class World:
    """Nodes of a super-cluster and clients whose bytes are counted at their end."""

    def __init__(self, sc: dict[str, list[meshgate.Gateway]], stack: AsyncExitStack) -> None:
        self.sc = sc
        self.stack = stack
        self.nodes = [g for gs in sc.values() for g in gs]
        self.clients: list[tuple[meshgate.Gateway, str, meshgate.Client, Counted]] = []

    async def client(self, gw: meshgate.Gateway, name: str) -> meshgate.Client:
        """A client of ``gw`` named ``name`` (its connz row's name)."""
        assert gw.client_url
        client, counted = await self.stack.enter_async_context(counted_client(gw.client_url, name))
        self.clients.append((gw, name, client, counted))
        return client

    async def subscribe(
        self, gw: meshgate.Gateway, name: str, pattern: str, queue: str | None = None
    ) -> meshgate.Subscription:
        """A new client ``name`` of ``gw`` subscribed to ``pattern``."""
        return await (await self.client(gw, name)).add_subscription(pattern, queue=queue)

    async def settle(self) -> None:
        """Everything sent so far has been processed everywhere and reached the clients."""
        await settle(self.nodes, [c for _, _, c, _ in self.clients])

    def snapshot(self) -> dict[str, dict[Key, int]]:
        return {g.config.name: counters(g) for g in self.nodes}

    def changes(self, before: dict[str, dict[Key, int]]) -> dict[str, dict[Key, int]]:
        return {g.config.name: delta(before[g.config.name], counters(g)) for g in self.nodes}

    def node(self, name: str) -> meshgate.Gateway:
        (gw,) = [g for g in self.nodes if g.config.name == name]
        return gw

    def check_wire(
        self, before: dict[str, dict[Key, int]] | None = None, *, hidden: tuple[int, int] = (0, 0)
    ) -> None:
        """Each end of each link counted what the other sent (after :meth:`settle`), and
        each node's wire totals moved by the sum of its connections' (since ``before``,
        a :func:`wire_counters` snapshot per node).  ``hidden``: at least that many bytes
        in and out crossed the backbone connection, which has no view of its own (its
        frames are the hub's to choose), so the totals may exceed the sum by more."""
        for gw, name, _, counted in self.clients:
            assert wire(gw, name) == (counted.sent, counted.received), (gw.config.name, name)
        for gw in self.nodes:
            me = gw.config.name
            for r in gw.routez():
                assert r.remote_name is not None
                (back,) = [b for b in self.node(r.remote_name).routez() if b.remote_name == me]
                assert (r.out_bytes, r.in_bytes) == (back.in_bytes, back.out_bytes), (me, r)
            for cluster, o in gw.gatewayz()["outbound_gateways"].items():
                far = self.node(o["connection"]["name"])
                (row,) = [
                    i["connection"]
                    for i in far.gatewayz()["inbound_gateways"][gw.config.cluster]
                    if i["connection"]["name"] == me
                ]
                out = o["connection"]
                sent, received = out[GATEWAY_WIRE[1]], out[GATEWAY_WIRE[0]]
                assert (sent, received) == (row[GATEWAY_WIRE[0]], row[GATEWAY_WIRE[1]]), (
                    me,
                    cluster,
                )
        if before is not None:
            for gw in self.nodes:
                moved = delta(before[gw.config.name], wire_counters(gw))
                for d, least in (("in", hidden[0]), ("out", hidden[1])):
                    parts = sum(v for k, v in moved.items() if k[0] != "node" and k[2] == d)
                    total = moved.get(("node", d), 0)
                    if hidden == (0, 0):
                        assert total == parts, (gw.config.name, d, moved)
                    else:
                        assert total >= parts + least, (gw.config.name, d, moved)

    def wire_snapshot(self) -> dict[str, dict[Key, int]]:
        return {g.config.name: wire_counters(g) for g in self.nodes}


@asynccontextmanager
async def world(
    sizes: dict[str, int], extra: Callable[[str, int], dict[str, Any]] | None = None
) -> AsyncIterator[World]:
    """A quiet in-memory super-cluster of ``sizes``; ``extra(cluster, i)``: more settings
    of node ``i`` of ``cluster``."""
    async with (
        supercluster(sizes, extra=lambda c, i: {**QUIET, **(extra(c, i) if extra else {})}) as sc,
        AsyncExitStack() as stack,
    ):
        yield World(sc, stack)


async def test_a_client_message_is_counted_at_its_node_and_behind_routes_and_gateways() -> None:
    """A client of a0 publishes to: three plain subscribers and a queue group of two on
    a0; two subscribers on a1 (one route copy); in cluster B (one gateway copy, to the
    node a0's outbound reaches), two subscribers there and, behind a route, one plain
    subscriber and a queue group named in the gateway frame.  Client origin at a0,
    route origin at a1 and at the far node of B, gateway origin at the near node of B."""
    with trio.fail_after(30):
        async with world({"A": 2, "B": 2}, lambda c, i: {"monitor_listen": "127.0.0.1:0"}) as w:
            a0, a1 = w.sc["A"]
            near = landing(w.sc, a0, "B")
            (far,) = [g for g in w.sc["B"] if g is not near]
            for gw, name, pattern, queue in [
                (a0, "s1", "t.x", None),
                (a0, "s2", "t.x", None),
                (a0, "s3", "t.*", None),
                (a0, "g:1", "t.x", "g"),
                (a0, "g:2", "t.>", "g"),
                (a1, "r1", "t.x", None),
                (a1, "r2", "t.>", None),
                (near, "n1", "t.x", None),
                (near, "n2", "t.>", None),
                (far, "f1", "t.x", None),
                (far, "h:1", "t.x", "h"),
                (far, "h:2", "t.*", "h"),
            ]:
                await w.subscribe(gw, name, pattern, queue)
            pub = await w.client(a0, "pub")
            await w.settle()
            before, wire_before = w.snapshot(), w.wire_snapshot()
            for p in payloads("c"):
                await pub.publish("t.x", p)
            await w.settle()
            n, s = K, PAYLOAD
            got = w.changes(before)
            nn, fn = near.config.name, far.config.name
            assert got["a0"] == flow(
                # 3 plain + 1 of the group + 1 route + 1 gateway copy per message
                node=(n, 6 * n, s, 6 * s),
                conns=[("pub", n, 0, s, 0), ("g:*", 0, n, 0, s)]
                + [(x, 0, n, 0, s) for x in ("s1", "s2", "s3")],
                accounts=[("$G", n, 6 * n)],
                routes=[("a1", 0, n, 0, s)],
                gateways_out=[("B", 0, n, 0, s)],
            )
            assert got["a1"] == flow(
                node=(n, 2 * n, s, 2 * s),
                conns=[("r1", 0, n, 0, s), ("r2", 0, n, 0, s)],
                accounts=[("$G", n, 2 * n)],
                routes=[("a0", n, 0, s, 0)],
            )
            assert got[nn] == flow(
                node=(n, 3 * n, s, 3 * s),
                conns=[("n1", 0, n, 0, s), ("n2", 0, n, 0, s)],
                accounts=[("$G", n, 3 * n)],
                routes=[(fn, 0, n, 0, s)],
                gateways_in=[("a0", n, 0, s, 0)],
            )
            assert got[fn] == flow(
                node=(n, 2 * n, s, 2 * s),
                conns=[("f1", 0, n, 0, s), ("h:*", 0, n, 0, s)],
                accounts=[("$G", n, 2 * n)],
                routes=[(nn, n, 0, s, 0)],
            )
            for gw in w.nodes:
                sums_agree(gw, got[gw.config.name])
                await monitor_agrees(gw)
            w.check_wire(wire_before)


async def test_a_message_only_another_cluster_wants_is_counted_out_on_the_gateway() -> None:
    """Nobody in a0's cluster wants ``only.b`` (with and without other interest in the
    account on a0): the one copy per message goes out on the gateway, and counts."""
    with trio.fail_after(30):
        async with world({"A": 1, "B": 1}) as w:
            (a0,), (b0,) = w.sc["A"], w.sc["B"]
            await w.subscribe(b0, "b1", "only.b")
            await w.subscribe(b0, "b2", "only.*")
            pub = await w.client(a0, "pub")
            await w.settle()
            for other_interest in (False, True):
                if other_interest:
                    await w.subscribe(a0, "elsewhere", "t.x")
                    await w.settle()
                before, wire_before = w.snapshot(), w.wire_snapshot()
                for p in payloads("b"):
                    await pub.publish("only.b", p)
                await w.settle()
                n, s = K, PAYLOAD
                got = w.changes(before)
                assert got["a0"] == flow(
                    node=(n, n, s, s),
                    conns=[("pub", n, 0, s, 0)],
                    accounts=[("$G", n, n)],
                    gateways_out=[("B", 0, n, 0, s)],
                ), other_interest
                assert got["b0"] == flow(
                    node=(n, 2 * n, s, 2 * s),
                    conns=[("b1", 0, n, 0, s), ("b2", 0, n, 0, s)],
                    accounts=[("$G", n, 2 * n)],
                    gateways_in=[("a0", n, 0, s, 0)],
                ), other_interest
                for gw in w.nodes:
                    sums_agree(gw, got[gw.config.name])
                w.check_wire(wire_before)


async def test_a_reply_routed_back_across_a_gateway_and_a_route_is_counted_on_each_hop() -> None:
    """Requests from a client of cluster A to a responder in B; the replies travel as
    ``_GR_.<cluster>.<node>.<reply>`` straight back to the requester's node, over the
    gateway to the node of A that b0's outbound reaches (``landing``) and, if the
    requester is on the other node, over a route from there."""
    with trio.fail_after(30):
        async with world({"A": 2, "B": 1}) as w:
            (b0,) = w.sc["B"]
            landed = landing(w.sc, b0, "A")
            (behind,) = [g for g in w.sc["A"] if g is not landed]
            responder = await w.client(b0, "responder")
            requests = await responder.add_subscription("svc")
            requesters = {
                "landed": await w.client(landed, "req"),
                "behind": await w.client(behind, "req"),
            }

            async def serve() -> None:
                async for m in requests:
                    assert m.reply is not None
                    await responder.publish(m.reply, m.payload + b"!")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve)
                for where, req in requesters.items():
                    await req.request("svc", b"warm-up")  # the inbox subscription, once
                    await w.settle()
                    before, wire_before = w.snapshot(), w.wire_snapshot()
                    for p in payloads("q"):
                        assert (await req.request("svc", p)).payload == p + b"!"
                    await w.settle()
                    n, q, r = K, PAYLOAD, PAYLOAD + K  # a reply is one byte longer
                    got = w.changes(before)
                    ln, bn = landed.config.name, behind.config.name
                    me = landed if where == "landed" else behind
                    # the requester's node: its client's requests out on the gateway, the
                    # replies in (on the gateway or the route) and out to the client
                    assert got[me.config.name] == flow(
                        node=(2 * n, 2 * n, q + r, q + r),
                        conns=[("req", n, n, q, r)],
                        accounts=[("$G", 2 * n, 2 * n)],
                        routes=[(ln, n, 0, r, 0)] if me is behind else [],
                        gateways_out=[("B", 0, n, 0, q)],
                        gateways_in=[("b0", n, 0, r, 0)] if me is landed else [],
                    ), where
                    if me is behind:
                        # the landing node only passes the replies on, over the route
                        assert got[ln] == flow(
                            node=(n, n, r, r),
                            accounts=[("$G", n, n)],
                            routes=[(bn, 0, n, 0, r)],
                            gateways_in=[("b0", n, 0, r, 0)],
                        )
                    else:
                        assert got[bn] == {}  # the route stays out of it
                    assert got["b0"] == flow(
                        node=(2 * n, 2 * n, q + r, q + r),
                        conns=[("responder", n, n, r, q)],
                        accounts=[("$G", 2 * n, 2 * n)],
                        gateways_out=[("A", 0, n, 0, r)],
                        gateways_in=[(me.config.name, n, 0, q, 0)],
                    ), where
                    for gw in w.nodes:
                        sums_agree(gw, got[gw.config.name])
                    w.check_wire(wire_before)
                nursery.cancel_scope.cancel()


# -- a NATS client (the NATS port) --------------------------------------------------------------

_names = itertools.count()


class NatsText:
    """A NATS text-protocol client over a counted stream, driven by hand."""

    def __init__(self, stream: Counted) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        assert data, "the node closed the connection"
        self.buf += data

    async def _line(self) -> bytes:
        while (i := self.buf.find(b"\r\n")) < 0:
            await self._fill()
        line = bytes(self.buf[:i])
        del self.buf[: i + 2]
        return line

    async def start(self, name: str, *, echo: bool = True) -> None:
        """Read INFO, send CONNECT, and wait until the node has processed it."""
        assert (await self._line()).startswith(b"INFO ")
        options = {"verbose": False, "pedantic": False, "name": name, "echo": echo}
        await self.send(b"CONNECT %s\r\n" % json.dumps(options).encode())
        assert await self.ping() == []

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def publish(self, subject: str, payload: bytes) -> None:
        await self.send(b"PUB %s %d\r\n%s\r\n" % (subject.encode(), len(payload), payload))

    async def _next(self) -> tuple[str, bytes] | None:
        """The next MSG (subject, payload), or None for a PONG; PINGs are answered."""
        while (line := await self._line()) == b"PING":
            await self.send(b"PONG\r\n")
        if line == b"PONG":
            return None
        assert line.startswith(b"MSG "), line
        parts = line.split()
        size = int(parts[-1])
        while len(self.buf) < size + 2:
            await self._fill()
        msg = (parts[1].decode(), bytes(self.buf[:size]))
        del self.buf[: size + 2]
        return msg

    async def ping(self) -> list[tuple[str, bytes]]:
        """A round trip: every (subject, payload) of the MSGs that arrived before the PONG."""
        await self.send(b"PING\r\n")
        got = []
        while (msg := await self._next()) is not None:
            got.append(msg)
        return got

    async def receive(self) -> tuple[str, bytes]:
        """The next MSG (subject, payload)."""
        while (msg := await self._next()) is None:
            pass
        return msg


@asynccontextmanager
async def nats_client(url: str, name: str, *, echo: bool = True) -> AsyncIterator[NatsText]:
    """A NATS client of the NATS port at ``url``, CONNECTed as ``name``."""
    async with connect_stream(url) as stream:
        client = NatsText(Counted(stream))
        await client.start(name, echo=echo)
        yield client


async def test_a_nats_client_message_and_messages_to_nats_clients_are_counted() -> None:
    """NATS clients of a0: np (subscribed to its own subject, echo on), ns, and nq (echo
    off).  np publishes to itself, ns, nq, two meshgate clients of a0 and one of a1;
    then nq publishes to the same (not to itself); then a client of a1 publishes to them
    all (route origin, delivered in NATS form)."""
    nats_url = f"memory://counters-nats-{next(_names)}"

    def extra(cluster: str, i: int) -> dict[str, Any]:
        return {"nats_listen": (nats_url,)} if i == 0 else {}

    with trio.fail_after(30):
        async with world({"A": 2}, extra) as w:
            a0, a1 = w.sc["A"]
            assert a0.nats_urls == (nats_url,)
            nats = {
                name: await w.stack.enter_async_context(nats_client(nats_url, name, echo=echo))
                for name, echo in (("np", True), ("ns", True), ("nq", False))
            }
            for name, sub in (("np", b"SUB t.x 1"), ("ns", b"SUB t.* 7"), ("nq", b"SUB t.x a")):
                await nats[name].send(sub + b"\r\n")
            for gw, name in ((a0, "m1"), (a0, "m2"), (a1, "r1")):
                await w.subscribe(gw, name, "t.x")
            mp = await w.client(a1, "mp")

            async def nats_settle() -> dict[str, list[tuple[str, bytes]]]:
                await w.settle()
                return {name: await c.ping() for name, c in nats.items()}

            assert await nats_settle() == {"np": [], "ns": [], "nq": []}
            n, s = K, PAYLOAD
            for origin in ("np", "nq", "mp"):
                before, wire_before = w.snapshot(), w.wire_snapshot()
                sent = payloads(origin)
                for p in sent:
                    if origin == "mp":
                        await mp.publish("t.x", p)
                    else:
                        await nats[origin].publish("t.x", p)
                msgs = [("t.x", p) for p in sent]
                assert await nats_settle() == {
                    name: [] if name == origin == "nq" else msgs for name in nats
                }, origin
                got = w.changes(before)
                if origin == "mp":  # from a1, over the route
                    assert got["a1"] == flow(
                        node=(n, 2 * n, s, 2 * s),
                        conns=[("mp", n, 0, s, 0), ("r1", 0, n, 0, s)],
                        accounts=[("$G", n, 2 * n)],
                        routes=[("a0", 0, n, 0, s)],
                    )
                    assert got["a0"] == flow(
                        node=(n, 5 * n, s, 5 * s),
                        conns=[(x, 0, n, 0, s) for x in ("np", "ns", "nq", "m1", "m2")],
                        accounts=[("$G", n, 5 * n)],
                        routes=[("a1", n, 0, s, 0)],
                    )
                else:
                    # to np (echo on), ns, nq (unless it sent it), m1, m2, and the route
                    local = ["ns", "m1", "m2"] + [x for x in ("np", "nq") if x != origin]
                    echo = n if origin == "np" else 0
                    copies = len(local) + 1 + (origin == "np")
                    assert got["a0"] == flow(
                        node=(n, copies * n, s, copies * s),
                        conns=[(origin, n, echo, s, echo and s)] + [(x, 0, n, 0, s) for x in local],
                        accounts=[("$G", n, copies * n)],
                        routes=[("a1", 0, n, 0, s)],
                    ), origin
                    assert got["a1"] == flow(
                        node=(n, n, s, s),
                        conns=[("r1", 0, n, 0, s)],
                        accounts=[("$G", n, n)],
                        routes=[("a0", n, 0, s, 0)],
                    ), origin
                for gw in w.nodes:
                    sums_agree(gw, got[gw.config.name])
                w.check_wire(wire_before)
                for name, c in nats.items():
                    assert wire(a0, name) == (c.stream.sent, c.stream.received), (origin, name)


# -- a replicant, and the node itself ------------------------------------------------------------

TOKEN = "counters-replicant-token-0123"


def game(cluster: str, i: int) -> dict[str, Any]:
    return {"replicants": True, "replicant_token": TOKEN, "speculative": ("fx.>",)}


async def test_a_replicant_message_is_counted_like_a_clients() -> None:
    """A replicant of a0 publishes state updates (with a coalescing key) to two plain
    subscribers and a queue group on a0 and a subscriber on a1."""
    with trio.fail_after(30):
        async with world({"A": 2}, game) as w:
            a0, a1 = w.sc["A"]
            assert a0.client_url
            counted = Counted(await w.stack.enter_async_context(connect_stream(a0.client_url)))
            rep_client = await w.stack.enter_async_context(
                connect_with_stream(counted, name="rep", token=TOKEN, role=Role.REPLICANT)
            )
            link = await w.stack.enter_async_context(open_replicant_link(rep_client, "rep"))
            w.clients.append((a0, "rep", rep_client, counted))
            for gw, name, pattern, queue in [
                (a0, "s1", "state.x", None),
                (a0, "s2", "state.*", None),
                (a0, "g:1", "state.x", "g"),
                (a0, "g:2", "state.x", "g"),
                (a1, "r1", "state.>", None),
            ]:
                await w.subscribe(gw, name, pattern, queue)
            await w.settle()
            (row,) = [c for c in a0.connz() if c.name == "rep"]
            assert row.kind == "replicant"
            before, wire_before = w.snapshot(), w.wire_snapshot()
            for p in payloads("r"):
                await link.publish("state.x", p, key="x")
            await w.settle()
            n, s = K, PAYLOAD
            got = w.changes(before)
            assert got["a0"] == flow(
                node=(n, 4 * n, s, 4 * s),
                conns=[("rep", n, 0, s, 0)] + [(x, 0, n, 0, s) for x in ("s1", "s2", "g:*")],
                accounts=[("$G", n, 4 * n)],
                routes=[("a1", 0, n, 0, s)],
            )
            assert got["a1"] == flow(
                node=(n, n, s, s),
                conns=[("r1", 0, n, 0, s)],
                accounts=[("$G", n, n)],
                routes=[("a0", n, 0, s, 0)],
            )
            for gw in w.nodes:
                sums_agree(gw, got[gw.config.name])
            w.check_wire(wire_before)


async def test_the_nodes_own_messages_are_counted_out_only() -> None:
    """The node itself publishes (the game layer relays a speculative input at once, to
    two clients of a0 and, over the route, one of a1): counted out, never in.  Then an
    owner confirms or corrects each input, and the node tells exactly the clients that
    got it, the sender included: those notices are messages to them, and count."""
    with trio.fail_after(30):
        async with world({"A": 2}, game) as w:
            a0, a1 = w.sc["A"]
            sender = await w.client(a0, "sender")
            subs = {
                name: await w.subscribe(gw, name, pattern)
                for gw, name, pattern in [
                    (a0, "v1", "fx.1"),
                    (a0, "v2", "fx.*"),
                    (a1, "v3", "fx.>"),
                ]
            }
            await sender.send_input("ship", 0, b"warm-up")  # no owner: the node asks, once
            await w.settle()
            before, wire_before = w.snapshot(), w.wire_snapshot()
            sent = payloads("f")
            for seq, p in enumerate(sent, 1):
                await sender.send_input("ship", seq, p, relay="fx.1")
            await w.settle()
            for sub in subs.values():
                got_msgs = [await sub.receive() for _ in sent]
                assert [m.payload for m in got_msgs] == sent
                assert all(m.reply and m.reply.startswith("$PROV.") for m in got_msgs)
            n, s = K, PAYLOAD
            inputs = sum(len(msgpack.packb((seq, p, "fx.1"))) for seq, p in enumerate(sent, 1))
            got = w.changes(before)
            assert got["a0"] == flow(
                # in: the client's inputs (the layer takes them); out: what the node relays
                node=(n, 3 * n, inputs, 3 * s),
                conns=[("sender", n, 0, inputs, 0), ("v1", 0, n, 0, s), ("v2", 0, n, 0, s)],
                accounts=[("$G", n, 3 * n)],
                routes=[("a1", 0, n, 0, s)],
            )
            assert got["a1"] == flow(
                node=(n, n, s, s),
                conns=[("v3", 0, n, 0, s)],
                accounts=[("$G", n, n)],
                routes=[("a0", n, 0, s, 0)],
            )
            for gw in w.nodes:
                sums_agree(gw, got[gw.config.name])
            w.check_wire(wire_before)

            # the owner answers: a correction for the one-byte input, else a confirmation
            before = w.snapshot()
            owner = InMemoryReplicant(
                "owner",
                Grid(10.0),
                {"ship": (5.0, 5.0)},
                validate=lambda state, data: b"fixed!" if len(data) == 1 else None,
            )
            handle = a0.attach_replicant(owner, token=TOKEN)
            await owner.wait_ready()
            answers: dict[str, list[meshgate.Message]] = {
                name: [await sub.receive() for _ in sent] for name, sub in subs.items()
            }
            answers["sender"] = [await sender.receive_correction() for _ in sent]
            await w.settle()
            got = w.changes(before)
            for name, msgs in answers.items():
                assert sorted(m.payload for m in msgs) == sorted([b""] * (n - 1) + [b"fixed!"])
                node = a1 if name == "v3" else a0
                moved = got[node.config.name]
                told = (
                    moved.get(("conn", name, "out_msgs"), 0),
                    moved.get(("conn", name, "out_payload_bytes"), 0),
                )
                assert told == (n, len(b"fixed!")), (name, moved)
            for gw in w.nodes:
                sums_agree(gw, got[gw.config.name])
            handle.stop()
            await handle.wait_stopped()


# -- the nats-server backbone -------------------------------------------------------------------


async def leaf_counts(port: int) -> tuple[int, int, int, int]:
    """The hub's counters of its one leaf connection (nats-server ``/leafz``): messages
    in and out, payload bytes in and out."""
    (leaf,) = (await http_json(port, "/leafz"))["leafs"]
    return leaf["in_msgs"], leaf["out_msgs"], leaf["in_bytes"], leaf["out_bytes"]


async def until_through(send: Callable[[bytes], Any], arrived: Callable[[], Any]) -> None:
    """Probe until a probe arrives (interest crosses to the hub asynchronously, and only
    a delivery proves it), then send a marker and take everything up to it: nothing
    sent before is still on its way."""
    while True:
        await send(b"probe")
        with trio.move_on_after(0.2):
            while await arrived() != b"probe":
                pass
            break
    await send(b"marker")
    while await arrived() != b"marker":
        pass


async def test_messages_from_and_to_the_nats_server_backbone_are_counted() -> None:
    """A node attached to a nats-server as a leaf: a NATS client of the hub publishes to
    two plain subscribers and a queue group of the node (backbone origin), and a client
    of the node publishes to the NATS client (out on the backbone).  The hub's own
    counters of the leaf connection (``/leafz``) agree with the node's."""
    leaf, monitor = free_port(), free_port()
    hub_config = f"leafnodes {{ listen: 127.0.0.1:{leaf} }}\nhttp: 127.0.0.1:{monitor}\n"
    with run_nats(hub_config) as hub_port, trio.fail_after(30):
        cfg = meshgate.GatewayConfig(
            name="m0",
            listen=f"memory://counters-backbone-{next(_names)}",
            backbone=(f"nats://127.0.0.1:{leaf}",),
            **QUIET,
        )
        async with meshgate.open_gateway(cfg) as m0, AsyncExitStack() as stack:
            await m0.wait_backbone()
            w = World({"A": [m0]}, stack)
            subs = {
                name: await w.subscribe(m0, name, pattern, queue)
                for name, pattern, queue in [
                    ("s1", "bb.x", None),
                    ("s2", "bb.*", None),
                    ("g:1", "bb.x", "g"),
                    ("g:2", "bb.x", "g"),
                ]
            }
            mp = await w.client(m0, "mp")
            # the node announces its interest to the hub in order: once the last
            # subscription's has arrived, so have the others
            sentinel = await w.subscribe(m0, "sentinel", "sentinel")
            hub = NatsText(
                Counted(
                    await stack.enter_async_context(
                        await trio.open_tcp_stream("127.0.0.1", hub_port)
                    )
                )
            )
            await hub.start("hub-client")
            await hub.send(b"SUB bb.y 1\r\n")
            await w.settle()

            async def to_sentinel(p: bytes) -> None:
                await hub.publish("sentinel", p)

            async def at_sentinel() -> bytes:
                return (await sentinel.receive()).payload

            async def to_hub(p: bytes) -> None:
                await mp.publish("bb.y", p)
                await mp.flush()

            async def at_hub() -> bytes:
                return (await hub.receive())[1]

            await until_through(to_sentinel, at_sentinel)
            await until_through(to_hub, at_hub)
            await w.settle()
            for sub in subs.values():  # s2 got mp's probes too (bb.*)
                drain(sub)

            # from the backbone
            await w.settle()
            before, hub_before = w.snapshot(), await leaf_counts(monitor)
            wire_before = w.wire_snapshot()
            sent = payloads("h")
            for p in sent:
                await hub.publish("bb.x", p)
            for name in ("s1", "s2"):
                assert [(await subs[name].receive()).payload for _ in sent] == sent
            await w.settle()
            shared = [m.payload for name in ("g:1", "g:2") for m in drain(subs[name])]
            assert sorted(shared) == sorted(sent)
            n, s = K, PAYLOAD
            got = w.changes(before)["m0"]
            assert got == flow(
                node=(n, 3 * n, s, 3 * s),
                conns=[(x, 0, n, 0, s) for x in ("s1", "s2", "g:*")],
                accounts=[("$G", n, 3 * n)],
            )
            sums_agree(m0, got, hidden=(n, 0))
            w.check_wire(wire_before, hidden=(s, 0))
            hub_after = await leaf_counts(monitor)
            assert tuple(a - b for a, b in zip(hub_after, hub_before, strict=True)) == (0, n, 0, s)

            # to the backbone
            before, hub_before = w.snapshot(), hub_after
            wire_before = w.wire_snapshot()
            sent = payloads("y")
            for p in sent:
                await mp.publish("bb.y", p)
            assert [await hub.receive() for _ in sent] == [("bb.y", p) for p in sent]
            await w.settle()
            assert [m.payload for m in drain(subs["s2"])] == sent  # bb.* is here too
            got = w.changes(before)["m0"]
            assert got == flow(
                # one copy to the hub, one to s2
                node=(n, 2 * n, s, 2 * s),
                conns=[("mp", n, 0, s, 0), ("s2", 0, n, 0, s)],
                accounts=[("$G", n, 2 * n)],
            )
            sums_agree(m0, got, hidden=(0, n))
            w.check_wire(wire_before, hidden=(0, s))
            hub_after = await leaf_counts(monitor)
            assert tuple(a - b for a, b in zip(hub_after, hub_before, strict=True)) == (n, 0, s, 0)
