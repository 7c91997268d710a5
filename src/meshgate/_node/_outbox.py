"""What every part of the core shares: the node's settings and the output API.

The parts of the core (client port, NATS port, route mesh, gateway mesh, backbone,
fan-out, delivery) are separate objects.  None of them holds the node core; each is
built from what it needs, and all of them reach connections through one
:class:`Outbox`: append bytes, send an error, fail or close a connection.  The
outbox fills the :class:`~meshgate._node._effects.PendingEffects` that
``NodeCore.drain`` turns into an immutable ``Effects`` value for the shell.
"""

from __future__ import annotations

__all__ = ["Outbox", "Settings"]

import hmac
from collections.abc import Callable

from .._errors import ErrorCode
from ..config import GatewayConfig
from ..protocol import PROTOCOL_VERSION, Encoder, Error, Hello, Ping, Pong, Role
from ._conn import Connection, ConnState
from ._effects import PendingEffects


class Settings:
    """The node-wide values every part reads and only ``NodeCore`` writes."""

    __slots__ = ("config", "draining", "known_accounts", "now")

    def __init__(self, config: GatewayConfig) -> None:
        #: the node's configuration (replaced as a whole by a reload)
        self.config = config
        #: set by ``shutdown``/``stop_accepting``: new connections are refused
        self.draining = False
        #: the accounts this node serves; peers may name no other
        self.known_accounts: frozenset[str] = config.accounts
        #: the time of the call being processed (an argument of every timed call)
        self.now = 0.0


class Outbox:
    """The output API of the core's parts: bytes and errors to connections, and closing.

    Connection kinds differ in how they say things (a NATS client and the backbone
    speak the NATS text protocol); each kind's class says how (``ping_bytes``,
    ``pong_bytes``, ``error_bytes``), so nothing here asks which kind it has."""

    __slots__ = (
        "auth_failures",
        "encoder",
        "pending",
        "permission_violations",
        "ping_frame",
        "pong_frame",
        "protocol_errors",
        "retirers",
        "settings",
        "writable",
    )

    def __init__(self, settings: Settings, encoder: Encoder, pending: PendingEffects) -> None:
        self.settings = settings
        self.encoder = encoder
        self.pending = pending
        #: the same list object as ``pending.writable`` for the core's whole life
        self.writable = pending.writable
        #: what to do when a connection of a class stops counting (each part registers
        #: its kinds): ``retire(conn, was_open)``
        self.retirers: dict[type[Connection], Callable[[Connection, bool], None]] = {}
        #: meshgate's PING and PONG frames, encoded once
        self.ping_frame = encoder.encode(Ping())
        self.pong_frame = encoder.encode(Pong())
        self.protocol_errors = 0
        self.auth_failures = 0
        self.permission_violations = 0

    # -- bytes --------------------------------------------------------------------------------

    def append(self, conn: Connection, data: bytes) -> None:
        """Queue ``data`` (one or more whole frames) for ``conn``."""
        conn.out += data
        sizes = conn.frame_sizes
        if sizes is not None:
            sizes.append(len(data))  # keeps drop-oldest on frame boundaries
        if not conn.dirty:
            conn.dirty = True
            self.writable.append(conn)

    def ping(self, conn: Connection) -> None:
        """Queue a PING in ``conn``'s protocol."""
        self.append(conn, conn.ping_bytes or self.ping_frame)

    def pong(self, conn: Connection) -> None:
        """Queue a PONG in ``conn``'s protocol."""
        self.append(conn, conn.pong_bytes or self.pong_frame)

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
        cfg = self.settings.config
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

    # -- errors and closing -------------------------------------------------------------------

    def error(self, conn: Connection, code: ErrorCode, reason: str, sid: int | None = None) -> None:
        """Send an error frame (about the client's subscription ``sid``, if given); the
        connection stays open."""
        text = conn.error_bytes(code, reason)
        self.append(
            conn, text if text is not None else self.encoder.encode(Error(int(code), reason, sid))
        )

    def deny(self, conn: Connection, reason: str, sid: int | None = None) -> None:
        """A permission violation (of the subscription ``sid``, if given): counted, an
        error frame, the connection stays open."""
        self.permission_violations += 1
        self.error(conn, ErrorCode.PERMISSION_DENIED, reason, sid)

    def fail(self, conn: Connection, code: ErrorCode, reason: str, *, count: bool = True) -> None:
        """Send an error frame and close the connection once it is flushed (counted as a
        protocol error unless ``count`` is false or it is a slow consumer)."""
        if conn.state >= ConnState.CLOSING:
            return
        if count and code is not ErrorCode.SLOW_CONSUMER:
            self.protocol_errors += 1
        self.error(conn, code, reason)
        self._closing(conn, reason)

    def fail_auth(self, conn: Connection, reason: str) -> None:
        """An authentication failure: counted, AUTH_FAILED, closed."""
        self.auth_failures += 1
        self.fail(conn, ErrorCode.AUTH_FAILED, reason)

    def close_quietly(self, conn: Connection, reason: str) -> None:
        """Close ``conn`` once what is queued is flushed, without an error frame."""
        if conn.state >= ConnState.CLOSING:
            return
        self._closing(conn, reason)
        if not conn.dirty:
            conn.dirty = True
            self.writable.append(conn)

    def check_secret(self, conn: Connection, offered: str | None, secret: str, what: str) -> bool:
        """``offered`` is ``secret`` (compared in constant time); else the connection fails
        with AUTH_FAILED, counted.  The secret never appears in an error or a log."""
        if offered is not None and hmac.compare_digest(offered.encode(), secret.encode()):
            return True
        self.fail_auth(conn, f"{what} authentication failed")
        return False

    def _closing(self, conn: Connection, reason: str) -> None:
        conn.close_reason = reason
        was_open = conn.state is ConnState.OPEN
        conn.state = ConnState.CLOSING
        self.retire(conn, was_open)
        self.pending.closing.append(conn)

    def retire(self, conn: Connection, was_open: bool) -> None:
        """The connection stops counting: its interest and table entries go now (the part
        that owns its kind does it)."""
        retire = self.retirers.get(type(conn))
        if retire is not None:
            retire(conn, was_open)
