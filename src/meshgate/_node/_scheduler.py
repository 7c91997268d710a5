"""The per-client send scheduler: a bandwidth budget, accumulated priority, rate caps.

Sans-IO and clock-free (every call takes ``now``); one :class:`Scheduler` per client
with a budget (``client_bandwidth``).  The node's send tick (``send_interval``) calls
:meth:`Scheduler.tick`, which appends to the client's output what fits its budget:

* **Budget.**  A token bucket (rate ``budget`` bytes/s, depth one tick's worth) paces
  the sends, and a one-second window of what was sent caps them: over any window of
  one second the bytes written never exceed the budget by more than one message.
  A tick sends values in priority order while they fit (its first value always goes,
  so a value larger than a tick's worth is not stuck; the bucket then runs negative).
  Reliable traffic (everything that is not keyed state) goes straight to the output
  and is charged first (``reliable`` bytes at each tick); keyed state shares the rest.
* **Latest value only.**  :meth:`Scheduler.offer` keeps one pending value per key
  (``(sid, key)``); a newer value supersedes the pending one (counted), so a value is
  never sent after a newer one of the same key.
* **Accumulated priority.**  A pending key's priority is ``weight x priority x seconds
  it has been eligible`` (``weight``: its relevance; ``priority``: the publisher's, 1
  without, from ``MIN_PRIORITY`` to ``MAX_PRIORITY``): it grows every tick by that gain
  and is reset when its value is sent.
  Each tick sends the highest priorities first, so a key of weight ``w`` among ``n``
  keys of weight at most ``W`` waits at most about
  ``2 x (n x size / (budget x tick)) x (W / w)`` ticks: nothing starves.
* **Rate caps.**  A key is eligible ``min_interval`` seconds after its last send at
  the earliest (the distance rings of :class:`meshgate.spatial.Rings`).
* **Bounded.**  At most ``max_keys`` keys are tracked and ``max_bytes`` of values held;
  when full the policy is ``refuse-new`` (:data:`FULL_POLICY`): the state of an idle key
  past its rate cap is forgotten to make room if there is one, else the new value is
  refused (counted).
"""

from __future__ import annotations

__all__ = ["FULL_POLICY", "KeyState", "Scheduler"]

from collections import deque
from collections.abc import Callable, Container

#: what a full scheduler does: forget an idle key's state, else refuse the new value
FULL_POLICY = "refuse-new"

#: the window over which the budget is a hard cap, in seconds (less a microsecond: ticks
#: exactly one second apart, as float sums of the interval land, are two windows)
_WINDOW = 1.0 - 1e-6


class KeyState:
    """One key of one client: its pending value (if any) and when it was last sent."""

    __slots__ = (
        "eligible",
        "frame",
        "last_sent",
        "min_interval",
        "priority",
        "rated",
        "since",
        "weight",
    )

    def __init__(self) -> None:
        #: the newest value not yet sent (a whole MSG frame), or None: idle
        self.frame: bytes | None = None
        #: when the pending value arrived (the key has been pending since)
        self.since = 0.0
        #: when the key may be sent next: max(since, last_sent + min_interval)
        self.eligible = 0.0
        #: when its last value was sent (-inf: never)
        self.last_sent = float("-inf")
        #: the relevance weight (the host's function, the rings; 1 by default)
        self.weight = 1.0
        #: the publisher priority of the pending value (1: none); the gain is the product
        self.priority = 1.0
        self.min_interval = 0.0
        #: when the relevance (weight, min_interval) was last computed (-inf: never)
        self.rated = float("-inf")


class Scheduler:
    """What one client with a bandwidth budget is sent, and when (docs/scheduling.md).

    :meth:`offer` keeps the newest value per key; :meth:`tick` (every ``interval``
    seconds, with the reliable bytes written since the last tick) appends what fits the
    budget to the client's output, highest accumulated priority (weight x seconds
    eligible) first, no key more often than its ``min_interval``.  Bounded by
    ``max_keys`` and ``max_bytes`` (policy ``refuse-new``, counted in :attr:`refused`).
    """

    __slots__ = (
        "_window",
        "budget",
        "credit",
        "focus",
        "interval",
        "keyed_bytes",
        "keyed_sent",
        "keys",
        "last_tick",
        "max_bytes",
        "max_keys",
        "pending",
        "pending_bytes",
        "refused",
        "reliable_bytes",
        "superseded",
        "waiting",
        "window_bytes",
    )

    def __init__(
        self, budget: int, interval: float, max_keys: int, max_bytes: int, now: float
    ) -> None:
        if budget <= 0 or interval <= 0:
            raise ValueError("budget and interval must be positive")
        #: bytes per second
        self.budget = budget
        #: seconds between ticks (the bucket holds one tick's worth)
        self.interval = interval
        self.max_keys = max_keys
        self.max_bytes = max_bytes
        #: bucket credit in bytes (negative after a message larger than what was left)
        self.credit = budget * interval
        self.last_tick = now
        #: (tick time, bytes written then) over the last second, and their sum
        self._window: deque[tuple[float, int]] = deque()
        self.window_bytes = 0
        #: every key tracked (pending or idle)
        self.keys: dict[tuple[int, str], KeyState] = {}
        #: the keys with a pending value
        self.waiting: dict[tuple[int, str], KeyState] = {}
        #: how many keys have a pending value
        self.pending = 0
        self.pending_bytes = 0
        #: the client's focus in the world (for distance relevance), or None
        self.focus: tuple[float, float] | None = None
        # counters
        self.superseded = 0
        self.refused = 0
        self.keyed_sent = 0
        self.keyed_bytes = 0
        self.reliable_bytes = 0

    # -- input ----------------------------------------------------------------------------

    def offer(
        self,
        key: tuple[int, str],
        frame: bytes,
        now: float,
        weight: float = 1.0,
        min_interval: float = 0.0,
        priority: float = 1.0,
    ) -> bool:
        """A new value for ``key`` (a whole frame); it supersedes a pending one (and its
        publisher ``priority``).  False: refused (the scheduler is full, policy
        ``refuse-new``)."""
        st = self.keys.get(key)
        size = len(frame)
        if st is not None:
            old = st.frame
            if (
                old is not None
                and st.weight == weight
                and st.priority == priority
                and st.min_interval == min_interval
                and self.pending_bytes + size - len(old) <= self.max_bytes
            ):
                # the common case: a newer value of a waiting key, same relevance
                st.frame = frame
                self.pending_bytes += size - len(old)
                self.superseded += 1
                return True
        if st is None:
            if len(self.keys) >= self.max_keys and not self._evict_idle(now):
                self.refused += 1
                return False
            st = KeyState()
            self.keys[key] = st
        old = st.frame
        if old is not None:
            self.pending_bytes -= len(old)
            self.superseded += 1
            st.frame = None
            self.pending -= 1
            del self.waiting[key]
        if self.pending_bytes + size > self.max_bytes:
            self.refused += 1
            return False
        if old is None:
            st.since = now
        st.frame = frame
        st.weight = weight if weight > 0.0 else 1e-9
        st.priority = priority if priority > 0.0 else 1e-9
        st.min_interval = min_interval
        eligible = st.last_sent + min_interval
        st.eligible = eligible if eligible > st.since else st.since
        self.pending += 1
        self.pending_bytes += size
        self.waiting[key] = st
        return True

    def supersede(
        self, key: tuple[int, str], frame: bytes, now: float, ttl: float, priority: float = 1.0
    ) -> bool:
        """The fast path of :meth:`offer` for a caller that computes relevance: if
        ``key`` has a value waiting with the same publisher ``priority`` whose relevance
        was rated within ``ttl`` seconds, the new value replaces it with that relevance
        (True); else False, and nothing changed (call :meth:`offer` with a fresh
        relevance)."""
        st = self.keys.get(key)
        if st is None or now - st.rated >= ttl or st.priority != priority:
            return False
        old = st.frame
        if old is None:
            return False
        size = len(frame)
        if self.pending_bytes + size - len(old) > self.max_bytes:
            return False
        st.frame = frame
        self.pending_bytes += size - len(old)
        self.superseded += 1
        return True

    def _evict_idle(self, now: float) -> bool:
        """Forget one idle key's state whose rate cap has passed (the oldest tracked, so
        forgetting it changes nothing it would be sent); False if there is none."""
        for k, st in self.keys.items():
            if st.frame is None and st.last_sent + st.min_interval <= now:
                del self.keys[k]
                return True
        return False

    def forget(self, live: Container[int]) -> None:
        """Drop the pending values of subscriptions not in ``live`` (they ended)."""
        gone = [k for k in self.waiting if k[0] not in live]
        for k in gone:
            st = self.keys.pop(k)
            del self.waiting[k]
            if st.frame is not None:
                self.pending -= 1
                self.pending_bytes -= len(st.frame)

    # -- the tick -------------------------------------------------------------------------

    def tick(
        self,
        now: float,
        reliable: int,
        out: bytearray,
        sizes: deque[int] | None = None,
        live: Container[int] | None = None,
        hold: bool = False,
        lane: Callable[[tuple[int, str], bytes], bool] | None = None,
    ) -> int:
        """Charge ``reliable`` bytes written since the last tick, then append to ``out``
        the pending values that fit, highest accumulated priority first (``sizes``: the
        frame sizes, when the output tracks them; ``live``: the subscriptions still
        there, the others' keys are forgotten; ``hold``: send nothing keyed now;
        ``lane``: a client whose transport carries datagrams, offered each value
        first, True when it took it as a datagram; a datagram costs the budget what a
        stream frame does).  Returns the number of values sent."""
        budget = self.budget
        dt = now - self.last_tick
        self.last_tick = now
        credit = self.credit + budget * dt if dt > 0.0 else self.credit
        cap = budget * (dt if dt > self.interval else self.interval)
        if credit > cap:
            credit = cap  # one tick's worth (a late tick's): no bursts the window would undo
        credit -= reliable
        self.reliable_bytes += reliable
        window = self._window
        wsum = self.window_bytes + reliable
        horizon = now - _WINDOW
        while window and window[0][0] <= horizon:
            wsum -= window.popleft()[1]
        allow = min(credit, budget - wsum)
        sent = 0
        written = 0
        if allow > 0 and self.pending and not hold:
            if live is not None:
                for k in self.waiting:
                    if k[0] not in live:
                        self.forget(live)
                        break
            waiting = self.waiting
            ready = [
                (st.weight * st.priority * (now - st.eligible), k)
                for k, st in waiting.items()
                if st.eligible <= now
            ]
            if ready:
                ready.sort(reverse=True)
                for _, k in ready:
                    st = waiting[k]
                    frame = st.frame
                    assert frame is not None
                    n = len(frame)
                    if n > allow and sent:
                        break  # the rest waits (its priority keeps growing)
                    del waiting[k]
                    if lane is None or not lane(k, frame):
                        out += frame
                        if sizes is not None:
                            sizes.append(n)
                    st.frame = None
                    st.last_sent = now
                    written += n
                    sent += 1
                    allow -= n
                self.pending -= sent
                self.pending_bytes -= written
                self.keyed_sent += sent
                self.keyed_bytes += written
        self.credit = credit - written
        if reliable or written:
            window.append((now, reliable + written))
        self.window_bytes = wsum + written
        return sent

    # -- monitoring -----------------------------------------------------------------------

    def oldest_pending_age(self, now: float) -> float:
        """Seconds the longest-waiting pending value has waited (0.0: none)."""
        if not self.pending:
            return 0.0
        oldest = min(st.since for st in self.waiting.values())
        return max(0.0, now - oldest)

    def sent_rate(self) -> int:
        """Bytes written over the last second (reliable and keyed)."""
        return self.window_bytes
