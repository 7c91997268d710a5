"""Client-to-client relay through one gateway node: latency and capacity.

N clients in groups of 21: each client publishes 20 updates per second on
``g.<group>.<id>`` and subscribes to ``g.<group>.*`` — it is interested in the 20
others of its group (and sees its own echo, which is not counted).  The node runs as
its own process (``meshgate serve``); the clients are raw sockets driven by a selector
loop in this process with pre-encoded frames.  Latency is publisher-to-subscriber on
one machine clock (the clients are spread over ``--generators`` processes that start
together; by default one per core but one, which is left to the server).  The run steps N up and reports where p99 passes 5 ms, then the
node's memory per idle client connection.  The same load, over the NATS text protocol,
runs against nats-server for comparison, and each step reports the load generator's
own CPU share (so a saturated tool is visible).

Run: ``python bench/bench_relay.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_node import find_nats, free_port, start_nats
from meshgate.protocol import PROTOCOL_VERSION, Decoder, Encoder, Hello, Ping, Publish, Subscribe
from meshgate.protocol.nats import NatsParser

STAMP = struct.Struct("!dI")
GROUP = 21


def start_node(tmp: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = Path(tmp) / "relay.toml"
    conf.write_text(
        f'name = "relay"\nlisten = "127.0.0.1:{port}"\nmax_connections = 100000\n'
        "ping_interval = 600.0\nmax_pending_bytes = 8388608\n"
        # the load generator does not reconnect: no lame-duck window when it stops
        "lame_duck_duration = 0.0\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshgate", "serve", "-c", str(conf)], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    json.loads(proc.stdout.readline())
    return proc, port


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Clients:
    """``n`` relay clients on raw sockets, speaking meshgate's protocol or (``nats``)
    the NATS text protocol, driven by one selector loop."""

    def __init__(self, port: int, ids: range, *, nats: bool = False) -> None:
        enc = Encoder()
        self.enc = enc
        self.nats = nats
        self.sel = selectors.DefaultSelector()
        self.socks: list[socket.socket] = []
        self.decoders: list[Decoder] = []
        self.parsers: list[NatsParser] = []
        self.latencies: list[float] = []
        self.ids = ids
        for i in ids:
            s = socket.create_connection(("127.0.0.1", port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            group = i // GROUP
            if nats:
                s.sendall(
                    b'CONNECT {"verbose":false,"pedantic":false,"name":"c%d"}\r\n' % i
                    + f"SUB g.{group}.* 1\r\n".encode()
                    + b"PING\r\n"
                )
            else:
                s.sendall(
                    enc.encode(Hello(PROTOCOL_VERSION, "client", f"c{i}", None, None, 0, (), ()))
                    + enc.encode(Subscribe(1, f"g.{group}.*", None))
                    + enc.encode(Ping())
                )
            self.socks.append(s)
            self.decoders.append(Decoder(max_frame_bytes=1 << 20))
            self.parsers.append(NatsParser(max_payload=1 << 20))
        for k, s in enumerate(self.socks):  # wait for every PONG: subscriptions are live
            while not self._pong(k):
                pass
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ, k)

    def _pong(self, i: int) -> bool:
        data = self.socks[i].recv(65536)
        if self.nats:
            p = self.parsers[i]
            p.feed(data)
            while (op := p.next()) is not None:
                if op[0] == "PONG":
                    return True
            return False
        self.decoders[i].feed(data)
        while (f := self.decoders[i].next_raw()) is not None:
            if f[0] == 6:
                return True
        return False

    def _frame(self, subject: str, payload: bytes) -> bytes:
        if self.nats:
            return b"PUB %s %d\r\n%s\r\n" % (subject.encode(), len(payload), payload)
        return self.enc.encode(Publish(subject, None, payload, None))

    def _payloads(self, i: int, data: bytes) -> list[bytes]:
        """The payloads of the deliveries in ``data`` received by client ``i``."""
        if self.nats:
            p = self.parsers[i]
            p.feed(data)
            out = []
            while (op := p.next()) is not None:
                if op[0] == "MSG":
                    out.append(op[5])
                elif op[0] == "PING":
                    self.socks[i].send(b"PONG\r\n")
            return out
        dec = self.decoders[i]
        dec.feed(data)
        return [f[4] for f in iter(dec.next_raw, None) if f[0] == 4]

    def run(self, seconds: float, rate: float, measure: bool) -> None:
        n = len(self.socks)
        period = 1.0 / rate
        # spread the clients' send times evenly over one period
        next_send = [time.perf_counter() + period * k / n for k in range(n)]
        subjects = [f"g.{i // GROUP}.{i}" for i in self.ids]
        pad = b"\0" * 40
        end = time.perf_counter() + seconds
        order = sorted(range(n), key=lambda i: next_send[i])
        k = 0
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            # send what is due (at most one round of all clients per loop)
            sent = 0
            while sent < n:
                i = order[k]
                if next_send[i] > now:
                    break
                frame = self._frame(subjects[i], STAMP.pack(now, self.ids[i]) + pad)
                try:
                    self.socks[i].send(frame)
                except BlockingIOError:
                    pass
                next_send[i] += period
                k = (k + 1) % n
                sent += 1
            timeout = max(0.0, min(next_send[order[k]] - time.perf_counter(), 0.005))
            for key, _ in self.sel.select(timeout):
                i = key.data
                try:
                    data = self.socks[i].recv(1 << 20)
                except BlockingIOError:
                    continue
                t = time.perf_counter()
                me = self.ids[i]
                for payload in self._payloads(i, data):
                    if measure:
                        sent_at, origin = STAMP.unpack_from(payload)
                        if origin != me:
                            self.latencies.append(t - sent_at)

    def close(self) -> None:
        for s in self.socks:
            s.close()


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="short smoke run")
    ap.add_argument("--no-nats", action="store_true", help="skip the nats-server column")
    ap.add_argument(
        "--generators",
        type=int,
        default=max(1, (os.cpu_count() or 2) - 1),
        help="load generator processes (default: one per core but one, left to the server)",
    )
    args = ap.parse_args()
    steps = [42, 105] if args.quick else [105, 210, 420, 630, 840, 1008]
    seconds = 1.0 if args.quick else 4.0
    rate = 20.0
    tmp = tempfile.mkdtemp()
    proc, port = start_node(tmp)
    rows: list[tuple[str, int, float, float, float, float]] = []
    try:
        # idle connections first, on a fresh node, so freed memory is not reused
        idle = 50 if args.quick else 1000
        before = rss_kib(proc.pid)
        socks = []
        enc = Encoder()
        for i in range(idle):
            s = socket.create_connection(("127.0.0.1", port))
            hello = Hello(PROTOCOL_VERSION, "client", f"idle{i}", None, None, 0, (), ())
            s.sendall(enc.encode(hello) + enc.encode(Ping()))
            socks.append(s)
        for s in socks:
            buf = b""
            while b"\x91\x06" not in buf:
                buf += s.recv(4096)
        after = rss_kib(proc.pid)
        for s in socks:
            s.close()
        gens = args.generators
        rows.extend(
            ("meshgate", *_step(port, n, seconds, rate, nats=False, generators=gens)) for n in steps
        )
    finally:
        proc.terminate()
        proc.wait(10)
    nats_binary = None if args.no_nats else find_nats()
    if nats_binary:
        nproc, nport = start_nats(nats_binary, tmp)
        try:
            rows.extend(
                ("nats-server", *_step(nport, n, seconds, rate, nats=True, generators=gens))
                for n in steps
            )
        finally:
            nproc.terminate()
            nproc.wait(10)
    print(
        f"{'server':<12} {'clients':>8} {'deliveries/s':>13} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'generator CPU':>14}"
    )
    print("-" * 68)
    sustained: dict[str, int] = {}
    for server, n, rate_d, p50, p99, cpu in rows:
        print(f"{server:<12} {n:>8} {rate_d:>13,.0f} {p50:>8.2f} {p99:>8.2f} {100 * cpu:>13.0f}%")
        if p99 <= 5.0:
            sustained[server] = max(sustained.get(server, 0), n)
    for server in dict.fromkeys(r[0] for r in rows):
        print(
            f"{server}: clients sustained with p99 <= 5 ms: {sustained.get(server, 0)} "
            "(20 updates/s each, ~20 peers)"
        )
    print(
        f"generator CPU: the busiest of {args.generators} load generator processes, its CPU "
        "time over wall time while measuring; below ~90 % it is not what limits the figures"
    )
    print(
        f"memory per idle client connection: {(after - before) * 1024 / idle / 1024:.1f} KiB "
        f"({idle} idle clients, node RSS {before} -> {after} KiB)"
    )


def _step(
    port: int, n: int, seconds: float, rate: float, *, nats: bool, generators: int = 1
) -> tuple[int, float, float, float, float]:
    """One load step: (clients, deliveries/s, p50 ms, p99 ms, the busiest generator's
    CPU share).  With ``generators`` > 1 the clients are spread over that many
    processes, started together once every client is subscribed."""
    if generators <= 1:
        lat, cpu_share = _generate(port, range(n), seconds, rate, nats, None)
        return n, len(lat) / seconds, percentile(lat, 0.5), percentile(lat, 0.99), cpu_share
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Barrier(generators)
    results = ctx.Queue()
    bounds = [n * k // generators for k in range(generators + 1)]
    procs = [
        ctx.Process(
            target=_worker,
            args=(port, range(bounds[k], bounds[k + 1]), seconds, rate, nats, ready, results),
        )
        for k in range(generators)
    ]
    for proc in procs:
        proc.start()
    lat: list[float] = []
    shares = []
    for _ in procs:
        part, share = results.get(timeout=120)
        lat += part
        shares.append(share)
    for proc in procs:
        proc.join(30)
    return n, len(lat) / seconds, percentile(lat, 0.5), percentile(lat, 0.99), max(shares)


def _worker(
    port: int, ids: range, seconds: float, rate: float, nats: bool, ready: Any, results: Any
) -> None:
    results.put(_generate(port, ids, seconds, rate, nats, ready))


def _generate(
    port: int, ids: range, seconds: float, rate: float, nats: bool, ready: Any
) -> tuple[list[float], float]:
    """Connect and subscribe ``ids``, wait for the other generators, warm up, measure:
    (latencies in seconds, this generator's CPU share while measuring)."""
    clients = Clients(port, ids, nats=nats)
    try:
        if ready is not None:
            ready.wait()
        clients.run(0.5, rate, measure=False)  # warm up
        cpu, wall = time.process_time(), time.perf_counter()
        clients.run(seconds, rate, measure=True)
        return clients.latencies, (time.process_time() - cpu) / (time.perf_counter() - wall)
    finally:
        clients.close()


if __name__ == "__main__":
    main()
