"""Input follows authority: a sans-IO router for client inputs to entity owners.

Each entity has at most one owning replicant at a time, identified with an *epoch*
that grows with every change of owner.  Client inputs carry a per-client sequence
number.  The router (one per gateway node, for the clients attached to it):

* delivers an input at once to the entity's current owner, tagged with the epoch;
* **holds** inputs while the entity has no owner (during a planned hand-over, or
  after its owner was lost) and delivers them to the next owner, in order;
* **retains** every delivered input until the owner acknowledges it (an owner
  acknowledges with the per-client sequence numbers its published state includes);
  if the owner is lost, the unacknowledged inputs are delivered again to the next
  owner, which resumes from the last acknowledged state — so nothing is lost and,
  counted against the state that survives, nothing is applied twice;
* drops a client's input whose sequence number it has already seen (a retry).

A planned move is ``release`` (the old owner hands over its state, including the
sequence numbers it applied) then ``claim`` by the new owner with a higher epoch; the
two may arrive in either order.  An owner must skip an input whose sequence number
its state already includes (inputs a former owner applied but never acknowledged are
delivered again).
Memory is bounded: at most ``max_pending`` held-or-retained inputs per entity, at most
``max_client_bytes`` of input data per client and ``max_total_bytes`` in all; past
those, new inputs are refused (counted), never silently lost.  When a client leaves
(:meth:`InputRouter.client_left`), what it sent for entities that never had an owner is
dropped (counted) -- an input for an entity in a hand-over still reaches the next
owner -- and an entity with no owner and nothing pending is forgotten.

Pure synchronous code: no I/O, no clock.
"""

from __future__ import annotations

__all__ = ["Delivery", "EntityState", "InputRouter"]

from collections import deque
from typing import NamedTuple

import attrs


class Delivery(NamedTuple):
    """An input to hand to ``replicant`` for ``entity`` under ``epoch``."""

    replicant: str
    entity: str
    epoch: int
    client: str
    seq: int
    data: bytes


@attrs.define
class EntityState:
    """The router's view of one entity."""

    owner: str | None = None
    epoch: int = 0
    #: inputs delivered to the owner and not yet acknowledged, in order
    retained: deque[tuple[str, int, bytes]] = attrs.field(factory=deque)
    #: inputs waiting for an owner, in order
    held: deque[tuple[str, int, bytes]] = attrs.field(factory=deque)
    #: highest sequence number seen per client (retries are dropped)
    seen: dict[str, int] = attrs.field(factory=dict)


class InputRouter:
    """Routes client inputs to entity owners across hand-overs and owner loss."""

    def __init__(
        self,
        *,
        max_pending: int = 1024,
        max_client_bytes: int = 1024 * 1024,
        max_total_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        if max_pending < 1 or max_client_bytes < 1 or max_total_bytes < 1:
            raise ValueError("max_pending, max_client_bytes and max_total_bytes must be >= 1")
        self.max_pending = max_pending
        self.max_client_bytes = max_client_bytes
        self.max_total_bytes = max_total_bytes
        self.entities: dict[str, EntityState] = {}
        #: bytes of input data held or retained, per client and in all
        self.client_bytes: dict[str, int] = {}
        self.total_bytes = 0
        #: inputs refused because a bound (per entity, per client, in all) was reached
        self.refused = 0
        #: held inputs dropped because their client left before any owner took them
        self.dropped_client_left = 0
        #: retries dropped as duplicates
        self.duplicates = 0
        #: claims ignored because their epoch was not newer
        self.stale = 0

    def _state(self, entity: str) -> EntityState:
        st = self.entities.get(entity)
        if st is None:
            st = self.entities[entity] = EntityState()
        return st

    def owner(self, entity: str) -> tuple[str | None, int]:
        """The entity's current owner (None while held) and epoch."""
        st = self.entities.get(entity)
        return (None, 0) if st is None else (st.owner, st.epoch)

    # -- client side -----------------------------------------------------------------------------

    def input(self, client: str, entity: str, seq: int, data: bytes) -> list[Delivery]:
        """A client input arrived; returns what to deliver now (possibly nothing)."""
        st = self._state(entity)
        if seq <= st.seen.get(client, -1):
            self.duplicates += 1
            return []
        size = len(data)
        used = self.client_bytes.get(client, 0)
        if (
            len(st.retained) + len(st.held) >= self.max_pending
            or used + size > self.max_client_bytes
            or self.total_bytes + size > self.max_total_bytes
        ):
            self.refused += 1
            return []
        st.seen[client] = seq
        self.client_bytes[client] = used + size
        self.total_bytes += size
        if st.owner is None:
            st.held.append((client, seq, data))
            return []
        st.retained.append((client, seq, data))
        return [Delivery(st.owner, entity, st.epoch, client, seq, data)]

    # -- authority -------------------------------------------------------------------------------

    def claim(self, entity: str, replicant: str, epoch: int) -> list[Delivery]:
        """``replicant`` owns ``entity`` from ``epoch`` on.  Every held input (including
        those a former owner never acknowledged) is delivered to it, in order.

        Announcements travel on different paths, so a claim may overtake the previous
        owner's release: a claim with a higher epoch takes over at once (the former
        owner's unacknowledged inputs go to the new one, which skips sequence numbers
        its state already includes); a claim at an epoch already seen is stale and
        ignored."""
        st = self._state(entity)
        if epoch <= st.epoch:
            self.stale += 1
            return []
        if st.owner is not None:
            st.held = deque(list(st.retained) + list(st.held))
            st.retained = deque()
        st.owner = replicant
        st.epoch = epoch
        pending = st.held
        st.retained = pending
        st.held = deque()
        return [Delivery(replicant, entity, epoch, c, s, d) for c, s, d in pending]

    def release(self, entity: str, replicant: str, epoch: int, applied: dict[str, int]) -> None:
        """Planned hand-over: the owner stops, having applied ``applied`` (client ->
        highest sequence); inputs it did not apply are held for the next owner."""
        st = self._state(entity)
        if st.owner != replicant or st.epoch != epoch:
            return  # a stale release (already replaced): nothing to do
        self.ack(entity, replicant, epoch, applied)
        st.held = deque(list(st.retained) + list(st.held))
        st.retained.clear()
        st.owner = None

    def owner_lost(self, replicant: str) -> list[str]:
        """``replicant`` is gone: its entities wait for a new owner, which gets every
        input the lost owner had not acknowledged.  Returns the orphaned entities."""
        orphaned = []
        for entity, st in self.entities.items():
            if st.owner == replicant:
                st.held = deque(list(st.retained) + list(st.held))
                st.retained.clear()
                st.owner = None
                orphaned.append(entity)
        return orphaned

    def ack(self, entity: str, replicant: str, epoch: int, applied: dict[str, int]) -> None:
        """The owner's state includes ``applied`` (client -> highest sequence applied):
        retained inputs at or below those numbers are forgotten."""
        st = self.entities.get(entity)
        if st is None or st.owner != replicant or st.epoch != epoch:
            return  # an acknowledgement from a former owner does not count
        kept: deque[tuple[str, int, bytes]] = deque()
        for c, s, d in st.retained:
            if s > applied.get(c, -1):
                kept.append((c, s, d))
            else:
                self._release_bytes(c, len(d))
        st.retained = kept

    def _release_bytes(self, client: str, size: int) -> None:
        left = self.client_bytes.get(client, 0) - size
        if left > 0:
            self.client_bytes[client] = left
        else:
            self.client_bytes.pop(client, None)
        self.total_bytes -= size

    def client_left(self, client: str) -> None:
        """``client`` is gone for good: drop what it sent for entities that never had an
        owner (counted), and forget entities left with no owner and nothing pending.
        Inputs for an entity between owners are still delivered to the next owner (the
        client sent them; its leaving does not unsend them), and inputs already delivered
        stay retained until the owner acknowledges them."""
        for entity in list(self.entities):
            st = self.entities[entity]
            if st.epoch == 0 and any(c == client for c, _, _ in st.held):
                kept: deque[tuple[str, int, bytes]] = deque()
                for c, s, d in st.held:
                    if c == client:
                        self.dropped_client_left += 1
                        self._release_bytes(c, len(d))
                    else:
                        kept.append((c, s, d))
                st.held = kept
            if not any(c == client for c, _, _ in st.retained + st.held):
                st.seen.pop(client, None)
            if st.owner is None and not st.held and not st.retained:
                del self.entities[entity]

    def pending(self, entity: str) -> int:
        """Inputs held or retained for ``entity``."""
        st = self.entities.get(entity)
        return 0 if st is None else len(st.retained) + len(st.held)
