"""The fan-out: where every message entering the node goes (the hot path, one file).

A message is routed one hop at a time, so nothing loops and nothing arrives twice
(docs/concepts.md, "Routing rules"):

==============================  ======================================  ======================
a message entering from         goes to                                 entry point
==============================  ======================================  ======================
a client or replicant (PUB)     local subscribers, each route peer      ``publish``
                                with interest (one copy per peer), each
                                remote cluster with interest (one copy
                                per cluster, on the outbound gateway)
the node itself (``inject``)    as a client's                           ``inject``
a route peer (RMSG), the hub    local subscribers only; only the        ``route_message``
                                queue groups named in the frame
a gateway (GMSG)                local subscribers and route peers,      ``gateway_message``
                                never another gateway; named groups
a routed reply (``_GR_.``)      straight to its origin node             ``_reply_routed``
==============================  ======================================  ======================

Queue groups: one member per group super-cluster wide.  The ingress node picks a
member of its own cluster (local or behind a route, weighted by member count); a
group nobody in the cluster has goes to the lowest-RTT remote cluster that has it,
named in the frame so no cluster serves it twice.

The entry points only validate and count what comes in; every delivery decision is
made by one function, :meth:`FanOut.results` (nats-server's ``processMsgResults``),
told where the message came from.  ``tests/test_supercluster_model.py`` proves it
agrees with the one-hop table, ``tests/test_counters.py`` that every counter counts
each message once.  Raw frames are tuples (see ``protocol/_frames.py``):
RMSG/GMSG ``(op, queues, account, subject, reply, payload[, key[, priority]])``.

Publisher priority (issue 21; docs/scheduling.md, "Priority from the publisher"): a PUB
with a priority comes in by :meth:`FanOut.publish_prioritised`, which checks it and
sets ``Delivery.priority`` while the message is routed; keyed state goes to route and
gateway peers that announced ``keyed-relay`` with its key and priority.  A message
without a priority pays nothing more than a ``key is not None`` check per peer.
"""

from __future__ import annotations

__all__ = ["FROM_CLIENT", "FROM_GATEWAY", "FROM_ROUTE", "FanOut", "permitted"]

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .._errors import ErrorCode
from .._reserved import (
    GR_PREFIX,
    INPUT_PREFIX,
    PROV_PREFIX,
    parse_routed_reply,
    routed_reply,
)
from ..config import GatewayConfig, Permissions
from ..interest import InterestGraph
from ..protocol import MAX_PRIORITY, MIN_PRIORITY, Headered, Opcode
from ..subjects import is_valid_subject, match
from ._backbone import hub_message
from ._conn import (
    Account,
    ClientConnection,
    Connection,
    ConnState,
    InboundGateway,
    LocalSubscription,
    OutboundGateway,
    PeerConnection,
    RemoteInterest,
    RouteConnection,
)
from ._delivery import Delivery
from ._outbox import Outbox, Settings
from ._trace import KIND_CLIENT, KIND_GATEWAY, KIND_LEAF, KIND_ROUTER, Trace, Tracer

if TYPE_CHECKING:
    from ..interest import Match
    from ._hooks import Layer

_VALID_CACHE_MAX = 16384
_PERM_CACHE_MAX = 1024
_RMSG = Opcode.RMSG
_GMSG = Opcode.GMSG


_INBOX = "_INBOX."
#: the no-responders answer: an empty message with a 503 status (nats-server's)
_NO_RESPONDERS = Headered(b"", b"NATS/1.0 503\r\n\r\n")
_OPEN = ConnState.OPEN

#: where a message entered the node (the one-hop rule depends on it)
FROM_CLIENT = 0
FROM_ROUTE = 1
FROM_GATEWAY = 2


def permitted(perm: Permissions, subject: str) -> bool:
    """``subject`` may be published under ``perm``: the subject finally delivered (a
    ``_GR_`` reply unwrapped) matches an allow pattern (or is a response, with
    ``allow_responses``) and no deny pattern."""
    if subject.startswith(GR_PREFIX):
        parsed = parse_routed_reply(subject)
        if parsed is not None:
            subject = parsed[2]
    if any(match(p, subject) for p in perm.deny):
        return False
    return any(match(p, subject) for p in perm.allow) or (
        perm.allow_responses and subject.startswith(_INBOX)
    )


def _permitted(conn: ClientConnection, subject: str) -> bool:
    """``permitted`` for ``conn``'s publish permissions, cached per connection."""
    cache = conn.perm_cache
    ok = cache.get(subject)
    if ok is None:
        assert conn.pub_perm is not None
        ok = permitted(conn.pub_perm, subject)
        if len(cache) >= _PERM_CACHE_MAX:
            cache.clear()
        cache[subject] = ok
    return ok


def _pub_allowed(outbox: Outbox, conn: ClientConnection, subject: str, reply: str | None) -> bool:
    """The subject (unwrapped) and the reply subject are both permitted."""
    if not _permitted(conn, subject):
        outbox.deny(conn, f"publish to {subject!r} denied")
        return False
    if reply is not None and not reply.startswith(_INBOX) and not _permitted(conn, reply):
        outbox.deny(conn, f"reply subject {reply!r} denied")
        return False
    return True


def _remote_wanting(order: list[OutboundGateway], account: str, subject: str) -> int:
    """How many remote clusters (0, 1, or 2 for more) might have a subscriber for
    ``subject``: their gateway has not said they have none (optimistic), or has
    said they have one (interest-only, queue groups)."""
    n = 0
    for c in order:
        oi = c.out_interest
        if oi is not None and (
            oi.should_forward(account, subject) or oi.queue_groups(account, subject)
        ):
            n += 1
            if n == 2:
                break
    return n


_Entry = LocalSubscription | RemoteInterest


class FanOut:
    """Where every message entering the node goes: thin entry points per origin, and
    one function that computes the deliveries (:meth:`results`)."""

    def __init__(
        self,
        settings: Settings,
        outbox: Outbox,
        graph: InterestGraph[_Entry],
        delivery: Delivery,
        accounts: dict[str, Account],
        route_peers: dict[str, RouteConnection],
        outbound: dict[str, OutboundGateway],
        gateway_order: list[OutboundGateway],
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.graph = graph
        self.delivery = delivery
        self._delivery = delivery
        self._deliver = delivery.deliver
        self._deliver_untraced = delivery.deliver
        self.encoder = outbox.encoder
        self._writable = outbox.writable
        #: per-account counters (the node's table)
        self.accounts = accounts
        # the meshes' tables (each the same object for the node's whole life)
        self._route_peers = route_peers
        self._outbound = outbound
        self._gw_order = gateway_order
        #: the game layer, if one is plugged in (``$`` publishes and ``$`` replies)
        self.layer: Layer | None = None
        self._valid: dict[str, None] = {}
        self._rr = 0
        #: message counts and payload bytes in and out (nats-server's ``in_msgs``,
        #: ``out_msgs``, ``in_bytes``, ``out_bytes``)
        self.messages_in = 0
        self.messages_out = 0
        self.payload_in = 0
        self.payload_out = 0
        #: publisher priorities honoured, and ignored (the connection's credential grants
        #: none, or a peer relayed one out of range; issue 21)
        self.priority_honoured = 0
        self.priority_ignored = 0
        #: messages on ``$`` subjects (the game layer's control traffic) sent to gateways
        self.gateway_control_msgs = 0
        # the ``queues`` of a gateway copy that names no group: None, or () while a
        # request that asks the remote cluster to answer no-responders is sent
        self._gateway_queues: tuple[str, ...] | None = None
        #: message tracing (``Nats-Trace-Dest``, ``traceparent``): see ``_trace.py``
        self.tracer = Tracer(settings.config.name, settings.config.cluster)
        #: the trace of the message being routed (None: not traced)
        self.trace: Trace | None = None
        self._in_trace = False
        self.reconfigure(settings.config)

    def reconfigure(self, config: GatewayConfig) -> None:
        """The limits of ``config`` apply to what comes in from now on."""
        self._max_payload = config.max_payload

    # -- validation (cached) ------------------------------------------------------------------

    def _validate(self, conn: Connection, subject: str) -> bool:
        if is_valid_subject(subject):
            if len(self._valid) >= _VALID_CACHE_MAX:
                self._valid.clear()
            self._valid[subject] = None
            return True
        self.outbox.fail(conn, ErrorCode.INVALID_SUBJECT, f"invalid subject {subject!r}")
        return False

    def _peer_input(
        self,
        conn: Connection,
        account: str,
        subject: str,
        reply: str | None,
        payload: bytes,
        what: str,
    ) -> Account | None:
        """A message from another node passes the same checks as a client's; counted in
        (connection, node and account, as nats-server's account totals include route,
        gateway and leaf traffic).  Returns its account's counters (None: not served
        here, or refused: see ``conn.state``)."""
        valid = self._valid
        if subject not in valid and not self._validate(conn, subject):
            return None
        if reply is not None and reply not in valid and not self._validate(conn, reply):
            return None
        size = len(payload)
        if size > self._max_payload:
            self.outbox.fail(conn, ErrorCode.PAYLOAD_TOO_LARGE, f"{what} message above max_payload")
            return None
        conn.messages_in += 1
        conn.payload_in += size
        self.messages_in += 1
        self.payload_in += size
        acct = self.accounts.get(account)
        if acct is not None:
            acct.messages_in += 1
        return acct

    # -- entry points ---------------------------------------------------------------------------

    def publish(
        self,
        conn: ClientConnection,
        subject: str,
        reply: str | None,
        payload: bytes,
        key: str | None,
    ) -> None:
        """A client's (or replicant's) PUB: checked, counted in, then routed."""
        size = len(payload)
        if size > self._max_payload:
            self.outbox.fail(
                conn,
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"payload of {size} bytes exceeds max_payload={self._max_payload}",
            )
            return
        valid = self._valid
        if subject not in valid and not self._validate(conn, subject):
            return
        if reply is not None and reply not in valid and not self._validate(conn, reply):
            return
        if conn.pub_perm is not None and not _pub_allowed(self.outbox, conn, subject, reply):
            return
        acct = conn.account
        assert acct is not None
        conn.messages_in += 1
        conn.payload_in += size
        acct.messages_in += 1
        self.messages_in += 1
        self.payload_in += size
        if subject[0] == "$" or (reply is not None and reply[0] == "$"):
            layer = self.layer
            if layer is not None:
                if layer.on_dollar_publish(conn, acct.name, subject, reply, payload):
                    return
            elif subject.startswith(INPUT_PREFIX):  # an input with no owner to go to
                self.outbox.deny(
                    conn, f"publish to {subject!r} denied: inputs need a node with replicants=True"
                )
                return
        if type(payload) is Headered and not self._in_trace and self._wants_trace(payload):
            self._traced(
                KIND_CLIENT,
                conn,
                conn.name,
                acct.name,
                subject,
                payload,
                self.inject,
                (
                    acct,
                    subject,
                    reply,
                    payload,
                    key,
                    conn if reply and conn.no_responders else None,
                ),
            )
            return
        self.inject(
            acct, subject, reply, payload, key, conn if reply and conn.no_responders else None
        )

    def publish_prioritised(
        self,
        conn: ClientConnection,
        subject: str,
        reply: str | None,
        payload: bytes,
        key: str | None,
        priority: float | None,
    ) -> None:
        """A PUB with a publisher priority.  Out of range (negative, NaN, infinite,
        above ``MAX_PRIORITY``): an error frame to ``conn``, which is closed, as for any
        malformed field.  From a connection whose credential grants none
        (``max_priority`` 0): the message goes without it (``priority_ignored``).
        Else it is lowered to the grant, raised to ``MIN_PRIORITY``, and weighs on
        every budgeted receiver's scheduler while the message is routed."""
        if priority is None or key is None:  # a priority weighs keyed state only
            self.publish(conn, subject, reply, payload, key)
            return
        p = float(priority)
        if not 0.0 <= p <= MAX_PRIORITY:  # NaN fails both comparisons
            self.outbox.fail(
                conn,
                ErrorCode.MALFORMED,
                f"priority {priority!r} is not a number from 0 to {MAX_PRIORITY:g}",
            )
            return
        grant = conn.max_priority
        if not grant:
            self.priority_ignored += 1
            self.publish(conn, subject, reply, payload, key)
            return
        self.priority_honoured += 1
        self._with_priority(
            p if p < grant else grant, self.publish, conn, subject, reply, payload, key
        )

    def _peer_priority(self, priority: float) -> bool:
        """A priority a peer node relayed (the publisher's node checked its grant): True
        if it is in range; out of range (a bad peer): counted in ``priority_ignored``,
        and the message goes on without it."""
        if 0.0 <= priority <= MAX_PRIORITY:  # NaN fails both comparisons
            return True
        self.priority_ignored += 1
        return False

    def _with_priority(self, p: float, entry: Callable[..., None], *args: Any) -> None:
        """Route one message through ``entry`` with publisher priority ``p``."""
        dlv = self._delivery
        dlv.priority = p if p > MIN_PRIORITY else MIN_PRIORITY
        try:
            entry(*args)
        finally:
            dlv.priority = None

    def _no_responders(self, conn: ClientConnection, reply: str) -> None:
        """Nobody can receive a request from ``conn``, which asked to be told (a HELLO
        feature or NATS ``no_responders``): a 503 status message on its reply subject,
        to its own subscription, at once (as nats-server answers NATS clients)."""
        for sub in conn.subs.values():
            if sub.queue is None and match(sub.pattern, reply):
                frame = conn.notice_bytes(self.encoder, sub.sid, reply, None, _NO_RESPONDERS)
                if frame is not None:
                    self.outbox.append(conn, frame)
                return

    def inject(
        self,
        acct: Account,
        subject: str,
        reply: str | None,
        payload: bytes,
        key: str | None,
        requester: ClientConnection | None = None,
    ) -> None:
        """Route a message entering this node from a client (after :meth:`publish`'s
        checks) or from the node itself."""
        account = acct.name
        if (
            subject[0] == "_"
            and subject.startswith(GR_PREFIX)
            and self._reply_routed(account, subject, reply, payload)
        ):
            return
        index = self.graph.index(account)
        m = index.match(subject) if index is not None else None
        if requester is not None and reply is not None and (m is None or not (m.plain or m.queues)):
            # a request that asked to hear of no responders, and nobody in this cluster
            remote = _remote_wanting(self._gw_order, account, subject)
            if not remote:
                self._no_responders(requester, reply)  # nobody anywhere: say so now
                return
            if remote == 1:
                # its one copy goes to one remote cluster, which answers no-responders
                # itself if nobody there receives it (an empty ``queues`` asks it to)
                self._gateway_queues = ()
                try:
                    self.results(m, acct, account, subject, reply, payload, key, FROM_CLIENT, None)
                finally:
                    self._gateway_queues = None
                return
        self.results(m, acct, account, subject, reply, payload, key, FROM_CLIENT, None)

    def route_message(
        self,
        conn: Connection,
        queues: tuple[str, ...] | None,
        account: str,
        subject: str,
        reply: str | None,
        payload: bytes,
        key: str | None = None,
        priority: float | None = None,
    ) -> None:
        """A message relayed by a route peer (or the backbone hub): local subscribers
        only, named queue groups only.  Keyed state carries its ``key`` (and publisher
        ``priority``) from peers that relay them."""
        if priority is not None and self._delivery.priority is None:
            if self._peer_priority(priority):
                args = (conn, queues, account, subject, reply, payload, key, priority)
                self._with_priority(priority, self.route_message, *args)
                return
            priority = None
        if type(payload) is Headered and not self._in_trace and self._wants_trace(payload):
            assert isinstance(conn, PeerConnection)
            self._traced(
                KIND_LEAF if conn.leaf else KIND_ROUTER,
                conn,
                conn.peer or "",
                account,
                subject,
                payload,
                self.route_message,
                (conn, queues, account, subject, reply, payload, key, priority),
            )
            return
        acct = self._peer_input(conn, account, subject, reply, payload, "route")
        if conn.state is not _OPEN:
            return
        if subject[0] == "_" and subject.startswith(GR_PREFIX):
            parsed = parse_routed_reply(subject)
            if parsed is None:
                return
            cluster, node, subject = parsed
            cfg = self.settings.config
            if cluster != cfg.cluster or node != cfg.name:
                return  # not ours: never re-routed from a route
        index = self.graph.index(account)
        if index is None:
            return
        m = index.match(subject)
        self.results(m, acct, account, subject, reply, payload, key, FROM_ROUTE, queues)

    def gateway_message(
        self,
        conn: InboundGateway,
        queues: tuple[str, ...] | None,
        account: str,
        subject: str,
        reply: str | None,
        payload: bytes,
        key: str | None = None,
        priority: float | None = None,
    ) -> None:
        """A message from another cluster: local subscribers and route peers, never
        gateways; with no local interest, the sender is told (optimistic mode).  Keyed
        state carries its ``key`` (and publisher ``priority``), as from a route."""
        if priority is not None and self._delivery.priority is None:
            if self._peer_priority(priority):
                args = (conn, queues, account, subject, reply, payload, key, priority)
                self._with_priority(priority, self.gateway_message, *args)
                return
            priority = None
        if type(payload) is Headered and not self._in_trace and self._wants_trace(payload):
            self._traced(
                KIND_GATEWAY,
                conn,
                conn.remote_cluster or "",
                account,
                subject,
                payload,
                self.gateway_message,
                (conn, queues, account, subject, reply, payload, key, priority),
            )
            return
        acct = self._peer_input(conn, account, subject, reply, payload, "gateway")
        if conn.state is not _OPEN:
            return
        if (
            subject[0] == "_"
            and subject.startswith(GR_PREFIX)
            and self._reply_routed(account, subject, reply, payload)
        ):
            return
        index = self.graph.index(account)
        m = index.match(subject) if index is not None else None
        n = self.results(m, acct, account, subject, reply, payload, key, FROM_GATEWAY, queues)
        if not n and queues == () and reply is not None and account in self.settings.known_accounts:
            # the request's only copy, from a requester that asked to hear of no
            # responders, and nobody in this cluster got it: answer on its routed reply
            self._reply_routed(account, reply, None, _NO_RESPONDERS)
        if (m is None or not m.plain) and account in self.settings.known_accounts:
            ii = conn.in_interest
            assert ii is not None
            enc = self.encoder
            for f in ii.on_unwanted(account, subject):
                self.outbox.append(conn, enc.encode(f))

    # -- the one fan-out ----------------------------------------------------------------------

    def results(
        self,
        m: Match[_Entry] | None,
        acct: Account | None,
        account: str,
        subject: str,
        reply: str | None,
        payload: bytes,
        key: str | None,
        source: int,
        queues: tuple[str, ...] | None,
    ) -> int:
        """Every delivery of one message whose subject matched ``m`` in ``account``, by
        where it came from (``source``): local subscribers always; route peers with
        interest unless it came from a route; remote clusters only if it came from a
        client.  Queue groups: one member each; from a client any group, else only
        the ``queues`` the frame names (from a route, only members on this node).
        Counts what went out (node, account); returns the number of copies."""
        n = 0
        plen = len(payload)
        if m is not None and (m.plain or m.queues):
            deliver = self._deliver
            tail: bytes | None = None
            peers: dict[Connection, list[str]] | None = None
            for sub in m.plain:
                if sub.prefix is not None:
                    if tail is None:
                        tail = self.encoder.message_tail(subject, reply, payload)
                        self._delivery.cur = (subject, reply, payload, plen)
                    n += deliver(sub, tail, key)
                elif source != FROM_ROUTE:
                    if peers is None:
                        peers = {}
                    if sub.conn not in peers:
                        peers[sub.conn] = []
            if m.queues and (source == FROM_CLIENT or queues):
                for q, members in m.queues:
                    if source == FROM_CLIENT:
                        chosen = self._pick(members)
                    else:
                        assert queues is not None
                        if q not in queues:
                            continue
                        if source == FROM_ROUTE:
                            local = [x for x in members if x.prefix is not None]
                            if not local:
                                continue  # the group left this node meanwhile: dropped
                            chosen = self._pick(local)
                        else:
                            chosen = self._pick(members)
                    if chosen.prefix is not None:
                        if tail is None:
                            tail = self.encoder.message_tail(subject, reply, payload)
                            self._delivery.cur = (subject, reply, payload, plen)
                        n += deliver(chosen, tail, key)
                    else:
                        if peers is None:
                            peers = {}
                        peers.setdefault(chosen.conn, []).append(q)
            if peers:
                n += self._to_routes(peers, account, subject, reply, payload, key)
            if reply is not None and reply[0] == "$" and self.layer is not None:
                self.layer.on_dollar_reply(reply, subject, m.plain)
        if source == FROM_CLIENT and self._outbound:
            served = [q for q, _ in m.queues] if m is not None else ()
            n += self._to_gateways(account, subject, reply, payload, served, key)
        if n:
            self.messages_out += n
            self.payload_out += n * plen
            if acct is not None:
                acct.messages_out += n
        return n

    def has_interest(self, conn: ClientConnection, subject: str) -> bool:
        """Would a message on ``subject`` from ``conn`` reach anyone: a subscription of
        this node or a route peer, or a remote cluster that has not said it does not
        want it (gateways start optimistic)?"""
        assert conn.account is not None
        account = conn.account.name
        index = self.graph.index(account)
        if index is not None:
            m = index.match(subject)
            if m.plain or m.queues:
                return True
        return _remote_wanting(self._gw_order, account, subject) > 0

    def _pick(self, members: Sequence[_Entry]) -> _Entry:
        """One queue member, round robin weighted by each entry's member count."""
        self._rr += 1
        if len(members) == 1:
            return members[0]
        total = 0
        for m in members:
            total += m.weight
        i = self._rr % total
        for m in members:
            i -= m.weight
            if i < 0:
                return m
        return members[-1]

    # -- to other nodes -----------------------------------------------------------------------

    def _to_routes(
        self,
        peers: dict[Connection, list[str]],
        account: str,
        subject: str,
        reply: str | None,
        payload: bytes,
        key: str | None = None,
    ) -> int:
        """One copy per route peer (the backbone hub is one), naming the queue groups it
        should serve; keyed state with its key and priority to peers that take them.
        Returns the number of copies."""
        trace = self.trace
        if trace is not None:
            return self._to_routes_traced(trace, peers, account, subject, reply, payload, key)
        enc = self.encoder
        tail: bytes | None = None
        plain_prefix: bytes | None = None
        trailer: bytes | None = None
        size = len(payload)
        writable = self._writable
        for peer, queues in peers.items():
            out = peer.out
            if peer.leaf:
                out += hub_message(account, subject, reply, queues, payload)
            else:
                if tail is None:
                    tail = enc.relay_tail(account, subject, reply, payload)
                if queues:
                    prefix = enc.relay_prefix(_RMSG, tuple(queues))
                else:
                    if plain_prefix is None:
                        plain_prefix = enc.relay_prefix(_RMSG, None)
                    prefix = plain_prefix
                if key is not None and peer.relay_keys:  # keyed state: key, priority
                    priority = self._delivery.priority
                    if trailer is None:
                        trailer = enc.relay_trailer(key, priority)
                    out += enc.keyed_prefix(prefix, priority)
                    out += tail
                    out += trailer
                else:
                    out += prefix
                    out += tail
            peer.messages_out += 1
            peer.payload_out += size
            if not peer.dirty:
                peer.dirty = True
                writable.append(peer)
        return len(peers)

    def _to_gateways(
        self,
        account: str,
        subject: str,
        reply: str | None,
        payload: bytes,
        served: list[str] | tuple[str, ...],
        key: str | None = None,
    ) -> int:
        """Send one copy to each remote cluster that wants it; queue groups not served yet
        go to the lowest-RTT cluster that has them, named in the frame.  Keyed state
        goes with its key and priority to clusters that take them."""
        enc = self.encoder
        tail: bytes | None = None
        trailer: bytes | None = None
        done: set[str] | None = None
        n = 0
        trace = self.trace
        for c in self._gw_order:
            oi = c.out_interest
            assert oi is not None
            plain = oi.should_forward(account, subject)
            groups: list[str] | None = None
            for q in oi.queue_groups(account, subject):
                if done is None:
                    done = set(served)
                if q not in done:
                    done.add(q)
                    if groups is None:
                        groups = []
                    groups.append(q)
            if not plain and groups is None:
                continue
            if tail is None:
                if (
                    reply is not None
                    and not reply.startswith(GR_PREFIX)
                    and not reply.startswith(PROV_PREFIX)  # a marker, not a reply address
                ):
                    # interest and data travel on different connections: the reply finds
                    # its way back through the origin node whatever the interest views say
                    cfg = self.settings.config
                    reply = routed_reply(cfg.cluster, cfg.name, reply)
                tail = enc.relay_tail(account, subject, reply, payload)
            queues = tuple(groups) if groups else self._gateway_queues
            prefix = enc.relay_prefix(_GMSG, queues)
            if trace is not None:
                copy = self._trace_gateway(trace, c, account, subject, reply, payload)
            else:
                copy = tail
            if key is not None and c.relay_keys:  # keyed state: its key and priority
                priority = self._delivery.priority
                if trailer is None:
                    trailer = enc.relay_trailer(key, priority)
                prefix = enc.keyed_prefix(prefix, priority)
                copy += trailer
            self._to_gateway(c, prefix, copy)
            c.payload_out += len(payload)
            n += 1
            if subject[0] == "$":
                self.gateway_control_msgs += 1
        return n

    # -- tracing (only messages with a trace header come here) ----------------------------------

    def _wants_trace(self, payload: Headered) -> bool:
        tracer = self.tracer
        headers = payload.headers
        return tracer.wanted(headers) or tracer.wanted_otel(headers)

    def _traced(
        self,
        kind: int,
        conn: Connection,
        name: str,
        account: str,
        subject: str,
        payload: Headered,
        entry: Callable[..., Any],
        args: tuple[Any, ...],
    ) -> None:
        """Route a message that asked for a trace through ``entry`` (the entry point it
        came in by) with its trace recording, then publish the trace event."""
        now = self.settings.now
        t = self.tracer.start(payload, now, kind, conn.id, name, account, subject)
        if t is not None and t.dest:
            dest = t.dest
            if (
                not is_valid_subject(dest)
                or "*" in dest
                or ">" in dest
                or dest.startswith(GR_PREFIX)
            ):
                t.dest = ""  # no event to an invalid destination; the message goes on
            elif (
                isinstance(conn, ClientConnection)
                and conn.pub_perm is not None
                and not _permitted(conn, dest)
            ):
                self.tracer.refused += 1
                self.outbox.deny(conn, f"trace destination {dest!r} denied")
                return
        self.trace = t
        self._in_trace = True
        if t is not None:
            self._deliver = self._deliver_traced  # local deliveries are recorded
        try:
            entry(*args)
        finally:
            self.trace = None
            self._in_trace = False
            self._deliver = self._deliver_untraced
        if t is None:
            return
        data = self.tracer.finish(t, now)
        if data is None:
            return
        acct = self.accounts.get(account)
        if acct is None:
            if account not in self.settings.known_accounts:
                return
            acct = Account(account)
        self.inject(acct, t.dest, None, data, None)

    def _deliver_traced(self, sub: LocalSubscription, tail: bytes, key: str | None) -> int:
        """The delivery to local subscription ``sub`` of a traced message: recorded,
        and made unless the trace is trace-only (the fan-out's ``deliver`` while a
        traced message is routed; the hot path never checks for a trace)."""
        trace = self.trace
        assert trace is not None
        c = sub.conn
        self.tracer.egress(
            trace, self.settings.now, KIND_CLIENT, c.id, c.name, sub.pattern, sub.queue
        )
        if trace.only:
            return 0
        return self._deliver_untraced(sub, tail, key)

    def _to_routes_traced(
        self,
        trace: Trace,
        peers: dict[Connection, list[str]],
        account: str,
        subject: str,
        reply: str | None,
        payload: bytes,
        key: str | None,
    ) -> int:
        """:meth:`_to_routes` for a traced message: each copy carries its own hop."""
        assert type(payload) is Headered
        tracer = self.tracer
        now = self.settings.now
        self.trace = None
        try:
            for peer, queues in peers.items():
                copy = tracer.hop_payload(trace, payload)
                name = peer.peer if isinstance(peer, PeerConnection) else None
                tracer.egress(
                    trace, now, KIND_LEAF if peer.leaf else KIND_ROUTER, peer.id, name or ""
                )
                self._to_routes({peer: queues}, account, subject, reply, copy, key)
        finally:
            self.trace = trace
        return len(peers)

    def _trace_gateway(
        self,
        trace: Trace,
        c: OutboundGateway,
        account: str,
        subject: str,
        reply: str | None,
        payload: bytes,
    ) -> bytes:
        """The tail of a traced message's copy to gateway ``c`` (its own hop)."""
        assert type(payload) is Headered
        tracer = self.tracer
        copy = tracer.hop_payload(trace, payload)
        tracer.egress(trace, self.settings.now, KIND_GATEWAY, c.id, c.expected_cluster)
        return self.encoder.relay_tail(account, subject, reply, copy)

    def _to_gateway(self, c: OutboundGateway, prefix: bytes, tail: bytes) -> None:
        out = c.out
        out += prefix
        out += tail
        c.messages_out += 1
        if not c.dirty:
            c.dirty = True
            self._writable.append(c)

    def _reply_routed(self, account: str, subject: str, reply: str | None, payload: bytes) -> bool:
        """Route ``_GR_.<cluster>.<node>.<reply>`` straight back to where the request came
        from, whatever the interest views say (they travel on other connections).
        Returns False if the subject is not a well-formed routed reply, or if the node's
        backbone is a nats-server (whose gateways route their own ``_GR_.`` replies)."""
        cfg = self.settings.config
        if cfg.backbone:
            return False
        parsed = parse_routed_reply(subject)
        if parsed is None:
            return False
        cluster, node, stripped = parsed
        if cluster != cfg.cluster:
            c = self._outbound.get(cluster)
            if c is not None:
                enc = self.encoder
                self._to_gateway(
                    c,
                    enc.relay_prefix(_GMSG, None),
                    enc.relay_tail(account, subject, reply, payload),
                )
                c.payload_out += len(payload)
                self.count_out(account, 1, len(payload))
            return True
        if node == cfg.name:
            index = self.graph.index(account)
            if index is not None:
                m = index.match(stripped)
                acct = self.accounts.get(account)
                self.results(m, acct, account, stripped, reply, payload, None, FROM_ROUTE, None)
            return True
        route = self._route_peers.get(node)
        if route is not None:
            n = self._to_routes({route: []}, account, subject, reply, payload)
            self.count_out(account, n, len(payload))
        return True

    def count_out(self, account: str, n: int, size: int) -> None:
        """``n`` copies of a message of ``size`` payload bytes went out in ``account``
        outside :meth:`results` (routed replies, the node's own notices)."""
        self.messages_out += n
        self.payload_out += n * size
        acct = self.accounts.get(account)
        if acct is not None:
            acct.messages_out += n
