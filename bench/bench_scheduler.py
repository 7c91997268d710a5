"""Per-client scheduler benchmark (issue 21): a battle seen by every client.

``--clients`` clients (200) each see ``--entities`` entities (500) updated at ``--rate``
Hz (20), in a square battle ``--world`` units wide; each client stands at a random
point of it.  With a budget (``--budget`` bytes/s, 64 kB/s) the node's scheduler
decides what each client gets, with :class:`meshgate.spatial.Rings` (full rate within
60 units, 5 Hz to 150, 1 Hz beyond; weights 100/2/1) from exact entity positions.
Clients stand in the inner half of the battle.  The same load then runs without a budget (every update goes out).

It drives the sans-IO node core in process (:class:`meshgate.testing.CoreHarness`,
simulated time): 200 x 500 x 20 Hz is two million deliveries a second, more than one
Python process on this 2-core machine carries in real time over sockets, so time is
simulated and CPU is measured around the core's calls (publish, fan-out, send tick,
taking the output), not the benchmark's own decoding.

Reported per run: bytes per second per client (median and max, against the budget),
the update rate of each client's nearest 20 entities (median and min), the p99 age of
the client's copy of a farthest-ring entity when a newer value replaces it, and CPU microseconds per delivered update.
Run: ``python bench/bench_scheduler.py`` (``--quick`` for a smoke run); writes
``bench/results/scheduler-<date>.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import statistics
import struct
import time
from pathlib import Path
from typing import Any

import meshgate
from meshgate.protocol import ConnectionKind, Decoder, Encoder, Message, Publish, Subscribe
from meshgate.spatial import Grid, Rings
from meshgate.testing import CoreHarness, CorePeer

RESULTS = Path(__file__).resolve().parent / "results"
PAYLOAD = struct.Struct("!dI")  # publish time, entity
PAD = 24  # a 36-byte payload: position, velocity, heading, flags
RINGS = ((60.0, 0.0, 100.0), (150.0, 5.0, 2.0), (math.inf, 1.0, 1.0))
GRID = Grid(50.0)


def run(args: argparse.Namespace, scheduled: bool, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    w = args.world
    pos = {str(e): (rng.uniform(0, w), rng.uniform(0, w)) for e in range(args.entities)}
    subjects = {
        k: GRID.subject(GRID.cell_of(*p), "ship", k) for k, p in pos.items()
    }  # cell.i.j.ship.k
    cfg: dict[str, Any] = {"name": "bench", "listen": "memory://bench"}
    if scheduled:
        cfg.update(client_bandwidth=args.budget, send_interval=1.0 / args.rate)
    h = CoreHarness(meshgate.GatewayConfig(**cfg))
    rings = Rings(GRID, RINGS, position=lambda subject, key: pos.get(key))
    h.core.set_relevance(rings.relevance)
    pub = _client(h)
    clients: list[CorePeer] = []
    focus: list[tuple[float, float]] = []
    for _ in range(args.clients):
        c = _client(h)
        c.send(Subscribe(1, f"{GRID.prefix}.>", None))
        c.take_bytes()
        f = (rng.uniform(w / 4, 3 * w / 4), rng.uniform(w / 4, 3 * w / 4))  # in the battle
        h.core.set_focus(c.conn_id, *f)
        clients.append(c)
        focus.append(f)
    near: list[set[str]] = []
    far: list[set[str]] = []
    near_radius: list[float] = []
    for f in focus:
        d = {k: math.hypot(p[0] - f[0], p[1] - f[1]) for k, p in pos.items()}
        nearest = sorted(d, key=d.__getitem__)[:20]
        near.append(set(nearest))
        near_radius.append(d[nearest[-1]])
        far.append({k for k, x in d.items() if x > RINGS[-2][0]})
    enc = Encoder()
    pad = b"\0" * PAD
    dt = 1.0 / args.rate
    ticks = round(args.seconds * args.rate)
    warm = round(args.warmup * args.rate)
    nbytes = [0] * args.clients
    near_n = [0] * args.clients
    ages: list[float] = []
    last: list[dict[str, float]] = [{} for _ in clients]
    delivered = 0
    cpu = 0.0
    dec = Decoder(max_frame_bytes=1 << 24)
    for t in range(warm + ticks):
        now = h.now + dt
        c0 = time.process_time()
        chunk = b"".join(
            enc.encode(Publish(subjects[k], None, PAYLOAD.pack(now, int(k)) + pad, key=k))
            for k in pos
        )
        pub.send_bytes(chunk)
        h.tick(now)
        outs = [c.take_bytes() for c in clients]
        cpu_tick = time.process_time() - c0
        if t < warm:
            if scheduled:
                for i, data in enumerate(outs):
                    dec.feed(data)
                    for m in dec:
                        assert isinstance(m, Message)
                        published, e = PAYLOAD.unpack_from(m.payload)
                        if str(e) in far[i]:
                            last[i][str(e)] = published
            continue
        cpu += cpu_tick
        for i, data in enumerate(outs):
            nbytes[i] += len(data)
            if not scheduled:
                delivered += args.entities  # every update, by construction
                near_n[i] += 20
                continue
            dec.feed(data)
            nr, fr = near[i], far[i]
            for m in dec:
                assert isinstance(m, Message)
                delivered += 1
                published, e = PAYLOAD.unpack_from(m.payload)
                k = str(e)
                if k in nr:
                    near_n[i] += 1
                if k in fr:
                    held = last[i].get(k)
                    if held is not None:
                        ages.append(now - held)  # how old the client's copy had become
                    last[i][k] = published
    secs = ticks * dt
    routed = ticks * args.entities * args.clients
    rates = [b / secs for b in nbytes]
    near_hz = [n / secs / 20 for n in near_n]
    ages.sort()
    inner = [i for i, r in enumerate(near_radius) if r <= RINGS[0][0]]
    st = h.core.statistics()
    return {
        "scheduled": scheduled,
        "bytes_per_s_median": round(statistics.median(rates)),
        "bytes_per_s_max": round(max(rates)),
        "near20_hz_median": round(statistics.median(near_hz), 2),
        "near20_hz_min": round(min(near_hz), 2),
        # clients whose nearest 20 all lie in the full-rate ring, and their rate
        "near20_in_ring0_clients": len(inner),
        "near20_in_ring0_hz_min": round(min((near_hz[i] for i in inner), default=0.0), 2),
        "near20_clients_at_19hz_share": round(sum(x >= 19 for x in near_hz) / len(near_hz), 3),
        "far_ring_age_p99_s": round(ages[int(0.99 * (len(ages) - 1))], 3) if ages else 0.0,
        "far_ring_age_median_s": round(ages[len(ages) // 2], 3) if ages else 0.0,
        "far_ring_refreshes": len(ages),
        "delivered_updates": delivered,
        "routed_copies": routed,
        "cpu_us_per_routed_copy": round(cpu / routed * 1e6, 3),
        "cpu_us_per_update": round(cpu / delivered * 1e6, 3) if delivered else 0.0,
        "cpu_seconds": round(cpu, 2),
        "superseded": st.scheduled_superseded,
        "refused": st.scheduled_refused,
    }


def _client(h: CoreHarness) -> CorePeer:
    c = h.open(ConnectionKind.CLIENT)
    c.received()
    c.hello()
    c.received()
    return c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--entities", type=int, default=500)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--budget", type=int, default=64_000)
    ap.add_argument("--world", type=float, default=400.0)
    ap.add_argument("--seconds", type=float, default=4.0, help="simulated seconds measured")
    ap.add_argument("--warmup", type=float, default=1.0, help="simulated seconds not measured")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.quick:
        args.clients, args.seconds, args.warmup, args.runs = 20, 1.0, 0.5, 1
    runs: dict[str, list[dict[str, Any]]] = {"scheduled": [], "unscheduled": []}
    for i in range(args.runs):
        for scheduled in (True, False):
            r = run(args, scheduled, seed=i)
            runs["scheduled" if scheduled else "unscheduled"].append(r)
            print(json.dumps(r))
    medians = {
        mode: {k: statistics.median(r[k] for r in rs) for k in rs[0] if k != "scheduled"}
        for mode, rs in runs.items()
    }
    doc = {
        "benchmark": "scheduler",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "compiled": meshgate.COMPILED},
        "load": {
            k: getattr(args, k)
            for k in ("clients", "entities", "rate", "budget", "world", "seconds", "warmup")
        },
        "rings": [[r if math.isfinite(r) else "inf", hz, wt] for r, hz, wt in RINGS],
        "runs": runs,
        "medians": medians,
    }
    print(json.dumps(medians, indent=2))
    out = args.out
    if out is None and not args.quick:
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"scheduler-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.json"
    if out is not None:
        out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
