"""What the shell logs about connections that end (private): links at INFO with their
reason, refused peers and slow consumers at WARNING, rate-limited."""

from __future__ import annotations

__all__ = ["WARN_INTERVAL", "Logbook"]

import logging

import trio

from .._node import Connection, PeerConnection
from ..config import GatewayConfig
from ..logs import LogLimiter
from ._topology import Topology
from ._writer import Writer

log = logging.getLogger("meshgate.gateway")

#: seconds between two WARNING lines about one refused peer address, or about slow consumers
WARN_INTERVAL = 30.0


class Logbook:
    """The WARNING lines a node writes about refused peers and slow consumers (at most
    one per peer address, or per node for slow consumers, every :data:`WARN_INTERVAL`
    seconds, with the count held back), and where a link that was up is logged."""

    def __init__(self, topology: Topology, writer: Writer) -> None:
        self._topology = topology
        self._writer = writer
        self._limit = LogLimiter(WARN_INTERVAL)
        self._slow_seen = 0

    def slow_consumers(self, slow: int, config: GatewayConfig) -> None:
        """A WARNING when clients met their slow-consumer policy since the last one
        (``slow``: the node's count of slow-consumer episodes so far)."""
        if slow > self._slow_seen and self._limit.allow("slow-episodes", _now()) is not None:
            log.warning(
                "slow consumers: %d client episode(s) since the last report "
                "(slow_consumer_policy %s, max_pending_bytes %d)",
                slow - self._slow_seen,
                config.slow_consumer_policy,
                config.max_pending_bytes,
            )
            self._slow_seen = slow

    def connection_ended(self, conn: Connection, reason: str, stopping: bool) -> None:
        """Log how a connection ended: a link that was up at INFO with its reason (by
        the topology); a peer refused before its handshake, and a client closed as a
        slow consumer, at WARNING, rate-limited."""
        if isinstance(conn, PeerConnection):
            if conn.peer is not None:
                self._topology.link_ended(conn, reason)
                return
            if conn.close_reason and not stopping:
                peer = self._writer.peer_address(conn.id)
                where = f"{peer[0]}:{peer[1]}" if peer else "?"
                held = self._limit.allow(("refused", peer[0] if peer else "?"), _now())
                if held is not None:
                    log.warning(
                        "%s peer %s refused: %s%s",
                        conn.kind.value,
                        where,
                        conn.close_reason,
                        f" ({held} more from this address not logged)" if held else "",
                    )
            return
        if conn.close_reason and "slow consumer" in conn.close_reason:
            held = self._limit.allow("slow-consumer", _now())
            if held is not None:
                log.warning(
                    "client connection %d (%s) closed: %s%s",
                    conn.id,
                    conn.name or "unnamed",
                    conn.close_reason,
                    f" ({held} more slow-consumer closes not logged)" if held else "",
                )
        elif conn.close_reason:
            log.debug("connection %d closed: %s", conn.id, conn.close_reason)


def _now() -> float:
    return trio.current_time()
