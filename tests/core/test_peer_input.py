"""Route and gateway input is checked like client input: subjects, replies, payload size."""

from __future__ import annotations

import pytest

import meshgate
from meshgate.protocol import (
    ConnectionKind,
    Frame,
    GatewayMessage,
    Message,
    Publish,
    RouteMessage,
    Subscribe,
)
from meshgate.testing import CoreHarness

from .helpers import node_config, open_peer

BAD_SUBJECTS = ["a..b", "a.*", ">", " a", "", "a.>", "a b", ".a", "a."]
PEER_KINDS = [ConnectionKind.ROUTE, ConnectionKind.GATEWAY_INBOUND]


def data_frame(
    kind: ConnectionKind, subject: str, reply: str | None = None, payload: bytes = b"p"
) -> Frame:
    if kind is ConnectionKind.ROUTE:
        return RouteMessage(None, "$G", subject, reply, payload)
    return GatewayMessage(None, "$G", subject, reply, payload)


@pytest.mark.parametrize("kind", PEER_KINDS)
@pytest.mark.parametrize("subject", BAD_SUBJECTS)
def test_invalid_subject_from_a_peer_is_refused(kind: ConnectionKind, subject: str) -> None:
    h = CoreHarness(node_config())
    sub = open_peer(h, ConnectionKind.CLIENT)
    sub.send(Subscribe(1, ">"), Subscribe(2, "a.*"))
    peer = open_peer(h, kind)
    peer.send(data_frame(kind, subject))
    assert [e.code for e in peer.errors()] == [meshgate.ErrorCode.INVALID_SUBJECT]
    assert peer.closed
    assert not [f for f in sub.received() if isinstance(f, Message)]
    assert sub.state == "OPEN"
    assert h.core.statistics().protocol_errors == 1


@pytest.mark.parametrize("kind", PEER_KINDS)
def test_invalid_reply_from_a_peer_is_refused(kind: ConnectionKind) -> None:
    h = CoreHarness(node_config())
    sub = open_peer(h, ConnectionKind.CLIENT)
    sub.send(Subscribe(1, ">"))
    peer = open_peer(h, kind)
    peer.send(data_frame(kind, "a.b", reply="x.*"))
    assert [e.code for e in peer.errors()] == [meshgate.ErrorCode.INVALID_SUBJECT]
    assert not [f for f in sub.received() if isinstance(f, Message)]


@pytest.mark.parametrize("kind", PEER_KINDS)
def test_valid_peer_message_is_delivered(kind: ConnectionKind) -> None:
    h = CoreHarness(node_config())
    sub = open_peer(h, ConnectionKind.CLIENT)
    sub.send(Subscribe(1, "a.*"))
    peer = open_peer(h, kind)
    peer.send(data_frame(kind, "a.b", reply="r.1"))
    got = [f for f in sub.received() if isinstance(f, Message)]
    assert got == [Message(1, "a.b", "r.1", b"p")]
    assert not peer.errors()


@pytest.mark.parametrize("kind", PEER_KINDS)
def test_peer_payload_above_max_payload_is_refused(kind: ConnectionKind) -> None:
    h = CoreHarness(node_config(max_payload=1024))
    sub = open_peer(h, ConnectionKind.CLIENT)
    sub.send(Subscribe(1, "a.*"))
    peer = open_peer(h, kind)
    peer.send(data_frame(kind, "a.b", payload=b"x" * 1024))  # at the limit: fine
    peer.send(data_frame(kind, "a.b", payload=b"x" * 2000))
    assert [e.code for e in peer.errors()] == [meshgate.ErrorCode.PAYLOAD_TOO_LARGE]
    assert peer.closed
    assert [len(f.payload) for f in sub.received() if isinstance(f, Message)] == [1024]


def test_client_publish_on_a_reserved_routing_subject_is_not_reflected_back() -> None:
    """A client's ``_GR_.`` subject naming this node reaches only local subscribers."""
    h = CoreHarness(node_config())
    sub = open_peer(h, ConnectionKind.CLIENT)
    sub.send(Subscribe(1, "inbox.1"))
    pub = open_peer(h, ConnectionKind.CLIENT)
    pub.send(Publish("_GR_.A.a0.inbox.1", None, b"r"))
    assert [f.subject for f in sub.received() if isinstance(f, Message)] == ["inbox.1"]
