"""``meshgate demo``: interest propagation between two clusters, end to end on the sans-IO core.

Cluster B's subscribers express interest in a few cells of a game world;
cluster A publishes entity updates for every cell.  The receiver side tells
the sender what it does not want (optimistic mode), switches to interest-only
at the threshold, and from then on only wanted traffic crosses.  Every frame
between the two halves is really encoded and decoded.
"""

from __future__ import annotations

import random
import time

from .interest import InboundInterest, InterestGraph, OutboundInterest
from .protocol import Decoder, Encoder, GatewayMessage, Opcode, to_frame


def run_demo(*, clients: int, messages: int, seed: int) -> int:
    """Run the demo and print a summary table; returns the exit status."""
    rng = random.Random(seed)
    cells = 40
    b_interest: InterestGraph[int] = InterestGraph()
    inbound = InboundInterest(b_interest, threshold=100)
    outbound = OutboundInterest()
    enc = Encoder()
    to_a = Decoder()  # interest frames B -> A
    to_b = Decoder()  # messages A -> B
    wanted_cells = set()
    for cid in range(clients):
        cell = rng.randrange(cells // 4)  # clients crowd into a quarter of the world
        wanted_cells.add(cell)
        b_interest.add("$G", f"world.cell.{cell}.>", cid)
    sent = avoided = delivered = interest_frames = 0
    t0 = time.perf_counter()
    for i in range(messages):
        subject = f"world.cell.{rng.randrange(cells)}.ship.{rng.randrange(500)}"
        if not outbound.should_forward("$G", subject):
            avoided += 1
            continue
        sent += 1
        to_b.feed(enc.encode(GatewayMessage(None, "$G", subject, None, i.to_bytes(4, "big"))))
        while (raw := to_b.next_raw()) is not None:
            assert raw[0] == Opcode.GMSG
            m = b_interest.match(raw[2], raw[3])
            if m is not None and m.plain:
                delivered += len(m.plain)
            else:
                for frame in inbound.on_unwanted(raw[2], raw[3]):
                    interest_frames += 1
                    to_a.feed(enc.encode(frame))
        while (raw := to_a.next_raw()) is not None:
            outbound.receive(to_frame(raw))
    elapsed = time.perf_counter() - t0
    rows = [
        ("subscribing clients (cluster B)", f"{clients}"),
        ("cells wanted / in the world", f"{len(wanted_cells)} / {cells}"),
        ("messages published (cluster A)", f"{messages}"),
        ("crossed the gateway", f"{sent}"),
        ("avoided by interest", f"{avoided} ({100 * avoided / max(messages, 1):.1f} %)"),
        ("deliveries in cluster B", f"{delivered}"),
        ("interest frames B -> A", f"{interest_frames}"),
        ("account mode at the end", outbound.mode("$G").value),
        ("elapsed", f"{elapsed * 1000:.0f} ms"),
    ]
    w = max(len(r[0]) for r in rows)
    print("meshgate demo: optimistic -> interest-only between two clusters (sans-IO core)")
    print("-" * (w + 24))
    for k, v in rows:
        print(f"{k:<{w}}  {v}")
    return 0
