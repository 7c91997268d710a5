"""The gateway mesh: links between clusters (nats-server's gateways; docs/concepts.md,
"Interest between clusters").

For each remote cluster this node dials exactly one *outbound* connection (data
flows out on it, interest flows back) and accepts any number of *inbound* ones
(data flows in, interest goes back).  Gateway URLs are learned from configuration,
from HELLOs and by gossip (INFO); the shell dials what ``Effects.dial_gateways``
names.  Messages from inbound gateways are handled by the fan-out
(``_fanout.py``, ``FanOut.gateway_message``).
"""

from __future__ import annotations

__all__ = ["GatewayMesh"]

from typing import Any

from .._errors import ErrorCode
from ..interest import InboundInterest, InterestGraph, OutboundInterest
from ..protocol import RELAY_KEYS_FEATURE, Hello, Info, Opcode, Role, to_frame
from ._bus import Bus, Directory
from ._conn import (
    ConnState,
    GatewayConnection,
    InboundGateway,
    LocalSubscription,
    OutboundGateway,
    RemoteInterest,
)
from ._outbox import Outbox, Settings

_INFO = int(Opcode.INFO)
#: a gateway HELLO feature carrying the sender's monitoring URL (``monitor=http://...``)
MONITOR_FEATURE = "monitor="


def _monitor_url(features: tuple[str, ...]) -> str | None:
    """The monitoring URL a peer announced among its HELLO features, if any."""
    for feature in features:
        if feature.startswith(MONITOR_FEATURE):
            return feature[len(MONITOR_FEATURE) :] or None
    return None


class GatewayMesh:
    """Gateway connections to other clusters, and what this node knows of them."""

    def __init__(
        self,
        settings: Settings,
        outbox: Outbox,
        graph: InterestGraph[LocalSubscription | RemoteInterest],
        bus: Bus,
        directory: Directory,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.graph = graph
        self.directory = directory
        cfg = settings.config
        #: the registered outbound connection per remote cluster (exactly one)
        self.outbound: dict[str, OutboundGateway] = {}
        #: the outbound connections by RTT, lowest first (sorted in place: the fan-out
        #: holds this very list)
        self.order: list[OutboundGateway] = []
        #: registered inbound connections by connection id
        self.inbound: dict[int, InboundGateway] = {}
        #: gateway URLs known per remote cluster (configured and gossiped)
        self.urls: dict[str, set[str]] = {
            cluster: set(urls) for cluster, urls in cfg.gateways.items() if cluster != cfg.cluster
        }
        self.bus = bus
        outbox.retirers[InboundGateway] = self.retire  # type: ignore[assignment]
        outbox.retirers[OutboundGateway] = self.retire  # type: ignore[assignment]
        bus.on_cluster_key(self.on_cluster_key)
        bus.on_gateway_urls_relayed(self.relayed)

    # -- handshakes ---------------------------------------------------------------------------

    def opened_outbound(self, conn: OutboundGateway) -> None:
        """We dialed a gateway: our HELLO, with the secret for the cluster we dialed,
        goes first."""
        secret = self.settings.config.gateway_secrets.get(conn.expected_cluster)
        self.outbox.append(conn, self._hello_frame(outbound=True, token=secret))

    def opened_inbound(self, conn: InboundGateway) -> None:
        """A gateway connection was accepted: our HELLO waits until the dialer
        authenticated."""

    def _hello_frame(self, *, outbound: bool, token: str | None) -> bytes:
        cfg = self.settings.config
        own = self.directory.gateway_url
        if outbound:
            urls: tuple[str, ...] = (own,) if own else ()
            features: tuple[str, ...] = ()
        else:
            urls = self.directory.gateway_urls()
            features = ("interest-only",) if cfg.interest_mode == "interest-only" else ()
            features = (*features, RELAY_KEYS_FEATURE)  # data flows in: keyed relays welcome
        monitor = self.directory.monitor_url
        if monitor:  # for discovery; older nodes ignore a feature they do not know
            features = (*features, MONITOR_FEATURE + monitor)
        return self.outbox.hello_frame(Role.GATEWAY, urls, features, token=token)

    def _check_hello(self, conn: GatewayConnection, hello: Hello) -> bool:
        out = self.outbox
        cfg = self.settings.config
        if hello.role != Role.GATEWAY:
            out.fail(
                conn,
                ErrorCode.HANDSHAKE_REFUSED,
                f"role {hello.role!r} cannot use a gateway port (clients use the client port, "
                "routes the cluster port)",
            )
            return False
        if not hello.cluster or hello.cluster == cfg.cluster:
            out.fail(
                conn,
                ErrorCode.HANDSHAKE_REFUSED,
                f"gateway connection from cluster {hello.cluster!r}: "
                "gateways join different clusters",
            )
            return False
        secret = cfg.gateway_secrets.get(hello.cluster)
        if secret is None:
            if cfg.peer_auth_required or cfg.gateway_secrets:
                out.fail_auth(
                    conn, f"no gateway credential is configured for cluster {hello.cluster!r}"
                )
                return False
            return True
        return out.check_secret(conn, hello.token, secret, "gateway")

    def hello_outbound(self, conn: OutboundGateway, hello: Hello) -> None:
        """The dialed node answered: it must be of the cluster we meant to reach."""
        out = self.outbox
        if not self._check_hello(conn, hello):
            return
        cluster = hello.cluster
        assert cluster is not None
        if cluster != conn.expected_cluster:
            out.fail(
                conn,
                ErrorCode.HANDSHAKE_REFUSED,
                f"dialed a gateway of cluster {conn.expected_cluster!r} but reached "
                f"cluster {cluster!r}",
            )
            return
        if cluster in self.outbound:
            out.close_quietly(conn, f"duplicate outbound gateway to {cluster}")
            return
        conn.remote_cluster = cluster
        conn.peer = hello.name
        conn.out_interest = OutboundInterest(interest_only="interest-only" in hello.features)
        conn.peer_monitor_url = _monitor_url(hello.features)
        conn.relay_keys = RELAY_KEYS_FEATURE in hello.features
        conn.state = ConnState.OPEN
        self.outbound[cluster] = conn
        out.pending.gateways_changed = True
        self.learn(cluster, hello.urls, replace=True)
        # measure the round trip at once so the queue-group order is known early
        conn.pings_sent += 1
        conn.ping_sent_at = self.settings.now
        out.ping(conn)
        self.sort()

    def hello_inbound(self, conn: InboundGateway, hello: Hello) -> None:
        """A node of another cluster dialed us: it sends data, we send interest back."""
        out = self.outbox
        cfg = self.settings.config
        if not self._check_hello(conn, hello):
            return
        cluster = hello.cluster
        assert cluster is not None
        if cfg.reject_unknown and cluster not in cfg.gateways:
            out.fail(
                conn,
                ErrorCode.HANDSHAKE_REFUSED,
                f"cluster {cluster!r} is not configured here and reject_unknown is set",
            )
            return
        conn.remote_cluster = cluster
        conn.peer = hello.name
        conn.peer_gateway_url = hello.urls[0] if hello.urls else None
        conn.peer_monitor_url = _monitor_url(hello.features)
        conn.in_interest = InboundInterest(
            self.graph,
            threshold=cfg.interest_only_threshold,
            interest_only=cfg.interest_mode == "interest-only",
        )
        conn.state = ConnState.OPEN
        self.inbound[conn.id] = conn
        out.pending.gateways_changed = True
        # the dialer authenticated: our HELLO now, then the interest it should start with
        token = cfg.gateway_secrets.get(cluster)
        out.append(conn, self._hello_frame(outbound=False, token=token))
        enc = out.encoder
        for frame in conn.in_interest.start():
            out.append(conn, enc.encode(frame))
        # tell the dialer about every other cluster we know, then dial back if needed
        for other, urls in self.urls.items():
            if other != cluster and urls:
                out.append(conn, enc.encode(Info(other, (), tuple(sorted(urls)))))
        self.learn(cluster, hello.urls)

    # -- control frames -----------------------------------------------------------------------

    def control_inbound(self, conn: InboundGateway, op: int, f: tuple[Any, ...]) -> None:
        """Inbound connections carry only GMSG (the fan-out) and the common frames."""

    def control_outbound(self, conn: OutboundGateway, op: int, f: tuple[Any, ...]) -> None:
        """Interest frames (GSUB, GUNSUB, GNOINT, GACC_*, GMODE_*) and gossip (INFO)."""
        frame = to_frame(f)
        if op == _INFO:
            assert isinstance(frame, Info)
            if frame.cluster != self.settings.config.cluster:
                self.learn(frame.cluster, frame.gateway_urls)
            return
        if f[1] not in self.settings.known_accounts:  # every interest frame starts with it
            return
        assert conn.out_interest is not None
        conn.out_interest.receive(frame)

    # -- what we know of other clusters -------------------------------------------------------

    def learn(
        self,
        cluster: str,
        urls: tuple[str, ...],
        *,
        replace: bool = False,
        from_route: bool = False,
    ) -> None:
        """Record gateway URLs of ``cluster``; dial it if we have no outbound; tell routes."""
        cfg = self.settings.config
        if cluster == cfg.cluster:
            return
        if cfg.reject_unknown and cluster not in cfg.gateways:
            return
        configured = set(cfg.gateways.get(cluster, ()))
        known = self.urls.get(cluster)
        new = set(urls) | configured if replace else set(urls) | (known or set())
        if not new:
            return
        changed = new != known
        self.urls[cluster] = new
        dial = self.outbox.pending.dial_gateways
        if cluster not in self.outbound and cluster not in dial:
            dial.append(cluster)
        if changed and not from_route:
            self.bus.gateway_urls_changed(cluster, tuple(sorted(new)))

    def relayed(self, cluster: str, urls: tuple[str, ...]) -> None:
        """A route peer relayed gateway URLs of ``cluster``."""
        self.learn(cluster, urls, from_route=True)

    def retire(self, conn: GatewayConnection, was_open: bool) -> None:
        """Forget the connection's place in the tables; wake its PONG waiters."""
        pending = self.outbox.pending
        cluster = conn.remote_cluster
        if cluster is not None and self.outbound.get(cluster) is conn:
            del self.outbound[cluster]
            self.sort()
            pending.gateways_changed = True
        if self.inbound.pop(conn.id, None) is not None:
            pending.gateways_changed = True
        conn.wake_pong_waiters()

    def sort(self) -> None:
        """Re-sort :attr:`order` by RTT (in place)."""
        inf = float("inf")
        self.order[:] = sorted(
            self.outbound.values(), key=lambda c: (c.rtt if c.rtt is not None else inf, c.id)
        )

    def on_cluster_key(self, account: str, pattern: str, queue: str | None, added: bool) -> None:
        """The cluster-wide key went 0->1 (or 1->0): each inbound gateway decides what to send."""
        if not self.inbound:
            return
        out = self.outbox
        enc = out.encoder
        for c in self.inbound.values():
            if c.state is not ConnState.OPEN:
                continue
            ii = c.in_interest
            assert ii is not None
            frames = (
                ii.on_interest_added(account, pattern, queue)
                if added
                else ii.on_interest_removed(account, pattern, queue)
            )
            for f in frames:
                out.append(c, enc.encode(f))
