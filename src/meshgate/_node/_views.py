"""Typed snapshots of the core's state, built from the parts' public tables only
(as nats-server's ``Routez()`` builds a struct that ``HandleRoutez`` only marshals)."""

from __future__ import annotations

__all__ = [
    "account_statistics",
    "accounts",
    "connections",
    "gatewayz",
    "routes",
    "statistics",
    "subscriptions",
]

from typing import TYPE_CHECKING, Any

from .._stats import (
    AccountInfo,
    AccountStatistics,
    ConnectionInfo,
    RouteInfo,
    Statistics,
    SubscriptionsInfo,
)
from ._conn import ClientConnection, GatewayConnection

if TYPE_CHECKING:
    from ._core import NodeCore


def connections(core: NodeCore, now: float) -> list[ConnectionInfo]:
    """Every client and replicant connection, by id (``now``: the core's clock)."""
    return [
        ConnectionInfo(
            cid=c.id,
            kind=c.role.value,
            name=c.name,
            account=c.account.name if c.account else None,
            state=c.state.name,
            in_msgs=c.messages_in,
            out_msgs=c.messages_out,
            in_bytes=c.bytes_in,
            out_bytes=c.bytes_out,
            pending_bytes=core.pending_bytes(c),
            subscriptions=len(c.subs),
            pending_frames=(len(c.frame_sizes) if c.frame_sizes is not None else 0) + len(c.keyed),
            keyed_frames=len(c.keyed),
            dropped_msgs=c.dropped,
            coalesced_msgs=c.coalesced,
            resyncs=c.resyncs,
            in_payload_bytes=c.payload_in,
            out_payload_bytes=c.payload_out,
            uptime_seconds=round(max(0.0, now - c.opened_at), 3),
            idle_seconds=round(max(0.0, now - c.last_activity), 3),
            rtt=c.rtt,
            protocol=c.wire()[0],
            lang=c.wire()[1],
            client_version=c.wire()[2],
            subscriptions_list=tuple(s.pattern for s in c.subs.values()),
            **_scheduled(c, now),
        )
        for c in core.clients.conns.values()
    ]


def routes(core: NodeCore, *, interest: bool = False) -> list[RouteInfo]:
    """Every registered route, by peer name (with its interest entries if asked)."""
    return [
        RouteInfo(
            rid=c.id,
            remote_name=peer,
            url=c.peer_url,
            did_solicit=c.dialed,
            in_msgs=c.messages_in,
            out_msgs=c.messages_out,
            in_bytes=c.bytes_in,
            out_bytes=c.bytes_out,
            in_payload_bytes=c.payload_in,
            out_payload_bytes=c.payload_out,
            pending_size=core.pending_bytes(c),
            subscriptions=len(c.remote),
            rtt=c.rtt,
            interest=tuple(
                sorted(
                    ((e.account, e.pattern, e.queue, e.weight) for e in c.remote.values()),
                    key=lambda x: (x[0], x[1], x[2] or ""),
                )
            )
            if interest
            else (),
        )
        for peer, c in sorted(core.routes.peers.items())
    ]


def accounts(core: NodeCore) -> list[AccountInfo]:
    """Every account the node has seen, by name."""
    names = sorted(set(core.accounts) | set(core.graph.accounts()))
    rows = []
    for name in names:
        acct = core.accounts.get(name)
        idx = core.graph.index(name)
        rows.append(
            AccountInfo(
                name=name,
                clients=acct.clients if acct else 0,
                subscriptions=core.account_statistics(name).subscriptions,
                interest_entries=len(idx) if idx is not None else 0,
                in_msgs=acct.messages_in if acct else 0,
                out_msgs=acct.messages_out if acct else 0,
            )
        )
    return rows


def subscriptions(core: NodeCore) -> SubscriptionsInfo:
    """Sizes and match-cache figures of the interest graph."""
    hits = misses = cached = 0
    for account in core.graph.accounts():
        idx = core.graph.index(account)
        if idx is not None:
            hits += idx.cache_hits
            misses += idx.cache_misses
            cached += idx.cache_len
    total = hits + misses
    return SubscriptionsInfo(
        num_subscriptions=core.statistics().subscriptions,
        num_interest_entries=len(core.graph),
        num_cache=cached,
        num_matches=total,
        cache_hit_rate=(hits / total) if total else 0.0,
    )


def _connection(c: GatewayConnection) -> dict[str, Any]:
    return {
        "name": c.peer,
        "cid": c.id,
        "rtt": c.rtt,
        "in_msgs": c.messages_in,
        "out_msgs": c.messages_out,
        # payload bytes, as every monitoring path names them (the wire: *_wire_bytes)
        "in_bytes": c.payload_in,
        "out_bytes": c.payload_out,
        "in_wire_bytes": c.bytes_in,
        "out_wire_bytes": c.bytes_out,
    }


def gatewayz(core: NodeCore) -> dict[str, Any]:
    """Gateway state shaped like nats-server's ``/gatewayz``."""
    cfg = core.config
    threshold = cfg.interest_only_threshold
    outbound: dict[str, Any] = {}
    for cluster, c in sorted(core.gateways.outbound.items()):
        oi = c.out_interest
        assert oi is not None
        outbound[cluster] = {
            "connection": _connection(c),
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
    for ic in core.gateways.inbound.values():
        ii = ic.in_interest
        assert ii is not None
        assert ic.remote_cluster is not None
        inbound.setdefault(ic.remote_cluster, []).append(
            {
                "connection": _connection(ic),
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
        "known_urls": {k: sorted(v) for k, v in sorted(core.gateways.urls.items())},
        "outbound_gateways": outbound,
        "inbound_gateways": inbound,
    }


def _scheduled(c: ClientConnection, now: float) -> dict[str, Any]:
    """The scheduler's figures of one client (none without a budget)."""
    s = c.sched
    d = c.deltas
    deltas = (
        {}
        if d is None
        else {"deltas_sent": d.sent, "delta_bytes_saved": d.saved, "delta_gave_up": d.gave_up}
    )
    if s is None:
        return deltas
    return deltas | {
        "budget": s.budget,
        "sent_bytes_per_second": s.sent_rate(),
        "reliable_bytes": s.reliable_bytes,
        "keyed_bytes": s.keyed_bytes,
        "keyed_sent": s.keyed_sent,
        "keyed_superseded": s.superseded,
        "keyed_refused": s.refused,
        "keys_pending": s.pending,
        "oldest_pending_age": round(s.oldest_pending_age(now), 3),
    }


def statistics(core: NodeCore) -> Statistics:
    """A snapshot of the node's counters (each part keeps its own)."""
    fan, dlv, out = core.fanout, core.delivery, core.outbox
    return Statistics(
        clients=core.clients.count,
        routes=len(core.routes.peers),
        outbound_gateways=len(core.gateways.outbound),
        inbound_gateways=len(core.gateways.inbound),
        subscriptions=sum(core.clients.local_keys.values()) - core.internal_subscriptions(),
        messages_in=fan.messages_in,
        messages_out=fan.messages_out,
        bytes_in=core.bytes_in,
        bytes_out=core.bytes_out,
        slow_consumers=dlv.slow_consumers,
        dropped_messages=dlv.dropped_messages,
        coalesced_messages=dlv.coalesced_messages,
        resyncs=dlv.resyncs,
        datagrams_out=dlv.datagrams_out,
        datagrams_dropped=dlv.datagram_counters.dropped,
        datagrams_superseded=dlv.datagram_counters.superseded,
        datagram_refreshes=dlv.datagram_counters.refreshes,
        kseq_table_full=dlv.datagram_counters.table_full,
        protocol_errors=out.protocol_errors,
        auth_failures=out.auth_failures,
        permission_violations=out.permission_violations,
        payload_bytes_in=fan.payload_in,
        payload_bytes_out=fan.payload_out,
        **dlv.scheduler_totals(),
        priority_honoured=fan.priority_honoured,
        priority_ignored=fan.priority_ignored,
        delta_msgs=dlv.delta_counters.sent,
        delta_full_msgs=dlv.delta_counters.full,
        delta_bytes_saved=dlv.delta_counters.bytes_saved,
        delta_acks=dlv.delta_counters.acks,
        delta_acks_ignored=dlv.delta_counters.acks_ignored,
        delta_resets=dlv.delta_counters.resets,
        delta_unkept=dlv.delta_counters.unkept,
        delta_untracked=dlv.delta_counters.untracked,
        delta_gave_up=dlv.delta_counters.gave_up,
        delta_skipped=dlv.delta_counters.skipped,
        delta_probes=dlv.delta_counters.probes,
    )


def account_statistics(core: NodeCore, account: str) -> AccountStatistics:
    """Counters of one account only."""
    acct = core.accounts.get(account)
    return AccountStatistics(
        account=account,
        clients=acct.clients if acct else 0,
        subscriptions=sum(n for (a, _, _), n in core.clients.local_keys.items() if a == account)
        - core.internal_subscriptions(account),
        messages_in=acct.messages_in if acct else 0,
        messages_out=acct.messages_out if acct else 0,
    )
