"""The client side of the meshgate protocol, sans-IO: bytes in, events out, bytes to send.

Like h11 and wsproto, :class:`ClientProtocol` does no I/O and reads no clock: a
transport feeds it what it received (:meth:`~ClientProtocol.receive_data`), acts on
the events it returns, writes what :meth:`~ClientProtocol.data_to_send` gives it, and
passes the time to :meth:`~ClientProtocol.tick`.  It owns everything about the
conversation with a node that does not depend on how bytes travel: the HELLO
handshake, subscriptions and their ids, PING/PONG bookkeeping and keepalive, the
session key, and what a reconnect must send again.  :class:`meshgate.Client` is this
protocol under trio streams; a client over another transport reuses it the same way.
"""

from __future__ import annotations

__all__ = [
    "KSEQ_SEEN_MAX",
    "RECENT_INPUTS",
    "SESSION_MAX",
    "SESSION_MIN",
    "ClientEvent",
    "ClientProtocol",
    "ClientState",
    "Connected",
    "ConnectionClosedError",
    "ConnectionLost",
    "Message",
    "MessageReceived",
    "NoGameLayerError",
    "NoRespondersError",
    "NoticeReceived",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PongReceived",
    "Resumed",
    "ServerError",
    "ServerErrorReceived",
    "SubscriptionEnded",
    "check_priority",
    "check_session",
    "server_error",
]

import enum
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from itertools import islice
from typing import Any, NamedTuple

from .._errors import ErrorCode, LocalProtocolError, MeshgateError, RemoteProtocolError
from .._reserved import NOTICE_SID, input_subject
from ..protocol import (
    DELTA_FEATURE,
    KEY_SLOTS_FEATURE,
    LEGAL_RECEIVE,
    MAX_PRIORITY,
    PROTOCOL_VERSION,
    ConnectionKind,
    Decoder,
    DeltaCodec,
    Encoder,
    Headered,
    Hello,
    Info,
    Opcode,
    Ping,
    Pong,
    Role,
    XorDelta,
    to_ext,
    to_frame,
)
from ..protocol._delta import ACK_STRIDE, DELTA_WINDOW
from ..protocol.game import ClientInput
from ..protocol.nats import encode_headers, parse_headers
from ..subjects import validate_pattern, validate_subject

#: Game inputs a client keeps to send again after a reconnect (see :meth:`ClientProtocol.send_input`).
RECENT_INPUTS = 256
#: the largest frame a client accepts from its node (the node's own limit is lower)
_MAX_FRAME_BYTES = 64 * 1024 * 1024
#: bounds of a session key: the node ignores a shorter one; a longer one would exceed
#: the smallest string limit a node may be configured with
SESSION_MIN = 16
SESSION_MAX = 256


def check_priority(priority: object) -> float:
    """``priority`` as a float if it is a publisher priority (a number from 0 to
    :data:`~meshgate.protocol.MAX_PRIORITY`), else :class:`ValueError` saying why."""
    if type(priority) is bool or not isinstance(priority, int | float):
        raise ValueError(f"a priority is a number, not {type(priority).__name__}")
    p = float(priority)
    if not 0.0 <= p <= MAX_PRIORITY:  # NaN fails both comparisons
        raise ValueError(f"a priority is a number from 0 to {MAX_PRIORITY:g} (got {priority!r})")
    return p


def check_session(session: object) -> str:
    """``session`` if it is a usable session key, else :class:`ValueError` saying why."""
    if not isinstance(session, str):
        raise ValueError(f"a session key is a str, not {type(session).__name__}")
    if not SESSION_MIN <= len(session) <= SESSION_MAX:
        raise ValueError(
            f"a session key has {SESSION_MIN} to {SESSION_MAX} characters (got {len(session)}):"
            " the node ignores a shorter one, and a client without one is a new client"
            " on every connect()"
        )
    return session


# -- what a client hands its user ---------------------------------------------------------------


class Message(NamedTuple):
    """A received message (not the wire frame :class:`meshgate.protocol.Message`)."""

    subject: str
    payload: bytes
    reply: str | None
    #: the message's headers (``{name: [values]}``), or None if it has none; NATS
    #: clients' headers arrive here, and :meth:`Client.publish` can send them.  A
    #: status message (a header block ``NATS/1.0 503``: the node's no-responders
    #: answer) has its code under ``"Status"`` (and any text under ``"Description"``),
    #: as nats-py shows it
    headers: dict[str, list[str]] | None = None
    #: it came as an unreliable datagram (keyed state over QUIC): a later update of
    #: its key may have been lost, and an older one is never delivered after it
    unreliable: bool = False


_new_tuple = tuple.__new__  # builds a Message without NamedTuple's Python-level __new__


def _message(subject: str, payload: bytes, reply: str | None) -> Message:
    if type(payload) is not Headered:
        return _new_tuple(Message, (subject, payload, reply, None, False))
    try:
        status, headers = parse_headers(payload.headers)
    except (ValueError, UnicodeDecodeError):
        status, headers = "", {}
    if status:
        code, _, text = status.partition(" ")
        headers.setdefault("Status", [code])
        if text:
            headers.setdefault("Description", [text])
    return Message(subject, bytes(payload), reply, headers)


class ServerError(MeshgateError):
    """An error frame from the node: ``code`` (an :class:`~meshgate.ErrorCode`),
    ``reason`` (the node's words) and ``sid`` (the subscription it refuses, else None)."""

    def __init__(self, code: int, reason: str, sid: int | None = None) -> None:
        self.code = code
        self.reason = reason
        self.sid = sid
        try:
            name = ErrorCode(code).name
        except ValueError:
            name = str(code)
        super().__init__(f"{name}: {reason}")


class PermissionDeniedError(ServerError):
    """The node refused something this client sent and kept the connection
    (``PERMISSION_DENIED``): a publish, subscription or reply subject its permissions
    do not allow, a reserved (``$``) subject, an input to a node without the game
    layer, a relay subject that is not speculative.  For a subscription, ``sid`` names
    it (the subscription is over)."""


def server_error(code: int, reason: str, sid: int | None = None) -> ServerError:
    """The :class:`ServerError` (or subclass, by ``code``) for an error frame."""
    cls = PermissionDeniedError if code == ErrorCode.PERMISSION_DENIED else ServerError
    return cls(code, reason, sid)


class NoRespondersError(MeshgateError):
    """A request nobody can receive: the node answered at once that no subscriber
    anywhere (on the node, its cluster, or a remote cluster that might have one)
    matches ``subject``."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        super().__init__(f"no responders for a request on {subject!r}")


class NoGameLayerError(MeshgateError):
    """A game input for a node that does not run the game layer
    (``GatewayConfig(replicants=True)``): there is no owner it could go to."""


class ConnectionClosedError(MeshgateError):
    """The connection to the node is closed; ``error`` is the node's reason, if it gave one."""

    def __init__(self, message: str, error: ServerError | None = None) -> None:
        self.error = error
        super().__init__(message)


class PayloadTooLargeError(MeshgateError):
    """A publish was refused locally: the payload exceeds the node's ``max_payload``."""


# -- events ------------------------------------------------------------------------------------


class Connected(NamedTuple):
    """The node accepted the handshake of the first connection (its HELLO arrived and it
    answered the PING sent after ours); what it said about itself."""

    server_name: str
    server_cluster: str | None
    max_payload: int


class Resumed(NamedTuple):
    """A later connection's handshake completed: the node has also processed the
    subscriptions and inputs sent again (:meth:`ClientProtocol.connection_made`)."""

    server_name: str
    server_cluster: str | None
    max_payload: int
    #: how many times the protocol has resumed so far, this one included
    reconnects: int


class MessageReceived(NamedTuple):
    """A message for the subscription ``sid``."""

    sid: int
    message: Message


class SubscriptionEnded(NamedTuple):
    """The subscription ``sid`` received the last message it was limited to
    (:meth:`ClientProtocol.unsubscribe` with ``max_msgs``); it is gone."""

    sid: int


class NoticeReceived(NamedTuple):
    """A notice from the node to this client alone (sid 0): the confirm (reply
    ``$CONF.…``) or correction (``$CORR.…``) of one of its speculative inputs."""

    message: Message


class PongReceived(NamedTuple):
    """The node answered the PING :meth:`ClientProtocol.ping` returned ``ping_id`` for:
    it has processed everything queued before it."""

    ping_id: int


class ServerErrorReceived(NamedTuple):
    """An error frame from the node.  ``fatal``: the node closes the connection after
    it (the error is also :attr:`ClientProtocol.error`); otherwise the connection stays
    (a permission denied, a resync)."""

    error: ServerError
    fatal: bool


class ConnectionLost(NamedTuple):
    """The protocol gave this connection up: the node closed it, sent bytes that are
    not the protocol (``error`` says what), or stopped answering pings.  The transport
    should close it; :meth:`ClientProtocol.connection_made` resumes on a new one."""

    reason: str
    error: ServerError | None


#: everything :meth:`ClientProtocol.receive_data` and :meth:`ClientProtocol.tick` return
ClientEvent = (
    Connected
    | Resumed
    | MessageReceived
    | SubscriptionEnded
    | NoticeReceived
    | PongReceived
    | ServerErrorReceived
    | ConnectionLost
)


class ClientState(enum.Enum):
    """Where a :class:`ClientProtocol` is in its life."""

    #: created; no connection yet (calls queue frames for the first one)
    IDLE = "idle"
    #: connected, HELLO sent, the node's HELLO and PONG not yet both received
    HANDSHAKING = "handshaking"
    #: the node accepted the handshake
    OPEN = "open"
    #: the connection is gone; calls queue frames for the next one
    LOST = "lost"
    #: closed for good
    CLOSED = "closed"


# -- the protocol ------------------------------------------------------------------------------

_PUB = int(Opcode.PUB)
_SUB = int(Opcode.SUB)
_UNSUB = int(Opcode.UNSUB)
_MSG = int(Opcode.MSG)
_PING = Encoder().encode(Ping())
_PONG = Encoder().encode(Pong())
#: ids in the PING queue that are not the user's: the handshake's and keepalives
_HANDSHAKE = -1
_KEEPALIVE = 0
_LEGAL = frozenset(int(op) for op in LEGAL_RECEIVE[ConnectionKind.NODE])
_CONNECTED = (ClientState.HANDSHAKING, ClientState.OPEN)
#: refusals a reconnect would only repeat
_FINAL = (ErrorCode.AUTH_FAILED, ErrorCode.HANDSHAKE_REFUSED, ErrorCode.PERMISSION_DENIED)


def _pack_input(seq: int, data: bytes, relay: str | None) -> bytes:
    """The payload of a game input on ``$IN.<entity>`` (:class:`ClientInput`)."""
    return ClientInput.pack(seq, bytes(data), relay)


class _Sub:
    """One subscription as the protocol keeps it to subscribe again after a loss."""

    __slots__ = ("gen", "pattern", "queue", "remaining")

    def __init__(self, pattern: str, queue: str | None, gen: int) -> None:
        self.pattern = pattern
        self.queue = queue
        #: messages until an auto-unsubscribe (None: none asked)
        self.remaining: int | None = None
        #: the hand-out its SUB frame was queued before (see ClientProtocol._gen)
        self.gen = gen


#: (subscription, key) pairs whose last delivered ``kseq`` a client remembers
KSEQ_SEEN_MAX = 4096
#: deltas (issue 21): the last values of one key a client keeps as possible baselines,
#: and the bytes it keeps at most over all keys (past it, the oldest keys' go)
DELTA_BASES = DELTA_WINDOW
DELTA_BASE_BYTES = 4 * 1024 * 1024
_KACK = int(Opcode.KACK)
_DEFAULT_CODEC = XorDelta()


class ClientProtocol:
    """The client side of the meshgate protocol, sans-IO.

    Per connection: :meth:`connection_made`, then feed every received chunk to
    :meth:`receive_data` (``b""`` at the end of the stream) and act on the events it
    returns, write :meth:`data_to_send` whenever it has bytes, call :meth:`tick` at
    :attr:`next_timer`, and :meth:`connection_lost` when the transport breaks.  The
    first connection completes with :class:`Connected`, every later one with
    :class:`Resumed`.  :meth:`publish`, :meth:`subscribe`, :meth:`unsubscribe`,
    :meth:`ping` and :meth:`send_input` queue frames at any time before
    :meth:`close`, connected or not; while there is no connection they wait for
    the next one.

    ``session`` is the client's secret session key (:data:`SESSION_MIN` to
    :data:`SESSION_MAX` characters, else :class:`ValueError`; default: a new random
    one): the node derives the client's game identity from it, so a client that
    presents it again, after a reconnect or a restart, is the same client and its
    retried inputs are applied once.

    After a loss the next connection starts with a HELLO carrying the same
    :attr:`session` key, the subscriptions with their ids (and what is left of their
    ``max_msgs``), the last :data:`RECENT_INPUTS` game inputs (the entity's owner
    applies each sequence number once), a PING again for every :meth:`ping` the lost
    connection left unanswered, and then what was queued and not yet written.
    Frames that were never written are not sent twice.

    An error frame is a :class:`ServerErrorReceived` (its ``error`` a
    :class:`ServerError`, a :class:`PermissionDeniedError` for a refusal); a refused
    subscription's error names its sid, and the protocol forgets that subscription.
    With ``no_responders`` (the default) the HELLO asks the node to answer a request
    nobody can receive at once, with a status message (``headers["Status"] ==
    ["503"]``) on the request's reply subject.

    Messages for subscriptions are :class:`MessageReceived` events; with
    ``on_message``, each is instead a call ``on_message(sid, message)`` during
    :meth:`receive_data`, in order, before the events it returns (no event object per
    message: the fast path :class:`meshgate.Client` takes).

    Keyed state (issue 21): with ``delta_codec`` (default
    :class:`~meshgate.protocol.XorDelta`; None: none; clients only) the HELLO offers
    deltas; a node with ``keyed_deltas`` and the same codec sends keyed values as
    deltas against values this client acknowledged (KACK frames, written with the next
    :meth:`data_to_send`).  :attr:`deltas` says whether it does; a delta whose baseline
    is not held is dropped (:attr:`deltas_missed`) and the next value comes whole.

    Limits: a frame from the node larger than ``max_frame_bytes``, or anything the
    codec of :mod:`meshgate.protocol` rejects, or a frame a node never sends to a
    client, ends the connection with a :class:`ConnectionLost` whose ``error`` says
    why.  ``ping_interval`` (None: no keepalive) and ``max_pings_out``: a node that
    leaves that many keepalive PINGs unanswered is lost.
    """

    def __init__(
        self,
        *,
        name: str = "client",
        token: str | None = None,
        role: Role = Role.CLIENT,
        session: str | None = None,
        ping_interval: float | None = None,
        max_pings_out: int = 2,
        max_frame_bytes: int = _MAX_FRAME_BYTES,
        recent_inputs: int = RECENT_INPUTS,
        on_message: Callable[[int, Message], None] | None = None,
        no_responders: bool = True,
        delta_codec: DeltaCodec | None = _DEFAULT_CODEC,
    ) -> None:
        #: the client's name, in its HELLO
        self.name = name
        self._token = token
        self._role = role
        #: the secret this client's game identity is derived from (same on every
        #: reconnect; pass it again after a restart to remain the same client)
        self.session = check_session(session) if session is not None else secrets.token_hex(16)
        self._ping_interval = ping_interval
        self._max_pings_out = max_pings_out
        self._max_frame_bytes = max_frame_bytes
        self._on_message = on_message
        self._features: tuple[str, ...] = ("no-responders",) if no_responders else ()
        if role is not Role.CLIENT:
            delta_codec = None  # the node sends deltas to clients only
        self._codec = delta_codec
        if delta_codec is not None:
            self._features += (DELTA_FEATURE + delta_codec.name, KEY_SLOTS_FEATURE)
        #: the node sends this client deltas (it announced the same codec)
        self.deltas = False
        #: (sid, key) -> the last values delivered [(kseq, value), ...] (baselines), their
        #: bytes; the acknowledgements not yet written
        self._bases: dict[tuple[int, str], list[tuple[int, bytes]]] = {}
        self._base_bytes = 0
        self._acks: dict[tuple[int, str | int], int] = {}
        #: key slots (a node that takes deltas names a key by a small integer once this
        #: client has it): slot -> (sid, key), and back; at most KEY_SLOTS of each
        self._slots: dict[int, tuple[int, str]] = {}
        self._slot_of: dict[tuple[int, str], int] = {}
        #: (sid, key) -> the last kseq acknowledged (every ACK_STRIDE-th value or so)
        self._acked: dict[tuple[int, str], int] = {}
        #: deltas dropped: the baseline was not held, or the delta did not decode
        self.deltas_missed = 0
        self._state = ClientState.IDLE
        self._enc = Encoder()
        self._dec = Decoder(max_frame_bytes=max_frame_bytes)
        # Frames not yet handed out.  _gen counts the hand-outs (data_to_send calls that
        # returned bytes); what was queued since the last one is still in _out, and after
        # a loss only what was handed out must be sent again.
        self._out = bytearray()
        self._gen = 0
        self._resume_pending = False  # the next hand-out starts with HELLO and the resume
        self._subs: dict[int, _Sub] = {}
        self._next_sid = 1
        # ids of the PINGs queued and not yet answered, in order; the last _pings_unsent
        # of them are still in _out
        self._pings: deque[int] = deque()
        self._pings_unsent = 0
        self._next_ping_id = 1
        self._pings_out = 0  # keepalives since the last PONG
        self._next_ping_at: float | None = None
        # PUB frames of the last game inputs (without their relay), newest last; the
        # last _recent_unsent of them are still in _out
        self._recent: deque[bytes] = deque(maxlen=recent_inputs)
        self._recent_unsent = 0
        self._hello_seen = False
        self._handshake_answered = False
        self._opened_once = False
        #: the node's payload limit, learned in the handshake (0: not yet known)
        self.max_payload = 0
        #: the node's name and cluster, learned in the handshake
        self.server_name = ""
        self.server_cluster: str | None = None
        #: the features the node announced in its HELLO (None: no HELLO yet); ``game``:
        #: it runs the game layer
        self.server_features: tuple[str, ...] | None = None
        #: the cluster's client URLs as the node told them (at most 64)
        self.known_urls: tuple[str, ...] = ()
        #: connections after the first (resumes started)
        self.reconnects = 0
        #: times the node dropped this client's event backlog (it fell behind)
        self.resyncs = 0
        #: keyed state (issue 20): (sid, key) -> the last kseq delivered on this
        #: connection; bounded by KSEQ_SEEN_MAX (the oldest entry goes)
        self._kseq: dict[tuple[int, str], int] = {}
        self._dgram_dec = Decoder(max_frame_bytes=max_frame_bytes)  # one frame per datagram
        #: keyed messages dropped as older than one already delivered (either lane),
        #: and datagrams dropped as malformed or not a keyed MSG
        self.stale_dropped = 0
        self.bad_datagrams = 0
        #: the error that ended the current or last connection: the node's fatal error
        #: frame, or what was wrong with its bytes (None: none, or a transport's failure)
        self.error: ServerError | None = None

    # -- the connection's life ------------------------------------------------------------------

    def connection_made(self, now: float) -> None:
        """A new connection to a node (the first or a resume); ``now`` starts the
        keepalive.  The next :meth:`data_to_send` begins with the HELLO."""
        if self._state in _CONNECTED:
            raise LocalProtocolError("connection_made() while connected")
        if self._state is ClientState.CLOSED:
            raise LocalProtocolError("the client protocol is closed")
        if self._state is ClientState.LOST:
            self.reconnects += 1
        self._state = ClientState.HANDSHAKING
        self.error = None
        self._dec = Decoder(max_frame_bytes=self._max_frame_bytes)
        self._kseq.clear()  # the node numbers each key afresh per connection
        self._bases.clear()
        self._base_bytes = 0
        self._acks.clear()
        self._acked.clear()
        self._slots.clear()
        self._slot_of.clear()
        self.deltas = False
        self._pings_out = 0
        self._hello_seen = self._handshake_answered = False
        self._resume_pending = True
        if self._ping_interval is not None:
            self._next_ping_at = now + self._ping_interval

    def connection_lost(self) -> None:
        """The transport is gone (broken, closed, or after :class:`ConnectionLost`).
        What was queued and not handed out stays queued for the next connection."""
        if self._state in _CONNECTED:
            self._state = ClientState.LOST
            self._next_ping_at = None

    def close(self) -> None:
        """Closed for good: no more connections; calls that queue frames raise."""
        self._state = ClientState.CLOSED
        self._next_ping_at = None

    @property
    def state(self) -> ClientState:
        """Where the protocol is in its life."""
        return self._state

    @property
    def refused(self) -> bool:
        """The node refused this client for good (authentication, handshake or
        permission): connecting again would only repeat it."""
        return self.error is not None and self.error.code in _FINAL

    @property
    def pending_bytes(self) -> int:
        """Bytes queued and not yet handed out by :meth:`data_to_send` (and one per
        acknowledgement of keyed state waiting to go)."""
        return len(self._out) + len(self._acks)

    @property
    def next_timer(self) -> float | None:
        """When :meth:`tick` has work (a keepalive PING, or giving a silent node up);
        None: no keepalive, or not connected."""
        return self._next_ping_at

    def data_to_send(self) -> bytes | bytearray:
        """Everything queued for the current connection, to write now (empty when there
        is nothing, or no connection)."""
        if self._state not in _CONNECTED:
            return b""
        data: bytes | bytearray
        if self._acks and self._state is ClientState.OPEN:
            self._out += self._ack_frame()
        if self._resume_pending:
            self._resume_pending = False
            data = self._resume_frames() + self._out
        elif self._out:
            data = self._out
        else:
            return b""
        self._out = bytearray()
        self._gen += 1
        self._pings_unsent = 0
        self._recent_unsent = 0
        return data

    def _ack_frame(self) -> bytes:
        """KACK frames with every acknowledgement waiting, 21 a frame (a frame's array
        holds at most 64 elements)."""
        acks = self._acks
        enc = self._enc
        parts = []
        while acks:
            flat: list[int | str] = []
            slot_of = self._slot_of
            for _ in range(min(len(acks), 21)):
                (sid, key), kseq = acks.popitem()
                slot = slot_of.get((sid, key)) if type(key) is str else None
                flat += (sid, key if slot is None else slot, kseq)
            parts.append(enc.encode_raw(_KACK, flat))
        acks.clear()
        return b"".join(parts)

    def _resume_frames(self) -> bytes:
        """HELLO; SUB (and UNSUB) again for the subscriptions the lost connection took
        along; the inputs it took along; the handshake's PING; a PING again for each
        unanswered one it took along."""
        enc = self._enc
        parts = [
            enc.encode(
                Hello(
                    version=PROTOCOL_VERSION,
                    role=self._role.value,
                    name=self.name,
                    token=self._token,
                    session=self.session,
                    features=self._features,
                )
            )
        ]
        gen = self._gen
        for sid, sub in self._subs.items():
            if sub.gen != gen:  # written on a lost connection (else its SUB is in _out)
                sub.gen = gen
                parts.append(enc.encode_raw(_SUB, sid, sub.pattern, sub.queue))
                if sub.remaining is not None:
                    parts.append(enc.encode_raw(_UNSUB, sid, sub.remaining))
        recent = self._recent
        parts.extend(islice(recent, len(recent) - min(self._recent_unsent, len(recent))))
        pings = self._pings
        lost = [pings.popleft() for _ in range(len(pings) - self._pings_unsent)]
        again = [p for p in lost if p > 0]  # the user's; keepalives and handshakes are moot
        pings.extendleft(reversed([_HANDSHAKE, *again]))
        parts.append(_PING * (1 + len(again)))
        return b"".join(parts)

    def tick(self, now: float) -> list[ClientEvent]:
        """Keepalive at ``now``: a PING every ``ping_interval``; a node that left
        ``max_pings_out`` of them unanswered is lost (:class:`ConnectionLost`)."""
        due = self._next_ping_at
        if due is None or now < due or self._state not in _CONNECTED:
            return []
        assert self._ping_interval is not None
        if self._pings_out >= self._max_pings_out:
            self.connection_lost()
            return [ConnectionLost(f"no PONG from the node for {self._max_pings_out} pings", None)]
        self._pings_out += 1
        self._queue_ping(_KEEPALIVE)
        self._next_ping_at = now + self._ping_interval
        return []

    # -- receiving ------------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[ClientEvent]:
        """Bytes from the node (``b""``: it closed the stream); the events they make."""
        events: list[ClientEvent] = []
        state = self._state
        if state not in _CONNECTED:
            if state is ClientState.IDLE:
                raise LocalProtocolError("receive_data() before connection_made()")
            return events  # after a loss or close: nothing more is read
        if not data:
            return self._end_of_stream(events)
        dec = self._dec
        subs = self._subs
        deliver = self._on_message
        try:
            dec.feed(data)
            while (f := dec.next_raw()) is not None:
                if f[0] == _MSG:
                    sid = f[1]
                    sub = subs.get(sid)
                    if len(f) >= 7 and sub is not None:  # keyed state with its kseq
                        self._keyed(f, False, events)
                    elif sub is not None:
                        if deliver is None:
                            events.append(MessageReceived(sid, _message(f[2], f[4], f[3])))
                        else:
                            deliver(sid, _message(f[2], f[4], f[3]))
                        if sub.remaining is not None:
                            sub.remaining -= 1
                            if sub.remaining <= 0:
                                del subs[sid]
                                events.append(SubscriptionEnded(sid))
                    elif sid == NOTICE_SID:
                        events.append(NoticeReceived(_message(f[2], f[4], f[3])))
                elif not self._control(f, events):
                    break
        except RemoteProtocolError as exc:
            self._broken(ServerError(int(exc.code), f"bad frame from node: {exc.reason}"), events)
        return events

    def receive_datagram(self, data: bytes) -> list[ClientEvent]:
        """One unreliable datagram from the node (QUIC): a keyed MSG with its ``kseq``.
        Delivered (``Message.unreliable``) unless a newer one of its key was already
        delivered on this connection; anything else is dropped and counted
        (:attr:`bad_datagrams`), never an error: datagrams are unauthenticated noise
        until proven otherwise."""
        events: list[ClientEvent] = []
        if self._state is not ClientState.OPEN:
            return events
        dec = self._dgram_dec
        try:
            dec.feed(data)
            f = dec.next_raw()
            if f is None or f[0] != _MSG or not 7 <= len(f) <= 8 or dec.buffered_bytes:
                raise RemoteProtocolError("not one keyed MSG")
        except RemoteProtocolError:
            self.bad_datagrams += 1
            self._dgram_dec = Decoder(max_frame_bytes=self._max_frame_bytes)  # a clean slate
            return events
        if f[1] in self._subs:
            self._keyed(f, True, events)
        return events

    def _keyed(self, f: tuple[Any, ...], unreliable: bool, events: list[ClientEvent]) -> None:
        """A keyed MSG ``[4, sid, subject, reply, payload, kseq, key]`` from either lane:
        delivered unless not newer than the last of its (sid, key)."""
        sid, kseq, key = f[1], f[5], f[6]
        if type(key) is not str:  # a key slot: [slot, key] names it, a slot alone uses it
            key = self._slot_key(sid, key)
            if key is None:
                return
        k = (sid, key)
        seen = self._kseq
        last = seen.get(k)
        if last is not None and kseq <= last:
            self.stale_dropped += 1
            return
        payload = f[4]
        if len(f) == 8:  # a delta against the value numbered f[7]
            payload = self._undelta(k, f[7], payload)
            if payload is None:
                return
        if last is None and len(seen) >= KSEQ_SEEN_MAX:
            del seen[next(iter(seen))]
        seen[k] = kseq
        if self.deltas and type(payload) is bytes:
            self._keep(k, kseq, payload)
        msg = _message(f[2], payload, f[3])
        if unreliable:
            msg = msg._replace(unreliable=True)
        sub = self._subs[sid]
        if self._on_message is None:
            events.append(MessageReceived(sid, msg))
        else:
            self._on_message(sid, msg)
        if sub.remaining is not None:
            sub.remaining -= 1
            if sub.remaining <= 0:
                del self._subs[sid]
                events.append(SubscriptionEnded(sid))

    def _slot_key(self, sid: int, v: int | tuple[int, str]) -> str | None:
        """The key a key field holding a slot names (the decoder checked its shape):
        ``[slot, key]`` (re)assigns the slot; a slot this client does not hold (None) is
        dropped, counted in :attr:`deltas_missed`, and acknowledged as kseq 0, so the
        node names the key again."""
        if type(v) is tuple:
            slot, key = v
            old = self._slots.get(slot)
            if old is not None and old != (sid, key):
                self._slot_of.pop(old, None)
            self._slots[slot] = (sid, key)
            self._slot_of[sid, key] = slot
            return key
        got = self._slots.get(v)  # type: ignore[arg-type]
        if got is not None and got[0] == sid:
            return got[1]
        self.deltas_missed += 1
        if self.deltas and len(self._acks) < KSEQ_SEEN_MAX:
            self._acks[sid, v] = 0  # type: ignore[index]
        return None

    def _undelta(self, k: tuple[int, str], base: int, delta: bytes) -> bytes | None:
        """The value a delta against value ``base`` of ``k`` encodes; None (counted in
        :attr:`deltas_missed`) if this client does not hold that value or the delta
        does not decode: it then tells the node it holds no baseline of ``k`` (an
        acknowledgement of kseq 0), and the node's next value of ``k`` comes whole."""
        codec = self._codec
        if codec is not None and type(delta) is bytes:
            for n, value in self._bases.get(k, ()):
                if n == base:
                    try:
                        return codec.decode(value, delta)
                    except ValueError:
                        break
        self.deltas_missed += 1
        if self.deltas and len(self._acks) < KSEQ_SEEN_MAX:
            self._acks[k] = 0
            self._acked.pop(k, None)  # the next value that arrives whole is acknowledged
        return None

    def _keep(self, k: tuple[int, str], kseq: int, value: bytes) -> None:
        """Keep ``value`` as a possible baseline of ``k``; acknowledge it if it is the
        key's first or :data:`ACK_STRIDE` values past the last acknowledged."""
        bases = self._bases
        ring = bases.get(k)
        if ring is None:
            if len(bases) >= KSEQ_SEEN_MAX:
                self._drop_bases(next(iter(bases)))
            ring = bases[k] = []
        if len(ring) >= DELTA_BASES:
            self._base_bytes -= len(ring.pop(0)[1])
        ring.append((kseq, value))
        self._base_bytes += len(value)
        while self._base_bytes > DELTA_BASE_BYTES and bases:
            self._drop_bases(next(iter(bases)))
        if k in bases:
            acked = self._acked
            last = acked.get(k)
            if last is None or kseq - last >= ACK_STRIDE:
                self._acks[k] = acked[k] = kseq

    def _drop_bases(self, k: tuple[int, str]) -> None:
        ring = self._bases.pop(k)
        self._acked.pop(k, None)
        self._base_bytes -= sum(len(v) for _, v in ring)

    def _end_of_stream(self, events: list[ClientEvent]) -> list[ClientEvent]:
        buffered = self._dec.buffered_bytes
        if buffered and self.error is None:
            self.error = ServerError(
                int(ErrorCode.MALFORMED),
                f"bad frame from node: the stream ended inside a frame ({buffered} bytes)",
            )
        self.connection_lost()
        reason = str(self.error) if self.error is not None else "the node closed the connection"
        events.append(ConnectionLost(reason, self.error))
        return events

    def _broken(self, error: ServerError, events: list[ClientEvent]) -> None:
        self.error = error
        self.connection_lost()
        events.append(ConnectionLost(str(error), error))

    def _control(self, f: tuple[object, ...], events: list[ClientEvent]) -> bool:
        """Every frame but MSG; False if it ended the connection."""
        op = f[0]
        if op not in _LEGAL:
            error = ServerError(
                int(ErrorCode.ILLEGAL_FOR_ROLE),
                f"bad frame from node: opcode {op} is not sent to a client",
            )
            self._broken(error, events)
            return False
        if op == Opcode.PONG:
            self._pings_out = 0  # any answer shows the node is alive
            if len(self._pings) > self._pings_unsent:  # else: not an answer to a PING of ours
                ping_id = self._pings.popleft()
                if ping_id > 0:
                    events.append(PongReceived(ping_id))
                elif ping_id == _HANDSHAKE:
                    self._handshake_answered = True
                    self._maybe_open(events)
        elif op == Opcode.PING:
            self._out += _PONG
        elif op == Opcode.ERROR:
            err = server_error(f[1], f[2], f[3] if len(f) > 3 else None)  # type: ignore[arg-type]
            if err.sid is not None:
                self._subs.pop(err.sid, None)  # refused: not subscribed again after a loss
            fatal = err.code not in (ErrorCode.RESYNC, ErrorCode.PERMISSION_DENIED)
            if err.code == ErrorCode.RESYNC:
                self.resyncs += 1
            if fatal:
                self.error = err
            events.append(ServerErrorReceived(err, fatal))
        elif op == Opcode.INFO:
            info = to_frame(f)
            assert isinstance(info, Info)
            self.known_urls = tuple(u for u in info.client_urls if u)[:64]
        elif op == Opcode.HELLO:
            hello = to_frame(f)
            assert isinstance(hello, Hello)
            self.max_payload = hello.max_payload
            self.server_name = hello.name
            self.server_cluster = hello.cluster
            self.server_features = hello.features
            codec = self._codec
            self.deltas = codec is not None and DELTA_FEATURE + codec.name in hello.features
            self._hello_seen = True
            self._maybe_open(events)
        return True

    def _maybe_open(self, events: list[ClientEvent]) -> None:
        if self._state is not ClientState.HANDSHAKING:
            return
        if not (self._hello_seen and self._handshake_answered):
            return
        self._state = ClientState.OPEN
        if self._opened_once:
            events.append(
                Resumed(self.server_name, self.server_cluster, self.max_payload, self.reconnects)
            )
        else:
            self._opened_once = True
            events.append(Connected(self.server_name, self.server_cluster, self.max_payload))

    # -- sending --------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._state is ClientState.CLOSED:
            raise LocalProtocolError("the client protocol is closed")

    def publish(
        self,
        subject: str,
        payload: bytes = b"",
        *,
        reply: str | None = None,
        key: str | None = None,
        headers: Mapping[str, str | list[str]] | None = None,
        priority: float | None = None,
    ) -> int:
        """Queue a PUB; returns :attr:`pending_bytes`.  Raises
        :class:`PayloadTooLargeError` if the payload exceeds the node's ``max_payload``,
        :class:`~meshgate.InvalidSubjectError` for a bad subject and :class:`ValueError`
        for a ``priority`` that is not a number from 0 to
        :data:`~meshgate.protocol.MAX_PRIORITY`, queuing nothing."""
        if self._state is ClientState.CLOSED:
            raise LocalProtocolError("the client protocol is closed")
        if priority is not None:
            check_priority(priority)
        max_payload = self.max_payload
        if max_payload and len(payload) > max_payload:
            raise PayloadTooLargeError(
                f"payload of {len(payload)} bytes exceeds the node's max_payload={max_payload}"
            )
        validate_subject(subject)
        if reply is not None:
            validate_subject(reply)
        body: object = bytes(payload)
        if headers:
            body = to_ext(Headered(payload, encode_headers(headers)))
        out = self._out
        if priority is None:
            out += self._enc.encode_raw(_PUB, subject, reply, body, key)
        else:
            out += self._enc.encode_raw(_PUB, subject, reply, body, key, float(priority))
        return len(out)

    def subscribe(self, pattern: str, queue: str | None = None) -> int:
        """Queue a SUB for ``pattern`` (in ``queue``, a queue group); returns its sid."""
        self._check_open()
        validate_pattern(pattern)
        if queue is not None:
            validate_subject(queue)
        sid = self._next_sid
        self._next_sid += 1
        self._subs[sid] = _Sub(pattern, queue, self._gen)
        self._out += self._enc.encode_raw(_SUB, sid, pattern, queue)
        return sid

    def unsubscribe(self, sid: int, max_msgs: int | None = None) -> None:
        """Queue an UNSUB: now, or after ``max_msgs`` more messages (then
        :class:`SubscriptionEnded`).  An unknown or finished ``sid`` is ignored."""
        self._check_open()
        sub = self._subs.get(sid)
        if sub is None:
            return
        if max_msgs:
            sub.remaining = max_msgs
        else:
            del self._subs[sid]
        self._out += self._enc.encode_raw(_UNSUB, sid, max_msgs or None)

    @property
    def subscriptions(self) -> dict[int, tuple[str, str | None]]:
        """The live subscriptions: sid to (pattern, queue)."""
        return {sid: (s.pattern, s.queue) for sid, s in self._subs.items()}

    def ping(self) -> int:
        """Queue a PING; returns the id its :class:`PongReceived` will carry.  The PONG
        means the node processed everything queued before (a flush); across a
        reconnect the PING is sent again if the lost connection left it unanswered."""
        self._check_open()
        ping_id = self._next_ping_id
        self._next_ping_id += 1
        self._queue_ping(ping_id)
        return ping_id

    def _queue_ping(self, ping_id: int) -> None:
        self._pings.append(ping_id)
        self._pings_unsent += 1
        self._out += _PING

    def send_input(self, entity: str, seq: int, data: bytes, *, relay: str | None = None) -> int:
        """Queue a game input for ``entity`` with this client's sequence number ``seq``
        (see :meth:`meshgate.Client.send_input`); it is kept, without ``relay``, to be
        sent again after a reconnect.  Returns :attr:`pending_bytes`.  Raises
        :class:`NoGameLayerError` if the node said in its HELLO that it does not run the
        game layer (before the HELLO, the node refuses such an input itself)."""
        features = self.server_features
        if features is not None and "game" not in features:
            raise NoGameLayerError(
                f"node {self.server_name or '(unnamed)'} does not run the game layer"
                " (GatewayConfig(replicants=True)): an input has no owner to go to"
            )
        subject = input_subject(entity)
        pending = self.publish(subject, _pack_input(seq, data, relay))
        # kept without the relay: a retry must not relay the move a second time
        retry = _pack_input(seq, data, None)
        self._recent.append(self._enc.encode_raw(_PUB, subject, None, retry, None))
        self._recent_unsent += 1
        return pending
