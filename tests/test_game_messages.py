"""The typed game messages (meshgate.protocol.game): round trips, the decoders against
an oracle written here from the documented field kinds, hostile payloads at the codec,
at a node (from a client, a replicant, a route peer and a NATS client) and at nothing
else: the sender alone gets a clear error and the node carries on."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import meshgate
from meshgate import ErrorCode
from meshgate.protocol import (
    ConnectionKind,
    Error,
    Message,
    Publish,
    RemoteProtocolError,
    RouteMessage,
    Subscribe,
)
from meshgate.protocol.game import (
    GAME_SUBJECTS,
    MAX_APPLIED,
    MAX_NAME_LENGTH,
    MAX_SEQ,
    Ack,
    Claim,
    ClientInput,
    FieldKind,
    GameMessage,
    Input,
    Interest,
    InterestSync,
    Marker,
    MarkerKind,
    OwnerLost,
    Release,
    Verdict,
    WhoOwns,
    check,
    fields_of,
    message_type,
)
from meshgate.subjects import is_valid_pattern, is_valid_subject
from meshgate.testing import CoreHarness, CorePeer
from meshgate.testing.strategies import patterns, subjects

MESSAGES: list[type[GameMessage]] = sorted(
    {s.message for s in GAME_SUBJECTS}, key=lambda t: t.__name__
)
TOKEN = "replicant-token-0123456"

# -- strategies, from the documented field kinds ------------------------------------------------

_TEXT = st.characters(exclude_categories=("Cs",))  # msgpack cannot encode lone surrogates
NAMES = st.text(_TEXT, min_size=1, max_size=12) | st.just("n" * MAX_NAME_LENGTH)
SEQS = st.integers(0, 1000) | st.sampled_from([0, 2**31, 2**63, MAX_SEQ])
VALID: dict[FieldKind, st.SearchStrategy[Any]] = {
    FieldKind.NAME: NAMES,
    FieldKind.PATTERN: patterns(),
    FieldKind.SUBJECT: subjects(),
    FieldKind.SEQ: SEQS,
    FieldKind.BYTES: st.binary(max_size=40),
    FieldKind.FLAG: st.booleans(),
    FieldKind.APPLIED: st.dictionaries(NAMES, SEQS, max_size=4),
}
#: values of every kind, valid or not, for arrays that are almost messages
JUNK: st.SearchStrategy[Any] = st.one_of(
    *VALID.values(),
    st.none(),
    st.just(""),
    st.just("n" * (MAX_NAME_LENGTH + 1)),
    st.sampled_from(["a..b", "a b", "x.>.y", ">", "*"]),
    st.integers(-(2**63), -1),
    st.floats(allow_nan=False),
    st.lists(st.integers(-(2**63), MAX_SEQ), max_size=3).map(tuple),
    st.dictionaries(st.integers(0, 3) | st.binary(max_size=2), st.integers(0, 9), max_size=2),
    st.dictionaries(NAMES, st.integers(-3, -1) | st.text(max_size=2), min_size=1, max_size=2),
)


#: values just outside each kind
NEAR_MISS: dict[FieldKind, list[Any]] = {
    FieldKind.NAME: ["", "n" * (MAX_NAME_LENGTH + 1), 5, None, b"name"],
    FieldKind.PATTERN: ["a.>.b", "", "a b", 1, None],
    FieldKind.SUBJECT: ["a..b", "a b", ">", "a.*", 1, b"a"],
    FieldKind.SEQ: [-1, -(2**63), True, "1", 1.0, None],
    FieldKind.BYTES: ["x", None, 1, (b"x",)],
    FieldKind.FLAG: [0, 1, None, "true"],
    FieldKind.APPLIED: [{"c": -1}, {"": 1}, {1: 1}, {"c": True}, (), None],
}


def field_value(kind: FieldKind) -> st.SearchStrategy[Any]:
    """Mostly valid, often just outside the kind, sometimes anything."""
    near = st.sampled_from(NEAR_MISS[kind])
    return st.sampled_from([0, 0, 0, 1, 1, 2]).flatmap(
        lambda which: (VALID[kind], near, JUNK)[which]
    )


def message_of(cls: type[GameMessage]) -> st.SearchStrategy[GameMessage]:
    """Valid messages of ``cls`` (an optional field: None or valid)."""
    args = [
        st.none() | VALID[kind] if optional else VALID[kind] for _, kind, optional in fields_of(cls)
    ]
    return st.builds(cls, *args)


ANY_MESSAGE = st.sampled_from(MESSAGES).flatmap(message_of)
#: the messages that are msgpack arrays (InterestSync is an empty payload)
ARRAYS = [m for m in MESSAGES if m is not InterestSync]


# -- the oracle: what the documentation says is valid ----------------------------------------


def valid(kind: FieldKind, v: object) -> bool:
    if kind is FieldKind.NAME:
        return type(v) is str and 1 <= len(v) <= MAX_NAME_LENGTH
    if kind is FieldKind.SEQ:
        return type(v) is int and 0 <= v <= MAX_SEQ
    if kind is FieldKind.BYTES:
        return type(v) is bytes
    if kind is FieldKind.FLAG:
        return type(v) is bool
    if kind is FieldKind.SUBJECT:
        return is_valid_subject(v)
    if kind is FieldKind.PATTERN:
        return is_valid_pattern(v)
    assert kind is FieldKind.APPLIED
    return (
        type(v) is dict
        and len(v) <= MAX_APPLIED
        and all(valid(FieldKind.NAME, k) and valid(FieldKind.SEQ, n) for k, n in v.items())
    )


def expected(cls: type[GameMessage], items: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The fields a payload packing ``items`` decodes to, or None if it is malformed."""
    shape = fields_of(cls)
    required = sum(1 for *_, optional in shape if not optional)
    if not required <= len(items) <= len(shape):
        return None
    for (_, kind, optional), v in zip(shape, items, strict=False):
        if not (v is None and optional) and not valid(kind, v):
            return None
    return items + (None,) * (len(shape) - len(items))


# -- round trips -----------------------------------------------------------------------------


@given(ANY_MESSAGE)
def test_every_message_round_trips(m: GameMessage) -> None:
    payload = m.encode()
    back = type(m).decode(payload)
    assert back == m
    assert type(back) is type(m)
    for s in GAME_SUBJECTS:
        if s.message is type(m) and "<" not in s.subject:
            check(s.subject, payload)  # raises if it is not well formed


@given(message_of(ClientInput))
def test_client_input_pack_and_unpack_are_encode_and_decode(m: ClientInput) -> None:
    assert ClientInput.pack(*m) == m.encode()
    assert ClientInput.unpack(m.encode()) == tuple(m)
    # the relay is left out when there is none: the wire of every meshgate before
    assert len(msgpack.unpackb(m.encode())) == (2 if m.relay is None else 3)
    assert ClientInput.from_text(str(m.seq), m.data, m.relay) == m.encode()


@given(message_of(Input))
def test_input_pack_is_encode(m: Input) -> None:
    assert Input.pack(*m) == m.encode()
    assert Input.decode(Input.pack(*m)) == m


@given(message_of(Verdict))
def test_verdict_pack_and_unpack_are_encode_and_decode(m: Verdict) -> None:
    assert Verdict.pack(*m) == m.encode()
    assert Verdict.unpack(m.encode()) == tuple(m)


@given(st.sampled_from(list(MarkerKind)), NAMES, SEQS)
def test_markers_round_trip(kind: MarkerKind, client: str, seq: int) -> None:
    m = Marker(kind, client, seq)
    assert Marker.decode(m.encode()) == m
    assert Marker.pack(kind.value, client, seq) == m.encode()
    assert m.encode().startswith(kind.value)


def test_the_wire_is_the_documented_array() -> None:
    assert msgpack.unpackb(Claim("ship", "west", 3).encode()) == ["ship", "west", 3]
    assert msgpack.unpackb(Input("ship", 2, "c", 7, b"d", True).encode()) == [
        "ship",
        2,
        "c",
        7,
        b"d",
        True,
    ]
    assert msgpack.unpackb(Release("e", "r", 1, {"c": 4}).encode()) == ["e", "r", 1, {"c": 4}]
    assert msgpack.unpackb(ClientInput(5, b"x", "cell.1").encode()) == [5, b"x", "cell.1"]
    assert InterestSync().encode() == b""
    assert Marker(MarkerKind.CORRECTED, "s-ab", 9).encode() == "$CORR.s-ab.9"
    assert message_type("$IN.ship.1") is ClientInput
    assert message_type("$REP.west.in") is Input
    assert message_type("$AUTH.ack") is Ack
    assert message_type("$INTEREST.remove") is Interest
    assert message_type("$SPEC.correct") is Verdict
    assert message_type("$AUTH.nothing") is None
    assert message_type("cell.1.ship") is None


# -- the decoders against the oracle ---------------------------------------------------------


@pytest.mark.parametrize("cls", ARRAYS, ids=lambda c: c.__name__)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_decoders_accept_exactly_what_the_documentation_allows(
    cls: type[GameMessage], data: st.DataObject
) -> None:
    shape = fields_of(cls)
    required = sum(1 for *_, optional in shape if not optional)
    values = [data.draw(field_value(kind)) for _, kind, _ in shape] + [data.draw(JUNK)]
    n = data.draw(st.sampled_from([len(shape)] * 4 + [required, len(shape) + 1, required - 1]))
    items = tuple(values[:n])
    payload = msgpack.packb(items)
    want = expected(cls, items)
    if want is None:
        with pytest.raises(RemoteProtocolError) as caught:
            cls.decode(payload)
        assert caught.value.code is ErrorCode.MALFORMED
        assert caught.value.reason.startswith(cls.__name__)
    else:
        assert tuple(cls.decode(payload)) == want


@given(ANY_MESSAGE, st.data())
def test_a_truncated_payload_is_a_clear_error(m: GameMessage, data: st.DataObject) -> None:
    payload = m.encode()
    if not payload:
        return  # InterestSync: nothing to cut
    cut = data.draw(st.integers(0, len(payload) - 1))
    with pytest.raises(RemoteProtocolError, match="not one msgpack value"):
        type(m).decode(payload[:cut])


@given(st.sampled_from(MESSAGES), st.binary(max_size=64))
def test_random_bytes_decode_or_raise_a_protocol_error(
    cls: type[GameMessage], payload: bytes
) -> None:
    try:
        m = cls.decode(payload)
    except RemoteProtocolError as exc:
        code = exc.code
    else:
        if cls is InterestSync:
            assert payload == b""
        else:
            assert tuple(m) == expected(cls, msgpack.unpackb(payload, use_list=False))
        return
    assert code is ErrorCode.MALFORMED


@pytest.mark.parametrize(
    ("cls", "items", "reason"),
    [
        (ClientInput, ("1", b"x"), "field 'seq' must be int, 0 to 2**64-1, got str '1'"),
        (ClientInput, (-1, b"x"), "field 'seq' must be int"),
        (ClientInput, (1, "text"), "field 'data' must be bin"),
        (ClientInput, (1, b"x", "a..b"), "field 'relay' must be str, a valid subject"),
        (ClientInput, (1,), "must have 2 to 3 elements, got 1"),
        (Claim, ("ship", "", 1), "field 'replicant' must be str, 1 to 1024 characters"),
        (Claim, ("n" * 1025, "r", 1), "field 'entity' must be str, 1 to 1024 characters"),
        (Ack, ("e", "r", 1, {"c": -1}), "field 'applied' must be map of NAME to SEQ"),
        (Input, ("e", 1, "c", 2, b"d", 1), "field 'speculative' must be bool"),
        (Interest, ("a0", "cell.>.x"), "field 'pattern' must be str, a valid subscription"),
        (Verdict, ("c", 0, None), "field 'value' must be bin"),
        (OwnerLost, ("a", "b"), "must have 1 elements, got 2"),
        (WhoOwns, [], "must have 1 elements, got 0"),
    ],
)
def test_the_error_names_the_message_its_layout_and_the_field(
    cls: type[GameMessage], items: tuple[Any, ...], reason: str
) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        cls.decode(msgpack.packb(items))
    layout = ", ".join(n + ("?" if opt else "") for n, _, opt in fields_of(cls))
    assert caught.value.reason.startswith(f"{cls.__name__} [{layout}]: ")
    assert reason in caught.value.reason


def test_limits_hold_against_oversize_payloads() -> None:
    too_many = {f"c{i}": i for i in range(MAX_APPLIED + 1)}
    with pytest.raises(RemoteProtocolError, match=r"max_map_len|at most"):
        Release.decode(msgpack.packb(("e", "r", 1, too_many)))
    just_enough = {f"c{i}": i for i in range(MAX_APPLIED)}
    assert Release.decode(msgpack.packb(("e", "r", 1, just_enough))).applied == just_enough
    with pytest.raises(RemoteProtocolError, match="not one msgpack value"):
        ClientInput.decode(msgpack.packb((1, b"x", "a", 1, 2, 3, 4)))  # no array over 6
    with pytest.raises(RemoteProtocolError, match="not one msgpack value"):
        Verdict.decode(msgpack.packb(("c", 1, {"a": 1})))  # no map in a hot message
    with pytest.raises(RemoteProtocolError, match="not one msgpack value"):
        Claim.decode(msgpack.packb(("e", "r", 1)) + b"\x00")  # one value, nothing after
    with pytest.raises(RemoteProtocolError, match="must be empty"):
        InterestSync.decode(b"\x90")
    for text in ["", "-1", "1.0", "²", "१२", str(MAX_SEQ + 1), "9" * 5000]:
        with pytest.raises(RemoteProtocolError, match="seq must be a decimal number"):
            ClientInput.from_text(text, b"x")
    assert ClientInput.decode(ClientInput.from_text(str(MAX_SEQ), b"x")).seq == MAX_SEQ
    for reply in ["$PROV.x", "$PROV..1", "$CONF.c.x", "$CORR.c." + "9" * 30, "cell.1", ""]:
        with pytest.raises(RemoteProtocolError, match="Marker"):
            Marker.decode(reply)


# -- at a node -------------------------------------------------------------------------------


def game_node() -> CoreHarness:
    cfg = meshgate.GatewayConfig(
        name="a0",
        cluster="A",
        listen="memory://a0",
        cluster_listen="memory://a0-routes",
        replicants=True,
        replicant_token=TOKEN,
        speculative=("cell.>",),
    )
    return CoreHarness(cfg)


def owner(h: CoreHarness, name: str = "r1") -> CorePeer:
    r = h.open(ConnectionKind.REPLICANT)
    r.hello(name=name, token=TOKEN)
    assert r.state == "OPEN"
    r.send(Subscribe(1, f"$REP.{name}.in"), Subscribe(2, "$AUTH.*"), Subscribe(3, "$INTEREST.*"))
    r.received()
    return r


def player(h: CoreHarness) -> CorePeer:
    p = h.open()
    p.hello()
    p.received()
    return p


def messages(peer: CorePeer) -> list[Message]:
    return [f for f in peer.received() if isinstance(f, Message)]


HOSTILE_INPUTS = [
    (msgpack.packb(("0", b"x")), "field 'seq'"),
    (msgpack.packb((-5, b"x")), "field 'seq'"),
    (msgpack.packb((0, "not bytes")), "field 'data'"),
    (msgpack.packb((0, b"x", "cell..1")), "field 'relay'"),
    (msgpack.packb((0, b"x", 7)), "field 'relay'"),
    (msgpack.packb((0,)), "elements"),
    (msgpack.packb((0, b"x", None, None)), "elements"),
    (msgpack.packb({"seq": 0}), "not one msgpack value"),  # no map in an input
    (msgpack.packb((0, b"x"))[:-1], "not one msgpack value"),  # truncated
    (b"\xc1", "not one msgpack value"),
    (b"", "not one msgpack value"),
    (msgpack.packb((0, b"x" * 10, "a." * 600 + "b")), "field 'relay'"),  # oversize subject
]


def test_a_clients_hostile_inputs_get_clear_errors_and_the_game_goes_on() -> None:
    h = game_node()
    r = owner(h)
    r.send(Publish("$AUTH.claim", None, Claim("ship1", "r1", 1).encode()))
    watcher = player(h)
    watcher.send(Subscribe(1, "cell.>"))
    cheat, honest = player(h), player(h)
    r.received()
    for payload, _ in HOSTILE_INPUTS:
        cheat.send(Publish("$IN.ship1", None, payload))
    errors = cheat.errors()
    assert [e.code for e in errors] == [ErrorCode.MALFORMED] * len(HOSTILE_INPUTS)
    for e, (_, field) in zip(errors, HOSTILE_INPUTS, strict=True):
        assert e.reason.startswith("$IN.ship1: ClientInput [seq, data, relay?]: "), e.reason
        assert field in e.reason, e.reason
    assert cheat.state == "OPEN"
    assert r.received() == []
    assert watcher.received() == []
    assert honest.received() == []
    # the cheat's own next valid input, and another client's, reach the owner
    cheat.send(Publish("$IN.ship1", None, ClientInput(0, b"fine").encode()))
    honest.send(Publish("$IN.ship1", None, ClientInput(0, b"move", "cell.1.ship").encode()))
    got = [Input.decode(m.payload) for m in messages(r) if m.subject == "$REP.r1.in"]
    assert [(i.data, i.speculative) for i in got] == [(b"fine", False), (b"move", True)]
    (relayed,) = messages(watcher)
    assert Marker.decode(relayed.reply or "") == Marker(
        MarkerKind.PROVISIONAL, f"a0/{honest.conn_id}", 0
    )
    game = h.game()
    assert game is not None
    assert game.errors == ()
    assert game.inputs_refused == 0


HOSTILE_CONTROL = [
    ("$AUTH.claim", msgpack.packb(("ship1", "r1", -1)), "field 'epoch'"),
    ("$AUTH.claim", msgpack.packb(("ship1", "r1")), "elements"),
    ("$AUTH.release", b"\x94\xa5ship1", "not one msgpack value"),  # truncated
    ("$AUTH.ack", msgpack.packb(("ship1", "r1", 1, {"c": "x"})), "field 'applied'"),
    ("$AUTH.ack", msgpack.packb(("ship1", "r1", 1, [1, 2])), "field 'applied'"),
    ("$AUTH.lost", msgpack.packb((7,)), "field 'replicant'"),
    ("$AUTH.who", msgpack.packb(("n" * (MAX_NAME_LENGTH + 1),)), "field 'entity'"),
    ("$SPEC.correct", msgpack.packb(("a0/9", 0, "not bytes")), "field 'value'"),
    ("$SPEC.confirm", msgpack.packb(("", 0, b"")), "field 'client'"),
    ("$INTEREST.add", msgpack.packb(("a0", "cell..1")), "field 'pattern'"),
    ("$INTEREST.sync", b"\x90", "must be empty"),
    ("$REP.r2.in", msgpack.packb(("ship1", 1, "c", 0, b"x", "yes")), "field 'speculative'"),
]


def test_a_replicants_hostile_control_messages_are_refused_to_it_alone() -> None:
    h = game_node()
    r1, r2 = owner(h, "r1"), owner(h, "r2")
    r1.send(Publish("$AUTH.claim", None, Claim("ship1", "r1", 1).encode()))
    r1.received()
    r2.received()
    bystander = player(h)
    for subject, payload, _ in HOSTILE_CONTROL:
        r1.send(Publish(subject, None, payload))
    errors = r1.errors()
    assert [e.code for e in errors] == [ErrorCode.MALFORMED] * len(HOSTILE_CONTROL)
    for e, (subject, _, field) in zip(errors, HOSTILE_CONTROL, strict=True):
        assert e.reason.startswith(f"{subject}: "), e.reason
        assert field in e.reason, e.reason
    assert r1.state == "OPEN"
    assert r2.received() == []  # nothing went anywhere
    assert bystander.received() == []
    game = h.game()
    assert game is not None
    assert game.errors == ()
    assert [(e.entity, e.owner, e.epoch) for e in game.entities] == [("ship1", "r1", 1)]
    # well-formed control messages still work: r2 takes the ship over
    r1.send(Publish("$AUTH.release", None, Release("ship1", "r1", 1, {}).encode()))
    r2.send(Publish("$AUTH.claim", None, Claim("ship1", "r2", 2).encode()))
    bystander.send(Publish("$IN.ship1", None, ClientInput(0, b"go").encode()))
    got = [Input.decode(m.payload) for m in messages(r2) if m.subject == "$REP.r2.in"]
    assert [(i.entity, i.epoch, i.data) for i in got] == [("ship1", 2, b"go")]


def test_a_route_peers_malformed_game_messages_are_kept_for_diagnosis() -> None:
    h = game_node()
    r = owner(h)
    r.send(Publish("$AUTH.claim", None, Claim("ship1", "r1", 1).encode()))
    r.received()
    route = h.open(ConnectionKind.ROUTE)
    route.received()
    route.hello(name="a1", cluster="A")
    route.received()
    control = "$G $control"  # the account's control namespace, as nodes name it
    route.send(
        RouteMessage(None, control, "$AUTH.claim", None, msgpack.packb(("ship1", "a1", "99"))),
        RouteMessage(None, control, "$AUTH.lost", None, b"\xc1"),
        RouteMessage(None, control, "$SPEC.correct", None, msgpack.packb(("c", 0))),
    )
    assert [f for f in route.received() if isinstance(f, Error)] == []
    assert route.state == "OPEN"
    game = h.game()
    assert game is not None
    assert [e.split(": ", 1)[0] for e in game.errors] == [
        "bad authority message on $AUTH.claim",
        "bad authority message on $AUTH.lost",
        "bad speculation answer on $SPEC.correct",
    ]
    assert "field 'epoch' must be int" in game.errors[0]
    assert [(e.entity, e.owner, e.epoch) for e in game.entities] == [("ship1", "r1", 1)]


async def test_a_nats_clients_bad_sequence_numbers_get_an_error_and_it_stays_open() -> None:
    cfg = meshgate.GatewayConfig(listen="127.0.0.1:0", nats_listen="127.0.0.1:0", replicants=True)
    with trio.fail_after(30):
        async with meshgate.open_gateway(cfg) as gw:
            host, port = gw.nats_urls[0].removeprefix("tcp://").rsplit(":", 1)
            stream = await trio.open_tcp_stream(host, int(port))
            await stream.send_all(b'CONNECT {"headers":true}\r\n')
            bad = ["\u00b2", "99999999999999999999999", "-1", "abc", "1e3"]
            for text in bad:
                block = f"NATS/1.0\r\nMeshgate-Seq: {text}\r\n\r\n".encode()
                n = len(block)
                await stream.send_all(b"HPUB $IN.ship %d %d\r\n%sxy\r\n" % (n, n + 2, block))
            await stream.send_all(b"PING\r\n")
            received = b""
            while not received.endswith(b"PONG\r\n"):
                chunk = await stream.receive_some()
                assert chunk, received
                received += chunk
            # nats-server's text for a malformed message (what NATS clients know); before,
            # the first two ended the connection without a word
            errs = [line for line in received.split(b"\r\n") if line.startswith(b"-ERR")]
            assert errs == [b"-ERR 'Parser Error'"] * len(bad), received
            await stream.aclose()
            async with meshgate.connect(gw.client_url or "") as c, c.subscribe("x") as sub:
                await c.publish("x", b"the node carries on")
                assert (await sub.receive()).payload == b"the node carries on"
