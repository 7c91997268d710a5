"""The sans-IO node core: protocol handling and local routing for one node.

No I/O, no clock, no tasks: the trio shell (``_gateway.py``) feeds bytes and
timer ticks in (time is an argument) and takes encoded output out.  After each
call the shell looks at :attr:`NodeCore.dirty` (connections with output to
flush) and :attr:`NodeCore.closing` (connections to close once flushed).

Hot path (a client publishes, N subscribers receive): the decoder's validated
tuple is used as is; the subject is looked up in the account's match cache;
the shared tail (subject, reply, payload) is encoded once and each target gets
two ``bytearray`` appends (its precomputed prefix, then the tail).
"""

from __future__ import annotations

import enum
import hmac
from collections import deque
from typing import Any

import msgpack

from ._errors import ErrorCode, RemoteProtocolError
from ._stats import AccountStatistics, Statistics
from .authority import Delivery, InputRouter
from .config import GatewayConfig, Permissions, User
from .interest import InboundInterest, InterestGraph, OutboundInterest
from .protocol import (
    LEGAL_RECEIVE,
    PROTOCOL_VERSION,
    ConnectionKind,
    Decoder,
    Encoder,
    Error,
    Hello,
    Info,
    Message,
    Opcode,
    Ping,
    Pong,
    Role,
    RouteSub,
    RouteUnsub,
    UnpackerPool,
    to_frame,
)
from .subjects import is_valid_pattern, is_valid_subject, match

_PUB = int(Opcode.PUB)
_SUB = int(Opcode.SUB)
_UNSUB = int(Opcode.UNSUB)
_PING = int(Opcode.PING)
_PONG = int(Opcode.PONG)
_HELLO = int(Opcode.HELLO)
_ERROR = int(Opcode.ERROR)
_RSUB = int(Opcode.RSUB)
_RUNSUB = int(Opcode.RUNSUB)
_RMSG = int(Opcode.RMSG)
_INFO = int(Opcode.INFO)
_SPECULATIVE_MAX = 65536
_GMSG = int(Opcode.GMSG)
_GW_INTEREST = frozenset(
    int(op)
    for op in (
        Opcode.GSUB,
        Opcode.GUNSUB,
        Opcode.GNOINT,
        Opcode.GACC_NOINT,
        Opcode.GACC_INT,
        Opcode.GMODE_START,
        Opcode.GMODE_END,
    )
)
#: prefix of reply subjects routed back to their origin cluster and node
GR_PREFIX = "_GR_."

_VALID_CACHE_MAX = 16384
_PERM_CACHE_MAX = 1024


class ConnState(enum.IntEnum):
    """Lifecycle of a connection in the core."""

    AWAIT_HELLO = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


class _Account:
    __slots__ = ("clients", "messages_in", "messages_out", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.clients = 0
        self.messages_in = 0
        self.messages_out = 0


class Subscription:
    """A client subscription as the core stores it in the interest graph."""

    #: a local subscription is one queue member; route interest carries its peer's count
    weight = 1

    __slots__ = ("conn", "pattern", "prefix", "queue", "remaining", "sid")

    def __init__(
        self, conn: Connection, sid: int, pattern: str, queue: str | None, prefix: bytes
    ) -> None:
        self.conn = conn
        self.sid = sid
        self.pattern = pattern
        self.queue = queue
        self.prefix = prefix
        self.remaining: int | None = None


class RemoteInterest:
    """Interest of a route peer, stored in the same graph as local subscriptions.

    ``prefix`` is always None: that is how the hot path tells it from a local
    :class:`Subscription`.  ``weight`` is the peer's member count for a queue key.
    """

    __slots__ = ("account", "conn", "pattern", "queue", "weight")
    prefix = None
    remaining = None

    def __init__(
        self, conn: Connection, account: str, pattern: str, queue: str | None, weight: int
    ) -> None:
        self.conn = conn
        self.account = account
        self.pattern = pattern
        self.queue = queue
        self.weight = weight


class Connection:
    """One connection's protocol state and output buffer in the core."""

    __slots__ = (
        "account",
        "bytes_in",
        "bytes_out",
        "close_reason",
        "coalesced",
        "counted",
        "decoder",
        "dialed",
        "dirty",
        "dropped",
        "expected_cluster",
        "frame_sizes",
        "id",
        "in_interest",
        "keyed",
        "keyed_bytes",
        "kind",
        "legal",
        "messages_in",
        "messages_out",
        "name",
        "opened_at",
        "out",
        "out_interest",
        "peer",
        "peer_gateway_url",
        "peer_url",
        "perm_cache",
        "ping_sent_at",
        "pings_out",
        "pings_sent",
        "pong_waiters",
        "pongs_received",
        "pub_perm",
        "remote",
        "remote_cluster",
        "resync_streak",
        "resyncs",
        "rtt",
        "shell",
        "slow",
        "state",
        "sub_perm",
        "subs",
    )

    def __init__(self, cid: int, kind: ConnectionKind, decoder: Decoder, now: float) -> None:
        self.id = cid
        self.kind = kind
        self.legal = LEGAL_RECEIVE[kind]
        self.state = ConnState.AWAIT_HELLO
        self.decoder = decoder
        self.out = bytearray()
        self.dirty = False
        self.account: _Account | None = None
        self.name = ""
        self.subs: dict[int, Subscription] = {}
        self.opened_at = now
        self.pings_out = 0
        self.messages_in = 0
        self.messages_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.dropped = 0
        self.coalesced = 0
        self.resyncs = 0
        self.resync_streak = 0
        self.slow = False
        self.frame_sizes: deque[int] = deque()
        self.keyed: dict[tuple[int, str], bytes] = {}
        self.keyed_bytes = 0
        self.pub_perm: Permissions | None = None
        self.sub_perm: Permissions | None = None
        self.perm_cache: dict[str, bool] = {}
        self.close_reason: str | None = None
        self.counted = False  # counts towards max_connections
        self.dialed = False
        self.peer: str | None = None  # route peer's node name once registered
        self.peer_url: str | None = None
        self.remote: dict[tuple[str, str, str | None], RemoteInterest] = {}
        self.pings_sent = 0
        self.pongs_received = 0
        self.pong_waiters: deque[tuple[int, Any]] = deque()
        self.peer_gateway_url: str | None = None
        self.expected_cluster: str | None = None  # outbound gateway: the cluster we dialed
        self.remote_cluster: str | None = None  # gateway: the peer's cluster once registered
        self.in_interest: InboundInterest | None = None
        self.out_interest: OutboundInterest | None = None
        self.rtt: float | None = None
        self.ping_sent_at: float | None = None
        self.shell: Any = None  # the trio shell's handle

    def __repr__(self) -> str:
        return f"<Connection {self.id} {self.kind.value} {self.state.name}>"


def _permitted(perm: Permissions, subject: str) -> bool:
    return any(match(p, subject) for p in perm.allow) and not any(
        match(p, subject) for p in perm.deny
    )


def _sub_permitted(perm: Permissions, pattern: str) -> bool:
    """A subscription pattern is allowed if an allow pattern covers it and no deny pattern
    could match a subject it matches."""

    def covers(general: str, specific: str) -> bool:
        g, s = general.split("."), specific.split(".")
        for i, gt in enumerate(g):
            if gt == ">":
                return len(s) > i
            if i >= len(s):
                return False
            if gt != "*" and (gt != s[i] or s[i] in ("*", ">")):
                return False
        return len(g) == len(s)

    def overlaps(a: str, b: str) -> bool:
        x, y = a.split("."), b.split(".")
        for i in range(max(len(x), len(y))):
            xt = x[i] if i < len(x) else None
            yt = y[i] if i < len(y) else None
            if xt == ">" or yt == ">":
                return xt is not None and yt is not None
            if xt is None or yt is None:
                return False
            if xt != "*" and yt != "*" and xt != yt:
                return False
        return True

    return any(covers(p, pattern) for p in perm.allow) and not any(
        overlaps(p, pattern) for p in perm.deny
    )


def _parse_gr(subject: str) -> tuple[str, str, str] | None:
    """Split ``_GR_.<cluster>.<node>.<reply>``; None if it is not of that form."""
    parts = subject.split(".", 3)
    if len(parts) != 4 or not parts[1] or not parts[2] or not parts[3]:
        return None
    return parts[1], parts[2], parts[3]


class NodeCore:
    """All protocol and routing state of one node; synchronous and I/O-free."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.encoder = Encoder()
        self.graph: InterestGraph[Subscription | RemoteInterest] = InterestGraph()
        self.conns: dict[int, Connection] = {}
        self.dirty: list[Connection] = []
        self.closing: list[Connection] = []
        self._next_id = 0
        self._rr = 0
        self._valid: dict[str, None] = {}
        self._accounts: dict[str, _Account] = {}
        self._users: dict[str, User] = {u.token: u for u in config.users}
        self._max_payload = config.max_payload
        self._max_pending = config.max_pending_bytes
        self._policy = config.slow_consumer_policy
        self._next_ping: float | None = None
        self._pong = self.encoder.encode(Pong())
        self._unpackers = UnpackerPool()
        self._ping = self.encoder.encode(Ping())
        #: route peers by node name
        self.routes: dict[str, Connection] = {}
        #: this node's route listener URL, set by the shell once bound
        self.cluster_url: str | None = None
        #: URLs learned by gossip that the shell should dial
        self.dial_requests: list[str] = []
        #: set when the set of routes changed; the shell clears it
        self.routes_changed = False
        self._local_keys: dict[tuple[str, str, str | None], int] = {}
        #: our own route URLs as seen by peers (a seed list may include ourselves)
        self.self_urls: set[str] = set()
        #: this node's gateway listener URL, set by the shell once bound
        self.gateway_url: str | None = None
        #: registered outbound gateway connection per remote cluster (exactly one)
        self.outbound: dict[str, Connection] = {}
        self._outbound_order: list[Connection] = []
        #: registered inbound gateway connections by connection id
        self.inbound: dict[int, Connection] = {}
        #: gateway URLs known per remote cluster (configured and gossiped)
        self.gateway_urls: dict[str, set[str]] = {}
        #: remote clusters the shell should start a dialer for
        self.gateway_dial_requests: list[str] = []
        #: set when gateway connections changed; the shell clears it
        self.gateways_changed = False
        self._now = 0.0
        #: set by :meth:`shutdown`: new connections are refused
        self.draining = False
        #: one input router per account (game layer)
        self.input_routers: dict[str, InputRouter] = {}
        # the node's own subscriptions (authority messages, interest sync requests), one
        # pseudo-connection per account; its output is decoded and handled in the core
        self._internal: dict[str, Connection] = {}
        self._draining_internal = False
        if config.replicants:
            for account in sorted({u.account for u in config.users} or {"$G"}):
                self._internal_subscribe(account, "$AUTH.*")
                self._internal_subscribe(account, "$INTEREST.sync")
                self._internal_subscribe(account, "$SPEC.*")
        #: the last malformed authority messages, for diagnosis
        self.authority_errors: list[str] = []
        # speculative relay: inputs relayed provisionally, and who got each relay
        self._speculative_inputs: dict[tuple[str, int], None] = {}
        self._provisional: dict[str, tuple[str, list[tuple[int, int]]]] = {}
        #: provisional records forgotten (bounded) before the owner answered
        self.provisional_evicted = 0
        #: messages on ``$`` subjects (authority, inputs, interest deltas) sent to gateways
        self.gateway_control_msgs = 0
        for cluster, urls in config.gateways.items():
            if cluster != config.cluster:
                self.gateway_urls[cluster] = set(urls)
        self._hello = self.encoder.encode(
            Hello(
                PROTOCOL_VERSION,
                Role.NODE.value,
                config.name,
                config.cluster,
                None,
                config.max_payload,
                (),
                (),
            )
        )
        # counters
        self.clients = 0
        self.messages_in = 0
        self.messages_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.slow_consumers = 0
        self.dropped_messages = 0
        self.coalesced_messages = 0
        self.resyncs = 0
        self.protocol_errors = 0
        self.auth_failures = 0
        self.permission_violations = 0

    # -- connection lifecycle -----------------------------------------------------------------

    def open_connection(
        self,
        now: float,
        kind: ConnectionKind = ConnectionKind.CLIENT,
        *,
        dialed: bool = False,
        expected_cluster: str | None = None,
    ) -> Connection:
        """A transport accepted (or, for ``dialed``, opened) a connection; our HELLO goes first."""
        self._next_id += 1
        decoder = Decoder(max_frame_bytes=self._max_payload + 8 * 1024, pool=self._unpackers)
        conn = Connection(self._next_id, kind, decoder, now)
        conn.dialed = dialed
        self.conns[conn.id] = conn
        if kind is ConnectionKind.ROUTE:
            self._append(conn, self._route_hello())
            if self.draining:
                self._close_quietly(conn, "node is shutting down")
            return conn
        if kind is ConnectionKind.GATEWAY_OUTBOUND or kind is ConnectionKind.GATEWAY_INBOUND:
            conn.expected_cluster = expected_cluster
            self._append(
                conn, self._gateway_hello(outbound=kind is ConnectionKind.GATEWAY_OUTBOUND)
            )
            return conn
        self._append(conn, self._hello)
        if self.draining:
            self._fail(conn, ErrorCode.SHUTTING_DOWN, "node is shutting down", count=False)
        elif self.clients >= self.config.max_connections:
            self._fail(
                conn,
                ErrorCode.LIMIT_EXCEEDED,
                f"max_connections={self.config.max_connections} reached",
            )
        else:
            self.clients += 1
            conn.counted = True
        return conn

    def connection_lost(self, conn: Connection) -> None:
        """The transport is gone: forget the connection and its subscriptions."""
        if conn.state is ConnState.CLOSED:
            return
        self._retire(conn)
        self.conns.pop(conn.id, None)
        conn.state = ConnState.CLOSED
        conn.out = bytearray()
        conn.keyed.clear()

    def _retire(self, conn: Connection) -> None:
        """The connection stops counting: its subscriptions and its client slot go now."""
        if conn.kind is ConnectionKind.ROUTE:
            self._retire_route(conn)
            return
        if (
            conn.kind is ConnectionKind.GATEWAY_OUTBOUND
            or conn.kind is ConnectionKind.GATEWAY_INBOUND
        ):
            self._retire_gateway(conn)
            return
        for sub in list(conn.subs.values()):
            self._remove_sub(sub)
        self._replicant_lost(conn)
        if conn.account is not None:
            conn.account.clients -= 1
            conn.account = None
        if conn.counted:
            conn.counted = False
            self.clients -= 1

    def take_output(self, conn: Connection) -> bytearray:
        """Everything queued for ``conn``, in order; the buffer starts empty again."""
        out = conn.out
        if conn.keyed:
            out += b"".join(conn.keyed.values())
            conn.keyed.clear()
            conn.keyed_bytes = 0
        conn.out = bytearray()
        conn.frame_sizes.clear()
        conn.dirty = False
        conn.slow = False
        conn.resync_streak = 0
        n = len(out)
        conn.bytes_out += n
        self.bytes_out += n
        return out

    def pending_bytes(self, conn: Connection) -> int:
        """Bytes queued for ``conn`` and not yet taken by the shell."""
        return len(conn.out) + conn.keyed_bytes

    def tick(self, now: float) -> None:
        """Timers: handshake deadline and keepalive pings."""
        cfg = self.config
        for conn in list(self.conns.values()):
            if conn.state is ConnState.AWAIT_HELLO and now - conn.opened_at >= cfg.auth_timeout:
                self.auth_failures += 1
                self._fail(conn, ErrorCode.AUTH_FAILED, "no HELLO within auth_timeout")
        if self._next_ping is None:
            self._next_ping = now + cfg.ping_interval
        elif now >= self._next_ping:
            self._next_ping = now + cfg.ping_interval
            ping = self.encoder.encode(Ping())
            for conn in list(self.conns.values()):
                if conn.state is not ConnState.OPEN:
                    continue
                if conn.pings_out >= cfg.max_pings_out:
                    self._fail(conn, ErrorCode.STALE_CONNECTION, "stale connection: no PONG")
                else:
                    conn.pings_out += 1
                    conn.pings_sent += 1
                    if conn.ping_sent_at is None:
                        conn.ping_sent_at = now
                    self._append(conn, ping)

    def shutdown(self) -> None:
        """Drain: refuse new connections; tell every connection the node is going away."""
        self.draining = True
        for conn in list(self.conns.values()):
            if conn.state < ConnState.CLOSING:
                self._fail(conn, ErrorCode.SHUTTING_DOWN, "node is shutting down", count=False)

    # -- input --------------------------------------------------------------------------------

    def receive_data(self, conn: Connection, data: bytes | bytearray, now: float = 0.0) -> None:
        """Process bytes received on ``conn`` at time ``now``: every complete frame is handled."""
        if conn.state >= ConnState.CLOSING:
            return
        self._now = now
        n = len(data)
        conn.bytes_in += n
        self.bytes_in += n
        dec = conn.decoder
        try:
            dec.feed(data)
            nxt = dec.next_raw
            publish = self._publish
            while (f := nxt()) is not None:
                op = f[0]
                if op == _PUB and conn.state is ConnState.OPEN:
                    publish(conn, f[1], f[2], f[3], f[4])
                elif op == _RMSG and conn.state is ConnState.OPEN and op in conn.legal:
                    self._route_message(f[1], f[2], f[3], f[4], f[5])
                elif op == _GMSG and conn.state is ConnState.OPEN and op in conn.legal:
                    self._gateway_message(conn, f[1], f[2], f[3], f[4], f[5])
                else:
                    self._control(conn, op, f)
                if conn.state >= ConnState.CLOSING:
                    return
        except RemoteProtocolError as exc:
            self._fail(conn, exc.code, exc.reason)
        finally:
            if self._internal_pending():
                self._drain_internal()

    def _internal_subs(self, account: str | None = None) -> int:
        """The node's own subscriptions (not counted as clients' in statistics)."""
        return sum(
            len(c.subs) for a, c in self._internal.items() if account is None or a == account
        )

    def _internal_pending(self) -> bool:
        return any(c.out for c in self._internal.values())

    def _control(self, conn: Connection, op: int, f: tuple[Any, ...]) -> None:
        if op not in conn.legal:
            self._fail(
                conn,
                ErrorCode.ILLEGAL_FOR_ROLE,
                f"{Opcode(op).name} is not legal on a {conn.kind.value} connection",
            )
            return
        if conn.state is ConnState.AWAIT_HELLO:
            if op != _HELLO:
                self._fail(conn, ErrorCode.HANDSHAKE_REFUSED, "expected HELLO first")
                return
            self._hello_received(conn, to_frame(f))  # type: ignore[arg-type]
        elif op == _SUB:
            self._subscribe(conn, f[1], f[2], f[3])
        elif op == _UNSUB:
            self._unsubscribe(conn, f[1], f[2])
        elif op == _PING:
            self._append(conn, self._pong)
        elif op == _PONG:
            conn.pings_out = 0
            conn.pongs_received += 1
            if conn.ping_sent_at is not None:
                conn.rtt = self._now - conn.ping_sent_at
                conn.ping_sent_at = None
                if conn.remote_cluster is not None and conn.out_interest is not None:
                    self._sort_outbound()
            waiters = conn.pong_waiters
            while waiters and waiters[0][0] <= conn.pongs_received:
                waiters.popleft()[1]()
        elif op == _RSUB:
            self._route_sub(conn, f[1], f[2], f[3], f[4])
        elif op == _RUNSUB:
            self._route_unsub(conn, f[1], f[2], f[3])
        elif op == _INFO:
            self._info(conn, to_frame(f))  # type: ignore[arg-type]
        elif op in _GW_INTEREST:
            assert conn.out_interest is not None
            conn.out_interest.receive(to_frame(f))
        elif op == _HELLO:
            self._fail(conn, ErrorCode.MALFORMED, "duplicate HELLO")
        elif op == _ERROR:
            self._close_quietly(conn, f"peer sent error {f[1]}: {f[2]}")

    def _hello_received(self, conn: Connection, hello: Hello) -> None:
        if hello.version != PROTOCOL_VERSION:
            self._fail(
                conn,
                ErrorCode.HANDSHAKE_REFUSED,
                f"protocol version {hello.version} is not supported (need {PROTOCOL_VERSION})",
            )
            return
        if conn.kind is ConnectionKind.ROUTE:
            self._route_hello_received(conn, hello)
            return
        if (
            conn.kind is ConnectionKind.GATEWAY_OUTBOUND
            or conn.kind is ConnectionKind.GATEWAY_INBOUND
        ):
            self._gateway_hello_received(conn, hello)
            return
        if hello.role not in (Role.CLIENT, Role.REPLICANT):
            self._fail(
                conn,
                ErrorCode.HANDSHAKE_REFUSED,
                f"role {hello.role!r} cannot use the client port",
            )
            return
        account = "$G"
        if self._users:
            user = self._check_token(hello.token)
            if user is None:
                self.auth_failures += 1
                self._fail(conn, ErrorCode.AUTH_FAILED, "authentication failed")
                return
            account = user.account
            if user.publish != Permissions():
                conn.pub_perm = user.publish
            if user.subscribe != Permissions():
                conn.sub_perm = user.subscribe
        acct = self._accounts.get(account)
        if acct is None:
            acct = self._accounts[account] = _Account(account)
        acct.clients += 1
        conn.account = acct
        conn.name = hello.name
        if hello.role == Role.REPLICANT:
            conn.kind = ConnectionKind.REPLICANT
            conn.legal = LEGAL_RECEIVE[ConnectionKind.REPLICANT]
        conn.state = ConnState.OPEN

    def _check_token(self, token: str | None) -> User | None:
        if token is None:
            return None
        found = None
        for known, user in self._users.items():
            # compare against every user so timing does not reveal how close a guess was
            if hmac.compare_digest(known.encode(), token.encode()):
                found = user
        return found

    # -- hot path -----------------------------------------------------------------------------

    def _publish(
        self, conn: Connection, subject: str, reply: str | None, payload: bytes, key: str | None
    ) -> None:
        if len(payload) > self._max_payload:
            self._fail(
                conn,
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"payload of {len(payload)} bytes exceeds max_payload={self._max_payload}",
            )
            return
        valid = self._valid
        if subject not in valid and not self._validate(conn, subject):
            return
        if reply is not None and reply not in valid and not self._validate(conn, reply):
            return
        if conn.pub_perm is not None and not self._pub_allowed(conn, subject):
            return
        acct = conn.account
        assert acct is not None
        conn.messages_in += 1
        acct.messages_in += 1
        self.messages_in += 1
        if subject[0] == "$" and self.config.replicants and subject.startswith("$IN."):
            self._client_input(conn, acct, subject[4:], payload)
            return
        self._route_publish(acct, subject, reply, payload, key)

    def _route_publish(
        self, acct: _Account, subject: str, reply: str | None, payload: bytes, key: str | None
    ) -> None:
        """Route a message entering this node from a client (or from the node itself):
        local subscribers, interested route peers, interested remote clusters."""
        if (
            subject[0] == "_"
            and subject.startswith(GR_PREFIX)
            and self._reply_routed(acct.name, subject, reply, payload)
        ):
            return
        index = self.graph.index(acct.name)
        if index is None:
            if self.outbound:
                self._to_gateways(acct.name, subject, reply, payload, ())
            return
        m = index.match(subject)
        if not (m.plain or m.queues):
            if self.outbound:
                self._to_gateways(acct.name, subject, reply, payload, ())
            return
        tail = self.encoder.message_tail(subject, reply, payload)
        deliver = self._deliver
        n = 0
        peers: dict[Connection, list[str]] | None = None
        for sub in m.plain:
            if sub.prefix is not None:
                n += deliver(sub, tail, key)
            else:
                if peers is None:
                    peers = {}
                if sub.conn not in peers:
                    peers[sub.conn] = []
        for q, members in m.queues:
            chosen = self._pick(members)
            if chosen.prefix is not None:
                n += deliver(chosen, tail, key)
            else:
                if peers is None:
                    peers = {}
                peers.setdefault(chosen.conn, []).append(q)
        if peers:
            n += self._to_routes(peers, acct.name, subject, reply, payload)
        if reply is not None and reply[0] == "$" and reply.startswith("$PROV."):
            self._record_provisional(reply, subject, m.plain)
        if self.outbound:
            n += self._to_gateways(acct.name, subject, reply, payload, [q for q, _ in m.queues])
        acct.messages_out += n
        self.messages_out += n

    def _pick(
        self, members: tuple[Subscription | RemoteInterest, ...]
    ) -> Subscription | RemoteInterest:
        """One queue member, round robin weighted by each entry's member count."""
        self._rr += 1
        if len(members) == 1:
            return members[0]
        total = 0
        for m in members:
            total += m.weight
        i = self._rr % total
        for m in members:
            i -= m.weight
            if i < 0:
                return m
        return members[-1]

    def _to_routes(
        self,
        peers: dict[Connection, list[str]],
        account: str,
        subject: str,
        reply: str | None,
        payload: bytes,
    ) -> int:
        enc = self.encoder
        tail = enc.relay_tail(account, subject, reply, payload)
        plain_prefix: bytes | None = None
        for peer, queues in peers.items():
            if queues:
                prefix = enc.relay_prefix(Opcode.RMSG, tuple(queues))
            else:
                if plain_prefix is None:
                    plain_prefix = enc.relay_prefix(Opcode.RMSG, None)
                prefix = plain_prefix
            out = peer.out
            out += prefix
            out += tail
            peer.messages_out += 1
            if not peer.dirty:
                peer.dirty = True
                self.dirty.append(peer)
        return len(peers)

    def _route_message(
        self,
        queues: tuple[str, ...] | None,
        account: str,
        subject: str,
        reply: str | None,
        payload: bytes,
    ) -> None:
        """A message relayed by a route peer: local subscribers only, named queue groups only."""
        if subject[0] == "_" and subject.startswith(GR_PREFIX):
            parsed = _parse_gr(subject)
            if parsed is None:
                return
            cluster, node, subject = parsed
            if cluster != self.config.cluster or node != self.config.name:
                return  # not ours: never re-routed from a route
        index = self.graph.index(account)
        if index is None:
            return
        m = index.match(subject)
        tail: bytes | None = None
        n = 0
        for sub in m.plain:
            if sub.prefix is not None:
                if tail is None:
                    tail = self.encoder.message_tail(subject, reply, payload)
                n += self._deliver(sub, tail, None)
        if queues:
            for q, members in m.queues:
                if q not in queues:
                    continue
                local = tuple(x for x in members if x.prefix is not None)
                if not local:
                    continue  # the group left this node meanwhile: drop, never re-route
                if tail is None:
                    tail = self.encoder.message_tail(subject, reply, payload)
                n += self._deliver(self._pick(local), tail, None)  # type: ignore[arg-type]
        if reply is not None and reply[0] == "$" and reply.startswith("$PROV."):
            self._record_provisional(reply, subject, m.plain)
        acct = self._accounts.get(account)
        if acct is not None:
            acct.messages_out += n
        self.messages_out += n

    # -- routes ---------------------------------------------------------------------------------

    def _route_hello(self) -> bytes:
        urls = (self.cluster_url or "", self.gateway_url or "") if self.cluster_url else ()
        cfg = self.config
        return self.encoder.encode(
            Hello(PROTOCOL_VERSION, Role.ROUTE.value, cfg.name, cfg.cluster, None, 0, (), urls)
        )

    def _route_hello_received(self, conn: Connection, hello: Hello) -> None:
        cfg = self.config
        if hello.role != Role.ROUTE:
            self._fail(
                conn,
                ErrorCode.HANDSHAKE_REFUSED,
                f"role {hello.role!r} cannot use the cluster port (clients use the client port)",
            )
            return
        if hello.cluster != cfg.cluster:
            self._fail(
                conn,
                ErrorCode.HANDSHAKE_REFUSED,
                f"route from cluster {hello.cluster!r}; this node is in cluster {cfg.cluster!r}",
            )
            return
        if hello.name == cfg.name:
            if hello.urls:
                self.self_urls.add(hello.urls[0])
            self._close_quietly(conn, "route to self")
            return
        conn.peer = hello.name
        conn.peer_url = hello.urls[0] if hello.urls else None
        conn.peer_gateway_url = hello.urls[1] if len(hello.urls) > 1 and hello.urls[1] else None
        existing = self.routes.get(hello.name)
        if existing is not None:
            # both nodes may dial each other at once: the connection dialed by the node
            # with the lower name wins, on both sides alike
            lower = min(cfg.name, hello.name)
            new_dialer = cfg.name if conn.dialed else hello.name
            old_dialer = cfg.name if existing.dialed else hello.name
            if old_dialer == lower and new_dialer != lower:
                conn.peer = None
                self._close_quietly(conn, f"duplicate route to {hello.name}")
                return
            self._close_quietly(existing, f"route to {hello.name} replaced")
        self.routes[hello.name] = conn
        self.routes_changed = True
        conn.state = ConnState.OPEN
        # our whole local interest, then gossip of every cluster URL we know
        enc = self.encoder
        for (account, pattern, queue), n in self._local_keys.items():
            self._append(conn, enc.encode(RouteSub(account, pattern, queue, n)))
        self._gossip()
        for cluster, urls in self.gateway_urls.items():
            self._append(conn, enc.encode(Info(cluster, (), tuple(sorted(urls)))))

    def _gossip(self) -> None:
        urls = sorted(
            {c.peer_url for c in self.routes.values() if c.peer_url}
            | ({self.cluster_url} if self.cluster_url else set())
        )
        frame = self.encoder.encode(Info(self.config.cluster, tuple(urls), ()))
        for c in self.routes.values():
            if c.state is ConnState.OPEN:
                self._append(c, frame)

    def _info(self, conn: Connection, info: Info) -> None:
        if info.cluster != self.config.cluster:
            # gateway gossip (from a route peer or from an inbound gateway's acceptor)
            self._learn_gateway(
                info.cluster, info.gateway_urls, from_route=conn.kind is ConnectionKind.ROUTE
            )
            return
        if conn.kind is not ConnectionKind.ROUTE:
            return
        known = {c.peer_url for c in self.routes.values()} | self.self_urls
        if self.cluster_url:
            known.add(self.cluster_url)
        for url in info.route_urls:
            if url not in known and url not in self.dial_requests:
                self.dial_requests.append(url)

    def connected_route_urls(self) -> set[str]:
        """Cluster URLs of the peers this node has a route to."""
        return {c.peer_url for c in self.routes.values() if c.peer_url}

    def _route_sub(
        self, conn: Connection, account: str, pattern: str, queue: str | None, weight: int
    ) -> None:
        if not is_valid_pattern(pattern) or (queue is not None and not is_valid_subject(queue)):
            self._fail(conn, ErrorCode.INVALID_SUBJECT, f"invalid route interest {pattern!r}")
            return
        key = (account, pattern, queue)
        entry = conn.remote.get(key)
        if entry is None:
            entry = conn.remote[key] = RemoteInterest(conn, account, pattern, queue, 1)
            if self.graph.add(account, pattern, entry, queue) and self.inbound:
                self._cluster_interest(account, pattern, queue, added=True)
        # weights are absolute: a restarted peer re-sending its counts is not double counted
        entry.weight = max(1, weight)

    def _route_unsub(self, conn: Connection, account: str, pattern: str, queue: str | None) -> None:
        entry = conn.remote.pop((account, pattern, queue), None)
        if entry is not None and self.graph.remove(account, pattern, entry, queue) and self.inbound:
            self._cluster_interest(account, pattern, queue, added=False)

    def _retire_route(self, conn: Connection) -> None:
        for entry in conn.remote.values():
            if self.graph.remove(entry.account, entry.pattern, entry, entry.queue) and self.inbound:
                self._cluster_interest(entry.account, entry.pattern, entry.queue, added=False)
        conn.remote.clear()
        if conn.peer is not None and self.routes.get(conn.peer) is conn:
            del self.routes[conn.peer]
            self.routes_changed = True
        for _, wake in conn.pong_waiters:
            wake()
        conn.pong_waiters.clear()

    def _local_interest_changed(
        self, account: str, pattern: str, queue: str | None, n: int
    ) -> None:
        """A local key's count changed to ``n``: tell every route (plain keys on 0<->1 only)."""
        if not self.routes:
            return
        if n == 0:
            frame = self.encoder.encode(RouteUnsub(account, pattern, queue))
        elif queue is not None or n == 1:
            frame = self.encoder.encode(RouteSub(account, pattern, queue, n))
        else:
            return
        for c in self.routes.values():
            if c.state is ConnState.OPEN:
                self._append(c, frame)

    def ping(self, conn: Connection, on_pong: Any) -> None:
        """Send a PING on ``conn``; ``on_pong()`` is called once its PONG (or the close) arrives."""
        if conn.state is not ConnState.OPEN:
            on_pong()
            return
        conn.pings_sent += 1
        conn.pong_waiters.append((conn.pings_sent, on_pong))
        self._append(conn, self._ping)

    # -- game layer: inputs follow authority, interest deltas for replicants -------------------

    def _account(self, name: str) -> _Account:
        acct = self._accounts.get(name)
        if acct is None:
            acct = self._accounts[name] = _Account(name)
        return acct

    def inject(self, account: str, subject: str, payload: bytes) -> None:
        """Publish a message from the node itself (routed like a client's publish)."""
        self._route_publish(self._account(account), subject, None, payload, None)
        self._drain_internal()

    def _internal_subscribe(self, account: str, pattern: str) -> None:
        conn = self._internal.get(account)
        if conn is None:
            self._next_id += 1
            conn = Connection(self._next_id, ConnectionKind.CLIENT, Decoder(), 0.0)
            conn.state = ConnState.OPEN
            conn.account = self._account(account)
            conn.name = "$node"
            # permanently "dirty": deliveries append to its buffer but never list it in
            # self.dirty (no shell writer exists); _drain_internal reads the buffer
            conn.dirty = True
            self._internal[account] = conn
        self._subscribe(conn, len(conn.subs) + 1, pattern, None)

    def _drain_internal(self) -> None:
        """Handle what the node's own subscriptions received (may route more)."""
        if self._draining_internal:
            return
        self._draining_internal = True
        try:
            busy = True
            while busy:
                busy = False
                for account, conn in self._internal.items():
                    if not conn.out:
                        continue
                    busy = True
                    data, conn.out = conn.out, bytearray()
                    conn.decoder.feed(data)
                    while (f := conn.decoder.next_raw()) is not None:
                        subject, payload = f[2], f[4]
                        if subject.startswith("$AUTH."):
                            self.authority(account, subject, payload)
                        elif subject == "$INTEREST.sync":
                            self.interest_snapshot(account)
                        elif subject.startswith("$SPEC."):
                            self.speculation_answer(subject[6:], payload)
        finally:
            self._draining_internal = False

    def _client_input(self, conn: Connection, acct: _Account, entity: str, payload: bytes) -> None:
        """``$IN.<entity>`` from a client: ``[seq, data]``; the router sends it to the owner."""
        try:
            fields = msgpack.unpackb(payload, use_list=False)
            seq, data = fields[0], fields[1]
            relay = fields[2] if len(fields) > 2 else None
            if type(seq) is not int or seq < 0 or type(data) is not bytes:
                raise ValueError("wrong types")
            if relay is not None and not (type(relay) is str and is_valid_subject(relay)):
                raise ValueError("bad relay subject")
        except Exception:
            self._error(
                conn, ErrorCode.MALFORMED, "an input payload must be [seq, bytes, relay subject?]"
            )
            return
        router = self._router(acct.name)
        client = f"{self.config.name}/{conn.id}"
        speculative = relay is not None and any(match(p, relay) for p in self.config.speculative)
        if speculative:
            self._speculative_inputs[(client, seq)] = None
            if len(self._speculative_inputs) > _SPECULATIVE_MAX:
                del self._speculative_inputs[next(iter(self._speculative_inputs))]
        self._send_inputs(acct.name, router.input(client, entity, seq, data))
        if speculative:
            assert relay is not None
            # relayed at once to every interested client, marked provisional; the node
            # that delivers it remembers to whom, for the owner's confirm or correction
            self._route_publish(acct, relay, f"$PROV.{client}.{seq}", data, None)
            self._drain_internal()

    def _router(self, account: str) -> InputRouter:
        router = self.input_routers.get(account)
        if router is None:
            router = self.input_routers[account] = InputRouter()
        return router

    def _send_inputs(self, account: str, deliveries: list[Delivery]) -> None:
        for d in deliveries:
            speculative = (d.client, d.seq) in self._speculative_inputs
            payload = self.encoder.pack((d.entity, d.epoch, d.client, d.seq, d.data, speculative))
            self.inject(account, f"$REP.{d.replicant}.in", payload)

    def _record_provisional(
        self, reply: str, subject: str, plain: tuple[Subscription | RemoteInterest, ...]
    ) -> None:
        """Remember which local subscriptions got a provisional update."""
        recipients = [
            (sub.conn.id, sub.sid)
            for sub in plain
            if sub.prefix is not None and sub.conn.state is ConnState.OPEN
        ]
        if not recipients:
            return
        self._provisional[reply] = (subject, recipients)
        if len(self._provisional) > _SPECULATIVE_MAX:
            del self._provisional[next(iter(self._provisional))]
            self.provisional_evicted += 1

    def speculation_answer(self, kind: str, payload: bytes) -> None:
        """The owner confirmed or corrected a provisional update: tell exactly the local
        clients that received it, and the sender if it is attached here."""
        try:
            client, seq, value = msgpack.unpackb(payload, use_list=False)
            if type(client) is not str or type(seq) is not int or type(value) is not bytes:
                raise ValueError("wrong types")
        except (ValueError, TypeError) as exc:
            self.authority_errors.append(f"bad speculation answer: {exc}")
            del self.authority_errors[:-100]
            return
        tag = "CONF" if kind == "confirm" else "CORR"
        record = self._provisional.pop(f"$PROV.{client}.{seq}", None)
        enc = self.encoder
        subject = record[0] if record is not None else None
        if record is not None:
            for conn_id, sid in record[1]:
                c = self.conns.get(conn_id)
                if c is not None and c.state is ConnState.OPEN:
                    self._append(
                        c, enc.encode(Message(sid, record[0], f"${tag}.{client}.{seq}", value))
                    )
        node, _, conn_id_text = client.partition("/")
        if node == self.config.name and conn_id_text.isdigit():
            c = self.conns.get(int(conn_id_text))
            if c is not None and c.state is ConnState.OPEN:
                # sid 0 is reserved for the node's notices to a client
                self._append(
                    c, enc.encode(Message(0, subject or "", f"${tag}.{client}.{seq}", value))
                )

    def authority(self, account: str, subject: str, payload: bytes) -> None:
        """An ``$AUTH.*`` message (claim, release, ack, lost) seen by this node."""
        try:
            fields = msgpack.unpackb(payload, use_list=False, strict_map_key=True)
            kind = subject.rsplit(".", 1)[-1]
            router = self._router(account)
            if kind == "claim":
                entity, replicant, epoch = fields
                self._send_inputs(account, router.claim(entity, replicant, epoch))
            elif kind == "release":
                entity, replicant, epoch, applied = fields
                router.release(entity, replicant, epoch, dict(applied))
            elif kind == "ack":
                entity, replicant, epoch, applied = fields
                router.ack(entity, replicant, epoch, dict(applied))
            elif kind == "lost":
                (replicant,) = fields
                router.owner_lost(replicant)
        except (ValueError, TypeError) as exc:
            log_problem = f"bad authority message on {subject}: {exc}"
            self.authority_errors.append(log_problem)
            del self.authority_errors[:-100]

    def _replicant_lost(self, conn: Connection) -> None:
        if (
            self.config.replicants
            and conn.kind is ConnectionKind.REPLICANT
            and conn.account is not None
            and conn.name
        ):
            account = conn.account.name
            self.inject(account, "$AUTH.lost", self.encoder.pack((conn.name,)))
            self._router(account).owner_lost(conn.name)

    def _interest_delta(self, account: str, pattern: str, added: bool) -> None:
        """Tell replicants that this node's clients' interest in a pattern appeared/left."""
        prefix = self.config.interest_prefix
        if self.config.replicants and prefix and pattern.startswith(prefix):
            kind = "add" if added else "remove"
            self.inject(
                account, f"$INTEREST.{kind}", self.encoder.pack((self.config.name, pattern))
            )

    def interest_snapshot(self, account: str) -> None:
        """Re-announce every local interest pattern under the prefix (a replicant joined)."""
        prefix = self.config.interest_prefix
        for (acct, pattern, queue), _ in list(self._local_keys.items()):
            if acct == account and queue is None and prefix and pattern.startswith(prefix):
                self.inject(
                    account, "$INTEREST.add", self.encoder.pack((self.config.name, pattern))
                )

    # -- gateways ------------------------------------------------------------------------------

    def own_gateway_urls(self) -> tuple[str, ...]:
        """Gateway URLs of every node of this cluster that this node knows of."""
        urls = {c.peer_gateway_url for c in self.routes.values() if c.peer_gateway_url}
        if self.gateway_url:
            urls.add(self.gateway_url)
        return tuple(sorted(urls))

    def _gateway_hello(self, *, outbound: bool) -> bytes:
        cfg = self.config
        if outbound:
            urls: tuple[str, ...] = (self.gateway_url,) if self.gateway_url else ()
            features: tuple[str, ...] = ()
        else:
            urls = self.own_gateway_urls()
            features = ("interest-only",) if cfg.interest_mode == "interest-only" else ()
        return self.encoder.encode(
            Hello(
                PROTOCOL_VERSION, Role.GATEWAY.value, cfg.name, cfg.cluster, None, 0, features, urls
            )
        )

    def _gateway_hello_received(self, conn: Connection, hello: Hello) -> None:
        cfg = self.config
        if hello.role != Role.GATEWAY:
            self._fail(
                conn,
                ErrorCode.HANDSHAKE_REFUSED,
                f"role {hello.role!r} cannot use a gateway port (clients use the client port, "
                "routes the cluster port)",
            )
            return
        cluster = hello.cluster
        if not cluster or cluster == cfg.cluster:
            self._fail(
                conn,
                ErrorCode.HANDSHAKE_REFUSED,
                f"gateway connection from cluster {cluster!r}: gateways join different clusters",
            )
            return
        if conn.kind is ConnectionKind.GATEWAY_OUTBOUND:
            if cluster != conn.expected_cluster:
                self._fail(
                    conn,
                    ErrorCode.HANDSHAKE_REFUSED,
                    f"dialed a gateway of cluster {conn.expected_cluster!r} but reached "
                    f"cluster {cluster!r}",
                )
                return
            if cluster in self.outbound:
                self._close_quietly(conn, f"duplicate outbound gateway to {cluster}")
                return
            conn.remote_cluster = cluster
            conn.peer = hello.name
            conn.out_interest = OutboundInterest(interest_only="interest-only" in hello.features)
            conn.state = ConnState.OPEN
            self.outbound[cluster] = conn
            self.gateways_changed = True
            self._learn_gateway(cluster, hello.urls, replace=True)
            # measure the round trip at once so the queue-group order is known early
            conn.pings_sent += 1
            conn.ping_sent_at = self._now
            self._append(conn, self._ping)
            self._sort_outbound()
            return
        # inbound: the peer sends us data; we send interest back
        if cfg.reject_unknown and cluster not in cfg.gateways:
            self._fail(
                conn,
                ErrorCode.HANDSHAKE_REFUSED,
                f"cluster {cluster!r} is not configured here and reject_unknown is set",
            )
            return
        conn.remote_cluster = cluster
        conn.peer = hello.name
        conn.peer_gateway_url = hello.urls[0] if hello.urls else None
        conn.in_interest = InboundInterest(
            self.graph,
            threshold=cfg.interest_only_threshold,
            interest_only=cfg.interest_mode == "interest-only",
        )
        conn.state = ConnState.OPEN
        self.inbound[conn.id] = conn
        self.gateways_changed = True
        enc = self.encoder
        for frame in conn.in_interest.start():
            self._append(conn, enc.encode(frame))
        # tell the dialer about every other cluster we know, then dial back if needed
        for other, urls in self.gateway_urls.items():
            if other != cluster and urls:
                self._append(conn, enc.encode(Info(other, (), tuple(sorted(urls)))))
        self._learn_gateway(cluster, hello.urls)

    def _learn_gateway(
        self,
        cluster: str,
        urls: tuple[str, ...],
        *,
        replace: bool = False,
        from_route: bool = False,
    ) -> None:
        """Record gateway URLs of ``cluster``; dial it if we have no outbound; tell routes."""
        if cluster == self.config.cluster:
            return
        if self.config.reject_unknown and cluster not in self.config.gateways:
            return
        configured = set(self.config.gateways.get(cluster, ()))
        known = self.gateway_urls.get(cluster)
        new = set(urls) | configured if replace else set(urls) | (known or set())
        if not new:
            return
        changed = new != known
        self.gateway_urls[cluster] = new
        if cluster not in self.outbound and cluster not in self.gateway_dial_requests:
            self.gateway_dial_requests.append(cluster)
        if changed and not from_route:
            frame = self.encoder.encode(Info(cluster, (), tuple(sorted(new))))
            for c in self.routes.values():
                if c.state is ConnState.OPEN:
                    self._append(c, frame)

    def _retire_gateway(self, conn: Connection) -> None:
        cluster = conn.remote_cluster
        if cluster is not None and self.outbound.get(cluster) is conn:
            del self.outbound[cluster]
            self._sort_outbound()
            self.gateways_changed = True
        if self.inbound.pop(conn.id, None) is not None:
            self.gateways_changed = True
        for _, wake in conn.pong_waiters:
            wake()
        conn.pong_waiters.clear()

    def _sort_outbound(self) -> None:
        inf = float("inf")
        self._outbound_order = sorted(
            self.outbound.values(), key=lambda c: (c.rtt if c.rtt is not None else inf, c.id)
        )

    def _cluster_interest(
        self, account: str, pattern: str, queue: str | None, *, added: bool
    ) -> None:
        """The cluster-wide key went 0->1 (or 1->0): each inbound gateway decides what to send."""
        enc = self.encoder
        for c in self.inbound.values():
            if c.state is not ConnState.OPEN:
                continue
            ii = c.in_interest
            assert ii is not None
            frames = (
                ii.on_interest_added(account, pattern, queue)
                if added
                else ii.on_interest_removed(account, pattern, queue)
            )
            for f in frames:
                self._append(c, enc.encode(f))

    def _to_gateways(
        self,
        account: str,
        subject: str,
        reply: str | None,
        payload: bytes,
        served: list[str] | tuple[str, ...],
    ) -> int:
        """Send one copy to each remote cluster that wants it; queue groups not served yet
        go to the lowest-RTT cluster that has them, named in the frame."""
        enc = self.encoder
        tail: bytes | None = None
        done: set[str] | None = None
        n = 0
        for c in self._outbound_order:
            oi = c.out_interest
            assert oi is not None
            plain = oi.should_forward(account, subject)
            groups: list[str] | None = None
            for q in oi.queue_groups(account, subject):
                if done is None:
                    done = set(served)
                if q not in done:
                    done.add(q)
                    if groups is None:
                        groups = []
                    groups.append(q)
            if not plain and groups is None:
                continue
            if tail is None:
                if (
                    reply is not None
                    and not reply.startswith(GR_PREFIX)
                    and not reply.startswith("$PROV.")  # a marker, not a reply address
                ):
                    reply = f"{GR_PREFIX}{self.config.cluster}.{self.config.name}.{reply}"
                tail = enc.relay_tail(account, subject, reply, payload)
            out = c.out
            out += enc.relay_prefix(Opcode.GMSG, tuple(groups) if groups else None)
            out += tail
            c.messages_out += 1
            n += 1
            if subject[0] == "$":
                self.gateway_control_msgs += 1
            if not c.dirty:
                c.dirty = True
                self.dirty.append(c)
        return n

    def _gateway_message(
        self,
        conn: Connection,
        queues: tuple[str, ...] | None,
        account: str,
        subject: str,
        reply: str | None,
        payload: bytes,
    ) -> None:
        """A message from another cluster: local subscribers and route peers, never gateways."""
        if len(payload) > self._max_payload:
            self._fail(conn, ErrorCode.PAYLOAD_TOO_LARGE, "gateway message above max_payload")
            return
        conn.messages_in += 1
        self.messages_in += 1
        if (
            subject[0] == "_"
            and subject.startswith(GR_PREFIX)
            and self._reply_routed(account, subject, reply, payload)
        ):
            return
        index = self.graph.index(account)
        m = index.match(subject) if index is not None else None
        n = 0
        if m is not None and (m.plain or m.queues):
            tail: bytes | None = None
            peers: dict[Connection, list[str]] | None = None
            for sub in m.plain:
                if sub.prefix is not None:
                    if tail is None:
                        tail = self.encoder.message_tail(subject, reply, payload)
                    n += self._deliver(sub, tail, None)
                else:
                    if peers is None:
                        peers = {}
                    if sub.conn not in peers:
                        peers[sub.conn] = []
            if queues:
                for q, members in m.queues:
                    if q not in queues:
                        continue
                    chosen = self._pick(members)
                    if chosen.prefix is not None:
                        if tail is None:
                            tail = self.encoder.message_tail(subject, reply, payload)
                        n += self._deliver(chosen, tail, None)
                    else:
                        if peers is None:
                            peers = {}
                        peers.setdefault(chosen.conn, []).append(q)
            if peers:
                n += self._to_routes(peers, account, subject, reply, payload)
            if reply is not None and reply[0] == "$" and reply.startswith("$PROV."):
                self._record_provisional(reply, subject, m.plain)
        self.messages_out += n
        acct = self._accounts.get(account)
        if acct is not None:
            acct.messages_out += n
        if m is None or not m.plain:
            ii = conn.in_interest
            assert ii is not None
            enc = self.encoder
            for f in ii.on_unwanted(account, subject):
                self._append(conn, enc.encode(f))

    def _reply_routed(self, account: str, subject: str, reply: str | None, payload: bytes) -> bool:
        """Route ``_GR_.<cluster>.<node>.<reply>`` straight back to where the request came
        from, whatever the interest views say (they travel on other connections).
        Returns False if the subject is not a well-formed routed reply."""
        parsed = _parse_gr(subject)
        if parsed is None:
            return False
        cluster, node, stripped = parsed
        cfg = self.config
        if cluster != cfg.cluster:
            c = self.outbound.get(cluster)
            if c is not None:
                c.out += self.encoder.relay_prefix(Opcode.GMSG, None)
                c.out += self.encoder.relay_tail(account, subject, reply, payload)
                c.messages_out += 1
                if not c.dirty:
                    c.dirty = True
                    self.dirty.append(c)
            return True
        if node == cfg.name:
            self._route_message(None, account, stripped, reply, payload)
            return True
        route = self.routes.get(node)
        if route is not None:
            self._to_routes({route: []}, account, subject, reply, payload)
        return True

    def _validate(self, conn: Connection, subject: str) -> bool:
        if is_valid_subject(subject):
            if len(self._valid) >= _VALID_CACHE_MAX:
                self._valid.clear()
            self._valid[subject] = None
            return True
        self._fail(conn, ErrorCode.INVALID_SUBJECT, f"invalid subject {subject!r}")
        return False

    def _pub_allowed(self, conn: Connection, subject: str) -> bool:
        cache = conn.perm_cache
        ok = cache.get(subject)
        if ok is None:
            assert conn.pub_perm is not None
            ok = _permitted(conn.pub_perm, subject)
            if len(cache) >= _PERM_CACHE_MAX:
                cache.clear()
            cache[subject] = ok
        if not ok:
            self.permission_violations += 1
            self._error(conn, ErrorCode.PERMISSION_DENIED, f"publish to {subject!r} denied")
        return ok

    def _deliver(self, sub: Subscription, tail: bytes, key: str | None) -> int:
        c = sub.conn
        if c.state is not ConnState.OPEN:
            return 0
        prefix = sub.prefix
        size = len(prefix) + len(tail)
        policy = self._policy
        if key is not None and policy == "coalesce":
            k = (sub.sid, key)
            old = c.keyed.pop(k, None)
            if old is not None:
                c.keyed_bytes -= len(old)
                c.coalesced += 1
                self.coalesced_messages += 1
            if c.keyed_bytes + size > self._max_pending:
                self._slow(c, "keyed state lane")
                return 0
            c.keyed[k] = prefix + tail
            c.keyed_bytes += size
        else:
            out = c.out
            if len(out) + c.keyed_bytes + size > self._max_pending and not self._overflow(c, size):
                return 0
            out += prefix
            out += tail
            if policy == "drop-oldest" or policy == "coalesce":
                c.frame_sizes.append(size)
        c.messages_out += 1
        if not c.dirty:
            c.dirty = True
            self.dirty.append(c)
        if sub.remaining is not None:
            sub.remaining -= 1
            if sub.remaining <= 0:
                self._remove_sub(sub)
        return 1

    def _overflow(self, c: Connection, size: int) -> bool:
        """``c`` would pass max_pending_bytes; apply its policy.  True: append anyway."""
        if not c.slow:
            c.slow = True
            self.slow_consumers += 1
        policy = self._policy
        if policy == "drop-new":
            c.dropped += 1
            self.dropped_messages += 1
            return False
        if policy == "drop-oldest":
            if size > self._max_pending:
                c.dropped += 1
                self.dropped_messages += 1
                return False
            drop = 0
            sizes = c.frame_sizes
            while sizes and len(c.out) - drop + c.keyed_bytes + size > self._max_pending:
                drop += sizes.popleft()
                c.dropped += 1
                self.dropped_messages += 1
            del c.out[:drop]
            return True
        if policy == "coalesce":
            return self._resync(c)
        self._slow(c, "pending output")
        return False

    def _resync(self, c: Connection) -> bool:
        """Graded slow-client policy, second grade: drop the event backlog (keyed state
        stays, latest value per key), tell the client to resynchronise; after
        ``max_resyncs`` in a row without the client catching up, disconnect it."""
        c.resync_streak += 1
        if c.resync_streak > self.config.max_resyncs:
            self._slow(c, f"still behind after {self.config.max_resyncs} resyncs")
            return False
        dropped = len(c.frame_sizes)
        c.dropped += dropped
        self.dropped_messages += dropped
        c.resyncs += 1
        self.resyncs += 1
        c.out = bytearray()
        c.frame_sizes.clear()
        self._error(
            c,
            ErrorCode.RESYNC,
            f"fell behind: {dropped} events dropped; keyed state follows (resync {c.resyncs})",
        )
        return True

    def _slow(self, c: Connection, what: str) -> None:
        if not c.slow:
            c.slow = True
            self.slow_consumers += 1
        c.out = bytearray()  # the backlog will never be read; free it now
        c.keyed.clear()
        c.keyed_bytes = 0
        c.frame_sizes.clear()
        self._fail(
            c,
            ErrorCode.SLOW_CONSUMER,
            f"slow consumer: {what} passed max_pending_bytes={self._max_pending}",
            count=False,
        )

    # -- subscriptions ------------------------------------------------------------------------

    def _subscribe(self, conn: Connection, sid: int, pattern: str, queue: str | None) -> None:
        if not is_valid_pattern(pattern):
            self._fail(conn, ErrorCode.INVALID_SUBJECT, f"invalid subscription pattern {pattern!r}")
            return
        if queue is not None and not is_valid_subject(queue):
            self._fail(conn, ErrorCode.INVALID_SUBJECT, f"invalid queue name {queue!r}")
            return
        if sid in conn.subs:
            self._fail(conn, ErrorCode.MALFORMED, f"sid {sid} is already in use")
            return
        if len(conn.subs) >= self.config.max_subscriptions:
            self._fail(
                conn,
                ErrorCode.LIMIT_EXCEEDED,
                f"max_subscriptions={self.config.max_subscriptions} reached",
            )
            return
        if conn.sub_perm is not None and not _sub_permitted(conn.sub_perm, pattern):
            self.permission_violations += 1
            self._error(conn, ErrorCode.PERMISSION_DENIED, f"subscribe to {pattern!r} denied")
            return
        assert conn.account is not None
        sub = Subscription(conn, sid, pattern, queue, self.encoder.message_prefix(sid))
        conn.subs[sid] = sub
        account = conn.account.name
        if self.graph.add(account, pattern, sub, queue) and self.inbound:
            self._cluster_interest(account, pattern, queue, added=True)
        key = (account, pattern, queue)
        n = self._local_keys[key] = self._local_keys.get(key, 0) + 1
        self._local_interest_changed(account, pattern, queue, n)
        if n == 1 and queue is None and self.config.interest_prefix:
            self._interest_delta(account, pattern, added=True)

    def _unsubscribe(self, conn: Connection, sid: int, max_msgs: int | None) -> None:
        sub = conn.subs.get(sid)
        if sub is None:
            return  # already gone (auto-unsubscribe raced with this)
        if max_msgs:
            sub.remaining = max_msgs
        else:
            self._remove_sub(sub)

    def _remove_sub(self, sub: Subscription) -> None:
        conn = sub.conn
        if conn.subs.pop(sub.sid, None) is None:
            return
        assert conn.account is not None
        account = conn.account.name
        if self.graph.remove(account, sub.pattern, sub, sub.queue) and self.inbound:
            self._cluster_interest(account, sub.pattern, sub.queue, added=False)
        key = (account, sub.pattern, sub.queue)
        n = self._local_keys[key] - 1
        if n:
            self._local_keys[key] = n
        else:
            del self._local_keys[key]
        self._local_interest_changed(account, sub.pattern, sub.queue, n)
        if n == 0 and sub.queue is None and self.config.interest_prefix:
            self._interest_delta(account, sub.pattern, added=False)

    # -- output helpers -----------------------------------------------------------------------

    def _append(self, conn: Connection, data: bytes) -> None:
        conn.out += data
        if not conn.dirty:
            conn.dirty = True
            self.dirty.append(conn)

    def _error(self, conn: Connection, code: ErrorCode, reason: str) -> None:
        """Send an error frame; the connection stays open."""
        self._append(conn, self.encoder.encode(Error(int(code), reason)))

    def _fail(self, conn: Connection, code: ErrorCode, reason: str, *, count: bool = True) -> None:
        """Send an error frame and close the connection once it is flushed."""
        if conn.state >= ConnState.CLOSING:
            return
        if count and code is not ErrorCode.SLOW_CONSUMER:
            self.protocol_errors += 1
        self._error(conn, code, reason)
        conn.close_reason = reason
        conn.state = ConnState.CLOSING
        self._retire(conn)
        self.closing.append(conn)

    def _close_quietly(self, conn: Connection, reason: str) -> None:
        if conn.state >= ConnState.CLOSING:
            return
        conn.close_reason = reason
        conn.state = ConnState.CLOSING
        self._retire(conn)
        self.closing.append(conn)
        if not conn.dirty:
            conn.dirty = True
            self.dirty.append(conn)

    # -- introspection ------------------------------------------------------------------------

    def statistics(self) -> Statistics:
        """A snapshot of the node's counters."""
        return Statistics(
            clients=self.clients,
            routes=len(self.routes),
            outbound_gateways=len(self.outbound),
            inbound_gateways=len(self.inbound),
            subscriptions=sum(self._local_keys.values()) - self._internal_subs(),
            messages_in=self.messages_in,
            messages_out=self.messages_out,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            slow_consumers=self.slow_consumers,
            dropped_messages=self.dropped_messages,
            coalesced_messages=self.coalesced_messages,
            resyncs=self.resyncs,
            protocol_errors=self.protocol_errors,
            auth_failures=self.auth_failures,
            permission_violations=self.permission_violations,
        )

    def account_statistics(self, account: str) -> AccountStatistics:
        """Counters of one account only."""
        acct = self._accounts.get(account)
        return AccountStatistics(
            account=account,
            clients=acct.clients if acct else 0,
            subscriptions=sum(n for (a, _, _), n in self._local_keys.items() if a == account),
            messages_in=acct.messages_in if acct else 0,
            messages_out=acct.messages_out if acct else 0,
        )
