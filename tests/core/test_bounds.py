"""State kept for clients is bounded, released when they leave, and counted."""

from __future__ import annotations

import msgpack
import pytest

from meshgate.authority import InputRouter
from meshgate.protocol import ConnectionKind, Encoder, Message, Publish, Subscribe
from meshgate.testing import CoreHarness, CorePeer

from .helpers import node_config

TOKEN = "replicant-token-0123456"


def with_game(**kw: object) -> CoreHarness:
    return CoreHarness(
        node_config(replicants=True, replicant_token=TOKEN, speculative=("ship.*",), **kw)
    )


def inputs(entity_seq_data: list[tuple[str, int, bytes, str | None]]) -> bytes:
    enc = Encoder()
    return b"".join(
        enc.encode(Publish(f"$IN.{e}", None, msgpack.packb((s, d) if r is None else (s, d, r))))
        for e, s, d, r in entity_seq_data
    )


def test_held_inputs_are_bounded_per_client_and_released_when_it_leaves() -> None:
    h = with_game()
    cheat = h.open()
    cheat.hello()
    big = b"x" * 64 * 1024
    cheat.send_bytes(inputs([(f"ghost{i}", 0, big, None) for i in range(1600)]))
    info = h.game()
    assert info is not None
    assert info.input_bytes <= 1024 * 1024
    assert info.inputs_refused >= 1600 - 16
    cheat.lose()
    info = h.game()
    assert info is not None
    assert info.input_bytes == 0
    assert info.entities == ()
    assert info.inputs_dropped_client_left == 1600 - info.inputs_refused


def test_router_total_bound_across_clients() -> None:
    router = InputRouter(max_client_bytes=100, max_total_bytes=250)
    assert router.input("c1", "e", 0, b"x" * 100) == []
    assert router.input("c1", "e", 1, b"x") == []  # over c1's bound: refused
    assert router.input("c2", "e", 0, b"x" * 100) == []
    assert router.input("c3", "e", 0, b"x" * 100) == []  # over the total: refused
    assert router.refused == 2
    assert router.total_bytes == 200
    claimed = router.claim("e", "r1", 1)
    assert [(d.client, d.seq) for d in claimed] == [("c1", 0), ("c2", 0)]
    router.ack("e", "r1", 1, {"c1": 0, "c2": 0})
    assert router.total_bytes == 0
    assert router.client_bytes == {}


@pytest.mark.parametrize("flood", [70_000])
def test_one_clients_flood_cannot_evict_anothers_provisional_records(flood: int) -> None:
    h = with_game()
    owner = h.open(ConnectionKind.REPLICANT)
    owner.hello(name="r1", token=TOKEN)
    owner.send(Subscribe(1, "$REP.r1.in"))
    owner.send(Publish("$AUTH.claim", None, msgpack.packb(("ship1", "r1", 1))))
    watcher = h.open()
    watcher.hello()
    watcher.send(Subscribe(1, "ship.*"))
    victim: CorePeer = h.open()
    victim.hello()
    victim.send_bytes(inputs([("ship1", 0, b"v", "ship.v")]))
    cheat = h.open()
    cheat.hello()
    cheat.send_bytes(inputs([("junk", n, b"", "ship.c") for n in range(flood)]))
    watcher.received()
    owner.received()
    # the owner corrects the victim's move: the watcher that saw it gets the correction
    client = f"a0/{victim.conn_id}"
    owner.send(Publish("$SPEC.correct", None, msgpack.packb((client, 0, b"fixed"))))
    got = [f for f in watcher.received() if isinstance(f, Message)]
    assert [(m.subject, m.reply, m.payload) for m in got] == [
        ("ship.v", f"$CORR.{client}.0", b"fixed")
    ]


def test_a_leaving_clients_inputs_for_an_entity_between_owners_still_arrive() -> None:
    router = InputRouter()
    router.claim("ship", "r1", 1)
    router.release("ship", "r1", 1, {})
    assert router.input("c1", "ship", 0, b"held during the hand-over") == []
    assert router.input("c1", "ghost", 0, b"for nobody") == []
    router.client_left("c1")
    assert [d.seq for d in router.claim("ship", "r2", 2)] == [0]
    assert "ghost" not in router.entities
    assert router.dropped_client_left == 1
