"""Connections as the core sees them: one class per kind, each with only its own slots.

A connection's class is fixed when it is opened (the listener or dialer knows the
kind); its handshake only fills in what the peer said.  A replicant is a
:class:`ClientConnection` whose HELLO said ``role = "replicant"``: the handshake
sets :attr:`ClientConnection.role` once and the kind never changes.

=============================  =====================  ========================================
class                          wire                   receive loop / control frames
=============================  =====================  ========================================
:class:`ClientConnection`      meshgate (CLIENT)      PUB fast path, else ``ClientPort``
:class:`NatsClientConnection`  NATS text              ``NatsPort`` (then the client port)
:class:`RouteConnection`       meshgate (ROUTE)       RMSG fast path, else ``RouteMesh``
:class:`BackboneConnection`    NATS leafnode          ``Backbone``
:class:`InboundGateway`        meshgate (GW_INBOUND)  GMSG fast path, else ``GatewayMesh``
:class:`OutboundGateway`       meshgate (GW_OUTBOUND) interest frames, ``GatewayMesh``
:class:`InternalConnection`    (none)                 the node's own subscriptions
=============================  =====================  ========================================

What differs between kinds is said here, by the class, never asked elsewhere: how it
says PING, PONG and errors (``ping_bytes``, ``pong_bytes``, :meth:`Connection.error_bytes`),
whether deliveries are rendered in NATS text (``nats_text``, ``leaf``), what it holds besides
``out`` (:meth:`Connection.pending_bytes`, :meth:`Connection.take_output`).
"""

from __future__ import annotations

__all__ = [
    "Account",
    "BackboneConnection",
    "ClientConnection",
    "NatsClientConnection",
    "ConnState",
    "Connection",
    "GatewayConnection",
    "InboundGateway",
    "InternalConnection",
    "InternalHandler",
    "DatagramCounters",
    "KSEQ_TABLE_MAX",
    "KeyedDatagrams",
    "LocalSubscription",
    "OutboundGateway",
    "PeerConnection",
    "RemoteInterest",
    "RouteConnection",
    "pack_str",
    "pack_uint",
]

import enum
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from .._errors import ErrorCode
from .._reserved import NOTICE_SID
from ..config import Permissions, User
from ..interest import InboundInterest, OutboundInterest
from ..protocol import (
    LEGAL_RECEIVE,
    ConnectionKind,
    Decoder,
    Encoder,
    Headered,
    Message,
    Opcode,
    Role,
)
from ._natstext import NOTICE_SUBJECT, PING, PONG, error_line

if TYPE_CHECKING:
    from ..protocol.nats import NatsParser
    from ._deltas import KeyedDeltas
    from ._natsport import NatsState
    from ._scheduler import Scheduler

#: the handler of an internal subscription: ``(subject, reply, payload)``
InternalHandler = Callable[[str, "str | None", bytes], None]


class ConnState(enum.IntEnum):
    """Lifecycle of a connection in the core (only ever moves forward)."""

    #: opened; our HELLO is queued; nothing but the peer's HELLO is accepted
    AWAIT_HELLO = 0
    #: the handshake completed; frames legal for the kind are processed
    OPEN = 1
    #: closing after an error or a shutdown: output is flushed, input ignored
    CLOSING = 2
    #: the transport is gone; the core has forgotten the connection
    CLOSED = 3
    #: the node's own subscriptions: deliveries go to handlers, never to a transport
    INTERNAL = 4


class Account:
    """Per-account counters the core keeps (the subjects live in the interest graph)."""

    __slots__ = ("clients", "messages_in", "messages_out", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.clients = 0
        self.messages_in = 0
        self.messages_out = 0


class Connection:
    """What every connection kind has: identity, state, decoder, output and counters."""

    #: the kind, fixed by the class
    kind: ClassVar[ConnectionKind]
    #: the opcodes legal to receive on this kind (:data:`~meshgate.protocol.LEGAL_RECEIVE`)
    legal: ClassVar[frozenset[Opcode]]
    #: PING and PONG in this kind's protocol (None: meshgate's frames)
    ping_bytes: ClassVar[bytes | None] = None
    pong_bytes: ClassVar[bytes | None] = None
    #: sizes of the frames in ``out``, where a slow-consumer policy needs them
    frame_sizes: deque[int] | None = None

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "close_reason",
        "decoder",
        "dirty",
        "id",
        "last_activity",
        "leaf",
        "messages_in",
        "messages_out",
        "name",
        "nats_text",
        "opened_at",
        "out",
        "payload_in",
        "payload_out",
        "ping_sent_at",
        "pings_out",
        "pings_sent",
        "relay_keys",
        "rtt",
        "shell",
        "state",
    )

    def __init__(self, cid: int, decoder: Decoder, now: float) -> None:
        self.id = cid
        self.state = ConnState.AWAIT_HELLO
        #: deliveries to it are rendered in the NATS text protocol (set by the kind; an
        #: attribute, not a class constant, so that the compiled hot path reads a slot)
        self.nats_text = False
        #: messages relayed to it are rendered in nats-server's leafnode protocol (``LMSG``)
        self.leaf = False
        #: a peer node that takes keyed relays (HELLO feature ``keyed-relay``): keyed
        #: state goes to it with its ``key`` and publisher ``priority`` (issue 21)
        self.relay_keys = False
        self.decoder = decoder
        self.out = bytearray()
        #: listed in :attr:`Effects.writable` since the shell last took the output
        self.dirty = False
        self.name = ""
        self.opened_at = now
        #: when it last sent us anything
        self.last_activity = now
        #: message payload bytes received from it and sent to it (nats-server's
        #: ``in_bytes``/``out_bytes``; ``bytes_in``/``bytes_out`` count the wire)
        self.payload_in = 0
        self.payload_out = 0
        self.pings_out = 0
        self.pings_sent = 0
        self.ping_sent_at: float | None = None
        self.rtt: float | None = None
        self.messages_in = 0
        self.messages_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.close_reason: str | None = None
        #: the shell's handle (opaque to the core)
        self.shell: Any = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.state.name}>"

    def error_bytes(self, code: ErrorCode, reason: str) -> bytes | None:
        """An error in this kind's protocol (None: meshgate's ERROR frame)."""
        return None

    def pong_received(self, now: float) -> None:
        """A PONG arrived at ``now``: nothing is outstanding; the round trip is known."""
        self.pings_out = 0
        if self.ping_sent_at is not None:
            self.rtt = now - self.ping_sent_at
            self.ping_sent_at = None

    def has_output(self) -> bool:
        """Something is queued for it."""
        return bool(self.out)

    def pending_bytes(self) -> int:
        """Bytes queued for it and not yet taken."""
        return len(self.out)

    def take_output(self) -> bytearray:
        """Everything queued, in order; the buffer starts empty again."""
        out = self.out
        self.out = bytearray()
        self.dirty = False
        return out

    def forget_output(self) -> None:
        """The transport is gone: drop whatever is queued."""
        self.out = bytearray()


class ClientConnection(Connection):
    """A client or replicant on the client port: account, permissions, subscriptions
    and the slow-consumer state of its output."""

    kind = ConnectionKind.CLIENT
    legal = LEGAL_RECEIVE[ConnectionKind.CLIENT]

    __slots__ = (
        "account",
        "coalesced",
        "counted",
        "delta_wanted",
        "deltas",
        "dgram",
        "dropped",
        "frame_sizes",
        "key_slots",
        "keyed",
        "keyed_bytes",
        "max_priority",
        "nats",
        "no_responders",
        "perm_cache",
        "pub_perm",
        "resync_streak",
        "resyncs",
        "role",
        "sched",
        "sched_mark",
        "session",
        "slow",
        "sub_perm",
        "subs",
        "user",
    )

    def __init__(self, cid: int, decoder: Decoder, now: float, *, track_frames: bool) -> None:
        super().__init__(cid, decoder, now)
        self.account: Account | None = None
        #: ``client`` or ``replicant``, set once by the handshake
        self.role = Role.CLIENT
        self.subs: dict[int, LocalSubscription] = {}
        #: the user it authenticated as (None without users)
        self.user: User | None = None
        #: its game identity derived from the HELLO's session key (None without one)
        self.session: str | None = None
        #: it asked (HELLO feature ``no-responders``) to be told at once when nobody can
        #: receive its request (a NATS client's own option is in its NATS state)
        self.no_responders = False
        self.pub_perm: Permissions | None = None
        self.sub_perm: Permissions | None = None
        self.perm_cache: dict[str, bool] = {}
        #: the highest publisher priority it may give (0.0: its priorities are ignored)
        self.max_priority = 0.0
        #: counts towards ``max_connections``
        self.counted = False
        self.dropped = 0
        self.coalesced = 0
        self.resyncs = 0
        self.resync_streak = 0
        self.slow = False
        #: sizes of the frames in ``out`` (drop-oldest and coalesce need them), else None
        self.frame_sizes: deque[int] | None = deque() if track_frames else None
        #: the keyed state lane (coalesce policy): (sid, key) -> encoded frame
        self.keyed: dict[tuple[int, str], bytes] = {}
        self.keyed_bytes = 0
        #: the unreliable lane for keyed state (a transport with datagrams), else None
        self.dgram: KeyedDatagrams | None = None
        #: deltas against acknowledged keyed state (``keyed_deltas``; ``_deltas.py``)
        self.deltas: KeyedDeltas | None = None
        #: its HELLO announced the node's delta codec
        self.delta_wanted = False
        #: ... and key slots (``KEY_SLOTS_FEATURE``)
        self.key_slots = False
        #: its send scheduler when it has a bandwidth budget (``_delivery.py``), else None
        self.sched: Scheduler | None = None
        #: bytes written or queued when the scheduler last looked (the reliable share)
        self.sched_mark = 0

    def wire(self) -> tuple[str, str, str]:
        """``(protocol, client language, client version)`` for monitoring."""
        return ("meshgate", "", "")

    def notice_bytes(
        self, encoder: Encoder, sid: int, subject: str, reply: str | None, data: bytes
    ) -> bytes | None:
        """One MSG from the node itself for subscription ``sid`` (sid 0: the client's
        notices, confirmations and corrections of its inputs); None: nowhere to go."""
        return encoder.encode(Message(sid, subject, reply, data))

    def has_output(self) -> bool:
        """Something is queued, in the event lane, the keyed state lane or (a
        transport with datagrams) the datagram lane."""
        dgram = self.dgram
        return bool(self.out) or bool(self.keyed) or (dgram is not None and bool(dgram.queue))

    def pending_bytes(self) -> int:
        """Bytes queued in both lanes."""
        return len(self.out) + self.keyed_bytes

    def take_output(self) -> bytearray:
        """The event lane, then the latest value of every key; the client caught up."""
        out = self.out
        if self.keyed:
            out += b"".join(self.keyed.values())
            self.keyed.clear()
            self.keyed_bytes = 0
        if self.frame_sizes is not None:
            self.frame_sizes.clear()
        self.slow = False
        self.resync_streak = 0
        self.out = bytearray()
        self.dirty = False
        return out

    def take_datagrams(self, max_bytes: int = -1) -> list[bytes]:
        """The datagram lane's queued frames (issue 20), oldest key first: all of them,
        or (``max_bytes`` >= 0) about as many bytes as the path takes now."""
        dgram = self.dgram
        if dgram is None or not dgram.queue:
            return []
        if not self.out and not self.keyed:
            self.dirty = False  # nothing else waits: the next delivery schedules a write
        return dgram.take(max_bytes)

    def forget_output(self) -> None:
        """The transport is gone: drop both lanes."""
        self.out = bytearray()
        self.keyed.clear()
        self.keyed_bytes = 0


class NatsClientConnection(ClientConnection):
    """A client of the NATS port: a client in every respect (account, permissions,
    subscriptions, limits, policy), speaking the NATS text protocol."""

    ping_bytes: ClassVar[bytes | None] = PING
    pong_bytes: ClassVar[bytes | None] = PONG

    __slots__ = ("nats",)

    def __init__(
        self, cid: int, decoder: Decoder, now: float, *, track_frames: bool, nats: NatsState
    ) -> None:
        super().__init__(cid, decoder, now, track_frames=track_frames)
        self.nats_text = True
        #: its NATS side: parser, sid map, CONNECT options
        self.nats = nats

    def error_bytes(self, code: ErrorCode, reason: str) -> bytes:
        """nats-server's ``-ERR`` line."""
        return error_line(code, reason)

    def wire(self) -> tuple[str, str, str]:
        """``("nats", lang, version)`` as the client said in CONNECT."""
        return ("nats", self.nats.lang, self.nats.version)

    def notice_bytes(
        self, encoder: Encoder, sid: int, subject: str, reply: str | None, data: bytes
    ) -> bytes | None:
        """A notice goes to the client's ``$MG.notice`` subscription (sid 0) or to one of
        its own subscriptions, as a NATS ``MSG`` (``HMSG`` for data with headers, if the
        client said ``headers: true``)."""
        st = self.nats
        if sid == NOTICE_SID:
            nsid = st.notice_sid
        else:
            sub = self.subs.get(sid)
            nsid = sub.prefix if sub is not None else None
        if nsid is None:
            return None
        rb = b" " + reply.encode() if reply is not None else b""
        if type(data) is Headered and st.headers:  # a status (no responders) or headers
            hdrs = data.headers
            return b"HMSG %s %s%s %d %d\r\n%s%s\r\n" % (
                (subject or NOTICE_SUBJECT).encode(),
                nsid,
                rb,
                len(hdrs),
                len(hdrs) + len(data),
                hdrs,
                data,
            )
        return b"MSG %s %s%s %d\r\n%s\r\n" % (
            (subject or NOTICE_SUBJECT).encode(),
            nsid,
            rb,
            len(data),
            data,
        )


class InternalConnection(ClientConnection):
    """The node's own subscriptions in one account: each sid has a handler that the
    core calls (after the current batch) with what the subscription matched."""

    __slots__ = ("handlers",)

    def __init__(self, cid: int, account: Account) -> None:
        super().__init__(cid, Decoder(), 0.0, track_frames=False)
        self.state = ConnState.INTERNAL
        self.account = account
        self.name = "$node"
        self.handlers: dict[int, InternalHandler] = {}


class PeerConnection(Connection):
    """A connection to another node (route or gateway)."""

    __slots__ = ("dialed", "peer", "peer_monitor_url", "pong_waiters", "pongs_received")

    def __init__(self, cid: int, decoder: Decoder, now: float, *, dialed: bool) -> None:
        super().__init__(cid, decoder, now)
        #: this node opened the connection
        self.dialed = dialed
        #: the peer node's name once the handshake completed
        self.peer: str | None = None
        #: the peer's HTTP monitoring URL, if it announced one (for discovery)
        self.peer_monitor_url: str | None = None
        self.pongs_received = 0
        self.pong_waiters: deque[tuple[int, Callable[[], None]]] = deque()

    def pong_received(self, now: float) -> None:
        """A PONG: the round trip, and whoever waited for this many PONGs is woken."""
        Connection.pong_received(self, now)
        self.pongs_received += 1
        waiters = self.pong_waiters
        while waiters and waiters[0][0] <= self.pongs_received:
            waiters.popleft()[1]()

    def wake_pong_waiters(self) -> None:
        """The connection is going: everyone waiting for a PONG on it is woken."""
        for _, wake in self.pong_waiters:
            wake()
        self.pong_waiters.clear()


class RouteConnection(PeerConnection):
    """A route to a node of the same cluster (symmetric)."""

    kind = ConnectionKind.ROUTE
    legal = LEGAL_RECEIVE[ConnectionKind.ROUTE]

    __slots__ = ("peer_client_url", "peer_gateway_url", "peer_nats_url", "peer_url", "remote")

    def __init__(self, cid: int, decoder: Decoder, now: float, *, dialed: bool) -> None:
        super().__init__(cid, decoder, now, dialed=dialed)
        self.peer_url: str | None = None
        self.peer_gateway_url: str | None = None
        self.peer_client_url: str | None = None
        #: the peer's NATS port, if it has one (for NATS clients' ``connect_urls``)
        self.peer_nats_url: str | None = None
        #: the peer's interest: (account, pattern, queue) -> entry in the interest graph
        self.remote: dict[tuple[str, str, str | None], RemoteInterest] = {}


class BackboneConnection(PeerConnection):
    """The leafnode connection to a nats-server hub (``GatewayConfig.backbone``); it
    speaks nats-server's leafnode protocol, and stands for every other node."""

    kind = ConnectionKind.ROUTE
    legal = LEGAL_RECEIVE[ConnectionKind.ROUTE]
    ping_bytes: ClassVar[bytes | None] = PING
    pong_bytes: ClassVar[bytes | None] = PONG

    __slots__ = ("parser", "remote")

    def __init__(self, cid: int, decoder: Decoder, now: float) -> None:
        super().__init__(cid, decoder, now, dialed=True)
        self.leaf = True
        self.parser: NatsParser | None = None
        #: the hub's interest: (account, pattern, queue) -> entry in the interest graph
        self.remote: dict[tuple[str, str, str | None], RemoteInterest] = {}

    def error_bytes(self, code: ErrorCode, reason: str) -> bytes:
        """nats-server's ``-ERR`` line."""
        return error_line(code, reason)


class GatewayConnection(PeerConnection):
    """A gateway connection to a node of another cluster."""

    __slots__ = ("remote_cluster",)

    def __init__(self, cid: int, decoder: Decoder, now: float, *, dialed: bool) -> None:
        super().__init__(cid, decoder, now, dialed=dialed)
        #: the peer's cluster once the handshake completed
        self.remote_cluster: str | None = None


class InboundGateway(GatewayConnection):
    """A gateway connection this node accepted: data flows in, interest flows back."""

    kind = ConnectionKind.GATEWAY_INBOUND
    legal = LEGAL_RECEIVE[ConnectionKind.GATEWAY_INBOUND]

    __slots__ = ("in_interest", "peer_gateway_url")

    def __init__(self, cid: int, decoder: Decoder, now: float) -> None:
        super().__init__(cid, decoder, now, dialed=False)
        self.peer_gateway_url: str | None = None
        self.in_interest: InboundInterest | None = None


class OutboundGateway(GatewayConnection):
    """The one gateway connection this node dialed to a remote cluster: data flows out,
    interest flows in."""

    kind = ConnectionKind.GATEWAY_OUTBOUND
    legal = LEGAL_RECEIVE[ConnectionKind.GATEWAY_OUTBOUND]

    __slots__ = ("expected_cluster", "out_interest")

    def __init__(self, cid: int, decoder: Decoder, now: float, *, expected_cluster: str) -> None:
        super().__init__(cid, decoder, now, dialed=True)
        #: the cluster we meant to reach
        self.expected_cluster = expected_cluster
        self.out_interest: OutboundInterest | None = None


class LocalSubscription:
    """A subscription of a connection of this node, as stored in the interest graph."""

    #: a local subscription is one queue member; route interest carries its peer's count
    weight = 1

    __slots__ = ("account", "conn", "pattern", "prefix", "queue", "remaining", "sid")

    def __init__(
        self,
        conn: ClientConnection,
        account: str,
        sid: int,
        pattern: str,
        queue: str | None,
        prefix: bytes,
    ) -> None:
        self.conn = conn
        #: the account (or control namespace) the subscription is indexed in
        self.account = account
        self.sid = sid
        self.pattern = pattern
        self.queue = queue
        #: the encoded per-subscription head of a MSG frame (never None: see RemoteInterest)
        self.prefix = prefix
        self.remaining: int | None = None


class RemoteInterest:
    """Interest of a route peer, stored in the same graph as local subscriptions.

    ``prefix`` is always None: that is how the hot path tells it from a local
    :class:`LocalSubscription`.  ``weight`` is the peer's member count for a queue key.
    """

    __slots__ = ("account", "conn", "pattern", "queue", "weight")
    prefix = None
    remaining = None

    def __init__(
        self,
        conn: RouteConnection | BackboneConnection,
        account: str,
        pattern: str,
        queue: str | None,
        weight: int,
    ) -> None:
        self.conn = conn
        self.account = account
        self.pattern = pattern
        self.queue = queue
        self.weight = weight


# -- keyed state over unreliable datagrams (issue 20) -------------------------------------------

#: (subscription, key) pairs one connection numbers (``kseq``); past it, new keys go on
#: the reliable stream without a ``kseq`` (counted in ``DatagramCounters.table_full``)
KSEQ_TABLE_MAX = 4096
#: keys with a datagram queued for one connection and not yet taken by the shell (one
#: datagram per key: a newer state supersedes the queued one); past it, the oldest
#: key's datagram is dropped (a newer state of that key follows it; counted)
DATAGRAM_QUEUE_MAX = 1024


def pack_uint(n: int) -> bytes:
    """``n`` (0 <= n < 2**64) as a msgpack unsigned integer."""
    if n < 0x80:
        return bytes((n,))
    if n < 0x100:
        return b"\xcc" + n.to_bytes(1, "big")
    if n < 0x10000:
        return b"\xcd" + n.to_bytes(2, "big")
    if n < 0x100000000:
        return b"\xce" + n.to_bytes(4, "big")
    return b"\xcf" + n.to_bytes(8, "big")


def pack_str(text: str) -> bytes:
    """``text`` as a msgpack string."""
    raw = text.encode()
    n = len(raw)
    if n < 32:
        return bytes((0xA0 | n,)) + raw
    if n < 0x100:
        return b"\xd9" + n.to_bytes(1, "big") + raw
    if n < 0x10000:
        return b"\xda" + n.to_bytes(2, "big") + raw
    return b"\xdb" + n.to_bytes(4, "big") + raw


class DatagramCounters:
    """A node's totals over every :class:`KeyedDatagrams` lane (its statistics)."""

    __slots__ = ("dropped", "refreshes", "superseded", "table_full")

    def __init__(self) -> None:
        #: datagrams dropped from a full queue
        self.dropped = 0
        #: queued datagrams replaced by a newer state of the same key before the
        #: transport took them (the path was slower than the updates)
        self.superseded = 0
        #: keyed messages sent on the reliable stream as a periodic refresh
        self.refreshes = 0
        #: keyed messages sent without a kseq: the connection's kseq table was full
        self.table_full = 0


class KeyedDatagrams:
    """The unreliable lane of one client connection whose transport carries datagrams
    (QUIC): a message published with a ``key`` becomes a MSG frame with two trailing
    fields, ``[4, sid, subject, reply, payload, kseq, key]``, where ``kseq`` counts the
    messages of that (subscription, key) sent on this connection (1, 2, ...).  It goes
    as a datagram when it fits ``max_size``; every ``refresh``-th one of a key, and one
    too large, goes on the reliable stream instead (with its ``kseq``, so the client
    orders both lanes alike).  The queue holds one datagram per (subscription, key):
    a newer state replaces a queued older one in its place (``superseded``), so a path
    slower than the updates gets each key's latest state, never a backlog of stale
    ones.  Bounded: :data:`KSEQ_TABLE_MAX` keys, :data:`DATAGRAM_QUEUE_MAX` queued
    datagrams."""

    __slots__ = ("counters", "kseq", "max_size", "queue", "queued_bytes", "refresh")

    def __init__(self, max_size: int, refresh: int, counters: DatagramCounters) -> None:
        #: the largest datagram the path takes
        self.max_size = max_size
        #: every refresh-th message of a key goes reliably (0: never)
        self.refresh = refresh
        #: datagrams for the shell to send, one per (sid, key, 0), in the order their
        #: keys were first queued (a ``max_msgs`` subscription's: one per kseq)
        self.queue: dict[tuple[int, str, int], bytes] = {}
        #: bytes in :attr:`queue`
        self.queued_bytes = 0
        #: (sid, key) -> [last kseq, the key packed]
        self.kseq: dict[tuple[int, str], list[Any]] = {}
        #: the node's totals this lane counts into
        self.counters = counters

    def offer(
        self, sid: int, key: str, prefix: bytes, tail: bytes, counted: bool = False
    ) -> bytes | None:
        """One keyed MSG (``prefix`` + ``tail`` as the stream would carry it): b"" if it
        was queued as a datagram; the frame with its ``kseq`` to send on the stream
        instead; None if it has no ``kseq`` (the table is full: send it as it is).
        ``counted``: the subscription ends after a number of messages (``max_msgs``),
        so this one supersedes nothing and is superseded by nothing."""
        frame = self.number(sid, key, prefix, tail)
        if frame is None:
            return None
        return self.place(sid, key, frame, self.kseq[sid, key][0], counted)

    def number(self, sid: int, key: str, prefix: bytes, tail: bytes) -> bytes | None:
        """The keyed MSG with its next ``kseq`` (``[4, sid, subject, reply, payload,
        kseq, key]``), not queued yet (a client with a budget: its scheduler holds it
        until a send tick, then :meth:`place_latest`); None if the table is full."""
        k = (sid, key)
        entry = self.kseq.get(k)
        if entry is None:
            if len(self.kseq) >= KSEQ_TABLE_MAX:
                self.counters.table_full += 1
                return None
            entry = self.kseq[k] = [0, pack_str(key)]
        n = entry[0] = entry[0] + 1
        frame: bytes = b"\x97" + prefix[1:] + tail + pack_uint(n) + entry[1]
        return frame

    def place_latest(self, sid: int, key: str, frame: bytes) -> bool:
        """A frame from :meth:`number` that a send tick lets go now: True if it was
        queued as a datagram, False if it goes on the stream (the periodic refresh,
        too large, or a key this lane did not number).  A scheduler holds only the
        newest value of a key, so the frame carries the key's last ``kseq``."""
        entry = self.kseq.get((sid, key))
        if entry is None:
            return False
        return not self.place(sid, key, frame, entry[0])

    def place(self, sid: int, key: str, frame: bytes, n: int, counted: bool = False) -> bytes:
        """A keyed MSG of (``sid``, ``key``) that already has its ``kseq`` ``n`` (from
        :meth:`offer`, or a client with deltas): b"" if it was queued as a datagram, else
        ``frame`` (to send on the stream: the periodic refresh, or too large)."""
        refresh = self.refresh
        if refresh and n % refresh == 0:
            self.counters.refreshes += 1
            return frame
        if len(frame) > self.max_size:
            return frame
        queue = self.queue
        q = (sid, key, n) if counted else (sid, key, 0)
        old = queue.get(q)
        if old is not None:  # the queued state of this key is stale now: replace it
            self.counters.superseded += 1
            self.queued_bytes -= len(old)
        elif len(queue) >= DATAGRAM_QUEUE_MAX:
            first = next(iter(queue))
            self.queued_bytes -= len(queue.pop(first))
            self.counters.dropped += 1
        queue[q] = frame
        self.queued_bytes += len(frame)
        return b""

    def take(self, max_bytes: int = -1) -> list[bytes]:
        """The queued datagrams, oldest key first: all of them (``max_bytes`` < 0), or
        as many as start within ``max_bytes`` (what the path takes now; 0: none); the
        rest stay queued, each replaced by its key's next state."""
        queue = self.queue
        if max_bytes < 0 or max_bytes >= self.queued_bytes:
            everything = list(queue.values())
            queue.clear()
            self.queued_bytes = 0
            return everything
        out: list[bytes] = []
        taken = 0
        while queue and taken < max_bytes:
            first = next(iter(queue))
            d = queue.pop(first)
            taken += len(d)
            out.append(d)
        self.queued_bytes -= taken
        return out
