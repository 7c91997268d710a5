"""Deltas against acknowledged keyed state (issue 21, part 4; docs/scheduling.md
"Deltas against acknowledged state", docs/protocol.md "Deltas").

Opt-in (``keyed_deltas``) and per client: a meshgate client that announces a delta
codec the node also uses (HELLO feature ``keyed-deltas:<name>``) gets a
:class:`KeyedDeltas`.  Every keyed message to it then carries a ``kseq`` (on the stream
as on the datagram lane); the client acknowledges the values it delivered (``KACK``),
and once a value of a key is acknowledged the node sends the next values of that key
as a delta against it (``[4, sid, subject, reply, delta, kseq, key, base]``), when the
codec makes one smaller than the value.

Bounded: at most ``max_keys`` keys (a new key past it is sent as a plain MSG without
``kseq``, never as a delta: policy ``full-values``, counted in ``untracked``) and
``max_bytes`` of kept values (baselines and values sent but not acknowledged yet; a
value that would pass it is not kept, so it cannot become a baseline: counted in
``unkept``).  Per key, at most :data:`IN_FLIGHT` values await an acknowledgement.

Never paying for nothing: a key whose last :data:`GIVE_UP_AFTER` values in a row went
without a delta that pays (the codec returned None or raised, the delta frame was not
smaller than the plain message, or no acknowledged baseline was usable although the
key had had :data:`~meshgate.protocol.DELTA_WINDOW` values to be acknowledged) is
**given up** for a while (per key, whatever subscription it comes through): its
baselines and kept values go, and its next values go as plain MSGs without ``kseq``
and key, which the client does not acknowledge (on a client with a datagram lane:
whole with the ``kseq`` that lane needs, never kept).  After :data:`BACKOFF_FIRST`
such values the node **probes** the codec once, off the wire, with the key's last two
values: if the delta would pay, the key is tracked again (state can change shape);
if not, the pause doubles, up to :data:`BACKOFF_MAX` values.  A delta that pays
forgets the key's pauses.  Paused keys are bounded by ``max_keys`` (the oldest pause
goes: policy ``oldest-goes``).  Counted in ``gave_up``, ``skipped`` and ``probes``.
"""

from __future__ import annotations

__all__ = [
    "BACKOFF_FIRST",
    "BACKOFF_MAX",
    "DeltaCounters",
    "FULL_POLICY",
    "GIVE_UP_AFTER",
    "IN_FLIGHT",
    "KeyBaseline",
    "KeyPause",
    "KeyedDeltas",
    "TRAILER",
]

from typing import Any

from ..protocol._delta import DELTA_WINDOW, KEY_SLOTS, DeltaCodec
from ._conn import pack_str, pack_uint

#: what a full table does: values of keys past the bound go whole, without kseq
FULL_POLICY = "full-values"
#: values of one key sent and not yet acknowledged that the node keeps (the oldest goes)
IN_FLIGHT = 4
#: values of a key in a row without a delta that pays before the key is given up
GIVE_UP_AFTER = 4
#: values a given-up key sends plain before it is tracked again, the first time; each
#: further give-up doubles it, up to BACKOFF_MAX (a paying delta resets it)
BACKOFF_FIRST = 16
BACKOFF_MAX = 1024
#: what a probe allows for a delta frame's trailer (kseq, key header, base) beyond
#: the key's own bytes: a probed delta must save more than the key plus this
TRAILER = 6


class DeltaCounters:
    """The node's delta totals (``Statistics.delta_*``)."""

    __slots__ = (
        "acks",
        "acks_ignored",
        "bytes_saved",
        "full",
        "gave_up",
        "probes",
        "resets",
        "sent",
        "skipped",
        "unkept",
        "untracked",
    )

    def __init__(self) -> None:
        #: keyed values sent as a delta, and as a full value (with kseq)
        self.sent = 0
        self.full = 0
        #: payload bytes the deltas saved (value minus delta)
        self.bytes_saved = 0
        #: acknowledgements taken, and ignored (unknown key, a kseq never sent or not
        #: kept, beyond the bound of one frame, or from a client without deltas)
        self.acks = 0
        self.acks_ignored = 0
        #: clients saying they lost a baseline (``kseq`` 0): that key goes whole next
        self.resets = 0
        #: values not kept (byte bound), keys not tracked (key bound)
        self.unkept = 0
        self.untracked = 0
        #: keys given up (their deltas kept not paying), values they sent plain, and
        #: the probes of whether a delta would pay again
        self.gave_up = 0
        self.skipped = 0
        self.probes = 0


class KeyBaseline:
    """One (sid, key) of one client: its kseq counter, the values awaiting an ack, the
    acknowledged baseline."""

    __slots__ = (
        "announce",
        "base",
        "base_seq",
        "key",
        "kseq",
        "misses",
        "sent",
        "sid",
        "slot",
        "start",
    )

    def __init__(self, sid: int, key: str, slot: int) -> None:
        #: the last kseq given to a value of this key
        self.kseq = 0
        self.sid = sid
        #: its key slot (-1: none, it goes by name) and the key field of its frames:
        #: the name, ``[slot, name]`` until the client acknowledged one of them (its
        #: ``announce``), then the slot alone
        self.slot = slot
        self.announce = pack_str(key)
        if slot >= 0:
            self.announce = b"\x92" + pack_uint(slot) + self.announce
        self.key = self.announce
        #: (kseq, payload) sent and not acknowledged, oldest first
        self.sent: list[tuple[int, bytes]] = []
        #: the acknowledged value deltas are made against (None: none), and its kseq
        self.base: bytes | None = None
        self.base_seq = 0
        #: values in a row without a paying delta; the kseq tracking (re)started after
        self.misses = 0
        self.start = 0


class KeyPause:
    """A key of one client given up: values left to send plain before the probe, the
    next pause's length, and the value kept for the probe."""

    __slots__ = ("backoff", "last", "skip")

    def __init__(self, skip: int) -> None:
        self.skip = skip
        self.backoff = min(2 * skip, BACKOFF_MAX)
        self.last: bytes | None = None


class KeyedDeltas:
    """Deltas for one client (see the module doc)."""

    __slots__ = (
        "codec",
        "counters",
        "encoder",
        "free_slots",
        "gave_up",
        "kept",
        "keys",
        "max_bytes",
        "max_keys",
        "numbered",
        "paused",
        "refresh",
        "saved",
        "sent",
        "slot_of",
        "slots",
    )

    def __init__(
        self,
        codec: DeltaCodec,
        encoder: Any,
        max_keys: int,
        max_bytes: int,
        refresh: int,
        counters: DeltaCounters,
        numbered: bool = False,
        slots: bool = False,
    ) -> None:
        self.codec = codec
        #: the node's encoder (packs a delta's tail)
        self.encoder = encoder
        self.max_keys = max_keys
        self.max_bytes = max_bytes
        #: every refresh-th value of a key goes whole (0: only when there is no baseline)
        self.refresh = refresh
        #: the client has a datagram lane: every keyed value needs its kseq, so a
        #: given-up key's values go whole with it (never kept) rather than plain
        self.numbered = numbered
        self.counters = counters
        self.keys: dict[tuple[int, str], KeyBaseline] = {}
        #: the client takes key slots: each tracked key gets one (at most KEY_SLOTS,
        #: then by name), freed when its subscription ends
        self.slots = slots
        self.slot_of: list[KeyBaseline | None] = []
        self.free_slots: list[int] = []
        #: keys given up (by key, across subscriptions), oldest first
        self.paused: dict[str, KeyPause] = {}
        #: bytes of values kept (baselines, values in flight, values kept for a probe)
        self.kept = 0
        #: values sent to this client as a delta, the payload bytes they saved, and the
        #: times one of its keys was given up
        self.sent = 0
        self.saved = 0
        self.gave_up = 0

    def frame(
        self,
        sid: int,
        key: str,
        prefix: bytes,
        tail: bytes,
        subject: str,
        reply: str | None,
        payload: bytes,
        unsent: bool,
    ) -> tuple[bytes, int] | None:
        """The frame for one keyed value and its kseq: a delta against the key's
        baseline when there is one and the codec makes one, else the full value with
        its kseq.  ``unsent``: the key's previous value was superseded before it was
        sent (it will never be acknowledged; its slot is reused).  None: send the
        message as it is (the key is not tracked: the table is full, or given up)."""
        k = (sid, key)
        st = self.keys.get(k)
        pause = self.paused.get(key)
        if pause is not None and pause.skip and self._still_paused(key, pause, payload):
            self.counters.skipped += 1
            if st is not None and (st.sent or st.base is not None):
                self._release(st)  # given up through another subscription
            if not self.numbered:
                return None
            if st is None:
                if len(self.keys) >= self.max_keys:
                    self.counters.untracked += 1
                    return None
                st = self._track(k)
            n = st.kseq = st.kseq + 1
            st.start = n
            return b"\x97" + prefix[1:] + tail + pack_uint(n) + st.key, n
        if st is None:
            if len(self.keys) >= self.max_keys:
                self.counters.untracked += 1
                return None
            st = self._track(k)
        sent = st.sent
        if unsent and sent and sent[-1][0] == st.kseq:
            self.kept -= len(sent.pop()[1])
        n = st.kseq = st.kseq + 1
        base = st.base
        plain = type(payload) is bytes
        frame: bytes | None = None
        refresh = self.refresh and n % self.refresh == 0
        if (
            base is not None
            and plain
            and n - st.base_seq < DELTA_WINDOW  # the client still holds the baseline
            and not refresh
        ):
            try:
                delta = self.codec.encode(base, payload)
            except Exception:  # a game codec's bug costs the delta, not the node
                delta = None
            if delta is not None:
                frame = (
                    b"\x98"
                    + prefix[1:]
                    + self.encoder.message_tail(subject, reply, delta)
                    + pack_uint(n)
                    + st.key
                    + pack_uint(st.base_seq)
                )
                saved = len(payload) - len(delta)
                self.counters.sent += 1
                self.counters.bytes_saved += saved
                self.sent += 1
                self.saved += saved
                if len(frame) < len(prefix) + len(tail):  # it pays: smaller than plain
                    st.misses = 0
                    if pause is not None:
                        del self.paused[key]  # the next give-up starts afresh
                else:
                    st.misses += 1
            else:
                st.misses += 1
        elif plain and not refresh and n - st.start > DELTA_WINDOW:
            st.misses += 1  # a baseline was due and none was usable
        if frame is None:
            frame = b"\x97" + prefix[1:] + tail + pack_uint(n) + st.key
            self.counters.full += 1
        if st.misses >= GIVE_UP_AFTER:
            self._give_up(key, st, pause)
            return frame, n
        if plain:
            size = len(payload)
            if len(sent) >= IN_FLIGHT:
                self.kept -= len(sent.pop(0)[1])
            if self.kept + size <= self.max_bytes:
                sent.append((n, payload))
                self.kept += size
            else:
                self.counters.unkept += 1
        return frame, n

    def _track(self, k: tuple[int, str]) -> KeyBaseline:
        """Start tracking (sid, key) ``k``, with a key slot if the client takes them."""
        slot = -1
        if self.slots:
            if self.free_slots:
                slot = self.free_slots.pop()
            elif len(self.slot_of) < KEY_SLOTS:
                slot = len(self.slot_of)
                self.slot_of.append(None)
        st = self.keys[k] = KeyBaseline(k[0], k[1], slot)
        if slot >= 0:
            self.slot_of[slot] = st
        return st

    def _still_paused(self, key: str, pause: KeyPause, payload: bytes) -> bool:
        """One more value of a given-up key: True while its pause lasts; at its end, the
        probe (would a delta of the last two values pay?) decides: False, track the
        key again; True, pause again for twice as long (bounded)."""
        pause.skip -= 1
        plain = type(payload) is bytes
        if pause.skip == 1:  # keep this value for the probe
            if plain and self.kept + len(payload) <= self.max_bytes:
                pause.last = payload
                self.kept += len(payload)
            return True
        if pause.skip:
            return True
        last = pause.last
        pays = False
        if last is not None:
            self.kept -= len(last)
            pause.last = None
            if plain:
                self.counters.probes += 1
                try:
                    delta = self.codec.encode(last, payload)
                except Exception:
                    delta = None
                pays = delta is not None and len(payload) - len(delta) > len(key) + TRAILER
        if pays:
            return False  # tracked again (pause.skip is 0: the entry keeps the backoff)
        pause.skip = pause.backoff
        pause.backoff = min(2 * pause.backoff, BACKOFF_MAX)
        return True

    def _release(self, st: KeyBaseline) -> None:
        """Drop the values kept for ``st`` (its acknowledgements up to now do nothing)."""
        self.kept -= sum(len(v) for _, v in st.sent)
        st.sent.clear()
        if st.base is not None:
            self.kept -= len(st.base)
        st.base = None
        st.base_seq = 0
        st.misses = 0
        st.start = st.kseq

    def _give_up(self, key: str, st: KeyBaseline, pause: KeyPause | None) -> None:
        """The key's deltas keep not paying: drop its values and pause it (its next
        values go plain), each pause twice as long as the last (bounded)."""
        self._release(st)
        paused = self.paused
        if pause is None:
            if len(paused) >= self.max_keys:  # bounded: the oldest pause goes
                self._unpause(next(iter(paused)))
            paused[key] = KeyPause(BACKOFF_FIRST)
        else:
            pause.skip = pause.backoff
            pause.backoff = min(2 * pause.backoff, BACKOFF_MAX)
        self.counters.gave_up += 1
        self.gave_up += 1

    def _unpause(self, key: str) -> None:
        pause = self.paused.pop(key)
        if pause.last is not None:
            self.kept -= len(pause.last)

    def ack(self, sid: int, key: str | int, kseq: int) -> bool:
        """The client delivered value ``kseq`` of (sid, key) and holds it: it becomes
        the key's baseline.  ``key`` is the key's name or its slot.  ``kseq`` 0: the
        client holds no baseline of the key (the next value goes whole, and names the
        key again).  False: ignored (unknown key, or a kseq never sent or no longer
        kept)."""
        st: KeyBaseline | None
        if type(key) is int:
            slots = self.slot_of
            st = slots[key] if 0 <= key < len(slots) else None
            if st is not None and st.sid != sid:
                st = None
        else:
            st = self.keys.get((sid, key))  # type: ignore[arg-type]
        c = self.counters
        if st is None or kseq > st.kseq:
            c.acks_ignored += 1
            return False
        if kseq == 0:
            st.key = st.announce  # it may have lost the slot too: name the key again
            if st.base is not None:
                self.kept -= len(st.base)
            st.base = None
            st.base_seq = 0
            c.resets += 1
            return True
        if st.slot >= 0:  # it delivered a frame naming the slot: the slot alone will do
            st.key = pack_uint(st.slot)
        if kseq <= st.start and st.base is None and not st.sent:
            return True  # a value from before the key was given up: nothing to do
        sent = st.sent
        for i, (n, value) in enumerate(sent):
            if n == kseq:
                if st.base is not None:
                    self.kept -= len(st.base)
                st.base = value
                st.base_seq = n
                for _, old in sent[:i]:
                    self.kept -= len(old)
                del sent[: i + 1]
                c.acks += 1
                return True
        c.acks_ignored += 1  # older than the baseline, or not kept: harmless
        return False

    def forget(self, sid: int) -> None:
        """Subscription ``sid`` ended: its keys' state goes."""
        for k in [k for k in self.keys if k[0] == sid]:
            st = self.keys.pop(k)
            if st.slot >= 0:
                self.slot_of[st.slot] = None
                self.free_slots.append(st.slot)
            self.kept -= sum(len(v) for _, v in st.sent)
            if st.base is not None:
                self.kept -= len(st.base)
