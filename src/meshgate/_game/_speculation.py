"""What a node remembers about speculative relays, every table bounded.

A client's input with a relay subject is relayed at once to every interested client,
marked provisional (reply ``$PROV.<client>.<seq>``); the owner confirms or corrects it
later.  Between the two, the node that delivered the provisional update remembers to
which of its local subscriptions, and the sender's node remembers that the input was
relayed (the owner gets it marked speculative) and, for a session, where the sender is
attached now.  Oldest records are forgotten first, and one client's flood evicts only
its own.
"""

from __future__ import annotations

__all__ = ["SPECULATIVE_MAX", "SPECULATIVE_PER_CLIENT", "Recipients", "Speculation"]

from collections import deque

from .._reserved import PROV_PREFIX

#: provisional records remembered at most, in all and per sending client (oldest
#: forgotten first; a client's flood evicts only its own records)
SPECULATIVE_MAX = 65536
SPECULATIVE_PER_CLIENT = 256

#: the local subscriptions, as (connection id, sid), that got one provisional update
Recipients = list[tuple[int, int]]


class Speculation:
    """The speculation records of one node."""

    def __init__(self) -> None:
        #: per local client identity, the sequence numbers of its inputs relayed
        #: provisionally (read on the input path: the owner gets them marked speculative)
        self.relayed: dict[str, dict[int, None]] = {}
        #: provisional records forgotten (bounded) before the owner answered
        self.evicted = 0
        # $PROV reply -> (subject, recipients, when delivered)
        self._records: dict[str, tuple[str, Recipients, float]] = {}
        self._records_of: dict[str, deque[str]] = {}  # sender -> its records, oldest first
        self._attached: dict[str, int] = {}  # session identity -> local connection id

    def __len__(self) -> int:
        """Provisional records waiting for the owner's verdict."""
        return len(self._records)

    def attach(self, client: str, conn_id: int) -> None:
        """The session ``client`` sent an input from local connection ``conn_id``."""
        attached = self._attached
        attached[client] = conn_id
        if len(attached) > SPECULATIVE_MAX:
            del attached[next(iter(attached))]

    def attached(self, client: str) -> int | None:
        """The local connection the session ``client`` is attached through, if any."""
        return self._attached.get(client)

    def relay(self, client: str, seq: int) -> None:
        """``client``'s input ``seq`` is relayed provisionally."""
        mine = self.relayed.get(client)
        if mine is None:
            mine = self.relayed[client] = {}
        mine[seq] = None
        if len(mine) > SPECULATIVE_PER_CLIENT:
            del mine[next(iter(mine))]

    def delivered(self, reply: str, subject: str, recipients: Recipients, now: float) -> None:
        """The provisional update marked ``reply`` went to ``recipients`` on ``subject``
        at ``now``."""
        records = self._records
        if reply not in records:
            sender = reply[len(PROV_PREFIX) :].rpartition(".")[0]
            mine = self._records_of.get(sender)
            if mine is None:
                mine = self._records_of[sender] = deque()
                if len(self._records_of) > SPECULATIVE_MAX:
                    del self._records_of[next(iter(self._records_of))]
            mine.append(reply)
            if len(mine) > SPECULATIVE_PER_CLIENT:
                evicted = records.pop(mine.popleft(), None)
                if evicted is not None:
                    self.evicted += 1
        records[reply] = (subject, recipients, now)
        if len(records) > SPECULATIVE_MAX:
            del records[next(iter(records))]
            self.evicted += 1

    def answered(self, reply: str) -> tuple[str, Recipients, float] | None:
        """The owner answered the provisional update marked ``reply``: who got it, and
        when."""
        return self._records.pop(reply, None)

    def client_left(self, client: str, conn_id: int) -> None:
        """The local connection ``conn_id`` of ``client`` went away."""
        if self._attached.get(client) == conn_id:
            del self._attached[client]
        self.relayed.pop(client, None)
        for reply in self._records_of.pop(client, ()):
            self._records.pop(reply, None)
