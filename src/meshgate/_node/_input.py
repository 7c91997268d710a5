"""The meshgate protocol's input: one receive loop per connection kind, and the frames
every kind has (the legality table first, the handshake, PING/PONG, ERROR).

Raw frames are the decoder's validated tuples (``protocol/_frames.py``): PUB (op,
subject, reply, payload, key[, priority]); RMSG/GMSG (op, queues, account, subject,
reply, payload[, key[, priority]]).  The data frames are unpacked to their usual
length inside ``try``: the optional trailing fields (issue 21: publisher priority)
cost the hot path nothing, and frames with them (the unpacking raises) take the
fan-out's ``publish_prioritised`` or its keyed relay entry points.  Only the data
frame of each kind takes the fast path (to the fan-out); everything else goes through
:meth:`FrameInput._control`.  NATS clients and the
backbone hub speak other protocols: their parts parse their own input.
"""

from __future__ import annotations

__all__ = ["FrameInput"]

from collections.abc import Callable
from typing import Any

from .._errors import ErrorCode
from ..protocol import PROTOCOL_VERSION, ConnectionKind, Hello, Opcode, to_frame
from ._conn import ClientConnection, Connection, ConnState, InboundGateway, RouteConnection
from ._fanout import FanOut
from ._outbox import Outbox, Settings

_PUB = int(Opcode.PUB)
_RMSG = int(Opcode.RMSG)
_GMSG = int(Opcode.GMSG)
_PING = int(Opcode.PING)
_PONG = int(Opcode.PONG)
_HELLO = int(Opcode.HELLO)
_ERROR = int(Opcode.ERROR)
_OPEN = ConnState.OPEN
_CLOSING = ConnState.CLOSING

_Raw = tuple[Any, ...]


class FrameInput:
    """Receive loops of the meshgate protocol, by connection kind."""

    def __init__(
        self,
        settings: Settings,
        outbox: Outbox,
        fanout: FanOut,
        on_outbound_pong: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._outbox = outbox
        self._fanout = fanout
        self._on_outbound_pong = on_outbound_pong
        #: each kind's handshake (its peer's HELLO) and control frames, by class
        self.handshakes: dict[type[Connection], Callable[[Any, Hello], None]] = {}
        self.controls: dict[type[Connection], Callable[[Any, int, _Raw], None]] = {}

    def client(self, conn: ClientConnection, data: bytes | bytearray) -> None:
        dec = conn.decoder
        dec.feed(data)
        nxt = dec.next_raw
        publish = self._fanout.publish
        while (f := nxt()) is not None:
            if f[0] == _PUB and conn.state is _OPEN:
                try:
                    _, subject, reply, payload, key = f
                except ValueError:  # six fields: with a publisher priority
                    self._fanout.publish_prioritised(conn, f[1], f[2], f[3], f[4], f[5])
                else:
                    publish(conn, subject, reply, payload, key)
            else:
                self._control(conn, f[0], f)
            if conn.state >= _CLOSING:
                return

    def route(self, conn: RouteConnection, data: bytes | bytearray) -> None:
        self._relayed(conn, data, _RMSG, self._fanout.route_message)

    def inbound(self, conn: InboundGateway, data: bytes | bytearray) -> None:
        self._relayed(conn, data, _GMSG, self._fanout.gateway_message)

    def _relayed(
        self, conn: Connection, data: bytes | bytearray, op: int, message: Callable[..., None]
    ) -> None:
        """A route's (``RMSG``) or an inbound gateway's (``GMSG``) bytes: each message
        to ``message``, everything else to the control frames."""
        dec = conn.decoder
        dec.feed(data)
        nxt = dec.next_raw
        while (f := nxt()) is not None:
            if f[0] == op and conn.state is _OPEN:
                try:
                    _, queues, account, subject, reply, payload = f
                except ValueError:  # keyed state: its key (and priority)
                    message(conn, *f[1:])
                else:
                    message(conn, queues, account, subject, reply, payload)
            else:
                self._control(conn, f[0], f)
            if conn.state >= _CLOSING:
                return

    def other(self, conn: Connection, data: bytes | bytearray) -> None:
        dec = conn.decoder
        dec.feed(data)
        nxt = dec.next_raw
        while (f := nxt()) is not None:
            self._control(conn, f[0], f)
            if conn.state >= _CLOSING:
                return

    def _control(self, conn: Connection, op: int, f: _Raw) -> None:
        """Every frame but the kind's data frame: the legality table, the handshake, the
        frames every kind has, then the kind's own control frames."""
        out = self._outbox
        if op not in conn.legal:
            out.fail(
                conn,
                ErrorCode.ILLEGAL_FOR_ROLE,
                f"{Opcode(op).name} is not legal on a {conn.kind.value} connection",
            )
            return
        if conn.state is ConnState.AWAIT_HELLO:
            if op != _HELLO:
                out.fail(conn, ErrorCode.HANDSHAKE_REFUSED, "expected HELLO first")
                return
            hello = to_frame(f)
            assert isinstance(hello, Hello)
            if hello.version != PROTOCOL_VERSION:
                out.fail(
                    conn,
                    ErrorCode.HANDSHAKE_REFUSED,
                    f"protocol version {hello.version} is not supported (need {PROTOCOL_VERSION})",
                )
                return
            self.handshakes[type(conn)](conn, hello)
        elif op == _PING:
            out.pong(conn)
        elif op == _PONG:
            conn.pong_received(self._settings.now)
            if conn.kind is ConnectionKind.GATEWAY_OUTBOUND:
                self._on_outbound_pong()  # the queue-group order follows the round trip
        elif op == _ERROR:
            out.close_quietly(conn, f"peer sent error {f[1]}: {f[2]}")
        elif op == _HELLO:
            out.fail(conn, ErrorCode.MALFORMED, "duplicate HELLO")
        else:
            self.controls[type(conn)](conn, op, f)
