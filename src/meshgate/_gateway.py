"""The trio shell around the sans-IO node core: listeners, per-connection tasks, timers."""

from __future__ import annotations

__all__ = ["Gateway", "open_gateway"]

import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import trio
import trio.testing

from ._node import Connection, ConnState, NodeCore
from ._stats import AccountStatistics, Statistics
from .config import GatewayConfig
from .protocol import ConnectionKind, Role
from .transports import connect_stream, get_transport

if TYPE_CHECKING:
    from .client import Client
    from .replicant import ReplicantAdapter

log = logging.getLogger("meshgate.gateway")

#: how long a closing connection may take to flush its final error frame
CLOSE_GRACE = 1.0
_RECEIVE_SIZE = 64 * 1024


class _Handle:
    """The shell's side of one connection: its stream, cancel scope and writer wake-up."""

    __slots__ = ("conn", "scope", "stream", "wake")

    def __init__(self, conn: Connection, stream: trio.abc.Stream) -> None:
        self.conn = conn
        self.stream = stream
        self.wake = trio.Event()
        self.scope: trio.CancelScope | None = None


class Gateway:
    """A running node.  Get one from :func:`open_gateway`, or construct it and
    ``await nursery.start(gateway.run)`` in a nursery you own."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._core = NodeCore(config)
        self._nursery: trio.Nursery | None = None
        self._drained = trio.Event()
        self._stopping = False
        self._routes_event = trio.Event()
        #: when the node started (ISO 8601, UTC) and the wall clock then
        self.started_wall = time.time()
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_wall))
        self._gateways_event = trio.Event()
        self._gateway_dialers: set[str] = set()
        self._route_drained = trio.Event()
        self._dialing: set[str] = set()
        #: the client listener's bound URL, or None
        self.client_url: str | None = None
        #: the route listener's bound URL (clusters are not configured yet: None)
        self.cluster_url: str | None = None
        #: the gateway listener's bound URL (super-clusters are not configured yet: None)
        self.gateway_url: str | None = None
        #: the monitoring endpoint's URL (not configured: None)
        self.monitor_url: str | None = None

    async def run(
        self, *, task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen and serve until cancelled; ``task_status.started`` reports the gateway."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            cfg = self.config
            if cfg.listen is not None:
                transport = get_transport(cfg.listen)
                self.client_url = await nursery.start(
                    partial(transport.serve, cfg.listen, self._serve_stream, ssl_context=cfg.tls)
                )
            if cfg.cluster_listen is not None:
                transport = get_transport(cfg.cluster_listen)
                self.cluster_url = await nursery.start(
                    partial(transport.serve, cfg.cluster_listen, self._serve_route_stream)
                )
                self._core.cluster_url = self.cluster_url
            if cfg.gateway_listen is not None:
                transport = get_transport(cfg.gateway_listen)
                self.gateway_url = await nursery.start(
                    partial(transport.serve, cfg.gateway_listen, self._serve_gateway_stream)
                )
                self._core.gateway_url = self.gateway_url
                for cluster in cfg.gateways:
                    if cluster != cfg.cluster:
                        self._start_gateway_dialer(cluster, explicit=True)
            if cfg.cluster_listen is not None:
                for url in cfg.routes:
                    self._start_dialer(url, explicit=True)
            if cfg.monitor_listen is not None:
                from .monitor import serve_monitor

                self.monitor_url = await nursery.start(serve_monitor, self, cfg.monitor_listen)
            nursery.start_soon(self._timer)
            task_status.started(self)

    async def _timer(self) -> None:
        cfg = self.config
        interval = min(cfg.auth_timeout, cfg.ping_interval) / 4
        while True:
            await trio.sleep(interval)
            self._core.tick(trio.current_time())
            self._after_core()

    def _after_core(self) -> None:
        """Wake the writers of connections with output; bound the life of closing ones."""
        core = self._core
        if core.routes_changed:
            core.routes_changed = False
            self._routes_event.set()
            self._routes_event = trio.Event()
        #: when the node started (ISO 8601, UTC) and the wall clock then
        self.started_wall = time.time()
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_wall))
        if core.dial_requests:
            for url in core.dial_requests:
                self._start_dialer(url, explicit=False)
            core.dial_requests.clear()
        if core.gateways_changed:
            core.gateways_changed = False
            self._gateways_event.set()
            self._gateways_event = trio.Event()
        if core.gateway_dial_requests:
            for cluster in core.gateway_dial_requests:
                self._start_gateway_dialer(cluster, explicit=cluster in self.config.gateways)
            core.gateway_dial_requests.clear()
        if core.dirty:
            for c in core.dirty:
                h = c.shell
                if h is not None:
                    h.wake.set()
            core.dirty.clear()
        if core.closing:
            deadline = trio.current_time() + CLOSE_GRACE
            for c in core.closing:
                h = c.shell
                if h is not None:
                    h.wake.set()
                    if h.scope is not None:
                        h.scope.deadline = min(h.scope.deadline, deadline)
            core.closing.clear()

    async def _serve_route_stream(self, stream: trio.abc.Stream) -> None:
        await self._serve_stream(stream, ConnectionKind.ROUTE)

    async def _serve_gateway_stream(self, stream: trio.abc.Stream) -> None:
        await self._serve_stream(stream, ConnectionKind.GATEWAY_INBOUND)

    async def _backoff(self, failures: int) -> None:
        """Wait before the next dial: jittered, growing with failures to 10x
        ``reconnect_wait``, and never zero (no hot loop)."""
        delay = self.config.reconnect_wait * min(10.0, 1.5 ** min(failures, 8))
        await trio.sleep(delay * random.uniform(0.5, 1.0))

    def _start_gateway_dialer(self, cluster: str, *, explicit: bool) -> None:
        if (
            cluster in self._gateway_dialers
            or cluster == self.config.cluster
            or self._nursery is None
            or self._stopping
            or self.gateway_url is None
        ):
            return
        self._gateway_dialers.add(cluster)
        self._nursery.start_soon(self._dial_gateway, cluster, explicit)

    async def _dial_gateway(self, cluster: str, explicit: bool) -> None:
        """Keep exactly one outbound connection to ``cluster``, landing on any of its nodes.

        Configured clusters are retried forever, discovered ones for ``connect_retries``
        failed passes.  Every pass is followed by a jittered wait: never a hot loop.
        """
        core = self._core
        cfg = self.config
        failures = 0
        try:
            while True:
                if cluster in core.outbound:
                    await self._gateways_event.wait()
                    continue
                urls = list(core.gateway_urls.get(cluster, ()))
                random.shuffle(urls)
                connected = False
                for url in urls:
                    try:
                        with trio.move_on_after(max(2.0, cfg.reconnect_wait)) as scope:
                            cm = connect_stream(url)
                            stream = await cm.__aenter__()
                        if scope.cancelled_caught:
                            continue
                    except OSError as exc:
                        log.debug("gateway %s via %s failed: %s", cluster, url, exc)
                        continue
                    try:
                        connected = True
                        await self._serve_stream(
                            stream,
                            ConnectionKind.GATEWAY_OUTBOUND,
                            dialed=True,
                            expected_cluster=cluster,
                        )
                    finally:
                        with trio.CancelScope(shield=True):
                            await cm.__aexit__(None, None, None)
                    break
                failures = 0 if connected else failures + 1
                if not explicit and failures > cfg.connect_retries:
                    log.info("giving up on discovered gateway cluster %s", cluster)
                    return
                await self._backoff(failures)
        finally:
            self._gateway_dialers.discard(cluster)

    def _start_dialer(self, url: str, *, explicit: bool) -> None:
        if url in self._dialing or self._nursery is None or self._stopping:
            return
        self._dialing.add(url)
        self._nursery.start_soon(self._dial_route, url, explicit)

    async def _dial_route(self, url: str, explicit: bool) -> None:
        """Keep a route to ``url``: forever for a configured seed, ``connect_retries``
        failed attempts for a URL learned by gossip.  Always waits between attempts."""
        core = self._core
        cfg = self.config
        failures = 0
        try:
            while True:
                if url in core.self_urls or url == core.cluster_url:
                    return
                if url in core.connected_route_urls():
                    await self._routes_event.wait()  # a route to it exists (either direction)
                    continue
                try:
                    async with connect_stream(url) as stream:
                        failures = 0
                        await self._serve_stream(stream, ConnectionKind.ROUTE, dialed=True)
                except OSError as exc:
                    failures += 1
                    log.debug("route to %s failed: %s", url, exc)
                    if not explicit and failures > cfg.connect_retries:
                        log.info("giving up on gossiped route %s", url)
                        return
                if url in core.self_urls:
                    return
                await self._backoff(failures)
        finally:
            self._dialing.discard(url)

    async def _serve_stream(
        self,
        stream: trio.abc.Stream,
        kind: ConnectionKind = ConnectionKind.CLIENT,
        *,
        dialed: bool = False,
        expected_cluster: str | None = None,
    ) -> None:
        """Run one connection: a reader and a writer task, then clean up whatever happened."""
        core = self._core
        conn = core.open_connection(
            trio.current_time(), kind, dialed=dialed, expected_cluster=expected_cluster
        )
        h = _Handle(conn, stream)
        conn.shell = h
        try:
            async with trio.open_nursery() as nursery:
                h.scope = nursery.cancel_scope
                nursery.start_soon(self._writer, h)
                nursery.start_soon(self._reader, h)
                self._after_core()
        except Exception as exc:  # a per-connection failure never takes the node down
            log.debug("connection %d ended: %r", conn.id, exc)
        finally:
            if conn.close_reason:
                log.info("connection %d closed: %s", conn.id, conn.close_reason)
            core.connection_lost(conn)
            conn.shell = None
            await trio.aclose_forcefully(stream)
            if self._stopping and not core.conns:
                self._drained.set()

    async def _reader(self, h: _Handle) -> None:
        core = self._core
        conn = h.conn
        stream = h.stream
        while conn.state < ConnState.CLOSING:
            try:
                data = await stream.receive_some(_RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                assert h.scope is not None
                h.scope.cancel()
                return
            core.receive_data(conn, data, trio.current_time())
            self._after_core()
            if core.routes and conn.kind is not ConnectionKind.ROUTE:
                await self._wait_routes_drained()

    async def _wait_routes_drained(self) -> None:
        """Back-pressure: routes are never dropped for being slow; their publishers wait."""
        core = self._core
        limit = self.config.max_pending_bytes
        while any(core.pending_bytes(c) > limit for c in core.routes.values()):
            await self._route_drained.wait()

    async def _writer(self, h: _Handle) -> None:
        core = self._core
        conn = h.conn
        stream = h.stream
        while True:
            await h.wake.wait()
            h.wake = trio.Event()
            if conn.out or conn.keyed:
                data = core.take_output(conn)
                try:
                    await stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
                if conn.kind is ConnectionKind.ROUTE:
                    self._route_drained.set()
                    self._route_drained = trio.Event()
            if conn.state >= ConnState.CLOSING and not (conn.out or conn.keyed):
                break
        assert h.scope is not None
        h.scope.cancel()

    # -- public API ---------------------------------------------------------------------------

    def statistics(self) -> Statistics:
        """A frozen snapshot of the node's counters."""
        return self._core.statistics()

    def account_statistics(self, account: str) -> AccountStatistics:
        """Counters of ``account`` alone; nothing of another account is included."""
        return self._core.account_statistics(account)

    async def wait_gateways(self, outbound: int, inbound: int = 0) -> None:
        """Wait until this node has at least ``outbound`` outbound and ``inbound`` inbound
        gateway connections."""
        core = self._core
        while len(core.outbound) < outbound or len(core.inbound) < inbound:
            await self._gateways_event.wait()

    async def flush_gateways(self) -> None:
        """A round trip on every gateway connection, both directions: when this returns,
        each peer has processed everything this node sent it before the call."""
        core = self._core
        await self._ping_all([*core.outbound.values(), *core.inbound.values()])

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
        while len(self._core.routes) < n:
            await self._routes_event.wait()

    async def flush_routes(self) -> None:
        """A round trip on every route: when this returns, each peer has processed
        everything this node sent it before the call (interest included)."""
        await self._ping_all(list(self._core.routes.values()))

    def gatewayz(self) -> dict[str, Any]:
        """Gateway state shaped like nats-server's ``/gatewayz``: per remote cluster, the
        connection and each account's interest mode, no-interest count and subscriptions."""
        core = self._core
        cfg = self.config
        threshold = cfg.interest_only_threshold

        def connection(c: Connection) -> dict[str, Any]:
            return {
                "name": c.peer,
                "cid": c.id,
                "rtt": c.rtt,
                "in_msgs": c.messages_in,
                "out_msgs": c.messages_out,
                "in_bytes": c.bytes_in,
                "out_bytes": c.bytes_out,
            }

        outbound: dict[str, Any] = {}
        for cluster, c in sorted(core.outbound.items()):
            oi = c.out_interest
            assert oi is not None
            outbound[cluster] = {
                "connection": connection(c),
                "accounts": [
                    {
                        "name": a,
                        "interest_mode": oi.mode(a).value,
                        "no_interest_count": oi.no_interest_count(a),
                        "interest_only_threshold": threshold,
                        "num_subs": oi.num_subs(a),
                    }
                    for a in sorted(oi.accounts())
                ],
            }
        inbound: dict[str, list[Any]] = {}
        for c in core.inbound.values():
            ii = c.in_interest
            assert ii is not None
            assert c.remote_cluster is not None
            inbound.setdefault(c.remote_cluster, []).append(
                {
                    "connection": connection(c),
                    "accounts": [
                        {
                            "name": a,
                            "interest_mode": ii.mode(a).value,
                            "no_interest_count": ii.no_interest_count(a),
                            "interest_only_threshold": threshold,
                            "num_subs": len(idx) if (idx := core.graph.index(a)) else 0,
                        }
                        for a in sorted(ii.accounts())
                    ],
                }
            )
        return {
            "name": cfg.name,
            "cluster": cfg.cluster,
            "outbound_gateways": outbound,
            "inbound_gateways": inbound,
        }

    @asynccontextmanager
    async def connect_local(
        self, *, name: str | None = None, token: str | None = None, role: Role = Role.CLIENT
    ) -> AsyncIterator[Client]:
        """An in-process client for the host application: no sockets, same protocol."""
        from .client import _connect_stream

        if self._nursery is None:
            raise RuntimeError("the gateway is not running")
        ours, theirs = trio.testing.lockstep_stream_pair()
        self._nursery.start_soon(self._serve_stream, theirs)
        async with _connect_stream(ours, name=name, token=token, role=role) as client:
            yield client

    def attach_replicant(self, adapter: ReplicantAdapter, *, token: str | None = None) -> None:
        """Run ``adapter`` with an in-process :class:`~meshgate.ReplicantLink` to this node
        (in the node's nursery, until the node stops).  Needs ``replicants=True``."""
        from .replicant import open_replicant_link

        if self._nursery is None:
            raise RuntimeError("the gateway is not running")
        if not self.config.replicants:
            raise RuntimeError("attach_replicant needs GatewayConfig(replicants=True)")

        async def run() -> None:
            async with (
                self.connect_local(name=adapter.name, token=token, role=Role.REPLICANT) as c,
                open_replicant_link(c, adapter.name) as link,
            ):
                await adapter.run(link)

        self._nursery.start_soon(run)

    async def aclose(self) -> None:
        """Stop: every connection gets a shutting-down error, is flushed briefly, then closed."""
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
    async with trio.open_nursery() as nursery:
        gw = Gateway(config)
        await nursery.start(gw.run)
        try:
            yield gw
        finally:
            with trio.CancelScope(shield=True):
                await gw.aclose()
            nursery.cancel_scope.cancel()
