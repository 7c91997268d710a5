"""The trio shell around the sans-IO node core: listeners, per-connection tasks, timers.

The shell owns tasks and time; it holds no routing rules.  After every call into the
core it acts on the core's :class:`~meshgate._node.Effects` (``_after_core``) and
nothing else.  (Named ``_shell`` because "gateway" means the link between clusters.)
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
from typing import TYPE_CHECKING

import trio
import trio.testing

from . import _game
from ._dialers import Dialing
from ._node import Connection, ConnState, NodeCore
from ._nursery import open_unwrapping_nursery, sole_exception
from ._observe import Observing
from ._writes import CLOSE_GRACE, ConnHandle, Writing
from .config import GatewayConfig
from .protocol import ConnectionKind, Role
from .transports import get_transport

if TYPE_CHECKING:
    from .client import Client
    from .replicant import AttachedReplicant, ReplicantAdapter

log = logging.getLogger("meshgate.gateway")

_RECEIVE_SIZE = 64 * 1024


class Gateway(Dialing, Observing, Writing):
    """A running node.  Get one from :func:`open_gateway`, or construct it and
    ``await nursery.start(gateway.run)`` in a nursery you own."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._core = NodeCore(config)
        self._game = _game.plug_into(self._core)
        # what the host application's in-process replicants present (attach_replicant)
        self._local_replicant_token = secrets.token_urlsafe(24)
        self._core.clients.local_replicant_token = self._local_replicant_token
        self._nursery: trio.Nursery | None = None
        self._drained = trio.Event()
        self._stopping = False
        self._routes_event = trio.Event()
        #: when the node started (ISO 8601, UTC) and the wall clock then; read once here
        self.started_wall = time.time()
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_wall))
        self._started_monotonic: float | None = None
        self._gateways_event = trio.Event()
        self._gateway_dialers: set[str] = set()
        self._dialing: set[str] = set()
        self._busy_links: set[ConnHandle] = set()
        # in-process replicants: stopped before the node closes their links (aclose)
        self._replicants: list[AttachedReplicant] = []
        self._round: list[ConnHandle] = []
        self._round_due = trio.Event()
        self._windowed: list[ConnHandle] = []
        self._window_due = trio.Event()
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

    async def run(
        self, *, task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen and serve until cancelled; ``task_status.started`` reports the gateway."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            cfg = self.config
            listen = self._listen
            shared = cfg.reuse_port
            self.client_url = await listen(nursery, cfg.listen, self._serve_stream, cfg.tls, shared)
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
            if cfg.gateway_listen is not None:
                for cluster in cfg.gateways:
                    if cluster != cfg.cluster:
                        self._start_gateway_dialer(cluster, explicit=True)
            if cfg.cluster_listen is not None:
                for url in cfg.routes:
                    self._start_dialer(url, explicit=True)
            if cfg.backbone:
                nursery.start_soon(self._dial_backbone)
            if cfg.monitor_listen is not None:
                from .monitor import serve_monitor

                self.monitor_url = await nursery.start(serve_monitor, self, cfg.monitor_listen)
            nursery.start_soon(self._timer)
            nursery.start_soon(self._round_flusher)
            nursery.start_soon(self._window_flusher)
            self._started_monotonic = trio.current_time()
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
            self._after_core()

    def _after_core(self) -> None:
        """Write or schedule the output the core produced; bound the life of closing
        connections; start the dialers it asked for."""
        fx = self._core.drain()
        if not fx:
            return
        if fx.writable:
            self._schedule_writes(fx.writable)
        if fx.closing:
            deadline = trio.current_time() + CLOSE_GRACE
            for c in fx.closing:
                h = c.shell
                if h is not None:
                    self._wake(h)
                    if h.scope is not None:
                        h.scope.deadline = min(h.scope.deadline, deadline)
        if fx.routes_changed:
            self._routes_event.set()
            self._routes_event = trio.Event()
        for url in fx.dial_routes:
            self._start_dialer(url, explicit=False)
        if fx.gateways_changed:
            self._gateways_event.set()
            self._gateways_event = trio.Event()
        for cluster in fx.dial_gateways:
            self._start_gateway_dialer(cluster, explicit=cluster in self.config.gateways)

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
    ) -> None:
        """Run one connection: a reader and a writer task, then clean up whatever happened."""
        core = self._core
        conn = core.open_connection(
            trio.current_time(),
            kind,
            dialed=dialed,
            expected_cluster=expected_cluster,
            nats=nats,
            backbone=backbone,
        )
        h = ConnHandle(conn, stream)
        conn.shell = h
        try:
            async with trio.open_nursery() as nursery:
                h.scope = nursery.cancel_scope
                h.nursery = nursery
                if h.fd < 0 or h.drained is not None:
                    self._wake(h)  # a writer task from the start
                else:
                    h.idle = True  # direct writes; a writer task only once one falls short
                self._after_core()
                try:
                    await self._reader(h)  # this task reads: one task per idle client
                finally:
                    h.closed = True  # the nursery takes no new writer from here on
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("connection %d ended: %r", conn.id, exc)
        except Exception:  # a per-connection failure never takes the node down
            log.exception("connection %d failed", conn.id)
        finally:
            h.closed = True
            if h.drained is not None:
                h.drained.set()  # nobody waits for a link that is gone
            if conn.close_reason:
                log.info("connection %d closed: %s", conn.id, conn.close_reason)
            core.connection_lost(conn)
            conn.shell = None
            await trio.aclose_forcefully(stream)
            self._after_core()
            if self._stopping and not core.conns:
                self._drained.set()

    async def _reader(self, h: ConnHandle) -> None:
        core = self._core
        conn = h.conn
        stream = h.stream
        while True:
            try:
                data = await stream.receive_some(_RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                assert h.scope is not None
                h.scope.cancel()
                return
            if conn.state >= ConnState.CLOSING:
                continue  # closing: drain what the peer still sends (see _writer), unread
            links = self._peer_links()
            core.receive_data(conn, data, trio.current_time())
            congested = self._congested_links(links) if links else None
            self._after_core()
            if congested:
                await self._wait_drained(congested)

    # -- public API ---------------------------------------------------------------------------

    async def wait_backbone(self) -> None:
        """Wait until the backbone connection is attached (``GatewayConfig.backbone``)."""
        while self._core.backbone.conn is None:
            await self._routes_event.wait()

    async def wait_gateways(self, outbound: int, inbound: int = 0) -> None:
        """Wait until this node has at least ``outbound`` outbound and ``inbound`` inbound
        gateway connections."""
        gateways = self._core.gateways
        while len(gateways.outbound) < outbound or len(gateways.inbound) < inbound:
            await self._gateways_event.wait()

    async def flush_gateways(self) -> None:
        """A round trip on every gateway connection, both directions: when this returns,
        each peer has processed everything this node sent it before the call."""
        gateways = self._core.gateways
        await self._ping_all([*gateways.outbound.values(), *gateways.inbound.values()])

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
        self._after_core()
        await done.wait()

    async def wait_routes(self, n: int) -> None:
        """Wait until this node has routes to at least ``n`` peers of its cluster."""
        while len(self._core.routes.peers) < n:
            await self._routes_event.wait()

    async def wait_topology_change(self) -> None:
        """Wait until a route or gateway connection of this node comes or goes."""
        routes, gateways = self._routes_event, self._gateways_event
        async with trio.open_nursery() as nursery:

            async def wait(event: trio.Event) -> None:
                await event.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(wait, routes)
            nursery.start_soon(wait, gateways)

    async def flush_routes(self) -> None:
        """A round trip on every route: when this returns, each peer has processed
        everything this node sent it before the call (interest included)."""
        await self._ping_all(list(self._core.routes.peers.values()))

    @asynccontextmanager
    async def connect_local(
        self, *, name: str | None = None, token: str | None = None, role: Role = Role.CLIENT
    ) -> AsyncIterator[Client]:
        """An in-process client for the host application: no sockets, same protocol."""
        from .client import connect_with_stream

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
        from .replicant import AttachedReplicant

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
        self.config = self._core.config
        self._after_core()
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
            self._after_core()
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
        self._core.shutdown()
        self._after_core()
        if self._nursery is not None:
            if self._core.conns:
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
