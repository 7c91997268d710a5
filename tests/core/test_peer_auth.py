"""Route and gateway peers authenticate; the client port reveals nothing before auth."""

from __future__ import annotations

import pytest

import meshgate
from meshgate.protocol import (
    ConnectionKind,
    GatewayMessage,
    GatewaySub,
    Hello,
    Message,
    RouteMessage,
    RouteSub,
    Subscribe,
)
from meshgate.testing import CoreHarness

from .helpers import node_config, open_peer

ROUTE_SECRET = "route-secret-of-A-0123"
GW_SECRET = "gateway-secret-A-B-0123"
USERS = (meshgate.User(token="bank-client-token", account="bank"),)


def secured(**kw: object) -> meshgate.GatewayConfig:
    fields: dict[str, object] = {
        "users": USERS,
        "cluster_secret": ROUTE_SECRET,
        "gateway_secrets": {"B": GW_SECRET},
        "gateways": {"B": ["memory://b0-gw"]},
        **kw,
    }
    return node_config(**fields)


def bank_subscriber(h: CoreHarness) -> object:
    sub = h.open()
    sub.hello(token="bank-client-token")
    sub.send(Subscribe(1, ">"))
    sub.received()
    return sub


@pytest.mark.parametrize("token", [None, "wrong-secret-0123456", ROUTE_SECRET[:-1]])
def test_route_without_the_cluster_secret_is_refused_before_anything(token: str | None) -> None:
    h = CoreHarness(secured())
    sub = bank_subscriber(h)
    route = h.open(ConnectionKind.ROUTE)
    assert route.received() == []  # the acceptor says nothing to an unauthenticated dialer
    route.hello(name="a1", cluster="A", token=token)
    route.send(RouteMessage(None, "bank", "pay.me", None, b"stolen"))
    frames = route.received()
    assert [type(f).__name__ for f in frames] == ["Error"]
    assert frames[0].code == meshgate.ErrorCode.AUTH_FAILED  # type: ignore[attr-defined]
    assert ROUTE_SECRET not in frames[0].reason  # type: ignore[attr-defined]
    assert route.closed
    assert h.core.statistics().auth_failures == 1
    assert h.core.statistics().routes == 0
    assert sub.received() == []  # nothing injected


def test_route_with_the_cluster_secret_is_accepted_and_answered() -> None:
    h = CoreHarness(secured())
    sub = bank_subscriber(h)
    route = h.open(ConnectionKind.ROUTE)
    route.hello(name="a1", cluster="A", token=ROUTE_SECRET)
    hellos = [f for f in route.received() if isinstance(f, Hello)]
    assert [x.token for x in hellos] == [ROUTE_SECRET]  # the acceptor proves itself too
    route.send(RouteMessage(None, "bank", "pay.me", None, b"ok"))
    assert [f.payload for f in sub.received() if isinstance(f, Message)] == [b"ok"]


def test_route_interest_in_an_unknown_account_is_refused() -> None:
    h = CoreHarness(secured())
    route = h.open(ConnectionKind.ROUTE)
    route.hello(name="a1", cluster="A", token=ROUTE_SECRET)
    route.received()
    route.send(RouteSub("made-up", ">", None, 1))
    assert [e.code for e in route.errors()] == [meshgate.ErrorCode.PERMISSION_DENIED]
    assert route.state == "OPEN"
    assert len(h.core.graph) == 0


@pytest.mark.parametrize(("cluster", "token"), [("B", None), ("B", "x" * 20), ("C", GW_SECRET)])
def test_gateway_without_its_clusters_secret_is_refused(cluster: str, token: str | None) -> None:
    h = CoreHarness(secured())
    sub = bank_subscriber(h)
    gw = h.open(ConnectionKind.GATEWAY_INBOUND)
    assert gw.received() == []
    gw.hello(name="b0", cluster=cluster, token=token, urls=("memory://evil",))
    gw.send(GatewayMessage(None, "bank", "pay.me", None, b"stolen"))
    assert [e.code for e in gw.errors()] == [meshgate.ErrorCode.AUTH_FAILED]
    assert gw.closed
    assert sub.received() == []
    assert h.dial_gateways == []  # a URL from an unauthenticated peer is never dialed
    assert "memory://evil" not in str(h.core.gateways.urls)


def test_gateway_dialer_checks_the_acceptor_too() -> None:
    h = CoreHarness(secured())
    out = h.open(ConnectionKind.GATEWAY_OUTBOUND, dialed=True, expected_cluster="B")
    (ours,) = out.received()
    assert isinstance(ours, Hello)
    assert ours.token == GW_SECRET
    out.hello(name="b0", cluster="B", token="not-the-secret-000")
    assert [e.code for e in out.errors()] == [meshgate.ErrorCode.AUTH_FAILED]
    assert h.core.statistics().outbound_gateways == 0


def test_gateway_interest_for_unknown_accounts_is_ignored() -> None:
    h = CoreHarness(secured())
    out = h.open(ConnectionKind.GATEWAY_OUTBOUND, dialed=True, expected_cluster="B")
    out.hello(name="b0", cluster="B", token=GW_SECRET)
    out.send(GatewaySub("made-up", ">", None), GatewaySub("bank", "x", None))
    assert out.errors() == []
    view = h.core.gateways.outbound["B"].out_interest
    assert view is not None
    assert view.accounts() == ["bank"]


def test_client_port_hello_reveals_nothing_before_authentication() -> None:
    h = CoreHarness(secured())
    c = h.open()
    (hello,) = c.received()
    assert isinstance(hello, Hello)
    assert (hello.name, hello.cluster, hello.urls) == ("", None, ())
    open_h = CoreHarness(node_config())
    (plain,) = open_h.open().received()
    assert isinstance(plain, Hello)
    assert (plain.name, plain.cluster) == ("a0", "A")  # no users: nothing to protect


def test_a_node_with_users_needs_peer_secrets_or_an_explicit_opt_out() -> None:
    with pytest.raises(meshgate.ConfigError) as info:
        node_config(users=USERS)
    assert info.value.field == "cluster_secret"
    with pytest.raises(meshgate.ConfigError) as info:
        node_config(users=USERS, cluster_secret=ROUTE_SECRET, gateways={"B": ["memory://b"]})
    assert info.value.field == "gateway_secrets.B"
    trusted = node_config(users=USERS, trusted_network=True)
    assert trusted.peer_auth_required is False
    with pytest.raises(meshgate.ConfigError):
        node_config(cluster_secret="short")
    text = repr(secured())
    assert ROUTE_SECRET not in text
    assert GW_SECRET not in text


def test_trusted_network_accepts_uncredentialed_routes() -> None:
    h = CoreHarness(node_config(users=USERS, trusted_network=True))
    route = open_peer(h, ConnectionKind.ROUTE)
    assert route.state == "OPEN"
