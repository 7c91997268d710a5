"""The frames of the meshgate wire protocol.

Every frame is one msgpack array whose first element is a small integer
:class:`Opcode`; the remaining elements are the fields of the frame type below,
in order.  The types are ``NamedTuple`` so that the decoded tuple *is* the
frame: no per-message object is built on the hot path.
"""

from __future__ import annotations

__all__ = [
    "AccountInterest",
    "AccountNoInterest",
    "ConnectionKind",
    "Error",
    "Frame",
    "GatewayMessage",
    "GatewaySub",
    "GatewayUnsub",
    "Hello",
    "Info",
    "KeyAck",
    "InterestModeEnd",
    "InterestModeStart",
    "LEGAL_RECEIVE",
    "MAX_PRIORITY",
    "MIN_PRIORITY",
    "RELAY_KEYS_FEATURE",
    "Message",
    "NoInterest",
    "Opcode",
    "PROTOCOL_VERSION",
    "Ping",
    "Pong",
    "Publish",
    "Role",
    "RouteMessage",
    "RouteSub",
    "RouteUnsub",
    "Subscribe",
    "Unsubscribe",
    "FRAME_TYPES",
]

import enum
from typing import NamedTuple

#: Version carried in :class:`Hello`; a peer with another major version is refused.
PROTOCOL_VERSION = 1

#: The largest publisher priority (issue 21): a multiplier of a keyed stream's relevance
#: weight; a larger, negative or non-finite one is refused (docs/scheduling.md)
MAX_PRIORITY = 16.0
#: The HELLO feature of a node that takes keyed relays (RMSG and GMSG with ``key`` and
#: ``priority`` after the payload); a peer without it gets them without
RELAY_KEYS_FEATURE = "keyed-relay"
#: The smallest priority honoured: a lower one (0 included) counts as this, so that no
#: key's accumulated priority stops growing (nothing starves)
MIN_PRIORITY = 1.0 / 16.0


class Opcode(enum.IntEnum):
    """The first element of every frame."""

    HELLO = 0
    PUB = 1
    SUB = 2
    UNSUB = 3
    MSG = 4
    PING = 5
    PONG = 6
    ERROR = 7
    INFO = 8
    KACK = 9
    RSUB = 16
    RUNSUB = 17
    RMSG = 18
    GMSG = 32
    GSUB = 33
    GUNSUB = 34
    GNOINT = 35
    GACC_NOINT = 36
    GACC_INT = 37
    GMODE_START = 38
    GMODE_END = 39


class Role(enum.StrEnum):
    """What a connection is, announced in :class:`Hello`."""

    CLIENT = "client"
    ROUTE = "route"
    GATEWAY = "gateway"
    REPLICANT = "replicant"
    NODE = "node"  # a node answering a client's or replicant's hello


class Hello(NamedTuple):
    """``[0, {...}]`` — the handshake; each side sends one first, nothing else before it.

    Encoded as a map so that fields can be added without a version bump;
    unknown keys are ignored, known keys are type-checked.
    """

    version: int
    role: str
    name: str
    cluster: str | None = None
    token: str | None = None
    max_payload: int = 0
    features: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()
    session: str | None = None


class Publish(NamedTuple):
    """``[1, subject, reply, payload, key]`` — a client publishes; ``key`` names coalescable
    state.  ``[1, subject, reply, payload, key, priority]``: with a publisher priority (a
    number from 0 to :data:`MAX_PRIORITY` multiplying the key's relevance weight in the
    schedulers of clients with a budget; encoded only when given)."""

    subject: str
    reply: str | None
    payload: bytes
    key: str | None = None
    priority: float | None = None


class Subscribe(NamedTuple):
    """``[2, sid, pattern, queue]`` — a client subscribes under its own integer ``sid``."""

    sid: int
    pattern: str
    queue: str | None = None


class Unsubscribe(NamedTuple):
    """``[3, sid, max_msgs]`` — remove ``sid`` now, or after ``max_msgs`` more deliveries."""

    sid: int
    max_msgs: int | None = None


class Message(NamedTuple):
    """``[4, sid, subject, reply, payload]`` — a delivery to a client subscription."""

    sid: int
    subject: str
    reply: str | None
    payload: bytes


class Ping(NamedTuple):
    """``[5]`` — keepalive and round-trip probe; answered by :class:`Pong`."""


class Pong(NamedTuple):
    """``[6]`` — answer to :class:`Ping`."""


class Error(NamedTuple):
    """``[7, code, reason]`` — an :class:`~meshgate.ErrorCode` and a human-readable reason;
    ``[7, code, reason, sid]`` when it refuses the client's subscription ``sid``."""

    code: int
    reason: str
    #: the subscription refused (a node to its client), else None (not encoded)
    sid: int | None = None


class Info(NamedTuple):
    """``[8, {...}]`` — gossip: the URLs a node knows for its cluster and for gateways;
    to a client after its handshake, the client URLs of the cluster (to reconnect to)."""

    cluster: str
    route_urls: tuple[str, ...] = ()
    gateway_urls: tuple[str, ...] = ()
    client_urls: tuple[str, ...] = ()


class KeyAck(NamedTuple):
    """``[9, [sid, key, kseq, sid, key, kseq, ...]]`` — a client acknowledges keyed
    values it delivered (issue 21, deltas): per (subscription, key), the ``kseq`` it now
    holds as a baseline (0: it holds none, send the next value whole)."""

    acks: tuple[int | str, ...]


class RouteSub(NamedTuple):
    """``[16, account, pattern, queue, weight]`` — interest of a route peer; weight is absolute."""

    account: str
    pattern: str
    queue: str | None
    weight: int


class RouteUnsub(NamedTuple):
    """``[17, account, pattern, queue]`` — the route peer's last subscription on the key left."""

    account: str
    pattern: str
    queue: str | None


class RouteMessage(NamedTuple):
    """``[18, queues, account, subject, reply, payload]`` — a message relayed over a route;
    ``[..., payload, key]`` or ``[..., payload, key, priority]`` for keyed state (to a peer
    that announced the ``keyed-relay`` feature; encoded only when given)."""

    queues: tuple[str, ...] | None
    account: str
    subject: str
    reply: str | None
    payload: bytes
    key: str | None = None
    priority: float | None = None


class GatewayMessage(NamedTuple):
    """``[32, queues, account, subject, reply, payload]`` — sent on an outbound gateway only.

    ``queues`` names the queue groups the receiving cluster may serve.  Keyed state
    carries ``key`` (and ``priority``) after the payload, as :class:`RouteMessage`.
    """

    queues: tuple[str, ...] | None
    account: str
    subject: str
    reply: str | None
    payload: bytes
    key: str | None = None
    priority: float | None = None


class GatewaySub(NamedTuple):
    """``[33, account, pattern, queue]`` — positive interest, sent back on an inbound gateway."""

    account: str
    pattern: str
    queue: str | None


class GatewayUnsub(NamedTuple):
    """``[34, account, pattern, queue]`` — interest removed, sent back on an inbound gateway."""

    account: str
    pattern: str
    queue: str | None


class NoInterest(NamedTuple):
    """``[35, account, subject]`` — optimistic mode: stop sending this literal subject."""

    account: str
    subject: str


class AccountNoInterest(NamedTuple):
    """``[36, account]`` — optimistic mode: nothing in this account is wanted."""

    account: str


class AccountInterest(NamedTuple):
    """``[37, account]`` — cancels :class:`AccountNoInterest`."""

    account: str


class InterestModeStart(NamedTuple):
    """``[38, account]`` — the account switches to interest-only; a full dump follows."""

    account: str


class InterestModeEnd(NamedTuple):
    """``[39, account]`` — the dump is complete; forward only on positive interest from now."""

    account: str


Frame = (
    Hello
    | Publish
    | Subscribe
    | Unsubscribe
    | Message
    | Ping
    | Pong
    | Error
    | Info
    | KeyAck
    | RouteSub
    | RouteUnsub
    | RouteMessage
    | GatewayMessage
    | GatewaySub
    | GatewayUnsub
    | NoInterest
    | AccountNoInterest
    | AccountInterest
    | InterestModeStart
    | InterestModeEnd
)

#: Opcode to frame type.
FRAME_TYPES: dict[Opcode, type[Frame]] = {
    Opcode.HELLO: Hello,
    Opcode.PUB: Publish,
    Opcode.SUB: Subscribe,
    Opcode.UNSUB: Unsubscribe,
    Opcode.MSG: Message,
    Opcode.PING: Ping,
    Opcode.PONG: Pong,
    Opcode.ERROR: Error,
    Opcode.INFO: Info,
    Opcode.KACK: KeyAck,
    Opcode.RSUB: RouteSub,
    Opcode.RUNSUB: RouteUnsub,
    Opcode.RMSG: RouteMessage,
    Opcode.GMSG: GatewayMessage,
    Opcode.GSUB: GatewaySub,
    Opcode.GUNSUB: GatewayUnsub,
    Opcode.GNOINT: NoInterest,
    Opcode.GACC_NOINT: AccountNoInterest,
    Opcode.GACC_INT: AccountInterest,
    Opcode.GMODE_START: InterestModeStart,
    Opcode.GMODE_END: InterestModeEnd,
}

OPCODE_OF: dict[type[Frame], Opcode] = {t: op for op, t in FRAME_TYPES.items()}


class ConnectionKind(enum.Enum):
    """A connection as seen by the side that *receives* on it; keys of :data:`LEGAL_RECEIVE`."""

    #: a node receiving from a client
    CLIENT = "client"
    #: a node receiving from a replicant adapter
    REPLICANT = "replicant"
    #: a client or replicant receiving from its node
    NODE = "node"
    #: a node receiving from a route peer (symmetric)
    ROUTE = "route"
    #: a node receiving on a gateway connection it accepted (data flows in)
    GATEWAY_INBOUND = "gateway-inbound"
    #: a node receiving on the gateway connection it dialed (interest flows in)
    GATEWAY_OUTBOUND = "gateway-outbound"


_COMMON = frozenset({Opcode.HELLO, Opcode.PING, Opcode.PONG, Opcode.ERROR})

#: Which opcodes a receiver accepts on each kind of connection; anything else is a
#: protocol error (:attr:`~meshgate.ErrorCode.ILLEGAL_FOR_ROLE`) that closes the connection.
LEGAL_RECEIVE: dict[ConnectionKind, frozenset[Opcode]] = {
    ConnectionKind.CLIENT: _COMMON | {Opcode.PUB, Opcode.SUB, Opcode.UNSUB, Opcode.KACK},
    ConnectionKind.REPLICANT: _COMMON | {Opcode.PUB, Opcode.SUB, Opcode.UNSUB, Opcode.KACK},
    ConnectionKind.NODE: _COMMON | {Opcode.MSG, Opcode.INFO},
    ConnectionKind.ROUTE: _COMMON | {Opcode.RSUB, Opcode.RUNSUB, Opcode.RMSG, Opcode.INFO},
    ConnectionKind.GATEWAY_INBOUND: _COMMON | {Opcode.GMSG},
    ConnectionKind.GATEWAY_OUTBOUND: _COMMON
    | {
        Opcode.GSUB,
        Opcode.GUNSUB,
        Opcode.GNOINT,
        Opcode.GACC_NOINT,
        Opcode.GACC_INT,
        Opcode.GMODE_START,
        Opcode.GMODE_END,
        Opcode.INFO,
    },
}
