"""The load generator of ``bench_fair.py``: the same cost for every protocol.

Every frame is encoded once per scenario, before the clock starts, by a
:class:`Proto` (meshgate's protocol, the NATS text protocol, or the null server's
raw relay), with fixed-length subjects and payloads, so every frame a client receives
in a scenario has one known length.  The hot loops never call a codec: a publisher
sends a pre-built batch (or patches an 8-byte timestamp in place at a fixed offset),
and a receiver cuts its byte stream into fixed-length frames by offset with one
:class:`struct.Struct` (``iter_unpack``), the same code whatever the protocol.  The
first frame on every socket is compared byte for byte with the expected frame (the
timestamp and origin masked).  Sends are non-blocking; partial sends and
``BlockingIOError`` keep the rest for later.  Each role runs in its own process and
reports its CPU and wait-for-CPU time from ``/proc/self/schedstat``.
"""

from __future__ import annotations

import os
import selectors
import socket
import struct
import time
from collections.abc import Sequence
from typing import Any

import msgpack

from meshgate.protocol import PROTOCOL_VERSION, Encoder, Hello, Message, Ping, Publish

__all__ = [
    "PROTOS",
    "FrameSpec",
    "Proto",
    "cpu_clock",
    "make_payload",
    "verify",
]

#: the stamp (monotonic clock, seconds) and the origin id at the start of every payload
STAMP = struct.Struct("!dI")
STAMP_LEN = 8
PROBE_SID = 99
PROBE_SUBJECT = "bench.prb"


def make_payload(size: int, origin: int = 0) -> bytes:
    """A payload of ``size`` bytes: room for the stamp, the origin id, then filler."""
    assert size >= STAMP.size
    return STAMP.pack(0.0, origin) + bytes((0x61 + i % 26) for i in range(size - STAMP.size))


def cpu_clock() -> tuple[float, float]:
    """(CPU seconds, seconds spent waiting for a CPU) of this process so far
    (``/proc/self/schedstat``, summed over its threads' scheduler entity)."""
    try:
        run, wait, _ = open("/proc/self/schedstat").read().split()  # noqa: SIM115
        return int(run) / 1e9, int(wait) / 1e9
    except OSError:
        return time.process_time(), float("nan")


class FrameSpec:
    """One pre-encoded frame: its bytes and where its payload starts."""

    __slots__ = ("data", "offset")

    def __init__(self, data: bytes, payload: bytes) -> None:
        self.data = data
        self.offset = data.rfind(payload)
        assert self.offset >= 0, "payload not in the frame"
        assert data.count(payload) == 1, "payload not unique in the frame"

    def __len__(self) -> int:
        return len(self.data)


class Proto:
    """How to speak to one kind of server; used only before the clock starts."""

    name = ""
    pong = b""
    needs_probe = True

    def __init__(self, first_ping: bool = False) -> None:
        #: the server sends a PING of its own soon after CONNECT (nats-server)
        self.first_ping = first_ping
        self.pinged: set[int] = set()

    def hello(self, group: int, mode: int, send_len: int) -> bytes:
        raise NotImplementedError

    def sub(self, sid: int, subject: str) -> bytes:
        raise NotImplementedError

    def unsub(self, sid: int) -> bytes:
        raise NotImplementedError

    def ping(self) -> bytes:
        raise NotImplementedError

    def pub(
        self, subject: str, payload: bytes, reply: str | None = None, sid: int = 1
    ) -> FrameSpec:
        """The frame a client sends to publish (``sid``: the subscription that will
        receive it, used only by the null server, which sends what it is given)."""
        raise NotImplementedError

    def msg(self, sid: int, subject: str, payload: bytes, reply: str | None = None) -> FrameSpec:
        """The frame a subscriber receives."""
        raise NotImplementedError

    def learn(self, data: bytes | bytearray) -> tuple[str | None, int] | None:
        """Setup only: the reply subject and length of the first message frame in
        ``data``, or None while it is incomplete (a gateway may rewrite a reply subject,
        so a responder learns the length of the requests it receives once)."""
        raise NotImplementedError

    def connect(
        self,
        port: int,
        subs: Sequence[tuple[int, str]] = (),
        *,
        group: int = 0,
        mode: int = 1,
        send_len: int = 1,
    ) -> socket.socket:
        """A connected, handshaken client with its subscriptions live (a PONG came)."""
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        data = self.hello(group, mode, send_len)
        data += b"".join(self.sub(sid, subj) for sid, subj in subs)
        s.sendall(data + self.ping())
        self.wait_pong(s)
        return s

    def wait_pong(self, s: socket.socket) -> None:
        """Read until the stream ends with a PONG (nothing else may follow it but the
        server's own first PING, which is noted)."""
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError(f"{self.name}: closed during the handshake: {buf[-200:]!r}")
            buf += chunk
            self.note(s, buf)
            i = buf.rfind(self.pong)
            if i < 0:
                continue
            tail = buf[i + len(self.pong) :].replace(b"PING\r\n", b"")
            if not tail:
                return
            if not b"PING\r\n".startswith(tail):
                raise AssertionError(f"{self.name}: unexpected bytes after the PONG: {tail!r}")

    def note(self, s: socket.socket, data: bytes | bytearray) -> None:
        """Remember a socket whose server sent its first PING (nats-server does, about
        2 s after CONNECT, whatever its ping_interval)."""
        if self.first_ping and b"PING\r\n" in data:
            self.pinged.add(s.fileno())

    def await_first_ping(self, socks: Sequence[socket.socket]) -> None:
        """Before the clock starts: wait until every socket had the server's first PING
        and answer it, so that no PING cuts into the fixed-length frames later."""
        if not self.first_ping:
            return
        for s in socks:
            if s.fileno() in self.pinged:
                continue
            s.settimeout(10.0)
            buf = b""
            while b"PING\r\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError(f"{self.name}: closed before its first PING")
                buf = buf[-8:] + chunk
            self.pinged.add(s.fileno())
            s.settimeout(None)
        for s in socks:
            s.sendall(b"PONG\r\n")


class MeshgateProto(Proto):
    """meshgate's own protocol (msgpack frames)."""

    name = "meshgate"
    pong = b"\x91\x06"

    def __init__(self, first_ping: bool = False) -> None:
        super().__init__(first_ping)
        self.enc = Encoder()

    def hello(self, group: int, mode: int, send_len: int) -> bytes:
        return self.enc.encode(Hello(PROTOCOL_VERSION, "client", "bench", None, None, 0, (), ()))

    def sub(self, sid: int, subject: str) -> bytes:
        return self.enc.encode_raw(2, sid, subject, None)

    def unsub(self, sid: int) -> bytes:
        return self.enc.encode_raw(3, sid, None)

    def ping(self) -> bytes:
        return self.enc.encode(Ping())

    def pub(
        self, subject: str, payload: bytes, reply: str | None = None, sid: int = 1
    ) -> FrameSpec:
        return FrameSpec(self.enc.encode(Publish(subject, reply, payload, None)), payload)

    def msg(self, sid: int, subject: str, payload: bytes, reply: str | None = None) -> FrameSpec:
        return FrameSpec(self.enc.encode(Message(sid, subject, reply, payload)), payload)

    def learn(self, data: bytes | bytearray) -> tuple[str | None, int] | None:
        u = msgpack.Unpacker(raw=False)
        u.feed(data)
        try:
            frame = u.unpack()
        except msgpack.OutOfData:
            return None
        return frame[3], u.tell()


def _nats_msg(sid: int, subject: str, payload: bytes, reply: str | None) -> bytes:
    r = f" {reply}" if reply else ""
    return f"MSG {subject} {sid}{r} {len(payload)}\r\n".encode() + payload + b"\r\n"


def _learn_nats(data: bytes | bytearray) -> tuple[str | None, int] | None:
    i = data.find(b"\r\n")
    if i < 0:
        return None
    parts = bytes(data[:i]).split()
    size = i + 2 + int(parts[-1]) + 2
    if len(data) < size:
        return None
    return (parts[3].decode() if len(parts) == 5 else None), size


class NatsProto(Proto):
    """The NATS text protocol (nats-server, meshgate's NATS port)."""

    name = "nats"
    pong = b"PONG\r\n"

    def hello(self, group: int, mode: int, send_len: int) -> bytes:
        return b'CONNECT {"verbose":false,"pedantic":false,"headers":false}\r\n'

    def sub(self, sid: int, subject: str) -> bytes:
        return f"SUB {subject} {sid}\r\n".encode()

    def unsub(self, sid: int) -> bytes:
        return f"UNSUB {sid}\r\n".encode()

    def ping(self) -> bytes:
        return b"PING\r\n"

    def pub(
        self, subject: str, payload: bytes, reply: str | None = None, sid: int = 1
    ) -> FrameSpec:
        r = f" {reply}" if reply else ""
        return FrameSpec(
            f"PUB {subject}{r} {len(payload)}\r\n".encode() + payload + b"\r\n", payload
        )

    def msg(self, sid: int, subject: str, payload: bytes, reply: str | None = None) -> FrameSpec:
        return FrameSpec(_nats_msg(sid, subject, payload, reply), payload)

    def learn(self, data: bytes | bytearray) -> tuple[str | None, int] | None:
        return _learn_nats(data)


class NullProto(NatsProto):
    """The null server (``_null_server.py``): the publisher sends the NATS ``MSG``
    frames the receivers expect; there are no subscriptions."""

    name = "null"
    pong = b"OK\n"
    needs_probe = False

    def hello(self, group: int, mode: int, send_len: int) -> bytes:
        return b"N %d %d %d\n" % (group, mode, send_len)

    def sub(self, sid: int, subject: str) -> bytes:
        return b""

    def unsub(self, sid: int) -> bytes:
        return b""

    def ping(self) -> bytes:
        return b""

    def pub(
        self, subject: str, payload: bytes, reply: str | None = None, sid: int = 1
    ) -> FrameSpec:
        return FrameSpec(_nats_msg(sid, subject, payload, reply), payload)


#: protocol name -> class
PROTOS: dict[str, type[Proto]] = {"meshgate": MeshgateProto, "nats": NatsProto, "null": NullProto}


def verify(got: bytes | bytearray | memoryview, want: FrameSpec, masked: int) -> None:
    """``got`` must equal ``want``'s bytes but for ``masked`` bytes at its payload
    offset (the stamp, the origin)."""
    g = bytes(got)
    w = want.data
    o = want.offset
    if len(g) != len(w) or g[:o] != w[:o] or g[o + masked :] != w[o + masked :]:
        raise AssertionError(
            f"unexpected frame: got {g!r}, want {w!r} (bytes {o}..{o + masked} masked)"
        )


class Sender:
    """Non-blocking sends with the unsent rest kept per socket."""

    __slots__ = ("pending", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending = bytearray()

    def send(self, data: bytes | bytearray) -> None:
        if self.pending:
            self.pending += data
            self.flush()
            return
        try:
            n = self.sock.send(data)
        except BlockingIOError:
            n = 0
        if n < len(data):
            self.pending += data[n:]

    def flush(self) -> None:
        while self.pending:
            try:
                n = self.sock.send(self.pending)
            except BlockingIOError:
                return
            del self.pending[:n]


def wait_writable(sock: socket.socket, timeout: float) -> None:
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_WRITE)
    sel.select(timeout)
    sel.close()


def settle(proto: Proto, socks: Sequence[socket.socket], seen: Any, probed: Any) -> None:
    """Wait until every socket saw a probe (the parent publishes them: interest may
    cross clusters asynchronously), then drop the probe subscription; after the PONG
    only scenario traffic arrives.  ``seen`` counts sockets that saw one."""
    if not proto.needs_probe:
        probed.wait()
        return
    waiting = list(socks)
    while waiting:
        for s in list(waiting):
            s.settimeout(0.05)
            try:
                data = s.recv(65536)
            except TimeoutError:
                continue
            proto.note(s, data)
            if not data:
                raise ConnectionError("closed while waiting for a probe")
            if data.replace(b"PING\r\n", b""):
                waiting.remove(s)
    with seen.get_lock():
        seen.value += len(socks)
    probed.wait()
    for s in socks:
        s.settimeout(None)
        s.sendall(proto.unsub(PROBE_SID) + proto.ping())
        proto.wait_pong(s)
    proto.await_first_ping(socks)
    # a probe routed before the UNSUB could still follow the PONG (nats-server
    # delivers from the publisher's goroutine): wait for 50 ms of silence
    for s in socks:
        s.settimeout(0.05)
        try:
            while s.recv(65536):
                pass
        except TimeoutError:
            pass
        s.settimeout(None)


def pid_cpu(pid: int) -> float:
    """CPU seconds used so far by process ``pid`` (all its threads) and its children
    still running."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    try:
        children = open(f"/proc/{pid}/task/{pid}/children").read().split()  # noqa: SIM115
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            stat = open(f"/proc/{p}/stat").read()  # noqa: SIM115
        except OSError:
            continue
        f = stat[stat.rindex(")") + 2 :].split()
        total += (int(f[11]) + int(f[12])) / tick
    return total
