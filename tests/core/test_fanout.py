"""The one-hop table of ``_core/_fanout.py``, row by row, on simulated clusters."""

from __future__ import annotations

import pytest

from meshgate.protocol import ConnectionKind, Message, Publish, Subscribe, Unsubscribe
from meshgate.testing import CoreHarness, SimulatedSuperCluster

from .helpers import node_config, open_peer


@pytest.mark.parametrize("ingress", ["a0", "a1", "b0", "b1"])
def test_every_subscriber_gets_each_message_exactly_once(ingress: str) -> None:
    """Client ingress anywhere: local, behind a route, behind a gateway, behind a gateway
    and then a route -- one copy each, whatever the path."""
    net = SimulatedSuperCluster({"A": 3, "B": 2})
    subs = {node: net.client(node) for node in ("a0", "a1", "a2", "b0", "b1")}
    sids = {node: c.subscribe("t.>") for node, c in subs.items()}
    net.quiesce()
    pub = net.client(ingress)
    for i in range(5):
        pub.publish(f"t.{i}", bytes([i]))
    net.quiesce()
    for node, c in subs.items():
        assert [m[1] for m in c.received[sids[node]]] == [bytes([i]) for i in range(5)], node


def test_queue_group_members_across_a_cluster_share_each_message_once() -> None:
    net = SimulatedSuperCluster({"A": 3})
    members = [net.client(n) for n in ("a0", "a1", "a2")]
    sids = [m.subscribe("job", queue="q") for m in members]
    net.quiesce()
    pub = net.client("a0")
    for i in range(30):
        pub.publish("job", bytes([i]))
    net.quiesce()
    got = sorted(p for m, sid in zip(members, sids, strict=True) for _, p, _ in m.received[sid])
    assert got == [bytes([i]) for i in range(30)]


def test_auto_unsubscribe_after_max_msgs() -> None:
    h = CoreHarness(node_config())
    c = open_peer(h, ConnectionKind.CLIENT)
    c.send(Subscribe(1, "n"), Unsubscribe(1, 2))
    pub = open_peer(h, ConnectionKind.CLIENT)
    for i in range(5):
        pub.send(Publish("n", None, bytes([i])))
    assert [f.payload for f in c.received() if isinstance(f, Message)] == [b"\x00", b"\x01"]
    assert h.core.statistics().subscriptions == 0
