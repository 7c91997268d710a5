"""A whole super-cluster of sans-IO node cores joined by a simulated network.

No trio, no sockets, no clock: the harness moves bytes between cores when told
to, so hypothesis can reorder, delay, drop and heal deterministically.
"""

from __future__ import annotations

__all__ = ["SimClient", "SimLink", "SimulatedSuperCluster"]

from collections import deque
from collections.abc import Iterator, Mapping

from .. import _game
from .._node import Connection, ConnState, NodeCore
from .._shell._driver import CoreDriver
from ..config import GatewayConfig, User
from ..protocol import (
    PROTOCOL_VERSION,
    ConnectionKind,
    Decoder,
    Encoder,
    Error,
    Headered,
    Hello,
    Message,
    Publish,
    Subscribe,
    Unsubscribe,
)
from ..protocol.nats import encode_headers


class SimLink:
    """A simulated connection between two cores: two ordered byte pipes (like TCP)."""

    def __init__(self, kind: str, a: NodeCore, ca: Connection, b: NodeCore, cb: Connection) -> None:
        self.kind = kind
        self.a, self.ca, self.b, self.cb = a, ca, b, cb
        self.ab: deque[bytes] = deque()
        self.ba: deque[bytes] = deque()
        self.open = True

    def __repr__(self) -> str:
        return f"<SimLink {self.kind} {self.a.config.name}->{self.b.config.name}>"

    @property
    def in_flight(self) -> int:
        """Chunks sent but not yet delivered, both directions."""
        return len(self.ab) + len(self.ba)


class SimClient:
    """A client connection to one node; records every message and error it receives."""

    def __init__(self, net: SimulatedSuperCluster, node: str, token: str | None = None) -> None:
        self.net = net
        self.node = node
        core = net.nodes[node]
        self.conn = core.open_connection(net.now)
        self._decoder = Decoder(max_frame_bytes=1 << 24)
        self._enc = Encoder()
        self._next_sid = 0
        #: messages received per subscription id, in order: (subject, payload, reply)
        self.received: dict[int, list[tuple[str, bytes, str | None]]] = {}
        #: error frames received
        self.errors: list[Error] = []
        self._send(
            Hello(version=PROTOCOL_VERSION, role="client", name=f"client@{node}", token=token)
        )

    def _send(self, frame: Hello | Publish | Subscribe | Unsubscribe) -> None:
        core = self.net.nodes[self.node]
        core.receive_data(self.conn, self._enc.encode(frame), self.net.now)
        self.net._after(core)

    def subscribe(self, pattern: str, queue: str | None = None) -> int:
        """Subscribe; returns the subscription id."""
        self._next_sid += 1
        self.received[self._next_sid] = []
        self._send(Subscribe(self._next_sid, pattern, queue))
        return self._next_sid

    def unsubscribe(self, sid: int) -> None:
        """Remove a subscription."""
        self._send(Unsubscribe(sid, None))

    def publish(
        self,
        subject: str,
        payload: bytes = b"",
        reply: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Publish a message (with NATS-style ``headers``, if given)."""
        body = payload if headers is None else Headered(payload, encode_headers(headers))
        self._send(Publish(subject, reply, body, None))

    def _feed(self, data: bytes | bytearray) -> None:
        self._decoder.feed(data)
        for frame in self._decoder:
            if isinstance(frame, Message):
                self.received.setdefault(frame.sid, []).append(
                    (frame.subject, frame.payload, frame.reply)
                )
            elif isinstance(frame, Error):
                self.errors.append(frame)


class SimulatedSuperCluster:
    """Clusters of sans-IO node cores joined by :class:`SimLink` objects.

    Built from minimal configuration like a real deployment: the second and later
    nodes of a cluster know one route seed, the first node of each further cluster
    knows one gateway URL of the first cluster; gossip and dial-back do the rest,
    with the harness playing the part of the dialers.

    Drive it with :meth:`step` (deliver one chunk on one link), :meth:`drop`,
    :meth:`heal` and :meth:`quiesce` (deliver everything until nothing moves).
    """

    def __init__(
        self,
        clusters: dict[str, int],
        *,
        interest_mode: str = "optimistic",
        interest_only_threshold: int = 1000,
        users: tuple[User, ...] = (),
    ) -> None:
        self.now = 0.0
        self.nodes: dict[str, NodeCore] = {}
        self.links: list[SimLink] = []
        self.clients: list[SimClient] = []
        self._by_route_url: dict[str, str] = {}
        self._by_gateway_url: dict[str, str] = {}
        self._known_routes: dict[str, set[str]] = {}
        #: what each core asked its dialers for (routes, clusters), until ``heal`` plays them
        self._dials: dict[str, tuple[list[str], list[str]]] = {}
        #: each core's driver, by node name
        self._drivers: dict[str, CoreDriver] = {}
        names = list(clusters)
        first_gateway = f"sim://gw/{names[0].lower()}0"
        for ci, cluster in enumerate(names):
            for i in range(clusters[cluster]):
                name = f"{cluster.lower()}{i}"
                seeds: tuple[str, ...] = (f"sim://route/{cluster.lower()}0",) if i else ()
                cfg = GatewayConfig(
                    name=name,
                    cluster=cluster,
                    listen=f"sim://client/{name}",
                    cluster_listen=f"sim://route/{name}",
                    routes=seeds,
                    users=users,
                    gateway_listen=f"sim://gw/{name}",
                    gateways={names[0]: [first_gateway]} if (ci and not i) else {},
                    interest_mode=interest_mode,
                    interest_only_threshold=interest_only_threshold,
                    # every link authenticates, as a real deployment with users must
                    cluster_secret=f"sim-route-secret-{cluster}",
                    gateway_secrets={
                        other: "sim-gateway-secret-" + "-".join(sorted((cluster, other)))
                        for other in names
                        if other != cluster
                    },
                )
                core = NodeCore(cfg)
                _game.plug_into(core)
                core.bound(cluster_url=f"sim://route/{name}", gateway_url=f"sim://gw/{name}")
                self.nodes[name] = core
                self._drivers[name] = CoreDriver(core, _SimSink(self, core))
                self._by_route_url[f"sim://route/{name}"] = name
                self._by_gateway_url[f"sim://gw/{name}"] = name
        self.heal()

    # -- topology -------------------------------------------------------------------------------

    def cluster_of(self, node: str) -> str:
        """The cluster name of a node."""
        return self.nodes[node].config.cluster

    def _connect(self, kind: str, a: str, b: str) -> None:
        ca_, cb_ = self.nodes[a], self.nodes[b]
        if kind == "route":
            ca = ca_.open_connection(self.now, ConnectionKind.ROUTE, dialed=True)
            cb = cb_.open_connection(self.now, ConnectionKind.ROUTE)
        else:
            ca = ca_.open_connection(
                self.now,
                ConnectionKind.GATEWAY_OUTBOUND,
                dialed=True,
                expected_cluster=cb_.config.cluster,
            )
            cb = cb_.open_connection(self.now, ConnectionKind.GATEWAY_INBOUND)
        self.links.append(SimLink(kind, ca_, ca, cb_, cb))

    def _link_pending(self, kind: str, a: str, target: str) -> bool:
        """True if ``a`` already has an open link of ``kind`` towards ``target``
        (a node name for routes, a cluster name for gateways)."""
        for link in self.links:
            if not link.open or link.kind != kind:
                continue
            if kind == "route":
                ends = {link.a.config.name, link.b.config.name}
                if ends == {a, target}:
                    return True
            elif link.a.config.name == a and link.b.config.cluster == target:
                return True
        return False

    def heal(self) -> None:
        """Play the dialers: every configured or gossiped route and gateway that is
        missing is dialed (like the shell's reconnect loops eventually do)."""
        for name, core in self.nodes.items():
            # like the shell's dialers, remember every URL ever gossiped and keep redialing
            dial_routes, dial_gateways = self._dials.setdefault(name, ([], []))
            known = self._known_routes.setdefault(name, set(core.config.routes))
            known.update(dial_routes)
            dial_routes.clear()
            wanted = set(known)
            for url in sorted(wanted):
                peer = self._by_route_url.get(url)
                if peer and peer != name and not self._link_pending("route", name, peer):
                    self._connect("route", name, peer)
            clusters = set(core.gateway_clusters()) | set(dial_gateways)
            dial_gateways.clear()
            for cluster in sorted(clusters):
                if cluster == core.config.cluster or core.has_outbound_gateway(cluster):
                    continue
                if self._link_pending("gateway", name, cluster):
                    continue
                urls = sorted(core.gateway_urls(cluster))
                targets = [self._by_gateway_url[u] for u in urls if u in self._by_gateway_url]
                if targets:
                    self._connect("gateway", name, targets[0])

    def drop(self, link: SimLink) -> None:
        """Cut a link: in-flight bytes are lost; both cores see the connection go."""
        if not link.open:
            return
        link.open = False
        link.ab.clear()
        link.ba.clear()
        link.a.connection_lost(link.ca)
        link.b.connection_lost(link.cb)
        self._after(link.a)
        self._after(link.b)

    # -- moving bytes ---------------------------------------------------------------------------

    def _after(self, core: NodeCore) -> None:
        """Collect a core's output into links and clients; close what it closed."""
        self._drivers[core.config.name].drain()

    def _link_of(self, conn: Connection) -> SimLink | None:
        for link in self.links:
            if link.ca is conn or link.cb is conn:
                return link
        return None

    def _deliver_all(self, link: SimLink) -> None:
        while link.open and (link.ab or link.ba):
            self.step(link)

    def step(self, link: SimLink) -> bool:
        """Deliver one chunk on ``link`` (a→b first); False if nothing was in flight."""
        if not link.open:
            return False
        if link.ab:
            link.b.receive_data(link.cb, link.ab.popleft(), self.now)
            self._after(link.b)
            return True
        if link.ba:
            link.a.receive_data(link.ca, link.ba.popleft(), self.now)
            self._after(link.a)
            return True
        return False

    def open_links(self) -> Iterator[SimLink]:
        """Links that are up."""
        return (link for link in self.links if link.open)

    def quiesce(self, max_steps: int = 1_000_000) -> None:
        """Deliver everything and dial whatever gossip asked for, until nothing moves."""
        for core in self.nodes.values():
            self._after(core)
        steps = 0
        while True:
            moved = False
            for link in list(self.links):
                while self.step(link):
                    moved = True
                    steps += 1
                    if steps > max_steps:
                        raise RuntimeError("the simulated network does not quiesce")
            if any(r or g for r, g in self._dials.values()):
                self.heal()
                moved = True
            for core in self.nodes.values():
                self._after(core)
            if not moved:
                return

    def client(self, node: str, token: str | None = None) -> SimClient:
        """Connect a client to ``node``."""
        c = SimClient(self, node, token)
        self.clients.append(c)
        self._after(self.nodes[node])
        return c


class _SimSink:
    """One core's side of its :class:`~meshgate.testing.CoreDriver` in the simulated
    network: output goes onto links and to clients, closes cut links (after the peer
    read what was written), dial requests wait for :meth:`SimulatedSuperCluster.heal`."""

    __slots__ = ("_core", "_net")

    def __init__(self, net: SimulatedSuperCluster, core: NodeCore) -> None:
        self._net = net
        self._core = core

    def write(self, conns: tuple[Connection, ...]) -> None:
        """Put each connection's output on its link, or give it to its client."""
        net = self._net
        core = self._core
        for conn in conns:
            if not core.has_output(conn):
                continue
            data = bytes(core.take_output(conn))
            link = net._link_of(conn)
            if link is not None:
                if link.open:
                    (link.ab if conn is link.ca else link.ba).append(data)
                continue
            for client in net.clients:
                if client.conn is conn:
                    client._feed(data)

    def close(self, conns: tuple[Connection, ...]) -> None:
        """Let the peer read what was written (the error frame), then cut the link."""
        net = self._net
        for conn in conns:
            link = net._link_of(conn)
            if link is not None and link.open:
                net._deliver_all(link)
                net.drop(link)
            elif conn.state is not ConnState.CLOSED:
                self._core.connection_lost(conn)

    def routes_changed(self) -> None:
        """Nothing waits for routes here."""

    def gateways_changed(self) -> None:
        """Nothing waits for gateways here."""

    def dial_route(self, url: str) -> None:
        """Remember the URL for the next :meth:`SimulatedSuperCluster.heal`."""
        self._net._dials.setdefault(self._core.config.name, ([], []))[0].append(url)

    def dial_gateway(self, cluster: str) -> None:
        """Remember the cluster for the next :meth:`SimulatedSuperCluster.heal`."""
        self._net._dials.setdefault(self._core.config.name, ([], []))[1].append(cluster)
