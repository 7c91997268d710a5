"""The route mesh: a full mesh of routes between the nodes of one cluster.

Owns the route table, the gossip of cluster URLs (INFO) and the propagation of
local interest to peers (RSUB with queue weights, RUNSUB).  Messages from routes
are handled by the fan-out (``_fanout.py``, ``FanOut.route_message``).
"""

from __future__ import annotations

__all__ = ["RouteMesh"]

from typing import Any

from .._errors import ErrorCode
from ..interest import InterestGraph
from ..protocol import (
    RELAY_KEYS_FEATURE,
    Hello,
    Info,
    Opcode,
    Role,
    RouteSub,
    RouteUnsub,
    to_frame,
)
from ..subjects import is_valid_pattern, is_valid_subject
from ._bus import Bus, Directory
from ._conn import ConnState, LocalSubscription, RemoteInterest, RouteConnection
from ._outbox import Outbox, Settings

_RSUB = int(Opcode.RSUB)
_RUNSUB = int(Opcode.RUNSUB)
_INFO = int(Opcode.INFO)


class RouteMesh:
    """Routes to the other nodes of this node's cluster."""

    def __init__(
        self,
        settings: Settings,
        outbox: Outbox,
        graph: InterestGraph[LocalSubscription | RemoteInterest],
        bus: Bus,
        directory: Directory,
        local_keys: dict[tuple[str, str, str | None], int],
        gateway_urls: dict[str, set[str]],
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.graph = graph
        self.bus = bus
        self.directory = directory
        #: route peers by node name (registered after the handshake; the directory's table)
        self.peers = directory.peers
        #: the local interest per key (the client port's table; read here)
        self.local_keys = local_keys
        #: gateway URLs per remote cluster (the gateway mesh's table; read here)
        self.gateway_urls = gateway_urls
        #: our own route URLs as seen by peers (a seed list may include ourselves)
        self.self_urls: set[str] = set()
        outbox.retirers[RouteConnection] = self.retire  # type: ignore[assignment]
        bus.on_local_key(self.on_local_key)
        bus.on_gateway_urls_changed(self.tell_gateway_urls)

    def opened(self, conn: RouteConnection) -> None:
        """A route connection was dialed (our HELLO, with the cluster secret, goes first) or
        accepted (our HELLO waits until the dialer has authenticated)."""
        if conn.dialed:
            self.outbox.append(conn, self._hello_frame())
        if self.settings.draining:
            self.outbox.close_quietly(conn, "node is shutting down")

    def _hello_frame(self) -> bytes:
        d = self.directory
        urls = (
            (
                d.cluster_url,
                d.gateway_url or "",
                d.client_url or "",
                d.nats_url or "",
                d.monitor_url or "",
            )
            if d.cluster_url
            else ()
        )
        return self.outbox.hello_frame(
            Role.ROUTE, urls, (RELAY_KEYS_FEATURE,), token=self.settings.config.cluster_secret
        )

    def hello(self, conn: RouteConnection, hello: Hello) -> None:
        """The peer's HELLO: same cluster, not ourselves, one route per peer."""
        out = self.outbox
        cfg = self.settings.config
        if hello.role != Role.ROUTE:
            out.fail(
                conn,
                ErrorCode.HANDSHAKE_REFUSED,
                f"role {hello.role!r} cannot use the cluster port (clients use the client port)",
            )
            return
        if hello.cluster != cfg.cluster:
            out.fail(
                conn,
                ErrorCode.HANDSHAKE_REFUSED,
                f"route from cluster {hello.cluster!r}; this node is in cluster {cfg.cluster!r}",
            )
            return
        secret = cfg.cluster_secret
        if secret is not None and not out.check_secret(conn, hello.token, secret, "route"):
            return
        if hello.name == cfg.name:
            if hello.urls:
                self.self_urls.add(hello.urls[0])
            out.close_quietly(conn, "route to self")
            return
        conn.peer = hello.name
        conn.relay_keys = RELAY_KEYS_FEATURE in hello.features
        conn.peer_url = hello.urls[0] if hello.urls else None
        conn.peer_gateway_url = hello.urls[1] if len(hello.urls) > 1 and hello.urls[1] else None
        conn.peer_client_url = hello.urls[2] if len(hello.urls) > 2 and hello.urls[2] else None
        conn.peer_nats_url = hello.urls[3] if len(hello.urls) > 3 and hello.urls[3] else None
        # the fifth URL (newer nodes): the peer's monitoring endpoint, for discovery
        conn.peer_monitor_url = hello.urls[4] if len(hello.urls) > 4 and hello.urls[4] else None
        existing = self.peers.get(hello.name)
        if existing is not None:
            # both nodes may dial each other at once: the connection dialed by the node
            # with the lower name wins, on both sides alike
            lower = min(cfg.name, hello.name)
            new_dialer = cfg.name if conn.dialed else hello.name
            old_dialer = cfg.name if existing.dialed else hello.name
            if old_dialer == lower and new_dialer != lower:
                conn.peer = None
                out.close_quietly(conn, f"duplicate route to {hello.name}")
                return
            out.close_quietly(existing, f"route to {hello.name} replaced")
        self.peers[hello.name] = conn
        out.pending.routes_changed = True
        conn.state = ConnState.OPEN
        if conn.peer_client_url:
            self.bus.client_urls_changed()
        if conn.peer_nats_url:
            self.bus.nats_urls_changed()
        if not conn.dialed:
            out.append(conn, self._hello_frame())  # the dialer authenticated: answer
        # our whole local interest, then gossip of every cluster URL we know
        enc = out.encoder
        for (account, pattern, queue), n in self.local_keys.items():
            out.append(conn, enc.encode(RouteSub(account, pattern, queue, n)))
        self._gossip()
        for cluster, urls in self.gateway_urls.items():
            out.append(conn, enc.encode(Info(cluster, (), tuple(sorted(urls)))))

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
        own = self.directory.cluster_url
        urls = sorted(self.directory.route_urls() | ({own} if own else set()))
        frame = self.outbox.encoder.encode(Info(self.settings.config.cluster, tuple(urls), ()))
        self.broadcast(frame)

    def broadcast(self, frame: bytes) -> None:
        """Queue ``frame`` on every open route."""
        append = self.outbox.append
        for c in self.peers.values():
            if c.state is ConnState.OPEN:
                append(c, frame)

    def tell_gateway_urls(self, cluster: str, urls: tuple[str, ...]) -> None:
        """This node learned gateway URLs of ``cluster``: its route peers hear of them."""
        if self.peers:
            self.broadcast(self.outbox.encoder.encode(Info(cluster, (), urls)))

    def _info(self, conn: RouteConnection, info: Info) -> None:
        if info.cluster != self.settings.config.cluster:
            # gateway gossip relayed by a peer of this cluster
            self.bus.gateway_urls_relayed(info.cluster, info.gateway_urls)
            return
        known = self.directory.route_urls() | self.self_urls
        own = self.directory.cluster_url
        if own:
            known.add(own)
        dial = self.outbox.pending.dial_routes
        for url in info.route_urls:
            if url not in known and url not in dial:
                dial.append(url)

    def _route_sub(
        self, conn: RouteConnection, account: str, pattern: str, queue: str | None, weight: int
    ) -> None:
        out = self.outbox
        if not is_valid_pattern(pattern) or (queue is not None and not is_valid_subject(queue)):
            out.fail(conn, ErrorCode.INVALID_SUBJECT, f"invalid route interest {pattern!r}")
            return
        if account not in self.settings.known_accounts:
            out.deny(conn, f"unknown account {account!r}")
            return
        key = (account, pattern, queue)
        entry = conn.remote.get(key)
        if entry is None:
            entry = conn.remote[key] = RemoteInterest(conn, account, pattern, queue, 1)
            if self.graph.add(account, pattern, entry, queue):
                self.bus.cluster_key(account, pattern, queue, True)
        # weights are absolute: a restarted peer re-sending its counts is not double counted
        entry.weight = max(1, weight)

    def _route_unsub(
        self, conn: RouteConnection, account: str, pattern: str, queue: str | None
    ) -> None:
        entry = conn.remote.pop((account, pattern, queue), None)
        if entry is not None and self.graph.remove(account, pattern, entry, queue):
            self.bus.cluster_key(account, pattern, queue, False)

    def retire(self, conn: RouteConnection, was_open: bool) -> None:
        """Forget the peer's interest and its place in the table; wake its PONG waiters."""
        for entry in conn.remote.values():
            if self.graph.remove(entry.account, entry.pattern, entry, entry.queue):
                self.bus.cluster_key(entry.account, entry.pattern, entry.queue, False)
        conn.remote.clear()
        if conn.peer is not None and self.peers.get(conn.peer) is conn:
            del self.peers[conn.peer]
            self.outbox.pending.routes_changed = True
        conn.wake_pong_waiters()

    def on_local_key(
        self, account: str, pattern: str, queue: str | None, n: int, added: bool
    ) -> None:
        """A local key's count changed to ``n``: tell every route (plain keys on 0<->1 only,
        queue keys with their weight)."""
        if not self.peers:
            return
        enc = self.outbox.encoder
        if n == 0:
            frame = enc.encode(RouteUnsub(account, pattern, queue))
        elif queue is not None or n == 1:
            frame = enc.encode(RouteSub(account, pattern, queue, n))
        else:
            return
        self.broadcast(frame)
