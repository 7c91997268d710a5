"""How cost grows: three tables (``--json`` for all of it).

1. Publish throughput through one node core against the number of subscriptions
   (1k -> 100k, a game-like mix), with subjects that hit the match cache and with
   subjects that always miss it.
2. A node process's memory against idle client connections (1k -> 10k).
3. Super-cluster formation in ``meshgate.testing``'s simulator against size, up to the
   seed's largest rows (3 clusters x 30 nodes; 30 clusters of one node): time, bytes
   the nodes sent to form it, and peak Python memory.

Run: ``python bench/bench_growth.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import time
import tracemalloc
from pathlib import Path

import meshgate
from meshgate.protocol import PROTOCOL_VERSION, Encoder, Hello, Ping, Publish, Subscribe
from meshgate.testing import CoreHarness, SimulatedSuperCluster

sys.path.insert(0, str(Path(__file__).parent))
import bench_node as bn


def subscriptions_table(sizes: list[int], messages: int) -> list[dict[str, float]]:
    """Messages per second through the core with ``n`` subscriptions spread over 100
    clients: 60 % literal entity subjects, 30 % one-token wildcards, 10 % tails."""
    rows = []
    for n in sizes:
        rng = random.Random(n)
        h = CoreHarness(meshgate.GatewayConfig(max_subscriptions=n, max_pending_bytes=1 << 30))
        entities = max(10, n // 4)
        clients = []
        for _ in range(100):
            peer = h.open()
            peer.hello()
            clients.append(peer)
        for i in range(n):
            e = rng.randrange(entities)
            r = rng.random()
            pattern = f"ship.{e}.pos" if r < 0.6 else f"ship.{e}.*" if r < 0.9 else f"ship.{e}.>"
            clients[i % 100].send(Subscribe(i // 100 + 1, pattern))
        for peer in clients:
            peer.reading = False  # their output is not the point here
        pub = h.open()
        pub.hello()
        enc = Encoder()
        hot = [f"ship.{rng.randrange(entities)}.pos" for _ in range(64)]
        cold = [f"ship.{rng.randrange(entities)}.v{i}" for i in range(messages)]
        result: dict[str, float] = {"subscriptions": n}
        for label, subjects in (("hit", [hot[i % 64] for i in range(messages)]), ("miss", cold)):
            data = b"".join(enc.encode(Publish(s, None, b"x" * 16)) for s in subjects)
            chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
            start = time.perf_counter()
            for chunk in chunks:
                pub.send_bytes(chunk)
            result[f"{label}_msgs_per_s"] = messages / (time.perf_counter() - start)
            for peer in clients:  # drop what was queued, outside the timing
                peer.take_bytes()
        rows.append(result)
    return rows


def idle_clients_table(counts: list[int]) -> list[dict[str, float]]:
    """The node process's resident memory with ``n`` idle clients (HELLO, then nothing)."""
    tmp = __import__("tempfile").mkdtemp()
    rows = []
    proc, port, _ = bn.start_meshgate()
    enc = Encoder()
    socks: list[socket.socket] = []
    try:
        base = _rss_kib(proc.pid)
        for n in counts:
            new: list[socket.socket] = []
            while len(socks) + len(new) < n:
                s = socket.create_connection(("127.0.0.1", port))
                name = f"idle{len(socks) + len(new)}"
                hello = Hello(PROTOCOL_VERSION, "client", name, None, None, 0, (), ())
                s.sendall(enc.encode(hello) + enc.encode(Ping()))
                new.append(s)
            for s in new:  # every new client has been answered (its PONG)
                buf = b""
                while b"\x91\x06" not in buf:
                    buf += s.recv(4096)
            socks += new
            rss = _rss_kib(proc.pid)
            rows.append({"idle_clients": n, "rss_kib": rss, "kib_per_client": (rss - base) / n})
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        proc.wait(10)
        __import__("shutil").rmtree(tmp, ignore_errors=True)
    return rows


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def formation_table(shapes: list[tuple[int, int]]) -> list[dict[str, float]]:
    """Forming ``clusters x nodes`` in the simulator from minimal configuration."""
    rows = []
    for clusters, nodes in shapes:
        names = [f"C{i}" for i in range(clusters)]
        start = time.perf_counter()
        net = SimulatedSuperCluster(dict.fromkeys(names, nodes))
        net.quiesce()
        elapsed = time.perf_counter() - start
        tracemalloc.start()  # again, for memory only: tracing slows it down several times
        SimulatedSuperCluster(dict.fromkeys(names, nodes)).quiesce()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        stats = [core.statistics() for core in net.nodes.values()]
        rows.append(
            {
                "clusters": clusters,
                "nodes_per_cluster": nodes,
                "routes": sum(s.routes for s in stats) // 2,
                "gateway_connections": sum(s.outbound_gateways for s in stats),
                "seconds": elapsed,
                "bytes_sent": sum(s.bytes_out for s in stats),
                "peak_mib": peak / (1 << 20),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args()
    if args.quick:
        subs, messages = [1_000, 10_000], 2_000
        idle = [100, 200]
        shapes = [(2, 2), (3, 3)]
    else:
        subs, messages = [1_000, 10_000, 100_000], 30_000
        idle = [1_000, 5_000, 10_000]
        shapes = [(1, 10), (3, 10), (3, 30), (10, 3), (30, 1)]
    sub_rows = subscriptions_table(subs, messages)
    print(f"{'subscriptions':>13} {'msg/s, cache hit':>17} {'msg/s, cache miss':>18}")
    for r in sub_rows:
        print(
            f"{r['subscriptions']:>13,.0f} {r['hit_msgs_per_s']:>17,.0f} {r['miss_msgs_per_s']:>18,.0f}"
        )
    idle_rows = idle_clients_table(idle)
    print(f"\n{'idle clients':>12} {'node RSS, KiB':>14} {'KiB per client':>15}")
    for r in idle_rows:
        print(f"{r['idle_clients']:>12,.0f} {r['rss_kib']:>14,.0f} {r['kib_per_client']:>15.1f}")
    form_rows = formation_table(shapes)
    print(
        f"\n{'clusters x nodes':>16} {'routes':>7} {'gateways':>9} {'seconds':>8} "
        f"{'bytes sent':>11} {'peak MiB':>9}"
    )
    for r in form_rows:
        shape = f"{r['clusters']:.0f} x {r['nodes_per_cluster']:.0f}"
        print(
            f"{shape:>16} {r['routes']:>7,.0f} {r['gateway_connections']:>9,.0f} "
            f"{r['seconds']:>8.2f} {r['bytes_sent']:>11,.0f} {r['peak_mib']:>9.1f}"
        )
    if args.json:
        doc = {
            "schema": 1,
            "benchmark": "growth",
            "subscriptions": sub_rows,
            "idle_clients": idle_rows,
            "formation": form_rows,
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
