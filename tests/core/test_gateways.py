"""Gateways in the core: routed replies, accounts, queue groups across clusters."""

from __future__ import annotations

import meshgate
from meshgate.testing import SimulatedSuperCluster

USERS = (
    meshgate.User(token="alice-token", account="X"),
    meshgate.User(token="bob-token", account="Y"),
)


def gateway_link(net: SimulatedSuperCluster, dialer: str, cluster: str) -> object:
    """The open link on which ``dialer`` sends data to ``cluster`` (a→b is data)."""
    (link,) = [
        link
        for link in net.open_links()
        if link.kind == "gateway"
        and link.a.config.name == dialer
        and link.b.config.cluster == cluster
    ]
    return link


def test_reply_finds_its_way_before_the_requesters_interest_arrives() -> None:
    """Interest-only: the request reaches the responder before the requester's inbox
    interest has reached the responder's cluster; the reply still arrives, once."""
    net = SimulatedSuperCluster({"A": 1, "B": 1}, interest_mode="interest-only")
    responder = net.client("b0")
    rsid = responder.subscribe("svc")
    net.quiesce()
    requester = net.client("a0")
    isid = requester.subscribe("inbox.1")
    requester.publish("svc", b"ping", reply="inbox.1")
    # only the request moves: A's interest in inbox.1 is still on its way to B
    assert net.step(gateway_link(net, "a0", "B"))  # type: ignore[arg-type]
    [(subject, payload, reply)] = responder.received[rsid]
    assert (subject, payload) == ("svc", b"ping")
    assert reply is not None
    responder.publish(reply, b"pong")
    net.quiesce()
    assert requester.received[isid] == [("inbox.1", b"pong", None)]


def test_gateway_input_is_matched_in_its_own_account_only() -> None:
    net = SimulatedSuperCluster({"A": 1, "B": 1}, users=USERS)
    alice_a = net.client("a0", "alice-token")
    bob_a = net.client("a0", "bob-token")
    asid = alice_a.subscribe("s")
    bsid = bob_a.subscribe("s")
    net.quiesce()
    net.client("b0", "alice-token").publish("s", b"from alice")
    net.client("b0", "bob-token").publish("s", b"from bob")
    net.quiesce()
    assert [m[1] for m in alice_a.received[asid]] == [b"from alice"]
    assert [m[1] for m in bob_a.received[bsid]] == [b"from bob"]


def test_queue_group_is_served_once_and_locally_first() -> None:
    net = SimulatedSuperCluster({"A": 1, "B": 1})
    local = net.client("a0")
    remote = net.client("b0")
    lsid = local.subscribe("work", queue="q")
    rsid = remote.subscribe("work", queue="q")
    net.quiesce()
    pub = net.client("a0")
    for i in range(10):
        pub.publish("work", bytes([i]))
    net.quiesce()
    assert len(local.received[lsid]) == 10
    assert remote.received[rsid] == []
    local.unsubscribe(lsid)
    net.quiesce()
    for i in range(5):
        pub.publish("work", bytes([i]))
    net.quiesce()
    assert len(remote.received[rsid]) == 5  # failover to the other cluster
