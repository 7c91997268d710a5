"""What a running node shows of itself: counters and typed snapshots shaped like
nats-server's monitoring (``/varz``, ``/connz``, ``/routez``, ``/gatewayz``, ...).

:class:`Observer` builds them from the core's public queries and views; it is what
``monitor.py`` serves over HTTP (an :class:`~meshgate.monitor.Observable`).
"""

from __future__ import annotations

__all__ = ["Observer"]

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._node import _views
from .._stats import (
    AccountInfo,
    AccountStatistics,
    ConnectionInfo,
    RouteInfo,
    ServerInfo,
    Statistics,
    SubscriptionsInfo,
)
from .._version import __version__

if TYPE_CHECKING:
    from .._game import GameInfo, GameLayer
    from .._node import NodeCore
    from ..config import GatewayConfig
    from ._writer import Writer


class Observer:
    """Counters and snapshots of one node."""

    def __init__(
        self, config: GatewayConfig, core: NodeCore, game: GameLayer | None, writer: Writer
    ) -> None:
        #: the node's configuration (replaced by the node on reconfigure)
        self.config = config
        self._core = core
        self._game = game
        self._writer = writer
        #: when the node was made (ISO 8601, UTC) and the wall clock then; read once here
        self.started_wall = time.time()
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_wall))
        self._started_monotonic: float | None = None
        self._urls: tuple[str | None, str | None, str | None] = (None, None, None)
        self._client_urls: tuple[str, ...] = ()
        #: the counters of each QUIC listener, by bound URL (set by the node)
        self.quic_stats: Callable[[], dict[str, dict[str, int]]] = dict

    def bound(
        self,
        *,
        client_url: str | None,
        cluster_url: str | None,
        gateway_url: str | None,
        client_urls: tuple[str, ...] = (),
    ) -> None:
        """The node's listeners are bound at these URLs."""
        self._urls = (client_url, cluster_url, gateway_url)
        self._client_urls = client_urls

    def serving(self) -> None:
        """The node serves from now on (uptime counts from here)."""
        self._started_monotonic = trio.current_time()

    def statistics(self) -> Statistics:
        """A frozen snapshot of the node's counters (the core's, and the links the
        writer closed as slow consumers)."""
        slow = self._writer.slow_links()
        return attrs.evolve(
            self._core.statistics(),
            stalled_links=sum(slow.values()),
            stalled_routes=slow["routes"],
            stalled_gateways=slow["gateways"],
            stalled_backbone=slow["leafs"],
        )

    def account_statistics(self, account: str) -> AccountStatistics:
        """Counters of ``account`` alone; nothing of another account is included."""
        return self._core.account_statistics(account)

    @property
    def backbone_server(self) -> str | None:
        """The nats-server the backbone connection is attached to (its server name),
        or None while it is not attached."""
        return self._core.backbone_server()

    def gatewayz(self) -> dict[str, Any]:
        """Gateway state shaped like nats-server's ``/gatewayz``; each connection also
        says what it holds (``pending_bytes``), whether it is ``stalled``, how often it
        stalled (``stalls``) and how often a link to that cluster (this direction) was
        closed as a slow consumer (``slow_consumers``)."""
        out = _views.gatewayz(self._core)
        conns = {c.id: c for c in self._core.gateway_connections()}
        rows = [g["connection"] for g in out["outbound_gateways"].values()]
        rows += [g["connection"] for gs in out["inbound_gateways"].values() for g in gs]
        for row in rows:
            conn = conns.get(row["cid"])
            if conn is not None:
                link = self._writer.link_state(conn)
                row.update(
                    pending_bytes=self._core.pending_bytes(conn),
                    stalled=link.stalled,
                    stalls=link.stalls,
                    slow_consumers=link.slow_consumers,
                )
        return out

    @property
    def uptime(self) -> float:
        """Seconds since the node started serving (0 before)."""
        if self._started_monotonic is None:
            return 0.0
        return trio.current_time() - self._started_monotonic

    def varz(self) -> ServerInfo:
        """Identity, limits, uptime and counters (nats-server's ``/varz``)."""
        cfg = self.config
        core = self._core
        client_url, cluster_url, gateway_url = self._urls
        return ServerInfo(
            server_name=cfg.name,
            cluster=cfg.cluster,
            version=__version__,
            start=self.started_at,
            uptime_seconds=round(self.uptime, 3),
            client_url=client_url,
            cluster_url=cluster_url,
            gateway_url=gateway_url,
            max_payload=cfg.max_payload,
            max_pending=cfg.max_pending_bytes,
            max_connections=cfg.max_connections,
            ping_interval=cfg.ping_interval,
            interest_mode=cfg.interest_mode,
            interest_only_threshold=cfg.interest_only_threshold,
            accounts=core.account_count(),
            self_urls=core.own_route_urls(),
            gateway_control_msgs=core.gateway_control_msgs,
            statistics=self.statistics(),
            client_urls=self._client_urls,
            quic=self.quic_stats(),
        )

    def connz(self) -> list[ConnectionInfo]:
        """Every client and replicant connection (nats-server's ``/connz``)."""
        peer_address = self._writer.peer_address
        out = []
        for row in _views.connections(self._core, trio.current_time()):
            peer = peer_address(row.cid)
            if peer is not None:
                row = attrs.evolve(row, ip=peer[0], port=peer[1])
            out.append(row)
        return out

    def routez(self, *, interest: bool = False) -> list[RouteInfo]:
        """Every route of this node, with the peer's name and URL (``/routez``), its stall
        state and its peer's slow-consumer closes; with ``interest``, each route's
        interest entries ``(account, pattern, queue, weight)``."""
        conns = {c.id: c for c in self._core.route_connections()}
        out = []
        for row in _views.routes(self._core, interest=interest):
            conn = conns.get(row.rid)
            if conn is not None:
                link = self._writer.link_state(conn)
                row = attrs.evolve(
                    row,
                    stalled=link.stalled,
                    stalls=link.stalls,
                    slow_consumers=link.slow_consumers,
                )
            out.append(row)
        return out

    def accountz(self) -> list[AccountInfo]:
        """Every account this node has seen, with its counters."""
        return _views.accounts(self._core)

    def subsz(self) -> SubscriptionsInfo:
        """The interest graph's size and match cache (``/subsz``)."""
        return _views.subscriptions(self._core)

    def game(self) -> GameInfo | None:
        """The game layer: entity ownership, held inputs, provisional records and their
        evictions (None unless ``replicants=True``)."""
        return self._game.info() if self._game is not None else None
