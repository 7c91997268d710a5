"""The legality table holds for every opcode on every connection kind, in every state."""

from __future__ import annotations

import pytest

import meshgate
from meshgate.protocol import (
    LEGAL_RECEIVE,
    PROTOCOL_VERSION,
    AccountInterest,
    AccountNoInterest,
    ConnectionKind,
    Error,
    Frame,
    GatewayMessage,
    GatewaySub,
    GatewayUnsub,
    Hello,
    Info,
    InterestModeEnd,
    InterestModeStart,
    KeyAck,
    Message,
    NoInterest,
    Opcode,
    Ping,
    Pong,
    Publish,
    RouteMessage,
    RouteSub,
    RouteUnsub,
    Subscribe,
    Unsubscribe,
)
from meshgate.testing import CoreHarness

from .helpers import node_config, open_peer

#: one well-formed frame of every opcode
SAMPLES: dict[Opcode, Frame] = {
    Opcode.HELLO: Hello(version=PROTOCOL_VERSION, role="client", name="x"),
    Opcode.PUB: Publish("s.1", None, b"p"),
    Opcode.SUB: Subscribe(1, "s.*"),
    Opcode.UNSUB: Unsubscribe(1),
    Opcode.MSG: Message(1, "s.1", None, b"p"),
    Opcode.PING: Ping(),
    Opcode.PONG: Pong(),
    Opcode.ERROR: Error(1, "x"),
    Opcode.INFO: Info("A"),
    Opcode.KACK: KeyAck((1, "k", 1)),
    Opcode.RSUB: RouteSub("$G", "s.*", None, 1),
    Opcode.RUNSUB: RouteUnsub("$G", "s.*", None),
    Opcode.RMSG: RouteMessage(None, "$G", "s.1", None, b"p"),
    Opcode.GMSG: GatewayMessage(None, "$G", "s.1", None, b"p"),
    Opcode.GSUB: GatewaySub("$G", "s.*", None),
    Opcode.GUNSUB: GatewayUnsub("$G", "s.*", None),
    Opcode.GNOINT: NoInterest("$G", "s.1"),
    Opcode.GACC_NOINT: AccountNoInterest("$G"),
    Opcode.GACC_INT: AccountInterest("$G"),
    Opcode.GMODE_START: InterestModeStart("$G"),
    Opcode.GMODE_END: InterestModeEnd("$G"),
}

#: the kinds a node receives on (a replicant is a client-port connection)
NODE_KINDS = [
    ConnectionKind.CLIENT,
    ConnectionKind.REPLICANT,
    ConnectionKind.ROUTE,
    ConnectionKind.GATEWAY_INBOUND,
    ConnectionKind.GATEWAY_OUTBOUND,
]

ILLEGAL = [
    (kind, op, state)
    for kind in NODE_KINDS
    for op in Opcode
    if op not in LEGAL_RECEIVE[kind]
    for state in ("AWAIT_HELLO", "OPEN")
]


def test_every_opcode_has_a_sample() -> None:
    assert set(SAMPLES) == set(Opcode)


@pytest.mark.parametrize(("kind", "op", "state"), ILLEGAL)
def test_illegal_frame_gets_an_error_and_closes_only_that_connection(
    kind: ConnectionKind, op: Opcode, state: str
) -> None:
    h = CoreHarness(node_config())
    bystander = open_peer(h, ConnectionKind.CLIENT)
    bystander.send(Subscribe(1, "s.*"))
    peer = open_peer(h, kind, handshake=state == "OPEN")
    assert peer.state == state
    before = h.core.statistics().protocol_errors
    peer.send(SAMPLES[op])
    errors = peer.errors()
    assert [e.code for e in errors] == [meshgate.ErrorCode.ILLEGAL_FOR_ROLE], errors
    assert op.name in errors[0].reason
    assert peer.closed
    assert h.core.statistics().protocol_errors == before + 1
    # everyone else carries on
    assert bystander.state == "OPEN"
    other = open_peer(h, ConnectionKind.CLIENT)
    other.send(Publish("s.2", None, b"still here"))
    assert [m.payload for m in bystander.received() if isinstance(m, Message)] == [b"still here"]


@pytest.mark.parametrize(
    ("kind", "op"),
    [(k, op) for k in NODE_KINDS for op in LEGAL_RECEIVE[k] if op != Opcode.HELLO],
)
def test_legal_frame_before_hello_refuses_the_handshake(kind: ConnectionKind, op: Opcode) -> None:
    h = CoreHarness(node_config())
    peer = open_peer(h, kind, handshake=False)
    peer.send(SAMPLES[op])
    assert [e.code for e in peer.errors()] == [meshgate.ErrorCode.HANDSHAKE_REFUSED]
    assert peer.closed


@pytest.mark.parametrize(
    ("kind", "op"),
    [
        (k, op)
        for k in NODE_KINDS
        for op in LEGAL_RECEIVE[k]
        if op not in (Opcode.HELLO, Opcode.ERROR)
    ],
)
def test_legal_frame_when_open_is_not_refused_for_its_role(
    kind: ConnectionKind, op: Opcode
) -> None:
    h = CoreHarness(node_config())
    peer = open_peer(h, kind)
    peer.send(SAMPLES[op])
    assert not [e for e in peer.errors() if e.code == meshgate.ErrorCode.ILLEGAL_FOR_ROLE]
