"""Subject matching must agree with a real nats-server (skipped, with the reason, without one)."""

from __future__ import annotations

import random

from meshgate.interest import SubscriptionIndex
from meshgate.subjects import match

from ._nats import NatsTextClient, run_nats

TOKENS = ["a", "b", "c", "fo*", "x>", "42"]


def random_pattern(rng: random.Random) -> str:
    toks = [rng.choice([*TOKENS, "*"]) for _ in range(rng.randint(1, 4))]
    if rng.random() < 0.25:
        toks[-1] = ">"
    return ".".join(toks)


def random_subject(rng: random.Random) -> str:
    return ".".join(rng.choice(TOKENS) for _ in range(rng.randint(1, 4)))


def test_matching_agrees_with_nats_server() -> None:
    rng = random.Random(20261122)
    patterns = sorted({random_pattern(rng) for _ in range(150)})
    subjects = sorted({random_subject(rng) for _ in range(300)})
    idx: SubscriptionIndex[int] = SubscriptionIndex()
    for sid, p in enumerate(patterns, 1):
        idx.add(p, sid)
    with run_nats() as port:
        c = NatsTextClient(port)
        try:
            c.send(b"".join(f"SUB {p} {sid}\r\n".encode() for sid, p in enumerate(patterns, 1)))
            c.send(b"".join(f"PUB {s} 0\r\n\r\n".encode() for s in subjects))
            got = sorted((s, sid) for s, sid, _ in c.ping_collect())
        finally:
            c.close()
    ours = sorted((s, sid) for s in subjects for sid in idx.match(s).plain)
    model = sorted((s, sid) for s in subjects for sid, p in enumerate(patterns, 1) if match(p, s))
    assert ours == model
    assert got == ours
    assert len(got) > 100  # the scenario really exercises matching
