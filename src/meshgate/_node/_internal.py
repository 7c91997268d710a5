"""The node's own subscriptions (the game layer's ``$AUTH.*``, ``$SPEC.*``, ...).

Each account the node subscribes in has one :class:`InternalConnection`; a message
that matches one of its subscriptions is queued by the delivery (never handled in
the middle of a fan-out) and its handler runs when ``NodeCore.drain`` calls
:meth:`NodeSubscriptions.run`.  Handlers may publish more; that is routed and, if it
matches the node's own subscriptions again, handled in the same ``run``.
"""

from __future__ import annotations

__all__ = ["NodeSubscriptions"]

from collections import deque
from collections.abc import Callable

import msgpack

from ._conn import Account, InternalConnection, InternalHandler


class NodeSubscriptions:
    """The node's own subscriptions, per account, and the queue of matched messages."""

    def __init__(
        self,
        queue: deque[tuple[InternalHandler, bytes]],
        subscribe: Callable[[InternalConnection, int, str, str | None], None],
    ) -> None:
        #: (handler, msgpack MSG tail) of matched messages (filled by the delivery)
        self.queue = queue
        self._subscribe = subscribe
        self._conns: dict[str, InternalConnection] = {}
        self._running = False
        self._unpacker = msgpack.Unpacker(raw=False)

    def subscribe(
        self, cid: Callable[[], int], account: Account, pattern: str, handler: InternalHandler
    ) -> None:
        """Subscribe the node to ``pattern`` in ``account`` (``cid`` gives a connection
        id if the account needs its internal connection)."""
        conn = self._conns.get(account.name)
        if conn is None:
            conn = self._conns[account.name] = InternalConnection(cid(), account)
        sid = len(conn.handlers) + 1
        conn.handlers[sid] = handler
        self._subscribe(conn, sid, pattern, None)

    def count(self, account: str | None = None) -> int:
        """The node's own subscriptions (in ``account``, or all)."""
        return sum(len(c.subs) for a, c in self._conns.items() if account is None or a == account)

    def run(self) -> None:
        """Run the handlers of every matched message, in order (they may route more)."""
        if self._running:
            return
        self._running = True
        try:
            queue = self.queue
            unpacker = self._unpacker
            while queue:
                handler, tail = queue.popleft()
                unpacker.feed(tail)  # the shared MSG tail: subject, reply, payload
                handler(unpacker.unpack(), unpacker.unpack(), unpacker.unpack())
        finally:
            self._running = False
