"""Routes in the core: the duplicate tie-break, and interest passed on to gateways."""

from __future__ import annotations

from meshgate.protocol import ConnectionKind, RouteSub, RouteUnsub
from meshgate.testing import CoreHarness, SimulatedSuperCluster

from .helpers import node_config, open_peer


def test_duplicate_route_tie_break() -> None:
    """Two simultaneous connections between a0 and a1: both cores keep the one a0 dialed."""
    a0 = CoreHarness(node_config(name="a0", cluster_listen="memory://a0-routes"))
    a1 = CoreHarness(node_config(name="a1", cluster_listen="memory://a1-routes"))
    # x: dialed by a0; y: dialed by a1
    x0 = a0.open(ConnectionKind.ROUTE, dialed=True)
    x1 = a1.open(ConnectionKind.ROUTE)
    y1 = a1.open(ConnectionKind.ROUTE, dialed=True)
    y0 = a0.open(ConnectionKind.ROUTE)
    # deliver y's handshake first on a0's side and x's first on a1's side: the worst order
    y0.send_bytes(y1.take_bytes())
    x1.send_bytes(x0.take_bytes())
    x0.send_bytes(x1.take_bytes())
    y1.send_bytes(y0.take_bytes())
    assert (x0.state, x1.state) == ("OPEN", "OPEN")
    assert y0.closed
    assert y1.closed
    assert a0.core.statistics().routes == a1.core.statistics().routes == 1


def test_route_interest_weights_are_absolute() -> None:
    h = CoreHarness(node_config())
    route = open_peer(h, ConnectionKind.ROUTE)
    route.send(RouteSub("$G", "w", "q", 2), RouteSub("$G", "w", "q", 2))
    route.send(RouteSub("$G", "p.>", None, 1))
    assert len(h.core.graph) == 2
    route.send(RouteUnsub("$G", "w", "q"), RouteUnsub("$G", "p.>", None))
    assert len(h.core.graph) == 0


def test_a_route_peers_last_unsubscribe_reaches_the_other_clusters() -> None:
    """Interest on a1 reaches cluster B through a0's gateway; when a1's last subscriber
    leaves, B must stop forwarding (interest-only: it would forward forever)."""
    net = SimulatedSuperCluster({"A": 2, "B": 1}, interest_mode="interest-only")
    net.quiesce()
    sub = net.client("a1")
    sid = sub.subscribe("x.1")
    net.quiesce()
    outbound = net.nodes["b0"].gateways.outbound["A"].out_interest
    assert outbound is not None
    assert outbound.should_forward("$G", "x.1")
    sub.unsubscribe(sid)
    net.quiesce()
    assert not outbound.should_forward("$G", "x.1")
    pub = net.client("b0")
    pub.publish("x.1", b"after")
    net.quiesce()
    assert net.nodes["a0"].statistics().messages_in == 0
