"""The trio shell around the sans-IO node core: listeners, per-connection tasks, timers."""

from __future__ import annotations

__all__ = ["Gateway", "open_gateway"]

import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import trio
import trio.testing

from ._node import Connection, ConnState, NodeCore
from ._stats import AccountStatistics, Statistics
from .config import GatewayConfig
from .protocol import ConnectionKind
from .transports import connect_stream, get_transport

if TYPE_CHECKING:
    from .client import Client

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
                for url in cfg.routes:
                    self._start_dialer(url, explicit=True)
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
        if core.dial_requests:
            for url in core.dial_requests:
                self._start_dialer(url, explicit=False)
            core.dial_requests.clear()
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
                delay = cfg.reconnect_wait * min(10.0, 1.5 ** min(failures, 8))
                await trio.sleep(delay * random.uniform(0.5, 1.0))
        finally:
            self._dialing.discard(url)

    async def _serve_stream(
        self,
        stream: trio.abc.Stream,
        kind: ConnectionKind = ConnectionKind.CLIENT,
        *,
        dialed: bool = False,
    ) -> None:
        """Run one connection: a reader and a writer task, then clean up whatever happened."""
        core = self._core
        conn = core.open_connection(trio.current_time(), kind, dialed=dialed)
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
            core.receive_data(conn, data)
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

    async def wait_routes(self, n: int) -> None:
        """Wait until this node has routes to at least ``n`` peers of its cluster."""
        while len(self._core.routes) < n:
            await self._routes_event.wait()

    async def flush_routes(self) -> None:
        """A round trip on every route: when this returns, each peer has processed
        everything this node sent it before the call (interest included)."""
        core = self._core
        pending = list(core.routes.values())
        if not pending:
            await trio.lowlevel.checkpoint()
            return
        done = trio.Event()
        left = len(pending)

        def one() -> None:
            nonlocal left
            left -= 1
            if left == 0:
                done.set()

        for c in pending:
            core.ping(c, one)
        self._after_core()
        await done.wait()

    def gatewayz(self) -> dict[str, Any]:
        """Gateway state in the shape of nats-server's ``/gatewayz`` (no gateways yet)."""
        return {"name": self.config.name, "outbound_gateways": {}, "inbound_gateways": {}}

    @asynccontextmanager
    async def connect_local(
        self, *, name: str | None = None, token: str | None = None
    ) -> AsyncIterator[Client]:
        """An in-process client for the host application: no sockets, same protocol."""
        from .client import _connect_stream

        if self._nursery is None:
            raise RuntimeError("the gateway is not running")
        ours, theirs = trio.testing.lockstep_stream_pair()
        self._nursery.start_soon(self._serve_stream, theirs)
        async with _connect_stream(ours, name=name, token=token) as client:
            yield client

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
