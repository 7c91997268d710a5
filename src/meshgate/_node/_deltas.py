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
"""

from __future__ import annotations

__all__ = ["DeltaCounters", "FULL_POLICY", "IN_FLIGHT", "KeyBaseline", "KeyedDeltas"]

from typing import Any

from ..protocol._delta import DELTA_WINDOW, DeltaCodec
from ._conn import pack_str, pack_uint

#: what a full table does: values of keys past the bound go whole, without kseq
FULL_POLICY = "full-values"
#: values of one key sent and not yet acknowledged that the node keeps (the oldest goes)
IN_FLIGHT = 4


class DeltaCounters:
    """The node's delta totals (``Statistics.delta_*``)."""

    __slots__ = (
        "acks",
        "acks_ignored",
        "bytes_saved",
        "full",
        "resets",
        "sent",
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


class KeyBaseline:
    """One (sid, key) of one client: its kseq counter, the values awaiting an ack, the
    acknowledged baseline."""

    __slots__ = ("base", "base_seq", "key", "kseq", "sent")

    def __init__(self, key: bytes) -> None:
        #: the last kseq given to a value of this key
        self.kseq = 0
        #: the key, packed
        self.key = key
        #: (kseq, payload) sent and not acknowledged, oldest first
        self.sent: list[tuple[int, bytes]] = []
        #: the acknowledged value deltas are made against (None: none), and its kseq
        self.base: bytes | None = None
        self.base_seq = 0


class KeyedDeltas:
    """Deltas for one client (see the module doc)."""

    __slots__ = (
        "codec",
        "counters",
        "encoder",
        "kept",
        "keys",
        "max_bytes",
        "max_keys",
        "refresh",
        "saved",
        "sent",
    )

    def __init__(
        self,
        codec: DeltaCodec,
        encoder: Any,
        max_keys: int,
        max_bytes: int,
        refresh: int,
        counters: DeltaCounters,
    ) -> None:
        self.codec = codec
        #: the node's encoder (packs a delta's tail)
        self.encoder = encoder
        self.max_keys = max_keys
        self.max_bytes = max_bytes
        #: every refresh-th value of a key goes whole (0: only when there is no baseline)
        self.refresh = refresh
        self.counters = counters
        self.keys: dict[tuple[int, str], KeyBaseline] = {}
        #: bytes of values kept (baselines and values in flight)
        self.kept = 0
        #: values sent to this client as a delta, and the payload bytes they saved
        self.sent = 0
        self.saved = 0

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
        sent (it will never be acknowledged; its slot is reused).  None: the key is not
        tracked (the table is full), send the message as it is."""
        k = (sid, key)
        st = self.keys.get(k)
        if st is None:
            if len(self.keys) >= self.max_keys:
                self.counters.untracked += 1
                return None
            st = self.keys[k] = KeyBaseline(pack_str(key))
        sent = st.sent
        if unsent and sent and sent[-1][0] == st.kseq:
            self.kept -= len(sent.pop()[1])
        n = st.kseq = st.kseq + 1
        base = st.base
        plain = type(payload) is bytes
        frame: bytes | None = None
        if (
            base is not None
            and plain
            and n - st.base_seq < DELTA_WINDOW  # the client still holds the baseline
            and not (self.refresh and n % self.refresh == 0)
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
        if frame is None:
            frame = b"\x97" + prefix[1:] + tail + pack_uint(n) + st.key
            self.counters.full += 1
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

    def ack(self, sid: int, key: str, kseq: int) -> bool:
        """The client delivered value ``kseq`` of (sid, key) and holds it: it becomes
        the key's baseline.  ``kseq`` 0: the client holds no baseline of the key (the
        next value goes whole).  False: ignored (unknown key, or a kseq never sent or
        no longer kept)."""
        st = self.keys.get((sid, key))
        c = self.counters
        if st is None or kseq > st.kseq:
            c.acks_ignored += 1
            return False
        if kseq == 0:
            if st.base is not None:
                self.kept -= len(st.base)
            st.base = None
            st.base_seq = 0
            c.resets += 1
            return True
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
            self.kept -= sum(len(v) for _, v in st.sent)
            if st.base is not None:
                self.kept -= len(st.base)
