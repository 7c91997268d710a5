"""The HTTP monitoring endpoint: JSON like nats-server's, and Prometheus text.

Paths: ``/varz``, ``/connz``, ``/routez``, ``/gatewayz``, ``/subsz``, ``/accountz``,
``/gamez``, ``/healthz`` (JSON; field names follow nats-server where the concept is the
same) and ``/metrics`` (Prometheus text format).  Every body is built from the
node's public snapshots (:meth:`~meshgate.Gateway.varz` and friends, the
:class:`Observable` protocol); this module only does HTTP.  HTTP parsing is h11's; a bad request gets
400, an unknown path 404, any method but GET/HEAD 405.  Each request is handled in
its own task with a deadline and a size limit, so monitoring never blocks routing.
"""

from __future__ import annotations

__all__ = [
    "MONITOR_PATHS",
    "Observable",
    "escape_label",
    "go_duration",
    "render_metrics",
    "serve_monitor",
    "uptime_text",
]

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, urlsplit

import attrs
import h11
import trio

from ._compiled import CORE

if TYPE_CHECKING:
    from ._game import GameInfo
    from ._stats import (
        AccountInfo,
        ConnectionInfo,
        RouteInfo,
        ServerInfo,
        Statistics,
        SubscriptionsInfo,
    )
    from .config import GatewayConfig

#: Paths the endpoint serves.
MONITOR_PATHS = (
    "/varz",
    "/connz",
    "/routez",
    "/gatewayz",
    "/subsz",
    "/accountz",
    "/gamez",
    "/healthz",
    "/metrics",
)


class Observable(Protocol):
    """What the endpoint reads of a node: its snapshots (a :class:`~meshgate.Gateway`
    is one)."""

    @property
    def config(self) -> GatewayConfig:
        """The node's configuration (its name and cluster label every body)."""

    @property
    def backbone_server(self) -> str | None:
        """The nats-server the backbone is attached to, or None."""

    def statistics(self) -> Statistics:
        """The node's counters."""

    def varz(self) -> ServerInfo:
        """Identity, limits, uptime and counters."""

    def connz(self) -> list[ConnectionInfo]:
        """Every client and replicant connection."""

    def routez(self) -> list[RouteInfo]:
        """Every route."""

    def gatewayz(self) -> dict[str, Any]:
        """Gateway state shaped like nats-server's ``/gatewayz``."""

    def subsz(self) -> SubscriptionsInfo:
        """The interest graph's size and match cache."""

    def accountz(self) -> list[AccountInfo]:
        """Every account, with its counters."""

    def game(self) -> GameInfo | None:
        """The game layer's snapshot, or None."""


_REQUEST_DEADLINE = 10.0
_MAX_REQUEST = 16 * 1024


def go_duration(seconds: float) -> str:
    """A duration as Go's ``time.Duration`` prints it (``"1.5ms"``, ``"2m3.5s"``), the
    form nats-server's monitoring uses for ``rtt``."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{_trim(ns / 1e3)}\u00b5s"
    if ns < 1_000_000_000:
        return f"{sign}{_trim(ns / 1e6)}ms"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    secs = _trim(rest / 1e9)
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{sign}{minutes}m{secs}s"
    return f"{sign}{secs}s"


def _trim(x: float) -> str:
    return f"{x:.9f}".rstrip("0").rstrip(".")


def uptime_text(seconds: float) -> str:
    """Whole seconds as nats-server prints ``uptime`` and ``idle``: ``"1d2h3m4s"``."""
    s = int(seconds)
    mins, hours, days = s // 60, s // 3600, s // 86400
    years = days // 365
    if years:
        return f"{years}y{days % 365}d{hours % 24}h{mins % 60}m{s % 60}s"
    if days:
        return f"{days}d{hours % 24}h{mins % 60}m{s % 60}s"
    if hours:
        return f"{hours}h{mins % 60}m{s % 60}s"
    if mins:
        return f"{mins}m{s % 60}s"
    return f"{s}s"


def _rfc3339(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{int(wall % 1 * 1e6):06d}Z"


def escape_label(value: str) -> str:
    """A Prometheus label value, escaped (backslash, double quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _varz(gw: Observable) -> dict[str, Any]:
    v = gw.varz()
    st = v.statistics
    game = gw.game()
    host, _, port = (v.client_url or "").rpartition("://")[2].rpartition(":")
    return {
        "server_id": f"meshgate-{v.server_name}",
        "server_name": v.server_name,
        "version": v.version,
        # which node core runs: "compiled" (mypyc) or "pure" (Python)
        "core": CORE,
        "host": host,
        "port": int(port) if port.isdigit() else 0,
        "cluster": {"name": v.cluster, "urls": [v.cluster_url] if v.cluster_url else []},
        "gateway": {"name": v.cluster, "url": v.gateway_url},
        "now": _rfc3339(time.time()),
        "start": v.start,
        "uptime": uptime_text(v.uptime_seconds),
        "uptime_seconds": v.uptime_seconds,
        "max_payload": v.max_payload,
        "max_pending": v.max_pending,
        "max_connections": v.max_connections,
        # nats-server's units: a time.Duration in nanoseconds
        "ping_interval": int(v.ping_interval * 1e9),
        "connections": st.clients,
        # route peers, as nats-server counts its remotes
        "routes": st.routes,
        "remotes": st.routes,
        "outbound_gateways": st.outbound_gateways,
        "inbound_gateways": st.inbound_gateways,
        # the backbone connection to a nats-server, as nats-server counts leaf nodes
        "leafnodes": 1 if gw.backbone_server is not None else 0,
        "backbone": gw.backbone_server,
        "subscriptions": st.subscriptions,
        "in_msgs": st.messages_in,
        "out_msgs": st.messages_out,
        # payload bytes, as nats-server counts them; the wire separately
        "in_bytes": st.payload_bytes_in,
        "out_bytes": st.payload_bytes_out,
        "in_wire_bytes": st.bytes_in,
        "out_wire_bytes": st.bytes_out,
        "slow_consumers": st.slow_consumers,
        # links closed as slow consumers (stuck), in all and by kind as nats-server
        # breaks its slow consumers down
        "stalled_links": st.stalled_links,
        "slow_consumer_stats": {
            "clients": st.slow_consumers,
            "routes": st.stalled_routes,
            "gateways": st.stalled_gateways,
            "leafs": st.stalled_backbone,
        },
        "dropped_msgs": st.dropped_messages,
        "coalesced_msgs": st.coalesced_messages,
        "resyncs": st.resyncs,
        "gateway_control_msgs": v.gateway_control_msgs,
        "protocol_errors": st.protocol_errors,
        "auth_failures": st.auth_failures,
        "permission_violations": st.permission_violations,
        # game inputs whose relay subject is not speculative (the game layer's count)
        "relays_refused": game.relays_refused if game is not None else 0,
        "interest_mode": v.interest_mode,
        "interest_only_threshold": v.interest_only_threshold,
        "accounts": v.accounts,
    }


def _connz(gw: Observable, query: dict[str, list[str]]) -> dict[str, Any]:
    try:
        limit = max(0, min(int(query.get("limit", ["1024"])[0]), 100_000))
        offset = max(0, int(query.get("offset", ["0"])[0]))
    except ValueError:
        raise _BadRequest("limit and offset must be integers") from None
    subs = query.get("subs", ["0"])[0].lower() in ("1", "true", "detail")
    clients = gw.connz()
    now = time.time()
    rows = []
    for c in clients[offset : offset + limit]:
        row = attrs.asdict(c)
        # nats-server's meanings and units: payload bytes, times as RFC 3339 and
        # durations as text; the wire counts and seconds keep their own names
        row.update(
            in_bytes=c.in_payload_bytes,
            out_bytes=c.out_payload_bytes,
            in_wire_bytes=c.in_bytes,
            out_wire_bytes=c.out_bytes,
            start=_rfc3339(now - c.uptime_seconds),
            last_activity=_rfc3339(now - c.idle_seconds),
            uptime=uptime_text(c.uptime_seconds),
            idle=uptime_text(c.idle_seconds),
            rtt=go_duration(c.rtt) if c.rtt is not None else "",
            version=c.client_version,
            ip=c.ip or "",
            port=c.port or 0,
        )
        for key in ("in_payload_bytes", "out_payload_bytes", "client_version"):
            del row[key]
        if subs:
            row["subscriptions_list"] = list(c.subscriptions_list)
        else:
            del row["subscriptions_list"]
        rows.append(row)
    return {
        "server_id": f"meshgate-{gw.config.name}",
        "server_name": gw.config.name,
        "now": _rfc3339(now),
        "num_connections": len(rows),
        "total": len(clients),
        "offset": offset,
        "limit": limit,
        "connections": rows,
    }


def _routez(gw: Observable) -> dict[str, Any]:
    routes = gw.routez()
    rows = []
    for r in routes:
        row = attrs.asdict(r)
        row.update(
            in_bytes=r.in_payload_bytes,
            out_bytes=r.out_payload_bytes,
            in_wire_bytes=r.in_bytes,
            out_wire_bytes=r.out_bytes,
            rtt=go_duration(r.rtt) if r.rtt is not None else "",
        )
        del row["in_payload_bytes"], row["out_payload_bytes"]
        rows.append(row)
    return {
        "server_id": f"meshgate-{gw.config.name}",
        "server_name": gw.config.name,
        "now": _rfc3339(time.time()),
        "cluster": gw.config.cluster,
        "num_routes": len(routes),
        "routes": rows,
    }


def _subsz(gw: Observable) -> dict[str, Any]:
    return {"server_name": gw.config.name, **attrs.asdict(gw.subsz())}


def _accountz(gw: Observable) -> dict[str, Any]:
    return {"server_name": gw.config.name, "accounts": [attrs.asdict(a) for a in gw.accountz()]}


def _gamez(gw: Observable) -> dict[str, Any]:
    game = gw.game()
    return {"server_name": gw.config.name, "game": attrs.asdict(game) if game else None}


def render_metrics(gw: Observable) -> str:
    """The node's counters in the Prometheus text exposition format."""
    st = gw.statistics()
    name = gw.config.name
    cluster = gw.config.cluster
    labels = f'server="{escape_label(name)}",cluster="{escape_label(cluster)}"'
    metrics: list[tuple[str, str, str, float]] = [
        ("meshgate_connections", "gauge", "client connections", st.clients),
        ("meshgate_routes", "gauge", "route connections", st.routes),
        (
            "meshgate_outbound_gateways",
            "gauge",
            "outbound gateway connections",
            st.outbound_gateways,
        ),
        ("meshgate_inbound_gateways", "gauge", "inbound gateway connections", st.inbound_gateways),
        ("meshgate_subscriptions", "gauge", "client subscriptions", st.subscriptions),
        ("meshgate_messages_in_total", "counter", "messages received", st.messages_in),
        ("meshgate_messages_out_total", "counter", "messages sent", st.messages_out),
        ("meshgate_bytes_in_total", "counter", "bytes received", st.bytes_in),
        ("meshgate_bytes_out_total", "counter", "bytes sent", st.bytes_out),
        ("meshgate_slow_consumers_total", "counter", "slow-consumer episodes", st.slow_consumers),
        (
            "meshgate_stalled_links_total",
            "counter",
            "route, gateway and backbone links closed as slow consumers",
            st.stalled_links,
        ),
        (
            "meshgate_dropped_messages_total",
            "counter",
            "messages dropped by policy",
            st.dropped_messages,
        ),
        (
            "meshgate_coalesced_messages_total",
            "counter",
            "keyed frames replaced",
            st.coalesced_messages,
        ),
        (
            "meshgate_protocol_errors_total",
            "counter",
            "connections closed for errors",
            st.protocol_errors,
        ),
        ("meshgate_auth_failures_total", "counter", "failed authentications", st.auth_failures),
    ]
    out = []
    for metric, kind, help_text, value in metrics:
        out.append(f"# HELP {metric} {help_text}")
        out.append(f"# TYPE {metric} {kind}")
        out.append(f"{metric}{{{labels}}} {value}")
    return "\n".join(out) + "\n"


class _BadRequest(Exception):
    pass


def _route(gw: Observable, target: str) -> tuple[int, str, bytes]:
    parts = urlsplit(target)
    path = parts.path.rstrip("/") or "/"
    query = parse_qs(parts.query)
    handlers: dict[str, Callable[[], Any]] = {
        "/varz": lambda: _varz(gw),
        "/connz": lambda: _connz(gw, query),
        "/routez": lambda: _routez(gw),
        "/gatewayz": gw.gatewayz,
        "/subsz": lambda: _subsz(gw),
        "/accountz": lambda: _accountz(gw),
        "/gamez": lambda: _gamez(gw),
        "/healthz": lambda: {"status": "ok"},
    }
    if path == "/metrics":
        return 200, "text/plain; version=0.0.4", render_metrics(gw).encode()
    if path == "/":
        return 200, "application/json", json.dumps({"paths": list(MONITOR_PATHS)}).encode()
    handler = handlers.get(path)
    if handler is None:
        return 404, "application/json", json.dumps({"error": f"unknown path {path}"}).encode()
    try:
        body = handler()
    except _BadRequest as exc:
        return 400, "application/json", json.dumps({"error": str(exc)}).encode()
    return 200, "application/json", json.dumps(body, indent=2, default=str).encode()


async def _handle(gw: Observable, stream: trio.abc.Stream) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_REQUEST)

    async def send(event: Any) -> None:
        data = conn.send(event)
        if data:
            await stream.send_all(data)

    async def respond(status: int, ctype: str, body: bytes, head: bool = False) -> None:
        headers = [
            ("content-type", ctype),
            ("content-length", str(len(body))),
            ("connection", "close"),
            ("server", "meshgate"),
        ]
        await send(h11.Response(status_code=status, headers=headers))
        if not head:
            await send(h11.Data(data=body))
        await send(h11.EndOfMessage())

    with trio.move_on_after(_REQUEST_DEADLINE):
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(4096)
                    conn.receive_data(bytes(data))
                    continue
                if isinstance(event, h11.Request):
                    method = event.method.decode()
                    if method not in ("GET", "HEAD"):
                        await respond(405, "application/json", b'{"error": "only GET and HEAD"}')
                    else:
                        status, ctype, body = _route(gw, event.target.decode("ascii", "replace"))
                        await respond(status, ctype, body, head=method == "HEAD")
                return
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                try:
                    await respond(
                        exc.error_status_hint, "text/plain", f"bad request: {exc}\n".encode()
                    )
                except (h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
    await trio.aclose_forcefully(stream)


async def serve_monitor(
    gw: Observable, listen: str, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve the monitoring endpoint for ``gw`` (a node, or anything :class:`Observable`)
    at ``listen`` (``host:port``) until cancelled."""
    from .transports import TCPTransport

    async def handler(stream: trio.abc.Stream) -> None:
        try:
            await _handle(gw, stream)
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        bound = await nursery.start(TCPTransport().serve, listen, handler)
        task_status.started("http://" + bound.removeprefix("tcp://"))
