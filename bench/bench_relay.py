"""Client-to-client relay through one gateway node: latency and capacity.

N clients in groups of 21: each client publishes 20 updates per second on
``g.<group>.<id>`` and subscribes to ``g.<group>.*`` — it is interested in the 20
others of its group (and sees its own echo, which is not counted).  The node runs as
its own process (``meshgate serve``); the clients are raw sockets driven by a selector
loop in this process; each update is encoded as it is sent, and meshgate's frames are
parsed by the C msgpack decoder while NATS's go through ``NatsParser``, so the
generator's cost depends on the protocol: to compare servers use ``bench_fair.py``
(this script stays for ``compare_commits.py``, which compares meshgate with itself).  Latency is publisher-to-subscriber on
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
import statistics
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


def start_node(tmp: str, flush_window: float = 0.0, workers: int = 1) -> tuple[Any, int]:
    """``meshgate serve`` (``--workers``) on a free port: (process, client port)."""
    port = free_port()
    conf = Path(tmp) / "relay.toml"
    conf.write_text(
        f'name = "relay"\nlisten = "127.0.0.1:{port}"\nmax_connections = 100000\n'
        "ping_interval = 600.0\nmax_pending_bytes = 8388608\n"
        f"flush_window = {flush_window}\n"
        # the load generator does not reconnect: no lame-duck window when it stops
        "lame_duck_duration = 0.0\n"
    )
    cmd = [sys.executable, "-m", "meshgate", "serve", "-c", str(conf)]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
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


def _tree(pid: int) -> list[tuple[int, list[str]]]:
    """``pid`` and its descendants (worker nodes), each with its /proc stat fields."""
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        stats[int(entry.name)] = stat[stat.rindex(")") + 2 :].split()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            out.append((p, stats[p]))
        todo += [c for c, fields in stats.items() if int(fields[1]) == p]
    return out


def tree_cpu(pid: int) -> float:
    """CPU seconds used so far by process ``pid`` and its descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    return sum((int(f[11]) + int(f[12])) / tick for _, f in _tree(pid))


def tree_rss_kib(pid: int) -> int:
    """Resident memory of process ``pid`` and its descendants, KiB."""
    return sum(rss_kib(p) for p, _ in _tree(pid))


class CpuTrace:
    """Samples a process tree's CPU time every 50 ms in a thread, so the share in any
    window (the generators' measuring window) can be read afterwards."""

    def __init__(self, pid: int) -> None:
        import threading

        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), tree_cpu(self.pid)))
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def share(self, start: float, end: float) -> float:
        """CPU seconds per wall second between ``start`` and ``end`` (perf_counter)."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return float("nan")
        (t0, c0), (t1, c1) = inside[0], inside[-1]
        return (c1 - c0) / (t1 - t0)


class Step:
    """One load step's repeats: (deliveries/s, p50 ms, p99 ms, busiest generator CPU,
    node CPU) each."""

    def __init__(self, server: str, clients: int) -> None:
        self.server = server
        self.clients = clients
        self.runs: list[tuple[float, float, float, float, float]] = []

    def median(self, k: int) -> float:
        return statistics.median(r[k] for r in self.runs)

    def spread(self, k: int) -> float:
        values = [r[k] for r in self.runs]
        med = statistics.median(values)
        return (max(values) - min(values)) / 2 / med if med else 0.0

    def as_json(self) -> dict[str, Any]:
        names = ("deliveries_per_s", "p50_ms", "p99_ms", "generator_cpu", "node_cpu")
        return {
            "server": self.server,
            "clients": self.clients,
            **{
                n: {"median": self.median(k), "samples": [r[k] for r in self.runs]}
                for k, n in enumerate(names)
            },
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="short smoke run, one repeat")
    ap.add_argument("--no-nats", action="store_true", help="skip the nats-server column")
    ap.add_argument(
        "--generators",
        type=int,
        default=max(1, (os.cpu_count() or 2) - 1),
        help="load generator processes (default: one per core but one, left to the server)",
    )
    ap.add_argument("--repeat", type=int, default=5, help="repeats per step (default 5)")
    ap.add_argument("--steps", help="comma-separated client counts (default 105,...,1008)")
    ap.add_argument("--seconds", type=float, default=4.0, help="measuring time per repeat")
    ap.add_argument(
        "--flush-window", type=float, default=0.0, help="the node's flush_window, seconds"
    )
    ap.add_argument("--workers", type=int, default=1, help="node processes (serve --workers)")
    ap.add_argument("--profile", metavar="FILE", help="py-spy the meshgate node: collapsed stacks")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args()
    steps = [105, 210, 420, 630, 840, 1008]
    if args.steps:
        steps = [int(x) for x in args.steps.split(",")]
    repeats, seconds = args.repeat, args.seconds
    if args.quick:
        steps, repeats, seconds = [42, 105], 1, 1.0
    rate = 20.0
    tmp = tempfile.mkdtemp()
    gens = args.generators
    proc, port = start_node(tmp, args.flush_window, args.workers)
    results: list[Step] = []
    try:
        before, after, idle = idle_memory(proc.pid, port, 50 if args.quick else 1000)
        sampler = None
        if args.profile:
            from _profile import Sampler

            sampler = Sampler(proc.pid, Path(args.profile))
        results += [
            _steps("meshgate", proc.pid, port, n, seconds, rate, gens, repeats, False)
            for n in steps
        ]
        if sampler is not None:
            sampler.stop()
    finally:
        proc.terminate()
        proc.wait(10)
    nats_binary = None if args.no_nats else find_nats()
    if nats_binary:
        nproc, nport = start_nats(nats_binary, tmp)
        try:
            results += [
                _steps("nats-server", nproc.pid, nport, n, seconds, rate, gens, repeats, True)
                for n in steps
            ]
        finally:
            nproc.terminate()
            nproc.wait(10)
    print(
        f"{'server':<12} {'clients':>7} {'deliveries/s':>12} {'p50 ms':>7} {'p99 ms':>13}"
        f" {'node CPU':>9} {'us/delivery':>12} {'generator CPU':>14}"
    )
    print("-" * 94)
    sustained: dict[str, int] = {}
    for st in results:
        rate_d, cpu = st.median(0), st.median(4)
        print(
            f"{st.server:<12} {st.clients:>7} {rate_d:>12,.0f} {st.median(1):>7.2f}"
            f" {st.median(2):>7.2f} \u00b1{100 * st.spread(2):>3.0f}%"
            f" {100 * cpu:>8.0f}% {1e6 * cpu / rate_d if rate_d else 0:>12.2f}"
            f" {100 * st.median(3):>13.0f}%"
        )
        if st.median(2) <= 5.0:
            sustained[st.server] = max(sustained.get(st.server, 0), st.clients)
    for server in dict.fromkeys(st.server for st in results):
        print(
            f"{server}: clients sustained with p99 <= 5 ms: {sustained.get(server, 0)} "
            "(20 updates/s each, ~20 peers)"
        )
    print(
        f"medians of {repeats} repeats after a warm-up (p99: \u00b1 half the range); node CPU:"
        " the server's processes, CPU time over wall time while measuring; generator CPU:"
        f" the busiest of {gens} load generator processes (below ~90 % it is not what"
        " limits the figures)"
    )
    print(
        f"memory per idle client connection: {(after - before) / idle:.1f} KiB "
        f"({idle} idle clients, node RSS {before} -> {after} KiB)"
    )
    if args.profile:
        from _profile import summary

        print(f"\nprofile of the meshgate node ({args.profile}):\n" + summary(Path(args.profile)))
    if args.json:
        doc = {
            "schema": 1,
            "benchmark": "relay",
            "repeats": repeats,
            "flush_window": args.flush_window,
            "workers": args.workers,
            "generators": gens,
            "idle_client_kib": (after - before) / idle,
            "steps": [st.as_json() for st in results],
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")


def idle_memory(pid: int, port: int, idle: int) -> tuple[int, int, int]:
    """Open ``idle`` handshaken client connections on a fresh node: (RSS before, RSS
    after in KiB, idle); first, so that freed memory is not reused."""
    before = tree_rss_kib(pid)
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
    after = tree_rss_kib(pid)
    for s in socks:
        s.close()
    return before, after, idle


def _steps(
    server: str,
    pid: int,
    port: int,
    n: int,
    seconds: float,
    rate: float,
    generators: int,
    repeats: int,
    nats: bool,
) -> Step:
    step = Step(server, n)
    trace = CpuTrace(pid)
    try:
        for _ in range(repeats):
            step.runs.append(_step(port, n, seconds, rate, nats, generators, trace))
    finally:
        trace.stop()
    return step


def _step(
    port: int, n: int, seconds: float, rate: float, nats: bool, generators: int, trace: CpuTrace
) -> tuple[float, float, float, float, float]:
    """One load step: (deliveries/s, p50 ms, p99 ms, the busiest generator's CPU share,
    the node's CPU share).  The clients are spread over ``generators`` processes,
    started together once every client is subscribed."""
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
    windows = []
    for _ in procs:
        part, share, window = results.get(timeout=120)
        lat += part
        shares.append(share)
        windows.append(window)
    for proc in procs:
        proc.join(30)
    start, end = max(w[0] for w in windows), min(w[1] for w in windows)
    return (
        len(lat) / seconds,
        percentile(lat, 0.5),
        percentile(lat, 0.99),
        max(shares),
        trace.share(start, end),
    )


def _worker(
    port: int, ids: range, seconds: float, rate: float, nats: bool, ready: Any, results: Any
) -> None:
    results.put(_generate(port, ids, seconds, rate, nats, ready))


def _generate(
    port: int, ids: range, seconds: float, rate: float, nats: bool, ready: Any
) -> tuple[list[float], float, tuple[float, float]]:
    """Connect and subscribe ``ids``, wait for the other generators, warm up, measure:
    (latencies in seconds, this generator's CPU share while measuring, the window)."""
    clients = Clients(port, ids, nats=nats)
    try:
        ready.wait()
        clients.run(0.5, rate, measure=False)  # warm up
        cpu, wall = time.process_time(), time.perf_counter()
        clients.run(seconds, rate, measure=True)
        end = time.perf_counter()
        return clients.latencies, (time.process_time() - cpu) / (end - wall), (wall, end)
    finally:
        clients.close()


if __name__ == "__main__":
    main()
