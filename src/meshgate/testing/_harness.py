"""One sans-IO node core with scripted peers: unit tests per connection kind.

Like h11's ``ConnectionPair``, but for a many-connection core: the test plays the far
end of each connection.  Nothing here does I/O or reads a clock; time is
:attr:`CoreHarness.now`, moved by the test.
"""

from __future__ import annotations

__all__ = ["CoreHarness", "CorePeer", "Scheduler"]

from .. import _game
from .._node import Connection, ConnState, NodeCore, Scheduler
from .._shell._driver import CoreDriver
from ..config import GatewayConfig
from ..protocol import (
    PROTOCOL_VERSION,
    ConnectionKind,
    Decoder,
    Encoder,
    Error,
    Frame,
    Hello,
    Role,
)

_ROLE_OF = {
    ConnectionKind.CLIENT: Role.CLIENT,
    ConnectionKind.REPLICANT: Role.REPLICANT,
    ConnectionKind.ROUTE: Role.ROUTE,
    ConnectionKind.GATEWAY_INBOUND: Role.GATEWAY,
    ConnectionKind.GATEWAY_OUTBOUND: Role.GATEWAY,
}


class CorePeer:
    """The far end of one connection of the core under test."""

    def __init__(self, harness: CoreHarness, conn: Connection, kind: ConnectionKind) -> None:
        self.harness = harness
        self._conn = conn
        #: the kind of the connection as the core sees it
        self.kind = kind
        self._pending = bytearray()
        self._decoder = Decoder(max_frame_bytes=1 << 26)
        self._enc = Encoder()
        #: the core closed the connection (it flushed its last frames first)
        self.closed = False
        #: False: the peer reads nothing, so the core's output for it piles up
        #: (a stalled client); :meth:`take_bytes` still takes what is queued
        self.reading = True

    @property
    def conn_id(self) -> int:
        """The core's id of this connection."""
        return self._conn.id

    @property
    def state(self) -> str:
        """The core's state of the connection: ``AWAIT_HELLO``, ``OPEN``, ``CLOSING``,
        ``CLOSED``."""
        return self._conn.state.name

    def send(self, *frames: Frame) -> None:
        """Send frames to the core (one chunk)."""
        self.send_bytes(b"".join(self._enc.encode(f) for f in frames))

    def send_bytes(self, data: bytes) -> None:
        """Send raw bytes to the core."""
        h = self.harness
        h.core.receive_data(self._conn, data, h.now)
        h.collect()

    def take_bytes(self) -> bytes:
        """Everything the core wrote to this connection since the last call, as bytes."""
        h = self.harness
        h.collect()
        if h.core.has_output(self._conn):
            self._pending += h.core.take_output(self._conn)
        data, self._pending = bytes(self._pending), bytearray()
        return data

    def enable_datagrams(self, max_size: int = 1200) -> None:
        """The peer's transport carries unreliable datagrams of up to ``max_size``
        bytes (as QUIC does): keyed state goes on the connection's datagram lane."""
        self.harness.core.enable_datagrams(self._conn, max_size)

    def take_datagrams(self, max_bytes: int = -1) -> list[bytes]:
        """The datagrams the core queued for this peer (each one MSG frame with its
        kseq and key), oldest key first: all, or as many as start within
        ``max_bytes`` (what a slow path takes now); the rest stay queued."""
        h = self.harness
        h.collect()
        return h.core.take_datagrams(self._conn, max_bytes)

    def received(self) -> list[Frame]:
        """Every frame the core wrote to this connection since the last call."""
        self._decoder.feed(self.take_bytes())
        return list(self._decoder)

    def errors(self) -> list[Error]:
        """The error frames among :meth:`received`."""
        return [f for f in self.received() if isinstance(f, Error)]

    def hello(self, **fields: object) -> None:
        """Send a HELLO for this kind (fields override the defaults)."""
        values: dict[str, object] = {
            "version": PROTOCOL_VERSION,
            "role": _ROLE_OF[self.kind].value,
            "name": f"peer{self.conn_id}",
            "cluster": None,
        }
        if self.kind is ConnectionKind.REPLICANT and not self.harness.core.config.users:
            values["token"] = self.harness.replicant_token
        values.update(fields)
        self.send(Hello(**values))  # type: ignore[arg-type]

    @property
    def pending_bytes(self) -> int:
        """Bytes the core holds for this connection (a stalled peer's backlog)."""
        return self.harness.core.pending_bytes(self._conn)

    def lose(self) -> None:
        """The transport is gone (as if the socket broke)."""
        self.closed = True
        self.harness.core.connection_lost(self._conn)
        self.harness.collect()


class CoreHarness:
    """A :class:`~meshgate.GatewayConfig`'s node core (with its game layer if configured)
    and the scripted far ends of its connections."""

    def __init__(self, config: GatewayConfig, *, now: float = 0.0) -> None:
        self.core = NodeCore(config)
        self._game = _game.plug_into(self.core)
        #: the token an in-process replicant presents (without users)
        self.replicant_token = "harness-local-replicant-token"
        self.core.set_local_replicant_token(self.replicant_token)
        #: the time passed to the core
        self.now = now
        self._peers: dict[int, CorePeer] = {}
        #: ids of the connections the core closed, in order
        self.closed: list[int] = []
        #: route URLs and remote clusters the core asked to dial, in order
        self.dial_routes: list[str] = []
        self.dial_gateways: list[str] = []
        self._driver = CoreDriver(self.core, _HarnessSink(self))
        if config.cluster_listen:
            self.core.bound(cluster_url=config.cluster_listen)
        if config.gateway_listen:
            self.core.bound(gateway_url=config.gateway_listen)

    def open(
        self,
        kind: ConnectionKind = ConnectionKind.CLIENT,
        *,
        dialed: bool = False,
        expected_cluster: str | None = None,
        nats: bool = False,
    ) -> CorePeer:
        """Open a connection of ``kind`` (the core sends its HELLO first); ``nats``: a
        client of the NATS port (use :meth:`CorePeer.send_bytes` and
        :meth:`CorePeer.take_bytes`: it speaks the NATS text protocol)."""
        conn = self.core.open_connection(
            self.now, kind, dialed=dialed, expected_cluster=expected_cluster, nats=nats
        )
        peer = self._peers[conn.id] = CorePeer(self, conn, kind)
        self.collect()
        return peer

    def game(self) -> _game.GameInfo | None:
        """The game layer's snapshot (None unless ``replicants=True``)."""
        return self._game.info() if self._game is not None else None

    def pending_bytes(self) -> int:
        """Bytes the core holds for all its connections (not yet written)."""
        core = self.core
        return sum(core.pending_bytes(peer._conn) for peer in self._peers.values())

    def tick(self, now: float) -> None:
        """Move time to ``now`` and run the core's timers (the send tick too)."""
        self.now = now
        self.core.tick(now)
        self.core.send_tick(now)
        self.collect()

    def collect(self) -> None:
        """Move the core's output to the peers; close what the core closed (after the
        output it queued before closing, as the shell does)."""
        self._driver.drain()


class _HarnessSink:
    """The harness's side of the :class:`~meshgate.testing.CoreDriver`: output goes to
    the scripted peers, closes and dial requests are recorded."""

    __slots__ = ("_h",)

    def __init__(self, harness: CoreHarness) -> None:
        self._h = harness

    def write(self, conns: tuple[Connection, ...]) -> None:
        """Move each connection's output to its peer (unless the peer stopped reading)."""
        h = self._h
        core = h.core
        for conn in conns:
            peer = h._peers.get(conn.id)
            if peer is not None and not peer.reading:
                conn.dirty = False  # listed again on its next output
                continue
            data = core.take_output(conn) if core.has_output(conn) else b""
            if peer is not None and not peer.closed:
                peer._pending += data

    def close(self, conns: tuple[Connection, ...]) -> None:
        """Give each peer what was queued before the close, then lose the connection."""
        h = self._h
        core = h.core
        for conn in conns:
            peer = h._peers.get(conn.id)
            if core.has_output(conn):
                data = core.take_output(conn)
                if peer is not None:
                    peer._pending += data
            if peer is not None:
                peer.closed = True
            h.closed.append(conn.id)
            if conn.state is not ConnState.CLOSED:
                core.connection_lost(conn)

    def routes_changed(self) -> None:
        """Nothing waits for routes here."""

    def gateways_changed(self) -> None:
        """Nothing waits for gateways here."""

    def dial_route(self, url: str) -> None:
        """Record the route URL the core asked to dial."""
        self._h.dial_routes.append(url)

    def dial_gateway(self, cluster: str) -> None:
        """Record the cluster the core asked to dial."""
        self._h.dial_gateways.append(cluster)
