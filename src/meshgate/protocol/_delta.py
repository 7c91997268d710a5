"""Delta codecs for keyed state (issue 21, part 4; docs/protocol.md "Deltas against
acknowledged state").

A codec turns a value into a delta against a *baseline* (a value of the same key the
client acknowledged) and back.  Node and client must use the same codec: its
:attr:`DeltaCodec.name` is announced in the client's HELLO (feature
``keyed-deltas:<name>``), and a node whose codec has another name sends that client
full values only.
"""

from __future__ import annotations

__all__ = [
    "ACK_STRIDE",
    "DELTA_FEATURE",
    "DELTA_WINDOW",
    "KEY_SLOTS",
    "KEY_SLOTS_FEATURE",
    "DeltaCodec",
    "DeltaError",
    "XorDelta",
]

import re
from typing import Protocol

#: the HELLO feature a client announces, followed by its codec's name
DELTA_FEATURE = "keyed-deltas:"

#: a client keeps the last ``DELTA_WINDOW`` values it delivered of a key as possible
#: baselines, and a node sends a delta only against a baseline fewer than
#: ``DELTA_WINDOW`` values back (``kseq - base < DELTA_WINDOW``), so the client still
#: holds it however the acknowledgements were delayed; older: the full value
DELTA_WINDOW = 8

#: the HELLO feature of key slots: a client and a node that both announce it name a
#: tracked key by a small integer (its slot) once the client has it: the node's first
#: frames of a key carry ``[slot, key]`` in the key field, and once the client has
#: acknowledged one of them, only ``slot``; the client acknowledges by slot too
KEY_SLOTS_FEATURE = "key-slots"
#: slots are 0 <= slot < KEY_SLOTS per connection (past that, keys go by name)
KEY_SLOTS = 4096

#: a client acknowledges a value of a key when it is at least ``ACK_STRIDE`` values
#: newer than the last it acknowledged of that key (and always the first, and the
#: first after it told the node it lost its baseline): a baseline at most
#: ``ACK_STRIDE`` values plus a round trip old is as good for a delta, and the
#: acknowledgements upstream cost a quarter
ACK_STRIDE = 4

#: zero runs shorter than this stay in the literal (a run costs about two bytes)
_MIN_RUN = 3
_ZEROS = re.compile(b"\x00{%d,}" % _MIN_RUN)


class DeltaError(ValueError):
    """A delta that does not decode against its baseline (malformed or truncated)."""


class DeltaCodec(Protocol):
    """What a delta codec provides (the game's own, or :class:`XorDelta`)."""

    #: names the encoding on the wire (the client's HELLO feature); short, no spaces
    name: str

    def encode(self, baseline: bytes, value: bytes) -> bytes | None:
        """The delta turning ``baseline`` into ``value``; None: send the full value
        (the delta would not be smaller, or the codec cannot express it)."""
        ...

    def decode(self, baseline: bytes, delta: bytes) -> bytes:
        """The value ``delta`` encodes against ``baseline``; :class:`DeltaError` (or any
        ``ValueError``) if it does not decode."""
        ...


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_uvarint(data: bytes, i: int) -> tuple[int, int]:
    n = 0
    shift = 0
    while True:
        if i >= len(data) or shift > 35:
            raise DeltaError("truncated or oversized varint")
        b = data[i]
        i += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, i
        shift += 7


def _xor(a: bytes, b: bytes, n: int) -> bytes:
    """``a`` XOR ``b`` over ``n`` bytes (each padded with zeros or cut to ``n``)."""
    x = int.from_bytes(a[:n].ljust(n, b"\x00"), "big") ^ int.from_bytes(
        b[:n].ljust(n, b"\x00"), "big"
    )
    return x.to_bytes(n, "big")


class XorDelta:
    """The default codec: the value XOR the baseline (the baseline cut or padded with
    zeros to the value's length), zero runs compressed.

    Encoding: ``uvarint(len(value))``, then pairs ``uvarint(zeros) uvarint(len(lit))
    lit`` covering the XOR from the start; a trailing run of zeros is implied.  Generic
    (any bytes, msgpack or not) and cheap: an unchanged field costs nothing but its
    share of a run, a changed byte costs itself.  None when the delta is not smaller
    than the value."""

    name = "xor1"

    def __init__(self, max_size: int = 1 << 24) -> None:
        #: the largest value :meth:`decode` builds (a bound on what a delta can claim)
        self.max_size = max_size

    def encode(self, baseline: bytes, value: bytes) -> bytes | None:
        """The delta from ``baseline`` to ``value`` (None: not smaller than ``value``)."""
        n = len(value)
        x = _xor(value, baseline, n)
        out = bytearray(_uvarint(n))
        limit = n - 1  # the delta must be smaller than the value
        lit = 0  # where the current literal starts (the end of the last zero run)
        run = 0  # the zero run before it
        for m in _ZEROS.finditer(x):
            start, end = m.span()
            if start:
                out += _uvarint(run)
                out += _uvarint(start - lit)
                out += x[lit:start]
                if len(out) > limit:
                    return None
            run = end - start
            lit = end
        if lit < n:  # the last literal (a trailing run of zeros is implied)
            out += _uvarint(run)
            out += _uvarint(n - lit)
            out += x[lit:]
        if len(out) > limit:
            return None
        return bytes(out)

    def decode(self, baseline: bytes, delta: bytes) -> bytes:
        """The value ``delta`` encodes against ``baseline`` (:class:`DeltaError`: it
        does not decode)."""
        n, i = _read_uvarint(delta, 0)
        if n > self.max_size:
            raise DeltaError(f"a delta claims {n} bytes (more than {self.max_size})")
        x = bytearray()
        end = len(delta)
        while i < end:
            zeros, i = _read_uvarint(delta, i)
            size, i = _read_uvarint(delta, i)
            if len(x) + zeros + size > n or i + size > end:
                raise DeltaError("a delta runs past its value or its own end")
            x += bytes(zeros)
            x += delta[i : i + size]
            i += size
        x += bytes(n - len(x))
        return _xor(bytes(x), baseline, n)
