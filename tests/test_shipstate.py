"""The demo's ship record (``meshgate.testing.ShipState``, issue 21): its fixed layout,
its quantisation, and what deltas make of it."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshgate.protocol import XorDelta
from meshgate.testing import ShipState

_Q = 1 / 1024  # the documented position precision


def test_layout_is_fixed_and_documented() -> None:
    s = ShipState(7, 1.5, 2.25, 0.5, -1.0, 90.0, 80, 60, 12, 3, 1)
    data = s.pack()
    assert len(data) == 28
    assert data[:4] == (7).to_bytes(4, "big")
    assert data[4:8] == (1536).to_bytes(4, "big")  # 1.5 x 1024
    assert data[26:] == b"\x03\x01"
    assert ShipState.unpack(data) == s
    with pytest.raises(struct.error):
        ShipState.unpack(data[:-1])


@given(
    st.integers(0, 2**32 - 1),
    st.floats(0, 1000, allow_nan=False),
    st.floats(-1000, 1000, allow_nan=False),
    st.floats(-30, 30, allow_nan=False),
    st.floats(0, 359.99, allow_nan=False),
    st.integers(0, 2**32 - 1),
)
def test_round_trip_within_the_precision(
    ship: int, x: float, y: float, v: float, heading: float, seq: int
) -> None:
    s = ShipState(ship, x, y, v, -v, heading, input_seq=seq)
    back = ShipState.unpack(s.pack())
    assert back.ship == ship
    assert back.input_seq == seq
    for a, b in ((back.x, x), (back.y, y), (back.vx, v), (back.vy, -v)):
        assert abs(a - b) <= _Q / 2 + 1e-9
    assert abs(back.heading - heading) <= 360 / 65536 or abs(back.heading - heading) > 359
    assert back.pack() == s.pack()  # quantised values pack to themselves


def test_a_small_move_is_a_small_delta() -> None:
    """Deltas pay on the record: a move changes the low bytes of the position, the
    input sequence and perhaps the heading; id, hull, hit points and shield stay."""
    codec = XorDelta()
    a = ShipState(42, 10.0, 20.0, 0.05, 0.1, 63.4, input_seq=100, kind=2)
    b = a._replace(x=10.05, y=20.1, input_seq=101)
    delta = codec.encode(a.pack(), b.pack())
    assert delta is not None
    assert len(delta) <= 14
    assert codec.decode(a.pack(), delta) == b.pack()


def test_moved_is_the_owners_rule() -> None:
    s = ShipState(1, 23.5, 0.25, heading=45.0, input_seq=2**32 - 1)
    t = s.moved(0.75, -3.0, 1.1, 24)
    assert t.x == pytest.approx(0.25)  # wrapped
    assert t.y == pytest.approx(24 - 0.85, abs=1 / 1024)  # clamped to 1.1, wrapped
    assert t.vy == pytest.approx(-1.1, abs=1 / 1024)
    assert t.flags == 1  # corrected
    assert t.input_seq == 0  # wraps
    assert ShipState.unpack(t.pack()) == t  # already quantised
    u = t.moved(0.5, 0.5, 1.1, 24)
    assert u.flags == 0
    assert u.heading == pytest.approx(45.0)
    assert u.moved(0.0, 0.0, 1.1, 24).heading == u.heading  # standing still keeps it
