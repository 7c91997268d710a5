"""The NATS text protocol, sans-IO: a parser for both directions and encoders.

meshgate's NATS port (``GatewayConfig.nats_listen``) speaks it to unmodified NATS
clients; the same codec can talk to a nats-server.  Only the wire format lives here:
what an operation means is the node's business.

Operations come out of :meth:`NatsParser.next` as tuples whose first element is the
operation name:

* ``("CONNECT", options)``: ``options`` is the JSON object, a dict
* ``("INFO", info)``: the same, from a server
* ``("PUB", subject, reply, headers, payload)``: ``headers`` is the raw block or None
* ``("MSG", subject, sid, reply, headers, payload)``
* ``("SUB", subject, queue, sid)``: ``queue`` may be None; ``sid`` is a str
* ``("UNSUB", sid, max_msgs)``: ``max_msgs`` may be None
* ``("PING",)``, ``("PONG",)``, ``("+OK",)``
* ``("-ERR", text)``: without the quotes
* leaf connections (``NatsParser(leaf=True)``, nats-server's leafnode protocol):
  ``("LS+", subject, queue, weight)``, ``("LS-", subject, queue)`` and ``("LMSG",
  subject, reply, queues, headers, payload)`` for ``LMSG`` and ``HMSG`` (``queues``:
  the queue groups the receiver may serve, or None)

``HPUB`` and ``HMSG`` come out as ``PUB``/``MSG`` (``LMSG`` on a leaf connection) with
their header block.
"""

from __future__ import annotations

__all__ = [
    "HEADER_LINE",
    "NatsParser",
    "NatsProtocolError",
    "encode_headers",
    "parse_headers",
]

from typing import Any

from ._nats import NatsScanner
from ._natshead import HEADER_LINE as HEADER_LINE
from ._natshead import NatsProtocolError as NatsProtocolError
from ._natshead import encode_headers as encode_headers
from ._natshead import parse_headers as parse_headers


class NatsParser:
    """Incremental parser: :meth:`feed` bytes, take operations with :meth:`next`.

    ``max_control_line`` bounds a line (as nats-server's 4 KiB), ``max_payload`` the
    header block plus payload of one message.  Both bound what is buffered.  ``leaf``:
    a leafnode connection (``LMSG``, and ``HMSG`` with the leaf arguments).
    """

    __slots__ = ("_scan",)

    def __init__(
        self, *, max_control_line: int = 4096, max_payload: int = 1024 * 1024, leaf: bool = False
    ) -> None:
        # the machinery is a class of its own so that tools/compile.py can compile it
        self._scan = NatsScanner(
            max_control_line=max_control_line, max_payload=max_payload, leaf=leaf
        )

    @property
    def leaf(self) -> bool:
        """A leafnode connection's parser."""
        return self._scan.leaf

    @property
    def max_payload(self) -> int:
        """The largest header block plus payload of one message."""
        return self._scan.max_payload

    @property
    def max_control_line(self) -> int:
        """The longest control line."""
        return self._scan.max_control_line

    @property
    def buffered(self) -> int:
        """Bytes received and not yet parsed."""
        return self._scan.buffered

    def feed(self, data: bytes | bytearray) -> None:
        """Add received bytes."""
        self._scan.feed(data)

    def next(self) -> tuple[Any, ...] | None:
        """The next complete operation, or None until more bytes arrive."""
        return self._scan.next()

    def pubs(self) -> list[tuple[str, str | None, bytes]]:
        """The plain ``PUB`` operations at the front of the buffer, complete ones only,
        as ``(subject, reply, payload)``: the hot path of a publishing client in one
        call.  Anything else (or anything wrong) is left for :meth:`next`."""
        return self._scan.pubs()

    def lmsgs(self) -> list[tuple[str, str | None, tuple[str, ...] | None, bytes]]:
        """The plain ``LMSG`` operations at the front of the buffer (a leaf connection's
        hot path), complete ones only, as ``(subject, reply, queues, payload)``;
        anything else is left for :meth:`next`."""
        return self._scan.lmsgs()
