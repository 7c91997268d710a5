"""The NATS port under hostile input: whatever bytes a NATS client sends, the node never
raises, answers with at most a NATS error, and every other connection carries on."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import meshgate
from meshgate.protocol import Message, Publish, Subscribe
from meshgate.protocol.nats import NatsParser, NatsProtocolError
from meshgate.testing import CoreHarness

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))

# fragments of real operations, so that the fuzzer reaches deep into the parser
_PIECES = [
    b"CONNECT {}\r\n",
    b'CONNECT {"verbose":true,"echo":false,"headers":true,"no_responders":true}\r\n',
    b"PUB a 1\r\nx\r\n",
    b"PUB a r 0\r\n\r\n",
    b"HPUB a 12 13\r\nNATS/1.0\r\n\r\ny\r\n",
    b"HPUB $IN.e 31 32\r\nNATS/1.0\r\nMeshgate-Seq: 1\r\n\r\nz\r\n",
    b"SUB a 1\r\n",
    b"SUB a q 2\r\n",
    b"SUB $MG.notice 3\r\n",
    b"UNSUB 1\r\n",
    b"UNSUB 2 5\r\n",
    b"PING\r\n",
    b"PONG\r\n",
    b"MSG a 1 1\r\nx\r\n",
    b"INFO {}\r\n",
    b"-ERR 'x'\r\n",
    b"+OK\r\n",
    b"PUB a 99999999\r\n",
    b"\r\n",
    b" ",
    b"\xff\xfe",
    b"SUB \xc3\x28 1\r\n",
]
inputs = st.lists(st.one_of(st.sampled_from(_PIECES), st.binary(max_size=40)), max_size=12).map(
    b"".join
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(data=inputs, chunk=st.integers(min_value=1, max_value=64))
def test_hostile_nats_bytes_harm_nobody_else(data: bytes, chunk: int) -> None:
    h = CoreHarness(
        meshgate.GatewayConfig(replicants=True, max_payload=1024, max_pending_bytes=4096)
    )
    bystander = h.open()
    bystander.hello()
    bystander.send(Subscribe(1, "a"))
    bystander.received()
    publisher = h.open()
    publisher.hello()
    hostile = h.open(nats=True)
    for i in range(0, len(data), chunk):  # the same bytes, split anywhere
        hostile.send_bytes(data[i : i + chunk])
    out = hostile.take_bytes()
    assert out.startswith(b"INFO {")
    # at most one error, and then nothing more
    if b"-ERR" in out:
        assert out.count(b"-ERR") == 1 or hostile.state == "OPEN"
    # the node carries on for everyone else
    publisher.send(Publish("a", None, b"still here"))
    got = [f for f in bystander.received() if isinstance(f, Message)]
    assert got[-1].payload == b"still here"


@settings(max_examples=EXAMPLES, deadline=None)
@given(data=st.binary(max_size=300))
def test_the_parser_raises_only_protocol_errors(data: bytes) -> None:
    parser = NatsParser(max_control_line=64, max_payload=128)
    parser.feed(data)
    try:
        while parser.next() is not None:
            pass
    except (NatsProtocolError, UnicodeDecodeError):
        pass
    assert parser.buffered <= len(data)


_subjects = st.sampled_from(["a", "a.b", "game.cell.1.2", "x" * 40])
_ops = st.one_of(
    st.tuples(_subjects, st.none() | _subjects, st.binary(max_size=40)).map(
        lambda t: (
            b"PUB %s%s %d\r\n%s\r\n"
            % (t[0].encode(), b" " + t[1].encode() if t[1] else b"", len(t[2]), t[2])
        )
    ),
    st.just(b"PING\r\n"),
    st.just(b"SUB a.* q 1\r\n"),
    st.just(b"HPUB a 12 14\r\nNATS/1.0\r\n\r\nhi\r\n"),
)
#: a PUB whose payload runs past its declared size (a line seen before must not be
#: trusted for the bytes after it)
_bad_pub = st.tuples(_subjects, st.integers(min_value=0, max_value=3)).map(
    lambda t: b"PUB %s %d\r\n%sX\r\n" % (t[0].encode(), t[1], b"y" * t[1])
)


_leaf_ops = st.one_of(
    st.tuples(_subjects, st.none() | _subjects, st.binary(max_size=30)).map(
        lambda t: (
            b"LMSG %s%s %d\r\n%s\r\n"
            % (t[0].encode(), b" " + t[1].encode() if t[1] else b"", len(t[2]), t[2])
        )
    ),
    st.tuples(_subjects, st.sampled_from([b"+ r", b"|"]), st.binary(max_size=30)).map(
        lambda t: b"LMSG %s %s q1 q2 %d\r\n%s\r\n" % (t[0].encode(), t[1], len(t[2]), t[2])
    ),
    st.just(b"LS+ a.* q 2\r\n"),
    st.just(b"PING\r\n"),
    st.just(b"HMSG a r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n"),
)


def _batch(parser: NatsParser) -> list[tuple[object, ...]]:
    """What the batched hot path takes, in the form next() gives it."""
    if parser.leaf:
        return [("LMSG", s, r, q, None, p) for s, r, q, p in parser.lmsgs()]
    return [("PUB", s, r, None, p) for s, r, p in parser.pubs()]


def _ops_of(parser: NatsParser, batched: bool) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    while True:
        if batched:
            out += _batch(parser)
        op = parser.next()
        if op is None:
            return out
        out.append(op)


@settings(max_examples=EXAMPLES, deadline=None)
@given(data=st.data(), chunk=st.integers(min_value=1, max_value=50))
@pytest.mark.parametrize("leaf", [False, True], ids=["client", "leaf"])
def test_the_batched_path_parses_what_next_parses(
    leaf: bool, data: st.DataObject, chunk: int
) -> None:
    """pubs() (a client's PUBs) and lmsgs() (a leaf connection's LMSGs) take exactly
    what next() would have given, however the bytes are split."""
    ops = data.draw(st.lists(_leaf_ops if leaf else _ops, max_size=20))
    bad = None if leaf else data.draw(st.none() | _bad_pub)
    if bad is not None:  # somewhere in the stream, and the same good lines around it
        at = data.draw(st.integers(min_value=0, max_value=len(ops)))
        ops = [*ops[:at], bad, *ops[at:]]
    stream = b"".join(ops)
    got: dict[bool, list[tuple[object, ...]]] = {}
    for batched in (False, True):
        parser = NatsParser(leaf=leaf)
        seen: list[tuple[object, ...]] = []
        try:
            for i in range(0, len(stream), chunk):
                parser.feed(stream[i : i + chunk])
                seen += _ops_of(parser, batched=batched)
        except NatsProtocolError as exc:
            seen.append(("error", str(exc)))
        got[batched] = seen
    assert got[True] == got[False]
    if bad is None:
        assert len(got[False]) == len(ops)
    else:
        assert got[False][-1] == ("error", "Parser Error")
