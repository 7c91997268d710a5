"""The state every part of the core shares, and the output helpers.

:class:`CoreBase` is the root of the core's one receiver object (``NodeCore``), in
the way nats-server's ``client`` and ``Server`` methods are spread over files by
concern: ``_delivery.py`` (the slow-consumer policy) and ``_fanout.py`` (the hot
path) add methods on top of it; ``_core.py`` completes it with connection life and
the receive loops.  The cold concerns are separate objects that own their tables:
``ClientPort`` (``_clients.py``), ``RouteMesh`` (``_routes.py``) and ``GatewayMesh``
(``_gateways.py``).
"""

from __future__ import annotations

__all__ = ["CoreBase"]

import hmac
from collections import deque
from typing import TYPE_CHECKING

from .._errors import ErrorCode
from ..config import GatewayConfig
from ..interest import InterestGraph
from ..protocol import PROTOCOL_VERSION, Encoder, Error, Hello, Ping, Pong, Role
from ._conn import (
    Account,
    BackboneConnection,
    ClientConnection,
    Connection,
    ConnState,
    InboundGateway,
    InternalConnection,
    InternalHandler,
    LocalSubscription,
    OutboundGateway,
    RemoteInterest,
    RouteConnection,
)
from ._effects import PendingEffects
from ._natsport import PING, PONG, NatsPort, error_text

if TYPE_CHECKING:
    from ._backbone import Backbone
    from ._clients import ClientPort
    from ._gateways import GatewayMesh
    from ._hooks import Layer
    from ._routes import RouteMesh


class CoreBase:
    """Shared state of the node core: configuration, encoder, interest graph,
    connections, accounts, counters and the :class:`Effects` for the shell."""

    clients: ClientPort
    nats: NatsPort
    backbone: Backbone
    routes: RouteMesh
    gateways: GatewayMesh
    # the hot path's aliases of the meshes' tables (each the same object for the core's life)
    _route_peers: dict[str, RouteConnection]
    _outbound: dict[str, OutboundGateway]
    _gw_order: list[OutboundGateway]

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.encoder = Encoder()
        #: every subscription and route interest, per account
        self.graph: InterestGraph[LocalSubscription | RemoteInterest] = InterestGraph()
        #: open connections by id
        self.conns: dict[int, Connection] = {}
        #: what the shell must do after each call
        self.pending = PendingEffects()
        #: per-account counters
        self.accounts: dict[str, Account] = {}
        #: set by ``shutdown``: new connections are refused
        self.draining = False
        #: the accounts this node serves; peers may name no other
        self.known_accounts = config.accounts
        self._next_id = 0
        self._now = 0.0
        self._rr = 0
        self._valid: dict[str, None] = {}
        self._max_payload = config.max_payload
        self._max_pending = config.max_pending_bytes
        self._policy = config.slow_consumer_policy
        self._ping = self.encoder.encode(Ping())
        self._pong = self.encoder.encode(Pong())
        # the hot path's aliases: each is the same object for the core's whole life
        self._writable = self.pending.writable
        self._layer: Layer | None = None
        #: the message being delivered: (subject, reply, payload), set with its tail, for
        #: NATS targets (which need the fields, not the msgpack tail)
        self._cur: tuple[str, str | None, bytes, int] = ("", None, b"", 0)
        #: the NATS client publishing with ``echo: false`` now (its own messages skip it)
        self._origin: ClientConnection | None = None
        self._internal: dict[str, InternalConnection] = {}
        self._internal_queue: deque[tuple[InternalHandler, bytes]] = deque()
        # counters
        self.messages_in = 0
        self.messages_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        #: message payload bytes in and out (nats-server's ``in_bytes``/``out_bytes``)
        self.payload_in = 0
        self.payload_out = 0
        self.slow_consumers = 0
        self.dropped_messages = 0
        self.coalesced_messages = 0
        self.resyncs = 0
        self.protocol_errors = 0
        self.auth_failures = 0
        self.permission_violations = 0
        #: messages on ``$`` subjects (the game layer's control traffic) sent to gateways
        self.gateway_control_msgs = 0

    def check_secret(self, conn: Connection, offered: str | None, secret: str, what: str) -> bool:
        """``offered`` is ``secret`` (compared in constant time); else the connection fails
        with AUTH_FAILED, counted.  The secret never appears in an error or a log."""
        if offered is not None and hmac.compare_digest(offered.encode(), secret.encode()):
            return True
        self.auth_failures += 1
        self._fail(conn, ErrorCode.AUTH_FAILED, f"{what} authentication failed")
        return False

    def deny(self, conn: Connection, reason: str) -> None:
        """A permission violation: counted, an error frame, the connection stays open."""
        self.permission_violations += 1
        self.error(conn, ErrorCode.PERMISSION_DENIED, reason)

    def account(self, name: str) -> Account:
        """The counters of account ``name`` (created on first use)."""
        acct = self.accounts.get(name)
        if acct is None:
            acct = self.accounts[name] = Account(name)
        return acct

    def hello_frame(
        self,
        role: Role,
        urls: tuple[str, ...] = (),
        features: tuple[str, ...] = (),
        max_payload: int = 0,
        token: str | None = None,
        reveal: bool = True,
    ) -> bytes:
        """This node's encoded HELLO in ``role`` (node, route or gateway); without
        ``reveal`` it names neither the node nor its cluster."""
        cfg = self.config
        return self.encoder.encode(
            Hello(
                version=PROTOCOL_VERSION,
                role=role.value,
                name=cfg.name if reveal else "",
                cluster=cfg.cluster if reveal else None,
                token=token,
                max_payload=max_payload,
                features=features,
                urls=urls,
            )
        )

    # -- output helpers -----------------------------------------------------------------------

    def _append(self, conn: Connection, data: bytes) -> None:
        if type(conn) is BackboneConnection and (data is self._ping or data is self._pong):
            data = PING if data is self._ping else PONG
        elif type(conn) is ClientConnection:
            if conn.nats is not None and (data is self._ping or data is self._pong):
                data = PING if data is self._ping else PONG
            if conn.frame_sizes is not None:
                conn.frame_sizes.append(len(data))  # keeps drop-oldest on frame boundaries
        conn.out += data
        if not conn.dirty:
            conn.dirty = True
            self._writable.append(conn)

    def error(self, conn: Connection, code: ErrorCode, reason: str) -> None:
        """Send an error frame; the connection stays open."""
        if (type(conn) is ClientConnection and conn.nats is not None) or type(
            conn
        ) is BackboneConnection:
            text = error_text(code, reason).encode("utf-8", "replace")
            self._append(conn, b"-ERR '" + text + b"'\r\n")
            return
        self._append(conn, self.encoder.encode(Error(int(code), reason)))

    def _fail(self, conn: Connection, code: ErrorCode, reason: str, *, count: bool = True) -> None:
        """Send an error frame and close the connection once it is flushed."""
        if conn.state >= ConnState.CLOSING:
            return
        if count and code is not ErrorCode.SLOW_CONSUMER:
            self.protocol_errors += 1
        self.error(conn, code, reason)
        self._closing(conn, reason)

    def _close_quietly(self, conn: Connection, reason: str) -> None:
        if conn.state >= ConnState.CLOSING:
            return
        self._closing(conn, reason)
        if not conn.dirty:
            conn.dirty = True
            self._writable.append(conn)

    def _closing(self, conn: Connection, reason: str) -> None:
        conn.close_reason = reason
        was_open = conn.state is ConnState.OPEN
        conn.state = ConnState.CLOSING
        self._retire(conn, was_open)
        self.pending.closing.append(conn)

    def _retire(self, conn: Connection, was_open: bool) -> None:
        """The connection stops counting: its interest and its table entries go now."""
        if type(conn) is ClientConnection:
            self.clients.retire(conn, was_open)
        elif type(conn) is RouteConnection:
            self.routes.retire(conn)
        elif type(conn) is InboundGateway or type(conn) is OutboundGateway:
            self.gateways.retire(conn)
        elif type(conn) is BackboneConnection:
            self.backbone.retire(conn)
