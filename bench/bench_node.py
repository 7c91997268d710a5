"""Single-node benchmark: meshgate against nats-server, same machine, same run.

Columns: meshgate's own protocol, nats-server, and meshgate's NATS port (the same
node, driven with the NATS text protocol).
Scenarios: 1 publisher -> 1 subscriber (16/128/1024-byte payloads); 1 -> 10 and
1 -> 100 subscribers (128 B, deliveries per second); request/reply latency
p50/p99.  Load generators are raw sockets with pre-encoded frames; delivered
frames are counted by bytes (every frame of a scenario has the same size), so
the tool is not the bottleneck.  Each server runs in its own process.  Request/reply
parses replies with a per-protocol reader (C msgpack against Python text parsing), so
its latencies are not a fair comparison of servers: ``bench_fair.py`` is; this script
stays for ``compare_commits.py``, which compares meshgate with itself.

Run: ``python bench/bench_node.py`` (``--quick`` for a smoke run, ``--no-nats``
to skip the reference).  nats-server is installed with apt-get if missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from meshgate.protocol import PROTOCOL_VERSION, Decoder, Encoder, Hello, Message, Ping, Publish

HERE = Path(__file__).parent
SUBJECT = "bench.subject"


# -- servers --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    end = time.monotonic() + 15
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError("server exited early")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def start_meshgate() -> tuple[subprocess.Popen[bytes], int, int]:
    """One node with its own client port and a NATS port: (process, port, NATS port)."""
    port, nats_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "_serve_node.py"), str(port), str(nats_port)]
    )
    wait_port(port, proc)
    wait_port(nats_port, proc)
    return proc, port, nats_port


def find_nats() -> str | None:
    path = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if os.access(path, os.X_OK):
        return path
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "nats-server"], capture_output=True, check=False
        )
        if os.access("/usr/sbin/nats-server", os.X_OK):
            return "/usr/sbin/nats-server"
    return None


def start_nats(binary: str, tmp: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = Path(tmp) / f"nats-{port}.conf"
    conf.write_text(f"listen: 127.0.0.1:{port}\nmax_pending: 512MB\nmax_payload: 1MB\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc, port


# -- protocol flavours ----------------------------------------------------------------------------


class Flavour:
    """How to speak to one server kind with raw sockets."""

    name = ""

    def connect(self, port: int) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def handshake(self, s: socket.socket) -> bytes:
        raise NotImplementedError

    def sub(self, sid: int, subject: str) -> bytes:
        raise NotImplementedError

    def unsub(self, sid: int) -> bytes:
        raise NotImplementedError

    def pub(self, subject: str, payload: bytes, reply: str | None = None) -> bytes:
        raise NotImplementedError

    def ping(self) -> bytes:
        raise NotImplementedError

    def msg_size(self, sid: int, subject: str, payload: bytes, reply: str | None = None) -> int:
        raise NotImplementedError

    def wait_pong(self, s: socket.socket) -> None:
        raise NotImplementedError

    def read_messages(self, s: socket.socket) -> Callable[[], list[tuple[str | None, bytes]]]:
        raise NotImplementedError


class MeshgateFlavour(Flavour):
    name = "meshgate"

    def __init__(self) -> None:
        self.enc = Encoder()

    def handshake(self, s: socket.socket) -> bytes:
        return self.enc.encode(Hello(PROTOCOL_VERSION, "client", "bench", None, None, 0, (), ()))

    def sub(self, sid: int, subject: str) -> bytes:
        return self.enc.encode_raw(2, sid, subject, None)

    def unsub(self, sid: int) -> bytes:
        return self.enc.encode_raw(3, sid, None)

    def pub(self, subject: str, payload: bytes, reply: str | None = None) -> bytes:
        return self.enc.encode(Publish(subject, reply, payload, None))

    def ping(self) -> bytes:
        return self.enc.encode(Ping())

    def msg_size(self, sid: int, subject: str, payload: bytes, reply: str | None = None) -> int:
        return len(self.enc.encode(Message(sid, subject, reply, payload)))

    def wait_pong(self, s: socket.socket) -> None:
        dec = Decoder(max_frame_bytes=1 << 24)
        while True:
            dec.feed(s.recv(65536))
            while (f := dec.next_raw()) is not None:
                if f[0] == 6:
                    return

    def read_messages(self, s: socket.socket) -> Callable[[], list[tuple[str | None, bytes]]]:
        dec = Decoder(max_frame_bytes=1 << 24)

        def read() -> list[tuple[str | None, bytes]]:
            out: list[tuple[str | None, bytes]] = []
            while not out:
                dec.feed(s.recv(65536))
                while (f := dec.next_raw()) is not None:
                    if f[0] == 4:
                        out.append((f[3], f[4]))
            return out

        return read


class NatsFlavour(Flavour):
    name = "nats-server"

    def handshake(self, s: socket.socket) -> bytes:
        buf = b""
        while b"\r\n" not in buf:
            buf += s.recv(4096)
        return b'CONNECT {"verbose":false,"pedantic":false}\r\n'

    def sub(self, sid: int, subject: str) -> bytes:
        return f"SUB {subject} {sid}\r\n".encode()

    def unsub(self, sid: int) -> bytes:
        return f"UNSUB {sid}\r\n".encode()

    def pub(self, subject: str, payload: bytes, reply: str | None = None) -> bytes:
        r = f" {reply}" if reply else ""
        return f"PUB {subject}{r} {len(payload)}\r\n".encode() + payload + b"\r\n"

    def ping(self) -> bytes:
        return b"PING\r\n"

    def msg_size(self, sid: int, subject: str, payload: bytes, reply: str | None = None) -> int:
        r = f" {reply}" if reply else ""
        return len(f"MSG {subject} {sid}{r} {len(payload)}\r\n".encode()) + len(payload) + 2

    def wait_pong(self, s: socket.socket) -> None:
        buf = b""
        while b"PONG\r\n" not in buf:
            buf += s.recv(65536)

    def read_messages(self, s: socket.socket) -> Callable[[], list[tuple[str | None, bytes]]]:
        state = {"buf": b""}

        def read() -> list[tuple[str | None, bytes]]:
            out: list[tuple[str | None, bytes]] = []
            while not out:
                state["buf"] += s.recv(65536)
                buf = state["buf"]
                while True:
                    i = buf.find(b"\r\n")
                    if i < 0:
                        break
                    line = buf[:i]
                    if line.startswith(b"MSG "):
                        parts = line.split()
                        size = int(parts[-1])
                        if len(buf) < i + 2 + size + 2:
                            break
                        reply = parts[3].decode() if len(parts) == 5 else None
                        out.append((reply, buf[i + 2 : i + 2 + size]))
                        buf = buf[i + 2 + size + 2 :]
                    else:
                        buf = buf[i + 2 :]
                state["buf"] = buf
            return out

        return read


# -- scenarios ------------------------------------------------------------------------------------


def open_client(fl: Flavour, port: int, subs: list[tuple[int, str]] = ()) -> socket.socket:  # type: ignore[assignment]
    s = fl.connect(port)
    data = fl.handshake(s) + b"".join(fl.sub(sid, subj) for sid, subj in subs) + fl.ping()
    s.sendall(data)
    fl.wait_pong(s)
    return s


PROBE_SID = 99


def converge(fl: Flavour, pub: socket.socket, subs: list[socket.socket]) -> None:
    """Publish a probe until every subscriber has it (interest may cross clusters
    asynchronously), then drop the probe subscription and drain, so that from now on
    only scenario traffic reaches the subscribers."""
    waiting = set(range(len(subs)))
    probe = fl.pub("bench.probe", b"p")
    deadline = time.monotonic() + 30
    while waiting:
        if time.monotonic() > deadline:
            raise RuntimeError("interest never converged")
        pub.sendall(probe)
        for i in list(waiting):
            subs[i].settimeout(0.05)
            try:
                if subs[i].recv(65536):
                    waiting.discard(i)
            except TimeoutError:
                pass
            finally:
                subs[i].settimeout(None)
    for s in subs:
        s.sendall(fl.unsub(PROBE_SID) + fl.ping())
        fl.wait_pong(s)


def throughput(
    fl: Flavour, port: int, size: int, n_subs: int, count: int, sub_port: int | None = None
) -> float:
    """Deliveries per second from one publisher to ``n_subs`` subscribers."""
    payload = b"x" * size
    subs = [
        open_client(fl, sub_port or port, [(1, SUBJECT), (PROBE_SID, "bench.probe")])
        for _ in range(n_subs)
    ]
    pub = open_client(fl, port)
    converge(fl, pub, subs)
    want = fl.msg_size(1, SUBJECT, payload) * count
    done = threading.Barrier(n_subs + 1)
    errors: list[BaseException] = []

    def drain(s: socket.socket) -> None:
        got = 0
        try:
            while got < want:
                chunk = s.recv(1 << 20)
                if not chunk:
                    raise ConnectionError("closed early")
                got += len(chunk)
        except BaseException as exc:
            errors.append(exc)
        done.wait()

    threads = [threading.Thread(target=drain, args=(s,), daemon=True) for s in subs]
    for t in threads:
        t.start()
    frame = fl.pub(SUBJECT, payload)
    batch = frame * max(1, 65536 // len(frame))
    per_batch = len(batch) // len(frame)
    start = time.perf_counter()
    sent = 0
    while sent + per_batch <= count:
        pub.sendall(batch)
        sent += per_batch
    if sent < count:
        pub.sendall(frame * (count - sent))
    done.wait()
    elapsed = time.perf_counter() - start
    for s in [*subs, pub]:
        s.close()
    if errors:
        raise errors[0]
    return count * n_subs / elapsed


def request_reply(
    fl: Flavour, port: int, rounds: int, responder_port: int | None = None
) -> tuple[float, float]:
    """p50 and p99 round-trip latency in microseconds."""
    responder = open_client(
        fl, responder_port or port, [(1, "svc.echo"), (PROBE_SID, "bench.probe")]
    )
    requester = open_client(fl, port, [(7, "inbox.bench")])
    converge(fl, requester, [responder])  # the service's interest reached the requester
    requester.sendall(fl.sub(PROBE_SID, "bench.probe") + fl.ping())
    fl.wait_pong(requester)
    converge(fl, responder, [requester])  # and the inbox's interest reached the responder
    stop = threading.Event()

    def serve() -> None:
        read = fl.read_messages(responder)
        try:
            while not stop.is_set():
                for reply, payload in read():
                    if reply:
                        responder.sendall(fl.pub(reply, payload))
        except OSError:
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    read = fl.read_messages(requester)
    request = fl.pub("svc.echo", b"ping", reply="inbox.bench")
    for _ in range(3):  # warm up
        requester.sendall(request)
        read()
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        requester.sendall(request)
        read()
        samples.append((time.perf_counter() - t0) * 1e6)
    stop.set()
    requester.close()
    responder.close()
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


#: extra columns a benchmark may fill, beside meshgate and nats-server
EXTRA_COLUMNS = {
    "meshgate-nats": "NATS port",
    "meshgate-backbone": "on nats bb",
}
#: the version of the ``--json`` schema
JSON_SCHEMA = 1


class Row:
    """One scenario: every server's samples (one per repeat, after a warm-up)."""

    def __init__(self, name: str, unit: str) -> None:
        self.name = name
        self.unit = unit
        self.samples: dict[str, list[float]] = {}

    def median(self, server: str) -> float:
        values = self.samples.get(server)
        return statistics.median(values) if values else float("nan")

    def spread(self, server: str) -> float:
        """Half the range of the samples, relative to the median (0.05 = +-5 %)."""
        values = self.samples.get(server)
        if not values or len(values) < 2:
            return 0.0
        med = statistics.median(values)
        return (max(values) - min(values)) / 2 / med if med else 0.0

    def ratio(self, server: str) -> float:
        n = self.median("nats")
        return self.median(server) / n if n == n and n else float("nan")

    def as_json(self) -> dict[str, object]:
        return {
            "scenario": self.name,
            "unit": self.unit,
            "servers": {
                k: {
                    "median": self.median(k),
                    "min": min(v),
                    "max": max(v),
                    "samples": v,
                    "ratio_to_nats": self.ratio(k) if k != "nats" else 1.0,
                }
                for k, v in self.samples.items()
            },
        }


def sample(row: Row, server: str, measure: Callable[[], float], repeats: int) -> None:
    """Run ``measure`` once to warm up (discarded), then ``repeats`` times."""
    measure()
    row.samples[server] = [measure() for _ in range(repeats)]


def print_table(rows: list[Row]) -> None:
    """The comparison table: medians with their spread, and the ratio to nats-server per
    row for meshgate and for every extra column measured."""
    extras = [k for k in EXTRA_COLUMNS if any(k in r.samples for r in rows)]
    head = f"{'scenario':<28} {'unit':<13} {'meshgate':>16} {'nats-server':>16} {'ratio':>6}"
    head += "".join(f" {EXTRA_COLUMNS[k]:>16} {'ratio':>6}" for k in extras)
    print(head)
    print("-" * len(head))

    def cell(r: Row, k: str) -> str:
        return f"{r.median(k):>10,.0f} \u00b1{100 * r.spread(k):>2.0f}%"

    for r in rows:
        line = f"{r.name:<28} {r.unit:<13} {cell(r, 'meshgate'):>16} {cell(r, 'nats'):>16}"
        line += f" {r.ratio('meshgate'):>6.2f}"
        for k in extras:
            line += f" {cell(r, k):>16} {r.ratio(k):>6.2f}"
        print(line)
    notes = {
        "meshgate-nats": "NATS port: meshgate driven with the NATS text protocol",
        "meshgate-backbone": "on nats bb: meshgate nodes attached to the nats-server clusters",
    }
    print(
        "medians of the repeats (after a warm-up), \u00b1 half their range; "
        "ratio = x / nats-server (for latency, lower is better)"
        + "".join(f"; {notes[k]}" for k in extras)
    )


def write_json(path: str, benchmark: str, rows: list[Row], repeats: int) -> None:
    """The rows as JSON (stable schema, :data:`JSON_SCHEMA`); ``-`` is standard output."""
    doc = {
        "schema": JSON_SCHEMA,
        "benchmark": benchmark,
        "repeats": repeats,
        "rows": [r.as_json() for r in rows],
    }
    text = json.dumps(doc, indent=2)
    if path == "-":
        print(text)
    else:
        Path(path).write_text(text + "\n")


def parse_args(doc: str | None) -> tuple[argparse.Namespace, int, int, int, int]:
    """``--quick`` / ``--no-nats`` / ``--repeat`` / ``--json``, and the message counts:
    1->1, 1->10, 1->100, rounds."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--quick", action="store_true", help="tiny counts, one repeat: a smoke run")
    ap.add_argument("--no-nats", action="store_true", help="skip the nats-server reference")
    ap.add_argument("--repeat", type=int, default=5, help="repeats per scenario (default 5)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON (- : stdout)")
    args = ap.parse_args()
    if args.quick:
        args.repeat = 1
        return args, 3_000, 500, 100, 100
    return args, 200_000, 30_000, 4_000, 3_000


def main() -> None:
    args, n1, n10, n100, rounds = parse_args(__doc__)

    servers: dict[str, tuple[Flavour, int]] = {}
    procs = []
    tmp = tempfile.mkdtemp()
    try:
        proc, port, nats_port = start_meshgate()
        procs.append(proc)
        servers["meshgate"] = (MeshgateFlavour(), port)
        servers["meshgate-nats"] = (NatsFlavour(), nats_port)
        nats = None if args.no_nats else find_nats()
        if nats:
            proc, port = start_nats(nats, tmp)
            procs.append(proc)
            servers["nats"] = (NatsFlavour(), port)
        elif not args.no_nats:
            print("nats-server unavailable: reference columns empty", file=sys.stderr)

        rows: list[Row] = []
        reps = args.repeat
        for size in (16, 128, 1024):
            row = Row(f"1 -> 1 throughput, {size} B", "msg/s")
            for k, (fl, p) in servers.items():
                sample(row, k, lambda fl=fl, p=p, size=size: throughput(fl, p, size, 1, n1), reps)
            rows.append(row)
        for n, cnt in ((10, n10), (100, n100)):
            row = Row(f"1 -> {n} fan-out, 128 B", "deliveries/s")
            for k, (fl, p) in servers.items():
                sample(
                    row, k, lambda fl=fl, p=p, n=n, cnt=cnt: throughput(fl, p, 128, n, cnt), reps
                )
            rows.append(row)
        p50, p99 = Row("request/reply p50", "us"), Row("request/reply p99", "us")
        for k, (fl, p) in servers.items():
            request_reply(fl, p, rounds)  # warm-up
            runs = [request_reply(fl, p, rounds) for _ in range(reps)]
            p50.samples[k] = [r[0] for r in runs]
            p99.samples[k] = [r[1] for r in runs]
        rows += [p50, p99]
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)

    print_table(rows)
    if args.json:
        write_json(args.json, "node", rows, args.repeat)


if __name__ == "__main__":
    main()
