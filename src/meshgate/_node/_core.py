"""``NodeCore``: the parts composed; connection life, dispatch by kind, timers, the
layer host and the effects.

No I/O, no clock, no tasks: the shell feeds bytes and ticks in (time is an
argument), takes output with :meth:`NodeCore.take_output` and acts on the
:class:`Effects` that :meth:`NodeCore.drain` returns after each call.

The parts never see this object: each is built from the settings, the tables it
owns or reads, the :class:`~meshgate._node._outbox.Outbox` and the
:class:`~meshgate._node._bus.Bus`.  This class wires them together once, owns the
connection table and the timers, and dispatches input by the connection's class.
"""

from __future__ import annotations

__all__ = ["NodeCore"]

from collections.abc import Callable
from typing import Any

import attrs

from .._errors import ErrorCode, RemoteProtocolError
from .._reserved import control_account
from .._stats import AccountStatistics, Statistics
from ..config import GatewayConfig
from ..interest import InterestGraph
from ..protocol import (
    ConnectionKind,
    Decoder,
    DeltaCodec,
    Encoder,
    Role,
    UnpackerPool,
)
from . import _views
from ._backbone import Backbone
from ._bus import Bus, Directory
from ._clients import ClientPort
from ._conn import (
    Account,
    BackboneConnection,
    ClientConnection,
    Connection,
    ConnState,
    InboundGateway,
    InternalHandler,
    KeyedDatagrams,
    LocalSubscription,
    NatsClientConnection,
    OutboundGateway,
    PeerConnection,
    RemoteInterest,
    RouteConnection,
)
from ._delivery import Delivery, Relevance
from ._effects import Effects, PendingEffects
from ._fanout import FanOut
from ._gateways import GatewayMesh
from ._hooks import Layer
from ._input import FrameInput
from ._internal import NodeSubscriptions
from ._natsport import NatsPort
from ._outbox import Outbox, Settings
from ._routes import RouteMesh

_OPEN = ConnState.OPEN
_CLOSING = ConnState.CLOSING


#: configuration fields that ``NodeCore.reconfigure`` applies to a running node
RELOADABLE = frozenset(
    {
        "users",
        "client_bandwidth",
        "send_interval",
        "max_payload",
        "max_pending_bytes",
        "max_connections",
        "max_subscriptions",
        "max_resyncs",
        "auth_timeout",
        "ping_interval",
        "max_pings_out",
        "write_deadline",
        "peer_write_deadline",
        "peer_max_pending_bytes",
        "flush_window",
        "connect_retries",
        "reconnect_wait",
    }
)


class NodeCore:
    """All protocol and routing state of one node; synchronous and I/O-free.

    The parts: :attr:`clients` (:class:`ClientPort`), :attr:`nats` (:class:`NatsPort`),
    :attr:`routes` (:class:`RouteMesh`), :attr:`gateways` (:class:`GatewayMesh`),
    :attr:`backbone` (:class:`Backbone`), :attr:`fanout` (:class:`FanOut`) with its
    :attr:`delivery` policy, and an optional layer (:meth:`attach_layer`).
    """

    def __init__(self, config: GatewayConfig) -> None:
        self.settings = settings = Settings(config)
        self.encoder = Encoder()
        self.pending = PendingEffects()
        self.outbox = outbox = Outbox(settings, self.encoder, self.pending)
        self.bus = bus = Bus()
        #: every subscription and route interest, per account
        self.graph: InterestGraph[LocalSubscription | RemoteInterest] = InterestGraph()
        #: open connections by id
        self.conns: dict[int, Connection] = {}
        #: per-account counters
        self.accounts: dict[str, Account] = {}
        self.directory = Directory({})
        self.clients = ClientPort(settings, outbox, self.graph, bus, self.directory, self.accounts)
        self.delivery = Delivery(config, outbox, self.clients.remove_sub)
        self.gateways = GatewayMesh(settings, outbox, self.graph, bus, self.directory)
        self.fanout = FanOut(
            settings,
            outbox,
            self.graph,
            self.delivery,
            self.accounts,
            self.directory.peers,
            self.gateways.outbound,
            self.gateways.order,
        )
        self.nats = NatsPort(settings, outbox, bus, self.directory, self.clients, self.fanout)
        # routes before the backbone: both hear of local interest, in this order
        self.routes = RouteMesh(
            settings,
            outbox,
            self.graph,
            bus,
            self.directory,
            self.clients.local_keys,
            self.gateways.urls,
        )
        self.backbone = Backbone(
            settings, outbox, self.graph, bus, self.clients.local_keys, self.fanout.route_message
        )
        outbox.retirers[ClientConnection] = self.clients.retire  # type: ignore[assignment]
        self.clients.on_open = self.delivery.admit
        self.clients.on_ack = self.delivery.ack
        bus.on_client_urls(self.clients.tell_urls)
        #: the node's own subscriptions (handlers run in ``drain``)
        self.internal = NodeSubscriptions(self.delivery.internal, self.clients.subscribe)
        self._layer: Layer | None = None
        self._unpackers = UnpackerPool()
        self._next_id = 0
        self._next_ping: float | None = None
        #: wire bytes received from and written to every connection
        self.bytes_in = 0
        self.bytes_out = 0
        # dispatch by the connection's class: input, the handshake, control frames
        frames = FrameInput(settings, outbox, self.fanout, self.gateways.sort)
        self._receivers: dict[type[Connection], Callable[[Any, bytes | bytearray], None]] = {
            ClientConnection: frames.client,
            NatsClientConnection: self.nats.receive,
            RouteConnection: frames.route,
            BackboneConnection: self.backbone.receive,
            InboundGateway: frames.inbound,
            OutboundGateway: frames.other,
        }
        frames.handshakes.update(
            {
                ClientConnection: self.clients.handshake,
                RouteConnection: self.routes.hello,
                InboundGateway: self.gateways.hello_inbound,
                OutboundGateway: self.gateways.hello_outbound,
            }
        )
        frames.controls.update(
            {
                ClientConnection: self.clients.control,
                RouteConnection: self.routes.control,
                InboundGateway: self.gateways.control_inbound,
                OutboundGateway: self.gateways.control_outbound,
            }
        )

    @property
    def config(self) -> GatewayConfig:
        """The node's configuration (as last applied by :meth:`reconfigure`)."""
        return self.settings.config

    @property
    def now(self) -> float:
        """The core's clock: the time given with the last call (receive, tick, open)."""
        return self.settings.now

    @property
    def draining(self) -> bool:
        """New connections are refused (``stop_accepting`` or ``shutdown`` was called)."""
        return self.settings.draining

    @property
    def known_accounts(self) -> frozenset[str]:
        """The accounts peers may name."""
        return self.settings.known_accounts

    def bound(
        self,
        *,
        cluster_url: str | None = None,
        gateway_url: str | None = None,
        client_url: str | None = None,
        nats_url: str | None = None,
        monitor_url: str | None = None,
    ) -> None:
        """The shell bound the client, route, gateway (and NATS) listeners at these URLs
        (and the monitoring endpoint, which peers hear of in the handshake)."""
        d = self.directory
        if monitor_url is not None:
            d.monitor_url = monitor_url
        if client_url is not None:
            d.client_url = client_url
        if nats_url is not None:
            d.nats_url = nats_url
        if cluster_url is not None:
            d.cluster_url = cluster_url
        if gateway_url is not None:
            d.gateway_url = gateway_url

    #: configuration fields that :meth:`reconfigure` applies to a running node
    RELOADABLE = RELOADABLE

    def reconfigure(self, new: GatewayConfig) -> list[str]:
        """Apply what can change safely while running (:attr:`RELOADABLE`); returns the
        names of the other fields that differ (they need a restart and are not applied).
        New limits apply to what comes next (a decoder's frame limit is its own)."""
        old = self.settings.config
        changed = [
            f.name
            for f in attrs.fields(GatewayConfig)
            if getattr(old, f.name) != getattr(new, f.name)
        ]
        restart = [name for name in changed if name not in self.RELOADABLE]
        applied = attrs.evolve(
            old, **{name: getattr(new, name) for name in changed if name in self.RELOADABLE}
        )
        self.settings.config = applied
        self.fanout.reconfigure(applied)
        self.delivery.reconfigure(applied)
        if "users" in changed:
            self.settings.known_accounts = self._known_accounts()
            self.clients.reload_users(applied.users)
        if {"users", "client_bandwidth", "send_interval"} & set(changed):
            for conn in list(self.clients.conns.values()):  # budgets apply now
                if isinstance(conn, ClientConnection) and conn.state is ConnState.OPEN:
                    self.delivery.rebudget(conn)
        return restart

    def attach_layer(self, layer: Layer) -> None:
        """Plug ``layer`` into the core (one layer per core; see ``_hooks.py``)."""
        if self._layer is not None:
            raise RuntimeError("a layer is already attached")
        self._layer = layer
        self.clients.layer = layer
        self.fanout.layer = layer
        self.bus.on_local_key(layer.on_local_key)
        self.bus.on_client_lost(layer.on_client_lost)
        self.settings.known_accounts = self._known_accounts()

    def _known_accounts(self) -> frozenset[str]:
        """The accounts peers may name: those served, and with a layer their control
        namespaces."""
        served = self.settings.config.accounts
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
        the connection's class is fixed now, and our greeting goes first.  ``nats``: a
        client of the NATS port (it speaks the NATS text protocol; INFO goes first);
        ``backbone``: the leafnode connection this node dialed to a nats-server hub."""
        cid = self._new_id()
        cfg = self.settings.config
        decoder = Decoder(max_frame_bytes=cfg.max_payload + 8 * 1024, pool=self._unpackers)
        conn: Connection
        if backbone:
            leaf = BackboneConnection(cid, decoder, now)
            self.conns[cid] = conn = leaf
            self.backbone.opened(leaf)
        elif kind is ConnectionKind.CLIENT or kind is ConnectionKind.REPLICANT:
            policy = cfg.slow_consumer_policy
            track = policy == "drop-oldest" or policy == "coalesce"
            if nats:
                natsc = NatsClientConnection(
                    cid, decoder, now, track_frames=track, nats=self.nats.new_state()
                )
                self.conns[cid] = conn = natsc
                self.nats.opened(natsc)
            else:
                client = ClientConnection(cid, decoder, now, track_frames=track)
                self.conns[cid] = conn = client
                self.clients.opened(client)
        elif kind is ConnectionKind.ROUTE:
            route = RouteConnection(cid, decoder, now, dialed=dialed)
            self.conns[cid] = conn = route
            self.routes.opened(route)
        elif kind is ConnectionKind.GATEWAY_INBOUND:
            inbound = InboundGateway(cid, decoder, now)
            self.conns[cid] = conn = inbound
            self.gateways.opened_inbound(inbound)
        elif kind is ConnectionKind.GATEWAY_OUTBOUND:
            if expected_cluster is None:
                raise ValueError("an outbound gateway connection needs expected_cluster")
            outbound = OutboundGateway(cid, decoder, now, expected_cluster=expected_cluster)
            self.conns[cid] = conn = outbound
            self.gateways.opened_outbound(outbound)
        else:
            raise ValueError(f"a node does not accept {kind.value} connections")
        return conn

    def connection_lost(self, conn: Connection) -> None:
        """The transport is gone: forget the connection and its subscriptions."""
        if conn.state is ConnState.CLOSED:
            return
        self.outbox.retire(conn, conn.state is _OPEN)
        self.conns.pop(conn.id, None)
        conn.state = ConnState.CLOSED
        conn.forget_output()

    def has_output(self, conn: Connection) -> bool:
        """Something is queued for ``conn``."""
        return conn.has_output()

    def enable_datagrams(self, conn: Connection, max_size: int) -> None:
        """``conn``'s transport carries unreliable datagrams of up to ``max_size`` bytes
        (QUIC): keyed state for a meshgate client goes on its datagram lane."""
        if isinstance(conn, ClientConnection) and not conn.nats_text and max_size > 0:
            conn.dgram = KeyedDatagrams(
                max_size, self.settings.config.datagram_refresh, self.delivery.datagram_counters
            )

    def has_datagrams(self, conn: Connection) -> bool:
        """Datagrams are queued for ``conn``."""
        dgram = conn.dgram if isinstance(conn, ClientConnection) else None
        return dgram is not None and bool(dgram.queue)

    def take_datagrams(self, conn: Connection, max_bytes: int = -1) -> list[bytes]:
        """The datagrams queued for ``conn`` (each one frame, the latest state of its
        key), oldest key first: all of them, or (``max_bytes`` >= 0) as many as start
        within ``max_bytes``; the rest stay queued and are superseded by newer states."""
        if isinstance(conn, ClientConnection):
            out = conn.take_datagrams(max_bytes)
            taken = 0
            for d in out:
                taken += len(d)
            conn.bytes_out += taken
            self.bytes_out += taken
            if conn.sched is not None:  # its send tick charged them already
                conn.sched_mark += taken
            return out
        return []

    def take_output(self, conn: Connection) -> bytearray:
        """Everything queued for ``conn``, in order; the buffer starts empty again."""
        out = conn.take_output()
        n = len(out)
        conn.bytes_out += n
        self.bytes_out += n
        return out

    def pending_bytes(self, conn: Connection) -> int:
        """Bytes queued for ``conn`` and not yet taken by the shell."""
        return conn.pending_bytes()

    def drain(self) -> Effects:
        """Finish the current call (the node's own subscriptions run, and may route more)
        and return what the shell must do now, as one immutable value.  Call it after
        every other call into the core."""
        if self.delivery.internal:
            self.internal.run()
        return self.pending.take()

    # -- timers ---------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Timers: handshake deadline and keepalive pings."""
        self.settings.now = now
        cfg = self.settings.config
        out = self.outbox
        for conn in list(self.conns.values()):
            if conn.state is ConnState.AWAIT_HELLO and now - conn.opened_at >= cfg.auth_timeout:
                out.fail_auth(conn, "no HELLO within auth_timeout")
        if self._next_ping is None:
            self._next_ping = now + cfg.ping_interval
        elif now >= self._next_ping:
            self._next_ping = now + cfg.ping_interval
            for conn in list(self.conns.values()):
                if conn.state is not _OPEN:
                    continue
                if conn.pings_out >= cfg.max_pings_out:
                    out.fail(conn, ErrorCode.STALE_CONNECTION, "stale connection: no PONG")
                else:
                    conn.pings_out += 1
                    conn.pings_sent += 1
                    if conn.ping_sent_at is None:
                        conn.ping_sent_at = now
                    out.ping(conn)

    @property
    def slow_consumers(self) -> int:
        """Clients that met their slow-consumer policy since the node started."""
        return self.delivery.slow_consumers

    def trace_with(
        self, wall_offset: float, on_event: Callable[[dict[str, Any]], None] | None
    ) -> None:
        """Message traces: ``wall_offset`` turns the core's clock into wall-clock
        seconds for trace events; ``on_event`` sees every trace event this node emits
        (OpenTelemetry spans), None: nobody."""
        tracer = self.fanout.tracer
        tracer.wall_offset = wall_offset
        tracer.on_event = on_event

    @property
    def send_interval(self) -> float | None:
        """Seconds between send ticks (:meth:`send_tick`), or None: no client has a
        bandwidth budget, so nothing needs them."""
        return self.settings.config.send_interval if self.delivery.enabled else None

    def send_tick(self, now: float) -> None:
        """The send tick: clients with a bandwidth budget get the keyed state that fits
        (``_scheduler.py``); call it every :attr:`send_interval` seconds."""
        if self.delivery.scheduled:
            self.settings.now = now
            self.delivery.send_tick(now)

    def set_relevance(self, relevance: Relevance | None) -> None:
        """The host application's relevance function for scheduled clients:
        ``(focus, subject, key) -> (weight, min_interval)`` (see
        :class:`meshgate.spatial.Rings`); None: every key weighs 1, no rate cap."""
        self.delivery.relevance = relevance

    def set_delta_codec(self, codec: DeltaCodec) -> None:
        """The codec of deltas against acknowledged keyed state (``keyed_deltas``):
        clients that connect from now on and announce its name get deltas made by it."""
        self.delivery.codec = codec
        self.clients.set_delta_name(codec.name)

    def set_focus(self, conn_id: int, x: float, y: float) -> bool:
        """Where client ``conn_id`` is in the world (its relevance is measured from
        there, asked again for each key at its next value); False if it has no
        scheduler (no budget, or gone)."""
        c = self.clients.conns.get(conn_id)
        if c is None or c.sched is None:
            return False
        c.sched.focus = (x, y)
        for st in c.sched.keys.values():
            st.rated = float("-inf")
        return True

    def stop_accepting(self) -> None:
        """Lame duck: refuse new connections (clients, routes and gateways); NATS clients
        are told (``"ldm": true``)."""
        if not self.settings.draining:
            self.settings.draining = True
            self.nats.lame_duck()

    def clients_to_move(self) -> list[int]:
        """Ids of the open client (not replicant) connections, for a lame-duck drain."""
        return [
            c.id for c in self.clients.conns.values() if c.state is _OPEN and c.role is Role.CLIENT
        ]

    def move_client(self, conn_id: int) -> None:
        """Ask one client to go: SHUTTING_DOWN, so that it reconnects to another node."""
        conn = self.conns.get(conn_id)
        if conn is not None and conn.state is _OPEN:
            self.outbox.fail(
                conn,
                ErrorCode.SHUTTING_DOWN,
                "node is going away: reconnect to another node",
                count=False,
            )

    def shutdown(self) -> None:
        """Drain: refuse new connections; tell every connection the node is going away."""
        self.settings.draining = True
        for conn in list(self.conns.values()):
            if conn.state < _CLOSING:
                self.outbox.fail(
                    conn, ErrorCode.SHUTTING_DOWN, "node is shutting down", count=False
                )

    def close_slow_link(self, conn: Connection, reason: str) -> None:
        """The shell found route, gateway or backbone connection ``conn`` stuck (it took
        nothing within its write deadline, or holds more than its pending bound): what is
        queued for it is dropped, a SLOW_CONSUMER error takes its place (it goes out if
        the link still takes it), and the connection closes (``Effects.closing``)."""
        if not isinstance(conn, PeerConnection) or conn.state >= _CLOSING:
            return
        conn.forget_output()
        self.outbox.fail(conn, ErrorCode.SLOW_CONSUMER, reason)

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
        self.outbox.ping(conn)

    # -- input: dispatch by kind, one loop per kind ---------------------------------------------

    def receive_data(self, conn: Connection, data: bytes | bytearray, now: float) -> None:
        """Process bytes received on ``conn`` at time ``now``: every complete frame is handled."""
        if conn.state >= _CLOSING:
            return
        self.settings.now = now
        conn.last_activity = now
        n = len(data)
        conn.bytes_in += n
        self.bytes_in += n
        try:
            self._receivers[type(conn)](conn, data)
        except RemoteProtocolError as exc:
            self.outbox.fail(conn, exc.code, exc.reason)

    # -- the layer host (see _hooks.Host) -----------------------------------------------------

    def inject(self, account: str, subject: str, payload: bytes, reply: str | None = None) -> None:
        """Publish a message from the node itself (routed like a client's publish)."""
        self.fanout.inject(self.clients.account(account), subject, reply, payload, None)

    def subscribe_internal(self, account: str, pattern: str, handler: InternalHandler) -> None:
        """Subscribe the node itself; ``handler(subject, reply, payload)`` runs for each
        message the subscription matches, after the batch that delivered it."""
        self.internal.subscribe(self._new_id, self.clients.account(account), pattern, handler)

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def notify(self, conn_id: int, sid: int, subject: str, reply: str | None, data: bytes) -> bool:
        """Send one MSG to a local connection if it is still open; False if not."""
        c = self.clients.conns.get(conn_id)
        if c is None or c.state is not _OPEN:
            return False
        frame = c.notice_bytes(self.encoder, sid, subject, reply, data)
        if frame is not None:
            self.outbox.append(c, frame)
            c.messages_out += 1
            c.payload_out += len(data)
            if c.account is not None:
                self.fanout.count_out(c.account.name, 1, len(data))
        return True

    def error(self, conn: Connection, code: ErrorCode, reason: str) -> None:
        """Send an error frame to ``conn``; it stays open."""
        self.outbox.error(conn, code, reason)

    def deny(self, conn: Connection, reason: str) -> None:
        """A permission violation by ``conn``: counted, an error frame, it stays open."""
        self.outbox.deny(conn, reason)

    def local_patterns(self, account: str) -> list[str]:
        """Plain patterns some local connection of ``account`` subscribes to."""
        return [p for (a, p, q) in self.clients.local_keys if a == account and q is None]

    def has_interest(self, conn: ClientConnection, subject: str) -> bool:
        """Would a message on ``subject`` from ``conn`` reach anyone (see
        :meth:`FanOut.has_interest`)?"""
        return self.fanout.has_interest(conn, subject)

    # -- introspection ------------------------------------------------------------------------

    def internal_subscriptions(self, account: str | None = None) -> int:
        """The node's own subscriptions (not counted as clients' in statistics)."""
        return self.internal.count(account)

    def statistics(self) -> Statistics:
        """A snapshot of the node's counters (each part keeps its own)."""
        return _views.statistics(self)

    def account_statistics(self, account: str) -> AccountStatistics:
        """Counters of one account only."""
        return _views.account_statistics(self, account)

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
        return url in self.routes.self_urls or url == self.directory.cluster_url

    def has_route_to(self, url: str) -> bool:
        """A route to the node at cluster URL ``url`` is up (either direction)."""
        return url in self.directory.route_urls()

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

    @property
    def gateway_control_msgs(self) -> int:
        """Messages on ``$`` subjects (the game layer's control traffic) sent to gateways."""
        return self.fanout.gateway_control_msgs

    def backbone_error(self) -> str | None:
        """The last error the backbone hub sent, or None."""
        return self.backbone.last_error
