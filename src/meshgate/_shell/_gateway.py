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

__all__ = ["Gateway", "config_changes", "open_gateway"]

import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import trio
import trio.testing

from .. import _game
from .._compression import CompressedStream, CompressionCounters
from .._compression import available as compression_available
from .._node import Connection, ConnState, NodeCore, PeerConnection, Relevance
from .._nursery import open_unwrapping_nursery, sole_exception
from ..config import GatewayConfig
from ..protocol import ConnectionKind, DeltaCodec, Role
from ._dialers import Dialers, DialState, LinkOutcome
from ._driver import CoreDriver
from ._listeners import Handlers, quic_stats, start_listeners
from ._logbook import Logbook
from ._observer import Observer
from ._otel import span_recorder
from ._ticks import Ticks
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


def _now() -> float:
    return trio.current_time()


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
        self._observer = Observer(config, core, self._game, self._writer, self._dialers)
        self._driver = CoreDriver(core, _ShellSink(self._writer, self._topology, self._dialers))
        self._writer.attach_driver(self._driver.drain)
        self._compression = CompressionCounters()
        self._nursery: trio.Nursery | None = None
        self._drained = trio.Event()
        self._stopping = False
        self._logbook = Logbook(self._topology, self._writer)
        self._ticks = Ticks(core, self._driver, self._logbook)
        # in-process replicants: stopped before the node closes their links (aclose)
        self._replicants: list[AttachedReplicant] = []
        #: the first client listener's bound URL, or None
        self.client_url: str | None = None
        #: every client listener's bound URL, in the order of ``listen``
        self.client_urls: tuple[str, ...] = ()
        #: the route listener's bound URL (clusters are not configured yet: None)
        self.cluster_url: str | None = None
        #: the gateway listener's bound URL (super-clusters are not configured yet: None)
        self.gateway_url: str | None = None
        #: the NATS port URLs, one per ``nats_listen`` entry
        self.nats_urls: tuple[str, ...] = ()
        #: the monitoring endpoint's URL (not configured: None)
        self.monitor_url: str | None = None

    def urls(self) -> dict[str, str]:
        """Every URL the node listens on, by what it serves: ``clients``, ``cluster``
        (routes), ``gateway``, ``nats`` (``nats[1]``, ... for more than one) and
        ``monitoring``; listeners not configured are left out."""
        out = {"clients": self.client_url, "cluster": self.cluster_url}
        out["gateway"] = self.gateway_url
        for i, url in enumerate(self.nats_urls):
            out["nats" if i == 0 else f"nats[{i}]"] = url
        out["monitoring"] = self.monitor_url
        return {k: v for k, v in out.items() if v is not None}

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
            bound = await start_listeners(
                nursery,
                cfg,
                Handlers(
                    self._serve_client_stream,
                    self._serve_route_stream,
                    self._serve_gateway_stream,
                    self._serve_nats_stream,
                ),
            )
            self.client_urls, self.nats_urls = bound.client_urls, bound.nats_urls
            self.client_url = bound.client_urls[0] if bound.client_urls else None
            self.cluster_url, self.gateway_url = bound.cluster_url, bound.gateway_url
            observer = self._observer
            observer.bound(
                client_url=self.client_url,
                cluster_url=self.cluster_url,
                gateway_url=self.gateway_url,
                client_urls=self.client_urls,
            )
            observer.quic_stats = partial(quic_stats, self.client_urls)
            observer.compression_stats = self._compression.as_dict
            # trace events on the wall clock; OpenTelemetry spans, if it is installed
            self._core.trace_with(time.time() - trio.current_time(), span_recorder())
            if cfg.monitor_listen is not None:
                # bound before the first HELLO: route and gateway peers hear of it
                from ..monitor import serve_monitor

                self.monitor_url = await nursery.start(serve_monitor, observer, cfg.monitor_listen)
                observer.monitor_url = self.monitor_url
            self._core.bound(
                client_url=self.client_url,
                cluster_url=self.cluster_url,
                gateway_url=self.gateway_url,
                nats_url=next((u for u in self.nats_urls if not u.startswith("ws")), None),
                monitor_url=self.monitor_url,
            )
            self._dialers.start(nursery)
            self._ticks.start(nursery)
            nursery.start_soon(self._writer.run_round_flusher)
            nursery.start_soon(self._writer.run_window_flusher)
            observer.serving()
            for what, url in self.urls().items():
                log.info("%s: listening on %s", what, url)
            task_status.started(self)

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
        if kind is ConnectionKind.CLIENT:
            self._observer.total_connections += 1
        max_datagram = getattr(stream, "max_datagram_payload", 0)
        if max_datagram:  # QUIC: keyed state goes as datagrams
            core.enable_datagrams(conn, max_datagram)
        writer = self._writer
        h = writer.open(conn, stream)
        ended = "closed by the peer"
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
            ended = f"transport error: {exc}"
        except Exception:  # a per-connection failure never takes the node down
            log.exception("connection %d failed", conn.id)
            ended = "failed (see the traceback above)"
        finally:
            self._logbook.connection_ended(conn, conn.close_reason or ended, self._stopping)
            writer.release(h)
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

    async def wait_dial_failure(self) -> None:
        """Wait until a dial of a route, gateway or backbone fails (the failure is in
        :meth:`dial_states`, ``last_error``)."""
        await self._dialers.next_failure()

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

    def readiness(self) -> list[str]:
        """What the node still waits for before it is ready (``/healthz?ready=1``): each
        configured route seed, remote cluster and the backbone that is not connected,
        with its last dial error; empty when ready."""
        return self._observer.readiness()

    def dial_states(self) -> list[DialState]:
        """What each route, gateway and backbone dialer is doing: its state, failures
        in a row, last error and the wait before its next attempt."""
        return self._observer.dial_states()

    def varz(self) -> ServerInfo:
        """Identity, limits, uptime and counters (nats-server's ``/varz``)."""
        return self._observer.varz()

    def connz(self) -> list[ConnectionInfo]:
        """Every client and replicant connection (nats-server's ``/connz``)."""
        return self._observer.connz()

    def set_relevance(self, relevance: Relevance | None) -> None:
        """How much each keyed message matters to each client with a bandwidth budget:
        ``relevance(focus, subject, key) -> (weight, min_interval)``, ``focus`` being the
        client's position (:meth:`set_focus`) or None.  The weight is how fast the key's
        priority grows while it waits; ``min_interval`` caps its rate (seconds between
        sends).  :meth:`meshgate.spatial.Rings.relevance` is one; None: all weigh 1."""
        self._core.set_relevance(relevance)

    def set_delta_codec(self, codec: DeltaCodec) -> None:
        """The keyed delta codec (``keyed_deltas``, docs/scheduling.md) from now on."""
        self._core.set_delta_codec(codec)

    def set_focus(self, conn_id: int, x: float, y: float) -> bool:
        """Where client ``conn_id`` (its ``cid`` in :meth:`connz`) is in the world, for
        the relevance function; False if it has no budget or is gone."""
        return self._core.set_focus(conn_id, x, y)

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

    def monitor_peers(self) -> list[dict[str, str | None]]:
        """This node's route and gateway peers with the monitoring URL each announced
        (``kind``, ``name``, ``cluster``, ``monitor_url``; None where a peer has none):
        what the dashboard and ``meshgate topology`` discover the super-cluster from."""
        return self._observer.monitor_peers()

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
        old = self.config
        restart = self._core.reconfigure(config)
        self.config = self._writer.config = self._dialers.config = self._observer.config = (
            self._core.config
        )
        self._observer.config_loaded()
        self._driver.drain()
        self._ticks.start_send()
        applied = [c for c in config_changes(old, config) if c.split(" ", 1)[0] not in restart]
        if applied:
            log.info("configuration reloaded; applied: %s", "; ".join(applied))
        elif not restart:
            log.info("configuration reloaded; nothing changed")
        if restart:
            log.warning(
                "configuration reloaded; these need a restart and were not applied: %s",
                ", ".join(restart),
            )
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
        log.info(
            "lame duck: refusing new connections; moving %d client(s) to other nodes over %.1fs",
            len(movers),
            window if movers else 0.0,
        )
        for i, conn_id in enumerate(movers):
            if i and pause:
                await trio.sleep(pause)
            core.move_client(conn_id)
            self._driver.drain()
        log.info("lame duck: clients moved; closing every connection")
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


def config_changes(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """The fields that differ between two configurations, each as ``name (old -> new)``;
    secrets (fields not shown in ``repr``) and TLS contexts by name only, lists of users
    by count."""
    out = []
    for field in attrs.fields(GatewayConfig):
        a, b = getattr(old, field.name), getattr(new, field.name)
        if not field.eq:
            continue  # TLS contexts: compared by identity, a reload always makes new ones
        if a == b:
            continue
        if not field.repr:
            out.append(f"{field.name} (changed)")
        elif field.name == "users":
            out.append(f"users ({len(a)} -> {len(b)} entries)")
        else:
            out.append(f"{field.name} ({a!r} -> {b!r})")
    return out


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
