"""Statistics snapshots (frozen attrs)."""

from __future__ import annotations

__all__ = ["AccountStatistics", "Statistics"]

import attrs


@attrs.frozen
class Statistics:
    """A snapshot of a node's counters (:meth:`meshgate.Gateway.statistics`)."""

    clients: int
    routes: int
    outbound_gateways: int
    inbound_gateways: int
    subscriptions: int
    messages_in: int
    messages_out: int
    bytes_in: int
    bytes_out: int
    #: times a connection passed ``max_pending_bytes`` (each episode counts once)
    slow_consumers: int
    #: messages dropped by the drop-oldest / drop-new policies
    dropped_messages: int
    #: keyed frames replaced by a newer one before they were sent (coalesce policy)
    coalesced_messages: int
    #: event backlogs dropped with a RESYNC notice (coalesce policy)
    resyncs: int
    #: connections closed for a protocol error, failed auth or a limit
    protocol_errors: int
    auth_failures: int
    permission_violations: int


@attrs.frozen
class AccountStatistics:
    """Counters of one account only (:meth:`meshgate.Gateway.account_statistics`)."""

    account: str
    clients: int
    subscriptions: int
    messages_in: int
    messages_out: int
