"""How the core's parts hear of each other: events, and the node's directory of URLs.

A part never calls another part.  It announces what changed on the :class:`Bus`
("the local count of an interest key changed", "a cluster-wide key appeared",
"the cluster's client URLs changed", "gateway URLs were learned"); ``NodeCore``
wires the listeners once, in a fixed order, when it composes the parts.  What a
part needs to read of the node's topology (its own listener URLs, its route peers'
URLs) it reads from the :class:`Directory`.
"""

from __future__ import annotations

__all__ = ["Bus", "Directory"]

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._conn import ClientConnection, RouteConnection

#: ``(account, pattern, queue, added)``
ClusterKeyListener = Callable[[str, str, "str | None", bool], None]
#: ``(account, pattern, queue, count, added)``
LocalKeyListener = Callable[[str, str, "str | None", int, bool], None]
#: ``(cluster, urls)``
GatewayUrlsListener = Callable[[str, "tuple[str, ...]"], None]


class Bus:
    """Events between the core's parts; listeners run synchronously, in the order
    they were added."""

    __slots__ = (
        "_client_lost",
        "_client_urls",
        "_cluster_key",
        "_gateway_urls_changed",
        "_gateway_urls_relayed",
        "_local_key",
        "_nats_urls",
    )

    def __init__(self) -> None:
        self._cluster_key: list[ClusterKeyListener] = []
        self._local_key: list[LocalKeyListener] = []
        self._client_urls: list[Callable[[], None]] = []
        self._nats_urls: list[Callable[[], None]] = []
        self._gateway_urls_changed: list[GatewayUrlsListener] = []
        self._gateway_urls_relayed: list[GatewayUrlsListener] = []
        self._client_lost: list[Callable[[ClientConnection], None]] = []

    # -- wiring (by NodeCore) -------------------------------------------------------------------

    def on_cluster_key(self, listener: ClusterKeyListener) -> None:
        """Call ``listener`` when a key of the cluster-wide interest (local subscriptions
        and route peers' interest together) appears or disappears."""
        self._cluster_key.append(listener)

    def on_local_key(self, listener: LocalKeyListener) -> None:
        """Call ``listener`` when the number of local subscriptions of a key changes."""
        self._local_key.append(listener)

    def on_client_urls(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` when the cluster's client URLs changed."""
        self._client_urls.append(listener)

    def on_nats_urls(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` when the cluster's NATS port URLs changed."""
        self._nats_urls.append(listener)

    def on_gateway_urls_changed(self, listener: GatewayUrlsListener) -> None:
        """Call ``listener`` when this node learned new gateway URLs of a cluster itself
        (from a gateway), so that its route peers hear of them."""
        self._gateway_urls_changed.append(listener)

    def on_gateway_urls_relayed(self, listener: GatewayUrlsListener) -> None:
        """Call ``listener`` when a route peer relayed gateway URLs of a cluster."""
        self._gateway_urls_relayed.append(listener)

    def on_client_lost(self, listener: Callable[[ClientConnection], None]) -> None:
        """Call ``listener`` when an open client or replicant connection went away."""
        self._client_lost.append(listener)

    # -- events (by the parts) ------------------------------------------------------------------

    def cluster_key(self, account: str, pattern: str, queue: str | None, added: bool) -> None:
        """A cluster-wide interest key appeared (``added``) or disappeared."""
        for f in self._cluster_key:
            f(account, pattern, queue, added)

    def local_key(self, account: str, pattern: str, queue: str | None, n: int, added: bool) -> None:
        """The number of local subscriptions of a key went up (``added``) or down to ``n``."""
        for f in self._local_key:
            f(account, pattern, queue, n, added)

    def client_urls_changed(self) -> None:
        """The cluster's client URLs changed."""
        for f in self._client_urls:
            f()

    def nats_urls_changed(self) -> None:
        """The cluster's NATS port URLs changed."""
        for f in self._nats_urls:
            f()

    def gateway_urls_changed(self, cluster: str, urls: tuple[str, ...]) -> None:
        """This node learned new gateway URLs of ``cluster`` (all it knows: ``urls``)."""
        for f in self._gateway_urls_changed:
            f(cluster, urls)

    def gateway_urls_relayed(self, cluster: str, urls: tuple[str, ...]) -> None:
        """A route peer told us gateway URLs of ``cluster``."""
        for f in self._gateway_urls_relayed:
            f(cluster, urls)

    def client_lost(self, conn: ClientConnection) -> None:
        """An open client or replicant connection went away."""
        for f in self._client_lost:
            f(conn)


class Directory:
    """Where this node and its cluster can be reached: the URLs the shell bound, and
    what route peers said in their HELLOs (read from the route table itself)."""

    __slots__ = ("client_url", "cluster_url", "gateway_url", "monitor_url", "nats_url", "peers")

    def __init__(self, peers: dict[str, RouteConnection]) -> None:
        #: the route table (owned by the route mesh; read here)
        self.peers = peers
        #: this node's listeners, once bound
        self.client_url: str | None = None
        self.nats_url: str | None = None
        self.cluster_url: str | None = None
        self.gateway_url: str | None = None
        #: the HTTP monitoring endpoint, announced to peers for discovery
        self.monitor_url: str | None = None

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

    def gateway_urls(self) -> tuple[str, ...]:
        """Gateway URLs of every node of this cluster that this node knows of."""
        urls = {c.peer_gateway_url for c in self.peers.values() if c.peer_gateway_url}
        if self.gateway_url:
            urls.add(self.gateway_url)
        return tuple(sorted(urls))

    def route_urls(self) -> set[str]:
        """Cluster URLs of the peers this node has a route to."""
        return {c.peer_url for c in self.peers.values() if c.peer_url}
