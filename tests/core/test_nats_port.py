"""The NATS port in the sans-IO core: each rule of the text protocol, byte for byte."""

from __future__ import annotations

import meshgate
from meshgate.protocol import Message, Publish, Subscribe
from meshgate.testing import CoreHarness, CorePeer

TOKEN = "core-nats-token-0123"


def nats_peer(h: CoreHarness, connect: bytes = b"{}") -> CorePeer:
    peer = h.open(nats=True)
    peer.send_bytes(b"CONNECT " + connect + b"\r\n")
    assert peer.take_bytes().startswith(b"INFO {")
    return peer


def test_verbose_acknowledges_every_operation() -> None:
    h = CoreHarness(meshgate.GatewayConfig())
    peer = h.open(nats=True)
    peer.take_bytes()
    peer.send_bytes(b'CONNECT {"verbose":true}\r\nSUB a 1\r\nPUB a 2\r\nhi\r\nUNSUB 1\r\nPING\r\n')
    assert peer.take_bytes() == b"+OK\r\n+OK\r\n+OK\r\nMSG a 1 2\r\nhi\r\n+OK\r\nPONG\r\n"


def test_unsub_with_max_delivers_that_many_more_then_stops() -> None:
    h = CoreHarness(meshgate.GatewayConfig())
    peer = nats_peer(h)
    peer.send_bytes(b"SUB a 7\r\nUNSUB 7 2\r\n" + b"PUB a 1\r\nx\r\n" * 3)
    assert peer.take_bytes() == b"MSG a 7 1\r\nx\r\n" * 2


def test_no_connect_within_auth_timeout() -> None:
    h = CoreHarness(meshgate.GatewayConfig(users=(meshgate.User(TOKEN),), trusted_network=True))
    peer = h.open(nats=True)
    info = peer.take_bytes()
    assert b'"auth_required":true' in info
    assert b"server_name" in info  # a NATS client needs the INFO; the cluster stays unsaid
    assert b'"cluster"' not in info
    h.tick(h.now + h.core.config.auth_timeout + 1)
    assert peer.take_bytes() == b"-ERR 'Authentication Timeout'\r\n"
    assert peer.state != "OPEN"


def test_a_slow_nats_consumer_is_cut_off_alone() -> None:
    h = CoreHarness(meshgate.GatewayConfig(max_pending_bytes=64 * 1024, max_payload=16 * 1024))
    slow = nats_peer(h)
    slow.send_bytes(b"SUB a 1\r\n")
    slow.reading = False  # it stops reading
    fast = h.open()
    fast.hello()
    fast.send(Subscribe(1, "a"))
    fast.received()
    publisher = h.open()
    publisher.hello()
    for _ in range(10):
        publisher.send(Publish("a", None, b"x" * 10_000))
        fast.received()  # this one reads; the NATS client never does
    assert slow.state != "OPEN"
    assert slow.take_bytes().endswith(b"-ERR 'Slow Consumer'\r\n")
    publisher.send(Publish("a", None, b"still"))
    assert [f.payload for f in fast.received() if isinstance(f, Message)] == [b"still"]


def test_headers_reach_a_meshgate_client_and_a_nats_client_without_header_support() -> None:
    h = CoreHarness(meshgate.GatewayConfig())
    with_headers = nats_peer(h, b'{"headers":true}')
    without = nats_peer(h)
    native = h.open()
    native.hello()
    for peer in (with_headers, without):
        peer.send_bytes(b"SUB h.* 1\r\n")
    native.send(Subscribe(1, "h.*"))
    native.received()
    block = b"NATS/1.0\r\nTrace: t1\r\n\r\n"
    sender = nats_peer(h, b'{"headers":true}')
    sender.send_bytes(b"HPUB h.x r %d %d\r\n%sbody\r\n" % (len(block), len(block) + 4, block))
    assert with_headers.take_bytes() == b"HMSG h.x 1 r %d %d\r\n%sbody\r\n" % (
        len(block),
        len(block) + 4,
        block,
    )
    assert without.take_bytes() == b"MSG h.x 1 r 4\r\nbody\r\n"
    (msg,) = native.received()
    assert isinstance(msg, Message)
    assert (msg.payload, msg.payload.headers) == (b"body", block)  # type: ignore[attr-defined]


def test_reserved_subjects_stay_the_nodes() -> None:
    h = CoreHarness(meshgate.GatewayConfig(replicants=True))
    peer = nats_peer(h)
    peer.send_bytes(b"SUB $AUTH.> 1\r\nPUB $AUTH.claim 1\r\nx\r\nSUB $MG.notice 2\r\nPING\r\n")
    out = peer.take_bytes()
    assert b'Permissions Violation for Subscription to "$AUTH.>"' in out
    assert b'Permissions Violation for Publish to "$AUTH.claim"' in out
    assert out.endswith(b"PONG\r\n")  # still open
    assert h.core.statistics().permission_violations == 2
