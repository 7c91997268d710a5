"""The node: a sans-IO core inside a trio shell, composed of parts that each own one job.

* :class:`~meshgate._shell._writer.Writer`: connection handles, write scheduling and
  coalescing, writer tasks, back-pressure;
* :class:`~meshgate._shell._dialers.Dialers`: routes, outbound gateways, the backbone;
* :class:`~meshgate._shell._topology.Topology`: what is connected, and a wake-up when
  that changes;
* :class:`~meshgate._shell._observer.Observer`: counters and monitoring snapshots;
* :class:`~meshgate._shell._driver.CoreDriver`: after every call into the core, the one
  place that acts on its :class:`~meshgate._node.Effects` (through :class:`_ShellSink`).

:class:`Gateway` owns the tasks, the listeners and the core, and runs each connection
(a reader here, writes in the writer).  It holds no routing rules.  (Named ``_shell``
because "gateway" means the link between clusters.)
"""

from __future__ import annotations

__all__ = ["Gateway", "open_gateway"]

import logging
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import trio
import trio.testing

from .. import _game
from .._compression import CompressedStream, CompressionCounters
from .._compression import available as compression_available
from .._node import Connection, ConnState, NodeCore, PeerConnection
from .._nursery import open_unwrapping_nursery, sole_exception
from ..config import GatewayConfig
from ..protocol import ConnectionKind, Role
from ..transports import get_transport
from ._dialers import Dialers, LinkOutcome
from ._driver import CoreDriver
from ._observer import Observer
from ._otel import span_recorder
from ._topology import Topology
from ._writer import CLOSE_GRACE, ConnHandle, Writer

if TYPE_CHECKING:
    from .._game import GameInfo
    from .._stats import (
        AccountInfo,
        AccountStatistics,
        ConnectionInfo,
        RouteInfo,
        ServerInfo,
        Statistics,
        SubscriptionsInfo,
    )
    from ..client import Client
    from ..replicant import AttachedReplicant, ReplicantAdapter

log = logging.getLogger("meshgate.gateway")

_RECEIVE_SIZE = 64 * 1024


class _ShellSink:
    """Where the driver hands the core's effects: each kind straight to the part that
    handles it (no call in between on the hot path)."""

    __slots__ = (
        "close",
        "dial_gateway",
        "dial_route",
        "gateways_changed",
        "routes_changed",
        "write",
    )

    def __init__(self, writer: Writer, topology: Topology, dialers: Dialers) -> None:
        self.write = writer.schedule
        self.close = writer.closing
        self.routes_changed = topology.routes_changed
        self.gateways_changed = topology.gateways_changed
        self.dial_route = dialers.dial_route
        self.dial_gateway = dialers.dial_gateway


class Gateway:
    """A running node.  Get one from :func:`open_gateway`, or construct it and
    ``await nursery.start(gateway.run)`` in a nursery you own."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        core = self._core = NodeCore(config)
        self._game = _game.plug_into(core)
        # what the host application's in-process replicants present (attach_replicant)
        self._local_replicant_token = secrets.token_urlsafe(24)
        core.set_local_replicant_token(self._local_replicant_token)
        self._writer = Writer(config, core)
        self._topology = Topology(core)
        self._dialers = Dialers(config, self._serve_stream, self._topology)
        self._observer = Observer(config, core, self._game, self._writer)
        self._driver = CoreDriver(core, _ShellSink(self._writer, self._topology, self._dialers))
        self._writer.attach_driver(self._driver.drain)
        self._compression = CompressionCounters()
        self._nursery: trio.Nursery | None = None
        self._drained = trio.Event()
        self._stopping = False
        # in-process replicants: stopped before the node closes their links (aclose)
        self._replicants: list[AttachedReplicant] = []
        #: the client listener's bound URL, or None
        self.client_url: str | None = None
        #: the route listener's bound URL (clusters are not configured yet: None)
        self.cluster_url: str | None = None
        #: the gateway listener's bound URL (super-clusters are not configured yet: None)
        self.gateway_url: str | None = None
        #: the NATS port URLs, one per ``nats_listen`` entry
        self.nats_urls: tuple[str, ...] = ()
        #: the monitoring endpoint's URL (not configured: None)
        self.monitor_url: str | None = None

    @property
    def started_wall(self) -> float:
        """When the node was made, on the wall clock (``time.time()``)."""
        return self._observer.started_wall

    @property
    def started_at(self) -> str:
        """When the node was made (ISO 8601, UTC)."""
        return self._observer.started_at

    async def run(
        self, *, task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen and serve until cancelled; ``task_status.started`` reports the gateway."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            cfg = self.config
            listen = self._listen
            shared = cfg.reuse_port
            self.client_url = await listen(
                nursery, cfg.listen, self._serve_client_stream, cfg.tls, shared
            )
            self.cluster_url = await listen(
                nursery, cfg.cluster_listen, self._serve_route_stream, cfg.cluster_tls
            )
            self.gateway_url = await listen(
                nursery, cfg.gateway_listen, self._serve_gateway_stream, cfg.gateway_tls, shared
            )
            nats_urls = []
            for url in cfg.nats_listen:
                bound = await listen(nursery, url, self._serve_nats_stream, cfg.tls, shared)
                assert bound is not None
                nats_urls.append(bound)
            self.nats_urls = tuple(nats_urls)
            self._core.bound(
                client_url=self.client_url,
                cluster_url=self.cluster_url,
                gateway_url=self.gateway_url,
                nats_url=next((u for u in nats_urls if not u.startswith("ws")), None),
            )
            observer = self._observer
            observer.bound(
                client_url=self.client_url,
                cluster_url=self.cluster_url,
                gateway_url=self.gateway_url,
            )
            tracer = self._core.fanout.tracer
            tracer.wall_offset = time.time() - trio.current_time()
            tracer.on_event = span_recorder()  # OpenTelemetry spans, if it is installed
            self._dialers.start(nursery)
            if cfg.monitor_listen is not None:
                from ..monitor import serve_monitor

                self.monitor_url = await nursery.start(serve_monitor, observer, cfg.monitor_listen)
            nursery.start_soon(self._timer)
            nursery.start_soon(self._writer.run_round_flusher)
            nursery.start_soon(self._writer.run_window_flusher)
            observer.serving()
            task_status.started(self)

    @staticmethod
    async def _listen(
        nursery: trio.Nursery,
        url: str | None,
        handler: Callable[[trio.abc.Stream], Awaitable[None]],
        ssl_context: ssl.SSLContext | None,
        reuse_port: bool = False,
    ) -> str | None:
        """Serve ``url`` (None: nothing) with ``handler``; the bound URL."""
        if url is None:
            return None
        transport = get_transport(url)
        serve = partial(transport.serve, url, handler, ssl_context=ssl_context)
        if reuse_port:  # only then: a custom transport need not know the keyword
            serve = partial(serve, reuse_port=True)
        bound: str = await nursery.start(serve)
        return bound

    async def _timer(self) -> None:
        cfg = self.config
        interval = min(cfg.auth_timeout, cfg.ping_interval) / 4
        while True:
            await trio.sleep(interval)
            self._core.tick(trio.current_time())
            self._driver.drain()

    async def _serve_client_stream(self, stream: trio.abc.Stream) -> None:
        await self._serve_stream(stream)

    async def _serve_route_stream(self, stream: trio.abc.Stream) -> None:
        await self._serve_stream(stream, ConnectionKind.ROUTE)

    async def _serve_nats_stream(self, stream: trio.abc.Stream) -> None:
        await self._serve_stream(stream, ConnectionKind.CLIENT, nats=True)

    async def _serve_gateway_stream(self, stream: trio.abc.Stream) -> None:
        await self._serve_stream(stream, ConnectionKind.GATEWAY_INBOUND)

    async def _serve_stream(
        self,
        stream: trio.abc.Stream,
        kind: ConnectionKind = ConnectionKind.CLIENT,
        *,
        dialed: bool = False,
        expected_cluster: str | None = None,
        nats: bool = False,
        backbone: bool = False,
        connect_time: float | None = None,
    ) -> LinkOutcome:
        """Run one connection: a reader and a writer task, then clean up whatever
        happened; how it ended (for the dialer of a route, gateway or backbone link).
        ``connect_time``: how long the dialer took to connect (``auto`` compression)."""
        core = self._core
        if kind is not ConnectionKind.CLIENT and not backbone:
            cfg = self.config
            mode = (
                cfg.cluster_compression if kind is ConnectionKind.ROUTE else cfg.gateway_compression
            )
            if mode != "off" and compression_available():
                stream = CompressedStream(
                    stream,
                    mode=mode,
                    dialed=dialed,
                    rtt=connect_time,
                    counters=self._compression,
                    # a read may inflate to 16 frames of the largest size, no more
                    max_inflate=16 * (cfg.max_payload + 8 * 1024),
                    auto_rtt=cfg.compression_auto_rtt,
                )
        conn = core.open_connection(
            trio.current_time(),
            kind,
            dialed=dialed,
            expected_cluster=expected_cluster,
            nats=nats,
            backbone=backbone,
        )
        writer = self._writer
        h = writer.open(conn, stream)
        try:
            async with trio.open_nursery() as nursery:
                writer.start(h, nursery)
                self._driver.drain()
                try:
                    await self._read(h)  # this task reads: one per idle client
                finally:
                    writer.stop(h)  # the nursery takes no new writer from here on
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("connection %d ended: %r", conn.id, exc)
        except Exception:  # a per-connection failure never takes the node down
            log.exception("connection %d failed", conn.id)
        finally:
            writer.release(h)
            if conn.close_reason:
                log.info("connection %d closed: %s", conn.id, conn.close_reason)
            core.connection_lost(conn)
            await trio.aclose_forcefully(stream)
            self._driver.drain()
            if self._stopping and not core.open_connection_count():
                self._drained.set()
        if writer.closed_stuck(h):
            return "stuck"
        if isinstance(conn, PeerConnection) and conn.peer is not None:
            return "up"
        return "never-up"

    async def _read(self, h: ConnHandle) -> None:
        """Feed what the connection receives to the core, batch by batch; a publisher
        whose batch filled a congested route or gateway waits for it (back-pressure)."""
        core = self._core
        conn = h.conn
        stream = h.stream
        writer = self._writer
        busy_links = writer.busy_links
        drain = self._driver.drain
        while True:
            try:
                data = await stream.receive_some(_RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                writer.end(h)
                return
            if conn.state >= ConnState.CLOSING:
                continue  # closing: drain what the peer still sends (see Writer), unread
            links = busy_links()
            core.receive_data(conn, data, trio.current_time())
            congested = writer.congested(links) if links else None
            drain()
            if congested:
                await writer.wait_drained(congested)

    # -- public API ---------------------------------------------------------------------------

    async def wait_backbone(self) -> None:
        """Wait until the backbone connection is attached (``GatewayConfig.backbone``)."""
        await self._topology.wait_backbone()

    async def wait_gateways(self, outbound: int, inbound: int = 0) -> None:
        """Wait until this node has at least ``outbound`` outbound and ``inbound`` inbound
        gateway connections."""
        await self._topology.wait_gateways(outbound, inbound)

    async def flush_gateways(self) -> None:
        """A round trip on every gateway connection, both directions: when this returns,
        each peer has processed everything this node sent it before the call."""
        await self._ping_all(self._core.gateway_connections())

    async def _ping_all(self, conns: list[Connection]) -> None:
        core = self._core
        if not conns:
            await trio.lowlevel.checkpoint()
            return
        done = trio.Event()
        left = len(conns)

        def one() -> None:
            nonlocal left
            left -= 1
            if left == 0:
                done.set()

        for c in conns:
            core.ping(c, one)
        self._driver.drain()
        await done.wait()

    async def wait_routes(self, n: int) -> None:
        """Wait until this node has routes to at least ``n`` peers of its cluster."""
        await self._topology.wait_routes(n)

    async def wait_topology_change(self) -> None:
        """Wait until a route or gateway connection of this node comes or goes."""
        await self._topology.next_change()

    async def flush_routes(self) -> None:
        """A round trip on every route: when this returns, each peer has processed
        everything this node sent it before the call (interest included)."""
        await self._ping_all(self._core.route_connections())

    # -- what the node shows of itself (its observer's snapshots) ------------------------------

    def compression(self) -> dict[str, int]:
        """lz4 on route and gateway links (``cluster_compression``,
        ``gateway_compression``): ``links`` compressed so far, bytes before (``raw_out``,
        ``raw_in``) and after (``wire_out``, ``wire_in``) compression, and peers'
        streams ``refused`` (decompression bombs, corrupt streams)."""
        return self._compression.as_dict()

    def statistics(self) -> Statistics:
        """A frozen snapshot of the node's counters."""
        return self._observer.statistics()

    def account_statistics(self, account: str) -> AccountStatistics:
        """Counters of ``account`` alone; nothing of another account is included."""
        return self._observer.account_statistics(account)

    @property
    def backbone_server(self) -> str | None:
        """The nats-server this node's backbone connection is attached to (its server
        name), or None while it is not attached."""
        return self._observer.backbone_server

    def gatewayz(self) -> dict[str, Any]:
        """Gateway state shaped like nats-server's ``/gatewayz``: per remote cluster, the
        connection and each account's interest mode, no-interest count and subscriptions;
        ``known_urls`` maps each remote cluster to the gateway URLs this node knows."""
        return self._observer.gatewayz()

    @property
    def uptime(self) -> float:
        """Seconds since the node started serving (0 before)."""
        return self._observer.uptime

    def varz(self) -> ServerInfo:
        """Identity, limits, uptime and counters (nats-server's ``/varz``)."""
        return self._observer.varz()

    def connz(self) -> list[ConnectionInfo]:
        """Every client and replicant connection (nats-server's ``/connz``)."""
        return self._observer.connz()

    def routez(self, *, interest: bool = False) -> list[RouteInfo]:
        """Every route of this node, with the peer's name and URL (``/routez``); with
        ``interest``, each route's interest entries ``(account, pattern, queue, weight)``."""
        return self._observer.routez(interest=interest)

    def accountz(self) -> list[AccountInfo]:
        """Every account this node has seen, with its counters."""
        return self._observer.accountz()

    def subsz(self) -> SubscriptionsInfo:
        """The interest graph's size and match cache (``/subsz``)."""
        return self._observer.subsz()

    def game(self) -> GameInfo | None:
        """The game layer: entity ownership, held inputs, provisional records and their
        evictions (None unless ``replicants=True``)."""
        return self._observer.game()

    # -- in-process clients and replicants ----------------------------------------------------

    @asynccontextmanager
    async def connect_local(
        self, *, name: str | None = None, token: str | None = None, role: Role = Role.CLIENT
    ) -> AsyncIterator[Client]:
        """An in-process client for the host application: no sockets, same protocol."""
        from ..client import connect_with_stream

        if self._nursery is None:
            raise RuntimeError("the gateway is not running")
        ours, theirs = trio.testing.lockstep_stream_pair()
        self._nursery.start_soon(self._serve_stream, theirs)
        async with connect_with_stream(ours, name=name, token=token, role=role) as client:
            yield client

    def attach_replicant(
        self, adapter: ReplicantAdapter, *, token: str | None = None
    ) -> AttachedReplicant:
        """Run ``adapter`` with an in-process :class:`~meshgate.ReplicantLink` to this node
        (in the node's nursery, until the node stops or the returned handle stops it).
        Needs ``replicants=True``.  An exception in the adapter closes its link (the node
        announces the owner lost) and is kept on the handle; the node carries on.

        Without users the link authenticates with a token only this process knows; with
        users, pass the ``token`` of a user with ``replicant=True``."""
        from ..replicant import AttachedReplicant

        if self._nursery is None:
            raise RuntimeError("the gateway is not running")
        if not self.config.replicants:
            raise RuntimeError("attach_replicant needs GatewayConfig(replicants=True)")

        if token is None and not self.config.users:
            token = self._local_replicant_token

        handle = AttachedReplicant(
            adapter,
            partial(self.connect_local, name=adapter.name, token=token, role=Role.REPLICANT),
        )
        self._replicants = [h for h in self._replicants if h.running]
        self._replicants.append(handle)
        self._nursery.start_soon(handle.run)
        return handle

    def reconfigure(self, config: GatewayConfig) -> list[str]:
        """Apply a new configuration to the running node as far as that is safe: users
        and permissions (revoked credentials are disconnected, narrowed permissions end
        the subscriptions they no longer allow) and limits.  Returns the names of the
        fields that differ but need a restart; those are not applied."""
        restart = self._core.reconfigure(config)
        self.config = self._writer.config = self._dialers.config = self._observer.config = (
            self._core.config
        )
        self._driver.drain()
        return restart

    async def lame_duck(self, window: float | None = None) -> None:
        """Leave gracefully (nats-server's lame-duck mode): refuse new connections, ask
        the clients to move to other nodes a few at a time, spread evenly over
        ``window`` seconds (default ``lame_duck_duration``), so the rest of the cluster
        is not hit by all of them at once; then stop as :meth:`aclose` does.  Routes,
        gateways and replicants stay up meanwhile, so moved clients lose nothing."""
        window = self.config.lame_duck_duration if window is None else window
        core = self._core
        core.stop_accepting()
        movers = core.clients_to_move()
        pause = window / len(movers) if movers else 0.0
        for i, conn_id in enumerate(movers):
            if i and pause:
                await trio.sleep(pause)
            core.move_client(conn_id)
            self._driver.drain()
        await self.aclose()

    async def aclose(self) -> None:
        """Stop: attached replicants stop first (their owners are announced lost while
        routes and gateways are up); then every connection gets a shutting-down error,
        is flushed briefly, and closed."""
        if self._replicants:
            for h in self._replicants:
                h.stop()
            with trio.move_on_after(CLOSE_GRACE):
                for h in self._replicants:
                    await h.wait_stopped()
            self._replicants = []
        self._stopping = True
        self._dialers.stop()
        self._core.shutdown()
        self._driver.drain()
        if self._nursery is not None:
            if self._core.open_connection_count():
                with trio.move_on_after(CLOSE_GRACE):
                    await self._drained.wait()
            self._nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_gateway(config: GatewayConfig) -> AsyncIterator[Gateway]:
    """Start a node in its own nursery; the block runs while it serves.

    On exit (or error) the node shuts down: connections are told, flushed
    briefly, and closed.
    """
    async with open_unwrapping_nursery() as nursery:
        gw = Gateway(config)
        try:
            await nursery.start(gw.run)
        except BaseExceptionGroup as group:  # it did not start: say why, unwrapped
            sole = sole_exception(group)
            if sole is None:
                raise
            raise sole from None
        try:
            yield gw
        finally:
            with trio.CancelScope(shield=True):
                await gw.aclose()
            nursery.cancel_scope.cancel()
