"""What a running node shows of itself: counters and typed snapshots shaped like
nats-server's monitoring (``/varz``, ``/connz``, ``/routez``, ``/gatewayz``, ...).

:class:`Observer` builds them from the core's public queries and views; it is what
``monitor.py`` serves over HTTP (an :class:`~meshgate.monitor.Observable`).
"""

from __future__ import annotations

__all__ = ["Observer"]

import os
import resource
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._node import InboundGateway, OutboundGateway, PeerConnection, _views
from .._stats import (
    AccountInfo,
    AccountStatistics,
    ConnectionInfo,
    RouteInfo,
    ServerInfo,
    Statistics,
    SubscriptionsInfo,
)
from .._timefmt import go_duration, rfc3339, uptime_text
from .._version import __version__

if TYPE_CHECKING:
    from .._game import GameInfo, GameLayer
    from .._node import NodeCore
    from ..config import GatewayConfig
    from ._dialers import Dialers, DialState
    from ._writer import Writer

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss() -> int:
    """The process's resident memory in bytes (Linux: now; elsewhere: the peak)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if os.uname().sysname == "Darwin" else peak * 1024


def _split_host_port(url: str | None) -> tuple[str, int]:
    host, _, port = (url or "").rpartition("://")[2].rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() else 0


class Observer:
    """Counters and snapshots of one node."""

    def __init__(
        self,
        config: GatewayConfig,
        core: NodeCore,
        game: GameLayer | None,
        writer: Writer,
        dialers: Dialers,
    ) -> None:
        #: the node's configuration (replaced by the node on reconfigure)
        self.config = config
        self._core = core
        self._game = game
        self._writer = writer
        self._dialers = dialers
        #: client connections accepted since the node started (the node counts them)
        self.total_connections = 0
        #: the monitoring endpoint's URL, once it listens (the node sets it)
        self.monitor_url: str | None = None
        self._config_loaded = time.time()
        self._cpu_sample = (time.monotonic(), time.process_time())
        self._cpu = 0.0
        #: when the node was made (ISO 8601, UTC) and the wall clock then; read once here
        self.started_wall = time.time()
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_wall))
        self._started_monotonic: float | None = None
        self._urls: tuple[str | None, str | None, str | None] = (None, None, None)
        self._client_urls: tuple[str, ...] = ()
        #: the counters of each QUIC listener, by bound URL (set by the node)
        self.quic_stats: Callable[[], dict[str, dict[str, int]]] = dict
        #: the node's link compression counters (set by the gateway)
        self.compression_stats: Callable[[], dict[str, int]] = dict

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

    def config_loaded(self) -> None:
        """The configuration was (re)loaded now (``config_load_time``)."""
        self._config_loaded = time.time()

    def dial_states(self) -> list[DialState]:
        """What each route, gateway and backbone dialer is doing (a copy)."""
        return self._dialers.states()

    def readiness(self) -> list[str]:
        """What the node waits for before it is ready (``/healthz?ready=1``): each
        configured route seed, remote cluster and the backbone that is not connected,
        with its last dial error; empty when ready."""
        cfg = self.config
        core = self._core
        if self._started_monotonic is None:
            return ["the node is not serving yet"]
        states = self._dialers.states()
        errors = {(d.kind, d.target): d.last_error for d in states}
        dialed = {d.target for d in states if d.kind == "route" and d.state == "connected"}

        def routed(url: str) -> bool:
            full = url if "://" in url else f"tcp://{url}"
            return url in dialed or any(
                core.has_route_to(u) or core.is_own_route_url(u) for u in (url, full)
            )

        def why(kind: str, target: str) -> str:
            err = errors.get((kind, target))
            return f"{kind} {target}" + (f" ({err})" if err else "")

        waiting = []
        if cfg.cluster_listen is not None:
            waiting += [why("route", url) for url in cfg.routes if not routed(url)]
        if cfg.gateway_listen is not None:
            waiting += [
                why("gateway", cluster)
                for cluster in sorted(cfg.gateways)
                if cluster != cfg.cluster and not core.has_outbound_gateway(cluster)
            ]
        if cfg.backbone and core.backbone_server() is None:
            waiting.append(why("backbone", "backbone"))
        return waiting

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
        """Gateway state shaped like nats-server's ``/gatewayz``: its field names, units
        and types (``rtt`` a duration string, times RFC 3339, ``in_bytes``/``out_bytes``
        payload bytes; the wire is ``in_wire_bytes``/``out_wire_bytes``).  Each
        connection also says what it holds (``pending_bytes``), whether it is
        ``stalled``, how often it stalled (``stalls``) and how often a link to that
        cluster (this direction) was closed as a slow consumer (``slow_consumers``).
        ``dials`` gives each outbound dialer's state and last error (a configured remote
        that is down is there, with why)."""
        cfg = self.config
        core = self._core
        out = _views.gatewayz(core)
        conns = {c.id: c for c in core.gateway_connections()}
        now_wall, now = time.time(), trio.current_time() if conns else 0.0
        configured = set(cfg.gateways)
        remotes = [(c, g) for c, g in out["outbound_gateways"].items()]
        remotes += [(c, g) for c, gs in out["inbound_gateways"].items() for g in gs]
        for cluster, remote in remotes:
            remote["configured"] = cluster in configured
            row = remote["connection"]
            row["kind"] = "Gateway"
            row["subscriptions"] = sum(a["num_subs"] for a in remote["accounts"])
            rtt = row["rtt"]
            row["rtt"] = go_duration(rtt) if rtt is not None else ""
            conn = conns.get(row["cid"])
            if conn is None:
                continue
            link = self._writer.link_state(conn)
            ip, port = self._writer.peer_address(conn.id) or ("", 0)
            uptime = max(0.0, now - conn.opened_at)
            idle = max(0.0, now - conn.last_activity)
            row.update(
                ip=ip,
                port=port,
                start=rfc3339(now_wall - uptime),
                last_activity=rfc3339(now_wall - idle),
                uptime=uptime_text(uptime),
                idle=uptime_text(idle),
                pending_bytes=core.pending_bytes(conn),
                stalled=link.stalled,
                stalls=link.stalls,
                slow_consumers=link.slow_consumers,
            )
        host, port = _split_host_port(self._urls[2])
        dials = {
            d.target: {
                "configured": d.configured,
                "state": d.state,
                "failures": d.failures,
                "last_error": d.last_error,
                "last_error_at": rfc3339(d.last_error_at) if d.last_error_at else None,
                "retry_in": go_duration(d.retry_in) if d.retry_in is not None else None,
            }
            for d in self._dialers.states()
            if d.kind == "gateway"
        }
        return {
            "server_id": f"meshgate-{cfg.name}",
            "server_name": cfg.name,
            "now": rfc3339(now_wall),
            # nats-server's ``name`` is the gateway's, which is the cluster's
            "name": cfg.cluster,
            "cluster": cfg.cluster,
            "host": host,
            "port": port,
            "known_urls": out["known_urls"],
            "outbound_gateways": out["outbound_gateways"],
            "inbound_gateways": out["inbound_gateways"],
            "dials": dials,
        }

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
            mem=_rss(),
            cpu=self._cpu_percent(),
            cores=os.cpu_count() or 1,
            total_connections=self.total_connections,
            config_load_time=rfc3339(self._config_loaded),
            client_urls=self._client_urls,
            quic=self.quic_stats(),
            compression=self.compression_stats(),
        )

    def _cpu_percent(self) -> float:
        """CPU use since the previous call (at least a second apart), in percent of one
        core, as nats-server's ``cpu``."""
        wall, cpu = time.monotonic(), time.process_time()
        last_wall, last_cpu = self._cpu_sample
        if wall - last_wall >= 1.0:
            self._cpu = round(100.0 * (cpu - last_cpu) / (wall - last_wall), 1)
            self._cpu_sample = (wall, cpu)
        return self._cpu

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
        now = trio.current_time() if conns else 0.0
        seeds = set(self.config.routes)
        out = []
        for row in _views.routes(self._core, interest=interest):
            conn = conns.get(row.rid)
            if conn is not None:
                link = self._writer.link_state(conn)
                ip, port = self._writer.peer_address(conn.id) or (None, None)
                row = attrs.evolve(
                    row,
                    stalled=link.stalled,
                    stalls=link.stalls,
                    slow_consumers=link.slow_consumers,
                    ip=ip,
                    port=port,
                    uptime_seconds=round(max(0.0, now - conn.opened_at), 3),
                    idle_seconds=round(max(0.0, now - conn.last_activity), 3),
                    is_configured=row.did_solicit and row.url in seeds,
                )
            out.append(row)
        return out

    def accountz(self) -> list[AccountInfo]:
        """Every account this node has seen, with its counters."""
        return _views.accounts(self._core)

    def subsz(self) -> SubscriptionsInfo:
        """The interest graph's size and match cache (``/subsz``)."""
        return _views.subscriptions(self._core)

    def monitor_peers(self) -> list[dict[str, str | None]]:
        """Route and gateway peers with the monitoring URL each announced."""
        cluster = self.config.cluster
        routes = [
            _peer_row("route", c.peer, cluster, c.peer_monitor_url)
            for c in self._core.route_connections()
            if isinstance(c, PeerConnection) and c.peer is not None
        ]
        gateways = [
            _peer_row("gateway", c.peer, c.remote_cluster, c.peer_monitor_url)
            for c in self._core.gateway_connections()
            if isinstance(c, InboundGateway | OutboundGateway) and c.peer is not None
        ]
        return routes + gateways

    def game(self) -> GameInfo | None:
        """The game layer: entity ownership, held inputs, provisional records and their
        evictions (None unless ``replicants=True``)."""
        return self._game.info() if self._game is not None else None


def _peer_row(kind: str, name: str, cluster: str | None, url: str | None) -> dict[str, str | None]:
    return {"kind": kind, "name": name, "cluster": cluster, "monitor_url": url}
