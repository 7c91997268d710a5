"""Sans-IO core benchmark: subject matching, the frame codec, and the node core's
publish path (decode, match, encode, fan-out) with no I/O at all.

Run: ``python bench/bench_core.py`` (add ``--quick`` for a fast smoke run).
Prints one table; figures are per second on this machine, in this run.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

import meshgate
from meshgate.interest import SubscriptionIndex
from meshgate.protocol import (
    ConnectionKind,
    Decoder,
    Encoder,
    Frame,
    Message,
    Publish,
    RouteMessage,
    Subscribe,
)
from meshgate.testing import CoreHarness


def build_index(n: int, rng: random.Random, cache_size: int) -> SubscriptionIndex[int]:
    """A game-like mix: 60% literal entity subjects, 25% one-token wildcards,
    10% tail wildcards, 5% queue subscriptions."""
    idx: SubscriptionIndex[int] = SubscriptionIndex(cache_size=cache_size)
    entities = max(10, n // 4)
    for sid in range(n):
        r = rng.random()
        e = rng.randrange(entities)
        if r < 0.6:
            idx.add(f"ship.{e}.{rng.choice(['pos', 'hp', 'input'])}", sid)
        elif r < 0.85:
            idx.add(f"ship.{e}.*", sid)
        elif r < 0.95:
            idx.add(f"cell.{rng.randrange(64)}.{rng.randrange(64)}.>", sid)
        else:
            idx.add(f"svc.{rng.randrange(50)}.*", sid, queue=f"q{rng.randrange(5)}")
    return idx


def subjects_for(n: int, rng: random.Random, count: int) -> list[str]:
    entities = max(10, n // 4)
    out = []
    for _ in range(count):
        r = rng.random()
        if r < 0.7:
            out.append(f"ship.{rng.randrange(entities)}.pos")
        elif r < 0.9:
            out.append(f"cell.{rng.randrange(64)}.{rng.randrange(64)}.ship.{rng.randrange(99)}")
        else:
            out.append(f"svc.{rng.randrange(50)}.call")
    return out


def core_path(subscribers: int, frame: Frame, kind: ConnectionKind) -> Callable[[], int]:
    """Messages through one node core: 1000 frames per input chunk, as a socket read
    would bring them, to ``subscribers`` local subscribers; output taken per chunk."""
    config = meshgate.GatewayConfig(
        name="a0", cluster="A", listen="memory://bench", cluster_listen="memory://bench-r"
    )
    h = CoreHarness(config)
    for _ in range(subscribers):
        sub = h.open()
        sub.hello()
        sub.send(Subscribe(1, "ship.*.pos"))
    source = h.open(kind)
    source.hello(cluster="A") if kind is ConnectionKind.ROUTE else source.hello()
    chunk = Encoder().encode(frame) * 1000

    def run() -> int:
        source.send_bytes(chunk)
        return 1000

    return run


def rate(fn: Callable[[], int], min_seconds: float) -> float:
    """Operations per second of ``fn`` (which returns how many operations it did)."""
    ops = 0
    start = time.perf_counter()
    while True:
        ops += fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return ops / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="short run (smoke test)")
    args = ap.parse_args()
    secs = 0.05 if args.quick else 1.0
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
    rng = random.Random(7)
    rows: list[tuple[str, str]] = []
    for n in sizes:
        hot = build_index(n, rng, cache_size=4096)
        hot_subjects = subjects_for(n, rng, 1000)  # fits in the cache
        for s in hot_subjects:
            hot.match(s)

        def hits(idx: SubscriptionIndex[int] = hot, subs: list[str] = hot_subjects) -> int:
            m = idx.match
            for s in subs:
                m(s)
            return len(subs)

        cold = build_index(n, rng, cache_size=0)
        cold_subjects = subjects_for(n, rng, 2000)

        def misses(idx: SubscriptionIndex[int] = cold, subs: list[str] = cold_subjects) -> int:
            m = idx.match
            for s in subs:
                m(s)
            return len(subs)

        rows.append((f"match, {n:>7,} subs, cache hit", f"{rate(hits, secs):>13,.0f} /s"))
        rows.append((f"match, {n:>7,} subs, cache miss", f"{rate(misses, secs):>13,.0f} /s"))

    enc = Encoder()
    payload = b"x" * 128
    pub = Publish("ship.42.pos", None, payload, None)

    def encode() -> int:
        e = enc.encode
        for _ in range(1000):
            e(pub)
        return 1000

    tail = enc.message_tail("ship.42.pos", None, payload)
    prefixes = [enc.message_prefix(sid) for sid in range(100)]

    def fanout_encode() -> int:
        out = bytearray()
        for p in prefixes:
            out += p
            out += tail
        return len(prefixes)

    stream = b"".join(enc.encode(Message(i, "ship.42.pos", None, payload)) for i in range(1000))

    def decode() -> int:
        d = Decoder()
        d.feed(stream)
        nxt = d.next_raw
        n = 0
        while nxt() is not None:
            n += 1
        return n

    rows.append(("encode PUB 128 B (Encoder.encode)", f"{rate(encode, secs):>13,.0f} /s"))
    rows.append(("fan-out MSG 128 B (shared tail)", f"{rate(fanout_encode, secs):>13,.0f} /s"))
    rows.append(("decode MSG 128 B (Decoder.next_raw)", f"{rate(decode, secs):>13,.0f} /s"))

    client = ConnectionKind.CLIENT
    for label, subs, frame, kind in [
        ("node core, client 1 -> 1, 16 B", 1, Publish("ship.1.pos", None, b"x" * 16), client),
        ("node core, client 1 -> 1, 1 KiB", 1, Publish("ship.1.pos", None, b"x" * 1024), client),
        ("node core, client 1 -> 10, 128 B", 10, Publish("ship.1.pos", None, payload), client),
        (
            "node core, route 1 -> 1, 16 B",
            1,
            RouteMessage(None, "$G", "ship.1.pos", None, b"x" * 16),
            ConnectionKind.ROUTE,
        ),
    ]:
        rows.append((label + " (msg)", f"{rate(core_path(subs, frame, kind), secs):>13,.0f} /s"))

    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  {'rate':>15}")
    print("-" * (width + 17))
    for name, value in rows:
        print(f"{name:<{width}}  {value:>15}")


if __name__ == "__main__":
    main()
