from __future__ import annotations

import re

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshgate import ErrorCode, RemoteProtocolError
from meshgate.protocol import (
    FRAME_TYPES,
    AccountInterest,
    AccountNoInterest,
    Decoder,
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

name = st.text(min_size=1, max_size=12)
oname = st.none() | name
payload = st.binary(max_size=64)
count = st.integers(0, 2**32)
queues = st.none() | st.lists(name, max_size=3).map(tuple)
names = st.lists(name, max_size=3).map(tuple)
#: a publisher priority (issue 21): the decoder takes any number, the node checks its range
prio = st.none() | st.floats(0.0, 16.0) | st.integers(0, 16)

frames: st.SearchStrategy[Frame] = st.one_of(
    st.builds(Hello, count, name, name, oname, oname, count, names, names),
    st.builds(Publish, name, oname, payload, oname, prio),
    st.builds(Subscribe, count, name, oname),
    st.builds(Unsubscribe, count, st.none() | count),
    st.builds(Message, count, name, oname, payload),
    st.just(Ping()),
    st.just(Pong()),
    st.builds(Error, count, st.text(max_size=40), st.none() | count),
    st.builds(Info, name, names, names),
    st.builds(RouteSub, name, name, oname, count),
    st.builds(RouteUnsub, name, name, oname),
    st.builds(RouteMessage, queues, name, name, oname, payload, oname, prio),
    st.builds(GatewayMessage, queues, name, name, oname, payload, oname, prio),
    st.builds(GatewaySub, name, name, oname),
    st.builds(GatewayUnsub, name, name, oname),
    st.builds(NoInterest, name, name),
    st.builds(AccountNoInterest, name),
    st.builds(AccountInterest, name),
    st.builds(InterestModeStart, name),
    st.builds(InterestModeEnd, name),
)


def test_every_opcode_has_a_generated_frame_type() -> None:
    assert set(FRAME_TYPES) == set(Opcode)


@given(st.lists(frames, max_size=8), st.integers(1, 50))
def test_round_trip_any_chunking(fs: list[Frame], step: int) -> None:
    enc = Encoder()
    data = b"".join(enc.encode(f) for f in fs)
    dec = Decoder(chunk_size=7)
    out: list[Frame] = []
    for i in range(0, len(data), step):
        dec.feed(data[i : i + step])
        out.extend(dec)
    assert out == fs
    assert dec.buffered_bytes == 0


@given(name, oname, payload, st.lists(st.integers(0, 2**31), min_size=1, max_size=4))
def test_shared_tail_encoding_equals_full_encoding(
    subject: str, reply: str | None, data: bytes, sids: list[int]
) -> None:
    enc = Encoder()
    tail = enc.message_tail(subject, reply, data)
    for sid in sids:
        assert enc.message_prefix(sid) + tail == enc.encode(Message(sid, subject, reply, data))
    rtail = enc.relay_tail("acc", subject, reply, data)
    for qs in [None, ("q1",), ("q1", "q2")]:
        assert enc.relay_prefix(Opcode.GMSG, qs) + rtail == enc.encode(
            GatewayMessage(qs, "acc", subject, reply, data)
        )


def fail_reason(data: bytes, **limits: int) -> RemoteProtocolError:
    dec = Decoder(**limits)
    with pytest.raises(RemoteProtocolError) as info:
        dec.feed(data)
        while dec.next_raw() is not None:
            pass
        raise AssertionError("decoder accepted hostile input")
    # the decoder stays failed
    with pytest.raises(RemoteProtocolError):
        dec.feed(b"\x90")
    with pytest.raises(RemoteProtocolError):
        dec.next_raw()
    return info.value


@pytest.mark.parametrize(
    ("data", "code", "reason"),
    [
        (b"\xc1", ErrorCode.MALFORMED, "malformed msgpack"),
        (msgpack.packb(5), ErrorCode.MALFORMED, "non-empty msgpack array"),
        (msgpack.packb([]), ErrorCode.MALFORMED, "non-empty msgpack array"),
        (msgpack.packb(["x"]), ErrorCode.MALFORMED, "integer opcode"),
        (msgpack.packb([99]), ErrorCode.UNKNOWN_OPCODE, "unknown opcode 99"),
        (msgpack.packb([1, "a", None]), ErrorCode.MALFORMED, "takes 4 fields"),
        (msgpack.packb([1, "a", None, "not-bytes", None]), ErrorCode.MALFORMED, "binary"),
        (msgpack.packb([1, 7, None, b"", None]), ErrorCode.MALFORMED, "a string"),
        (msgpack.packb([2, -1, "a", None]), ErrorCode.MALFORMED, "non-negative"),
        (msgpack.packb([2, True, "a", None]), ErrorCode.MALFORMED, "non-negative"),
        (msgpack.packb([18, [1], "a", "s", None, b""]), ErrorCode.MALFORMED, "array of names"),
        (msgpack.packb([0, {"version": 1}]), ErrorCode.MALFORMED, "lacks required key"),
        (
            msgpack.packb([0, {"version": "1", "role": "client", "name": "n"}]),
            ErrorCode.MALFORMED,
            "wrong type",
        ),
        (msgpack.packb([0, [1]]), ErrorCode.MALFORMED, "must be \\[opcode, map\\]"),
        (msgpack.packb([1, "a" * 2000, None, b"", None]), ErrorCode.INVALID_SUBJECT, "longer"),
        (msgpack.packb({1: 2}), ErrorCode.MALFORMED, "malformed msgpack"),
    ],
)
def test_hostile_frames(data: bytes, code: ErrorCode, reason: str) -> None:
    err = fail_reason(data)
    assert err.code is code
    assert err.reason
    assert re.search(reason, err.reason), err.reason


def test_oversized_frame_is_refused_before_it_is_complete() -> None:
    dec = Decoder(max_frame_bytes=1000, chunk_size=256)
    frame = msgpack.packb([1, "a", None, b"x" * 100_000, None])
    with pytest.raises(RemoteProtocolError) as info:
        dec.feed(frame[:5000])  # still incomplete
        dec.next_raw()
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE
    assert dec.failed is info.value


def test_huge_declared_lengths_do_not_allocate() -> None:
    # array32 header claiming 4 billion elements; bin32 claiming 4 GiB
    for data in (b"\xdd\xff\xff\xff\xff", b"\x94\x01\xa1a\xc0\xc6\xff\xff\xff\xff"):
        dec = Decoder(max_frame_bytes=1 << 16)
        with pytest.raises(RemoteProtocolError):
            dec.feed(data + b"\x00" * (1 << 17))
            while dec.next_raw() is not None:
                pass


def test_deep_nesting() -> None:
    deep = b"\x91" * 5000 + b"\x00"
    assert fail_reason(deep).code is ErrorCode.MALFORMED
    nested_hello = msgpack.packb(
        [0, {"version": 1, "role": "client", "name": "n", "extra": [[[[[1]]]]]}]
    )
    assert "nests too deeply" in fail_reason(nested_hello).reason
    # the same extra key, shallow, is ignored for forward compatibility
    shallow = msgpack.packb([0, {"version": 1, "role": "client", "name": "n", "extra": [1]}])
    dec = Decoder()
    dec.feed(shallow)
    assert dec.next_frame() == Hello(1, "client", "n")


def test_truncated_frame_waits_without_error() -> None:
    data = Encoder().encode(Publish("a.b", "r", b"payload", None))
    for cut in range(len(data)):
        dec = Decoder()
        dec.feed(data[:cut])
        assert dec.next_raw() is None
        dec.feed(data[cut:])
        assert dec.next_frame() == Publish("a.b", "r", b"payload", None)


@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_else(data: bytes) -> None:
    dec = Decoder(max_frame_bytes=256, chunk_size=32, max_array_len=8, max_map_len=8)
    try:
        dec.feed(data)
        for _ in range(len(data) + 1):
            if dec.next_frame() is None:
                break
    except RemoteProtocolError:
        assert dec.failed is not None
    assert dec.buffered_bytes <= 256 + 32 or dec.failed is not None


@given(st.lists(frames, min_size=1, max_size=4), st.data())
def test_corrupted_stream_raises_only_protocol_errors(fs: list[Frame], data: st.DataObject) -> None:
    raw = bytearray(b"".join(Encoder().encode(f) for f in fs))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255))
    dec = Decoder()
    try:
        dec.feed(bytes(raw))
        list(dec)
    except RemoteProtocolError:
        pass


@given(st.lists(frames, max_size=6), st.lists(frames, max_size=6), st.integers(1, 40), st.data())
def test_decoders_sharing_an_unpacker_pool_never_mix_streams(
    fa: list[Frame], fb: list[Frame], step: int, data: st.DataObject
) -> None:
    from meshgate.protocol import UnpackerPool

    enc = Encoder()
    pool = UnpackerPool(max_size=1)
    streams = [b"".join(enc.encode(f) for f in fs) for fs in (fa, fb)]
    decoders = [Decoder(pool=pool, chunk_size=16), Decoder(pool=pool, chunk_size=16)]
    out: list[list[Frame]] = [[], []]
    pos = [0, 0]
    while pos[0] < len(streams[0]) or pos[1] < len(streams[1]):
        i = data.draw(st.sampled_from([k for k in (0, 1) if pos[k] < len(streams[k])]))
        chunk = streams[i][pos[i] : pos[i] + step]
        pos[i] += len(chunk)
        decoders[i].feed(chunk)
        out[i].extend(decoders[i])
    assert out == [fa, fb]
    assert decoders[0].buffered_bytes == decoders[1].buffered_bytes == 0
