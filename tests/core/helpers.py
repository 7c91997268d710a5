"""Shared pieces of the per-kind core tests."""

from __future__ import annotations

import meshgate
from meshgate.protocol import ConnectionKind, Subscribe
from meshgate.testing import CoreHarness, CorePeer


def node_config(**overrides: object) -> meshgate.GatewayConfig:
    """Node a0 of cluster A with a route and a gateway port (nothing is bound: sans-IO)."""
    fields: dict[str, object] = {
        "name": "a0",
        "cluster": "A",
        "listen": "memory://a0",
        "cluster_listen": "memory://a0-routes",
        "gateway_listen": "memory://a0-gw",
    }
    fields.update(overrides)
    return meshgate.GatewayConfig(**fields)  # type: ignore[arg-type]


def open_peer(h: CoreHarness, kind: ConnectionKind, *, handshake: bool = True) -> CorePeer:
    """A connection of ``kind``; with ``handshake``, its HELLO sent and accepted."""
    if kind is ConnectionKind.GATEWAY_OUTBOUND:
        peer = h.open(kind, dialed=True, expected_cluster="B")
    else:
        peer = h.open(kind)
    peer.received()  # the node's HELLO
    if handshake:
        if kind is ConnectionKind.ROUTE:
            peer.hello(name=f"a{peer.conn_id + 10}", cluster="A")
        elif kind in (ConnectionKind.GATEWAY_INBOUND, ConnectionKind.GATEWAY_OUTBOUND):
            peer.hello(name=f"b{peer.conn_id}", cluster="B")
        else:
            peer.hello()
        assert peer.state == "OPEN", peer.received()
        peer.received()  # whatever the handshake sends (interest dumps, pings, gossip)
    return peer


def open_clients(h: CoreHarness, *tokens: str, subscribe: str | None = None) -> list[CorePeer]:
    """One client per token, each authenticated (and every one but the first, the
    publisher, subscribed to ``subscribe`` as sid 1), in the order given."""
    peers = []
    for token in tokens:
        p = open_peer(h, ConnectionKind.CLIENT, handshake=False)
        p.hello(token=token)
        assert p.state == "OPEN"
        p.received()
        peers.append(p)
    if subscribe is not None:
        for p in peers[1:]:
            p.send(Subscribe(1, subscribe, None))
            p.received()
    return peers
