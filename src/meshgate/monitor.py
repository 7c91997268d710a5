"""The HTTP monitoring endpoint: JSON like nats-server's, and Prometheus text.

Paths: ``/varz``, ``/connz``, ``/routez``, ``/gatewayz``, ``/subsz``, ``/accountz``,
``/gamez``, ``/healthz`` (JSON; field names follow nats-server where the concept is the
same) and ``/metrics`` (Prometheus text format).  Every body is built from the
node's public snapshots (:meth:`~meshgate.Gateway.varz` and friends); this module
only does HTTP.  HTTP parsing is h11's; a bad request gets
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

import attrs
import h11
import trio

if TYPE_CHECKING:
    from ._shell import Gateway

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
_REQUEST_DEADLINE = 10.0
_MAX_REQUEST = 16 * 1024


def _varz(gw: Gateway) -> dict[str, Any]:
    v = gw.varz()
    st = v.statistics
    return {
        "server_name": v.server_name,
        "version": v.version,
        "cluster": {"name": v.cluster, "urls": [v.cluster_url] if v.cluster_url else []},
        "gateway": {"name": v.cluster, "url": v.gateway_url},
        "now": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "start": v.start,
        "uptime_seconds": v.uptime_seconds,
        "max_payload": v.max_payload,
        "max_pending": v.max_pending,
        "max_connections": v.max_connections,
        "ping_interval": v.ping_interval,
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
        "gateway_control_msgs": v.gateway_control_msgs,
        "protocol_errors": st.protocol_errors,
        "auth_failures": st.auth_failures,
        "permission_violations": st.permission_violations,
        "interest_mode": v.interest_mode,
        "interest_only_threshold": v.interest_only_threshold,
        "accounts": v.accounts,
    }


def _connz(gw: Gateway, query: dict[str, list[str]]) -> dict[str, Any]:
    try:
        limit = max(0, min(int(query.get("limit", ["1024"])[0]), 100_000))
        offset = max(0, int(query.get("offset", ["0"])[0]))
    except ValueError:
        raise _BadRequest("limit and offset must be integers") from None
    clients = gw.connz()
    rows = [attrs.asdict(c) for c in clients[offset : offset + limit]]
    return {
        "server_name": gw.config.name,
        "num_connections": len(rows),
        "total": len(clients),
        "offset": offset,
        "limit": limit,
        "connections": rows,
    }


def _routez(gw: Gateway) -> dict[str, Any]:
    routes = gw.routez()
    return {
        "server_name": gw.config.name,
        "cluster": gw.config.cluster,
        "num_routes": len(routes),
        "routes": [attrs.asdict(r) for r in routes],
    }


def _subsz(gw: Gateway) -> dict[str, Any]:
    return {"server_name": gw.config.name, **attrs.asdict(gw.subsz())}


def _accountz(gw: Gateway) -> dict[str, Any]:
    return {"server_name": gw.config.name, "accounts": [attrs.asdict(a) for a in gw.accountz()]}


def _gamez(gw: Gateway) -> dict[str, Any]:
    game = gw.game()
    return {"server_name": gw.config.name, "game": attrs.asdict(game) if game else None}


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
