"""The HTTP monitoring endpoint: JSON like nats-server's, and Prometheus text.

Paths: ``/varz``, ``/connz``, ``/routez``, ``/gatewayz``, ``/subsz``, ``/healthz``
(JSON; field names follow nats-server where the concept is the same) and
``/metrics`` (Prometheus text format).  HTTP parsing is h11's; a bad request gets
400, an unknown path 404, any method but GET/HEAD 405.  Each request is handled in
its own task with a deadline and a size limit, so monitoring never blocks routing.
"""

from __future__ import annotations

__all__ = ["MONITOR_PATHS", "render_metrics", "serve_monitor"]

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import h11
import trio

if TYPE_CHECKING:
    from ._gateway import Gateway

#: Paths the endpoint serves.
MONITOR_PATHS = ("/varz", "/connz", "/routez", "/gatewayz", "/subsz", "/healthz", "/metrics")
_REQUEST_DEADLINE = 10.0
_MAX_REQUEST = 16 * 1024


def _varz(gw: Gateway) -> dict[str, Any]:
    core = gw._core
    cfg = gw.config
    st = gw.statistics()
    from ._version import __version__

    return {
        "server_name": cfg.name,
        "version": __version__,
        "cluster": {"name": cfg.cluster, "urls": [gw.cluster_url] if gw.cluster_url else []},
        "gateway": {"name": cfg.cluster, "url": gw.gateway_url},
        "now": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "start": gw.started_at,
        "uptime_seconds": round(time.time() - gw.started_wall, 3),
        "max_payload": cfg.max_payload,
        "max_pending": cfg.max_pending_bytes,
        "max_connections": cfg.max_connections,
        "ping_interval": cfg.ping_interval,
        "connections": st.clients,
        "routes": st.routes,
        "remotes": st.outbound_gateways,
        "outbound_gateways": st.outbound_gateways,
        "inbound_gateways": st.inbound_gateways,
        "subscriptions": st.subscriptions,
        "in_msgs": st.messages_in,
        "out_msgs": st.messages_out,
        "in_bytes": st.bytes_in,
        "out_bytes": st.bytes_out,
        "slow_consumers": st.slow_consumers,
        "dropped_msgs": st.dropped_messages,
        "coalesced_msgs": st.coalesced_messages,
        "resyncs": st.resyncs,
        "gateway_control_msgs": core.gateway_control_msgs,
        "protocol_errors": st.protocol_errors,
        "auth_failures": st.auth_failures,
        "permission_violations": st.permission_violations,
        "interest_mode": cfg.interest_mode,
        "interest_only_threshold": cfg.interest_only_threshold,
        "accounts": len(core._accounts),
    }


def _connz(gw: Gateway, query: dict[str, list[str]]) -> dict[str, Any]:
    from .protocol import ConnectionKind

    core = gw._core
    try:
        limit = max(0, min(int(query.get("limit", ["1024"])[0]), 100_000))
        offset = max(0, int(query.get("offset", ["0"])[0]))
    except ValueError:
        raise _BadRequest("limit and offset must be integers") from None
    clients = [
        c
        for c in core.conns.values()
        if c.kind in (ConnectionKind.CLIENT, ConnectionKind.REPLICANT)
    ]
    rows = [
        {
            "cid": c.id,
            "kind": c.kind.value,
            "name": c.name,
            "account": c.account.name if c.account else None,
            "state": c.state.name,
            "in_msgs": c.messages_in,
            "out_msgs": c.messages_out,
            "in_bytes": c.bytes_in,
            "out_bytes": c.bytes_out,
            "pending_bytes": core.pending_bytes(c),
            "subscriptions": len(c.subs),
            "pending_frames": len(c.frame_sizes) + len(c.keyed),
            "dropped_msgs": c.dropped,
            "coalesced_msgs": c.coalesced,
            "resyncs": c.resyncs,
        }
        for c in clients[offset : offset + limit]
    ]
    return {
        "server_name": gw.config.name,
        "num_connections": len(rows),
        "total": len(clients),
        "offset": offset,
        "limit": limit,
        "connections": rows,
    }


def _routez(gw: Gateway) -> dict[str, Any]:
    core = gw._core
    return {
        "server_name": gw.config.name,
        "cluster": gw.config.cluster,
        "num_routes": len(core.routes),
        "routes": [
            {
                "rid": c.id,
                "remote_name": peer,
                "url": c.peer_url,
                "did_solicit": c.dialed,
                "in_msgs": c.messages_in,
                "out_msgs": c.messages_out,
                "in_bytes": c.bytes_in,
                "out_bytes": c.bytes_out,
                "pending_size": core.pending_bytes(c),
                "subscriptions": len(c.remote),
            }
            for peer, c in sorted(core.routes.items())
        ],
    }


def _subsz(gw: Gateway) -> dict[str, Any]:
    core = gw._core
    hits = misses = cached = 0
    for account in core.graph.accounts():
        idx = core.graph.index(account)
        if idx is not None:
            hits += idx.cache_hits
            misses += idx.cache_misses
            cached += idx.cache_len
    total = hits + misses
    return {
        "server_name": gw.config.name,
        "num_subscriptions": gw.statistics().subscriptions,
        "num_interest_entries": len(core.graph),
        "num_cache": cached,
        "num_matches": total,
        "cache_hit_rate": (hits / total) if total else 0.0,
    }


def render_metrics(gw: Gateway) -> str:
    """The node's counters in the Prometheus text exposition format."""
    st = gw.statistics()
    name = gw.config.name
    cluster = gw.config.cluster
    labels = f'server="{name}",cluster="{cluster}"'
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


def _route(gw: Gateway, target: str) -> tuple[int, str, bytes]:
    parts = urlsplit(target)
    path = parts.path.rstrip("/") or "/"
    query = parse_qs(parts.query)
    handlers: dict[str, Callable[[], Any]] = {
        "/varz": lambda: _varz(gw),
        "/connz": lambda: _connz(gw, query),
        "/routez": lambda: _routez(gw),
        "/gatewayz": gw.gatewayz,
        "/subsz": lambda: _subsz(gw),
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


async def _handle(gw: Gateway, stream: trio.abc.Stream) -> None:
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
    gw: Gateway, listen: str, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve the monitoring endpoint for ``gw`` at ``listen`` (``host:port``) until cancelled."""
    from .transports import TCPTransport

    async def handler(stream: trio.abc.Stream) -> None:
        try:
            await _handle(gw, stream)
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        bound = await nursery.start(TCPTransport().serve, listen, handler)
        task_status.started("http://" + bound.removeprefix("tcp://"))
