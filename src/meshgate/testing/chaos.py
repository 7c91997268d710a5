"""Failure injection for tests of systems built on meshgate.

* :func:`open_node_process` runs a node as its own OS process (``meshgate serve``)
  that you can kill, stop and continue, terminate or send SIGHUP.
* :func:`open_fault_proxy` puts a TCP proxy in front of any port; on command it stalls
  its links (a hung peer or a black-holed flow), slows them, cuts them (orderly close)
  or resets them (TCP RST), simulating partitions one link at a time.
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
    "open_fault_proxy",
    "open_node_process",
    "to_toml",
]

import itertools
import json
import math
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
