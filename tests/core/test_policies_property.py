"""Every slow-consumer policy keeps a client's byte stream well-formed (a property).

Any interleaving of data (keyed or not), keepalive pings and the client's own pings
(PONGs) goes to a client that reads only now and then.  Whatever it receives
must decode, in order within each lane (with coalesce, the keyed state lane follows
the event lane); drop-oldest keeps a contiguous newest run, drop-new an ordered
subsequence (what did not fit is dropped), disconnect everything or a close, coalesce the newest value of every key.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshgate import ErrorCode
from meshgate.protocol import (
    ConnectionKind,
    Decoder,
    Error,
    Frame,
    Message,
    Ping,
    Publish,
    Subscribe,
)
from meshgate.testing import CoreHarness

from .helpers import node_config, open_peer

LIMIT = 1024
data = st.tuples(
    st.just("data"), st.sampled_from([0, 90, 300, 500]), st.none() | st.sampled_from("abc")
)
actions = st.lists(
    # mostly data, so that the client falls behind between reads
    st.one_of(
        data,
        data,
        data,
        data,
        data,
        data,
        st.tuples(st.just("keepalive"), st.just(0), st.none()),
        st.tuples(st.just("client-ping"), st.just(0), st.none()),
        st.tuples(st.just("read"), st.just(0), st.none()),
    ),
    min_size=8,
    max_size=80,
)


@pytest.mark.parametrize("policy", ["drop-oldest", "drop-new", "disconnect", "coalesce"])
@settings(max_examples=150, deadline=None)
@given(steps=actions)
def test_what_a_slow_client_receives_always_decodes_in_order(
    policy: str, steps: list[tuple[str, int, str | None]]
) -> None:
    h = CoreHarness(
        node_config(
            slow_consumer_policy=policy,
            max_pending_bytes=LIMIT,
            max_payload=512,
            ping_interval=1.0,
            max_pings_out=1000,
            max_resyncs=1000,
        )
    )
    slow = open_peer(h, ConnectionKind.CLIENT)
    slow.send(Subscribe(1, "d"))
    slow.reading = False
    pub = open_peer(h, ConnectionKind.CLIENT)
    decoder = Decoder(max_frame_bytes=1 << 20)
    published: list[tuple[int, str | None]] = []  # since the last read
    last_of_key: dict[str, int] = {}
    seq = 0
    now = 0.0
    h.tick(now)

    def read() -> None:
        decoder.feed(slow.take_bytes())  # raises if the stream is not well-formed
        frames: list[Frame] = list(decoder)
        got = [int.from_bytes(f.payload[:4], "big") for f in frames if isinstance(f, Message)]
        assert len(set(got)) == len(got)  # never twice
        unkeyed = [s for s, k in published if k is None]
        keyed = {s for s, k in published if k is not None}
        events = [s for s in got if s not in keyed]
        states = [s for s in got if s in keyed]
        # in order within each lane (coalesce sends the keyed state lane after the events)
        assert events == sorted(events), got
        assert states == sorted(states), got
        resynced = any(isinstance(f, Error) and f.code == ErrorCode.RESYNC for f in frames)
        if slow.closed:
            return
        if policy == "drop-oldest":
            assert events == unkeyed[len(unkeyed) - len(events) :]  # the newest run
        elif policy == "drop-new":
            # what did not fit was dropped; what came later and fitted was kept
            remaining = iter(unkeyed)
            assert all(e in remaining for e in events), (events, unkeyed)
        elif policy == "disconnect":
            assert events == unkeyed  # everything (or the client was closed)
        elif resynced:  # the backlog before the resync went; what followed is whole
            assert events == unkeyed[len(unkeyed) - len(events) :]
        else:
            assert events == unkeyed
        if policy == "coalesce":
            for key, newest in last_of_key.items():
                assert newest in got, (key, newest, got)  # the latest state of every key
        published.clear()
        last_of_key.clear()

    for kind, size, key in steps:
        if slow.closed:
            break
        if kind == "data":
            payload = seq.to_bytes(4, "big") + b"x" * size
            pub.send(Publish("d", None, payload, key if policy == "coalesce" else None))
            k = key if policy == "coalesce" else None
            published.append((seq, k))
            if k is not None:
                last_of_key[k] = seq
            seq += 1
        elif kind == "keepalive":
            now += 1.0
            h.tick(now)
        elif kind == "client-ping":
            slow.send(Ping())
        else:
            read()
        if not slow.closed:
            assert slow.pending_bytes <= LIMIT + 512
    if not slow.closed:
        read()
