"""The game layer's control plane belongs to the nodes and replicant credentials."""

from __future__ import annotations

import msgpack
import pytest

import meshgate
from meshgate.protocol import ConnectionKind, Message, Publish, Subscribe
from meshgate.testing import CoreHarness, CorePeer

from .helpers import node_config

OWNER_TOKEN = "replicant-token-0123456"


def game() -> CoreHarness:
    return CoreHarness(node_config(replicants=True, replicant_token=OWNER_TOKEN))


def replicant(h: CoreHarness, name: str = "r1") -> CorePeer:
    r = h.open(ConnectionKind.REPLICANT)
    r.hello(name=name, token=OWNER_TOKEN)
    assert r.state == "OPEN"
    r.send(Subscribe(1, f"$REP.{name}.in"))
    r.received()
    return r


def claim(r: CorePeer, entity: str, name: str = "r1", epoch: int = 1) -> None:
    r.send(Publish("$AUTH.claim", None, msgpack.packb((entity, name, epoch))))


def player(h: CoreHarness) -> CorePeer:
    p = h.open()
    p.hello(name="player")
    p.received()
    return p


def test_a_player_cannot_publish_control_subjects() -> None:
    h = game()
    r = replicant(h)
    claim(r, "ship1")
    cheat = player(h)
    for subject, fields in [
        ("$AUTH.claim", ("ship1", "cheat", 99)),
        ("$AUTH.lost", ("r1",)),
        ("$AUTH.release", ("ship1", "r1", 1, {})),
        ("$SPEC.correct", ("a0/1", 0, b"x")),
        ("$REP.r1.in", ("ship1", 1, "a0/9", 0, b"fake", False)),
        ("$INTEREST.sync", ()),
    ]:
        cheat.send(Publish(subject, None, msgpack.packb(fields)))
    errors = cheat.errors()
    assert [e.code for e in errors] == [meshgate.ErrorCode.PERMISSION_DENIED] * 6
    assert cheat.state == "OPEN"
    assert h.core.statistics().permission_violations == 6
    assert r.received() == []  # the owner saw none of it
    # the real owner still gets the inputs
    cheat.send(Publish("$IN.ship1", None, msgpack.packb((0, b"thrust"))))
    (inp,) = [f for f in r.received() if isinstance(f, Message)]
    assert inp.subject == "$REP.r1.in"
    assert msgpack.unpackb(inp.payload)[0] == "ship1"


@pytest.mark.parametrize("pattern", ["$REP.r1.in", "$REP.>", "$AUTH.*", "$SPEC.*", "$INTEREST.add"])
def test_a_player_cannot_subscribe_to_control_subjects(pattern: str) -> None:
    h = game()
    cheat = player(h)
    cheat.send(Subscribe(1, pattern))
    assert [e.code for e in cheat.errors()] == [meshgate.ErrorCode.PERMISSION_DENIED]
    assert h.core.statistics().subscriptions == 0


def test_wildcards_never_reach_the_control_plane() -> None:
    h = game()
    r = replicant(h)
    claim(r, "ship1")
    spy = player(h)
    spy.send(Subscribe(1, ">"), Subscribe(2, "*.*.*"), Subscribe(3, "*.>"))
    sender = player(h)
    sender.send(Publish("$IN.ship1", None, msgpack.packb((0, b"secret move"))))
    r.send(Publish("$AUTH.ack", None, msgpack.packb(("ship1", "r1", 1, {}))))
    assert [f for f in spy.received() if isinstance(f, Message)] == []
    assert [f.subject for f in r.received() if isinstance(f, Message)] == ["$REP.r1.in"]


def test_a_player_cannot_forge_provisional_replies() -> None:
    h = game()
    cheat = player(h)
    cheat.send(Publish("ship.1.pos", "$PROV.a0/2.0", b"x"), Publish("ship.1.pos", "$CORR.x", b""))
    assert [e.code for e in cheat.errors()] == [meshgate.ErrorCode.PERMISSION_DENIED] * 2


@pytest.mark.parametrize("token", [None, "wrong-token-0123456789"])
def test_replicant_role_needs_a_replicant_credential(token: str | None) -> None:
    h = game()
    fake = h.open(ConnectionKind.REPLICANT)
    fake.hello(name="r1", token=token)
    assert [e.code for e in fake.errors()] == [meshgate.ErrorCode.AUTH_FAILED]
    assert h.core.statistics().auth_failures == 1


def test_replicant_users_and_ordinary_users() -> None:
    users = (
        meshgate.User(token="player-token-0", account="game"),
        meshgate.User(token="replicant-user-token", account="game", replicant=True),
    )
    h = CoreHarness(node_config(replicants=True, users=users, trusted_network=True))
    fake = h.open(ConnectionKind.REPLICANT)
    fake.hello(name="r1", token="player-token-0")
    assert [e.code for e in fake.errors()] == [meshgate.ErrorCode.AUTH_FAILED]
    real = h.open(ConnectionKind.REPLICANT)
    real.hello(name="r1", token="replicant-user-token")
    assert real.state == "OPEN"


def test_a_replicant_reads_only_its_own_inbox() -> None:
    h = game()
    r2 = replicant(h, "r2")
    r2.send(Subscribe(2, "$REP.r1.in"), Subscribe(3, "$REP.*.in"))
    assert [e.code for e in r2.errors()] == [meshgate.ErrorCode.PERMISSION_DENIED] * 2
