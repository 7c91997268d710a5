"""meshgate against nats-server with one generator that costs the same for both.

Servers, started once and sampled in alternating order (one repeat of every server,
then the next repeat in the reverse order):

* ``nats``: nats-server (the reference);
* ``mg-nats``: meshgate's NATS port, driven with byte-identical NATS traffic (the
  headline: the only column where both servers see the same bytes);
* ``mg``: meshgate's own protocol (msgpack frames, same sizes of subject and payload);
* ``null``: ``_null_server.py``, a raw TCP relay with no routing: the floor, what the
  harness itself sustains on this machine.

Scenarios: one node 1 -> 1 at 128 B (msg/s), fan-out 1 -> 100 at 128 B
(deliveries/s, at least 50k messages a sample), request/reply (p50, p99); two clusters
joined by gateways (two nats-servers; two meshgate nodes) A -> B at 128 B and
request/reply A -> B; the game relay (N clients in groups of 21, 20 updates a second
each, stepped up by 210 until every server's p99 passes 5 ms or it loses messages).

Every sample runs its roles (publisher, subscribers, requester, responder, relay
clients) in separate processes (``_gen.py``: pre-encoded frames, timestamps patched
in place, receivers cutting fixed-length frames by offset with the same code for every
protocol, first frames verified), lasts at least ``--seconds``, compares the messages
expected with those received, and records each generator process's CPU and
wait-for-CPU time (``/proc/<pid>/schedstat``) and the server's CPU per delivery.

    python bench/bench_fair.py --json out.json [--repeat 5] [--quick] [--only node,relay]
"""

from __future__ import annotations

import argparse
import array
import ctypes
import functools
import json
import multiprocessing
import os
import platform
import selectors
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _gen import (  # noqa: E402
    PROBE_SID,
    PROTOS,
    STAMP,
    FrameSpec,
    Proto,
    Sender,
    cpu_clock,
    make_payload,
    pid_cpu,
    settle,
    verify,
    wait_writable,
)

SCHEMA = 1
SUBJECT = "bench.sub1"
SERVERS = ("nats", "mg-nats", "mg", "null")
PROTO_OF = {"nats": "nats", "mg-nats": "nats", "mg": "meshgate", "null": "null"}
STAMP_D = struct.Struct("!d")
GROUP = 21
P99_LIMIT_MS = 5.0
CTX = multiprocessing.get_context("fork")


# -- servers --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    end = time.monotonic() + 30
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError("server exited early")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def find_nats() -> str | None:
    path = shutil.which("nats-server") or "/usr/sbin/nats-server"
    return path if os.access(path, os.X_OK) else None


def nats_version(binary: str | None) -> str | None:
    if not binary:
        return None
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or out.stderr.strip()


class Pinning:
    """Where processes run: on 2 cores everything shares both; from 4 cores up the
    servers get the first half of the cores, the generators the rest, and nats-server
    runs with GOMAXPROCS=1 against one meshgate worker."""

    def __init__(self) -> None:
        self.cores = os.cpu_count() or 1
        self.pinned = self.cores >= 4 and shutil.which("taskset") is not None
        half = self.cores // 2
        self.server_cores = list(range(half)) if self.pinned else []
        self.gen_cores = list(range(half, self.cores)) if self.pinned else []

    def server_cmd(self, cmd: list[str]) -> list[str]:
        if not self.pinned:
            return cmd
        return ["taskset", "-c", ",".join(map(str, self.server_cores)), *cmd]

    def nats_env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.pinned:
            env["GOMAXPROCS"] = "1"
        return env

    def pin_generator(self) -> None:
        if self.pinned:
            os.sched_setaffinity(0, self.gen_cores)

    def describe(self) -> str:
        if self.pinned:
            return (
                f"servers pinned to cores {self.server_cores}, generators to {self.gen_cores}; "
                "nats-server GOMAXPROCS=1, one meshgate worker"
            )
        return (
            f"{self.cores} cores shared by servers and generators (no pinning: below 4 cores "
            "there is nothing to separate); nats-server with its default GOMAXPROCS"
        )


class Servers:
    """The server processes of one topology: name -> (client port A, client port B,
    pid of A, pid of B)."""

    def __init__(self, tmp: str, pin: Pinning) -> None:
        self.tmp = tmp
        self.pin = pin
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: dict[str, tuple[int, int, list[int]]] = {}

    def _meshgate(self, name: str, extra: str = "") -> tuple[int, int, subprocess.Popen[bytes]]:
        port, nport = free_port(), free_port()
        conf = Path(self.tmp) / f"{name}.toml"
        conf.write_text(
            f'name = "{name}"\nlisten = "127.0.0.1:{port}"\n'
            f'nats_listen = ["127.0.0.1:{nport}"]\nmax_connections = 100000\n'
            "ping_interval = 600.0\nmax_pending_bytes = 536870912\n"
            "lame_duck_duration = 0.0\nreconnect_wait = 0.1\n" + extra
        )
        cmd = self.pin.server_cmd([sys.executable, "-m", "meshgate", "serve", "-c", str(conf)])
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        json.loads(proc.stdout.readline())  # ready
        self.procs.append(proc)
        return port, nport, proc

    def _nats(self, name: str, binary: str, extra: str = "") -> tuple[int, subprocess.Popen[bytes]]:
        port = free_port()
        conf = Path(self.tmp) / f"nats-{name}.conf"
        conf.write_text(
            f'server_name: "{name}"\nlisten: "127.0.0.1:{port}"\n'
            'max_pending: 512MB\nmax_payload: 1MB\nping_interval: "10m"\n' + extra
        )
        proc = subprocess.Popen(
            self.pin.server_cmd([binary, "-c", str(conf)]),
            stderr=subprocess.DEVNULL,
            env=self.pin.nats_env(),
        )
        wait_port(port, proc)
        self.procs.append(proc)
        return port, proc

    def _null(self) -> tuple[int, subprocess.Popen[bytes]]:
        port = free_port()
        cmd = self.pin.server_cmd([sys.executable, str(HERE / "_null_server.py"), str(port)])
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        proc.stdout.readline()
        self.procs.append(proc)
        return port, proc

    def start_node(self, nats_binary: str | None) -> None:
        port, nport, proc = self._meshgate("node")
        self.ports["mg"] = (port, port, [proc.pid])
        self.ports["mg-nats"] = (nport, nport, [proc.pid])
        if nats_binary:
            nport, nproc = self._nats("n0", nats_binary)
            self.ports["nats"] = (nport, nport, [nproc.pid])
        port, proc = self._null()
        self.ports["null"] = (port, port, [proc.pid])

    def start_pair(self, nats_binary: str | None) -> None:
        gw_a, gw_b = free_port(), free_port()
        a, na, pa = self._meshgate("a0", f'cluster = "A"\ngateway_listen = "127.0.0.1:{gw_a}"\n')
        b, nb, pb = self._meshgate(
            "b0",
            f'cluster = "B"\ngateway_listen = "127.0.0.1:{gw_b}"\n'
            f'[gateways]\nA = ["tcp://127.0.0.1:{gw_a}"]\n',
        )
        self.ports["mg"] = (a, b, [pa.pid, pb.pid])
        self.ports["mg-nats"] = (na, nb, [pa.pid, pb.pid])
        if nats_binary:
            ngw = {"A": free_port(), "B": free_port()}
            cports = {}
            pids = []
            for name, other in (("A", "B"), ("B", "A")):
                port, proc = self._nats(
                    name.lower() + "0",
                    nats_binary,
                    f'gateway {{ name: "{name}", listen: "127.0.0.1:{ngw[name]}", gateways: '
                    f'[{{name: "{other}", urls: ["nats://127.0.0.1:{ngw[other]}"]}}] }}\n',
                )
                cports[name] = port
                pids.append(proc.pid)
            self.ports["nats"] = (cports["A"], cports["B"], pids)
        port, proc = self._null()
        self.ports["null"] = (port, port, [proc.pid])

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()
        self.ports.clear()


# -- one sample: roles in processes ---------------------------------------------------------------


class Ctl:
    """What the roles of one sample share with the parent."""

    def __init__(self, n: int) -> None:
        self.subscribed = CTX.Barrier(n + 1)
        self.probed = CTX.Barrier(n + 1)
        self.go = CTX.Barrier(n + 1)
        self.seen = CTX.Value(ctypes.c_long, 0)
        self.sent = CTX.Value(ctypes.c_longlong, -1, lock=False)  # set when sending ended
        self.t0 = CTX.Value(ctypes.c_double, 0.0, lock=False)  # when sending began
        self.recvd = CTX.Value(ctypes.c_longlong, 0, lock=False)  # frames per subscriber
        self.done = CTX.Value(ctypes.c_int, 0, lock=False)  # the receivers finished
        self.results = CTX.Queue()


Role = tuple[Callable[..., dict[str, Any]], tuple[Any, ...]]


def _run_role(
    ctl: Ctl, k: int, pin: Pinning, fn: Callable[..., dict[str, Any]], args: tuple[Any, ...]
) -> None:
    pin.pin_generator()
    try:
        out = fn(ctl, *args)
        out["index"] = k
        ctl.results.put(out)
    except BaseException:
        for b in (ctl.subscribed, ctl.probed, ctl.go):
            b.abort()
        ctl.results.put({"index": k, "error": traceback.format_exc()})


def run_roles(
    proto: Proto, roles: list[Role], probes: list[int], pids: list[int], pin: Pinning
) -> tuple[list[dict[str, Any]], float, float]:
    """Run ``roles`` in processes; publish probes on ``probes`` ports (one socket each
    waiting for them); return (role results by index, server CPU seconds while the
    roles ran, wall seconds)."""
    ctl = Ctl(len(roles))
    procs = [
        CTX.Process(target=_run_role, args=(ctl, k, pin, fn, a)) for k, (fn, a) in enumerate(roles)
    ]
    for p in procs:
        p.start()
    out: list[dict[str, Any]] = []
    try:
        ctl.subscribed.wait(120)
        if proto.needs_probe and probes:
            _probe(proto, probes, ctl)
        ctl.probed.wait(60)
        cpu0, t0 = sum(pid_cpu(p) for p in pids), time.perf_counter()
        ctl.go.wait(60)
        out.extend(ctl.results.get(timeout=300) for _ in procs)
        cpu1, t1 = sum(pid_cpu(p) for p in pids), time.perf_counter()
    except BaseException:
        while not ctl.results.empty():
            out.append(ctl.results.get())
        for r in out:
            if "error" in r:
                raise RuntimeError(r["error"]) from None
        raise
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    for r in out:
        if "error" in r:
            raise RuntimeError(r["error"])
    out.sort(key=lambda r: r["index"])
    return out, cpu1 - cpu0, t1 - t0


def _probe(proto: Proto, probes: list[int], ctl: Ctl) -> None:
    ports = sorted(set(probes))
    socks = {p: proto.connect(p) for p in ports}
    frames = {p: proto.pub(f"bench.prb{p}", b"\x00\x01\x02\x03").data for p in ports}
    deadline = time.monotonic() + 60
    try:
        while ctl.seen.value < len(probes):
            if time.monotonic() > deadline:
                raise RuntimeError("interest never converged")
            for p, s in socks.items():
                s.sendall(frames[p])
            time.sleep(0.02)
    finally:
        for s in socks.values():
            s.close()


def _gen_stats(c0: tuple[float, float], w0: float) -> dict[str, float]:
    c1 = cpu_clock()
    wall = time.perf_counter() - w0
    return {"cpu_s": c1[0] - c0[0], "wait_s": c1[1] - c0[1], "wall_s": wall}


# -- roles ----------------------------------------------------------------------------------------


def role_publisher(
    ctl: Ctl, proto: Proto, port: int, spec: FrameSpec, min_msgs: int, seconds: float, window: int
) -> dict[str, Any]:
    s = proto.connect(port, group=0, mode=0, send_len=len(spec))
    ctl.subscribed.wait(120)
    settle(proto, [], ctl.seen, ctl.probed)
    k = max(1, 65536 // len(spec))
    batch = memoryview(spec.data * k)
    s.setblocking(False)
    ctl.go.wait(60)
    w0, c0 = time.perf_counter(), cpu_clock()
    ctl.t0.value = w0
    sent = 0
    end = w0 + seconds
    recvd = ctl.recvd
    while sent < min_msgs or time.perf_counter() < end:
        if sent - recvd.value > window:  # the subscribers are behind: let them catch up
            time.sleep(0.0002)
            continue
        off = 0
        while off < len(batch):
            try:
                off += s.send(batch[off:])
            except BlockingIOError:
                wait_writable(s, 0.05)
        sent += k
    ctl.sent.value = sent
    stats = _gen_stats(c0, w0)
    # closing with unread input (nats-server's PING) would reset the connection and
    # lose what the server has not read yet: read until the receivers are done
    deadline = time.perf_counter() + 120
    while not ctl.done.value and time.perf_counter() < deadline:
        try:
            s.recv(65536)
        except BlockingIOError:
            time.sleep(0.01)
    s.close()
    return {"role": "publisher", "sent": sent, "t0": w0, **stats}


def role_subscribers(
    ctl: Ctl, proto: Proto, port: int, n: int, spec: FrameSpec, probe_from: int, timeout: float
) -> dict[str, Any]:
    subs = [(1, SUBJECT), (PROBE_SID, f"bench.prb{probe_from}")]
    socks = [proto.connect(port, subs, group=0, mode=1) for _ in range(n)]
    ctl.subscribed.wait(120)
    settle(proto, socks, ctl.seen, ctl.probed)
    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
    flen = len(spec)
    heads = [bytearray() for _ in socks]
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    total = 0
    per_sub = flen * n
    ctl.go.wait(60)
    w0, c0 = time.perf_counter(), cpu_clock()
    last = w0
    recvd = ctl.recvd
    closed = 0
    while True:
        events = sel.select(0.2)
        now = time.perf_counter()
        sent = ctl.sent.value
        if sent >= 0 and total >= sent * per_sub:
            break
        if not events:
            if (sent >= 0 and now - last > 5.0) or now - w0 > timeout:
                break
            continue
        for key, _ in events:
            i = key.data
            try:
                got = socks[i].recv_into(buf)
            except BlockingIOError:
                continue
            if not got:
                sel.unregister(socks[i])
                closed += 1
                continue
            h = heads[i]
            if len(h) < flen:
                h += view[: min(got, flen - len(h))]
            total += got
        last = time.perf_counter()
        recvd.value = total // per_sub
        if closed == n:
            break
    stats = _gen_stats(c0, w0)
    ctl.done.value = 1
    for s in socks:
        s.close()
    for h in heads:
        if h:
            verify(h, spec, 0)
    return {
        "role": "subscribers",
        "received": total // flen,
        "leftover_bytes": total % flen,
        "t_last": last,
        "closed": closed,
        **stats,
    }


def role_responder(
    ctl: Ctl,
    proto: Proto,
    port: int,
    req: FrameSpec,
    reply: FrameSpec,
    probe_from: int,
    req_payload: bytes,
) -> dict[str, Any]:
    subs = [(1, "svc.echo"), (PROBE_SID, f"bench.prb{probe_from}")]
    rewritten: str | None = None
    s = proto.connect(port, subs, group=0, mode=1, send_len=len(reply))
    ctl.subscribed.wait(120)
    settle(proto, [s], ctl.seen, ctl.probed)
    out = bytearray(reply.data)
    qo, ro, qlen = req.offset, reply.offset, len(req)
    pending = bytearray()
    answered = 0
    s.settimeout(0.1)
    ctl.go.wait(60)
    w0, c0 = time.perf_counter(), cpu_clock()
    while True:
        try:
            data = s.recv(65536)
        except TimeoutError:
            if ctl.sent.value >= 0:
                break
            continue
        if not data:
            break
        pending += data
        if not answered:  # the first request: its reply subject may have been rewritten
            learnt = proto.learn(pending)
            if learnt is None:
                continue
            req = proto.msg(1, "svc.echo", req_payload, reply=learnt[0])
            qo, qlen = req.offset, len(req)
            if learnt[0] != "inbox.bench":
                rewritten = learnt[0]
        while len(pending) >= qlen:
            if not answered:
                verify(pending[:qlen], req, STAMP.size)
            out[ro : ro + STAMP.size] = pending[qo : qo + STAMP.size]
            del pending[:qlen]
            s.sendall(out)
            answered += 1
    stats = _gen_stats(c0, w0)
    s.close()
    return {"role": "responder", "answered": answered, "reply_seen": rewritten, **stats}


def role_requester(
    ctl: Ctl,
    proto: Proto,
    port: int,
    req: FrameSpec,
    reply: FrameSpec,
    seconds: float,
    probe_from: int,
) -> dict[str, Any]:
    subs = [(7, "inbox.bench"), (PROBE_SID, f"bench.prb{probe_from}")]
    s = proto.connect(port, subs, group=0, mode=1, send_len=len(req))
    ctl.subscribed.wait(120)
    settle(proto, [s], ctl.seen, ctl.probed)
    frame = bytearray(req.data)
    qo, ro, rlen = req.offset, reply.offset, len(reply)
    buf = bytearray(rlen)
    view = memoryview(buf)
    s.settimeout(5.0)
    ctl.go.wait(60)
    lat = array.array("d")
    sent = 0
    lost = 0

    def round_trip() -> float:
        t = time.perf_counter()
        STAMP_D.pack_into(frame, qo, t)
        s.sendall(frame)
        got = 0
        while got < rlen:
            n = s.recv_into(view[got:])
            if not n:
                raise ConnectionError("closed")
            got += n
        back = time.perf_counter()
        if STAMP_D.unpack_from(buf, ro)[0] != t:
            raise AssertionError("a reply to another request")
        return back - t

    for _ in range(200):  # warm up
        round_trip()
    verify(buf, reply, STAMP.size)
    w0, c0 = time.perf_counter(), cpu_clock()
    end = w0 + seconds
    while time.perf_counter() < end:
        sent += 1
        try:
            lat.append(round_trip())
        except TimeoutError:
            lost += 1
            break
    stats = _gen_stats(c0, w0)
    ctl.sent.value = sent
    s.close()
    return {"role": "requester", "sent": sent, "lost": lost, "lat": lat.tobytes(), **stats}


def relay_subject(i: int) -> str:
    return f"g.{i // GROUP:04d}.{i:05d}"


def role_relay(
    ctl: Ctl, proto: Proto, port: int, ids: range, rate: float, warm: float, seconds: float
) -> dict[str, Any]:
    """Clients ``ids``: each publishes ``rate`` stamped updates a second on its own
    subject and receives its group's (its own echo included, not timed)."""
    pubs = [proto.pub(relay_subject(i), make_payload(48, i)) for i in ids]
    wants = {
        i: proto.msg(1, relay_subject(i), make_payload(48, i))
        for i in range(ids.start // GROUP * GROUP, (ids.stop + GROUP - 1) // GROUP * GROUP)
    }
    flen = len(next(iter(wants.values())))
    assert all(len(w) == flen for w in wants.values()), "frames differ in length"
    off = next(iter(wants.values())).offset
    rx = struct.Struct(f"!{off}xdI{flen - off - STAMP.size}x")
    poff = pubs[0].offset
    socks = [
        proto.connect(
            port, [(1, f"g.{i // GROUP:04d}.*")], group=i // GROUP, mode=2, send_len=len(pubs[0])
        )
        for i in ids
    ]
    proto.await_first_ping(socks)
    frames = [bytearray(p.data) for p in pubs]
    senders = [Sender(s) for s in socks]
    bufs = [bytearray() for _ in socks]
    sel = selectors.DefaultSelector()
    for k, s in enumerate(socks):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, k)
    n = len(socks)
    ctl.subscribed.wait(120)
    ctl.probed.wait(60)  # no probe: every client is on one server
    ctl.go.wait(60)
    period = 1.0 / rate
    start = time.perf_counter()
    measure_from = start + warm
    measure_to = measure_from + seconds
    next_send = [start + period * k / n for k in range(n)]
    sent = [0] * n
    received = 0
    lat = array.array("d")
    verified = [False] * n
    me = list(ids)
    k = 0
    c0: tuple[float, float] | None = None
    stalled: set[int] = set()
    drain_until = measure_to + 0.3
    sending = True
    while True:
        now = time.perf_counter()
        if c0 is None and now >= measure_from:
            c0, w0 = cpu_clock(), now
        if sending and now >= measure_to:
            sending = False
            stats = _gen_stats(c0, w0) if c0 is not None else {}
        if not sending and now >= drain_until:
            break
        if sending:
            done = 0
            while done < n:
                i = k
                if next_send[i] > now:
                    break
                f = frames[i]
                STAMP_D.pack_into(f, poff, now)
                snd = senders[i]
                snd.send(f)
                if snd.pending:
                    stalled.add(i)
                sent[i] += 1
                next_send[i] += period
                k = (k + 1) % n
                done += 1
            if stalled:
                for i in list(stalled):
                    senders[i].flush()
                    if not senders[i].pending:
                        stalled.discard(i)
            timeout = max(0.0, min(next_send[k] - time.perf_counter(), 0.005))
        else:
            timeout = 0.05
        events = sel.select(timeout)
        if not sending and events:
            drain_until = time.perf_counter() + 0.3
        for key, _ in events:
            i = key.data
            try:
                data = socks[i].recv(1 << 20)
            except BlockingIOError:
                continue
            if not data:
                raise ConnectionError(f"client {me[i]} closed by the server")
            t = time.perf_counter()
            b = bufs[i]
            b += data
            whole = len(b) // flen * flen
            if not whole:
                continue
            if not verified[i]:
                origin = STAMP.unpack_from(b, off)[1]
                verify(b[:flen], wants[origin], STAMP.size)
                verified[i] = True
            mine = me[i]
            for stamp, origin in rx.iter_unpack(memoryview(b)[:whole]):
                if origin != mine and measure_from <= stamp < measure_to:
                    lat.append(t - stamp)
            received += whole // flen
            del b[:whole]
    for s in socks:
        s.close()
    per_group: dict[int, int] = {}
    for j, i in enumerate(ids):
        per_group[i // GROUP] = per_group.get(i // GROUP, 0) + sent[j]
    return {
        "role": "relay",
        "clients": n,
        "sent_per_group": per_group,
        "received": received,
        "lat": lat.tobytes(),
        **stats,
    }


# -- scenarios ------------------------------------------------------------------------------------


def _lat(results: list[dict[str, Any]]) -> list[float]:
    out = array.array("d")
    for r in results:
        if "lat" in r:
            out.frombytes(r.pop("lat"))
    return sorted(out)


def pct(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(len(xs) * q))] if xs else float("nan")


def throughput(
    proto: Proto,
    a: int,
    b: int,
    pids: list[int],
    pin: Pinning,
    n_subs: int,
    min_msgs: int,
    seconds: float,
) -> dict[str, Any]:
    payload = make_payload(128)
    pub = proto.pub(SUBJECT, payload)
    msg = proto.msg(1, SUBJECT, payload)
    window = max(1000, (2 << 20) // len(msg))
    roles: list[Role] = [
        (role_subscribers, (proto, b, n_subs, msg, a, 300.0)),
        (role_publisher, (proto, a, pub, min_msgs, seconds, window)),
    ]
    res, server_cpu, _ = run_roles(proto, roles, [a] * n_subs, pids, pin)
    sub, pubr = res
    expected = pubr["sent"] * n_subs
    received = sub["received"]
    elapsed = sub["t_last"] - pubr["t0"]
    return {
        "value": received / elapsed,
        "unit": "deliveries/s",
        "expected": expected,
        "received": received,
        "ok": received == expected and sub["leftover_bytes"] == 0,
        "elapsed_s": elapsed,
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_delivery": 1e6 * server_cpu / received if received else None,
        "generators": [_strip(r) for r in res],
    }


def request_reply(
    proto: Proto, a: int, b: int, pids: list[int], pin: Pinning, seconds: float
) -> dict[str, Any]:
    payload = make_payload(16)
    req_pub = proto.pub("svc.echo", payload, reply="inbox.bench", sid=1)
    req_msg = proto.msg(1, "svc.echo", payload, reply="inbox.bench")
    rep_pub = proto.pub("inbox.bench", payload, sid=7)
    rep_msg = proto.msg(7, "inbox.bench", payload)
    roles: list[Role] = [
        (role_responder, (proto, b, req_msg, rep_pub, a, payload)),
        (role_requester, (proto, a, req_pub, rep_msg, seconds, b)),
    ]
    res, server_cpu, _ = run_roles(proto, roles, [a, b], pids, pin)
    lat = _lat(res)
    reqr = res[1]
    received = len(lat)
    return {
        "value": {"p50_us": 1e6 * pct(lat, 0.5), "p99_us": 1e6 * pct(lat, 0.99)},
        "unit": "us",
        "expected": reqr["sent"],
        "received": received,
        "ok": received == reqr["sent"] and reqr["lost"] == 0,
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_delivery": 1e6 * server_cpu / (2 * received) if received else None,
        "generators": [_strip(r) for r in res],
    }


def relay(
    proto: Proto,
    port: int,
    pids: list[int],
    pin: Pinning,
    clients: int,
    generators: int,
    seconds: float,
) -> dict[str, Any]:
    bounds = [clients * k // generators for k in range(generators + 1)]
    roles: list[Role] = [
        (role_relay, (proto, port, range(bounds[k], bounds[k + 1]), 20.0, 0.5, seconds))
        for k in range(generators)
    ]
    res, server_cpu, _ = run_roles(proto, roles, [], pids, pin)
    lat = _lat(res)
    per_group: dict[int, int] = {}
    for r in res:
        for g, c in r.pop("sent_per_group").items():
            per_group[g] = per_group.get(g, 0) + c
    expected = sum(c * (min(clients, (g + 1) * GROUP) - g * GROUP) for g, c in per_group.items())
    received = sum(r["received"] for r in res)
    deliveries = len(lat) / seconds
    return {
        "value": {
            "p50_ms": 1e3 * pct(lat, 0.5),
            "p99_ms": 1e3 * pct(lat, 0.99),
            "deliveries_per_s": deliveries,
        },
        "unit": "ms",
        "clients": clients,
        "expected": expected,
        "received": received,
        "ok": received == expected,
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_delivery": 1e6 * server_cpu / received if received else None,
        "generators": [_strip(r) for r in res],
    }


def _strip(r: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in r.items() if k not in ("lat", "index")}


# -- the run --------------------------------------------------------------------------------------


def machine(nats_binary: str | None, pin: Pinning) -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nats_server": nats_version(nats_binary),
        "pinning": pin.describe(),
    }


def commit() -> dict[str, Any]:
    root = HERE.parent

    def git(*a: str) -> str:
        out = subprocess.run(["git", *a], cwd=root, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "src"))}


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def alternating(servers: list[str], rep: int) -> list[str]:
    return servers if rep % 2 == 0 else servers[::-1]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--repeat", type=int, default=5, help="measured repeats (after one warm-up)")
    ap.add_argument("--seconds", type=float, default=1.0, help="least seconds per sample")
    ap.add_argument("--fanout-msgs", type=int, default=50_000, help="least messages, fan-out")
    ap.add_argument("--relay-start", type=int, default=21, help="first relay step (clients)")
    ap.add_argument("--relay-step", type=int, default=210, help="relay step (clients)")
    ap.add_argument("--relay-max", type=int, default=4200, help="safety bound on relay clients")
    ap.add_argument("--relay-seconds", type=float, default=1.5, help="relay measuring seconds")
    ap.add_argument(
        "--generators",
        type=int,
        default=max(1, (os.cpu_count() or 2) - 1),
        help="relay generator processes (default: one per core but one)",
    )
    ap.add_argument("--only", default="node,gateway,relay", help="sections to run")
    ap.add_argument("--servers", default=",".join(SERVERS), help="servers to sample")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, one repeat")
    ap.add_argument("--json", metavar="FILE", help="write every sample as JSON")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeat, args.seconds, args.fanout_msgs = 1, 0.2, 2000
        args.relay_start, args.relay_step, args.relay_max, args.relay_seconds = 42, 42, 84, 0.5
    import meshgate

    pin = Pinning()
    nats_binary = find_nats()
    wanted = [s for s in args.servers.split(",") if s]
    if not nats_binary and "nats" in wanted:
        print("nats-server unavailable: no reference column", file=sys.stderr)
        wanted.remove("nats")
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "benchmark": "fair",
        "command": [sys.executable, *sys.argv] if argv is None else ["bench_fair.py", *argv],
        **commit(),
        "compiled": bool(meshgate.COMPILED),
        "machine": machine(nats_binary, pin),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "loadavg_start": loadavg(),
        "repeats": args.repeat,
        "seconds": args.seconds,
        "samples": [],
    }
    samples: list[dict[str, Any]] = doc["samples"]
    sections = args.only.split(",")
    tmp = tempfile.mkdtemp()

    def secs(warmup: bool) -> float:
        """A warm-up sample (discarded) runs half as long."""
        return args.seconds / 2 if warmup else args.seconds

    def record(
        scenario: str, server: str, rep: int, measure: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        la = loadavg()[0]
        try:
            s = measure()
        except Exception as exc:  # a failed sample is recorded, not hidden
            s = {"error": f"{type(exc).__name__}: {exc}"[:2000], "ok": False}
        s.update(scenario=scenario, server=server, repeat=rep, warmup=rep < 0, loadavg=la)
        samples.append(s)
        v = s.get("value")
        print(
            f"{scenario:<24} {server:<8} rep {rep:>2} {v} ok={s.get('ok')}",
            file=sys.stderr,
            flush=True,
        )
        return s

    def table(
        section: str,
        scenarios: list[tuple[str, Callable[[Proto, int, int, list[int], bool], dict[str, Any]]]],
    ) -> None:
        srv = Servers(tmp, pin)
        try:
            if section == "node":
                srv.start_node(nats_binary if "nats" in wanted else None)
            else:
                srv.start_pair(nats_binary if "nats" in wanted else None)
            names = [s for s in wanted if s in srv.ports]
            for scenario, fn in scenarios:
                for rep in range(-1, args.repeat):
                    for name in alternating(names, rep):
                        a, b, pids = srv.ports[name]
                        proto = PROTOS[PROTO_OF[name]](first_ping=name == "nats")
                        record(
                            scenario, name, rep, functools.partial(fn, proto, a, b, pids, rep < 0)
                        )
        finally:
            srv.stop()

    try:
        if "node" in sections:
            table(
                "node",
                [
                    (
                        "node 1->1 128B",
                        lambda p, a, b, pids, w: throughput(p, a, b, pids, pin, 1, 0, secs(w)),
                    ),
                    (
                        "node fan-out 100 128B",
                        lambda p, a, b, pids, w: throughput(
                            p, a, b, pids, pin, 100, args.fanout_msgs // (5 if w else 1), secs(w)
                        ),
                    ),
                    (
                        "node request/reply",
                        lambda p, a, b, pids, w: request_reply(p, a, b, pids, pin, secs(w)),
                    ),
                ],
            )
        if "gateway" in sections:
            table(
                "gateway",
                [
                    (
                        "gateway A->B 128B",
                        lambda p, a, b, pids, w: throughput(p, a, b, pids, pin, 1, 0, secs(w)),
                    ),
                    (
                        "gateway request/reply",
                        lambda p, a, b, pids, w: request_reply(p, a, b, pids, pin, secs(w)),
                    ),
                ],
            )
        if "relay" in sections:
            relay_steps(args, pin, nats_binary, wanted, tmp, record)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    doc["loadavg_end"] = loadavg()
    doc["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def relay_steps(
    args: argparse.Namespace,
    pin: Pinning,
    nats_binary: str | None,
    wanted: list[str],
    tmp: str,
    record: Callable[[str, str, int, Callable[[], dict[str, Any]]], dict[str, Any]],
) -> None:
    """Step the relay's clients up until every server failed (median p99 over 5 ms, or
    a message lost in most repeats); a server that failed is not stepped further."""
    srv = Servers(tmp, pin)
    try:
        srv.start_node(nats_binary if "nats" in wanted else None)
        live = [s for s in wanted if s in srv.ports]
        clients = args.relay_start
        # the floor alone does not keep the steps going
        while set(live) - {"null"} and clients <= args.relay_max:
            got: dict[str, list[dict[str, Any]]] = {s: [] for s in live}
            for rep in range(args.repeat):
                for name in alternating(live, rep):
                    port, _, pids = srv.ports[name]
                    proto = PROTOS[PROTO_OF[name]](first_ping=name == "nats")
                    s = record(
                        f"relay {clients}",
                        name,
                        rep,
                        functools.partial(
                            relay,
                            proto,
                            port,
                            pids,
                            pin,
                            clients,
                            args.generators,
                            args.relay_seconds,
                        ),
                    )
                    got[name].append(s)
            for name, ss in got.items():
                p99s = [s["value"]["p99_ms"] if "value" in s else float("inf") for s in ss]
                lossy = sum(1 for s in ss if not s.get("ok"))
                if statistics.median(p99s) > P99_LIMIT_MS or lossy * 2 > len(ss):
                    live.remove(name)
            clients = clients * 2 if clients < args.relay_step else clients + args.relay_step
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
