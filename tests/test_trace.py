"""Message tracing across a super-cluster (issue 24, part 5): ``Nats-Trace-Dest`` makes
every node a message crosses publish one event (nats-server 2.11's shape) to the
trace subject; ``traceparent`` travels untouched across every hop."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from typing import Any

import trio

import meshgate
from meshgate import User
from meshgate.config import Permissions
from meshgate.protocol import Headered
from meshgate.testing import SimClient, SimulatedSuperCluster

from .helpers import collect
from .supercluster import settle, supercluster
from .test_backbone import nats_supercluster

try:  # spans are checked where OpenTelemetry's SDK is installed
    from opentelemetry import trace as _otel_trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
except ImportError:
    _SPANS = None
else:
    _SPANS = InMemorySpanExporter()
    _provider = TracerProvider()
    _provider.add_span_processor(SimpleSpanProcessor(_SPANS))
    _otel_trace.set_tracer_provider(_provider)

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
KIND = {"client": 0, "route": 1, "gateway": 2}


def _events(client: SimClient, sid: int) -> list[dict[str, Any]]:
    return [json.loads(payload) for _, payload, _ in client.received[sid]]


def _hop(event: dict[str, Any]) -> str:
    return str(event["request"]["header"].get("Nats-Trace-Hop", [""])[0])


def _hop_key(event: dict[str, Any]) -> tuple[int, ...]:
    hop = _hop(event)
    return tuple(int(x) for x in hop.split(".")) if hop else ()


def _three_clusters() -> tuple[SimulatedSuperCluster, SimClient, dict[str, SimClient]]:
    net = SimulatedSuperCluster({"A": 2, "B": 2, "C": 2})
    pub = net.client("a1")
    subs = {node: net.client(node) for node in ("a0", "b1", "c1")}
    net.quiesce()
    return net, pub, subs


def test_trace_crosses_three_clusters() -> None:
    net, pub, subs = _three_clusters()
    sids = {node: c.subscribe("game.move") for node, c in subs.items()}
    collector = net.client("c0")
    tsid = collector.subscribe("trace.out")
    net.quiesce()
    pub.publish(
        "game.move",
        b"hello",
        headers={"Nats-Trace-Dest": "trace.out", "traceparent": TRACEPARENT},
    )
    net.quiesce()

    # the message arrived everywhere, its traceparent untouched at every hop
    for node, c in subs.items():
        [(subject, payload, _)] = c.received[sids[node]]
        assert subject == "game.move"
        assert payload == b"hello"
        assert isinstance(payload, Headered)
        assert f"traceparent: {TRACEPARENT}".encode() in payload.headers, node

    events = sorted(_events(collector, tsid), key=_hop_key)
    by_node = {e["server"]["name"]: e for e in events}
    # one event per node crossed: the ingress node, a0 by route, a node of B and of C
    # by gateway, and b1 / c1 by route if the gateway landed elsewhere
    assert len(by_node) == len(events)
    assert events[0]["server"]["name"] == "a1"
    assert {"a1", "a0", "b1", "c1"} <= set(by_node)
    assert {e["server"]["cluster"] for e in events} == {"A", "B", "C"}

    # every event: ingress first, then egresses; every hop is one egress of its parent
    egress_by_hop: dict[str, tuple[str, dict[str, Any]]] = {}
    for e in events:
        kinds = [x["type"] for x in e["events"]]
        assert kinds[0] == "in"
        assert set(kinds[1:]) <= {"eg"}, kinds
        assert e["request"]["header"]["traceparent"] == [TRACEPARENT]
        for x in e["events"][1:]:
            if "hop" in x:
                egress_by_hop[x["hop"]] = (e["server"]["name"], x)
    root = events[0]
    assert root["events"][0]["kind"] == KIND["client"]
    assert root["events"][0]["subj"] == "game.move"
    for e in events[1:]:
        hop = _hop(e)
        sender, egress = egress_by_hop[hop]
        ingress = e["events"][0]
        assert ingress["kind"] == egress["kind"], (hop, sender, e["server"]["name"])
        parent = hop.rpartition(".")[0]
        assert parent == _hop(by_node[sender]), (hop, sender)
        cluster = e["server"]["cluster"]
        expected = "route" if cluster == by_node[sender]["server"]["cluster"] else "gateway"
        assert ingress["kind"] == KIND[expected]
    # the ingress node sent the message on by route (A) and by gateway (B, C)
    root_kinds = sorted(x["kind"] for x in root["events"][1:])
    assert root_kinds == [KIND["route"], KIND["gateway"], KIND["gateway"]]
    # each subscriber's node reports the egress to its client
    for node in subs:
        deliveries = [x for x in by_node[node]["events"] if x["type"] == "eg" and x["kind"] == 0]
        assert [d["sub"] for d in deliveries] == ["game.move"], node


def test_trace_only_delivers_to_no_client() -> None:
    net, pub, subs = _three_clusters()
    sids = {node: c.subscribe("game.move") for node, c in subs.items()}
    collector = net.client("b0")
    tsid = collector.subscribe("trace.out")
    net.quiesce()
    pub.publish(
        "game.move",
        b"x",
        headers={"Nats-Trace-Dest": "trace.out", "Nats-Trace-Only": "true"},
    )
    net.quiesce()
    assert all(not c.received[sids[node]] for node, c in subs.items())
    events = _events(collector, tsid)
    assert {"a1", "a0", "b1", "c1"} <= {e["server"]["name"] for e in events}


def test_message_without_trace_header_publishes_no_event() -> None:
    net, pub, _ = _three_clusters()
    collector = net.client("c0")
    tsid = collector.subscribe(">")
    net.quiesce()
    pub.publish("game.move", b"x", headers={"traceparent": TRACEPARENT})
    pub.publish("game.move", b"y")
    net.quiesce()
    assert [s for s, _, _ in collector.received[tsid]] == ["game.move", "game.move"]


def test_trace_destination_needs_publish_permission() -> None:
    users = (
        User(token="tracer-token", account="T"),
        User(
            token="limited-token",
            account="T",
            publish=Permissions(allow=("game.>",)),
        ),
    )
    net = SimulatedSuperCluster({"A": 1, "B": 1, "C": 1}, users=users)
    limited = net.client("a0", token="limited-token")
    collector = net.client("c0", token="tracer-token")
    sub = net.client("b0", token="tracer-token")
    tsid = collector.subscribe("trace.out")
    sid = sub.subscribe("game.move")
    net.quiesce()
    limited.publish("game.move", b"x", headers={"Nats-Trace-Dest": "trace.out"})
    net.quiesce()
    # refused as nats-server refuses it: not delivered, no trace, an error to the publisher
    assert not sub.received[sid]
    assert not collector.received[tsid]
    assert limited.errors
    assert "trace.out" in limited.errors[-1].reason
    # a destination it may publish to is traced
    limited.publish("game.move", b"y", headers={"Nats-Trace-Dest": "game.trace"})
    collector.subscribe("game.trace")
    net.quiesce()
    limited.publish("game.move", b"z", headers={"Nats-Trace-Dest": "game.trace"})
    net.quiesce()
    assert [p for _, p, _ in sub.received[sid]] == [b"y", b"z"]
    traced = [json.loads(p) for s, p, _ in collector.received[tsid + 1]]
    assert {"a0", "b0"} <= {e["server"]["name"] for e in traced}


# -- real sockets: three clusters of trio nodes over TCP ----------------------------------------


async def test_trace_over_tcp_three_clusters() -> None:
    with trio.fail_after(60):
        async with (
            supercluster({"A": 2, "B": 1, "C": 1}, scheme="tcp") as sc,
            AsyncExitStack() as stack,
        ):
            gws = [g for gs in sc.values() for g in gs]
            a0, a1 = sc["A"]
            (b0,) = sc["B"]
            (c0,) = sc["C"]
            clients = {
                g.config.name: await stack.enter_async_context(meshgate.connect(g.client_url))  # type: ignore[arg-type]
                for g in (a0, a1, b0, c0)
            }
            subs = {
                name: await stack.enter_async_context(c.subscribe("game.move"))
                for name, c in clients.items()
                if name != "a1"
            }
            events_sub = await stack.enter_async_context(clients["c0"].subscribe("trace.out"))
            await settle(gws, list(clients.values()))
            await clients["a1"].publish(
                "game.move",
                b"hi",
                headers={"Nats-Trace-Dest": "trace.out", "traceparent": TRACEPARENT},
            )
            for name, sub in subs.items():
                m = await sub.receive()
                assert m.payload == b"hi"
                assert m.headers is not None
                assert m.headers["traceparent"] == [TRACEPARENT], name
            events = sorted(
                (json.loads(m.payload) for m in await collect(events_sub, 4)), key=_hop_key
            )
            assert events[0]["server"]["name"] == "a1"
            assert {e["server"]["name"] for e in events} == {"a0", "a1", "b0", "c0"}
            kinds = {e["server"]["name"]: e["events"][0]["kind"] for e in events}
            assert kinds == {"a1": 0, "a0": 1, "b0": 2, "c0": 2}
            hops = {e["server"]["name"]: _hop(e) for e in events}
            assert sorted(hops[n] for n in ("a0", "b0", "c0")) == ["1", "2", "3"]
            for e in events[1:]:
                assert [x["type"] for x in e["events"]] == ["in", "eg"]
                assert e["events"][1]["kind"] == 0  # to its client
            # spans, if OpenTelemetry's SDK is installed (the optional ``otel`` extra)
            if _SPANS is not None:
                names = {s.attributes["meshgate.node"] for s in _SPANS.get_finished_spans()}
                assert {"a0", "a1", "b0", "c0"} <= names
                span = next(
                    s for s in _SPANS.get_finished_spans() if s.attributes["meshgate.node"] == "b0"
                )
                assert span.context.trace_id == int(TRACEPARENT.split("-")[1], 16)
                assert span.parent is not None


async def test_trace_across_the_nats_server_backbone() -> None:
    """Nodes of three clusters attached to nats-server hubs (leaf connections): the
    copy to the hub is an egress of kind 4 (leaf) with its hop, the node that receives
    it from its hub reports an ingress of kind 4 with that hop; nats-server 2.9 itself
    does not trace, and carries the headers on untouched."""
    with trio.fail_after(60), nats_supercluster() as leaf_ports:
        async with AsyncExitStack() as stack:
            nodes = {}
            for c in ("A", "B", "C"):
                cfg = meshgate.GatewayConfig(
                    name=f"m{c}",
                    cluster=c,
                    listen="127.0.0.1:0",
                    backbone=(f"nats://127.0.0.1:{leaf_ports[c]}",),
                    reconnect_wait=0.05,
                )
                nodes[c] = await stack.enter_async_context(meshgate.open_gateway(cfg))
            for gw in nodes.values():
                await gw.wait_backbone()
            pub, sub_client, collector = [
                await stack.enter_async_context(meshgate.connect(nodes[c].client_url))  # type: ignore[arg-type]
                for c in ("A", "B", "C")
            ]
            sub = await stack.enter_async_context(sub_client.subscribe("game.move"))
            events = await stack.enter_async_context(collector.subscribe("trace.out"))
            # interest crosses the hubs asynchronously: probe every path the test uses
            # (the message A -> B, the trace events A -> C and B -> C)
            for client, s, via in (
                (pub, sub, "game.move"),
                (pub, events, "trace.out"),
                (sub_client, events, "trace.out"),
            ):
                while True:
                    await client.publish(via, b"probe")
                    with trio.move_on_after(0.2):
                        while (await s.receive()).payload != b"probe":
                            pass
                        break
            await pub.publish(
                "game.move",
                b"hi",
                headers={"Nats-Trace-Dest": "trace.out", "traceparent": TRACEPARENT},
            )
            m = await sub.receive()
            while m.payload == b"probe":
                m = await sub.receive()
            assert m.headers is not None
            assert m.headers["traceparent"] == [TRACEPARENT]
            got: dict[str, dict[str, Any]] = {}
            while len(got) < 2:
                payload = (await events.receive()).payload
                if payload != b"probe":  # late probes
                    e = json.loads(payload)
                    got[e["server"]["name"]] = e
            first, second = got["mA"], got["mB"]
            assert first["events"][0]["kind"] == 0
            [leaf] = [x for x in first["events"] if x["type"] == "eg"]
            assert leaf["kind"] == 4
            assert leaf["hop"] == "1"
            assert second["events"][0]["kind"] == 4
            assert _hop(second) == "1"
            assert [x["kind"] for x in second["events"][1:]] == [0]


def test_traceparent_alone_leaves_headers_untouched() -> None:
    """Without ``Nats-Trace-Dest`` nothing is added to the headers on the way (a span
    recorder may be attached: no ``Nats-Trace-Hop`` either)."""
    net, pub, subs = _three_clusters()
    recorded: list[dict[str, Any]] = []
    for core in net.nodes.values():  # as the shell attaches its span recorder
        core.fanout.tracer.on_event = recorded.append
    sids = {node: c.subscribe("game.move") for node, c in subs.items()}
    net.quiesce()
    pub.publish("game.move", b"x", headers={"traceparent": TRACEPARENT})
    net.quiesce()
    for node, c in subs.items():
        [(_, payload, _)] = c.received[sids[node]]
        assert isinstance(payload, Headered)
        assert payload.headers == f"NATS/1.0\r\ntraceparent: {TRACEPARENT}\r\n\r\n".encode()
    # the recorder heard of every node crossed; nothing was published
    assert {"a1", "a0", "b1", "c1"} <= {e["server"]["name"] for e in recorded}
