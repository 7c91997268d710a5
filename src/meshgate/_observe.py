"""What a running node shows of itself: counters and typed snapshots shaped like
nats-server's monitoring (``/varz``, ``/connz``, ``/routez``, ``/gatewayz``, ...).

A mixin of :class:`~meshgate.Gateway` (the shell); ``monitor.py`` serves these over HTTP.
"""

from __future__ import annotations

__all__ = ["Observing"]

from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._node import _views
from ._stats import (
    AccountInfo,
    AccountStatistics,
    ConnectionInfo,
    RouteInfo,
    ServerInfo,
    Statistics,
    SubscriptionsInfo,
)
from ._version import __version__

if TYPE_CHECKING:
    from ._game import GameInfo, GameLayer
    from ._node import NodeCore
    from .config import GatewayConfig


class Observing:
    """Counters and snapshots of the node."""

    config: GatewayConfig
    _core: NodeCore
    _game: GameLayer | None
    started_at: str
    _started_monotonic: float | None
    client_url: str | None
    cluster_url: str | None
    gateway_url: str | None

    def statistics(self) -> Statistics:
        """A frozen snapshot of the node's counters."""
        return self._core.statistics()

    def account_statistics(self, account: str) -> AccountStatistics:
        """Counters of ``account`` alone; nothing of another account is included."""
        return self._core.account_statistics(account)

    @property
    def backbone_server(self) -> str | None:
        """The nats-server this node's backbone connection is attached to (its server
        name), or None while it is not attached."""
        conn = self._core.backbone.conn
        return conn.peer if conn is not None else None

    def gatewayz(self) -> dict[str, Any]:
        """Gateway state shaped like nats-server's ``/gatewayz``: per remote cluster, the
        connection and each account's interest mode, no-interest count and subscriptions;
        ``known_urls`` maps each remote cluster to the gateway URLs this node knows."""
        return _views.gatewayz(self._core)

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
        return ServerInfo(
            server_name=cfg.name,
            cluster=cfg.cluster,
            version=__version__,
            start=self.started_at,
            uptime_seconds=round(self.uptime, 3),
            client_url=self.client_url,
            cluster_url=self.cluster_url,
            gateway_url=self.gateway_url,
            max_payload=cfg.max_payload,
            max_pending=cfg.max_pending_bytes,
            max_connections=cfg.max_connections,
            ping_interval=cfg.ping_interval,
            interest_mode=cfg.interest_mode,
            interest_only_threshold=cfg.interest_only_threshold,
            accounts=len(core.accounts),
            self_urls=tuple(sorted(core.routes.self_urls)),
            gateway_control_msgs=core.fanout.gateway_control_msgs,
            statistics=core.statistics(),
        )

    def connz(self) -> list[ConnectionInfo]:
        """Every client and replicant connection (nats-server's ``/connz``)."""
        core = self._core
        rows = _views.connections(core, trio.current_time())
        out = []
        for row in rows:
            conn = core.conns.get(row.cid)
            h = conn.shell if conn is not None else None
            if h is not None and h.peer is not None:
                row = attrs.evolve(row, ip=h.peer[0], port=h.peer[1])
            out.append(row)
        return out

    def routez(self, *, interest: bool = False) -> list[RouteInfo]:
        """Every route of this node, with the peer's name and URL (``/routez``); with
        ``interest``, each route's interest entries ``(account, pattern, queue, weight)``."""
        return _views.routes(self._core, interest=interest)

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
