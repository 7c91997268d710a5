"""``NodeCore``: connection life, the per-kind receive loops, timers and the layer host.

No I/O, no clock, no tasks: the shell feeds bytes and ticks in (time is an
argument), takes output with :meth:`NodeCore.take_output` and acts on
the :class:`Effects` that :meth:`NodeCore.drain` returns after each call.
"""

from __future__ import annotations

__all__ = ["NodeCore"]

from collections.abc import Callable
from typing import Any

import attrs
import msgpack

from .._errors import ErrorCode, RemoteProtocolError
from .._reserved import control_account
from .._stats import AccountStatistics, Statistics
from ..config import GatewayConfig
from ..protocol import (
    PROTOCOL_VERSION,
    ConnectionKind,
    Decoder,
    Hello,
    Message,
    Opcode,
    Role,
    UnpackerPool,
    to_frame,
)
from ._backbone import Backbone
from ._clients import ClientPort
from ._conn import (
    BackboneConnection,
    ClientConnection,
    Connection,
    ConnState,
    InboundGateway,
    InternalConnection,
    InternalHandler,
    OutboundGateway,
    PeerConnection,
    RouteConnection,
)
from ._effects import Effects
from ._fanout import FanOut
from ._gateways import GatewayMesh
from ._hooks import Layer
from ._natsport import NatsPort
from ._routes import RouteMesh

_PUB = int(Opcode.PUB)
_RMSG = int(Opcode.RMSG)
_GMSG = int(Opcode.GMSG)
_PING = int(Opcode.PING)
_PONG = int(Opcode.PONG)
_HELLO = int(Opcode.HELLO)
_ERROR = int(Opcode.ERROR)
_OPEN = ConnState.OPEN
_CLOSING = ConnState.CLOSING

_Raw = tuple[Any, ...]


class NodeCore(FanOut):
    """All protocol and routing state of one node; synchronous and I/O-free.

    The parts: :attr:`clients` (:class:`ClientPort`), :attr:`routes`
    (:class:`RouteMesh`), :attr:`gateways` (:class:`GatewayMesh`), the fan-out
    (inherited, ``_fanout.py``) and an optional layer (:meth:`attach_layer`).
    """

    def __init__(self, config: GatewayConfig) -> None:
        super().__init__(config)
        self._unpackers = UnpackerPool()
        self._next_ping: float | None = None
        self._running_internal = False
        self._internal_unpacker = msgpack.Unpacker(raw=False)
        self.clients = ClientPort(self)
        self.nats = NatsPort(self)
        self.backbone = Backbone(self)
        self.routes = RouteMesh(self)
        self.gateways = GatewayMesh(self)
        self._route_peers = self.routes.peers
        self._outbound = self.gateways.outbound
        self._gw_order = self.gateways.order
        #: the HELLO every client gets first; with users configured it names neither the
        #: node nor its cluster (nothing for an unauthenticated caller to use)
        self.node_hello = self.hello_frame(
            Role.NODE, max_payload=config.max_payload, reveal=not config.users
        )
        self._handshakes: dict[ConnectionKind, Callable[[Any, Hello], None]] = {
            ConnectionKind.CLIENT: self.clients.hello,
            ConnectionKind.ROUTE: self.routes.hello,
            ConnectionKind.GATEWAY_INBOUND: self.gateways.hello_inbound,
            ConnectionKind.GATEWAY_OUTBOUND: self.gateways.hello_outbound,
        }
        self._controls: dict[ConnectionKind, Callable[[Any, int, _Raw], None]] = {
            ConnectionKind.CLIENT: self.clients.control,
            ConnectionKind.ROUTE: self.routes.control,
            ConnectionKind.GATEWAY_INBOUND: self.gateways.control_inbound,
            ConnectionKind.GATEWAY_OUTBOUND: self.gateways.control_outbound,
        }

    def bound(
        self,
        *,
        cluster_url: str | None = None,
        gateway_url: str | None = None,
        client_url: str | None = None,
        nats_url: str | None = None,
    ) -> None:
        """The shell bound the client, route, gateway (and NATS) listeners at these URLs."""
        if client_url is not None:
            self.routes.client_url = client_url
        if nats_url is not None:
            self.routes.nats_url = nats_url
        if cluster_url is not None:
            self.routes.cluster_url = cluster_url
        if gateway_url is not None:
            self.gateways.gateway_url = gateway_url

    #: configuration fields that :meth:`reconfigure` applies to a running node
    RELOADABLE = frozenset(
        {
            "users",
            "max_payload",
            "max_pending_bytes",
            "max_connections",
            "max_subscriptions",
            "max_resyncs",
            "auth_timeout",
            "ping_interval",
            "max_pings_out",
            "write_deadline",
            "flush_window",
            "connect_retries",
            "reconnect_wait",
        }
    )

    def reconfigure(self, new: GatewayConfig) -> list[str]:
        """Apply what can change safely while running (:attr:`RELOADABLE`); returns the
        names of the other fields that differ (they need a restart and are not applied).
        New limits apply to what comes next (a decoder's frame limit is its own)."""
        old = self.config
        changed = [
            f.name
            for f in attrs.fields(GatewayConfig)
            if getattr(old, f.name) != getattr(new, f.name)
        ]
        restart = [name for name in changed if name not in self.RELOADABLE]
        applied = attrs.evolve(
            old, **{name: getattr(new, name) for name in changed if name in self.RELOADABLE}
        )
        self.config = applied
        self._max_payload = applied.max_payload
        self._max_pending = applied.max_pending_bytes
        if "users" in changed:
            self.known_accounts = self._known_accounts()
            self.clients.reload_users(applied.users)
        self._run_internal()
        return restart

    def attach_layer(self, layer: Layer) -> None:
        """Plug ``layer`` into the core (one layer per core; see ``_hooks.py``)."""
        if self._layer is not None:
            raise RuntimeError("a layer is already attached")
        self._layer = layer
        self.known_accounts = self._known_accounts()

    def _known_accounts(self) -> frozenset[str]:
        """The accounts peers may name: those served, and with a layer their control
        namespaces."""
        served = self.config.accounts
        if self._layer is None:
            return served
        return served | {control_account(a) for a in served}

    # -- connection lifecycle -----------------------------------------------------------------

    def open_connection(
        self,
        now: float,
        kind: ConnectionKind = ConnectionKind.CLIENT,
        *,
        dialed: bool = False,
        expected_cluster: str | None = None,
        nats: bool = False,
        backbone: bool = False,
    ) -> Connection:
        """A transport accepted (or, for ``dialed``, opened) a connection of ``kind``;
        the connection's class is fixed now, and our HELLO goes first.  ``nats``: a
        client of the NATS port (it speaks the NATS text protocol; INFO goes first);
        ``backbone``: the leafnode connection this node dialed to a nats-server hub."""
        self._next_id += 1
        cid = self._next_id
        decoder = Decoder(max_frame_bytes=self._max_payload + 8 * 1024, pool=self._unpackers)
        conn: Connection
        if backbone:
            leaf = BackboneConnection(cid, decoder, now)
            self.conns[cid] = conn = leaf
            self.backbone.opened(leaf)
        elif kind is ConnectionKind.CLIENT or kind is ConnectionKind.REPLICANT:
            track = self._policy == "drop-oldest" or self._policy == "coalesce"
            client = ClientConnection(cid, decoder, now, track_frames=track)
            self.conns[cid] = conn = client
            if nats:
                self.nats.opened(client)
            self.clients.opened(client)
        elif kind is ConnectionKind.ROUTE:
            route = RouteConnection(cid, decoder, now, dialed=dialed)
            self.conns[cid] = conn = route
            self.routes.opened(route)
        elif kind is ConnectionKind.GATEWAY_INBOUND:
            inbound = InboundGateway(cid, decoder, now)
            self.conns[cid] = conn = inbound
            self.gateways.opened(inbound)
        elif kind is ConnectionKind.GATEWAY_OUTBOUND:
            if expected_cluster is None:
                raise ValueError("an outbound gateway connection needs expected_cluster")
            outbound = OutboundGateway(cid, decoder, now, expected_cluster=expected_cluster)
            self.conns[cid] = conn = outbound
            self.gateways.opened(outbound)
        else:
            raise ValueError(f"a node does not accept {kind.value} connections")
        return conn

    def connection_lost(self, conn: Connection) -> None:
        """The transport is gone: forget the connection and its subscriptions."""
        if conn.state is ConnState.CLOSED:
            return
        self._retire(conn, conn.state is _OPEN)
        self.conns.pop(conn.id, None)
        conn.state = ConnState.CLOSED
        conn.out = bytearray()
        if type(conn) is ClientConnection:
            conn.keyed.clear()
            conn.keyed_bytes = 0
        self._run_internal()

    def has_output(self, conn: Connection) -> bool:
        """Something is queued for ``conn``."""
        return bool(conn.out) or (type(conn) is ClientConnection and bool(conn.keyed))

    def take_output(self, conn: Connection) -> bytearray:
        """Everything queued for ``conn``, in order; the buffer starts empty again."""
        out = conn.out
        if type(conn) is ClientConnection:
            if conn.keyed:
                out += b"".join(conn.keyed.values())
                conn.keyed.clear()
                conn.keyed_bytes = 0
            if conn.frame_sizes is not None:
                conn.frame_sizes.clear()
            conn.slow = False
            conn.resync_streak = 0
        conn.out = bytearray()
        conn.dirty = False
        n = len(out)
        conn.bytes_out += n
        self.bytes_out += n
        return out

    def pending_bytes(self, conn: Connection) -> int:
        """Bytes queued for ``conn`` and not yet taken by the shell."""
        if type(conn) is ClientConnection:
            return len(conn.out) + conn.keyed_bytes
        return len(conn.out)

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
            for conn in list(self.conns.values()):
                if conn.state is not _OPEN:
                    continue
                if conn.pings_out >= cfg.max_pings_out:
                    self._fail(conn, ErrorCode.STALE_CONNECTION, "stale connection: no PONG")
                else:
                    conn.pings_out += 1
                    conn.pings_sent += 1
                    if conn.ping_sent_at is None:
                        conn.ping_sent_at = now
                    self._append(conn, self._ping)
        self._run_internal()

    def stop_accepting(self) -> None:
        """Lame duck: refuse new connections (clients, routes and gateways)."""
        self.draining = True

    def clients_to_move(self) -> list[int]:
        """Ids of the open client (not replicant) connections, for a lame-duck drain."""
        return [
            c.id
            for c in self.conns.values()
            if type(c) is ClientConnection and c.state is _OPEN and c.role is Role.CLIENT
        ]

    def move_client(self, conn_id: int) -> None:
        """Ask one client to go: SHUTTING_DOWN, so that it reconnects to another node."""
        conn = self.conns.get(conn_id)
        if conn is not None and conn.state is _OPEN:
            self._fail(
                conn,
                ErrorCode.SHUTTING_DOWN,
                "node is going away: reconnect to another node",
                count=False,
            )
            self._run_internal()

    def shutdown(self) -> None:
        """Drain: refuse new connections; tell every connection the node is going away."""
        self.draining = True
        for conn in list(self.conns.values()):
            if conn.state < _CLOSING:
                self._fail(conn, ErrorCode.SHUTTING_DOWN, "node is shutting down", count=False)
        self._run_internal()

    def ping(self, conn: Connection, on_pong: Callable[[], None]) -> None:
        """Send a PING on a route or gateway connection; ``on_pong()`` is called once its
        PONG (or the close) arrives."""
        if not isinstance(conn, PeerConnection):
            raise TypeError("ping() is for route and gateway connections")
        if conn.state is not _OPEN:
            on_pong()
            return
        conn.pings_sent += 1
        conn.pong_waiters.append((conn.pings_sent, on_pong))
        self._append(conn, self._ping)

    def _wake_pong_waiters(self, conn: PeerConnection) -> None:
        for _, wake in conn.pong_waiters:
            wake()
        conn.pong_waiters.clear()

    # -- input: one loop per kind -------------------------------------------------------------

    def receive_data(self, conn: Connection, data: bytes | bytearray, now: float) -> None:
        """Process bytes received on ``conn`` at time ``now``: every complete frame is handled."""
        if conn.state >= _CLOSING:
            return
        self._now = now
        conn.last_activity = now
        n = len(data)
        conn.bytes_in += n
        self.bytes_in += n
        dec = conn.decoder
        try:
            kind = conn.kind
            if kind is ConnectionKind.CLIENT and conn.nats is not None:  # type: ignore[attr-defined]
                self.nats.receive(conn, data)  # type: ignore[arg-type]
                return
            if kind is ConnectionKind.ROUTE and type(conn) is BackboneConnection:
                self.backbone.receive(conn, data)
                return
            dec.feed(data)
            if kind is ConnectionKind.CLIENT:
                self._client_frames(conn, dec.next_raw)  # type: ignore[arg-type]
            elif kind is ConnectionKind.ROUTE:
                self._route_frames(conn, dec.next_raw)  # type: ignore[arg-type]
            elif kind is ConnectionKind.GATEWAY_INBOUND:
                self._inbound_frames(conn, dec.next_raw)  # type: ignore[arg-type]
            else:
                self._other_frames(conn, dec.next_raw)
        except RemoteProtocolError as exc:
            self._fail(conn, exc.code, exc.reason)
        finally:
            if self._internal_queue:
                self._run_internal()

    # Raw frames are the decoder's validated tuples (``protocol/_frames.py``):
    # PUB (op, subject, reply, payload, key); RMSG/GMSG (op, queues, account, subject,
    # reply, payload).  Only the data frame of each kind takes the fast path; everything
    # else goes through ``_control``, which applies the legality table first.

    def _client_frames(self, conn: ClientConnection, nxt: Callable[[], _Raw | None]) -> None:
        publish = self._publish
        while (f := nxt()) is not None:
            if f[0] == _PUB and conn.state is _OPEN:
                publish(conn, f[1], f[2], f[3], f[4])
            else:
                self._control(conn, f[0], f)
            if conn.state >= _CLOSING:
                return

    def _route_frames(self, conn: RouteConnection, nxt: Callable[[], _Raw | None]) -> None:
        message = self._route_message
        while (f := nxt()) is not None:
            if f[0] == _RMSG and conn.state is _OPEN:
                message(conn, f[1], f[2], f[3], f[4], f[5])
            else:
                self._control(conn, f[0], f)
            if conn.state >= _CLOSING:
                return

    def _inbound_frames(self, conn: InboundGateway, nxt: Callable[[], _Raw | None]) -> None:
        message = self._gateway_message
        while (f := nxt()) is not None:
            if f[0] == _GMSG and conn.state is _OPEN:
                message(conn, f[1], f[2], f[3], f[4], f[5])
            else:
                self._control(conn, f[0], f)
            if conn.state >= _CLOSING:
                return

    def _other_frames(self, conn: Connection, nxt: Callable[[], _Raw | None]) -> None:
        while (f := nxt()) is not None:
            self._control(conn, f[0], f)
            if conn.state >= _CLOSING:
                return

    def _control(self, conn: Connection, op: int, f: _Raw) -> None:
        """Every frame but the kind's data frame: the legality table, the handshake, the
        frames every kind has, then the kind's own control frames."""
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
            hello = to_frame(f)
            assert isinstance(hello, Hello)
            if hello.version != PROTOCOL_VERSION:
                self._fail(
                    conn,
                    ErrorCode.HANDSHAKE_REFUSED,
                    f"protocol version {hello.version} is not supported (need {PROTOCOL_VERSION})",
                )
                return
            self._handshakes[conn.kind](conn, hello)
        elif op == _PING:
            self._append(conn, self._pong)
        elif op == _PONG:
            self._pong_received(conn)
        elif op == _ERROR:
            self._close_quietly(conn, f"peer sent error {f[1]}: {f[2]}")
        elif op == _HELLO:
            self._fail(conn, ErrorCode.MALFORMED, "duplicate HELLO")
        else:
            self._controls[conn.kind](conn, op, f)

    def _pong_received(self, conn: Connection) -> None:
        conn.pings_out = 0
        if conn.ping_sent_at is not None:
            conn.rtt = self._now - conn.ping_sent_at
            conn.ping_sent_at = None
            if type(conn) is OutboundGateway:
                self.gateways.sort()
        if isinstance(conn, PeerConnection):
            conn.pongs_received += 1
            waiters = conn.pong_waiters
            while waiters and waiters[0][0] <= conn.pongs_received:
                waiters.popleft()[1]()

    # -- the layer host (see _hooks.Host) -----------------------------------------------------

    def inject(self, account: str, subject: str, payload: bytes, reply: str | None = None) -> None:
        """Publish a message from the node itself (routed like a client's publish)."""
        self._route_publish(self.account(account), subject, reply, payload, None)
        self._run_internal()

    def subscribe_internal(self, account: str, pattern: str, handler: InternalHandler) -> None:
        """Subscribe the node itself; ``handler(subject, reply, payload)`` runs for each
        message the subscription matches, after the batch that delivered it."""
        conn = self._internal.get(account)
        if conn is None:
            self._next_id += 1
            conn = self._internal[account] = InternalConnection(
                self._next_id, self.account(account)
            )
        sid = len(conn.handlers) + 1
        conn.handlers[sid] = handler
        self.clients.subscribe(conn, sid, pattern, None)

    def notify(self, conn_id: int, sid: int, subject: str, reply: str | None, data: bytes) -> bool:
        """Send one MSG to a local connection if it is still open; False if not."""
        c = self.conns.get(conn_id)
        if c is None or c.state is not _OPEN:
            return False
        if type(c) is ClientConnection and c.nats is not None:
            self.nats.notice(c, sid, subject, reply, data)
            return True
        self._append(c, self.encoder.encode(Message(sid, subject, reply, data)))
        return True

    def local_patterns(self, account: str) -> list[str]:
        """Plain patterns some local connection of ``account`` subscribes to."""
        return self.clients.patterns(account)

    def _run_internal(self) -> None:
        """Run the handlers of the node's own subscriptions (they may route more)."""
        if self._running_internal or not self._internal_queue:
            return
        self._running_internal = True
        try:
            queue = self._internal_queue
            unpacker = self._internal_unpacker
            while queue:
                handler, tail = queue.popleft()
                unpacker.feed(tail)  # the shared MSG tail: subject, reply, payload
                handler(unpacker.unpack(), unpacker.unpack(), unpacker.unpack())
        finally:
            self._running_internal = False

    def drain(self) -> Effects:
        """Finish the current call (the node's own subscriptions run, and may route more)
        and return what the shell must do now, as one immutable value.  Call it after
        every other call into the core."""
        self._run_internal()
        return self.pending.take()

    # -- introspection ------------------------------------------------------------------------

    def internal_subscriptions(self, account: str | None = None) -> int:
        """The node's own subscriptions (not counted as clients' in statistics)."""
        return sum(
            len(c.subs) for a, c in self._internal.items() if account is None or a == account
        )

    def statistics(self) -> Statistics:
        """A snapshot of the node's counters."""
        return Statistics(
            clients=self.clients.count,
            routes=len(self.routes.peers),
            outbound_gateways=len(self.gateways.outbound),
            inbound_gateways=len(self.gateways.inbound),
            subscriptions=sum(self.clients.local_keys.values()) - self.internal_subscriptions(),
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
            payload_bytes_in=self.payload_in,
            payload_bytes_out=self.payload_out,
        )

    def account_statistics(self, account: str) -> AccountStatistics:
        """Counters of one account only."""
        acct = self.accounts.get(account)
        return AccountStatistics(
            account=account,
            clients=acct.clients if acct else 0,
            subscriptions=sum(n for (a, _, _), n in self.clients.local_keys.items() if a == account)
            - self.internal_subscriptions(account),
            messages_in=acct.messages_in if acct else 0,
            messages_out=acct.messages_out if acct else 0,
        )

    # -- queries and commands for the shell --------------------------------------------------

    def set_local_replicant_token(self, token: str) -> None:
        """The token the host application's in-process replicants present (no users)."""
        self.clients.local_replicant_token = token

    def open_connection_count(self) -> int:
        """Connections the core still knows (opened and not yet lost)."""
        return len(self.conns)

    def account_count(self) -> int:
        """Accounts this node has seen."""
        return len(self.accounts)

    def route_peer_count(self) -> int:
        """Peers of this node's cluster it has a route to."""
        return len(self.routes.peers)

    def route_connections(self) -> list[Connection]:
        """The route connections, one per peer."""
        return list(self.routes.peers.values())

    def own_route_urls(self) -> tuple[str, ...]:
        """Cluster URLs peers reported for this node itself, sorted."""
        return tuple(sorted(self.routes.self_urls))

    def is_own_route_url(self, url: str) -> bool:
        """``url`` leads to this node itself (never dialed)."""
        return url in self.routes.self_urls or url == self.routes.cluster_url

    def has_route_to(self, url: str) -> bool:
        """A route to the node at cluster URL ``url`` is up (either direction)."""
        return url in self.routes.connected_urls()

    def gateway_counts(self) -> tuple[int, int]:
        """How many outbound and inbound gateway connections are up."""
        return len(self.gateways.outbound), len(self.gateways.inbound)

    def gateway_connections(self) -> list[Connection]:
        """The gateway connections, outbound then inbound."""
        gateways = self.gateways
        return [*gateways.outbound.values(), *gateways.inbound.values()]

    def has_outbound_gateway(self, cluster: str) -> bool:
        """An outbound gateway connection to ``cluster`` is up."""
        return cluster in self.gateways.outbound

    def gateway_urls(self, cluster: str) -> tuple[str, ...]:
        """The gateway URLs known for the nodes of ``cluster``."""
        return tuple(self.gateways.urls.get(cluster, ()))

    def gateway_clusters(self) -> tuple[str, ...]:
        """The remote clusters this node knows gateway URLs for."""
        return tuple(self.gateways.urls)

    def backbone_server(self) -> str | None:
        """The server name of the nats-server the backbone is attached to, or None."""
        conn = self.backbone.conn
        return conn.peer if conn is not None else None

    def backbone_urls(self) -> tuple[str, ...]:
        """Backbone URLs the hub told this node about."""
        return self.backbone.learned_urls

    def backbone_error(self) -> str | None:
        """The last error the backbone hub sent, or None."""
        return self.backbone.last_error
