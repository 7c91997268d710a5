"""The datagram lane (issue 20) under a path slower than the updates: one queued
datagram per key, the latest state, however long the burst."""

from __future__ import annotations

import msgpack

from meshgate.protocol import ConnectionKind, Publish, Subscribe
from meshgate.testing import CoreHarness

from .helpers import node_config, open_peer

KEYS = 10
ROUNDS = 60
#: what the slow path takes after each round: about 3 of the 10 updates
PATH_BYTES = 120


def _decode(d: bytes) -> tuple[str, bytes, int]:
    kind, _sid, _subject, _reply, payload, kseq, key = msgpack.unpackb(d)
    assert kind == 4
    return key, payload, kseq


def test_burst_to_slow_path_keeps_one_datagram_per_key_and_the_latest_goes_out() -> None:
    h = CoreHarness(node_config(datagram_refresh=0))
    sub = open_peer(h, ConnectionKind.CLIENT)
    sub.enable_datagrams(1200)
    sub.send(Subscribe(sid=1, pattern="state.>"))
    pub = open_peer(h, ConnectionKind.CLIENT)
    sent: list[bytes] = []
    last_kseq: dict[str, int] = {}
    for r in range(ROUNDS):
        for e in range(KEYS):
            pub.send(Publish(f"state.e{e}", None, b"%d" % r, key=f"e{e}"))
        taken = sub.take_datagrams(PATH_BYTES)
        # the path gets about what it asked for, not the backlog
        assert 0 < sum(map(len, taken)) < PATH_BYTES + 64
        sent += taken
    rest = sub.take_datagrams()
    # the backlog is bounded by the keys, not by the updates (600 were published)
    assert len(rest) <= KEYS
    latest = {_decode(d)[0]: _decode(d)[1] for d in rest}
    # each key's queued datagram is its latest state
    assert all(p == b"%d" % (ROUNDS - 1) for p in latest.values()), latest
    for d in sent + rest:  # per key, kseq only grows: nothing stale follows fresh
        key, _, kseq = _decode(d)
        assert kseq > last_kseq.get(key, 0)
        last_kseq[key] = kseq
    assert sub.take_datagrams() == []
    assert sub.received() == []  # nothing fell back to the stream
