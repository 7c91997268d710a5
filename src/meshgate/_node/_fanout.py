"""The fan-out: where every message entering the node goes (the hot path, one file).

A message is routed one hop at a time, so nothing loops and nothing arrives twice
(DESIGN §4):

==============================  ======================================  ======================
a message entering from         goes to                                 implemented by
==============================  ======================================  ======================
a client or replicant (PUB)     local subscribers, each route peer      ``_publish`` ->
                                with interest (one copy per peer), each ``_route_publish``
                                remote cluster with interest (one copy
                                per cluster, on the outbound gateway)
the node itself (``inject``)    as a client's                           ``_route_publish``
a route peer (RMSG)             local subscribers only; only the        ``_route_message``
                                queue groups named in the frame
a gateway (GMSG)                local subscribers and route peers,      ``_gateway_message``
                                never another gateway; named groups
a routed reply (``_GR_.``)      straight to its origin node             ``_reply_routed``
==============================  ======================================  ======================

Queue groups: one member per group super-cluster wide.  The ingress node picks a
member of its own cluster (local or behind a route, weighted by member count); a
group nobody in the cluster has goes to the lowest-RTT remote cluster that has it,
named in the frame so no cluster serves it twice.

The three entry loops are deliberately specialised (no per-message calls beyond
what each row needs); ``tests/test_supercluster_model.py`` proves they agree with
the one-hop table.  Raw frames are tuples (see ``protocol/_frames.py``):
RMSG/GMSG ``(op, queues, account, subject, reply, payload)``.
"""

from __future__ import annotations

__all__ = ["FanOut"]

from collections.abc import Sequence

from .._errors import ErrorCode
from .._reserved import GR_PREFIX, PROV_PREFIX, parse_routed_reply, routed_reply
from ..config import Permissions
from ..protocol import Opcode
from ..subjects import is_valid_subject, match
from ._conn import (
    Account,
    BackboneConnection,
    ClientConnection,
    Connection,
    InboundGateway,
    LocalSubscription,
    RemoteInterest,
    RouteConnection,
)
from ._delivery import Delivery

_VALID_CACHE_MAX = 16384
_PERM_CACHE_MAX = 1024
_RMSG = Opcode.RMSG
_GMSG = Opcode.GMSG


_INBOX = "_INBOX."


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


class FanOut(Delivery):
    """The hot path: publish from clients, messages from routes and gateways."""

    # -- validation (cached) ------------------------------------------------------------------

    def _validate(self, conn: Connection, subject: str) -> bool:
        if is_valid_subject(subject):
            if len(self._valid) >= _VALID_CACHE_MAX:
                self._valid.clear()
            self._valid[subject] = None
            return True
        self._fail(conn, ErrorCode.INVALID_SUBJECT, f"invalid subject {subject!r}")
        return False

    def _permitted(self, conn: ClientConnection, subject: str) -> bool:
        cache = conn.perm_cache
        ok = cache.get(subject)
        if ok is None:
            assert conn.pub_perm is not None
            ok = permitted(conn.pub_perm, subject)
            if len(cache) >= _PERM_CACHE_MAX:
                cache.clear()
            cache[subject] = ok
        return ok

    def _pub_allowed(self, conn: ClientConnection, subject: str, reply: str | None) -> bool:
        """The subject (unwrapped) and the reply subject are both permitted."""
        if not self._permitted(conn, subject):
            self.deny(conn, f"publish to {subject!r} denied")
            return False
        if reply is not None and not reply.startswith(_INBOX) and not self._permitted(conn, reply):
            self.deny(conn, f"reply subject {reply!r} denied")
            return False
        return True

    # -- from a client ------------------------------------------------------------------------

    def _publish(
        self,
        conn: ClientConnection,
        subject: str,
        reply: str | None,
        payload: bytes,
        key: str | None,
    ) -> None:
        size = len(payload)
        if size > self._max_payload:
            self._fail(
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
        if conn.pub_perm is not None and not self._pub_allowed(conn, subject, reply):
            return
        acct = conn.account
        assert acct is not None
        conn.messages_in += 1
        acct.messages_in += 1
        self.messages_in += 1
        conn.payload_in += size
        self.payload_in += size
        if (
            (subject[0] == "$" or (reply is not None and reply[0] == "$"))
            and self._layer is not None
            and self._layer.on_dollar_publish(conn, acct.name, subject, reply, payload)
        ):
            return
        self._route_publish(acct, subject, reply, payload, key)

    def _route_publish(
        self, acct: Account, subject: str, reply: str | None, payload: bytes, key: str | None
    ) -> None:
        """Route a message entering this node from a client (or from the node itself):
        local subscribers, interested route peers, interested remote clusters."""
        if (
            subject[0] == "_"
            and subject.startswith(GR_PREFIX)
            and self._reply_routed(acct.name, subject, reply, payload)
        ):
            return
        index = self.graph.index(acct.name)
        if index is None:
            if self._outbound:
                self._to_gateways(acct.name, subject, reply, payload, ())
            return
        m = index.match(subject)
        if not (m.plain or m.queues):
            if self._outbound:
                self._to_gateways(acct.name, subject, reply, payload, ())
            return
        tail = self.encoder.message_tail(subject, reply, payload)
        plen = len(payload)
        self._cur = (subject, reply, payload, plen)
        deliver = self._deliver
        n = 0
        peers: dict[Connection, list[str]] | None = None
        for sub in m.plain:
            if sub.prefix is not None:
                n += deliver(sub, tail, key)
            else:
                if peers is None:
                    peers = {}
                if sub.conn not in peers:
                    peers[sub.conn] = []
        for q, members in m.queues:
            chosen = self._pick(members)
            if chosen.prefix is not None:
                n += deliver(chosen, tail, key)
            else:
                if peers is None:
                    peers = {}
                peers.setdefault(chosen.conn, []).append(q)
        if peers:
            n += self._to_routes(peers, acct.name, subject, reply, payload)
        if reply is not None and reply[0] == "$" and self._layer is not None:
            self._layer.on_dollar_reply(reply, subject, m.plain)
        if self._outbound:
            n += self._to_gateways(acct.name, subject, reply, payload, [q for q, _ in m.queues])
        acct.messages_out += n
        self.messages_out += n
        self.payload_out += n * plen

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
        for c in self._gw_order:
            oi = c.out_interest
            if oi is not None and (
                oi.should_forward(account, subject) or oi.queue_groups(account, subject)
            ):
                return True
        return False

    def _pick(
        self, members: Sequence[LocalSubscription | RemoteInterest]
    ) -> LocalSubscription | RemoteInterest:
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

    def _to_routes(
        self,
        peers: dict[Connection, list[str]],
        account: str,
        subject: str,
        reply: str | None,
        payload: bytes,
    ) -> int:
        enc = self.encoder
        tail = enc.relay_tail(account, subject, reply, payload)
        plain_prefix: bytes | None = None
        size = len(payload)
        for peer, queues in peers.items():
            if type(peer) is BackboneConnection:
                peer.out += self.backbone.message(account, subject, reply, queues, payload)
                peer.messages_out += 1
                peer.payload_out += size
                if not peer.dirty:
                    peer.dirty = True
                    self._writable.append(peer)
                continue
            if queues:
                prefix = enc.relay_prefix(_RMSG, tuple(queues))
            else:
                if plain_prefix is None:
                    plain_prefix = enc.relay_prefix(_RMSG, None)
                prefix = plain_prefix
            out = peer.out
            out += prefix
            out += tail
            peer.messages_out += 1
            peer.payload_out += size
            if not peer.dirty:
                peer.dirty = True
                self._writable.append(peer)
        return len(peers)

    # -- from a route peer --------------------------------------------------------------------

    def _route_message(
        self,
        conn: RouteConnection | BackboneConnection,
        queues: tuple[str, ...] | None,
        account: str,
        subject: str,
        reply: str | None,
        payload: bytes,
    ) -> None:
        """A message relayed by a route peer (or the backbone): local subscribers only,
        named queue groups only."""
        valid = self._valid
        if subject not in valid and not self._validate(conn, subject):
            return
        if reply is not None and reply not in valid and not self._validate(conn, reply):
            return
        if len(payload) > self._max_payload:
            self._fail(conn, ErrorCode.PAYLOAD_TOO_LARGE, "route message above max_payload")
            return
        conn.messages_in += 1
        self.messages_in += 1
        size = len(payload)
        conn.payload_in += size
        self.payload_in += size
        if subject[0] == "_" and subject.startswith(GR_PREFIX):
            parsed = parse_routed_reply(subject)
            if parsed is None:
                return
            cluster, node, subject = parsed
            if cluster != self.config.cluster or node != self.config.name:
                return  # not ours: never re-routed from a route
        self._local_only(queues, account, subject, reply, payload)

    def _local_only(
        self,
        queues: tuple[str, ...] | None,
        account: str,
        subject: str,
        reply: str | None,
        payload: bytes,
    ) -> None:
        index = self.graph.index(account)
        if index is None:
            return
        m = index.match(subject)
        tail: bytes | None = None
        n = 0
        for sub in m.plain:
            if sub.prefix is not None:
                if tail is None:
                    tail = self.encoder.message_tail(subject, reply, payload)
                    self._cur = (subject, reply, payload, len(payload))
                n += self._deliver(sub, tail, None)
        if queues:
            for q, members in m.queues:
                if q not in queues:
                    continue
                local = tuple(x for x in members if x.prefix is not None)
                if not local:
                    continue  # the group left this node meanwhile: drop, never re-route
                if tail is None:
                    tail = self.encoder.message_tail(subject, reply, payload)
                    self._cur = (subject, reply, payload, len(payload))
                n += self._deliver(self._pick(local), tail, None)  # type: ignore[arg-type]
        if reply is not None and reply[0] == "$" and self._layer is not None:
            self._layer.on_dollar_reply(reply, subject, m.plain)
        acct = self.accounts.get(account)
        if acct is not None:
            acct.messages_out += n
        self.messages_out += n
        self.payload_out += n * len(payload)

    # -- to and from gateways -----------------------------------------------------------------

    def _to_gateways(
        self,
        account: str,
        subject: str,
        reply: str | None,
        payload: bytes,
        served: list[str] | tuple[str, ...],
    ) -> int:
        """Send one copy to each remote cluster that wants it; queue groups not served yet
        go to the lowest-RTT cluster that has them, named in the frame."""
        enc = self.encoder
        tail: bytes | None = None
        done: set[str] | None = None
        n = 0
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
                    reply = routed_reply(self.config.cluster, self.config.name, reply)
                tail = enc.relay_tail(account, subject, reply, payload)
            out = c.out
            out += enc.relay_prefix(_GMSG, tuple(groups) if groups else None)
            out += tail
            c.messages_out += 1
            c.payload_out += len(payload)
            n += 1
            if subject[0] == "$":
                self.gateway_control_msgs += 1
            if not c.dirty:
                c.dirty = True
                self._writable.append(c)
        return n

    def _gateway_message(
        self,
        conn: InboundGateway,
        queues: tuple[str, ...] | None,
        account: str,
        subject: str,
        reply: str | None,
        payload: bytes,
    ) -> None:
        """A message from another cluster: local subscribers and route peers, never gateways."""
        valid = self._valid
        if subject not in valid and not self._validate(conn, subject):
            return
        if reply is not None and reply not in valid and not self._validate(conn, reply):
            return
        if len(payload) > self._max_payload:
            self._fail(conn, ErrorCode.PAYLOAD_TOO_LARGE, "gateway message above max_payload")
            return
        conn.messages_in += 1
        self.messages_in += 1
        size = len(payload)
        conn.payload_in += size
        self.payload_in += size
        if (
            subject[0] == "_"
            and subject.startswith(GR_PREFIX)
            and self._reply_routed(account, subject, reply, payload)
        ):
            return
        index = self.graph.index(account)
        m = index.match(subject) if index is not None else None
        n = 0
        if m is not None and (m.plain or m.queues):
            tail: bytes | None = None
            peers: dict[Connection, list[str]] | None = None
            for sub in m.plain:
                if sub.prefix is not None:
                    if tail is None:
                        tail = self.encoder.message_tail(subject, reply, payload)
                        self._cur = (subject, reply, payload, len(payload))
                    n += self._deliver(sub, tail, None)
                else:
                    if peers is None:
                        peers = {}
                    if sub.conn not in peers:
                        peers[sub.conn] = []
            if queues:
                for q, members in m.queues:
                    if q not in queues:
                        continue
                    chosen = self._pick(members)
                    if chosen.prefix is not None:
                        if tail is None:
                            tail = self.encoder.message_tail(subject, reply, payload)
                            self._cur = (subject, reply, payload, len(payload))
                        n += self._deliver(chosen, tail, None)
                    else:
                        if peers is None:
                            peers = {}
                        peers.setdefault(chosen.conn, []).append(q)
            if peers:
                n += self._to_routes(peers, account, subject, reply, payload)
            if reply is not None and reply[0] == "$" and self._layer is not None:
                self._layer.on_dollar_reply(reply, subject, m.plain)
        self.messages_out += n
        self.payload_out += n * len(payload)
        acct = self.accounts.get(account)
        if acct is not None:
            acct.messages_out += n
        if (m is None or not m.plain) and account in self.known_accounts:
            ii = conn.in_interest
            assert ii is not None
            enc = self.encoder
            for f in ii.on_unwanted(account, subject):
                self._append(conn, enc.encode(f))

    def _reply_routed(self, account: str, subject: str, reply: str | None, payload: bytes) -> bool:
        """Route ``_GR_.<cluster>.<node>.<reply>`` straight back to where the request came
        from, whatever the interest views say (they travel on other connections).
        Returns False if the subject is not a well-formed routed reply, or if the node's
        backbone is a nats-server (whose gateways route their own ``_GR_.`` replies)."""
        if self.backbone.conn is not None or self.config.backbone:
            return False
        parsed = parse_routed_reply(subject)
        if parsed is None:
            return False
        cluster, node, stripped = parsed
        cfg = self.config
        if cluster != cfg.cluster:
            c = self._outbound.get(cluster)
            if c is not None:
                c.out += self.encoder.relay_prefix(_GMSG, None)
                c.out += self.encoder.relay_tail(account, subject, reply, payload)
                c.messages_out += 1
                c.payload_out += len(payload)
                if not c.dirty:
                    c.dirty = True
                    self._writable.append(c)
            return True
        if node == cfg.name:
            self._local_only(None, account, stripped, reply, payload)
            return True
        route = self._route_peers.get(node)
        if route is not None:
            self._to_routes({route: []}, account, subject, reply, payload)
        return True
