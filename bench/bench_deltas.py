"""Deltas against acknowledged keyed state (issue 21, part 4): the keyed bytes they save
on the demo's entity-state traffic.

Runs the node core in process (sans-IO, :class:`meshgate.testing.CoreHarness`, no
sockets) with real :class:`meshgate.client.ClientProtocol` clients on the far end (they
acknowledge what they deliver, as :class:`meshgate.Client` does): ``--ships`` ships fly
over the demo's 24 x 24 grid of cells at the demo's speed limit (at most 1.1 units a
move), one move per ship per 50 ms tick, and each ship's state is published keyed by
the ship on ``world.<x>.<y>.ship<n>``, as the demo's region replicant does;
``--clients`` players each keep the demo's 3 x 3 area of interest around a cell.
Three payloads:

* ``ship``: the demo's own state, its real encoder: :class:`meshgate.testing.ShipState`
  (28 bytes: id, position quantised to 1/1024 unit, move, heading, hit points, shield,
  input sequence, hull, flags), moved by the demo owner's rule
  (:meth:`~meshgate.testing.ShipState.moved`);
* ``position``: a bare position, two doubles (16 bytes; the demo's state before
  issue 21): small moves leave the doubles' high bytes alone, so a delta saves a
  byte or two, hardly more than its trailer;
* ``rich``: a msgpack map a game could send for a ship (id, position, heading, speed,
  hit points, kind: about 80 bytes);
* ``noise``: 16 random bytes, state no delta can shrink: what deltas cost when every
  key is given up (docs/scheduling.md, "never paying for nothing").

Each runs with ``keyed_deltas`` off and on, with the same seed; the figures are the
bytes the node wrote to the players (all of it keyed state), the bytes of their
acknowledgements, and the process CPU time of the run (core and clients).  Medians
over ``--repeat`` seeds.

Run: ``python bench/bench_deltas.py`` (``--quick`` for a smoke run); writes
``bench/results/deltas-<stamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import struct
import time
from pathlib import Path
from typing import Any

import msgpack

import meshgate
from meshgate.client import ClientProtocol
from meshgate.protocol import ConnectionKind, Publish
from meshgate.testing import CoreHarness, ShipState

#: the demo's world: 24 x 24 cells of one unit, its speed limit per move, its pilots'
#: velocities (units per second) and share of illegal jumps the owner corrects
GRID = 24
CELL = 1.0
SPEED = 1.1
VX, VY = 0.3, 1.0
JUMPS = 0.05
TICK = 0.05
_MOVE = struct.Struct("!dd")


KINDS = ("ship", "position", "rich", "noise")


def _payload(kind: str, n: int, s: list[Any]) -> bytes:
    """Ship ``n``'s state as ``kind``; ``s`` is [x, y, heading, hp, ShipState]."""
    if kind == "ship":
        return bytes(s[4].pack())
    if kind == "position":
        return _MOVE.pack(s[0], s[1])
    if kind == "noise":
        return bytes(s[7].getrandbits(8) for _ in range(16))
    return msgpack.packb(
        {
            "id": f"ship{n}",
            "x": round(s[0], 3),
            "y": round(s[1], 3),
            "heading": round(s[2], 2),
            "speed": SPEED,
            "hp": s[3],
            "kind": "frigate",
        }
    )


def run(kind: str, deltas: bool, ships: int, clients: int, ticks: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    h = CoreHarness(meshgate.GatewayConfig(name="a0", listen="memory://a0", keyed_deltas=deltas))
    pub = h.open(ConnectionKind.CLIENT)
    pub.hello()
    pub.take_bytes()
    players = []
    for i in range(clients):
        got = [0]
        proto = ClientProtocol(
            name=f"p{i}", on_message=lambda sid, m, got=got: got.__setitem__(0, got[0] + 1)
        )
        peer = h.open(ConnectionKind.CLIENT)
        proto.connection_made(h.now)
        cx, cy = rng.randrange(GRID), rng.randrange(GRID)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                proto.subscribe(f"world.{(cx + dx) % GRID}.{(cy + dy) % GRID}.>")
        players.append([proto, peer, got, 0, 0])  # bytes down, bytes up
    world = GRID * CELL
    pos = []
    for n in range(ships):  # [x, y, heading, hp, record, vx, vy, rng]
        x, y = rng.uniform(0, world), rng.uniform(0, world)
        rec = ShipState(n, x, y, kind=n % 4).moved(0, 0, SPEED, world)
        vx, vy = rng.uniform(-VX, VX), rng.uniform(-VY, VY)
        pos.append([rec.x, rec.y, rec.heading, 100, rec, vx, vy, rng])

    def pump(count: bool) -> None:
        for p in players:
            proto, peer = p[0], p[1]
            for _ in range(4):
                up = proto.data_to_send()
                if up:
                    peer.send_bytes(bytes(up))
                    if count:
                        p[4] += len(up)
                down = peer.take_bytes()
                if down:
                    proto.receive_data(down)
                    if count:
                        p[3] += len(down)
                if not up and not down:
                    break

    pump(False)  # handshakes and subscriptions are not keyed state
    t0 = time.process_time()
    published = 0
    for _ in range(ticks):
        for n, s in enumerate(pos):
            # the demo's pilot: its velocity, now and then an illegal jump
            jump = 3.0 / TICK if rng.random() < JUMPS else 1.0
            if rng.random() < 0.01:  # hit
                s[3] = max(0, s[3] - 5)
                s[4] = s[4]._replace(hp=s[3])
            rec = s[4] = s[4].moved(s[5] * TICK, s[6] * TICK * jump, SPEED, world)
            s[0], s[1], s[2] = rec.x, rec.y, rec.heading
            cell = f"{int(s[0] // CELL)}.{int(s[1] // CELL)}"
            pub.send(Publish(f"world.{cell}.ship{n}", None, _payload(kind, n, s), key=f"ship{n}"))
            published += 1
        pump(True)
        h.tick(h.now + TICK)
    cpu = time.process_time() - t0
    st = h.core.statistics()
    return {
        "bytes_down": sum(p[3] for p in players),
        "bytes_up": sum(p[4] for p in players),
        "delivered": sum(p[2][0] for p in players),
        "published": published,
        "cpu_s": cpu,
        "delta_msgs": st.delta_msgs,
        "delta_full_msgs": st.delta_full_msgs,
        "delta_bytes_saved": st.delta_bytes_saved,
        "delta_gave_up": st.delta_gave_up,
        "delta_skipped": st.delta_skipped,
        "delta_probes": st.delta_probes,
        "delta_acks": st.delta_acks,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ships", type=int, default=300)
    ap.add_argument("--clients", type=int, default=40)
    ap.add_argument("--ticks", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--kinds", default=",".join(KINDS), help="payloads to run, comma-separated")
    args = ap.parse_args()
    if args.quick:
        args.ships, args.clients, args.ticks, args.repeat = 60, 8, 20, 1
    out: dict[str, Any] = {
        "bench": "deltas",
        "params": {k: v for k, v in vars(args).items() if k != "quick"},
        "payloads": {},
    }
    for kind in args.kinds.split(","):
        runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
        for r in range(args.repeat):
            for mode in ("off", "on"):
                runs[mode].append(
                    run(kind, mode == "on", args.ships, args.clients, args.ticks, seed=r)
                )
        med = {
            mode: {k: statistics.median(x[k] for x in rs) for k in rs[0]}
            for mode, rs in runs.items()
        }
        off, on = med["off"], med["on"]
        assert off["delivered"] == on["delivered"], (off, on)  # the same values arrive
        summary = {
            "runs": runs,
            "median": med,
            "keyed_bytes_saved_share": 1 - on["bytes_down"] / off["bytes_down"],
            "net_saved_share_with_acks": 1
            - (on["bytes_down"] + on["bytes_up"]) / (off["bytes_down"] + off["bytes_up"]),
            "cpu_ratio_on_off": on["cpu_s"] / off["cpu_s"],
        }
        out["payloads"][kind] = summary
        print(
            f"{kind}: keyed bytes off {off['bytes_down']:.0f} on {on['bytes_down']:.0f} "
            f"(saved {summary['keyed_bytes_saved_share']:.1%}; with acks upstream "
            f"{summary['net_saved_share_with_acks']:.1%}); cpu x{summary['cpu_ratio_on_off']:.2f}"
        )
    res = Path(__file__).parent / "results"
    res.mkdir(exist_ok=True)
    path = res / f"deltas-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
