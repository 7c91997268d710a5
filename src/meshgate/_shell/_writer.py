"""How the shell writes: straight to a socket from the task that produced the output,
once per scheduling round (or per ``flush_window``), with a writer task per connection
only for what a socket does not take at once; back-pressure from routes and gateways
to the publishers that fill them; and the isolation of a stuck link.

Routes, outbound gateways and the backbone ("links") are never dropped for being slow
while they drain: a publisher whose batch leaves a link holding more than
``max_pending_bytes`` waits for it.  A link that takes nothing for
:data:`STALLED_AFTER` is *stalled*: nobody waits for it any more (local deliveries and
other links carry on), until it takes something again.  A link that takes nothing for
``peer_write_deadline``, or holds more than ``peer_max_pending_bytes``, is stuck: the
core closes it as a slow consumer (:meth:`NodeCore.close_slow_link`) and its dialer
redials it with backoff.

:class:`Writer` owns every :class:`ConnHandle` and all of its state: nothing else sets
a handle's fields.  It decides nothing about routing.
"""

from __future__ import annotations

__all__ = ["CLOSE_GRACE", "STALLED_AFTER", "ConnHandle", "LinkState", "Writer"]

import logging
import os
import select
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import attrs
import trio

from .._node import Connection, ConnState, InboundGateway, OutboundGateway, PeerConnection

if TYPE_CHECKING:
    from .._node import NodeCore
    from ..config import GatewayConfig

log = logging.getLogger("meshgate.gateway")

#: how long a closing connection may take to flush its final error frame
CLOSE_GRACE = 1.0
#: a link that has taken nothing for this many seconds while output waits for it is
#: stalled: publishers no longer wait for it, until it takes something again
STALLED_AFTER = 0.1
#: the largest piece handed at once to a link's stream that is not a plain socket
#: (TLS, WebSocket, memory), so that its progress is seen (one TLS record's worth)
_CHUNK = 16 * 1024


@attrs.frozen
class LinkState:
    """What the writer knows of one route, gateway or backbone connection."""

    #: it has taken nothing for ``STALLED_AFTER`` while output waits: nobody waits for it
    stalled: bool
    #: times it stalled (and publishers went on without it)
    stalls: int
    #: times a link to the same peer (route: the node; gateway: the remote cluster and
    #: direction; backbone: the hub) was closed as a slow consumer, over the node's life
    slow_consumers: int


def _link_key(conn: Connection) -> tuple[str, str]:
    """What a link's slow-consumer closes are counted under: its kind (``route``,
    ``outbound``, ``inbound``, ``backbone``) and its peer (node, remote cluster, hub)."""
    if conn.leaf:
        return "backbone", "hub"
    if isinstance(conn, OutboundGateway):
        return "outbound", conn.expected_cluster
    if isinstance(conn, InboundGateway):
        return "inbound", conn.remote_cluster or ""
    assert isinstance(conn, PeerConnection)
    return "route", conn.peer or ""


def _describe(conn: Connection) -> str:
    """A link as a log line names it: ``route to a1 (connection 5)``."""
    kind, peer = _link_key(conn)
    if kind == "backbone":
        what = f"backbone link to {conn.peer if isinstance(conn, PeerConnection) else None}"
    elif kind == "inbound":
        what = f"gateway from {peer or '?'}"
    else:
        what = f"{'route' if kind == 'route' else 'gateway'} to {peer or '?'}"
    return f"{what} (connection {conn.id})"


def _nothing() -> None:
    return None


def _writable_now(fd: int) -> bool:
    """The socket ``fd`` would take more bytes right now."""
    try:
        return bool(select.select((), (fd,), (), 0)[1])
    except (OSError, ValueError):
        return False


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
        "datagram_room",
        "deferred",
        "drained",
        "fd",
        "idle",
        "in_hand",
        "nursery",
        "peer",
        "progress_at",
        "room_waiting",
        "scope",
        "send_datagram",
        "stalled",
        "stalls",
        "stream",
        "stuck",
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
        #: the transport's unreliable datagram lane (QUIC), else None
        self.send_datagram: Callable[[bytes], bool] | None = getattr(stream, "send_datagram", None)
        #: datagram bytes the transport sends promptly now (None: it takes everything)
        self.datagram_room: Callable[[], int] | None = getattr(stream, "datagram_room", None)
        #: the writer asked the transport to wake it when datagram room opens
        self.room_waiting = False
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
        #: links: bytes the writer took from the core and is writing (at most)
        self.in_hand = 0
        #: links: when the stream last took bytes (or was handed bytes to write)
        self.progress_at = 0.0
        #: links: it took nothing for ``STALLED_AFTER``: publishers do not wait for it
        self.stalled = False
        #: links: times it stalled
        self.stalls = 0
        #: links: why it was closed as a slow consumer (None: it was not)
        self.stuck: str | None = None


class _RoundEnd:
    """Calls :meth:`Writer._end_round` at the end of every scheduling round: a trio
    instrument with one hook (trio calls the hooks an object defines; no base needed)."""

    __slots__ = ("_end_round",)

    def __init__(self, writer: Writer) -> None:
        self._end_round = writer._end_round

    def before_io_wait(self, timeout: float) -> None:
        """The run loop is about to poll for I/O: the round's output goes out first.  (An
        instrument that raises is removed by trio: a bug here is logged, not raised.)"""
        try:
            self._end_round(timeout)
        except Exception:
            log.exception("writing the output of a scheduling round failed")


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
        self._windowed: list[ConnHandle] = []
        self._window_due = trio.Event()
        #: every open connection's handle, by connection id
        self._handles: dict[int, ConnHandle] = {}
        #: links closed as slow consumers, by (kind, peer) (see ``_link_key``)
        self._slow_links: dict[tuple[str, str], int] = {}
        #: acts on the core's effects after the writer called into it (the node's driver)
        self._drain: Callable[[], None] = _nothing

    def attach_driver(self, drain: Callable[[], None]) -> None:
        """The node's driver: ``drain()`` after each call the writer makes into the core."""
        self._drain = drain

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

    @staticmethod
    def closed_stuck(h: ConnHandle) -> bool:
        """``h``'s link was closed as a slow consumer (for its dialer's backoff)."""
        return h.stuck is not None

    def link_state(self, conn: Connection) -> LinkState:
        """The stall state of link ``conn`` and the slow-consumer closes of its peer."""
        h = conn.shell
        slow = self._slow_links.get(_link_key(conn), 0)
        if not isinstance(h, ConnHandle):
            return LinkState(stalled=False, stalls=0, slow_consumers=slow)
        return LinkState(stalled=h.stalled, stalls=h.stalls, slow_consumers=slow)

    def slow_links(self) -> dict[str, int]:
        """Links closed as slow consumers, by kind as nats-server's
        ``slow_consumer_stats`` names them: ``routes``, ``gateways``, ``leafs``."""
        out = {"routes": 0, "gateways": 0, "leafs": 0}
        names = {"route": "routes", "outbound": "gateways", "inbound": "gateways"}
        for (kind, _), n in self._slow_links.items():
            out[names.get(kind, "leafs")] += n
        return out

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

    # -- back-pressure and stuck links --------------------------------------------------------

    def busy_links(self) -> list[tuple[ConnHandle, int]] | None:
        """The routes, gateways and backbone whose writer is busy, with the bytes each
        holds, before a batch.  Only those can be congested: an idle link's output is
        taken as soon as the batch ends, so on most reads this costs nothing."""
        busy = self._busy_links
        if not busy:
            return None
        core = self._core
        return [(h, core.pending_bytes(h.conn)) for h in busy]

    def congested(self, before: list[tuple[ConnHandle, int]]) -> list[ConnHandle] | None:
        """Links that the last batch of input added to and that now hold more than
        ``max_pending_bytes``: only the connection that sent that batch waits for them
        (back-pressure), and only while they drain (not stalled).  One that now holds
        more than ``peer_max_pending_bytes`` (with what its writer has in hand) is
        closed as a slow consumer instead.  (A link whose writer is busy is not listed
        again in ``Effects.writable``, so growth is what tells.)"""
        core = self._core
        cfg = self.config
        limit = cfg.max_pending_bytes
        out: list[ConnHandle] | None = None
        for h, held in before:
            pending = core.pending_bytes(h.conn)
            if pending <= limit or pending <= held or h.closed or h.stuck is not None:
                continue
            bound = cfg.link_max_pending_bytes
            queued = pending + h.in_hand
            if queued > bound:
                self._close_stuck(h, f"{queued} bytes queued, over peer_max_pending_bytes={bound}")
            elif not h.stalled and h.conn.state < ConnState.CLOSING:
                if out is None:
                    out = []
                out.append(h)
        return out

    async def wait_drained(self, links: list[ConnHandle]) -> None:
        """Back-pressure: a publisher whose messages wait for a link pauses until the
        link drains below ``max_pending_bytes``, goes away, or stalls: a link that has
        taken nothing for ``STALLED_AFTER`` holds nobody (it is closed once it has taken
        nothing for ``peer_write_deadline`` or holds ``peer_max_pending_bytes``)."""
        core = self._core
        limit = self.config.max_pending_bytes
        for link in links:
            conn = link.conn
            while (
                not link.closed
                and not link.stalled
                and link.stuck is None
                and conn.state < ConnState.CLOSING
                and core.pending_bytes(conn) > limit
            ):
                assert link.drained is not None
                with trio.move_on_at(link.progress_at + STALLED_AFTER):
                    await link.drained.wait()
                    continue
                self._check_stalled(link)

    @staticmethod
    def _check_stalled(h: ConnHandle) -> None:
        """A publisher waited ``STALLED_AFTER`` for link ``h``: if it took nothing in
        that time (and its socket would take nothing now, so its writer is not merely
        yet to run), it is stalled."""
        if trio.current_time() - h.progress_at < STALLED_AFTER:
            return  # it took something meanwhile
        if h.fd >= 0 and _writable_now(h.fd):
            return  # it would: its writer runs next
        h.stalled = True
        h.stalls += 1
        log.info(
            "%s: took nothing for %ss; publishers go on without it",
            _describe(h.conn),
            STALLED_AFTER,
        )

    def _close_stuck(self, h: ConnHandle, why: str) -> None:
        """Link ``h`` is stuck: counted, logged, and closed by the core as a slow
        consumer (what it holds is dropped; its error frame goes out if it still takes
        it); its dialer redials it with backoff."""
        if h.stuck is not None or h.closed:
            return
        h.stuck = why
        conn = h.conn
        key = _link_key(conn)
        self._slow_links[key] = self._slow_links.get(key, 0) + 1
        log.warning("%s: slow consumer: %s; closing it", _describe(conn), why)
        self._core.close_slow_link(conn, f"slow consumer: {why}")
        self._drain()

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

    def _write_direct(self, h: ConnHandle) -> bool:
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
                h.progress_at = trio.current_time()
                self._busy_links.add(h)
            return True
        if h.drained is not None:
            self._drained_now(h)
            return True
        return False

    async def run_round_flusher(self) -> None:
        """Write the output of every reader that ran in this scheduling round, one write
        per connection, when the round ends: trio runs the tasks woken by one I/O poll
        as one batch and then polls again, and the flush runs just before that poll (a
        trio instrument's ``before_io_wait``), so what several batches of input produced
        for a connection goes out together, without a task switch per connection, and
        without a scheduling round of its own (one task step and one ``epoll_wait`` per
        message less than a flusher task: request/reply latency).  Runs until cancelled."""
        end = _RoundEnd(self)
        trio.lowlevel.add_instrument(cast("trio.abc.Instrument", end))
        try:
            await trio.sleep_forever()
        finally:
            trio.lowlevel.remove_instrument(cast("trio.abc.Instrument", end))

    def _end_round(self, timeout: float) -> None:
        """The scheduling round ended (the run loop is about to poll for I/O, for at most
        ``timeout``): write what its readers produced.  A write that wakes a task (a
        writer task takes over a short write; publishers waiting for a link) makes the
        poll return at once, so that the task runs now, not at the next I/O."""
        due, self._round = self._round, []
        try:
            woke = self._flush(due)
        except BaseException:
            for h in due:  # scheduled again by their next output
                h.deferred = False
            raise
        if woke and timeout > 0:
            trio.lowlevel.current_trio_token().run_sync_soon(_nothing)

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

    def _flush(self, due: list[ConnHandle]) -> bool:
        """Write ``due``'s output; True if that woke a task (see :meth:`_write_direct`)."""
        core = self._core
        woke = False
        for h in due:
            h.deferred = False
            if h.closed or not core.has_output(h.conn):
                continue
            if h.idle and h.fd >= 0:
                woke |= self._write_direct(h)
            else:
                self._wake(h)
                woke = True
        return woke

    async def _writer(self, h: ConnHandle) -> None:
        """Write what direct writes left over and whatever the core queued, coalesced per
        wake-up.  A client that falls behind meets its slow-consumer policy in the core;
        a link that takes nothing for ``peer_write_deadline`` is closed as a slow
        consumer, and every completed link write wakes the publishers waiting for it."""
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
            send_datagram = h.send_datagram
            if send_datagram is not None:
                self._send_datagrams(h, send_datagram)
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
                            took = await self._send_link(h, data)
                        finally:
                            self._busy_links.discard(h)
                        if not took:
                            deadline = self.config.link_write_deadline
                            self._close_stuck(
                                h, f"took nothing for {deadline}s (peer_write_deadline)"
                            )
                            break  # what is in hand cannot be finished: end it now
                        self._drained_now(h)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
            if conn.state >= ConnState.CLOSING and not core.has_output(conn):
                await self._end_gently(stream)
                break
        assert h.scope is not None
        h.scope.cancel()

    def _send_datagrams(self, h: ConnHandle, send_datagram: Callable[[bytes], bool]) -> None:
        """Hand the transport the datagrams it sends promptly now (issue 20): the rest
        stay in the core's datagram lane, where each key's next state replaces its
        queued one, and the transport wakes this writer when room opens."""
        core = self._core
        conn = h.conn
        room_of = h.datagram_room
        if room_of is None or conn.state >= ConnState.CLOSING:
            for d in core.take_datagrams(conn):
                send_datagram(d)
            return
        room = room_of()
        if room > 0:
            for d in core.take_datagrams(conn, room):
                send_datagram(d)
        if core.has_datagrams(conn) and not h.room_waiting:
            h.room_waiting = True
            h.stream.notify_datagram_room(lambda: self._room_opened(h))  # type: ignore[attr-defined]

    def _room_opened(self, h: ConnHandle) -> None:
        h.room_waiting = False
        h.wake.set()

    async def _send_link(self, h: ConnHandle, data: bytes | bytearray | memoryview) -> bool:
        """Write ``data`` to link ``h``, noting each time its stream takes some (a
        plain socket: each non-blocking write; another stream: each ``_CHUNK``); False
        if it took nothing for ``peer_write_deadline`` (stuck: the stream is then
        mid-frame, so nothing more can be written to it)."""
        patience = self.config.link_write_deadline
        now = trio.current_time()
        h.progress_at = now
        view = memoryview(data)
        h.in_hand = len(view)
        fd = h.fd
        with trio.CancelScope(deadline=now + patience) as scope:
            if fd >= 0:
                while view:
                    try:
                        n = os.write(fd, view)
                    except BlockingIOError:
                        await trio.lowlevel.wait_writable(fd)
                        continue
                    except OSError as exc:
                        raise trio.BrokenResourceError(str(exc)) from exc
                    view = view[n:]
                    now = trio.current_time()
                    h.progress_at = now
                    scope.deadline = now + patience
                    h.stalled = False
            else:
                stream = h.stream
                for start in range(0, len(view), _CHUNK):
                    await stream.send_all(view[start : start + _CHUNK])
                    now = trio.current_time()
                    h.progress_at = now
                    scope.deadline = now + patience
                    h.stalled = False
        if not scope.cancelled_caught:
            h.in_hand = 0
            return True
        return False

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
