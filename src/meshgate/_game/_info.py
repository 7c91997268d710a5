"""What the game layer of a node shows (:meth:`meshgate.Gateway.game`, ``/gamez``)."""

from __future__ import annotations

__all__ = ["RELAY_LATENCY_BUCKETS", "EntityInfo", "GameInfo"]
import attrs

#: upper bounds (seconds) of the relay latency histogram's buckets
RELAY_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@attrs.frozen
class EntityInfo:
    """One entity as a node's input router sees it."""

    account: str
    entity: str
    #: the owning replicant, or None (unowned: inputs are held)
    owner: str | None
    epoch: int
    #: inputs held for the next owner
    held: int
    #: inputs delivered to the owner and not acknowledged yet
    retained: int


@attrs.frozen
class GameInfo:
    """The game layer of one node (:meth:`meshgate.Gateway.game`)."""

    entities: tuple[EntityInfo, ...]
    #: provisional relays waiting for the owner's confirm or correction
    provisional: int
    #: provisional records forgotten (bounded) before the owner answered
    provisional_evicted: int
    #: bytes of input data held or retained for owners, summed over accounts
    input_bytes: int
    #: inputs refused (a bound was reached), duplicated or stale, summed over accounts
    inputs_refused: int
    inputs_duplicate: int
    inputs_stale: int
    #: held inputs dropped because their client left before any owner took them
    inputs_dropped_client_left: int
    #: the last malformed authority and speculation messages, for diagnosis
    errors: tuple[str, ...]
    #: inputs sent with a relay subject no ``speculative`` pattern matches: applied by
    #: their owner, not relayed; the client got PERMISSION_DENIED
    relays_refused: int = 0
    #: owner verdicts on provisional updates this node delivered: confirmed, corrected
    confirmed: int = 0
    corrected: int = 0
    #: relay latency: seconds from a provisional update reaching this node's clients to
    #: the owner's verdict, as ``(upper bound, count)`` per bucket (not cumulative), the
    #: count beyond the last bound, and the sum of all
    relay_latency_buckets: tuple[tuple[float, int], ...] = ()
    relay_latency_beyond: int = 0
    relay_latency_sum: float = 0.0
    #: claims that moved an entity from one owner (or a release) to the next
    handovers: int = 0
