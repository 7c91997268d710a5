"""What the game layer of a node shows (:meth:`meshgate.Gateway.game`, ``/gamez``)."""

from __future__ import annotations

__all__ = ["EntityInfo", "GameInfo"]

import attrs


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
    confirms: int = 0
    corrections: int = 0
    #: claims that moved an entity from one owner (or a release) to the next
    handovers: int = 0
    #: seconds from this node delivering provisional updates to the owner's verdict on
    #: them, summed over ``confirms + corrections``: their ratio is the mean time a
    #: prediction stays unconfirmed (the owner's round trip)
    verdict_seconds: float = 0.0
