"""Client connections in the core: slow-consumer policies against the pending bound."""

from __future__ import annotations

from meshgate.protocol import (
    ConnectionKind,
    Decoder,
    Message,
    Ping,
    Publish,
    Subscribe,
)
from meshgate.testing import CoreHarness, CorePeer

from .helpers import node_config, open_peer


def stalled_subscriber(h: CoreHarness) -> CorePeer:
    """A client subscribed to ``n`` that reads nothing."""
    slow = open_peer(h, ConnectionKind.CLIENT)
    slow.send(Subscribe(1, "n"))
    slow.reading = False
    return slow


def messages(data: bytes) -> list[Message]:
    dec = Decoder(max_frame_bytes=1 << 20)
    dec.feed(data)
    return [f for f in dec if isinstance(f, Message)]


def test_drop_oldest_keeps_the_newest_frames_on_frame_boundaries() -> None:
    limit = 1000
    h = CoreHarness(
        node_config(
            slow_consumer_policy="drop-oldest",
            max_pending_bytes=limit,
            max_payload=512,
            ping_interval=1.0,
        )
    )
    slow = stalled_subscriber(h)
    pub = open_peer(h, ConnectionKind.CLIENT)
    for i in range(30):
        pub.send(Publish("n", None, i.to_bytes(2, "big") * 25))
        if i == 10:
            # a keepalive PING lands in the same buffer as the data
            h.tick(0.0)
            h.tick(1.5)
            pub.received()
        assert slow.pending_bytes <= limit
    got = [int.from_bytes(m.payload[:2], "big") for m in messages(slow.take_bytes())]
    stats = h.core.statistics()
    assert stats.dropped_messages > 0
    assert got == list(range(30 - len(got), 30))  # the newest, in order, none missing
    assert slow.state == "OPEN"


def test_drop_new_keeps_the_oldest() -> None:
    h = CoreHarness(
        node_config(slow_consumer_policy="drop-new", max_pending_bytes=1000, max_payload=512)
    )
    slow = stalled_subscriber(h)
    pub = open_peer(h, ConnectionKind.CLIENT)
    for i in range(30):
        pub.send(Publish("n", None, i.to_bytes(2, "big") * 25))
    got = [int.from_bytes(m.payload[:2], "big") for m in messages(slow.take_bytes())]
    assert got == list(range(len(got)))
    assert h.core.statistics().dropped_messages == 30 - len(got)


def test_disconnect_policy_closes_only_the_slow_client() -> None:
    h = CoreHarness(node_config(max_pending_bytes=1000, max_payload=512))
    slow = stalled_subscriber(h)
    fast = open_peer(h, ConnectionKind.CLIENT)
    fast.send(Subscribe(1, "n"))
    for i in range(30):
        fast.send(Publish("n", None, i.to_bytes(2, "big") * 25))
    assert slow.closed
    assert len(messages(fast.take_bytes())) == 30
    assert h.core.statistics().slow_consumers == 1
    assert fast.state == "OPEN"


def test_ping_is_answered_and_keepalive_closes_a_silent_peer() -> None:
    h = CoreHarness(node_config(ping_interval=1.0, max_pings_out=2))
    c = open_peer(h, ConnectionKind.CLIENT)
    c.send(Ping())
    assert [type(f).__name__ for f in c.received()] == ["Pong"]
    for t in (0.0, 1.0, 2.0, 3.0):
        h.tick(t)
    assert c.closed
