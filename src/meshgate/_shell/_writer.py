"""How the shell writes: straight to a socket from the task that produced the output,
once per scheduling round (or per ``flush_window``), with a writer task per connection
only for what a socket does not take at once; and back-pressure from routes and
gateways to the publishers that fill them.

:class:`Writer` owns every :class:`ConnHandle` and all of its state: nothing else sets
a handle's fields.  It decides nothing about routing.
"""

from __future__ import annotations

__all__ = ["CLOSE_GRACE", "ConnHandle", "Writer"]

import logging
import os
from typing import TYPE_CHECKING

import trio

from .._node import Connection, ConnState, PeerConnection

if TYPE_CHECKING:
    from .._node import NodeCore
    from ..config import GatewayConfig

log = logging.getLogger("meshgate.gateway")

#: how long a closing connection may take to flush its final error frame
CLOSE_GRACE = 1.0


def _peer_address(stream: trio.abc.Stream) -> tuple[str, int] | None:
    """The remote (ip, port) of a TCP stream, under TLS or WebSocket layers too."""
    for _ in range(4):
        sock = getattr(stream, "socket", None)
        if sock is not None:
            try:
                addr = sock.getpeername()
            except OSError:
                return None
            return (str(addr[0]), int(addr[1])) if isinstance(addr, tuple) else None
        inner = getattr(stream, "transport_stream", None) or getattr(stream, "stream", None)
        if inner is None:
            return None
        stream = inner
    return None


class ConnHandle:
    """The shell's side of one connection: its stream, cancel scope and writer state.

    Output is written straight from the task that produced it when the writer is idle
    and the stream is a plain socket (``fd``): one non-blocking ``write`` per batch of
    input, no task switch.  What the socket does not take at once (``backlog``), and
    everything for other streams, goes to the connection's writer task.  Only the
    :class:`Writer` sets these fields."""

    __slots__ = (
        "backlog",
        "closed",
        "conn",
        "deferred",
        "drained",
        "fd",
        "idle",
        "nursery",
        "peer",
        "scope",
        "stream",
        "wake",
        "writing",
    )

    def __init__(self, conn: Connection, stream: trio.abc.Stream) -> None:
        self.conn = conn
        self.stream = stream
        self.wake = trio.Event()
        self.scope: trio.CancelScope | None = None
        #: routes and gateways only: set (and replaced) after every write, and for good
        #: when the connection ends, so that publishers waiting for the link wake up
        self.drained: trio.Event | None = trio.Event() if isinstance(conn, PeerConnection) else None
        self.closed = False
        #: the peer's (ip, port), if the transport has one
        self.peer = _peer_address(stream)
        #: the socket's file descriptor for direct writes; -1: always via the writer task
        self.fd = stream.socket.fileno() if type(stream) is trio.SocketStream else -1
        #: nothing is being written (no writer task yet, or it waits with nothing in
        #: hand): a direct write keeps the order
        self.idle = False
        #: the writer task has been started (routes, gateways and streams without a
        #: socket at once; plain-socket clients only once a direct write falls short)
        self.writing = False
        #: the connection's nursery, for starting the writer task
        self.nursery: trio.Nursery | None = None
        #: bytes a direct write left over, for the writer task (sent before anything newer)
        self.backlog: memoryview | None = None
        #: waiting for the end of the scheduling round or the next flush window
        self.deferred = False


class Writer:
    """The write side of a node's connections: handles, scheduling, coalescing,
    writer tasks and back-pressure.

    A connection's life here: :meth:`open` (a handle), :meth:`start` (its nursery is
    up), :meth:`schedule` and :meth:`closing` as the core asks (the driver's sink),
    :meth:`stop` (its reader is done), :meth:`release` (it is gone).  Run
    :meth:`run_round_flusher` and :meth:`run_window_flusher` in the node's nursery."""

    def __init__(self, config: GatewayConfig, core: NodeCore) -> None:
        #: the node's configuration (replaced by the node on reconfigure)
        self.config = config
        self._core = core
        #: routes, gateways and the backbone whose writer is in a send (back-pressure)
        self._busy_links: set[ConnHandle] = set()
        #: connections whose output waits for the end of this scheduling round, and
        #: clients whose output waits for the next flush window; the flushers' wake-ups
        self._round: list[ConnHandle] = []
        self._round_due = trio.Event()
        self._windowed: list[ConnHandle] = []
        self._window_due = trio.Event()
        #: every open connection's handle, by connection id
        self._handles: dict[int, ConnHandle] = {}

    # -- a connection's life ------------------------------------------------------------------

    def open(self, conn: Connection, stream: trio.abc.Stream) -> ConnHandle:
        """A handle for a connection the core just opened on ``stream``."""
        h = ConnHandle(conn, stream)
        conn.shell = h
        self._handles[conn.id] = h
        return h

    def start(self, h: ConnHandle, nursery: trio.Nursery) -> None:
        """``h``'s nursery is up (its reader runs in it): writes may begin."""
        h.scope = nursery.cancel_scope
        h.nursery = nursery
        if h.fd < 0 or h.drained is not None:
            self._wake(h)  # a writer task from the start
        else:
            h.idle = True  # direct writes; a writer task only once one falls short

    @staticmethod
    def end(h: ConnHandle) -> None:
        """The peer ended its stream: end the connection (its nursery)."""
        assert h.scope is not None
        h.scope.cancel()

    @staticmethod
    def stop(h: ConnHandle) -> None:
        """``h``'s reader is done: its nursery takes no new writer task from here on."""
        h.closed = True

    def release(self, h: ConnHandle) -> None:
        """``h``'s connection is gone: nobody waits for it, nothing refers to it."""
        h.closed = True
        if h.drained is not None:
            h.drained.set()  # nobody waits for a link that is gone
        h.conn.shell = None
        self._handles.pop(h.conn.id, None)

    def peer_address(self, conn_id: int) -> tuple[str, int] | None:
        """The remote (ip, port) of open connection ``conn_id``, if its transport has one."""
        h = self._handles.get(conn_id)
        return h.peer if h is not None else None

    # -- what the core asks (the driver's sink) -----------------------------------------------

    def schedule(self, writable: tuple[Connection, ...]) -> None:
        """After a call into the core: each connection with new output is written at the
        end of this scheduling round (directly, by the round flusher), at the next flush
        window (a client, with ``flush_window``), or by its writer task (busy, or not a
        plain socket)."""
        window = self.config.flush_window
        for c in writable:
            h = c.shell
            if h is None or h.deferred:
                continue
            if window and h.drained is None:  # a client, with a flush window
                h.deferred = True
                self._windowed.append(h)
                if len(self._windowed) == 1:
                    self._window_due.set()
            elif h.idle and h.fd >= 0:
                h.deferred = True
                self._round.append(h)
                if len(self._round) == 1:
                    self._round_due.set()
            else:
                self._wake(h)

    def closing(self, conns: tuple[Connection, ...]) -> None:
        """The core closed these connections: flush what they hold (the error frame),
        within ``CLOSE_GRACE``."""
        deadline = trio.current_time() + CLOSE_GRACE
        for c in conns:
            h = c.shell
            if h is not None:
                self._wake(h)
                if h.scope is not None:
                    h.scope.deadline = min(h.scope.deadline, deadline)

    # -- back-pressure ------------------------------------------------------------------------

    def busy_links(self) -> list[tuple[ConnHandle, int]] | None:
        """The routes, outbound gateways and backbone whose writer is busy, with the
        bytes each holds, before a batch.  Only those can be congested: an idle link's
        output is taken as soon as the batch ends, so on most reads this costs nothing."""
        busy = self._busy_links
        if not busy:
            return None
        core = self._core
        return [(h, core.pending_bytes(h.conn)) for h in busy]

    def congested(self, before: list[tuple[ConnHandle, int]]) -> list[ConnHandle] | None:
        """Routes and gateways that the last batch of input added to and that now hold
        more than ``max_pending_bytes``: only the connection that sent that batch waits
        for them (back-pressure); nothing else on the node does.  (A link whose writer
        is busy is not listed again in ``Effects.writable``, so growth is what tells.)"""
        core = self._core
        limit = self.config.max_pending_bytes
        out: list[ConnHandle] | None = None
        for h, held in before:
            pending = core.pending_bytes(h.conn)
            if pending > limit and pending > held and not h.closed:
                if out is None:
                    out = []
                out.append(h)
        return out

    async def wait_drained(self, links: list[ConnHandle]) -> None:
        """Back-pressure: routes and gateways are never dropped for being slow; the
        publishers whose messages wait for them pause until they drain or go away (a
        stuck link is closed after ``write_deadline``)."""
        core = self._core
        limit = self.config.max_pending_bytes
        for link in links:
            while not link.closed and core.pending_bytes(link.conn) > limit:
                assert link.drained is not None
                await link.drained.wait()

    # -- writing ------------------------------------------------------------------------------

    @staticmethod
    def _drained_now(h: ConnHandle) -> None:
        """A route's or gateway's output went out: wake the publishers waiting for it."""
        assert h.drained is not None
        h.drained.set()
        h.drained = trio.Event()

    def _wake(self, h: ConnHandle) -> None:
        """Give ``h``'s writer task work, starting it the first time."""
        if h.closed:
            return
        if not h.writing:
            h.writing = True
            assert h.nursery is not None
            h.nursery.start_soon(self._writer, h)
        h.wake.set()

    def _write_direct(self, h: ConnHandle) -> None:
        """Write ``h``'s output now, from the task that produced it (its writer is idle,
        its stream a plain socket): one non-blocking write; the writer task gets
        whatever the socket does not take, and any error (its send raises it again)."""
        data = self._core.take_output(h.conn)
        try:
            n = os.write(h.fd, data)
        except OSError:  # full (EAGAIN) or broken: the writer task takes over
            n = 0
        if n < len(data):
            h.backlog = memoryview(data)[n:]
            h.idle = False
            self._wake(h)
            if h.drained is not None:
                self._busy_links.add(h)
        elif h.drained is not None:
            self._drained_now(h)

    async def run_round_flusher(self) -> None:
        """Write the output of every reader that ran in this scheduling round, one write
        per connection: it runs after all of them (trio runs the tasks woken by one I/O
        poll as one batch), so what several batches of input produced for a connection
        goes out together, without a task switch per connection."""
        while True:
            await self._round_due.wait()
            self._round_due = trio.Event()
            due, self._round = self._round, []
            self._flush(due)

    async def run_window_flusher(self) -> None:
        """``flush_window``: write the clients' output at the next multiple of the window
        (on the node's clock) after the first of it was produced, all in one go."""
        while True:
            await self._window_due.wait()
            self._window_due = trio.Event()
            window = self.config.flush_window
            if window:
                await trio.sleep_until((trio.current_time() // window + 1) * window)
            due, self._windowed = self._windowed, []
            self._flush(due)

    def _flush(self, due: list[ConnHandle]) -> None:
        core = self._core
        for h in due:
            h.deferred = False
            if h.closed or not core.has_output(h.conn):
                continue
            if h.idle and h.fd >= 0:
                self._write_direct(h)
            else:
                self._wake(h)

    async def _writer(self, h: ConnHandle) -> None:
        """Write what direct writes left over and whatever the core queued, coalesced per
        wake-up.  A client that falls behind meets its slow-consumer policy in the core;
        a route or gateway write is bounded by ``write_deadline`` and wakes the
        publishers waiting for the link."""
        core = self._core
        conn = h.conn
        stream = h.stream
        peer = h.drained is not None
        while True:
            # direct writes may go ahead only while nothing older waits to be sent
            h.idle = h.backlog is None
            await h.wake.wait()
            h.idle = False
            h.wake = trio.Event()
            data: bytes | bytearray | memoryview | None = h.backlog
            h.backlog = None
            if core.has_output(conn):
                out = core.take_output(conn)
                data = out if data is None else bytes(data) + out
            if data:
                try:
                    if not peer:
                        await stream.send_all(data)
                    else:
                        self._busy_links.add(h)
                        try:
                            with trio.move_on_after(self.config.write_deadline) as deadline:
                                await stream.send_all(data)
                        finally:
                            self._busy_links.discard(h)
                        if deadline.cancelled_caught:
                            log.warning(
                                "connection %d: a write took longer than write_deadline=%ss;"
                                " closing",
                                conn.id,
                                self.config.write_deadline,
                            )
                            break
                        self._drained_now(h)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
            if conn.state >= ConnState.CLOSING and not core.has_output(conn):
                await self._end_gently(stream)
                break
        assert h.scope is not None
        h.scope.cancel()

    @staticmethod
    async def _end_gently(stream: trio.abc.Stream) -> None:
        """After the last frame of a closing connection: end our side of a TCP stream
        and let the reader drain the peer's until it ends too (it then cancels the
        connection), for at most ``CLOSE_GRACE``.  Closing with unread input would send
        a reset instead, breaking the peer's writes and maybe losing our error frame."""
        if not isinstance(stream, trio.abc.HalfCloseableStream):
            return
        try:
            await stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        await trio.sleep(CLOSE_GRACE)  # the reader cancels this at the peer's end of stream
