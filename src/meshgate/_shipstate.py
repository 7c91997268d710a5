"""The demo's ship state: a game's replicated ship record in a fixed layout (issue 21).

``meshgate demo`` publishes each ship's state, keyed by the ship, as this record, and
``bench/bench_deltas.py`` measures deltas on it (public as
:class:`meshgate.testing.ShipState`).  A game edge replicates a ship's whole record,
not a bare position (Photon Fusion's networked properties, Unreal Iris' replicated
state), and that is what deltas against acknowledged state are for: the fields that
stay put between updates (id, hull, hit points, shield) cost nothing in a delta, and
quantised positions change only in their low bytes.

Layout (:data:`SHIP_STATE_SIZE` = 28 bytes, network byte order)::

    offset  size  field      encoding
    0       4     ship       uint32, the ship's id
    4       4     x          int32, world units x 1024 (POSITION_SCALE)
    8       4     y          int32, world units x 1024
    12      2     vx         int16, the last move in world units x 1024
    14      2     vy         int16, the last move in world units x 1024
    16      2     heading    uint16, degrees x 65536 / 360
    18      2     hp         uint16, hit points
    20      2     shield     uint16, shield points
    22      4     input_seq  uint32, inputs the owner applied (wraps)
    26      1     kind       uint8, hull class
    27      1     flags      uint8, bit 0: the last move was corrected by the owner

Positions and moves are quantised to 1/1024 of a world unit (:data:`POSITION_SCALE`),
so a packed value unpacks to the nearest multiple of 1/1024 (about 1 mm for a unit of
one metre); a move is at most 32 units.
"""

from __future__ import annotations

__all__ = ["HEADING_SCALE", "POSITION_SCALE", "SHIP_STATE_SIZE", "ShipState"]

import math
import struct
from typing import NamedTuple

_RECORD = struct.Struct("!IiihhHHHIBB")
#: a packed :class:`ShipState`'s size in bytes
SHIP_STATE_SIZE = _RECORD.size
#: positions and moves are whole multiples of 1 / POSITION_SCALE world units
POSITION_SCALE = 1024
#: headings are whole multiples of 360 / HEADING_SCALE degrees
HEADING_SCALE = 65536


class ShipState(NamedTuple):
    """One ship's replicated record (the module doc gives the layout and precision)."""

    #: the ship's id
    ship: int
    #: position, world units (quantised to 1 / POSITION_SCALE)
    x: float
    y: float
    #: the last move, world units (quantised to 1 / POSITION_SCALE)
    vx: float = 0.0
    vy: float = 0.0
    #: degrees, 0 <= heading < 360
    heading: float = 0.0
    hp: int = 100
    shield: int = 100
    #: inputs the owner applied (wraps at 2**32)
    input_seq: int = 0
    #: hull class
    kind: int = 0
    #: bit 0: the owner corrected the last move
    flags: int = 0

    def pack(self) -> bytes:
        """The record's :data:`SHIP_STATE_SIZE` bytes (values quantised)."""
        s = POSITION_SCALE
        return _RECORD.pack(
            self.ship,
            round(self.x * s),
            round(self.y * s),
            round(self.vx * s),
            round(self.vy * s),
            round(self.heading * HEADING_SCALE / 360) % HEADING_SCALE,
            self.hp,
            self.shield,
            self.input_seq & 0xFFFFFFFF,
            self.kind,
            self.flags,
        )

    def moved(self, dx: float, dy: float, limit: float, world: float) -> ShipState:
        """The record after the owner applies a move (the demo's authoritative rule),
        quantised like a packed record: the move clamped to ``limit`` world units per
        axis, the position wrapped into the square world ``[0, world)``, the move and its heading
        recorded (the heading stays when the ship stands still), one more input
        applied, and flag bit 0 set if the move was clamped (corrected)."""
        cx = max(-limit, min(limit, dx))
        cy = max(-limit, min(limit, dy))
        heading = self.heading
        if cx or cy:
            turns = round(math.degrees(math.atan2(cy, cx)) * HEADING_SCALE / 360)
            heading = turns % HEADING_SCALE * 360 / HEADING_SCALE
        span = round(world * POSITION_SCALE)
        return self._replace(
            x=(round((self.x + cx) * POSITION_SCALE) % span) / POSITION_SCALE,
            y=(round((self.y + cy) * POSITION_SCALE) % span) / POSITION_SCALE,
            vx=round(cx * POSITION_SCALE) / POSITION_SCALE,
            vy=round(cy * POSITION_SCALE) / POSITION_SCALE,
            heading=heading,
            input_seq=(self.input_seq + 1) & 0xFFFFFFFF,
            flags=int(cx != dx or cy != dy),
        )

    @classmethod
    def unpack(cls, data: bytes) -> ShipState:
        """The record ``data`` holds (:class:`struct.error` if it is not one)."""
        ship, x, y, vx, vy, heading, hp, shield, seq, kind, flags = _RECORD.unpack(data)
        s = POSITION_SCALE
        return cls(
            ship, x / s, y / s, vx / s, vy / s, heading * 360 / HEADING_SCALE,
            hp, shield, seq, kind, flags,
        )  # fmt: skip
