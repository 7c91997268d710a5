"""Message headers on the msgpack wire: a payload that carries a NATS-style header block.

On the wire a payload field (PUB, MSG, RMSG, GMSG) is either ``bin`` (no headers) or
the msgpack extension type :data:`HEADERS_EXT` whose data is a 4-byte big-endian
header-block length, the header block (``NATS/1.0\\r\\nKey: value\\r\\n\\r\\n``), then the
body.  In memory such a payload is a :class:`Headered`: the body as ``bytes``, with
the block in ``.headers``; everything that routes messages passes it on untouched.
"""

from __future__ import annotations

__all__ = ["HEADERS_EXT", "Headered", "ext_hook", "to_ext"]

import struct

import msgpack

#: the msgpack extension type code of a payload with headers
HEADERS_EXT = 1

_LEN = struct.Struct(">I")


class Headered(bytes):
    """A message body (``bytes``) with its header block in :attr:`headers`."""

    headers: bytes

    def __new__(cls, body: bytes, headers: bytes) -> Headered:
        """``body`` with the raw header block ``headers``."""
        obj = super().__new__(cls, body)
        obj.headers = headers
        return obj

    def __reduce__(self) -> tuple[object, ...]:
        return (Headered, (bytes(self), self.headers))


def to_ext(payload: Headered) -> msgpack.ExtType:
    """The wire form of a payload with headers."""
    return msgpack.ExtType(HEADERS_EXT, _LEN.pack(len(payload.headers)) + payload.headers + payload)


def ext_hook(code: int, data: bytes) -> object:
    """Unpacker hook: :data:`HEADERS_EXT` becomes a :class:`Headered`; a malformed one
    or any other extension raises ValueError (the frame is then malformed)."""
    if code != HEADERS_EXT or len(data) < 4:
        raise ValueError(f"unsupported msgpack extension type {code}")
    (n,) = _LEN.unpack_from(data)
    if n > len(data) - 4:
        raise ValueError("header block longer than the payload extension")
    return Headered(data[4 + n :], data[4 : 4 + n])
