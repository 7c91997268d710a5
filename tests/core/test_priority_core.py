"""Publisher priority inside the node core (issue 21, part 2): a PUB's ``priority``
multiplies its key's weight in budgeted clients' schedulers, only when the publisher's
credential grants it; bad values close the offending connection only; keyed state keeps
its key and priority across a route and a gateway hop (to peers that take them)."""

from __future__ import annotations

import math

import msgpack
import pytest

from meshgate import ErrorCode, User
from meshgate.protocol import (
    RELAY_KEYS_FEATURE,
    ConnectionKind,
    Decoder,
    Error,
    GatewayMessage,
    Message,
    Publish,
    RouteMessage,
    RouteSub,
)
from meshgate.spatial import Grid, Rings
from meshgate.testing import CoreHarness, CorePeer

from .helpers import node_config, open_clients, open_peer

#: one 100-byte value per 50 ms tick: the budget carries one of the two keys per tick
BUDGET = 2_400
PAYLOAD = b"x" * 80


def _setup(
    grant: float, *, budget: int = BUDGET
) -> tuple[CoreHarness, CorePeer, CorePeer, CorePeer]:
    """A publisher whose user may give priorities up to ``grant``, a client with a
    budget and one without, both subscribed to ``cell.>``."""
    users = (
        User(token="pub-token-1", name="pub", max_priority=grant),
        User(token="budget-token", name="budgeted", client_bandwidth=budget),
        User(token="plain-token", name="plain"),
    )
    h = CoreHarness(node_config(users=users, trusted_network=True, send_interval=0.05))
    pub, budgeted, plain = open_clients(
        h, "pub-token-1", "budget-token", "plain-token", subscribe="cell.>"
    )
    return h, pub, budgeted, plain


def _decode(data: bytes) -> list[object]:
    d = Decoder(max_frame_bytes=1 << 24)
    d.feed(data)
    return list(d)


def _race(
    h: CoreHarness,
    send_hi: object,
    send_lo: object,
    budgeted: CorePeer,
    plain: CorePeer | None = None,
    ticks: int = 200,
) -> tuple[dict[str, int], int]:
    """Both keys get a new value every tick; how many values of each the budgeted
    client got (and how many messages the client without a budget got)."""
    got = {"hi": 0, "lo": 0}
    plain_got = 0
    for step in range(ticks):
        send_hi(step)  # type: ignore[operator]
        send_lo(step)  # type: ignore[operator]
        h.tick(h.now + 0.05)
        for f in _decode(budgeted.take_bytes()):
            if isinstance(f, Message):
                got[f.subject.rsplit(".", 1)[1]] += 1
        if plain is not None:
            plain_got += sum(isinstance(f, Message) for f in _decode(plain.take_bytes()))
    return got, plain_got


def _publisher(pub: CorePeer, name: str, priority: float | None) -> object:
    def send(step: int) -> None:
        pub.send(Publish(f"cell.0.0.{name}", None, PAYLOAD + bytes([step % 256]), name, priority))

    return send


def test_priority_weighs_on_a_budgeted_client() -> None:
    """Priority 4 against none (1) under a budget that carries one value per tick: the
    high key goes out about four times as often; the client without a budget gets
    every value of both (priority has no effect without a budget)."""
    h, pub, budgeted, plain = _setup(8.0)
    got, plain_got = _race(
        h, _publisher(pub, "hi", 4.0), _publisher(pub, "lo", None), budgeted, plain
    )
    assert got["lo"] > 0  # nothing starves
    assert 3.0 <= got["hi"] / got["lo"] <= 5.0, got
    assert plain_got == 2 * 200
    st = h.core.statistics()
    assert st.priority_honoured == 200
    assert st.priority_ignored == 0


def test_priority_is_lowered_to_the_grant() -> None:
    """A user granted 3 asks for 16: it weighs 3, exactly as if it had asked for 3."""
    h, pub, budgeted, _ = _setup(3.0)
    got, _ = _race(h, _publisher(pub, "hi", 16.0), _publisher(pub, "lo", None), budgeted)
    h2, pub2, budgeted2, _ = _setup(16.0)
    asked, _ = _race(h2, _publisher(pub2, "hi", 3.0), _publisher(pub2, "lo", None), budgeted2)
    assert got == asked
    assert got["hi"] > 2 * got["lo"], got


def test_priority_without_a_grant_is_ignored_and_counted() -> None:
    """Secure by default: a user without ``max_priority`` gives no priority (the
    message goes without it, counted); an anonymous client neither."""
    h, pub, budgeted, _ = _setup(0.0)
    got, _ = _race(h, _publisher(pub, "hi", 16.0), _publisher(pub, "lo", None), budgeted)
    assert 0.8 <= got["hi"] / got["lo"] <= 1.25, got
    st = h.core.statistics()
    assert st.priority_ignored == 200
    assert st.priority_honoured == 0
    assert pub.errors() == []  # ignored, not refused
    anon = CoreHarness(node_config(trusted_network=True))
    c = open_peer(anon, ConnectionKind.CLIENT)
    c.send(Publish("cell.0.0.a", None, b"", "a", 4.0))
    assert anon.core.statistics().priority_ignored == 1


def test_priority_needs_a_key() -> None:
    """A priority weighs keyed state only: on an unkeyed message it changes nothing."""
    h, pub, budgeted, _ = _setup(8.0)
    pub.send(Publish("cell.0.0.event", None, b"boom", None, 4.0))
    h.tick(h.now + 0.05)
    assert [f for f in _decode(budgeted.take_bytes()) if isinstance(f, Message)]
    assert h.core.statistics().priority_honoured == 0


@pytest.mark.parametrize("value", [-1.0, -1, math.nan, math.inf, -math.inf, 16.5, 1e300, 17])
def test_out_of_range_priority_closes_the_publisher_only(value: float) -> None:
    h, pub, _budgeted, plain = _setup(16.0)
    other = open_peer(h, ConnectionKind.CLIENT, handshake=False)
    other.hello(token="pub-token-1")
    other.received()
    pub.send(Publish("cell.0.0.a", None, b"bad", "a", value))
    (err,) = pub.errors()
    assert err.code == ErrorCode.MALFORMED
    assert "priority" in err.reason
    assert pub.state != "OPEN"
    # everyone else carries on, and the bad message went nowhere
    other.send(Publish("cell.0.0.b", None, b"good", "b", 2.0))
    h.tick(h.now + 0.05)
    msgs = [f for f in _decode(plain.take_bytes()) if isinstance(f, Message)]
    assert [m.payload for m in msgs] == [b"good"]
    assert other.state == "OPEN"


@pytest.mark.parametrize("value", ["high", True, [1], {"p": 1}, b"\x01"])
def test_wrongly_typed_priority_is_malformed(value: object) -> None:
    _h, pub, _, plain = _setup(16.0)
    pub.send_bytes(msgpack.packb([1, "cell.0.0.a", None, b"v", "a", value], use_bin_type=True))
    errs = [f for f in pub.received() if isinstance(f, Error)]
    assert errs
    assert errs[0].code == ErrorCode.MALFORMED
    assert "priority" in errs[0].reason
    assert pub.state != "OPEN"
    assert plain.state == "OPEN"


def _route(h: CoreHarness, *, keyed: bool) -> CorePeer:
    r = open_peer(h, ConnectionKind.ROUTE, handshake=False)
    features = (RELAY_KEYS_FEATURE,) if keyed else ()
    r.hello(name=f"a{r.conn_id + 10}", cluster="A", features=features)
    assert r.state == "OPEN"
    r.received()
    r.send(RouteSub("$G", "cell.>", None, 1))
    return r


def test_route_hop_carries_key_and_priority() -> None:
    """To a route peer that takes keyed relays, keyed state goes with its key and
    priority; to an older peer (no ``keyed-relay``), as before (six fields)."""
    h, pub, _, _ = _setup(8.0)
    new, old = _route(h, keyed=True), _route(h, keyed=False)
    pub.send(Publish("cell.0.0.ship", None, b"s", "ship", 3.0))
    pub.send(Publish("cell.0.0.tank", None, b"t", "tank", None))
    pub.send(Publish("cell.0.0.boom", None, b"b", None, None))
    h.collect()
    got = [f for f in new.received() if isinstance(f, RouteMessage)]
    assert [(f.subject, f.key, f.priority) for f in got] == [
        ("cell.0.0.ship", "ship", 3.0),
        ("cell.0.0.tank", "tank", None),
        ("cell.0.0.boom", None, None),
    ]
    raw = old.take_bytes()
    frames = [f for f in _decode(raw) if isinstance(f, RouteMessage)]
    assert [(f.key, f.priority) for f in frames] == [(None, None)] * 3


@pytest.mark.parametrize("kind", [ConnectionKind.ROUTE, ConnectionKind.GATEWAY_INBOUND])
def test_priority_from_a_peer_weighs_on_local_clients(kind: ConnectionKind) -> None:
    """Keyed state relayed by a route or a gateway keeps its priority: the budgeted
    client here gets the high key about four times as often."""
    h, _, budgeted, _ = _setup(0.0)
    peer = open_peer(h, kind)
    frame = RouteMessage if kind is ConnectionKind.ROUTE else GatewayMessage

    def sender(name: str, priority: float | None) -> object:
        def send(step: int) -> None:
            subject = f"cell.0.0.{name}"
            peer.send(
                frame(None, "$G", subject, None, PAYLOAD + bytes([step % 256]), name, priority)
            )

        return send

    got, _ = _race(h, sender("hi", 4.0), sender("lo", None), budgeted)
    assert 3.0 <= got["hi"] / got["lo"] <= 5.0, got
    assert peer.state == "OPEN"


def test_gateway_hop_carries_key_and_priority() -> None:
    """The outbound gateway to a cluster whose node takes keyed relays carries the key
    and priority; a gateway message relayed on to a route keeps them too."""
    h, pub, _, _ = _setup(8.0)
    gw = h.open(ConnectionKind.GATEWAY_OUTBOUND, dialed=True, expected_cluster="B")
    gw.received()
    gw.hello(name="b0", cluster="B", features=(RELAY_KEYS_FEATURE,))
    assert gw.state == "OPEN"
    gw.received()
    pub.send(Publish("cell.0.0.ship", None, b"s", "ship", 2.5))
    h.collect()
    got = [f for f in gw.received() if isinstance(f, GatewayMessage)]
    assert [(f.key, f.priority) for f in got] == [("ship", 2.5)]
    # in from a gateway, on to a route peer
    route = _route(h, keyed=True)
    inbound = open_peer(h, ConnectionKind.GATEWAY_INBOUND)
    inbound.send(GatewayMessage(None, "$G", "cell.0.0.jet", None, b"j", "jet", 6.0))
    h.collect()
    relayed = [f for f in route.received() if isinstance(f, RouteMessage)]
    assert [(f.key, f.priority) for f in relayed] == [("jet", 6.0)]


def test_peer_priority_out_of_range_is_ignored() -> None:
    """A peer node relaying a priority out of range (it was checked at ingress): the
    message goes without it, counted; the peer stays."""
    h, _, budgeted, _ = _setup(0.0)
    route = open_peer(h, ConnectionKind.ROUTE)
    route.send(RouteMessage(None, "$G", "cell.0.0.a", None, b"a", "a", math.nan))
    route.send(RouteMessage(None, "$G", "cell.0.0.b", None, b"b", "b", 99.0))
    h.tick(h.now + 0.05)
    assert h.core.statistics().priority_ignored == 2
    assert len([f for f in _decode(budgeted.take_bytes()) if isinstance(f, Message)]) == 2
    assert route.state == "OPEN"


def test_without_users_a_replicant_may_give_priorities() -> None:
    """Without ``users``: a replicant that presented the node's replicant secret (here
    the in-process one) may give any priority; an anonymous client none."""
    h = CoreHarness(node_config(trusted_network=True, replicants=True))
    rep = open_peer(h, ConnectionKind.REPLICANT)
    anon = open_peer(h, ConnectionKind.CLIENT)
    rep.send(Publish("cell.0.0.a", None, b"", "a", 16.0))
    anon.send(Publish("cell.0.0.b", None, b"", "b", 16.0))
    st = h.core.statistics()
    assert (st.priority_honoured, st.priority_ignored) == (1, 1)
    assert rep.state == "OPEN"
    assert anon.state == "OPEN"


def test_ring_rate_caps_still_apply() -> None:
    """A far key in the 1 Hz ring is not sent more than once a second, whatever its
    priority; a near key's priority multiplies its ring weight."""
    h, pub, budgeted, _ = _setup(16.0, budget=1_000_000)
    rings = Rings(Grid(10.0), ((50.0, 0.0, 4.0), (200.0, 5.0, 2.0), (float("inf"), 1.0, 1.0)))
    h.core.set_relevance(rings.relevance)
    assert h.core.set_focus(budgeted.conn_id, 5.0, 5.0)
    far = 0
    for step in range(40):  # 2 s
        pub.send(Publish("cell.100.0.far", None, bytes([step]), "far", 16.0))
        h.tick(h.now + 0.05)
        far += sum(isinstance(f, Message) for f in _decode(budgeted.take_bytes()))
    assert 2 <= far <= 3


@pytest.mark.parametrize("relevance", [False, True])
def test_a_waiting_value_takes_the_priority_of_the_newest(relevance: bool) -> None:
    """A key's waiting value superseded by one with a higher priority waits with the
    new priority: key hi (published at 1, then at 16, every tick) beats key lo (4);
    with or without the host's relevance function (two paths in the node)."""
    h, pub, budgeted, _ = _setup(16.0)
    if relevance:
        h.core.set_relevance(lambda focus, subject, key: (1.0, 0.0))
    a_low, a_high = _publisher(pub, "hi", None), _publisher(pub, "hi", 16.0)

    def send_a(step: int) -> None:
        a_low(step)  # type: ignore[operator]
        a_high(step)  # type: ignore[operator]

    got, _ = _race(h, send_a, _publisher(pub, "lo", 4.0), budgeted)
    assert got["lo"] > 0  # nothing starves
    assert got["hi"] > 2 * got["lo"], got
