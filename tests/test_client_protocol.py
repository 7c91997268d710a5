"""The sans-IO client protocol on its own: a hand-played node, then a real node core.

The first tests play the node frame by frame (``meshgate.protocol``'s codec); the
state machine at the end drives :class:`~meshgate.client.ClientProtocol` against a
node core through :class:`~meshgate.testing.CoreHarness`, losing and resuming the
connection at random, and checks after every step that each subscription received
exactly the messages the node owed it, once each and in order, and each PING its PONG.
"""

from __future__ import annotations

import itertools
from collections import deque

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import meshgate
from meshgate import ErrorCode, LocalProtocolError
from meshgate.client import (
    ClientEvent,
    ClientProtocol,
    ClientState,
    Connected,
    ConnectionLost,
    MessageReceived,
    NoticeReceived,
    PayloadTooLargeError,
    PongReceived,
    Resumed,
    ServerErrorReceived,
    SubscriptionEnded,
)
from meshgate.protocol import (
    PROTOCOL_VERSION,
    ConnectionKind,
    Decoder,
    Encoder,
    Error,
    Frame,
    Headered,
    Hello,
    Info,
    Message,
    Ping,
    Pong,
    Publish,
    Subscribe,
    Unsubscribe,
)
from meshgate.subjects import match
from meshgate.testing import CoreHarness, CorePeer

SESSION = "s3cret-session-key-0123"
ENC = Encoder()


def frames(data: bytes | bytearray) -> list[Frame]:
    dec = Decoder(max_frame_bytes=1 << 26)
    dec.feed(bytes(data))
    return list(dec)


def node(*items: Frame) -> bytes:
    """What a node sends: frames, encoded."""
    return b"".join(ENC.encode(f) for f in items)


NODE_HELLO = Hello(
    version=PROTOCOL_VERSION,
    role="node",
    name="n1",
    cluster="A",
    max_payload=64,
    features=("game",),  # it runs the game layer: inputs may be sent
)


def handshaken(**kw: object) -> ClientProtocol:
    """A protocol whose first connection completed its handshake (its frames taken)."""
    p = ClientProtocol(name="c", session=SESSION, **kw)  # type: ignore[arg-type]
    p.connection_made(0.0)
    p.data_to_send()
    assert p.receive_data(node(NODE_HELLO, Pong())) == [Connected("n1", "A", 64)]
    return p


# -- the handshake -------------------------------------------------------------------------------


def test_the_handshake_is_hello_and_a_ping_and_completes_on_the_nodes_hello_and_pong() -> None:
    p = ClientProtocol(name="c", token="tok", session=SESSION)
    assert p.state is ClientState.IDLE
    assert p.data_to_send() == b""  # nothing before a connection
    p.connection_made(0.0)
    assert p.state is ClientState.HANDSHAKING
    hello, ping = frames(p.data_to_send())
    assert hello == Hello(
        version=PROTOCOL_VERSION,
        role="client",
        name="c",
        token="tok",
        session=SESSION,
        # tell me at once when nobody can receive a request; I take XOR deltas of keyed state
        features=("no-responders", "keyed-deltas:xor1", "key-slots"),
    )
    assert ping == Ping()
    assert p.receive_data(node(NODE_HELLO)) == []  # the node has not yet read our HELLO
    assert p.state is ClientState.HANDSHAKING
    assert p.receive_data(node(Pong())) == [Connected("n1", "A", 64)]
    assert p.state is ClientState.OPEN
    assert (p.max_payload, p.server_name, p.server_cluster) == (64, "n1", "A")


def test_a_session_key_is_made_when_none_is_given_and_kept() -> None:
    a, b = ClientProtocol(), ClientProtocol()
    assert len(a.session) >= 16
    assert a.session != b.session


def test_the_nodes_ping_is_answered_and_its_urls_are_kept() -> None:
    p = handshaken()
    urls = ("tcp://a:1", "", "tcp://b:2")
    assert p.receive_data(node(Ping(), Info("A", client_urls=urls))) == []
    assert frames(p.data_to_send()) == [Pong()]
    assert p.known_urls == ("tcp://a:1", "tcp://b:2")


# -- sending -------------------------------------------------------------------------------------


def test_publish_subscribe_unsubscribe_queue_their_frames_in_order() -> None:
    p = handshaken()
    sid = p.subscribe("a.*", "workers")
    pending = p.publish("a.b", b"x", reply="r", key="k")
    assert pending == p.pending_bytes > 0
    p.publish("a.c", b"y", headers={"Trace": "1"})
    p.unsubscribe(sid, 3)
    sent = frames(p.data_to_send())
    assert p.pending_bytes == 0
    assert sent[:2] == [Subscribe(sid, "a.*", "workers"), Publish("a.b", "r", b"x", "k")]
    headered = sent[2]
    assert isinstance(headered, Publish)
    assert isinstance(headered.payload, Headered)
    assert bytes(headered.payload) == b"y"
    assert b"Trace: 1" in headered.payload.headers
    assert sent[3] == Unsubscribe(sid, 3)
    assert p.subscriptions == {sid: ("a.*", "workers")}


def test_nothing_is_queued_for_a_refused_publish() -> None:
    p = handshaken()  # the node's max_payload is 64
    with pytest.raises(PayloadTooLargeError):
        p.publish("a", b"x" * 65)
    with pytest.raises(meshgate.InvalidSubjectError):
        p.publish("a.*", b"")
    with pytest.raises(meshgate.InvalidSubjectError):
        p.subscribe("a..b")
    assert p.pending_bytes == 0


def test_pings_are_answered_in_order_and_a_pong_nobody_asked_for_releases_nothing() -> None:
    p = handshaken()
    assert p.receive_data(node(Pong())) == []  # unsolicited: no PING of ours is out
    first, second = p.ping(), p.ping()
    assert p.receive_data(node(Pong())) == []  # not yet written: cannot be an answer
    assert frames(p.data_to_send()) == [Ping(), Ping()]
    assert p.receive_data(node(Pong(), Pong())) == [PongReceived(first), PongReceived(second)]


def test_keepalive_pings_every_interval_and_gives_a_silent_node_up() -> None:
    p = ClientProtocol(session=SESSION, ping_interval=1.0, max_pings_out=2)
    assert p.next_timer is None  # not connected
    p.connection_made(10.0)
    p.data_to_send()
    p.receive_data(node(NODE_HELLO, Pong()))
    assert p.next_timer == 11.0
    assert p.tick(10.5) == []
    assert p.pending_bytes == 0
    assert p.tick(11.0) == []
    assert frames(p.data_to_send()) == [Ping()]
    assert p.receive_data(node(Pong())) == []  # a keepalive's PONG is no event
    assert p.tick(12.0) == []
    assert p.tick(13.0) == []
    lost = p.tick(14.0)  # ... and the node is given up
    assert lost == [ConnectionLost("no PONG from the node for 2 pings", None)]
    assert p.state is ClientState.LOST
    assert p.next_timer is None


def test_send_input_packs_seq_data_and_relay_once() -> None:
    p = handshaken(max_frame_bytes=1 << 20)
    p.send_input("ship1", 7, b"+", relay="sector.1")
    (pub,) = frames(p.data_to_send())
    assert isinstance(pub, Publish)
    assert pub.subject == "$IN.ship1"
    assert msgpack.unpackb(pub.payload) == [7, b"+", "sector.1"]


# -- receiving -----------------------------------------------------------------------------------


def test_messages_become_events_for_live_subscriptions_and_notices() -> None:
    p = handshaken()
    sid = p.subscribe("a")
    p.data_to_send()
    events = p.receive_data(
        node(
            Message(sid, "a", "r", b"1"),
            Message(sid + 1, "a", None, b"stale"),  # no such subscription: dropped
            Message(0, "$CONF.c.1", None, b"ok"),  # sid 0: a notice
        )
    )
    assert events == [
        MessageReceived(sid, meshgate.Message("a", b"1", "r")),
        NoticeReceived(meshgate.Message("$CONF.c.1", b"ok", None)),
    ]


def test_with_on_message_messages_are_calls_in_order_before_the_events() -> None:
    got: list[tuple[int, meshgate.Message]] = []
    p = handshaken(on_message=lambda sid, msg: got.append((sid, msg)))
    sid = p.subscribe("a")
    p.unsubscribe(sid, 2)
    first = p.ping()
    p.data_to_send()
    events = p.receive_data(
        node(Message(sid, "a", None, b"1"), Pong(), Message(sid, "a", None, b"2"))
    )
    assert got == [
        (sid, meshgate.Message("a", b"1", None)),
        (sid, meshgate.Message("a", b"2", None)),
    ]
    assert events == [PongReceived(first), SubscriptionEnded(sid)]


def test_a_limited_subscription_ends_after_its_last_message() -> None:
    p = handshaken()
    sid = p.subscribe("a")
    p.unsubscribe(sid, 2)
    p.data_to_send()
    msg = Message(sid, "a", None, b"m")
    events = p.receive_data(node(msg, msg, msg))
    assert [type(e) for e in events] == [MessageReceived, MessageReceived, SubscriptionEnded]
    assert p.subscriptions == {}


def test_server_errors_become_events_and_fatal_ones_end_the_connection() -> None:
    p = handshaken()
    events = p.receive_data(
        node(Error(int(ErrorCode.PERMISSION_DENIED), "no"), Error(int(ErrorCode.RESYNC), "late"))
    )
    assert [(type(e), e.fatal) for e in events if isinstance(e, ServerErrorReceived)] == [
        (ServerErrorReceived, False),
        (ServerErrorReceived, False),
    ]
    assert p.resyncs == 1
    assert p.error is None
    (fatal,) = p.receive_data(node(Error(int(ErrorCode.AUTH_FAILED), "bad token")))
    assert isinstance(fatal, ServerErrorReceived)
    assert fatal.fatal
    assert fatal.error.code == ErrorCode.AUTH_FAILED
    assert p.error is fatal.error
    assert p.refused  # a reconnect would only repeat it
    (lost,) = p.receive_data(b"")  # the node closes the stream
    assert lost == ConnectionLost(str(fatal.error), fatal.error)
    assert p.state is ClientState.LOST


@pytest.mark.parametrize(
    ("data", "code", "words"),
    [
        (b"\xc1" + node(Pong()), ErrorCode.MALFORMED, "bad frame from node"),
        (node(Subscribe(1, "a")), ErrorCode.ILLEGAL_FOR_ROLE, "opcode 2 is not sent to a client"),
        (
            node(Message(1, "a", None, b"x" * 2000)),
            ErrorCode.FRAME_TOO_LARGE,
            "larger than max_frame_bytes=1024",
        ),
        (msgpack.packb([99, 1]), ErrorCode.UNKNOWN_OPCODE, "bad frame from node"),
    ],
    ids=["not-msgpack", "illegal-opcode", "too-large", "unknown-opcode"],
)
def test_hostile_bytes_end_the_connection_with_a_clear_error(
    data: bytes, code: ErrorCode, words: str
) -> None:
    p = handshaken(max_frame_bytes=1024)
    p.ping()
    p.data_to_send()
    events = p.receive_data(data)
    assert len(events) == 1, events  # nothing decoded past the bad frame
    (lost,) = events
    assert isinstance(lost, ConnectionLost)
    assert lost.error is not None
    assert lost.error.code == code, lost.error
    assert words in lost.error.reason, lost.error
    assert p.state is ClientState.LOST
    assert p.error is lost.error
    assert p.receive_data(node(Pong())) == []  # nothing more is read
    assert not p.refused  # a broken stream is worth a reconnect


def test_a_stream_that_ends_inside_a_frame_says_so() -> None:
    p = handshaken()
    whole = node(Message(1, "a", None, b"payload"))
    assert p.receive_data(whole[:-3]) == []
    (lost,) = p.receive_data(b"")
    assert isinstance(lost, ConnectionLost)
    assert lost.error is not None
    assert "ended inside a frame" in lost.error.reason


def test_bytes_arriving_one_at_a_time_make_the_same_events() -> None:
    stream = node(NODE_HELLO, Pong(), Message(1, "a", None, b"x"), Ping())
    whole = ClientProtocol(session=SESSION)
    whole.connection_made(0.0)
    whole.subscribe("a")
    whole.data_to_send()
    split = ClientProtocol(session=SESSION)
    split.connection_made(0.0)
    split.subscribe("a")
    split.data_to_send()
    one_by_one = [e for i in range(len(stream)) for e in split.receive_data(stream[i : i + 1])]
    assert one_by_one == whole.receive_data(stream)
    assert split.data_to_send() == whole.data_to_send()  # the PONG


def test_misuse_is_a_local_protocol_error() -> None:
    p = ClientProtocol(session=SESSION)
    with pytest.raises(LocalProtocolError):
        p.receive_data(b"x")  # before connection_made
    p.connection_made(0.0)
    with pytest.raises(LocalProtocolError):
        p.connection_made(0.0)  # twice
    p.close()
    for call in (lambda: p.publish("a"), lambda: p.subscribe("a"), p.ping):
        with pytest.raises(LocalProtocolError):
            call()
    with pytest.raises(LocalProtocolError):
        p.connection_made(1.0)


# -- resume --------------------------------------------------------------------------------------


def test_resume_sends_again_what_the_lost_connection_took_and_no_frame_twice() -> None:
    p = handshaken()
    a = p.subscribe("a")
    b = p.subscribe("b")
    gone = p.subscribe("c")
    p.unsubscribe(b, 5)
    p.unsubscribe(gone)
    p.send_input("ship1", 1, b"+", relay="sector.1")
    unanswered = p.ping()
    p.data_to_send()  # written on the connection about to break
    p.receive_data(node(Message(b, "b", None, b"m")))  # b has 4 to go
    late = p.subscribe("d")  # queued, not yet written when the connection breaks
    p.publish("a", b"queued")
    p.send_input("ship1", 2, b"+")
    p.connection_lost()
    assert p.state is ClientState.LOST
    assert p.data_to_send() == b""  # nothing to write without a connection
    p.publish("b", b"offline")  # meanwhile
    p.connection_made(5.0)
    assert p.reconnects == 1
    sent = frames(p.data_to_send())
    assert sent == [
        Hello(
            version=PROTOCOL_VERSION,
            role="client",
            name="c",
            session=SESSION,
            features=("no-responders", "keyed-deltas:xor1", "key-slots"),
        ),
        Subscribe(a, "a"),
        Subscribe(b, "b"),
        Unsubscribe(b, 4),
        Publish("$IN.ship1", None, msgpack.packb([1, b"+"])),  # retried without its relay
        Ping(),  # the handshake's
        Ping(),  # again for the unanswered one
        Subscribe(late, "d"),  # then what was queued, once
        Publish("a", None, b"queued"),
        Publish("$IN.ship1", None, msgpack.packb([2, b"+"])),
        Publish("b", None, b"offline"),
    ]
    assert p.receive_data(node(NODE_HELLO, Pong(), Pong())) == [
        Resumed("n1", "A", 64, 1),
        PongReceived(unanswered),
    ]


def test_a_connection_lost_before_writing_leaves_no_duplicate_handshake() -> None:
    p = handshaken()
    p.subscribe("a")
    p.data_to_send()
    p.connection_lost()
    p.connection_made(1.0)  # lost again before anything was written
    p.connection_lost()
    p.connection_made(2.0)
    sent = frames(p.data_to_send())
    assert [type(f) for f in sent] == [Hello, Subscribe, Ping]
    assert p.reconnects == 2


# -- against a node core ------------------------------------------------------------------------


class Link:
    """A :class:`ClientProtocol` over one harness connection at a time."""

    def __init__(self, h: CoreHarness, proto: ClientProtocol) -> None:
        self.h = h
        self.proto = proto
        self.peer: CorePeer | None = None
        self.events: list[ClientEvent] = []

    def connect(self) -> None:
        self.peer = self.h.open(ConnectionKind.CLIENT)
        self.proto.connection_made(self.h.now)

    def write(self) -> None:
        assert self.peer is not None
        data = self.proto.data_to_send()
        if data:
            self.peer.send_bytes(bytes(data))

    def read(self) -> list[ClientEvent]:
        assert self.peer is not None
        data = self.peer.take_bytes()
        events = self.proto.receive_data(data) if data else []
        self.events += events
        return events

    def pump(self) -> list[ClientEvent]:
        self.write()
        return self.read()

    def lose(self) -> None:
        assert self.peer is not None
        self.peer.lose()
        self.proto.connection_lost()
        self.peer = None


def config(**kw: object) -> meshgate.GatewayConfig:
    return meshgate.GatewayConfig(name="n1", cluster="A", listen="memory://n1", **kw)  # type: ignore[arg-type]


def test_a_real_node_core_accepts_the_handshake_and_resume() -> None:
    h = CoreHarness(config(max_payload=4096))
    c = Link(h, ClientProtocol(name="c", session=SESSION))
    c.connect()
    assert c.pump() == [Connected("n1", "A", 4096)]
    sid = c.proto.subscribe("news")
    c.pump()
    pub = Link(h, ClientProtocol(name="p"))
    pub.connect()
    pub.pump()
    pub.proto.publish("news", b"1")
    pub.pump()
    assert c.read() == [MessageReceived(sid, meshgate.Message("news", b"1", None))]
    c.lose()
    c.connect()
    assert c.pump() == [Resumed("n1", "A", 4096, 1)]
    pub.proto.publish("news", b"2")
    pub.pump()
    assert c.read() == [MessageReceived(sid, meshgate.Message("news", b"2", None))]
    assert h.core.statistics().subscriptions == 1


def test_a_real_node_core_refuses_a_bad_token_for_good() -> None:
    h = CoreHarness(config(users=(meshgate.User(token="right-token-12345"),)))
    c = Link(h, ClientProtocol(token="wrong", session=SESSION))
    c.connect()
    events = c.pump()
    assert c.peer is not None
    assert c.peer.closed  # the node closes the stream after its error
    events += c.proto.receive_data(b"")  # which the transport reads as its end
    assert [type(e) for e in events] == [ServerErrorReceived, ConnectionLost], events
    assert c.proto.refused
    assert c.proto.error is not None
    assert c.proto.error.code == ErrorCode.AUTH_FAILED


SUBJECTS = ("a", "b", "a.x", "b.x")
PATTERNS = ("a", "b", "a.*", "*.x", ">", "a.>")


class ClientAgainstCore(RuleBasedStateMachine):
    """Random subscribe / unsubscribe / publish / ping, written and read at random
    moments, with connections lost (before or after writing) and resumed.

    The model is the node's view of the client's current connection (``node_subs``:
    what the node has processed) and the client's own table (``client_subs``); frames
    the client queued but did not write (``unsent``) reach the node in order when it
    writes, after the resume frames on a new connection.
    """

    def __init__(self) -> None:
        super().__init__()
        self.h = CoreHarness(config())
        self.c = Link(self.h, ClientProtocol(name="c", session=SESSION))
        self.p = Link(self.h, ClientProtocol(name="p"))
        self.payloads = (str(i).encode() for i in itertools.count())
        self.client_subs: dict[int, list[object]] = {}  # sid -> [pattern, remaining]
        self.node_subs: dict[int, list[object]] = {}
        self.unsent: list[tuple[object, ...]] = []
        self.connected = False
        self.resume_pending = False
        self.resumes = 0
        self.lost_pings: list[int] = []  # written, unanswered, connection lost
        self.expected: dict[int, list[bytes]] = {}
        self.received: dict[int, list[bytes]] = {}
        self.expected_pongs: list[int] = []
        self.pongs: list[int] = []
        self.resumed = 0

    @initialize()
    def start(self) -> None:
        self.p.connect()
        assert self.p.pump() == [Connected("n1", "A", 1048576)]
        self.c.connect()
        self.connected = True
        self.resume_pending = True
        self.write()
        self.read()

    # -- the model of the node ------------------------------------------------------------------

    def deliver(self, subject: str, payload: bytes, seen: bool) -> None:
        """The node delivers to the client's connection; ``seen``: the client reads it."""
        for sid, rec in list(self.node_subs.items()):
            if not match(str(rec[0]), subject):
                continue
            if rec[1] is not None:
                rec[1] = int(str(rec[1])) - 1
                if rec[1] == 0:
                    del self.node_subs[sid]
            mine = self.client_subs.get(sid)
            if seen and mine is not None:
                self.expected.setdefault(sid, []).append(payload)
                if mine[1] is not None:
                    mine[1] = int(str(mine[1])) - 1
                    if mine[1] == 0:
                        del self.client_subs[sid]

    def apply(self, op: tuple[object, ...], seen: bool) -> None:
        """The node processes one frame the client wrote."""
        kind = op[0]
        if kind == "sub":
            self.node_subs[int(str(op[1]))] = [op[2], None]
        elif kind == "unsub":
            rec = self.node_subs.get(int(str(op[1])))
            if rec is not None and op[2]:
                rec[1] = op[2]
            elif rec is not None:
                del self.node_subs[int(str(op[1]))]
        elif kind == "pub":
            self.deliver(str(op[1]), bytes(op[2]), seen)  # type: ignore[arg-type]
        elif kind == "ping":
            (self.expected_pongs if seen else self.lost_pings).append(int(str(op[1])))

    def write(self, seen: bool = True) -> None:
        """The client writes; the node processes it (``seen``: and the client will read
        what the node answers)."""
        if self.resume_pending:
            self.resume_pending = False
            queued = {op[1] for op in self.unsent if op[0] == "sub"}
            for sid, (pattern, remaining) in self.client_subs.items():
                if sid not in queued:
                    self.node_subs[sid] = [pattern, remaining]
            again, self.lost_pings = self.lost_pings, []
            for ping_id in again:
                self.apply(("ping", ping_id), seen)
            if seen and self.resumes:
                self.resumed += 1
        for op in self.unsent:
            self.apply(op, seen)
        self.unsent = []
        self.c.write()

    def read(self) -> None:
        for event in self.c.read():
            if isinstance(event, MessageReceived):
                self.received.setdefault(event.sid, []).append(event.message.payload)
            elif isinstance(event, PongReceived):
                self.pongs.append(event.ping_id)

    # -- rules ----------------------------------------------------------------------------------

    @rule(pattern=st.sampled_from(PATTERNS))
    def subscribe(self, pattern: str) -> None:
        sid = self.c.proto.subscribe(pattern)
        self.client_subs[sid] = [pattern, None]
        self.unsent.append(("sub", sid, pattern))

    @precondition(lambda self: self.client_subs)
    @rule(data=st.data())
    def unsubscribe(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(sorted(self.client_subs)))
        self.c.proto.unsubscribe(sid)
        del self.client_subs[sid]
        self.unsent.append(("unsub", sid, None))

    @precondition(lambda self: self.client_subs and self.connected)
    @rule(data=st.data(), max_msgs=st.integers(1, 3))
    def unsubscribe_after(self, data: st.DataObject, max_msgs: int) -> None:
        """Written at once: counting starts at the same message on both sides."""
        self.write()
        self.read()
        if not self.client_subs:  # the last one just ended
            return
        sid = data.draw(st.sampled_from(sorted(self.client_subs)))
        self.c.proto.unsubscribe(sid, max_msgs)
        self.client_subs[sid][1] = max_msgs
        self.unsent.append(("unsub", sid, max_msgs))
        self.write()

    @rule(subject=st.sampled_from(SUBJECTS))
    def publish_elsewhere(self, subject: str) -> None:
        payload = next(self.payloads)
        self.p.proto.publish(subject, payload)
        self.p.pump()
        if self.connected:
            self.deliver(subject, payload, True)

    @rule(subject=st.sampled_from(SUBJECTS))
    def publish_own(self, subject: str) -> None:
        payload = next(self.payloads)
        self.c.proto.publish(subject, payload)
        self.unsent.append(("pub", subject, payload))

    @rule()
    def ping(self) -> None:
        self.unsent.append(("ping", self.c.proto.ping()))

    @precondition(lambda self: self.connected)
    @rule()
    def write_and_read(self) -> None:
        self.write()

    @precondition(lambda self: self.connected)
    @rule(written=st.booleans())
    def lose(self, written: bool) -> None:
        """The connection breaks; with ``written``, right after the client wrote (the
        node processed it, its answers are lost)."""
        if written:
            self.write(seen=False)
        self.c.lose()
        self.connected = False
        self.node_subs = {}

    @precondition(lambda self: not self.connected)
    @rule()
    def reconnect(self) -> None:
        self.c.connect()
        self.connected = True
        self.resume_pending = True
        self.resumes += 1

    def teardown(self) -> None:
        if self.connected:  # everything queued arrives, the last resume included
            self.write()
            self.read()
            self.check()

    @invariant()
    def check(self) -> None:
        if self.connected:
            self.read()
        for sid in self.expected.keys() | self.received.keys():
            assert self.received.get(sid, []) == self.expected.get(sid, []), sid
        assert self.pongs == self.expected_pongs
        # the node holds what the model says (a limit lost in a resume would linger there)
        assert self.h.core.statistics().subscriptions == len(self.node_subs)
        resumed = sum(isinstance(e, Resumed) for e in self.c.events)
        assert resumed == self.resumed
        assert {sid: p for sid, (p, _) in self.c.proto.subscriptions.items()} == {
            sid: rec[0] for sid, rec in self.client_subs.items()
        }


TestClientAgainstCore = ClientAgainstCore.TestCase
TestClientAgainstCore.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


# -- the trio Client over the protocol ----------------------------------------------------------


async def test_a_subscription_made_while_disconnected_is_sent_once_after_the_reconnect() -> None:
    """Its SUB waits in the queue; the resume must not send it a second time (the node
    would refuse the reused sid and drop the connection, again and again)."""
    import trio

    from .helpers import memory_node

    async def run_node(
        config: meshgate.GatewayConfig, *, task_status: trio.TaskStatus[trio.CancelScope]
    ) -> None:
        with trio.CancelScope() as scope:
            async with meshgate.open_gateway(config):
                task_status.started(scope)
                await trio.sleep_forever()

    with trio.fail_after(20):
        async with trio.open_nursery() as nodes:
            stop_q0 = await nodes.start(run_node, memory_node("q0"))
            async with meshgate.connect(
                ["memory://q0-clients", "memory://q1-clients"], reconnect_wait=0.01
            ) as client:
                await client.flush()
                stop_q0.cancel()
                kinds = []
                async for event in client.connection_events():
                    kinds.append(event.kind)
                    if event.kind == "disconnected":  # no node to go to yet
                        sub = await client.add_subscription("late")
                        await nodes.start(run_node, memory_node("q1"))
                    if event.kind == "reconnected":
                        break
                await client.flush()
                async with meshgate.connect("memory://q1-clients") as other:
                    await other.publish("late", b"here")
                    await other.flush()
                assert (await sub.receive()).payload == b"here"
                assert kinds == ["disconnected", "reconnected"]
                assert client.reconnects == 1
                assert client.errors == deque()
            nodes.cancel_scope.cancel()


# -- keyed state over datagrams (issue 20) -------------------------------------------------------


def test_keyed_datagrams_older_than_what_was_delivered_are_dropped() -> None:
    p = handshaken()
    sid = p.subscribe("pos.>")
    p.data_to_send()

    def keyed(kseq: int, payload: bytes, key: str = "e1") -> bytes:
        return msgpack.packb([4, sid, f"pos.{key}", None, payload, kseq, key])

    [got] = p.receive_datagram(keyed(2, b"b"))
    assert got == MessageReceived(sid, meshgate.Message("pos.e1", b"b", None, None, True))
    assert p.receive_datagram(keyed(1, b"a")) == []  # older than kseq 2: dropped
    # the reliable lane carries kseq too (a refresh) and is ordered with the datagrams
    [got] = p.receive_data(keyed(3, b"c"))
    assert got == MessageReceived(sid, meshgate.Message("pos.e1", b"c", None))
    assert not got.message.unreliable
    assert p.receive_datagram(keyed(3, b"c again")) == []  # a duplicate
    assert len(p.receive_datagram(keyed(1, b"x", key="e2"))) == 1  # another key: its own
    assert p.stale_dropped == 2
    # garbage, or a frame that is not a keyed MSG, is dropped and counted, never fatal
    for junk in (b"\xc1", b"", msgpack.packb([4, sid, "pos.e1", None, b"no kseq"]), b"\x91\x05"):
        assert p.receive_datagram(junk) == []
    assert p.bad_datagrams == 4
    assert p.state is ClientState.OPEN


@settings(max_examples=200, deadline=None)
@given(
    arrivals=st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.integers(1, 40), st.booleans()), max_size=60
    ),
    junk=st.lists(st.binary(max_size=64), max_size=5),
)
def test_keyed_state_never_goes_back_whatever_the_order_and_lane(
    arrivals: list[tuple[str, int, bool]], junk: list[bytes]
) -> None:
    """Keyed messages arriving in any order on either lane (duplicates too): per key,
    what is delivered only grows, and the newest that arrived is delivered; junk
    datagrams change nothing."""
    p = handshaken()
    sid = p.subscribe("pos.>")
    p.data_to_send()
    delivered: dict[str, int] = {}
    for d in junk:
        assert p.receive_datagram(d) == [] or d[:1] == b"\x97"
    for key, kseq, as_datagram in arrivals:
        frame = msgpack.packb([4, sid, f"pos.{key}", None, str(kseq).encode(), kseq, key])
        events = p.receive_datagram(frame) if as_datagram else p.receive_data(frame)
        for e in events:
            assert isinstance(e, MessageReceived)
            assert e.message.unreliable is as_datagram
            k, n = e.message.subject[4:], int(e.message.payload)
            assert n > delivered.get(k, 0)
            delivered[k] = n
    for key in {k for k, _, _ in arrivals}:
        assert delivered[key] == max(n for k, n, _ in arrivals if k == key)
    assert p.state is ClientState.OPEN
