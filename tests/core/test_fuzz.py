"""Fuzzing the sans-IO core, one connection kind at a time (a standing test).

A hostile peer of each kind sends a random mix of well-formed frames (with subjects,
reserved subjects, accounts and sizes an attacker would try), random bytes and
truncated frames, while two bystander clients of another account exchange marked
messages before, during and after.  Checked after every step:

* no exception escapes the core;
* the bystanders stay open and receive exactly their own marked messages, in order;
* only the fuzzed connection is ever closed;
* memory stays bounded: pending output, subscriptions and the interest graph.

CI runs a few thousand examples (``FUZZ_EXAMPLES`` per kind, default 600); a long run:
``FUZZ_EXAMPLES=20000 pytest -o faulthandler_timeout=0 tests/core/test_fuzz.py`` (100,000
examples in all took 11 minutes here and found nothing; the faulthandler dump that
pytest schedules after 120 s would interrupt it).
"""

from __future__ import annotations

import os

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import meshgate
from meshgate.protocol import (
    LEGAL_RECEIVE,
    PROTOCOL_VERSION,
    AccountInterest,
    AccountNoInterest,
    ConnectionKind,
    Encoder,
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
from meshgate.subjects import is_valid_subject, match
from meshgate.testing import CoreHarness
from meshgate.testing.strategies import patterns, subjects

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "600"))
MAX_PENDING = 64 * 1024
MAX_SUBS = 50
USERS = (
    meshgate.User(token="fuzz-token", account="F"),
    meshgate.User(token="bystander-token", account="B"),
    meshgate.User(token="fuzz-replicant-token", account="F", replicant=True),
)

RESERVED = [
    "$IN.ship1",
    "$AUTH.claim",
    "$AUTH.lost",
    "$SPEC.correct",
    "$REP.r1.in",
    "$INTEREST.sync",
    "$INTEREST.add",
    "_GR_.A.a0.inbox",
    "_GR_.Z.z9.x",
    "_GR_...",
]
#: subjects near the bystanders' interest (``by.>``), valid or not
NEAR = ["by.x", "by.*", "by.>", "by..x", "by. x", "by", "by.x.", ".by.x", "by.\x00"]
subject = st.one_of(
    st.sampled_from(NEAR),
    subjects(alphabet=("by", "x", "a", "ship")),
    st.sampled_from(RESERVED),
    st.text(max_size=8),
)
pattern = st.one_of(patterns(), st.sampled_from(["$AUTH.*", "$REP.>", ">", "*"]))
account = st.sampled_from(["B", "B", "F", "$G", "nope", ""])
queue = st.none() | st.sampled_from(["q", "w"])
payload = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda n: b"x" * n, st.integers(0, 5000)),
    st.builds(msgpack.packb, st.tuples(st.integers(-2, 9), st.binary(max_size=8))),
    st.builds(msgpack.packb, st.tuples(st.text(max_size=5), st.integers(-1, 9), st.binary())),
)
queues = st.none() | st.lists(st.sampled_from(["q", "w", ""]), max_size=3).map(tuple)
sid = st.integers(0, 60)

FRAMES: dict[Opcode, st.SearchStrategy[Frame]] = dict(
    zip(
        [
            Opcode.PUB,
            Opcode.SUB,
            Opcode.UNSUB,
            Opcode.MSG,
            Opcode.PING,
            Opcode.PONG,
            Opcode.ERROR,
            Opcode.INFO,
            Opcode.KACK,
            Opcode.RSUB,
            Opcode.RUNSUB,
            Opcode.RMSG,
            Opcode.GMSG,
            Opcode.GSUB,
            Opcode.GUNSUB,
            Opcode.GNOINT,
            Opcode.GACC_NOINT,
            Opcode.GACC_INT,
            Opcode.GMODE_START,
            Opcode.GMODE_END,
            Opcode.HELLO,
        ],
        [
            st.builds(
                Publish, subject, st.none() | subject, payload, st.none() | st.text(max_size=4)
            ),
            st.builds(Subscribe, sid, pattern, queue),
            st.builds(Unsubscribe, sid, st.none() | st.integers(0, 3)),
            st.builds(Message, sid, subject, st.none() | subject, payload),
            st.just(Ping()),
            st.just(Pong()),
            st.builds(
                Error, st.integers(0, 20), st.text(max_size=10), st.none() | st.integers(0, 9)
            ),
            st.builds(
                Info,
                st.sampled_from(["A", "B", "Z"]),
                st.lists(st.text(max_size=9)).map(tuple),
                st.lists(st.text(max_size=9)).map(tuple),
            ),
            # acknowledgements of keyed values (deltas): unknown keys, future kseqs,
            # sometimes more than a frame holds
            st.lists(st.tuples(sid, st.text(max_size=4), st.integers(0, 1 << 20)), max_size=25).map(
                lambda acks: KeyAck(tuple(x for t in acks for x in t))
            ),
            st.builds(RouteSub, account, pattern, queue, st.integers(-3, 5)),
            st.builds(RouteUnsub, account, pattern, queue),
            st.builds(RouteMessage, queues, account, subject, st.none() | subject, payload),
            st.builds(GatewayMessage, queues, account, subject, st.none() | subject, payload),
            st.builds(GatewaySub, account, pattern, queue),
            st.builds(GatewayUnsub, account, pattern, queue),
            st.builds(NoInterest, account, subject),
            st.builds(AccountNoInterest, account),
            st.builds(AccountInterest, account),
            st.builds(InterestModeStart, account),
            st.builds(InterestModeEnd, account),
            st.builds(
                Hello,
                st.just(PROTOCOL_VERSION) | st.integers(0, 3),
                st.sampled_from(["client", "replicant", "route", "gateway", "node", "x"]),
                st.text(max_size=4),
                st.none() | st.sampled_from(["A", "B", "Z", ""]),
                st.none() | st.sampled_from(["fuzz-token", "bystander-token", "bad"]),
                max_payload=st.integers(0, 1 << 20),
                features=st.lists(
                    st.sampled_from(["interest-only", "x", "keyed-deltas:xor1"]), max_size=2
                ).map(tuple),
                urls=st.lists(st.text(max_size=9), max_size=2).map(tuple),
            ),
        ],
        strict=True,
    )
)
any_frame = st.one_of(*FRAMES.values())


def frames_for(kind: ConnectionKind) -> st.SearchStrategy[Frame]:
    """Mostly frames legal on ``kind`` that keep it open (they get furthest), sometimes any
    frame (most of those close it)."""
    closing = (Opcode.HELLO, Opcode.ERROR)
    legal = st.one_of(*(FRAMES[op] for op in LEGAL_RECEIVE[kind] if op not in closing))
    return st.one_of(legal, legal, legal, any_frame)


ENC = Encoder()


def chunks_for(kind: ConnectionKind) -> st.SearchStrategy[bytes]:
    frames = frames_for(kind)
    return st.one_of(
        frames.map(ENC.encode),
        frames.map(ENC.encode),
        st.lists(frames, min_size=2, max_size=5).map(lambda fs: b"".join(map(ENC.encode, fs))),
        st.binary(max_size=40),
        frames.map(ENC.encode).flatmap(lambda b: st.integers(0, len(b)).map(lambda n: b[:n])),
    )


KINDS = [
    ConnectionKind.CLIENT,
    ConnectionKind.REPLICANT,
    ConnectionKind.ROUTE,
    ConnectionKind.GATEWAY_INBOUND,
    ConnectionKind.GATEWAY_OUTBOUND,
]


def hello_for(kind: ConnectionKind) -> dict[str, object]:
    if kind is ConnectionKind.ROUTE:
        return {"name": "a7", "cluster": "A", "token": "fuzz-cluster-secret"}
    if kind in (ConnectionKind.GATEWAY_INBOUND, ConnectionKind.GATEWAY_OUTBOUND):
        return {"name": "b7", "cluster": "B", "token": "fuzz-gateway-secret"}
    if kind is ConnectionKind.REPLICANT:
        return {"token": "fuzz-replicant-token", "name": "r1"}
    return {"token": "fuzz-token", "features": ("keyed-deltas:xor1",)}


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.value)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_a_hostile_peer_harms_nobody_else(kind: ConnectionKind, data: st.DataObject) -> None:
    handshake = data.draw(st.booleans() | st.just(True), label="handshake")
    chunks = data.draw(st.lists(chunks_for(kind), max_size=12), label="chunks")
    config = meshgate.GatewayConfig(
        name="a0",
        cluster="A",
        listen="memory://a0",
        cluster_listen="memory://a0-r",
        gateway_listen="memory://a0-g",
        users=USERS,
        cluster_secret="fuzz-cluster-secret",
        gateway_secrets={"B": "fuzz-gateway-secret"},
        max_pending_bytes=MAX_PENDING,
        max_payload=4096,
        max_subscriptions=MAX_SUBS,
        replicants=True,
        speculative=("ship.*",),
        keyed_deltas=True,
    )
    h = CoreHarness(config)
    sub = h.open()
    sub.hello(token="bystander-token")
    sub.send(Subscribe(1, "by.>"))
    pub = h.open()
    pub.hello(token="bystander-token")
    sub.received()
    expected: list[bytes] = []

    def exchange(step: int) -> None:
        mark = f"mark-{step}".encode()
        pub.send(Publish("by.x", None, mark))
        expected.append(mark)
        delivered = [f for f in sub.received() if isinstance(f, Message)]
        for m in delivered:  # whatever a peer may inject, it is well-formed and wanted
            assert is_valid_subject(m.subject), m
            assert match("by.>", m.subject), m
            assert m.reply is None or is_valid_subject(m.reply), m
            if kind in (ConnectionKind.CLIENT, ConnectionKind.REPLICANT):
                assert m.payload.startswith(b"mark-"), m  # another account: nothing leaks
        got = [m.payload for m in delivered if m.payload.startswith(b"mark-")]
        assert got == [expected[-1]], (got, expected[-1])
        assert sub.state == pub.state == "OPEN"

    if kind is ConnectionKind.GATEWAY_OUTBOUND:
        peer = h.open(kind, dialed=True, expected_cluster="B")
    else:
        peer = h.open(kind)
    if handshake:
        peer.hello(**hello_for(kind))
    exchange(0)
    for step, data in enumerate(chunks, 1):
        peer.send_bytes(data)
        exchange(step)
        core = h.core
        assert h.pending_bytes() <= 4 * MAX_PENDING + 64 * 1024
        assert core.statistics().subscriptions <= 3 * MAX_SUBS
        assert len(core.graph) <= 4 * MAX_SUBS + 64
    assert set(h.closed) <= {peer.conn_id}
