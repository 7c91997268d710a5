"""Statistics snapshots (frozen attrs)."""

from __future__ import annotations

__all__ = [
    "AccountInfo",
    "AccountStatistics",
    "ConnectionInfo",
    "RouteInfo",
    "ServerInfo",
    "Statistics",
    "SubscriptionsInfo",
]

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
    #: message payload bytes in and out (``bytes_in``/``bytes_out`` count the wire)
    payload_bytes_in: int = 0
    payload_bytes_out: int = 0
    #: route, gateway and backbone links closed as slow consumers (stuck: they took
    #: nothing for ``peer_write_deadline`` or held ``peer_max_pending_bytes``), in all
    #: and by kind; ``slow_consumers`` counts clients only
    stalled_links: int = 0
    stalled_routes: int = 0
    stalled_gateways: int = 0
    stalled_backbone: int = 0
    #: keyed messages sent to clients as unreliable datagrams (QUIC; issue 20); queued
    #: datagrams dropped (a connection's queue was full); queued datagrams replaced by a
    #: newer state of their key before the path took them; keyed messages sent reliably
    #: as the periodic refresh; keyed messages sent without a kseq (a connection's
    #: kseq table was full)
    datagrams_out: int = 0
    datagrams_dropped: int = 0
    datagrams_superseded: int = 0
    datagram_refreshes: int = 0
    kseq_table_full: int = 0
    #: the per-client scheduler (``client_bandwidth``): clients with a budget now, keyed
    #: values sent and their bytes, reliable bytes charged to budgets, values superseded
    #: by a newer one before they went out, values refused by a full scheduler, and
    #: keys waiting now
    scheduled_clients: int = 0
    scheduled_keyed_msgs: int = 0
    scheduled_keyed_bytes: int = 0
    scheduled_reliable_bytes: int = 0
    scheduled_superseded: int = 0
    scheduled_refused: int = 0
    scheduled_pending_keys: int = 0
    #: publisher priorities (issue 21): honoured (the connection's credential grants
    #: them), and ignored (a credential without ``max_priority``, or a peer relaying one
    #: out of range): the message went without
    priority_honoured: int = 0
    priority_ignored: int = 0
    #: deltas against acknowledged keyed state (``keyed_deltas``): keyed values sent as
    #: a delta and whole (to clients with deltas), payload bytes the deltas saved,
    #: acknowledgements taken and ignored (unknown key, a kseq never sent or no longer
    #: kept, past the bound of one frame, from a client without deltas), baselines a
    #: client said it lost, values not kept (byte bound), keys not tracked (key bound),
    #: keys given up for a while (their deltas kept not paying), the values those sent
    #: plain meanwhile, and the probes (off the wire) of whether deltas would pay again
    delta_msgs: int = 0
    delta_full_msgs: int = 0
    delta_bytes_saved: int = 0
    delta_acks: int = 0
    delta_acks_ignored: int = 0
    delta_resets: int = 0
    delta_unkept: int = 0
    delta_untracked: int = 0
    delta_gave_up: int = 0
    delta_skipped: int = 0
    delta_probes: int = 0


@attrs.frozen
class AccountStatistics:
    """Counters of one account only (:meth:`meshgate.Gateway.account_statistics`)."""

    account: str
    clients: int
    subscriptions: int
    messages_in: int
    messages_out: int


@attrs.frozen
class ConnectionInfo:
    """One client or replicant connection (:meth:`meshgate.Gateway.connz`; nats ``/connz``)."""

    cid: int
    #: ``client`` or ``replicant``
    kind: str
    name: str
    account: str | None
    #: ``AWAIT_HELLO``, ``OPEN`` or ``CLOSING``
    state: str
    in_msgs: int
    out_msgs: int
    in_bytes: int
    out_bytes: int
    #: bytes queued for the client and not yet written
    pending_bytes: int
    subscriptions: int
    #: frames queued (event lane and keyed state lane)
    pending_frames: int
    #: frames waiting in the keyed state lane (coalesce policy)
    keyed_frames: int
    dropped_msgs: int
    coalesced_msgs: int
    resyncs: int
    #: message payload bytes from and to it (``in_bytes``/``out_bytes`` count the wire)
    in_payload_bytes: int = 0
    out_payload_bytes: int = 0
    #: seconds since it connected, and since it last sent anything
    uptime_seconds: float = 0.0
    idle_seconds: float = 0.0
    #: round-trip time of the last keepalive, in seconds (None until measured)
    rtt: float | None = None
    #: the peer's address (None on in-memory transports) and the wire it speaks
    ip: str | None = None
    port: int | None = None
    #: ``meshgate`` or ``nats`` (a client of the NATS port)
    protocol: str = "meshgate"
    #: what a NATS client said in CONNECT (``lang``, ``version``), else empty
    lang: str = ""
    client_version: str = ""
    #: the patterns it subscribes to
    subscriptions_list: tuple[str, ...] = ()
    #: its bandwidth budget in bytes per second (None: unlimited, no scheduler) and, with
    #: one: bytes written over the last second, the reliable and keyed bytes charged to
    #: it so far, keyed values sent, superseded and refused, keys waiting now and how
    #: long the oldest has waited (seconds)
    budget: int | None = None
    sent_bytes_per_second: int = 0
    reliable_bytes: int = 0
    keyed_bytes: int = 0
    keyed_sent: int = 0
    keyed_superseded: int = 0
    keyed_refused: int = 0
    keys_pending: int = 0
    oldest_pending_age: float = 0.0
    #: with ``keyed_deltas``: keyed values sent to it as a delta, the payload bytes
    #: those saved, and the times one of its keys was given up (deltas not paying)
    deltas_sent: int = 0
    delta_bytes_saved: int = 0
    delta_gave_up: int = 0


@attrs.frozen
class RouteInfo:
    """One route (:meth:`meshgate.Gateway.routez`; nats ``/routez``)."""

    rid: int
    #: the peer node's name
    remote_name: str | None
    #: the peer's cluster URL, as it announced it
    url: str | None
    #: this node dialed the route
    did_solicit: bool
    in_msgs: int
    out_msgs: int
    in_bytes: int
    out_bytes: int
    pending_size: int
    #: interest entries the peer announced
    subscriptions: int
    rtt: float | None
    #: ``(account, pattern, queue, weight)`` per entry, if asked for (else empty)
    interest: tuple[tuple[str, str, str | None, int], ...] = ()
    #: message payload bytes from and to the peer (``in_bytes``/``out_bytes``: the wire)
    in_payload_bytes: int = 0
    out_payload_bytes: int = 0
    #: the route has taken nothing for a while (publishers no longer wait for it)
    stalled: bool = False
    #: times this route stalled
    stalls: int = 0
    #: times a route to this peer was closed as a slow consumer (over the node's life)
    slow_consumers: int = 0
    #: the peer's address, if the transport has one
    ip: str | None = None
    port: int | None = None
    #: seconds since the route opened, and since it last received anything
    uptime_seconds: float = 0.0
    idle_seconds: float = 0.0
    #: this node dialed the route because its URL is a configured seed (``routes``)
    is_configured: bool = False


@attrs.frozen
class AccountInfo:
    """One account (:meth:`meshgate.Gateway.accountz`)."""

    name: str
    clients: int
    #: client subscriptions (the node's own are not counted)
    subscriptions: int
    #: entries in the account's interest graph (local subscriptions and route interest)
    interest_entries: int
    in_msgs: int
    out_msgs: int


@attrs.frozen
class SubscriptionsInfo:
    """The interest graph (:meth:`meshgate.Gateway.subsz`; nats ``/subsz``)."""

    num_subscriptions: int
    num_interest_entries: int
    num_cache: int
    num_matches: int
    cache_hit_rate: float


@attrs.frozen
class ServerInfo:
    """Identity, limits and counters of a node (:meth:`meshgate.Gateway.varz`; nats ``/varz``)."""

    server_name: str
    cluster: str
    version: str
    #: when the node started, ISO 8601 UTC, and seconds since
    start: str
    uptime_seconds: float
    client_url: str | None
    cluster_url: str | None
    gateway_url: str | None
    max_payload: int
    max_pending: int
    max_connections: int
    ping_interval: float
    interest_mode: str
    interest_only_threshold: int
    accounts: int
    #: route URLs found to lead back to this node itself (a seed list may name it)
    self_urls: tuple[str, ...]
    #: messages on ``$`` subjects (game-layer control traffic) sent to gateways
    gateway_control_msgs: int
    statistics: Statistics
    #: the process's resident memory, in bytes (nats ``mem``)
    mem: int = 0
    #: the process's CPU use since the previous snapshot, in percent of one core (nats ``cpu``)
    cpu: float = 0.0
    #: CPU cores of the machine (nats ``cores``)
    cores: int = 0
    #: client connections accepted since the node started (nats ``total_connections``)
    total_connections: int = 0
    #: when the configuration was last loaded (start or reload), ISO 8601 UTC with
    #: microseconds (nats ``config_load_time``)
    config_load_time: str = ""
    #: every client listener's bound URL (``client_url`` is the first)
    client_urls: tuple[str, ...] = ()
    #: per ``quic://`` listener (its bound URL), its counters: packets refused or
    #: dropped, retries, handshakes and connections refused, streams refused, floods,
    #: datagrams ignored, sent and dropped (:class:`meshgate.transports.QuicStats`)
    quic: dict[str, dict[str, int]] = attrs.field(factory=dict)
    #: lz4 on route and gateway links: ``links`` compressed so far, bytes before
    #: (``raw_in``/``raw_out``) and after (``wire_in``/``wire_out``) and decompression
    #: bombs ``refused`` (:meth:`meshgate.Gateway.compression`)
    compression: dict[str, int] = attrs.field(factory=dict)
