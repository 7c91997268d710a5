"""Compression of route and gateway links: bytes on the wire and CPU, with and without.

Two parts, written to one JSON document (``bench/results/compression-*.json``):

1. **The demo's cross-cluster traffic**, in one process: three clusters of two nodes
   on loopback TCP (``meshgate demo``'s shape), ships spread over a 24 x 24 grid of
   cells by cluster band, each keeping a 3 x 3 area of interest and publishing its
   state on ``world.<x>.<y>.ship<n>`` with the demo's payload (a timestamp, an id and
   a move: 28 bytes of binary) -- the game layer's confirm/correct traffic is left
   out.  The same rounds of publishes run with ``cluster_compression`` and
   ``gateway_compression`` ``"off"`` and ``"on"``; the figures are the link bytes
   before and after lz4 (every node's ``Gateway.compression()``, summed) and the
   process CPU time of the traffic phase (every node and client share the process).
2. **The codec choice**: the same kind of link stream (meshgate RMSG/GMSG frames of
   demo messages, written in batches as the writer writes them) through lz4 (linked
   blocks, one frame per link), zstd levels 1 and 3 (a streaming compressor flushed
   per write) and zlib level 1: ratio and CPU microseconds per KiB of input.

Run: ``python bench/bench_compression.py`` (``--quick`` for a smoke run); medians over
``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import struct
import sys
import time
import zlib
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio

import meshgate
from meshgate.protocol import Encoder, GatewayMessage, RouteMessage

GRID = 24
STAMP = struct.Struct("!dI")
MOVE = struct.Struct("!dd")
CLUSTERS = ("A", "B", "C")


def demo_payload(rng: random.Random, ship: int) -> bytes:
    """The demo's input: a timestamp, the ship's id and its move (28 bytes, binary)."""
    return STAMP.pack(time.perf_counter(), ship) + MOVE.pack(
        rng.uniform(-0.3, 0.3) / 10, rng.uniform(-1, 1) / 10
    )


def json_payload(rng: random.Random, ship: int) -> bytes:
    """An entity state as many games send it: JSON, about 110 bytes."""
    return json.dumps(
        {
            "id": ship,
            "x": round(rng.uniform(0, GRID), 3),
            "y": round(rng.uniform(0, GRID), 3),
            "vx": round(rng.uniform(-0.3, 0.3), 3),
            "vy": round(rng.uniform(-1, 1), 3),
            "hp": 100,
            "state": "flying",
        },
        separators=(",", ":"),
    ).encode()


PAYLOADS = {"demo": demo_payload, "json": json_payload}


async def open_fleet(stack: AsyncExitStack, mode: str) -> list[meshgate.Gateway]:
    gws: dict[str, list[meshgate.Gateway]] = {}
    for ci, cluster in enumerate(CLUSTERS):
        gws[cluster] = []
        for i in range(2):
            cfg = meshgate.GatewayConfig(
                name=f"{cluster.lower()}{i}",
                cluster=cluster,
                listen="127.0.0.1:0",
                cluster_listen="127.0.0.1:0",
                gateway_listen="127.0.0.1:0",
                routes=(gws[cluster][0].cluster_url,) if i else (),  # type: ignore[arg-type]
                gateways={"A": [gws["A"][0].gateway_url]} if ci and not i else {},  # type: ignore[list-item]
                reconnect_wait=0.05,
                max_pending_bytes=1 << 28,
                cluster_compression=mode,
                gateway_compression=mode,
            )
            gws[cluster].append(await stack.enter_async_context(meshgate.open_gateway(cfg)))
    everyone = [g for gs in gws.values() for g in gs]
    for g in everyone:
        await g.wait_routes(1)
        await g.wait_gateways(len(CLUSTERS) - 1)
    return everyone


async def settle(gws: list[meshgate.Gateway]) -> None:
    for _ in range(2):
        for g in gws:
            await g.flush_gateways()
        for g in gws:
            await g.flush_routes()


async def demo_traffic(
    mode: str, payload: str, ships: int, rounds: int, seed: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    make = PAYLOADS[payload]
    async with AsyncExitStack() as stack:
        gws = await open_fleet(stack, mode)
        clients = [await stack.enter_async_context(meshgate.connect(g.client_url)) for g in gws]  # type: ignore[arg-type]
        band = GRID / len(CLUSTERS)
        pos = []
        received = [0]

        async def count(sub: meshgate.Subscription) -> None:
            async for _ in sub:
                received[0] += 1

        async with trio.open_nursery() as nursery:
            for s in range(ships):
                node = s % len(gws)
                region = node // 2
                x = rng.uniform(region * band, (region + 1) * band)
                y = rng.uniform(0, GRID)
                pos.append((node, x, y, rng.uniform(-0.3, 0.3), rng.uniform(-1, 1)))
                cx, cy = int(x), int(y)
                for dx in (-1, 0, 1):
                    for dy in (-1, 0, 1):
                        sub = await clients[node].add_subscription(
                            f"world.{(cx + dx) % GRID}.{(cy + dy) % GRID}.>", max_buffered=1 << 16
                        )
                        nursery.start_soon(count, sub)
            await settle(gws)
            for c in clients:
                await c.flush()
            before = [g.compression() for g in gws]
            cpu0 = time.process_time()
            wall0 = time.perf_counter()
            sent = 0
            for _ in range(rounds):
                for s, (node, x, y, vx, vy) in enumerate(pos):
                    x, y = (x + vx / 10) % GRID, (y + vy / 10) % GRID
                    pos[s] = (node, x, y, vx, vy)
                    await clients[node].publish(f"world.{int(x)}.{int(y)}.ship{s}", make(rng, s))
                    sent += 1
                for c in clients:
                    await c.flush()
            await settle(gws)
            for c in clients:
                await c.flush()
            cpu = time.process_time() - cpu0
            wall = time.perf_counter() - wall0
            after = [g.compression() for g in gws]
            nursery.cancel_scope.cancel()
    total = {k: sum(a[k] - b[k] for a, b in zip(after, before, strict=True)) for k in after[0]}
    return {
        "mode": mode,
        "payload": payload,
        "published": sent,
        "delivered": received[0],
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "link_bytes_raw": total["raw_out"],
        "link_bytes_wire": total["wire_out"] if mode != "off" else None,
        "compressed_link_ends": sum(a["links"] for a in after),
    }


def link_stream(n: int, batch: int, seed: int) -> list[bytes]:
    """Writes of a link carrying demo messages: ``batch`` frames per write."""
    rng = random.Random(seed)
    enc = Encoder()
    writes, cur = [], bytearray()
    for i in range(n):
        ship = rng.randrange(300)
        subject = f"world.{rng.randrange(GRID)}.{rng.randrange(GRID)}.ship{ship}"
        frame = (RouteMessage if i % 2 else GatewayMessage)(
            None, "$G", subject, None, demo_payload(rng, ship)
        )
        cur += enc.encode(frame)
        if (i + 1) % batch == 0:
            writes.append(bytes(cur))
            cur.clear()
    return writes


def codec_stream(name: str) -> Callable[[bytes], bytes] | None:
    if name == "lz4":
        import lz4.frame

        c = lz4.frame.LZ4FrameCompressor(block_linked=True, auto_flush=True)
        head = [c.begin()]

        def lz4_one(data: bytes) -> bytes:
            out = c.compress(data)
            if head:
                out = head.pop() + out
            return out

        return lz4_one
    if name.startswith("zstd"):
        try:
            import zstandard
        except ImportError:
            return None
        z = zstandard.ZstdCompressor(level=int(name[-1])).compressobj()
        return lambda data: z.compress(data) + z.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    zc = zlib.compressobj(1)
    return lambda data: zc.compress(data) + zc.flush(zlib.Z_SYNC_FLUSH)


def codecs(frames: int, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for batch in (1, 16):
        writes = link_stream(frames, batch, seed)
        raw = sum(len(w) for w in writes)
        for name in ("lz4", "zstd-1", "zstd-3", "zlib-1"):
            f = codec_stream(name)
            if f is None:
                continue
            t0 = time.process_time()
            wire = sum(len(f(w)) for w in writes)
            cpu = time.process_time() - t0
            out[f"{name}/batch-{batch}"] = {
                "raw_bytes": raw,
                "wire_bytes": wire,
                "ratio": raw / wire,
                "cpu_us_per_kib": cpu * 1e6 / (raw / 1024),
            }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", metavar="FILE", help="where to write the results")
    args = ap.parse_args()
    ships, rounds = (60, 5) if args.quick else (300, 20)
    runs: dict[str, list[dict[str, Any]]] = {}
    for r in range(args.repeat):
        for payload in PAYLOADS:
            for mode in ("off", "on"):
                res = trio.run(demo_traffic, mode, payload, ships, rounds, r)
                runs.setdefault(f"{payload}/{mode}", []).append(res)
                print(json.dumps(res), file=sys.stderr)
    summary: dict[str, Any] = {}
    for payload in PAYLOADS:
        off, on = runs[f"{payload}/off"], runs[f"{payload}/on"]
        cpu_off = statistics.median(x["cpu_seconds"] for x in off)
        cpu_on = statistics.median(x["cpu_seconds"] for x in on)
        summary[payload] = {
            "cpu_us_per_message_off": statistics.median(
                x["cpu_seconds"] * 1e6 / x["published"] for x in off
            ),
            "cpu_us_per_message_on": statistics.median(
                x["cpu_seconds"] * 1e6 / x["published"] for x in on
            ),
            "cpu_overhead": cpu_on / cpu_off - 1,
            "link_bytes_uncompressed": statistics.median(x["link_bytes_raw"] for x in on),
            "link_bytes_on_wire": statistics.median(x["link_bytes_wire"] for x in on),
            "ratio": statistics.median(x["link_bytes_raw"] / x["link_bytes_wire"] for x in on),
            "bytes_saved": 1
            - statistics.median(x["link_bytes_wire"] / x["link_bytes_raw"] for x in on),
        }
    doc = {
        "benchmark": "compression",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0],
        "workload": {"clusters": 3, "nodes_per_cluster": 2, "ships": ships, "rounds": rounds},
        "repeat": args.repeat,
        "summary": summary,
        "runs": runs,
        "codecs": codecs(20000 if not args.quick else 2000, 7),
    }
    text = json.dumps(doc, indent=2) + "\n"
    if args.json:
        Path(args.json).write_text(text)
    else:
        name = time.strftime("compression-%Y%m%d-%H%M%S.json", time.gmtime())
        path = Path(__file__).parent / "results" / name
        path.write_text(text)
        print(f"wrote {path}", file=sys.stderr)
    print(json.dumps({"summary": summary, "codecs": doc["codecs"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
