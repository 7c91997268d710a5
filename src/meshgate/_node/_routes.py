"""The route mesh: a full mesh of routes between the nodes of one cluster.

Owns the route table, the gossip of cluster URLs (INFO) and the propagation of
local interest to peers (RSUB with queue weights, RUNSUB).  Messages from routes
are handled by the fan-out (``_fanout.py``, ``_route_message``).
"""

from __future__ import annotations

__all__ = ["RouteMesh"]

from typing import TYPE_CHECKING, Any

from .._errors import ErrorCode
from ..protocol import (
    Hello,
    Info,
    Opcode,
    Role,
    RouteSub,
    RouteUnsub,
    to_frame,
)
from ..subjects import is_valid_pattern, is_valid_subject
from ._conn import ConnState, RemoteInterest, RouteConnection

if TYPE_CHECKING:
    from ._core import NodeCore

_RSUB = int(Opcode.RSUB)
_RUNSUB = int(Opcode.RUNSUB)
_INFO = int(Opcode.INFO)


class RouteMesh:
    """Routes to the other nodes of this node's cluster."""

    def __init__(self, core: NodeCore) -> None:
        self.core = core
        #: route peers by node name (registered after the handshake)
        self.peers: dict[str, RouteConnection] = {}
        #: this node's route listener URL, once bound
        self.cluster_url: str | None = None
        #: this node's client listener URL, once bound (told to peers, then to clients)
        self.client_url: str | None = None
        #: this node's (first) NATS port URL, once bound
        self.nats_url: str | None = None
        #: our own route URLs as seen by peers (a seed list may include ourselves)
        self.self_urls: set[str] = set()

    def opened(self, conn: RouteConnection) -> None:
        """A route connection was dialed (our HELLO, with the cluster secret, goes first) or
        accepted (our HELLO waits until the dialer has authenticated)."""
        core = self.core
        if conn.dialed:
            core._append(conn, self._hello_frame())
        if core.draining:
            core._close_quietly(conn, "node is shutting down")

    def _hello_frame(self) -> bytes:
        core = self.core
        gw_url = core.gateways.gateway_url
        urls = (
            (self.cluster_url, gw_url or "", self.client_url or "", self.nats_url or "")
            if self.cluster_url
            else ()
        )
        return core.hello_frame(Role.ROUTE, urls, token=core.config.cluster_secret)

    def hello(self, conn: RouteConnection, hello: Hello) -> None:
        """The peer's HELLO: same cluster, not ourselves, one route per peer."""
        core = self.core
        cfg = core.config
        if hello.role != Role.ROUTE:
            core._fail(
                conn,
                ErrorCode.HANDSHAKE_REFUSED,
                f"role {hello.role!r} cannot use the cluster port (clients use the client port)",
            )
            return
        if hello.cluster != cfg.cluster:
            core._fail(
                conn,
                ErrorCode.HANDSHAKE_REFUSED,
                f"route from cluster {hello.cluster!r}; this node is in cluster {cfg.cluster!r}",
            )
            return
        secret = cfg.cluster_secret
        if secret is not None and not core.check_secret(conn, hello.token, secret, "route"):
            return
        if hello.name == cfg.name:
            if hello.urls:
                self.self_urls.add(hello.urls[0])
            core._close_quietly(conn, "route to self")
            return
        conn.peer = hello.name
        conn.peer_url = hello.urls[0] if hello.urls else None
        conn.peer_gateway_url = hello.urls[1] if len(hello.urls) > 1 and hello.urls[1] else None
        conn.peer_client_url = hello.urls[2] if len(hello.urls) > 2 and hello.urls[2] else None
        conn.peer_nats_url = hello.urls[3] if len(hello.urls) > 3 and hello.urls[3] else None
        existing = self.peers.get(hello.name)
        if existing is not None:
            # both nodes may dial each other at once: the connection dialed by the node
            # with the lower name wins, on both sides alike
            lower = min(cfg.name, hello.name)
            new_dialer = cfg.name if conn.dialed else hello.name
            old_dialer = cfg.name if existing.dialed else hello.name
            if old_dialer == lower and new_dialer != lower:
                conn.peer = None
                core._close_quietly(conn, f"duplicate route to {hello.name}")
                return
            core._close_quietly(existing, f"route to {hello.name} replaced")
        self.peers[hello.name] = conn
        core.pending.routes_changed = True
        conn.state = ConnState.OPEN
        if conn.peer_client_url:
            core.clients.tell_urls()
        if conn.peer_nats_url:
            core.nats.tell_urls()
        if not conn.dialed:
            core._append(conn, self._hello_frame())  # the dialer authenticated: answer
        # our whole local interest, then gossip of every cluster URL we know
        enc = core.encoder
        for (account, pattern, queue), n in core.clients.local_keys.items():
            core._append(conn, enc.encode(RouteSub(account, pattern, queue, n)))
        self._gossip()
        for cluster, urls in core.gateways.urls.items():
            core._append(conn, enc.encode(Info(cluster, (), tuple(sorted(urls)))))

    def control(self, conn: RouteConnection, op: int, f: tuple[Any, ...]) -> None:
        """RSUB ``(op, account, pattern, queue, weight)``, RUNSUB, INFO."""
        if op == _RSUB:
            self._route_sub(conn, f[1], f[2], f[3], f[4])
        elif op == _RUNSUB:
            self._route_unsub(conn, f[1], f[2], f[3])
        elif op == _INFO:
            info = to_frame(f)
            assert isinstance(info, Info)
            self._info(conn, info)

    def _gossip(self) -> None:
        core = self.core
        urls = sorted(
            {c.peer_url for c in self.peers.values() if c.peer_url}
            | ({self.cluster_url} if self.cluster_url else set())
        )
        frame = core.encoder.encode(Info(core.config.cluster, tuple(urls), ()))
        self.broadcast(frame)

    def broadcast(self, frame: bytes) -> None:
        """Queue ``frame`` on every open route."""
        for c in self.peers.values():
            if c.state is ConnState.OPEN:
                self.core._append(c, frame)

    def _info(self, conn: RouteConnection, info: Info) -> None:
        core = self.core
        if info.cluster != core.config.cluster:
            # gateway gossip relayed by a peer of this cluster
            core.gateways.learn(info.cluster, info.gateway_urls, from_route=True)
            return
        known = self.connected_urls() | self.self_urls
        if self.cluster_url:
            known.add(self.cluster_url)
        dial = core.pending.dial_routes
        for url in info.route_urls:
            if url not in known and url not in dial:
                dial.append(url)

    def client_urls(self) -> tuple[str, ...]:
        """Client URLs of this node and of every route peer (for clients to fail over)."""
        urls = {c.peer_client_url for c in self.peers.values() if c.peer_client_url}
        if self.client_url:
            urls.add(self.client_url)
        return tuple(sorted(urls))

    def nats_urls(self) -> tuple[str, ...]:
        """NATS port URLs of this node and of every route peer (``connect_urls``)."""
        urls = {c.peer_nats_url for c in self.peers.values() if c.peer_nats_url}
        if self.nats_url:
            urls.add(self.nats_url)
        return tuple(sorted(urls))

    def connected_urls(self) -> set[str]:
        """Cluster URLs of the peers this node has a route to."""
        return {c.peer_url for c in self.peers.values() if c.peer_url}

    def _route_sub(
        self, conn: RouteConnection, account: str, pattern: str, queue: str | None, weight: int
    ) -> None:
        core = self.core
        if not is_valid_pattern(pattern) or (queue is not None and not is_valid_subject(queue)):
            core._fail(conn, ErrorCode.INVALID_SUBJECT, f"invalid route interest {pattern!r}")
            return
        if account not in core.known_accounts:
            core.permission_violations += 1
            core.error(conn, ErrorCode.PERMISSION_DENIED, f"unknown account {account!r}")
            return
        key = (account, pattern, queue)
        entry = conn.remote.get(key)
        if entry is None:
            entry = conn.remote[key] = RemoteInterest(conn, account, pattern, queue, 1)
            if core.graph.add(account, pattern, entry, queue):
                core.gateways.on_cluster_key(account, pattern, queue, added=True)
        # weights are absolute: a restarted peer re-sending its counts is not double counted
        entry.weight = max(1, weight)

    def _route_unsub(
        self, conn: RouteConnection, account: str, pattern: str, queue: str | None
    ) -> None:
        core = self.core
        entry = conn.remote.pop((account, pattern, queue), None)
        if entry is not None and core.graph.remove(account, pattern, entry, queue):
            core.gateways.on_cluster_key(account, pattern, queue, added=False)

    def retire(self, conn: RouteConnection) -> None:
        """Forget the peer's interest and its place in the table; wake its PONG waiters."""
        core = self.core
        for entry in conn.remote.values():
            if core.graph.remove(entry.account, entry.pattern, entry, entry.queue):
                core.gateways.on_cluster_key(entry.account, entry.pattern, entry.queue, added=False)
        conn.remote.clear()
        if conn.peer is not None and self.peers.get(conn.peer) is conn:
            del self.peers[conn.peer]
            core.pending.routes_changed = True
        core._wake_pong_waiters(conn)

    def on_local_key(self, account: str, pattern: str, queue: str | None, n: int) -> None:
        """A local key's count changed to ``n``: tell every route (plain keys on 0<->1 only,
        queue keys with their weight)."""
        if not self.peers:
            return
        enc = self.core.encoder
        if n == 0:
            frame = enc.encode(RouteUnsub(account, pattern, queue))
        elif queue is not None or n == 1:
            frame = enc.encode(RouteSub(account, pattern, queue, n))
        else:
            return
        self.broadcast(frame)
