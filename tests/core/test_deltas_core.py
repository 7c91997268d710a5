"""Deltas against acknowledged keyed state (issue 21, part 4) inside the node core,
with the real sans-IO ClientProtocol on the far end: acknowledgements, deltas, the
repair when a baseline is missing, bounds and bad acknowledgements."""

from __future__ import annotations

import random
from typing import Any

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from meshgate import User
from meshgate.client import ClientProtocol, Message
from meshgate.protocol import (
    ACK_STRIDE,
    DELTA_FEATURE,
    KEY_SLOTS,
    KEY_SLOTS_FEATURE,
    ConnectionKind,
    Decoder,
    DeltaError,
    Encoder,
    KeyAck,
    Opcode,
    Publish,
    RemoteProtocolError,
    Subscribe,
    XorDelta,
)
from meshgate.testing import CoreHarness, CorePeer

from .helpers import node_config, open_peer

_FEATURE = DELTA_FEATURE + XorDelta.name


class _Client:
    """A ClientProtocol wired to a core connection (bytes pumped both ways)."""

    def __init__(self, h: CoreHarness, **kw: Any) -> None:
        self.got: list[tuple[int, Message]] = []
        self.proto = ClientProtocol(on_message=lambda sid, m: self.got.append((sid, m)), **kw)
        self.peer = h.open(ConnectionKind.CLIENT)
        self.proto.connection_made(h.now)
        self.raw = bytearray()  # every byte the node sent
        self.up = bytearray()  # every byte the client sent
        self.pump()

    def pump(self, up: bool = True, down: bool = True) -> None:
        """Move bytes until quiet: ``up`` the client's writes (acknowledgements) to the
        node, ``down`` the node's to the client."""
        for _ in range(10):
            out = self.proto.data_to_send() if up else b""
            if out:
                self.up += out
                self.peer.send_bytes(bytes(out))
            data = self.peer.take_bytes() if down else b""
            if data:
                self.raw += data
                self.proto.receive_data(data)
            if not out and not data:
                return


def _entity(i: int, step: int) -> bytes:
    """The demo's entity-state pattern: a msgpack map, position moving a little."""
    return msgpack.packb(
        {
            "id": f"ship-{i}",
            "x": 100.0 + i + step * 0.5,
            "y": 50.0 - i,
            "hp": 100,
            "kind": "frigate",
        }
    )


def _setup(**config: object) -> tuple[CoreHarness, CorePeer]:
    h = CoreHarness(node_config(**config))
    pub = open_peer(h, ConnectionKind.CLIENT)
    return h, pub


def _frames(data: bytes) -> list[tuple[Any, ...]]:
    dec = Decoder()
    dec.feed(data)
    out = []
    while (f := dec.next_raw()) is not None:
        out.append(f)
    return out


def test_deltas_after_ack_and_values_equal() -> None:
    h, pub = _setup(keyed_deltas=True)
    c = _Client(h)
    assert c.proto.deltas
    sid = c.proto.subscribe("ships.>")
    c.pump()
    published = []
    for step in range(10):
        for i in range(5):
            v = _entity(i, step)
            published.append(v)
            pub.send(Publish(f"ships.{i}", None, v, key=f"s{i}"))
        c.pump()
    assert [m.payload for s, m in c.got if s == sid] == published
    st = h.core.statistics()
    assert st.delta_msgs == 45  # the first value of each key goes whole
    assert st.delta_full_msgs == 5
    # acknowledged: the first value of each key, then every ACK_STRIDE-th (1, 5, 9)
    assert st.delta_acks == 5 * 3
    assert st.delta_bytes_saved > 0
    deltas = [f for f in _frames(bytes(c.raw)) if f[0] == Opcode.MSG and len(f) == 8]
    assert len(deltas) == 45
    for f in deltas:  # each says which acknowledged value it is against
        assert f[7] == 1 + (f[5] - 2) // ACK_STRIDE * ACK_STRIDE


def test_off_by_default_and_client_without_codec() -> None:
    h, pub = _setup()
    c = _Client(h)
    assert not c.proto.deltas
    c.proto.subscribe("ships.>")
    c.pump()
    for step in range(3):
        pub.send(Publish("ships.1", None, _entity(1, step), key="s1"))
    c.pump()
    assert all(len(f) == 5 for f in _frames(bytes(c.raw)) if f[0] == Opcode.MSG)
    assert h.core.statistics().delta_full_msgs == 0
    # deltas on at the node, but this client announces no codec: full values, no kseq
    h2, pub2 = _setup(keyed_deltas=True)
    c2 = _Client(h2, delta_codec=None)
    c2.proto.subscribe("ships.>")
    c2.pump()
    for step in range(3):
        pub2.send(Publish("ships.1", None, _entity(1, step), key="s1"))
    c2.pump()
    assert [len(f) for f in _frames(bytes(c2.raw)) if f[0] == Opcode.MSG] == [5, 5, 5]
    assert len(c2.got) == 3


class _LosingCodec(XorDelta):
    """Decodes like XorDelta, except once: as if the client had lost the baseline."""

    lose = False

    def decode(self, baseline: bytes, delta: bytes) -> bytes:
        if self.lose:
            self.lose = False
            raise DeltaError("lost")
        return super().decode(baseline, delta)


class _OtherCodec(XorDelta):
    name = "other1"


def test_codec_names_must_match() -> None:
    h, pub = _setup(keyed_deltas=True)
    c = _Client(h, delta_codec=_OtherCodec())
    assert not c.proto.deltas
    c.proto.subscribe("ships.>")
    c.pump()
    for step in range(3):
        pub.send(Publish("ships.1", None, _entity(1, step), key="s1"))
    c.pump()
    assert [len(f) for f in _frames(bytes(c.raw)) if f[0] == Opcode.MSG] == [5, 5, 5]


def test_missing_baseline_is_repaired_by_the_next_full_value() -> None:
    """A client that does not hold the baseline a delta names drops it, tells the node
    (an acknowledgement of kseq 0), and the next value of the key comes whole."""
    h, pub = _setup(keyed_deltas=True)
    raw = open_peer(h, ConnectionKind.CLIENT, handshake=False)
    raw.hello(features=(_FEATURE,))
    raw.received()
    raw.send(Subscribe(1, "ships.>", None))
    raw.received()
    pub.send(Publish("ships.1", None, _entity(1, 0), key="s1"))
    assert [len(f) for f in _frames(raw.take_bytes())] == [7]
    raw.send(KeyAck((1, "s1", 1)))
    pub.send(Publish("ships.1", None, _entity(1, 1), key="s1"))
    (f,) = _frames(raw.take_bytes())
    assert len(f) == 8
    assert f[5] == 2
    assert f[7] == 1
    raw.send(KeyAck((1, "s1", 0)))  # "I do not hold it"
    pub.send(Publish("ships.1", None, _entity(1, 2), key="s1"))
    (f,) = _frames(raw.take_bytes())
    assert len(f) == 7
    assert f[4] == _entity(1, 2)
    assert h.core.statistics().delta_resets == 1
    # the real client does the same: its bases gone, it drops the delta and asks again
    codec = _LosingCodec()
    c = _Client(h, delta_codec=codec)
    sid = c.proto.subscribe("ships.>")
    c.pump()
    pub.send(Publish("ships.2", None, _entity(2, 0), key="s2"))
    c.pump()
    codec.lose = True  # the next delta does not decode (as when the baseline is gone)
    pub.send(Publish("ships.2", None, _entity(2, 1), key="s2"))
    c.pump()
    assert c.proto.deltas_missed == 1
    pub.send(Publish("ships.2", None, _entity(2, 2), key="s2"))
    c.pump()
    assert [m.payload for s, m in c.got if s == sid] == [_entity(2, 0), _entity(2, 2)]
    # the value that came whole is acknowledged at once (not ACK_STRIDE values later),
    # so the key's next value is a delta again
    codec.lose = False
    pub.send(Publish("ships.2", None, _entity(2, 3), key="s2"))
    c.pump()
    last = [f for f in _frames(bytes(c.raw)) if f[0] == Opcode.MSG][-1]
    assert len(last) == 8
    assert last[7] == 3


def test_bad_acks_are_ignored_counted_and_bounded() -> None:
    h, pub = _setup(keyed_deltas=True, scheduler_max_keys=8)
    raw = open_peer(h, ConnectionKind.CLIENT, handshake=False)
    raw.hello(features=(_FEATURE,))
    raw.received()
    raw.send(Subscribe(1, "ships.>", None))
    raw.received()
    other = _Client(h)
    osid = other.proto.subscribe("ships.>")
    other.pump()
    pub.send(Publish("ships.1", None, _entity(1, 0), key="s1"))
    raw.take_bytes()
    raw.send(KeyAck((1, "never-sent", 1)))  # a key never sent
    raw.send(KeyAck((1, "s1", 99)))  # a sequence from the future
    raw.send(KeyAck((7, "s1", 1)))  # a subscription it does not have
    for n in range(100):  # a flood: each ignored, counted, nothing kept
        raw.send(KeyAck(tuple(x for i in range(21) for x in (1, f"k{n}.{i}", i + 1))))
    st = h.core.statistics()
    assert st.delta_acks == 0
    assert st.delta_acks_ignored == 3 + 2100
    assert raw.state == "OPEN"
    assert not raw.errors()
    for i in range(20):  # more keys than the table holds: full values, no kseq
        pub.send(Publish(f"ships.{i}", None, _entity(i, 1), key=f"s{i}"))
    lens = [len(f) for f in _frames(raw.take_bytes())]
    assert lens.count(5) == 12  # 8 keys tracked; both clients count their 12 others
    assert h.core.statistics().delta_untracked == 24
    other.pump()
    assert len([1 for s, _ in other.got if s == osid]) == 21  # everyone else carries on
    # a client without deltas acknowledging: ignored and counted
    plain = open_peer(h, ConnectionKind.CLIENT)
    plain.send(KeyAck((1, "s1", 1)))
    assert plain.state == "OPEN"
    assert h.core.statistics().delta_acks_ignored == 3 + 2100 + 1
    # more than a frame holds: malformed, an error to that connection only
    flood = tuple(x for i in range(22) for x in (1, f"k{i}", i + 1))
    raw.send(KeyAck(flood))
    assert raw.state != "OPEN"
    pub.send(Publish("ships.1", None, _entity(1, 2), key="s1"))
    other.pump()
    assert len([1 for s, _ in other.got if s == osid]) == 22


def test_malformed_ack_is_an_error_to_its_sender_only() -> None:
    h, pub = _setup(keyed_deltas=True)
    raw = open_peer(h, ConnectionKind.CLIENT, handshake=False)
    raw.hello(features=(_FEATURE,))
    raw.received()
    raw.send_bytes(Encoder().encode_raw(int(Opcode.KACK), [1, "s1"]))  # not triples
    assert raw.state != "OPEN"
    other = _Client(h)
    other.proto.subscribe("x")
    other.pump()
    pub.send(Publish("x", None, b"1", key="k"))
    other.pump()
    assert len(other.got) == 1


def test_scheduled_client_gets_deltas_within_its_budget() -> None:
    users = (
        User(token="pub-token", name="pub"),
        User(token="slow-token", name="slow", client_bandwidth=20_000),
    )
    h = CoreHarness(
        node_config(users=users, trusted_network=True, keyed_deltas=True, send_interval=0.05)
    )
    pub = open_peer(h, ConnectionKind.CLIENT, handshake=False)
    pub.hello(token="pub-token")
    pub.received()
    c = _Client(h, token="slow-token")
    sid = c.proto.subscribe("ships.>")
    c.pump()
    last: dict[str, bytes] = {}
    for step in range(40):
        for i in range(30):
            v = _entity(i, step)
            last[f"ships.{i}"] = v
            pub.send(Publish(f"ships.{i}", None, v, key=f"s{i}"))
        h.tick(h.now + 0.05)
        c.pump()
    for _ in range(20):  # let the scheduler catch up
        h.tick(h.now + 0.05)
        c.pump()
    newest: dict[str, bytes] = {}
    for s, m in c.got:
        if s == sid:
            newest[m.subject] = m.payload
    assert newest == last  # every key ends on the published newest value
    st = h.core.statistics()
    assert st.delta_msgs > 0
    assert st.scheduled_superseded > 0


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300))
def test_xor_codec_round_trip(baseline: bytes, value: bytes) -> None:
    codec = XorDelta()
    delta = codec.encode(baseline, value)
    if delta is not None:
        assert len(delta) < len(value)
        assert codec.decode(baseline, delta) == value


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.data())
def test_xor_codec_round_trip_near_values(baseline: bytes, data: st.DataObject) -> None:
    """Values a few bytes off their baseline (what keyed state is) always delta."""
    codec = XorDelta()
    value = bytearray(baseline)
    for _ in range(data.draw(st.integers(0, 3))):
        i = data.draw(st.integers(0, len(value) - 1))
        value[i] = data.draw(st.integers(0, 255))
    value += data.draw(st.binary(max_size=3))
    delta = codec.encode(baseline, bytes(value))
    if len(value) > 24:
        assert delta is not None
    if delta is not None:
        assert codec.decode(baseline, delta) == value


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.binary(max_size=40), st.booleans(), st.booleans()),
        min_size=1,
        max_size=60,
    )
)
# acknowledged early, then more values delivered than the client keeps while the later
# acknowledgements wait: the node's baseline must still be one the client holds
@example([(0, b"a", True, True), (0, b"b", True, True)] + [(0, b"c", False, True)] * 10)
def test_delivered_values_equal_published(ops: list[tuple[int, bytes, bool, bool]]) -> None:
    """With deltas on, whatever the timing of deliveries and acknowledgements, a client
    delivers exactly the values published, in order."""
    h, pub = _setup(keyed_deltas=True)
    c = _Client(h)
    sid = c.proto.subscribe("e.>")
    c.pump()
    published = []
    base = {k: bytes(40) for k in range(4)}
    for k, noise, up, down in ops:
        v = bytearray(base[k])
        v[: len(noise)] = noise
        base[k] = bytes(v)
        published.append(base[k])
        pub.send(Publish(f"e.{k}", None, base[k], key=f"k{k}"))
        c.pump(up, down)
    c.pump()
    assert [m.payload for s, m in c.got if s == sid] == published


def test_deltas_on_the_datagram_lane() -> None:
    """Over QUIC: deltas go as datagrams (with their base), every ``datagram_refresh``-th
    value whole on the stream; lost datagrams cost nothing but their own value."""
    h, pub = _setup(keyed_deltas=True, datagram_refresh=4)
    got: list[Message] = []
    proto = ClientProtocol(on_message=lambda sid, m: got.append(m))
    peer = h.open(ConnectionKind.CLIENT)
    conn = h.core.conns[peer.conn_id]
    h.core.enable_datagrams(conn, 1200)
    proto.connection_made(h.now)

    def pump(lose: bool = False) -> None:
        for _ in range(10):
            out = proto.data_to_send()
            if out:
                peer.send_bytes(bytes(out))
            data = peer.take_bytes()
            if data:
                proto.receive_data(data)
            grams = h.core.take_datagrams(conn)
            for d in grams:
                if not lose:
                    proto.receive_datagram(d)
            if not out and not data and not grams:
                return

    pump()
    proto.subscribe("ships.>")
    pump()
    published = []
    for step in range(12):
        v = _entity(1, step)
        published.append(v)
        pub.send(Publish("ships.1", None, v, key="s1"))
        pump(lose=step in (5, 6))
    delivered = [m.payload for m in got]
    assert delivered == [v for i, v in enumerate(published) if i not in (5, 6)]
    assert sum(1 for m in got if m.unreliable) > 0
    st = h.core.statistics()
    assert st.delta_msgs > 0
    assert st.datagrams_out > 0
    assert st.datagram_refreshes == 3  # kseq 4, 8, 12 went whole on the stream


# -- never paying for nothing: keys whose deltas do not pay are given up ------------------
# (docs/scheduling.md: GIVE_UP_AFTER = 4 values in a row, pauses of 16 values doubling to
# 1024, a probe off the wire at the end of each pause)


def _noise(rng: random.Random, size: int = 16) -> bytes:
    """State no XOR delta shrinks (every byte changes, like a bare double position)."""
    return bytes(rng.randrange(1, 256) for _ in range(size))


def _run_key(values: list[bytes], deltas: bool, up: bool = True) -> tuple[int, _Client, Any]:
    """Publish ``values`` of one key to one client; the bytes it received, the client
    and the node's statistics."""
    h, pub = _setup(keyed_deltas=deltas)
    c = _Client(h)
    sid = c.proto.subscribe("e.>")
    c.pump()
    start = len(c.raw)
    for v in values:
        pub.send(Publish("e.ship1", None, v, key="ship1"))
        c.pump(up=up)
    assert [m.payload for s, m in c.got if s == sid] == values
    return len(c.raw) - start, c, h.core.statistics()


def test_incompressible_key_is_given_up_and_costs_almost_nothing() -> None:
    rng = random.Random(7)
    values = [_noise(rng) for _ in range(400)]
    off, _, _ = _run_key(values, False)
    on, c, st = _run_key(values, True)
    assert st.delta_gave_up >= 1
    assert st.delta_skipped > 350
    assert st.delta_msgs == 0
    # numbered values: the first, then GIVE_UP_AFTER attempts; the rest plain
    numbered = [f for f in _frames(bytes(c.raw)) if f[0] == Opcode.MSG and len(f) >= 7]
    assert len(numbered) == 5
    assert on <= off * 1.03, (on, off)


def test_given_up_key_acks_nothing_and_client_never_acking_is_given_up() -> None:
    rng = random.Random(3)
    values = [_noise(rng) for _ in range(60)]
    # a client that never acknowledges: DELTA_WINDOW values, then GIVE_UP_AFTER misses
    _, c, st = _run_key(values, True, up=False)
    numbered = [f for f in _frames(bytes(c.raw)) if f[0] == Opcode.MSG and len(f) >= 7]
    assert len(numbered) == 8 + 4
    assert st.delta_gave_up == 1
    # a client that acknowledges: plain values are not acknowledged, nothing is ignored
    _, c, st = _run_key(values, True)
    assert st.delta_acks_ignored == 0
    assert c.proto.data_to_send() == b""


def test_given_up_key_resumes_when_its_state_changes_shape() -> None:
    rng = random.Random(5)
    noisy = [_noise(rng, 64) for _ in range(10)]
    record = bytearray(64)
    calm = []
    for i in range(60):  # a record where one byte changes per value: deltas pay
        record[i % 64] = i + 1
        calm.append(bytes(record))
    _, _, st = _run_key(noisy + calm, True)
    assert st.delta_gave_up == 1
    assert st.delta_probes >= 1
    # tracked again after the first pause: most calm values went as deltas
    assert st.delta_msgs > 30


def test_pauses_double_up_to_a_bound() -> None:
    rng = random.Random(11)
    values = [_noise(rng, 8) for _ in range(5000)]
    _, _, st = _run_key(values, True)
    # given up after value 5; probes after pauses of 16, 32, ..., 1024, 1024, ...
    at, pause, probes = 5, 16, 0
    while at + pause <= len(values):
        at += pause
        probes += 1
        pause = min(2 * pause, 1024)
    assert st.delta_probes == probes == 9
    assert st.delta_gave_up == 1


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32), st.lists(st.tuples(st.booleans(), st.booleans()), max_size=120))
def test_incompressible_state_never_pays_more_than_a_bounded_start(
    seed: int, timing: list[tuple[bool, bool]]
) -> None:
    """Whatever the timing of deliveries and acknowledgements, a key whose values no
    delta shrinks carries kseq on at most DELTA_WINDOW + GIVE_UP_AFTER values (unless a
    probe finds its deltas would pay), and every value arrives, in order."""
    rng = random.Random(seed)
    h, pub = _setup(keyed_deltas=True)
    c = _Client(h)
    sid = c.proto.subscribe("e.>")
    c.pump()
    values = []
    for up, down in timing:
        v = _noise(rng, 24)
        values.append(v)
        pub.send(Publish("e.k", None, v, key="k"))
        c.pump(up, down)
    c.pump()
    assert [m.payload for s, m in c.got if s == sid] == values
    numbered = [f for f in _frames(bytes(c.raw)) if f[0] == Opcode.MSG and len(f) >= 7]
    assert len(numbered) <= 8 + 4 + h.core.statistics().delta_probes


# -- key slots: a tracked key costs a small integer once the client has it ------------------


def test_key_slots_name_a_key_once_then_by_number() -> None:
    h, pub = _setup(keyed_deltas=True)
    raw = open_peer(h, ConnectionKind.CLIENT, handshake=False)
    raw.hello(features=(_FEATURE, KEY_SLOTS_FEATURE))
    raw.received()
    raw.send(Subscribe(1, "ships.>", None))
    raw.received()
    pub.send(Publish("ships.1", None, _entity(1, 0), key="ship-one"))
    pub.send(Publish("ships.1", None, _entity(1, 1), key="ship-one"))
    a, b = _frames(raw.take_bytes())
    assert a[6] == b[6] == (0, "ship-one")  # named with its slot until acknowledged
    raw.send(KeyAck((1, 0, 2)))  # acknowledged by slot
    pub.send(Publish("ships.1", None, _entity(1, 2), key="ship-one"))
    (c,) = _frames(raw.take_bytes())
    assert len(c) == 8  # a delta against value 2 ...
    assert c[7] == 2
    assert c[6] == 0  # ... naming its key by slot alone
    raw.send(KeyAck((1, 0, 0)))  # "I hold no baseline": the key is named again
    pub.send(Publish("ships.1", None, _entity(1, 3), key="ship-one"))
    (d,) = _frames(raw.take_bytes())
    assert d[6] == (0, "ship-one")
    raw.send(KeyAck((1, 5, 1)))  # a slot never given: ignored, counted
    assert h.core.statistics().delta_acks_ignored == 1
    # a client that does not announce key slots gets names only
    old = open_peer(h, ConnectionKind.CLIENT, handshake=False)
    old.hello(features=(_FEATURE,))
    old.received()
    old.send(Subscribe(1, "ships.>", None))
    old.received()
    pub.send(Publish("ships.1", None, _entity(1, 4), key="ship-one"))
    (e,) = _frames(old.take_bytes())
    assert e[6] == "ship-one"


def test_key_slots_with_the_real_client_and_slots_reused() -> None:
    h, pub = _setup(keyed_deltas=True)
    c = _Client(h)
    sid = c.proto.subscribe("a.>")
    c.pump()
    published = []
    for step in range(6):
        for i in range(3):
            v = _entity(i, step)
            published.append((f"a.{i}", v))
            pub.send(Publish(f"a.{i}", None, v, key=f"ship-{i}"))
        c.pump()
    keyed = [f for f in _frames(bytes(c.raw)) if f[0] == Opcode.MSG]
    assert {f[6] for f in keyed[3:]} <= {0, 1, 2}  # after the first round: slots alone
    acks = [f[1] for f in _frames(bytes(c.up)) if f[0] == Opcode.KACK]
    assert acks
    assert all(type(a[i + 1]) is int for a in acks for i in range(0, len(a), 3))  # by slot
    # the subscription ends; a new one's keys take the freed slots, named anew
    c.proto.unsubscribe(sid)
    sid2 = c.proto.subscribe("b.>")
    c.pump()
    mark = len(c.raw)
    for step in range(4):
        for i in range(3):
            v = _entity(10 + i, step)
            published.append((f"b.{i}", v))
            pub.send(Publish(f"b.{i}", None, v, key=f"other-{i}"))
        c.pump()
    got = [(m.subject, m.payload) for _, m in c.got]
    assert got == published
    fresh = [f for f in _frames(bytes(c.raw[mark:])) if f[0] == Opcode.MSG]
    assert fresh[0][1] == sid2
    assert {f[6][0] for f in fresh[:3]} == {0, 1, 2}
    assert {f[6][1] for f in fresh[:3]} == {"other-0", "other-1", "other-2"}
    assert c.proto.deltas_missed == 0
    assert h.core.statistics().delta_acks_ignored == 0


def test_a_slot_the_client_does_not_hold_is_dropped_and_named_again() -> None:
    got: list[Message] = []
    proto = ClientProtocol(on_message=lambda sid, m: got.append(m))
    h, _ = _setup(keyed_deltas=True)
    peer = h.open(ConnectionKind.CLIENT)
    proto.connection_made(h.now)
    for _ in range(3):
        out = proto.data_to_send()
        if out:
            peer.send_bytes(bytes(out))
        data = peer.take_bytes()
        if data:
            proto.receive_data(data)
    assert proto.deltas
    sid = proto.subscribe("x.>")
    peer.send_bytes(bytes(proto.data_to_send()))
    enc = Encoder()
    # a keyed MSG naming slot 7, which this client was never given
    proto.receive_data(enc.encode_raw(int(Opcode.MSG), sid, "x.1", None, b"v", 1, 7))
    assert got == []
    assert proto.deltas_missed == 1
    (ack,) = _frames(bytes(proto.data_to_send()))
    assert ack[1] == (sid, 7, 0)  # "I hold nothing of slot 7": the node names it again
    # a slot given to another subscription is not this one's
    proto.receive_data(enc.encode_raw(int(Opcode.MSG), sid, "x.1", None, b"v", 2, (3, "k")))
    proto.receive_data(enc.encode_raw(int(Opcode.MSG), sid + 1, "x.1", None, b"w", 3, 3))
    assert [m.payload for m in got] == [b"v"]


def test_key_fields_are_checked() -> None:
    enc = Encoder()
    for bad in (KEY_SLOTS, -1, (1,), (1, 2), ("a", 1), (KEY_SLOTS, "a"), 1.5, b"k"):
        dec = Decoder()
        dec.feed(enc.encode_raw(int(Opcode.MSG), 1, "s", None, b"v", 1, bad))
        with pytest.raises(RemoteProtocolError):
            dec.next_raw()
    for ok in (0, KEY_SLOTS - 1, (0, "k"), "k"):
        dec = Decoder()
        dec.feed(enc.encode_raw(int(Opcode.MSG), 1, "s", None, b"v", 1, ok))
        assert dec.next_raw() is not None
    dec = Decoder()
    dec.feed(enc.encode_raw(int(Opcode.KACK), [1, KEY_SLOTS, 1]))
    with pytest.raises(RemoteProtocolError):
        dec.next_raw()


def test_slots_are_bounded() -> None:
    h, pub = _setup(keyed_deltas=True, scheduler_max_keys=KEY_SLOTS + 10)
    raw = open_peer(h, ConnectionKind.CLIENT, handshake=False)
    raw.hello(features=(_FEATURE, KEY_SLOTS_FEATURE))
    raw.received()
    raw.send(Subscribe(1, "k.>", None))
    raw.received()
    for i in range(KEY_SLOTS + 5):
        pub.send(Publish("k.x", None, b"v", key=f"k{i}"))
    keys = [f[6] for f in _frames(raw.take_bytes())]
    assert len(keys) == KEY_SLOTS + 5
    assert sorted(k[0] for k in keys[:KEY_SLOTS]) == list(range(KEY_SLOTS))
    assert keys[KEY_SLOTS:] == [f"k{i}" for i in range(KEY_SLOTS, KEY_SLOTS + 5)]  # by name
