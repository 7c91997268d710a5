"""The one driver (``CoreDriver``) on its own: a real node core, a recording sink.

Whatever the core asks for after a call (output, closes, topology changes, dials)
reaches the sink once, in the driver's order, and nothing arrives when nothing was
asked: the shell, the harness and the simulator all rely on it.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import meshgate
from meshgate.protocol import (
    PROTOCOL_VERSION,
    ConnectionKind,
    Decoder,
    Encoder,
    Error,
    Frame,
    Hello,
    Info,
    Publish,
    Subscribe,
)
from meshgate.testing import CoreDriver, CoreHarness

CONFIG = meshgate.GatewayConfig(
    name="a0",
    cluster="A",
    listen="memory://a0",
    cluster_listen="memory://a0-routes",
    gateway_listen="memory://a0-gw",
)
ENC = Encoder()


class Recorder:
    """A sink that writes down every call, with connection ids for connections."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def write(self, conns: tuple[Any, ...]) -> None:
        self.calls.append(("write", tuple(c.id for c in conns)))

    def close(self, conns: tuple[Any, ...]) -> None:
        self.calls.append(("close", tuple(c.id for c in conns)))

    def routes_changed(self) -> None:
        self.calls.append(("routes_changed",))

    def gateways_changed(self) -> None:
        self.calls.append(("gateways_changed",))

    def dial_route(self, url: str) -> None:
        self.calls.append(("dial_route", url))

    def dial_gateway(self, cluster: str) -> None:
        self.calls.append(("dial_gateway", cluster))

    def take(self) -> list[tuple[Any, ...]]:
        calls, self.calls = self.calls, []
        return calls


def driven() -> tuple[Any, CoreDriver, Recorder]:
    """A fresh node core (through the public harness), its driver and the sink."""
    core = CoreHarness(CONFIG).core
    sink = Recorder()
    return core, CoreDriver(core, sink), sink


def frames(core: Any, conn: Any) -> list[Frame]:
    dec = Decoder(max_frame_bytes=1 << 20)
    dec.feed(bytes(core.take_output(conn)))
    return list(dec)


def hello(role: str, **fields: Any) -> bytes:
    return ENC.encode(Hello(version=PROTOCOL_VERSION, role=role, **fields))


def test_output_reaches_write_and_nothing_comes_when_nothing_happened() -> None:
    core, driver, sink = driven()
    conn = core.open_connection(0.0)
    driver.drain()
    assert sink.take() == [("write", (conn.id,))]
    assert [type(f) for f in frames(core, conn)] == [Hello]  # the node speaks first
    driver.drain()
    assert sink.take() == []


def test_a_connection_the_core_closes_reaches_close_with_its_error_frame() -> None:
    core, driver, sink = driven()
    conn = core.open_connection(0.0)
    driver.drain()
    core.take_output(conn)
    sink.take()
    core.receive_data(conn, ENC.encode(Publish("x", None, b"", None)), 0.0)  # no HELLO
    driver.drain()
    assert sink.take() == [("write", (conn.id,)), ("close", (conn.id,))]
    assert [type(f) for f in frames(core, conn)] == [Error]
    core.connection_lost(conn)
    driver.drain()
    assert ("close", (conn.id,)) not in sink.take()  # reported once


def test_route_gossip_reaches_routes_changed_and_the_dialers() -> None:
    core, driver, sink = driven()
    route = core.open_connection(0.0, ConnectionKind.ROUTE)
    driver.drain()
    sink.take()
    core.receive_data(route, hello("route", name="a1", cluster="A", urls=("memory://a1",)), 0.0)
    driver.drain()
    assert sink.take() == [("write", (route.id,)), ("routes_changed",)]
    core.take_output(route)
    gossip = Info("A", ("memory://a1", "memory://a2"), ()), Info("B", (), ("memory://b0-gw",))
    core.receive_data(route, b"".join(ENC.encode(f) for f in gossip), 0.0)
    driver.drain()
    assert sink.take() == [("dial_route", "memory://a2"), ("dial_gateway", "B")]


def test_a_gateway_handshake_reaches_gateways_changed() -> None:
    core, driver, sink = driven()
    gw = core.open_connection(0.0, ConnectionKind.GATEWAY_INBOUND)
    driver.drain()
    sink.take()
    core.receive_data(gw, hello("gateway", name="b0", cluster="B", urls=("memory://b0-gw",)), 0.0)
    driver.drain()
    calls = sink.take()
    assert ("gateways_changed",) in calls
    assert ("dial_gateway", "B") in calls  # the inbound side dials back
    assert calls.index(("gateways_changed",)) < calls.index(("dial_gateway", "B"))


# -- the driver against the effects themselves -------------------------------------------------

OPS = st.lists(
    st.sampled_from(
        ["client", "hello", "sub", "pub", "garbage", "route", "gateway", "gossip", "lose"]
    ),
    max_size=25,
)


def play(core: Any, ops: list[str], after: Any) -> None:
    """Run ``ops`` on ``core``, calling ``after()`` after each call into it."""
    conns: list[Any] = []

    def call(method: Any, *args: Any) -> Any:
        result = method(*args)
        after()
        for c in conns:
            if core.has_output(c):
                core.take_output(c)
        return result

    for op in ops:
        live = [c for c in conns if c.state.name != "CLOSED"]
        routes = [c for c in live if c.kind is ConnectionKind.ROUTE]
        if op == "client":
            conns.append(call(core.open_connection, 0.0))
        elif op == "route":  # opened and handshaken: a new peer of the cluster
            route = call(core.open_connection, 0.0, ConnectionKind.ROUTE)
            conns.append(route)
            url = f"m://a{route.id}"
            call(
                core.receive_data,
                route,
                hello("route", name=url[4:], cluster="A", urls=(url,)),
                0.0,
            )
        elif op == "gateway":  # an inbound gateway from a remote cluster, handshaken
            gw = call(core.open_connection, 0.0, ConnectionKind.GATEWAY_INBOUND)
            conns.append(gw)
            call(core.receive_data, gw, hello("gateway", name=f"b{gw.id}", cluster="B"), 0.0)
        elif op == "gossip" and routes:  # a new cluster URL, and a remote cluster
            info = Info("A", (f"m://x{len(conns)}",), ()), Info(f"B{len(conns)}", (), ("m://b",))
            call(core.receive_data, routes[-1], b"".join(ENC.encode(f) for f in info), 0.0)
        elif op == "lose" and live:
            call(core.connection_lost, live[-1])
        elif live and op in ("hello", "sub", "pub", "garbage"):
            data = {
                "hello": hello("client", name="c"),
                "sub": ENC.encode(Subscribe(1, ">", None)),
                "pub": ENC.encode(Publish("s.x", None, b"p", None)),
                "garbage": b"\xc1\xc1\xc1",
            }[op]
            call(core.receive_data, live[-1], data, 0.0)


@settings(max_examples=60, deadline=None)
@given(OPS)
def test_the_sink_gets_exactly_what_the_core_drained(ops: list[str]) -> None:
    """Two identical cores fed the same calls: one drained by hand, one by the driver.
    The driver's sink calls are the effects, in the driver's order, none left out."""
    by_hand = CoreHarness(CONFIG).core
    expected: list[tuple[Any, ...]] = []

    def drain_by_hand() -> None:
        fx = by_hand.drain()
        if fx.writable:
            expected.append(("write", tuple(c.id for c in fx.writable)))
        if fx.closing:
            expected.append(("close", tuple(c.id for c in fx.closing)))
        if fx.routes_changed:
            expected.append(("routes_changed",))
        expected.extend(("dial_route", u) for u in fx.dial_routes)
        if fx.gateways_changed:
            expected.append(("gateways_changed",))
        expected.extend(("dial_gateway", c) for c in fx.dial_gateways)

    core, driver, sink = driven()
    play(by_hand, ops, drain_by_hand)
    play(core, ops, driver.drain)
    assert sink.calls == expected
