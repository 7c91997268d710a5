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
import platform
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, urlsplit

import attrs
import h11
import trio

from ._compiled import CORE
from ._dashboard import Aggregator, static_file
from ._timefmt import go_duration, uptime_text
from ._timefmt import rfc3339 as _rfc3339

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

#: Paths the endpoint serves (``/`` is the dashboard; ``/index.json`` lists these).
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
    # the dashboard (issue 24): discovery and the aggregated document
    "/peerz",
    "/dashboard.json",
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

    @property
    def monitor_url(self) -> str | None:
        """The monitoring endpoint's own URL (``http_host``/``http_port`` in /varz)."""

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

    def readiness(self) -> list[str]:
        """What the node waits for before it is ready; empty when ready."""


_REQUEST_DEADLINE = 10.0
_MAX_REQUEST = 16 * 1024


def escape_label(value: str) -> str:
    """A Prometheus label value, escaped (backslash, double quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _varz(gw: Observable) -> dict[str, Any]:
    v = gw.varz()
    st = v.statistics
    game = gw.game()
    host, _, port = (v.client_url or "").rpartition("://")[2].rpartition(":")
    http_host, _, http_port = (gw.monitor_url or "").rpartition("://")[2].rpartition(":")
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
        "client_urls": list(v.client_urls),
        # per quic:// listener: refused and dropped packets, handshakes, streams, datagrams
        "quic": v.quic,
        # lz4 on route and gateway links: links, bytes before and after, bombs refused
        "compression": v.compression,
        "now": _rfc3339(time.time()),
        "start": v.start,
        "uptime": uptime_text(v.uptime_seconds),
        "uptime_seconds": v.uptime_seconds,
        "max_payload": v.max_payload,
        "max_pending": v.max_pending,
        "max_connections": v.max_connections,
        # nats-server's units: a time.Duration in nanoseconds
        "ping_interval": int(v.ping_interval * 1e9),
        "ping_max": gw.config.max_pings_out,
        "http_host": http_host,
        "http_port": int(http_port) if http_port.isdigit() else 0,
        "connect_urls": [v.client_url] if v.client_url else [],
        # nats-server gives auth_timeout in seconds (a float) and write_deadline in ns
        "auth_timeout": gw.config.auth_timeout,
        "write_deadline": int(gw.config.write_deadline * 1e9),
        # the process, as nats-server reports it
        "mem": v.mem,
        "cpu": v.cpu,
        "cores": v.cores,
        "total_connections": v.total_connections,
        "config_load_time": v.config_load_time,
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
        # keyed state over QUIC datagrams (issue 20)
        "datagrams_out": st.datagrams_out,
        "datagrams_dropped": st.datagrams_dropped,
        "datagrams_superseded": st.datagrams_superseded,
        "datagram_refreshes": st.datagram_refreshes,
        "kseq_table_full": st.kseq_table_full,
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
        # the per-client scheduler (client_bandwidth)
        "scheduler": {
            "clients": st.scheduled_clients,
            "keyed_msgs": st.scheduled_keyed_msgs,
            "keyed_bytes": st.scheduled_keyed_bytes,
            "reliable_bytes": st.scheduled_reliable_bytes,
            "superseded": st.scheduled_superseded,
            "refused": st.scheduled_refused,
            "pending_keys": st.scheduled_pending_keys,
        },
        # publisher priorities (issue 21): honoured, and ignored (not granted)
        "priority": {"honoured": st.priority_honoured, "ignored": st.priority_ignored},
        # deltas against acknowledged keyed state (keyed_deltas)
        "deltas": {
            "msgs": st.delta_msgs,
            "full_msgs": st.delta_full_msgs,
            "bytes_saved": st.delta_bytes_saved,
            "acks": st.delta_acks,
            "acks_ignored": st.delta_acks_ignored,
            "resets": st.delta_resets,
            "unkept": st.delta_unkept,
            "untracked": st.delta_untracked,
            "gave_up": st.delta_gave_up,
            "skipped": st.delta_skipped,
            "probes": st.delta_probes,
        },
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
    now = time.time()
    rows = []
    for r in routes:
        row = attrs.asdict(r)
        row.update(
            remote_id=f"meshgate-{r.remote_name}",
            in_bytes=r.in_payload_bytes,
            out_bytes=r.out_payload_bytes,
            in_wire_bytes=r.in_bytes,
            out_wire_bytes=r.out_bytes,
            rtt=go_duration(r.rtt) if r.rtt is not None else "",
            ip=r.ip or "",
            port=r.port or 0,
            start=_rfc3339(now - r.uptime_seconds),
            last_activity=_rfc3339(now - r.idle_seconds),
            uptime=uptime_text(r.uptime_seconds),
            idle=uptime_text(r.idle_seconds),
        )
        del row["in_payload_bytes"], row["out_payload_bytes"]
        rows.append(row)
    return {
        "server_id": f"meshgate-{gw.config.name}",
        "server_name": gw.config.name,
        "now": _rfc3339(now),
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


@attrs.define
class _Family:
    """One metric family: its samples as (label values, value); for a histogram the
    value is (cumulative ``(le, count)`` buckets, sum)."""

    name: str
    kind: str  # "counter", "gauge" or "histogram"
    help: str
    labels: tuple[str, ...]
    samples: list[tuple[tuple[str, ...], Any]] = attrs.Factory(list)

    def add(self, values: tuple[str, ...], value: Any) -> None:
        self.samples.append((values, value))


def _families(gw: Observable) -> list[_Family]:
    """Every series of the node, from its snapshots (the one definition both renderers
    use).  Byte counters count payload bytes, as nats-server and /varz do; the wire is
    ``*_wire_bytes_*``."""
    st = gw.statistics()
    v_compression = gw.varz().compression
    cfg = gw.config
    node = (cfg.name, cfg.cluster)
    base = ("server", "cluster")
    out: list[_Family] = []

    def family(name: str, kind: str, help_text: str, *labels: str) -> _Family:
        f = _Family(name, kind, help_text, base + labels)
        out.append(f)
        return f

    for name, kind, help_text, value in (
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
        ("meshgate_bytes_in_total", "counter", "payload bytes received", st.payload_bytes_in),
        ("meshgate_bytes_out_total", "counter", "payload bytes sent", st.payload_bytes_out),
        ("meshgate_wire_bytes_in_total", "counter", "bytes read from sockets", st.bytes_in),
        ("meshgate_wire_bytes_out_total", "counter", "bytes written to sockets", st.bytes_out),
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
        ("meshgate_resyncs_total", "counter", "client resyncs (coalesce policy)", st.resyncs),
        (
            "meshgate_protocol_errors_total",
            "counter",
            "connections closed for errors",
            st.protocol_errors,
        ),
        ("meshgate_auth_failures_total", "counter", "failed authentications", st.auth_failures),
        (
            "meshgate_permission_violations_total",
            "counter",
            "publishes and subscriptions refused by permissions",
            st.permission_violations,
        ),
        (
            "meshgate_ready",
            "gauge",
            "1 when every configured route seed, gateway and backbone is connected",
            0 if gw.readiness() else 1,
        ),
        (
            "meshgate_compression_links_total",
            "counter",
            "route and gateway links compressed (lz4)",
            v_compression.get("links", 0),
        ),
        (
            "meshgate_compression_raw_out_total",
            "counter",
            "bytes before compression, sent on compressed links",
            v_compression.get("raw_out", 0),
        ),
        (
            "meshgate_compression_wire_out_total",
            "counter",
            "bytes on the wire, sent on compressed links",
            v_compression.get("wire_out", 0),
        ),
        (
            "meshgate_compression_raw_in_total",
            "counter",
            "bytes after decompression, received on compressed links",
            v_compression.get("raw_in", 0),
        ),
        (
            "meshgate_compression_wire_in_total",
            "counter",
            "bytes on the wire, received on compressed links",
            v_compression.get("wire_in", 0),
        ),
        (
            "meshgate_compression_refused_total",
            "counter",
            "compressed links closed for a decompression bomb or a corrupt stream",
            v_compression.get("refused", 0),
        ),
        (
            "meshgate_scheduled_clients",
            "gauge",
            "clients with a bandwidth budget",
            st.scheduled_clients,
        ),
        (
            "meshgate_scheduled_keyed_messages_total",
            "counter",
            "keyed values sent by the per-client scheduler",
            st.scheduled_keyed_msgs,
        ),
        (
            "meshgate_scheduled_keyed_bytes_total",
            "counter",
            "keyed bytes sent by the per-client scheduler",
            st.scheduled_keyed_bytes,
        ),
        (
            "meshgate_scheduled_reliable_bytes_total",
            "counter",
            "reliable bytes charged to client budgets",
            st.scheduled_reliable_bytes,
        ),
        (
            "meshgate_scheduled_superseded_total",
            "counter",
            "keyed values superseded before they were sent",
            st.scheduled_superseded,
        ),
        (
            "meshgate_scheduled_refused_total",
            "counter",
            "keyed values refused by a full scheduler",
            st.scheduled_refused,
        ),
        (
            "meshgate_scheduled_pending_keys",
            "gauge",
            "keys waiting in client schedulers",
            st.scheduled_pending_keys,
        ),
        (
            "meshgate_priority_honoured_total",
            "counter",
            "publisher priorities honoured",
            st.priority_honoured,
        ),
        (
            "meshgate_priority_ignored_total",
            "counter",
            "publisher priorities ignored (not granted)",
            st.priority_ignored,
        ),
    ):
        family(name, kind, help_text).add(node, value)
    info = family(
        "meshgate_build_info", "gauge", "the running build", "version", "python", "compiled"
    )
    from . import COMPILED
    from ._version import __version__

    info.add((*node, __version__, platform.python_version(), str(COMPILED).lower()), 1)

    # per route, by peer name
    routes = gw.routez()
    route_fams = [
        (
            family(
                "meshgate_route_messages_in_total",
                "counter",
                "messages from the route peer",
                "peer",
            ),
            "in_msgs",
        ),
        (
            family(
                "meshgate_route_messages_out_total", "counter", "messages to the route peer", "peer"
            ),
            "out_msgs",
        ),
        (
            family(
                "meshgate_route_bytes_in_total",
                "counter",
                "payload bytes from the route peer",
                "peer",
            ),
            "in_payload_bytes",
        ),
        (
            family(
                "meshgate_route_bytes_out_total",
                "counter",
                "payload bytes to the route peer",
                "peer",
            ),
            "out_payload_bytes",
        ),
        (
            family(
                "meshgate_route_wire_bytes_in_total",
                "counter",
                "wire bytes from the route peer",
                "peer",
            ),
            "in_bytes",
        ),
        (
            family(
                "meshgate_route_wire_bytes_out_total",
                "counter",
                "wire bytes to the route peer",
                "peer",
            ),
            "out_bytes",
        ),
        (
            family(
                "meshgate_route_pending_bytes", "gauge", "bytes queued for the route peer", "peer"
            ),
            "pending_size",
        ),
        (
            family("meshgate_route_stalled", "gauge", "1 while the route takes nothing", "peer"),
            "stalled",
        ),
    ]
    rtt = family("meshgate_route_rtt_seconds", "gauge", "round-trip time to the route peer", "peer")
    for r in routes:
        peer = (*node, r.remote_name or str(r.rid))
        for fam, field in route_fams:
            fam.add(peer, float(getattr(r, field)))
        if r.rtt is not None:
            rtt.add(peer, r.rtt)

    # per gateway connection, by remote cluster and direction; per configured remote
    gz = gw.gatewayz()
    gate_labels = ("remote_cluster", "direction", "peer")
    gate_fams = [
        (
            family(
                "meshgate_gateway_messages_in_total",
                "counter",
                "messages from the gateway peer",
                *gate_labels,
            ),
            "in_msgs",
        ),
        (
            family(
                "meshgate_gateway_messages_out_total",
                "counter",
                "messages to the gateway peer",
                *gate_labels,
            ),
            "out_msgs",
        ),
        (
            family(
                "meshgate_gateway_bytes_in_total",
                "counter",
                "payload bytes from the gateway peer",
                *gate_labels,
            ),
            "in_bytes",
        ),
        (
            family(
                "meshgate_gateway_bytes_out_total",
                "counter",
                "payload bytes to the gateway peer",
                *gate_labels,
            ),
            "out_bytes",
        ),
        (
            family(
                "meshgate_gateway_wire_bytes_in_total",
                "counter",
                "wire bytes from the gateway peer",
                *gate_labels,
            ),
            "in_wire_bytes",
        ),
        (
            family(
                "meshgate_gateway_wire_bytes_out_total",
                "counter",
                "wire bytes to the gateway peer",
                *gate_labels,
            ),
            "out_wire_bytes",
        ),
        (
            family(
                "meshgate_gateway_pending_bytes",
                "gauge",
                "bytes queued for the gateway peer",
                *gate_labels,
            ),
            "pending_bytes",
        ),
    ]
    rows = [(c, "outbound", g["connection"]) for c, g in gz["outbound_gateways"].items()]
    rows += [
        (c, "inbound", g["connection"]) for c, gs in gz["inbound_gateways"].items() for g in gs
    ]
    for cluster, direction, conn in rows:
        labels = (*node, cluster, direction, str(conn.get("name")))
        for fam, field in gate_fams:
            fam.add(labels, float(conn.get(field) or 0))
    up = family(
        "meshgate_gateway_up",
        "gauge",
        "1 while the outbound gateway to the cluster is connected",
        "remote_cluster",
    )
    failures = family(
        "meshgate_gateway_dial_failures",
        "gauge",
        "failed dial passes in a row to the cluster",
        "remote_cluster",
    )
    for cluster, dial in gz.get("dials", {}).items():
        up.add((*node, cluster), 1 if dial["state"] == "connected" else 0)
        failures.add((*node, cluster), dial["failures"])

    # per account
    acc = [
        (
            family(
                "meshgate_account_connections",
                "gauge",
                "client connections of the account",
                "account",
            ),
            "clients",
        ),
        (
            family(
                "meshgate_account_subscriptions", "gauge", "subscriptions of the account", "account"
            ),
            "subscriptions",
        ),
        (
            family(
                "meshgate_account_messages_in_total",
                "counter",
                "messages the account's clients sent",
                "account",
            ),
            "in_msgs",
        ),
        (
            family(
                "meshgate_account_messages_out_total",
                "counter",
                "messages the account's clients got",
                "account",
            ),
            "out_msgs",
        ),
    ]
    for a in gw.accountz():
        for fam, field in acc:
            fam.add((*node, a.name), getattr(a, field))

    # the game layer
    game = gw.game()
    if game is not None:
        owned: dict[str, int] = {}
        held = retained = unowned = 0
        for e in game.entities:
            held += e.held
            retained += e.retained
            if e.owner is None:
                unowned += 1
            else:
                owned[e.owner] = owned.get(e.owner, 0) + 1
        owners = family(
            "meshgate_game_owned_entities", "gauge", "entities each replicant owns", "owner"
        )
        for owner, n in sorted(owned.items()):
            owners.add((*node, owner), n)
        for name, kind, help_text, value in (
            (
                "meshgate_game_unowned_entities",
                "gauge",
                "entities without an owner (inputs held)",
                unowned,
            ),
            ("meshgate_game_held_inputs", "gauge", "inputs held for the next owner", held),
            (
                "meshgate_game_retained_inputs",
                "gauge",
                "inputs delivered and not acknowledged",
                retained,
            ),
            (
                "meshgate_game_input_bytes",
                "gauge",
                "bytes of input held or retained",
                game.input_bytes,
            ),
            (
                "meshgate_game_provisional",
                "gauge",
                "provisional relays awaiting a verdict",
                game.provisional,
            ),
            (
                "meshgate_game_confirmed_total",
                "counter",
                "provisional updates confirmed by the owner",
                game.confirmed,
            ),
            (
                "meshgate_game_corrected_total",
                "counter",
                "provisional updates corrected by the owner",
                game.corrected,
            ),
            (
                "meshgate_game_inputs_refused_total",
                "counter",
                "inputs refused at a bound",
                game.inputs_refused,
            ),
            (
                "meshgate_game_relays_refused_total",
                "counter",
                "inputs whose relay subject is not speculative",
                game.relays_refused,
            ),
        ):
            family(name, kind, help_text).add(node, value)
        hist = family(
            "meshgate_game_relay_latency_seconds",
            "histogram",
            "seconds from a provisional update reaching this node's clients to the owner's verdict",
        )
        buckets, total = [], 0
        for bound, n in game.relay_latency_buckets:
            total += n
            buckets.append((bound, total))
        buckets.append((float("inf"), total + game.relay_latency_beyond))
        hist.add(node, (buckets, game.relay_latency_sum))
    return out


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def _render_with_prometheus_client(families: list[_Family]) -> str | None:
    """The families, the process and the platform in prometheus-client's exposition
    (None if prometheus-client is not installed: ``pip install meshgate[metrics]``)."""
    try:
        from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )
    except ImportError:
        return None

    class Collector:
        def collect(self) -> Any:
            for f in families:
                labels = list(f.labels)
                if f.kind == "histogram":
                    h = HistogramMetricFamily(f.name, f.help, labels=labels)
                    for values, (buckets, total) in f.samples:
                        h.add_metric(
                            list(values), [(_le(b), c) for b, c in buckets], sum_value=total
                        )
                    yield h
                    continue
                cls = CounterMetricFamily if f.kind == "counter" else GaugeMetricFamily
                m = cls(f.name, f.help, labels=labels)
                for values, value in f.samples:
                    m.add_metric(list(values), value)
                yield m

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    ProcessCollector(registry=registry)
    text: str = generate_latest(registry).decode()
    return text


def _render_by_hand(families: list[_Family]) -> str:
    """The same exposition without prometheus-client: the families, and the process's
    CPU time, resident memory and start time."""
    import resource

    lines = []
    for f in families:
        lines.append(f"# HELP {f.name} {f.help}")
        lines.append(f"# TYPE {f.name} {f.kind}")
        for values, value in f.samples:
            pairs = [f'{k}="{escape_label(v)}"' for k, v in zip(f.labels, values, strict=True)]
            if f.kind == "histogram":
                buckets, total = value
                for bound, count in buckets:
                    le = ",".join([*pairs, f'le="{_le(bound)}"'])
                    lines.append(f"{f.name}_bucket{{{le}}} {count}")
                lines.append(f"{f.name}_count{{{','.join(pairs)}}} {buckets[-1][1]}")
                lines.append(f"{f.name}_sum{{{','.join(pairs)}}} {total}")
            else:
                lines.append(f"{f.name}{{{','.join(pairs)}}} {value}")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    for name, kind, help_text, v in (
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            usage.ru_utime + usage.ru_stime,
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            _PROCESS_START,
        ),
    ):
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {v}"]
    return "\n".join(lines) + "\n"


_PROCESS_START = time.time()


def render_metrics(gw: Observable) -> str:
    """The node's series in the Prometheus text exposition format: node-wide counters,
    per route, per gateway, per account and the game layer (owners, held inputs,
    confirms and corrections, a relay latency histogram), build info and the process.
    Built with prometheus-client when it is installed (the ``metrics`` extra); without
    it, the same families are written by hand (process series: CPU time and start
    time only)."""
    families = _families(gw)
    text = _render_with_prometheus_client(families)
    return text if text is not None else _render_by_hand(families)


class _BadRequest(Exception):
    pass


def _healthz(gw: Observable, query: dict[str, list[str]]) -> tuple[int, str, bytes]:
    """Liveness (the node answers: 200), or with ``ready=1`` readiness: 503 while a
    configured route seed, remote cluster or the backbone is not connected, naming them
    (nats-server's shape: ``status`` and ``error``)."""
    if query.get("ready", ["0"])[0].lower() not in ("1", "true", "yes"):
        return 200, "application/json", b'{"status": "ok"}'
    waiting = gw.readiness()
    if not waiting:
        return 200, "application/json", b'{"status": "ok"}'
    body = {
        "status": "unavailable",
        "error": "not connected: " + "; ".join(waiting),
        "waiting": waiting,
    }
    return 503, "application/json", json.dumps(body).encode()


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
    }
    if path == "/healthz":
        return _healthz(gw, query)
    if path == "/metrics":
        return 200, "text/plain; version=0.0.4", render_metrics(gw).encode()
    if path == "/index.json":
        return 200, "application/json", json.dumps({"paths": list(MONITOR_PATHS)}).encode()
    handler = handlers.get(path)
    if handler is None:
        return 404, "application/json", json.dumps({"error": f"unknown path {path}"}).encode()
    try:
        body = handler()
    except _BadRequest as exc:
        return 400, "application/json", json.dumps({"error": str(exc)}).encode()
    return 200, "application/json", json.dumps(body, indent=2, default=str).encode()


async def _handle(
    gw: Observable, stream: trio.abc.Stream, dashboard: Aggregator | None = None
) -> None:
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
                        target = event.target.decode("ascii", "replace")
                        found = await _dashboard_route(gw, target, dashboard)
                        status, ctype, body = found or _route(gw, target)
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

    dashboard: list[Aggregator] = []

    async def handler(stream: trio.abc.Stream) -> None:
        try:
            await _handle(gw, stream, dashboard[0] if dashboard else None)
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        bound = await nursery.start(TCPTransport().serve, listen, handler)
        url = "http://" + bound.removeprefix("tcp://")
        dashboard.append(Aggregator(url))
        task_status.started(url)


# -- the dashboard (issue 24): static files, /peerz and /dashboard.json -----------------------
#
# Kept apart from the JSON paths above: ``/`` serves the page (meshgate._dashboard), which
# polls ``/dashboard.json``, built by this node from the whole super-cluster (the browser
# talks to one origin).  ``/peerz`` lists route and gateway peers with their monitoring
# URLs, for discovery.


def _peerz(gw: Observable) -> dict[str, Any]:
    peers = getattr(gw, "monitor_peers", None)
    return {
        "server_name": gw.config.name,
        "cluster": gw.config.cluster,
        "peers": peers() if peers is not None else [],
    }


async def _dashboard_route(
    gw: Observable, target: str, dashboard: Aggregator | None
) -> tuple[int, str, bytes] | None:
    """The dashboard's paths (None: not one of them)."""
    parts = urlsplit(target)
    path = parts.path
    static = static_file(path)
    if static is not None:
        return 200, static[1], static[0]
    if path == "/peerz":
        return 200, "application/json", json.dumps(_peerz(gw)).encode()
    if path == "/dashboard.json":
        if dashboard is None:
            return 404, "application/json", b'{"error": "no dashboard on this endpoint"}'
        refresh = parse_qs(parts.query).get("refresh", ["0"])[0] == "1"
        document = await dashboard.document(refresh=refresh)
        return 200, "application/json", json.dumps(document, default=str).encode()
    return None
