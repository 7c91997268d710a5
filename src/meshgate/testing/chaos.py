"""Failure injection for tests of systems built on meshgate.

* :func:`open_node_process` runs a node as its own OS process (``meshgate serve``)
  that you can kill, stop and continue, terminate or send SIGHUP.
* :func:`open_fault_proxy` puts a TCP proxy in front of any port; on command it stalls
  its links (a hung peer or a black-holed flow), slows them, cuts them (orderly close)
  or resets them (TCP RST), simulating partitions one link at a time.
* :func:`open_udp_fault_proxy` puts a UDP proxy in front of a QUIC or WebTransport
  port: seeded drop rate, delay with jitter, reordering, duplication and blackouts, in
  both directions (a lossy mobile link you can replay).
* :class:`Ledger` follows numbered streams from publishers to subscribers and reports,
  per subscriber, what was lost, duplicated and reordered, and the longest silence.

``tests/test_chaos.py`` builds the project's chaos suite from these; the table of
what each failure costs is in ``docs/operations.md``.
"""

from __future__ import annotations

__all__ = [
    "FaultProxy",
    "Ledger",
    "NodeProcess",
    "StreamReport",
    "UdpDirectionStats",
    "UdpFaultProxy",
    "UdpFaults",
    "UdpStats",
    "open_fault_proxy",
    "open_node_process",
    "open_udp_fault_proxy",
    "to_toml",
]

import heapq
import itertools
import json
import math
import random
import signal
import socket
import struct
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

if TYPE_CHECKING:
    from ..client import Client, Subscription


# -- node processes --------------------------------------------------------------------------


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return (
            "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
        )
    raise TypeError(f"no TOML form for {value!r}")


def to_toml(fields: Mapping[str, Any]) -> str:
    """A node configuration mapping (as :meth:`GatewayConfig.from_mapping` reads it) as
    TOML text: scalars and lists at the top, then tables (``[gateways]``) and arrays of
    tables (``[[users]]``)."""
    top, tables = [], []
    for key, value in fields.items():
        if isinstance(value, Mapping):
            tables.append(f"\n[{key}]")
            tables += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()]
        elif (
            isinstance(value, list | tuple) and value and all(isinstance(v, Mapping) for v in value)
        ):
            for entry in value:
                tables.append(f"\n[[{key}]]")
                tables += [f"{k} = {_toml_value(v)}" for k, v in entry.items()]
        else:
            top.append(f"{key} = {_toml_value(value)}")
    return "\n".join(top + tables) + "\n"


class NodeProcess:
    """A node running as ``meshgate serve -c <file>`` in its own process."""

    def __init__(self, process: trio.Process, ready: dict[str, Any], config: Path) -> None:
        #: the OS process
        self.process = process
        #: the node's ready line: name, cluster and its bound URLs
        self.ready = ready
        #: the TOML file it was started from
        self.config = config

    @property
    def client_url(self) -> str:
        """The node's client port."""
        return str(self.ready["client_url"])

    @property
    def cluster_url(self) -> str | None:
        """The node's route port, if it listens for routes."""
        return self.ready.get("cluster_url")

    @property
    def gateway_url(self) -> str | None:
        """The node's gateway port, if it listens for gateways."""
        return self.ready.get("gateway_url")

    def kill(self) -> None:
        """SIGKILL: the node vanishes without a word to anyone."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGSTOP: the node hangs; its sockets stay open and nothing is read."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`stop`."""
        self._signal(signal.SIGCONT)

    def terminate(self) -> None:
        """SIGTERM: lame duck, then drain and exit."""
        self._signal(signal.SIGTERM)

    def hangup(self) -> None:
        """SIGHUP: reload the configuration file."""
        self._signal(signal.SIGHUP)

    def _signal(self, signum: int) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signum)

    async def wait(self) -> int:
        """Wait for the process to exit; its exit status."""
        return await self.process.wait()


@asynccontextmanager
async def open_node_process(
    fields: Mapping[str, Any], directory: Path, *, start_timeout: float = 30.0
) -> AsyncIterator[NodeProcess]:
    """Start a node from configuration ``fields`` (written to ``<directory>/<name>.toml``)
    and wait for its ready line.  On exit it is continued if stopped, sent SIGTERM, and
    killed if it has not exited within 10 s."""
    path = Path(directory) / f"{fields.get('name', 'node')}.toml"
    path.write_text(to_toml(fields))
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "meshgate", "serve", "-c", str(path)], stdout=-1
    )
    try:
        assert proc.stdout is not None
        buf = b""
        with trio.fail_after(start_timeout):
            while b"\n" not in buf:
                chunk = await proc.stdout.receive_some(4096)
                if not chunk:
                    raise RuntimeError(f"node {path} exited early with {await proc.wait()}")
                buf += chunk
        node = NodeProcess(proc, json.loads(buf.split(b"\n", 1)[0]), path)
        yield node
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
                with trio.move_on_after(10):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()


# -- the fault-injecting proxy ---------------------------------------------------------------


class _Link:
    __slots__ = ("inside", "outside", "scope")

    def __init__(self, outside: trio.SocketStream, inside: trio.SocketStream) -> None:
        self.outside = outside
        self.inside = inside
        self.scope = trio.CancelScope()


class FaultProxy:
    """A TCP proxy with faults on command; get one from :func:`open_fault_proxy`.

    Faults apply to every link, open or opened later, until :meth:`heal`.
    """

    def __init__(self, url: str, target: tuple[str, int]) -> None:
        #: where to connect instead of the target: ``tcp://127.0.0.1:<port>``
        self.url = url
        #: the proxied address
        self.target = target
        #: links accepted so far, and bytes forwarded (both directions)
        self.accepted = 0
        self.forwarded = 0
        self._links: set[_Link] = set()
        self._flowing = trio.Event()
        self._flowing.set()
        self._rate: float | None = None

    @property
    def links(self) -> int:
        """Links currently open."""
        return len(self._links)

    def stall(self) -> None:
        """Stop forwarding in both directions: a hung peer, a black-holed flow.  The
        sockets stay open; senders fill the buffers and then block."""
        if self._flowing.is_set():
            self._flowing = trio.Event()

    def slow(self, bytes_per_second: float) -> None:
        """Forward at most ``bytes_per_second`` in each direction of each link."""
        self._rate = bytes_per_second

    def heal(self) -> None:
        """Forward freely again."""
        self._rate = None
        self._flowing.set()

    def cut(self) -> None:
        """Close every open link in order (FIN), as a peer that exits cleanly does."""
        self._end_links(reset=False)

    def reset(self) -> None:
        """Abort every open link with a TCP reset (RST), as a crashed host or a
        middlebox that drops state does."""
        self._end_links(reset=True)

    def _end_links(self, *, reset: bool) -> None:
        for link in list(self._links):
            if reset:
                linger = struct.pack("ii", 1, 0)
                for s in (link.outside, link.inside):
                    try:
                        s.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    except OSError:
                        pass
            for s in (link.outside, link.inside):
                s.socket.close()  # the pumps see it closed and end
            link.scope.cancel()
            self._links.discard(link)

    async def _pump(self, src: trio.SocketStream, dst: trio.SocketStream) -> None:
        try:
            while True:
                data = await src.receive_some(65536)
                if not data:
                    await dst.send_eof()
                    return
                while not self._flowing.is_set():
                    await self._flowing.wait()
                rate = self._rate
                if rate is not None:
                    await trio.sleep(len(data) / rate)  # pacing: this is the slow link
                await dst.send_all(data)
                self.forwarded += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return

    async def _serve(self, outside: trio.SocketStream) -> None:
        self.accepted += 1
        try:
            inside = await trio.open_tcp_stream(*self.target)
        except OSError:
            outside.socket.close()
            return
        link = _Link(outside, inside)
        self._links.add(link)
        try:
            with link.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, outside, inside)
                    nursery.start_soon(self._pump, inside, outside)
        finally:
            self._links.discard(link)
            outside.socket.close()
            inside.socket.close()


@asynccontextmanager
async def open_fault_proxy(target: str) -> AsyncIterator[FaultProxy]:
    """A :class:`FaultProxy` on 127.0.0.1 (a free port) forwarding to ``target``
    (``tcp://host:port`` or ``host:port``)."""
    host, _, port = target.removeprefix("tcp://").rpartition(":")
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    bound = listeners[0].socket.getsockname()[1]
    proxy = FaultProxy(f"tcp://127.0.0.1:{bound}", (host, int(port)))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, proxy._serve, listeners)
        try:
            yield proxy
        finally:
            proxy.heal()
            nursery.cancel_scope.cancel()


# -- the UDP fault proxy -----------------------------------------------------------------------


@attrs.define
class UdpFaults:
    """What a :class:`UdpFaultProxy` does to each datagram, in each direction.

    Every decision is drawn from the proxy's seeded generator (one per direction), so
    the same seed and the same datagrams in the same order give the same faults.
    """

    #: probability that a datagram is dropped
    drop: float = 0.0
    #: one-way delay added to every datagram, in seconds
    delay: float = 0.0
    #: the delay varies uniformly in ``delay - jitter .. delay + jitter`` (never below 0)
    jitter: float = 0.0
    #: probability that a datagram is held back ``reorder_by`` seconds more than its
    #: delay, so that later datagrams overtake it
    reorder: float = 0.0
    #: how long a reordered datagram is held back, in seconds
    reorder_by: float = 0.01
    #: probability that a datagram is sent twice (the copy with its own delay)
    duplicate: float = 0.0


@attrs.define
class UdpDirectionStats:
    """Counters of one direction of a :class:`UdpFaultProxy` (``up``: clients to the
    target; ``down``: the target to clients)."""

    #: datagrams received from the sending side
    received: int = 0
    #: datagrams sent on (copies included)
    forwarded: int = 0
    #: datagrams dropped by the drop rate
    dropped: int = 0
    #: datagrams dropped because a blackout was on
    blacked_out: int = 0
    #: extra copies scheduled by the duplication rate
    duplicated: int = 0
    #: datagrams held back to be overtaken
    reordered: int = 0
    #: datagrams dropped because the delay queue was full (count or bytes): policy
    #: ``drop-newest``, as a router with a full buffer does
    overflowed: int = 0


@attrs.define
class UdpStats:
    """Counters of a :class:`UdpFaultProxy`."""

    #: clients to target, and target to clients
    up: UdpDirectionStats = attrs.Factory(UdpDirectionStats)
    down: UdpDirectionStats = attrs.Factory(UdpDirectionStats)
    #: client addresses seen (each gets its own upstream socket)
    clients: int = 0
    #: datagrams from a new client address refused because ``max_clients`` were open
    #: (policy ``refuse-new``)
    refused_clients: int = 0
    #: client addresses forgotten after ``idle_timeout`` without traffic
    expired_clients: int = 0


class _UdpClient:
    __slots__ = ("addr", "scope", "sock")

    def __init__(self, addr: Any, sock: socket.socket) -> None:
        self.addr = addr
        self.sock = sock
        self.scope = trio.CancelScope()


class UdpFaultProxy:
    """A UDP proxy that drops, delays, reorders and duplicates datagrams and can black
    out; get one from :func:`open_udp_fault_proxy`.

    Each client address gets its own upstream socket, so the target sees one peer per
    client (as NAT does) and answers reach the right client.  Faults apply in both
    directions (set :attr:`up` and :attr:`down` separately, or both with
    :meth:`set_faults`).  Delayed datagrams wait in one queue bounded by
    ``max_queued`` datagrams and ``max_queued_bytes`` bytes (``drop-newest`` when
    full); clients are bounded by ``max_clients`` (``refuse-new``) and forgotten after
    ``idle_timeout`` seconds of silence.
    """

    def __init__(
        self,
        listener: socket.socket,
        target: tuple[str, int],
        *,
        faults: UdpFaults,
        seed: int,
        max_clients: int,
        max_queued: int,
        max_queued_bytes: int,
        idle_timeout: float,
    ) -> None:
        host, port = listener.getsockname()[:2]
        #: the proxy's address: where clients send instead of the target
        self.address: tuple[str, int] = (host, port)
        #: the proxied address
        self.target = target
        #: faults on datagrams from clients to the target, and back
        self.up = attrs.evolve(faults)
        self.down = attrs.evolve(faults)
        #: counters
        self.stats = UdpStats()
        self._listener = listener
        self._rng_up = random.Random(f"{seed}:up")
        self._rng_down = random.Random(f"{seed}:down")
        self._clients: dict[Any, _UdpClient] = {}
        self._max_clients = max_clients
        self._max_queued = max_queued
        self._max_queued_bytes = max_queued_bytes
        self._idle_timeout = idle_timeout
        # (due, order, socket, data, destination): the delay queue, a heap
        self._queue: list[tuple[float, int, socket.socket, bytes, Any]] = []
        self._queued_bytes = 0
        self._order = itertools.count()
        self._wakeup = trio.Event()
        self._blackout_until = -math.inf
        self._nursery: trio.Nursery | None = None

    @property
    def url(self) -> str:
        """The proxy's address as ``udp://host:port``."""
        return f"udp://{self.address[0]}:{self.address[1]}"

    @property
    def queued(self) -> int:
        """Datagrams waiting in the delay queue."""
        return len(self._queue)

    def set_faults(self, faults: UdpFaults) -> None:
        """Apply ``faults`` to both directions from now on."""
        self.up = attrs.evolve(faults)
        self.down = attrs.evolve(faults)

    def blackout(self, duration: float = math.inf) -> None:
        """Drop every datagram, both directions, for ``duration`` seconds from now (a
        radio shadow, a dead uplink); :meth:`heal` ends it early."""
        self._blackout_until = trio.current_time() + duration

    def heal(self) -> None:
        """End a blackout and clear every fault (datagrams already delayed still
        arrive on time)."""
        self._blackout_until = -math.inf
        self.set_faults(UdpFaults())

    def _pass(
        self,
        faults: UdpFaults,
        rng: random.Random,
        stats: UdpDirectionStats,
        sock: socket.socket,
        data: bytes,
        dest: Any,
    ) -> None:
        stats.received += 1
        now = trio.current_time()
        if now < self._blackout_until:
            stats.blacked_out += 1
            return
        if faults.drop and rng.random() < faults.drop:
            stats.dropped += 1
            return
        copies = 1
        if faults.duplicate and rng.random() < faults.duplicate:
            stats.duplicated += 1
            copies = 2
        for _ in range(copies):
            wait = faults.delay
            if faults.jitter:
                wait = max(0.0, wait + rng.uniform(-faults.jitter, faults.jitter))
            if faults.reorder and rng.random() < faults.reorder:
                stats.reordered += 1
                wait += faults.reorder_by
            if wait <= 0.0 and not self._queue:
                self._send(stats, sock, data, dest)
                continue
            if (
                len(self._queue) >= self._max_queued
                or self._queued_bytes + len(data) > self._max_queued_bytes
            ):
                stats.overflowed += 1
                continue
            heapq.heappush(self._queue, (now + wait, next(self._order), sock, data, dest))
            self._queued_bytes += len(data)
            self._wakeup.set()

    def _send(self, stats: UdpDirectionStats, sock: socket.socket, data: bytes, dest: Any) -> None:
        try:
            sock.sendto(data, dest)  # a UDP send does not block: a full buffer drops
        except (BlockingIOError, OSError):
            return
        stats.forwarded += 1

    async def _deliver(self) -> None:
        queue = self._queue
        while True:
            if not queue:
                self._wakeup = trio.Event()
                await self._wakeup.wait()
                continue
            due = queue[0][0]
            if trio.current_time() < due:
                self._wakeup = trio.Event()
                with trio.move_on_at(due):
                    await self._wakeup.wait()  # an earlier datagram may arrive meanwhile
                continue
            _, _, sock, data, dest = heapq.heappop(queue)
            self._queued_bytes -= len(data)
            stats = self.stats.up if dest == self.target else self.stats.down
            self._send(stats, sock, data, dest)

    async def _serve_clients(self) -> None:
        assert self._nursery is not None
        listener = self._listener
        while True:
            await trio.lowlevel.wait_readable(listener)
            for data, addr in _receive_batch(listener):
                self._from_client(data, addr)

    def _from_client(self, data: bytes, addr: Any) -> None:
        assert self._nursery is not None
        client = self._clients.get(addr)
        if client is None:
            if len(self._clients) >= self._max_clients:
                self.stats.refused_clients += 1
                return
            sock = socket.socket(self._listener.family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.bind((self.address[0], 0))
            client = _UdpClient(addr, sock)
            self._clients[addr] = client
            self.stats.clients += 1
            self._nursery.start_soon(self._serve_upstream, client)
        client.scope.deadline = trio.current_time() + self._idle_timeout
        self._pass(self.up, self._rng_up, self.stats.up, client.sock, data, self.target)

    async def _serve_upstream(self, client: _UdpClient) -> None:
        try:
            with client.scope:
                client.scope.deadline = trio.current_time() + self._idle_timeout
                while True:
                    await trio.lowlevel.wait_readable(client.sock)
                    client.scope.deadline = trio.current_time() + self._idle_timeout
                    for data, _ in _receive_batch(client.sock):
                        self._pass(
                            self.down,
                            self._rng_down,
                            self.stats.down,
                            self._listener,
                            data,
                            client.addr,
                        )
            self.stats.expired_clients += 1
        finally:
            del self._clients[client.addr]
            client.sock.close()


def _receive_batch(sock: socket.socket, limit: int = 64) -> list[tuple[bytes, Any]]:
    """Up to ``limit`` datagrams waiting on non-blocking ``sock`` (ICMP errors
    reported on it, such as port unreachable from a target not listening yet, are
    skipped)."""
    batch = []
    for _ in range(limit):
        try:
            batch.append(sock.recvfrom(65536))
        except BlockingIOError:
            break
        except OSError:
            continue
    return batch


@asynccontextmanager
async def open_udp_fault_proxy(
    target: str | tuple[str, int],
    *,
    faults: UdpFaults | None = None,
    seed: int = 0,
    max_clients: int = 1024,
    max_queued: int = 65536,
    max_queued_bytes: int = 64 * 1024 * 1024,
    idle_timeout: float = 60.0,
) -> AsyncIterator[UdpFaultProxy]:
    """A :class:`UdpFaultProxy` on 127.0.0.1 (a free port) forwarding to ``target``
    (``host:port``, any ``scheme://host:port[/path]`` URL, or an address tuple), with
    ``faults`` in both directions and decisions drawn from generators seeded with
    ``seed``."""
    if isinstance(target, str):
        netloc = target.split("://", 1)[-1].split("/", 1)[0]
        host, _, port = netloc.rpartition(":")
        target = (host.strip("[]"), int(port))
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.setblocking(False)
    listener.bind(("127.0.0.1", 0))
    proxy = UdpFaultProxy(
        listener,
        (target[0], int(target[1])),
        faults=faults or UdpFaults(),
        seed=seed,
        max_clients=max_clients,
        max_queued=max_queued,
        max_queued_bytes=max_queued_bytes,
        idle_timeout=idle_timeout,
    )
    with listener:
        async with trio.open_nursery() as nursery:
            proxy._nursery = nursery
            nursery.start_soon(proxy._serve_clients)
            nursery.start_soon(proxy._deliver)
            try:
                yield proxy
            finally:
                nursery.cancel_scope.cancel()


# -- what streams lost -------------------------------------------------------------------------


@attrs.frozen
class StreamReport:
    """What one subscriber saw of one numbered stream."""

    #: messages sent on the stream, and received by this subscriber (with duplicates)
    sent: int
    received: int
    #: sequence numbers sent but never received
    lost: int
    #: receptions of a sequence number already received
    duplicated: int
    #: receptions of a number lower than one received before (duplicates excluded)
    reordered: int
    #: the longest time without a reception while the stream was running, in seconds
    longest_gap: float


class Ledger:
    """Numbered streams: :meth:`publish` sends ``0, 1, 2, ...`` at a steady rate, each
    :meth:`follow` records what one subscriber receives; :meth:`report` compares them.

    Times come from ``trio.current_time()`` in the test process, so publishers and
    subscribers share one clock.
    """

    def __init__(self) -> None:
        self._sent: dict[str, list[float]] = {}
        self._got: dict[str, list[tuple[int, float]]] = {}
        self._stream_of: dict[str, str] = {}
        self._progress = trio.Event()

    async def publish(
        self, client: Client, subject: str, *, rate: float, count: int | None = None
    ) -> None:
        """Publish ``count`` (or until cancelled) numbered messages on ``subject`` at
        ``rate`` per second, on a fixed schedule (a late send does not shift the next)."""
        times = self._sent.setdefault(subject, [])
        start = trio.current_time()
        n = 0
        while count is None or n < count:
            await trio.sleep_until(start + n / rate)
            seq = len(times)
            await client.publish(subject, str(seq).encode())
            times.append(trio.current_time())
            n += 1

    async def follow(self, name: str, subscription: Subscription, subject: str) -> None:
        """Record every numbered message ``subscription`` receives, as subscriber
        ``name`` of the stream ``subject`` (until cancelled)."""
        got = self._got.setdefault(name, [])
        self._stream_of[name] = subject
        async for msg in subscription:
            if not msg.payload.isdigit():
                continue  # other traffic on the subject (probes) is not the stream's
            got.append((int(msg.payload), trio.current_time()))
            self._progress.set()
            self._progress = trio.Event()

    async def settle(self, names: list[str], *, patience: float = 2.0) -> None:
        """After the publishers stopped: wait (at most ``patience`` seconds) until each
        named subscriber has received its stream's last message, or give up on the rest."""
        with trio.move_on_after(patience):
            for name in names:
                last = len(self._sent.get(self._stream_of[name], ())) - 1
                while not any(seq == last for seq, _ in self._got.get(name, ())):
                    await self._progress.wait()

    def report(self, name: str) -> StreamReport:
        """What subscriber ``name`` lost, got twice or out of order, and its longest
        silence between its first reception and the stream's last send."""
        sent = self._sent.get(self._stream_of[name], [])
        got = self._got.get(name, [])
        seen: set[int] = set()
        duplicated = reordered = 0
        high = -1
        for seq, _ in got:
            if seq in seen:
                duplicated += 1
                continue
            seen.add(seq)
            if seq < high:
                reordered += 1
            high = max(high, seq)
        times = [t for _, t in got]
        if sent and times:
            edges = [*times, max(times[-1], sent[-1])]
            gap = max(b - a for a, b in itertools.pairwise(edges))
        else:
            gap = math.inf
        return StreamReport(
            sent=len(sent),
            received=len(got),
            lost=len(set(range(len(sent))) - seen),
            duplicated=duplicated,
            reordered=reordered,
            longest_gap=gap,
        )
