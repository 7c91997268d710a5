"""QUIC (``quic://host:port``), with the ``quic`` extra (aioquic).

One trio UDP socket per listener drives aioquic's sans-IO
:class:`aioquic.quic.connection.QuicConnection` objects (:class:`QuicEndpoint`).
Connections are told apart by connection ID; a new connection must first prove
its address with a stateless retry token (a spoofed flood of Initial packets
costs the node one Retry packet each and no state); at most
:attr:`QuicLimits.max_handshakes` handshakes are in flight and
:attr:`QuicLimits.max_connections` connections are open (more are dropped and
counted); a connection idle for :attr:`QuicLimits.idle_timeout` seconds is gone;
a peer may open at most :attr:`QuicLimits.max_streams` streams.  Every refusal
and drop is a counter of :class:`QuicStats` (shown by the node's ``/varz`` under
``quic``).

The meshgate protocol (ALPN :data:`ALPN_MESHGATE`, ``meshgate/1``) runs on ONE
reliable bidirectional stream, the first the client opens (stream 0), handed to
the node as a :class:`trio.abc.Stream` (:class:`QuicStream`), so everything that
works over TCP works unchanged.  The stream also carries the connection's
unreliable lane: :meth:`QuicStream.send_datagram` and
:attr:`QuicStream.max_datagram_payload` (the node), :meth:`QuicStream.receive_datagram`
(the client).  Datagrams a client sends to the node are ignored and counted
(``datagrams_ignored``): the protocol has no client-to-node datagrams, and before
authentication nothing is read at all.

Extension point (for other protocols on the same QUIC stack, e.g. WebTransport
over HTTP/3 with ALPN ``h3``): a :class:`QuicEndpoint` is built with
``handlers``, a map from ALPN to a factory ``factory(peer) -> QuicConnectionHandler``.
When a connection's handshake completes, the endpoint picks the factory for the
ALPN the two sides negotiated and from then on calls the handler's hooks for that
connection, from the endpoint's receive task (they must not block):

* :meth:`QuicConnectionHandler.stream_data` for data on any stream,
* :meth:`QuicConnectionHandler.stream_reset` when the peer resets one,
* :meth:`QuicConnectionHandler.datagram` for every DATAGRAM frame,
* :meth:`QuicConnectionHandler.event` for any other aioquic event (an HTTP/3 layer
  wants them all: pass each to ``H3Connection.handle_event``),
* :meth:`QuicConnectionHandler.closed` once, when the connection is gone.

The handler acts through its :class:`QuicPeer`: ``peer.send_stream_data(stream_id,
data, end_stream)`` (counted for back-pressure; prefer it to ``peer.quic``'s own),
``peer.send_datagram(data)`` (False, and counted in ``datagrams_dropped``, when the
connection holds more than ``max_datagram_bytes`` of datagrams unsent),
``peer.max_datagram_payload``
(the largest datagram that fits a packet on the path), ``peer.datagram_room()`` (the
datagram bytes that go out in the next packet: hand no more, keep the rest fresh) and
``peer.notify_datagram_room(owner, callback)`` (called once when that opens again),
``peer.transmit()`` after
queueing anything (the connection's task sends it), ``await peer.wait_writable(limit)``
for back-pressure (until at most ``limit`` bytes wait to be sent), ``peer.nursery`` to
run per-connection tasks (cancelled when the connection ends), ``peer.close_soon(linger)``
(close once what is queued has left) and ``peer.close()``; ``peer.quic`` is the aioquic
connection itself (``get_next_available_stream_id``, or an
``H3Connection(peer.quic, enable_webtransport=True)`` built on it: give it every
:meth:`QuicConnectionHandler.event`, stream and datagram event, then call
``peer.transmit()``).  :class:`QuicStream` turns one stream of a connection into a
:class:`trio.abc.Stream` (feed it from ``stream_data``) that the node's
``serve(stream)`` can run, as ``meshgate/1`` does.

An endpoint for another ALPN, on its own UDP port::

    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind(("0.0.0.0", 4433))
    endpoint = QuicEndpoint(sock, server_configuration, {"h3": MyH3Handler}, limits=limits)
    await nursery.start(endpoint.run)

(``server_configuration`` an aioquic ``QuicConfiguration(is_client=False,
alpn_protocols=["h3"], max_datagram_frame_size=65536)`` with the node's certificate
loaded; :meth:`QuicTransport.serve` builds the ``meshgate/1`` one the same way.)
"""

from __future__ import annotations

__all__ = [
    "ALPN_MESHGATE",
    "QuicConnectionHandler",
    "QuicEndpoint",
    "QuicLimits",
    "QuicPeer",
    "QuicStats",
    "QuicStream",
    "QuicTransport",
    "ReliableStream",
]

import logging
import math
import os
import ssl
import warnings
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import trio

from .._errors import MeshgateError
from ._base import Listener, Transport, split_url

#: the ALPN of the meshgate protocol over QUIC
ALPN_MESHGATE = "meshgate/1"
#: bytes a QUIC packet spends around a DATAGRAM frame's payload (short header with a
#: 20-byte connection ID, 4-byte packet number, 16-byte AEAD tag, frame type and
#: length), with room to spare
_DATAGRAM_OVERHEAD = 64
#: the largest UDP payload read (anything larger is truncated by the kernel: dropped)
_MAX_UDP = 65535
#: the smallest Initial packet a client may send (RFC 9000 14.1)
_MIN_INITIAL = 1200
#: seconds a client waits for the handshake
_CONNECT_TIMEOUT = 10.0

log = logging.getLogger("meshgate.quic")


def _require_aioquic() -> None:
    try:
        import aioquic  # noqa: F401
    except ImportError:
        raise MeshgateError("quic:// needs aioquic: install meshgate[quic]") from None


@attrs.define
class QuicLimits:
    """What one QUIC listener allows (see the module docstring)."""

    #: connections open at once (more Initials are dropped, ``connections_refused``)
    max_connections: int = 10_000
    #: connections whose handshake has not completed (``handshakes_refused``)
    max_handshakes: int = 256
    #: streams a peer may open on one connection; the next one closes it
    #: (``streams_refused``)
    max_streams: int = 16
    #: seconds without a packet before a connection is gone
    idle_timeout: float = 30.0
    #: seconds a client has after its handshake to open the protocol's stream
    #: (``stream_timeouts``)
    stream_timeout: float = 10.0
    #: unread stream bytes one connection may hold; more closes it (``floods``)
    max_buffered: int = 4 * 1024 * 1024
    #: datagram bytes queued for sending on one connection past which further
    #: datagrams are dropped (``datagrams_dropped``); stream data does not count
    max_datagram_bytes: int = 64 * 1024
    #: datagrams received and not yet read (the client side); the oldest is dropped
    max_datagrams_received: int = 256
    #: validate new clients' addresses with a stateless Retry first
    retry: bool = True


@attrs.define
class QuicStats:
    """Counters of one QUIC endpoint."""

    packets_in: int = 0
    packets_out: int = 0
    #: packets that are not QUIC (no parsable header), or truncated
    packets_malformed: int = 0
    #: packets for no known connection that cannot start one (too short, not Initial)
    packets_unknown: int = 0
    #: Retry packets sent (address validation) and Initials with a bad token
    retries_sent: int = 0
    retry_tokens_invalid: int = 0
    version_negotiations: int = 0
    handshakes_refused: int = 0
    connections_refused: int = 0
    connections_opened: int = 0
    #: connections refused for an ALPN no handler serves
    alpn_refused: int = 0
    streams_refused: int = 0
    #: connections closed for opening no protocol stream within ``stream_timeout``
    stream_timeouts: int = 0
    #: connections closed for holding more than ``max_buffered`` unread bytes
    floods: int = 0
    #: packets of a known connection from a new address (connection migration,
    #: NAT rebinding; aioquic validates the new path before it sends there)
    address_changes: int = 0
    #: datagrams from peers that their protocol ignores (meshgate/1: all of them)
    datagrams_ignored: int = 0
    datagrams_sent: int = 0
    #: datagrams not sent: the connection's datagram queue was full
    datagrams_dropped: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain mapping (for ``/varz``)."""
        return attrs.asdict(self)


class QuicConnectionHandler:
    """Per-connection protocol hooks, chosen by ALPN (see the module docstring).
    The defaults ignore everything; :meth:`datagram` counts what it ignores."""

    def __init__(self, peer: QuicPeer) -> None:
        self.peer = peer

    def stream_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        """Data arrived on ``stream_id`` (``end_stream``: the peer finished it)."""

    def stream_reset(self, stream_id: int) -> None:
        """The peer reset ``stream_id``."""

    def datagram(self, data: bytes) -> None:
        """A DATAGRAM frame arrived."""
        self.peer.stats.datagrams_ignored += 1

    def event(self, event: Any) -> None:
        """Any other aioquic event of this connection (after the handshake)."""

    def closed(self) -> None:
        """The connection is gone (called once)."""


class QuicPeer:
    """One QUIC connection as a protocol handler sees it."""

    def __init__(
        self, endpoint: _EndpointBase, quic: Any, addr: tuple[Any, ...], nursery: trio.Nursery
    ) -> None:
        #: the aioquic ``QuicConnection``
        self.quic = quic
        #: the peer's current address
        self.address = addr
        #: the endpoint's counters
        self.stats = endpoint.stats
        #: tasks of this connection (cancelled when it ends)
        self.nursery = nursery
        self.alpn: str | None = None
        self.handler: QuicConnectionHandler | None = None
        self.established = False
        #: closed by this side (its handler hears nothing more)
        self.closing = False
        #: :meth:`close_soon`: (not before, not after), else None
        self.linger: tuple[float, float] | None = None
        self.done = False
        self._endpoint = endpoint
        #: the endpoint's limits
        self.endpoint_limits = endpoint.limits
        self._wake = trio.Event()
        self._progress = trio.Event()
        self._streams: set[int] = set()
        #: the connection IDs the endpoint knows this connection by
        self.cids: set[bytes] = set()
        #: the largest UDP payload this connection sends
        self.max_datagram_size: int = quic.configuration.max_datagram_size
        #: bytes handed to aioquic (stream data and datagrams) and not yet seen leave
        #: in packets: an estimate that bounds what aioquic buffers (datagrams go
        #: before stream data in its packets, so sent bytes pay off datagrams first)
        self.unsent = 0
        #: the datagram bytes among :attr:`unsent` (datagrams go first in packets)
        self.datagram_unsent = 0
        #: who waits for :meth:`datagram_room` (called once, after a packet left)
        self._room_waiters: dict[object, Callable[[], None]] = {}

    @property
    def max_datagram_payload(self) -> int:
        """The largest datagram payload that fits one packet on this path (aioquic
        sends packets of at most the configuration's ``max_datagram_size``)."""
        return self.max_datagram_size - _DATAGRAM_OVERHEAD

    def send_datagram(self, data: bytes) -> bool:
        """Queue one datagram (call :meth:`transmit` after); False if dropped: the
        connection holds more than ``max_datagram_bytes`` of datagrams unsent (it is
        congested; stream data waiting behind them does not count)."""
        if self.datagram_unsent > self._endpoint.limits.max_datagram_bytes or self.done:
            self.stats.datagrams_dropped += 1
            return False
        self.quic.send_datagram_frame(data)
        self.unsent += len(data)
        self.datagram_unsent += len(data)
        self.stats.datagrams_sent += 1
        return True

    def datagram_room(self) -> int:
        """Datagram bytes the connection sends promptly if handed them now: one packet,
        less the datagrams it was handed and has not yet sent (:attr:`datagram_unsent`;
        aioquic puts datagrams before stream data in a packet).  aioquic's own
        datagram queue is unbounded and sends in order, and what the congestion window
        or the pacer holds back stays in it, so a sender that hands it more than
        this builds a backlog of stale state; a sender that keeps the rest (the latest
        state per key) and waits for :meth:`notify_datagram_room` sends only fresh
        state, as fast as the path takes it."""
        if self.done or self.closing:
            return 0
        return max(0, self.max_datagram_size - self.datagram_unsent)

    def notify_datagram_room(self, owner: object, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, when :meth:`datagram_room` is above 0 after the
        connection sent packets or heard acknowledgements (or when it ends); one
        callback per ``owner``."""
        self._room_waiters[owner] = callback
        self._wake.set()

    def _room_opened(self) -> None:
        waiters = self._room_waiters
        if waiters and (self.done or self.datagram_room() > 0):
            callbacks = list(waiters.values())
            waiters.clear()
            for cb in callbacks:
                cb()

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """Queue ``data`` on ``stream_id`` (call :meth:`transmit` after)."""
        self.quic.send_stream_data(stream_id, data, end_stream=end_stream)
        self.unsent += len(data)

    def transmit(self) -> None:
        """Send what the connection has queued (from its task, soon)."""
        self._wake.set()

    async def wait_writable(self, limit: int) -> None:
        """Wait until the connection holds at most ``limit`` bytes queued and not yet
        sent (back-pressure: aioquic's own buffers are unbounded)."""
        while self.unsent > limit:
            if self.done:
                raise trio.BrokenResourceError("the QUIC connection is gone")
            await self._progress.wait()
        await trio.lowlevel.checkpoint()

    def close_soon(self, linger: float, cap: float = 1.0) -> None:
        """Close the connection once what is queued has left in packets, but not
        before ``linger`` seconds (the peer may close first) nor after ``cap``."""
        if self.linger is None:
            now = trio.current_time()
            self.linger = (now + linger, now + max(cap, linger))
            self.transmit()

    def close(self, error_code: int = 0, reason: str = "") -> None:
        """Close the connection now (a CONNECTION_CLOSE is sent; what is queued and not
        yet sent is lost: :meth:`close_soon` waits for it)."""
        if not self.done and not self.closing:
            self.closing = True
            self.quic.close(error_code=error_code, reason_phrase=reason)
            self.transmit()

    def _note_stream(self, stream_id: int) -> bool:
        """A stream the peer uses; False if it passes ``max_streams`` (closed)."""
        streams = self._streams
        if stream_id in streams:
            return True
        if len(streams) >= self._endpoint.limits.max_streams:
            self.stats.streams_refused += 1
            self.close(0x4, "too many streams")  # STREAM_LIMIT_ERROR
            return False
        streams.add(stream_id)
        return True


class _EndpointBase:
    """What a server endpoint and a client connection share: the UDP socket, the
    per-connection task (timers, sending) and event dispatch."""

    def __init__(self, sock: trio.socket.SocketType, limits: QuicLimits) -> None:
        self.sock = sock
        self.limits = limits
        self.stats = QuicStats()

    def _factory(self, alpn: str | None) -> Callable[[QuicPeer], QuicConnectionHandler] | None:
        raise NotImplementedError

    def _forget(self, peer: QuicPeer) -> None:
        """``peer`` is gone: drop every reference to it."""

    def _dispatch(self, peer: QuicPeer) -> None:
        """Hand the connection's events to its handler."""
        from aioquic.quic import events as ev

        quic = peer.quic
        while (e := quic.next_event()) is not None:
            t = type(e)
            h = peer.handler
            if t is ev.StreamDataReceived:
                if h is not None and not peer.closing and peer._note_stream(e.stream_id):
                    h.stream_data(e.stream_id, e.data, e.end_stream)
            elif t is ev.DatagramFrameReceived:
                if h is not None and not peer.closing:
                    h.datagram(e.data)
                else:
                    self.stats.datagrams_ignored += 1
            elif t is ev.HandshakeCompleted:
                self._established(peer, e.alpn_protocol)
            elif t is ev.ConnectionIdIssued:
                self._cid_issued(peer, e.connection_id)
            elif t is ev.ConnectionIdRetired:
                self._cid_retired(e.connection_id)
            elif t is ev.ConnectionTerminated:
                self._terminated(peer)
                return
            elif t is ev.StreamReset:
                if h is not None:
                    h.stream_reset(e.stream_id)
            elif h is not None:
                h.event(e)

    def _established(self, peer: QuicPeer, alpn: str | None) -> None:
        peer.established = True
        peer.alpn = alpn
        factory = self._factory(alpn)
        if factory is None:
            self.stats.alpn_refused += 1
            peer.close(0x178, "no application protocol")  # crypto error: no_application_protocol
            return
        peer.handler = factory(peer)

    def _cid_issued(self, peer: QuicPeer, cid: bytes) -> None:
        pass

    def _cid_retired(self, cid: bytes) -> None:
        pass

    def _terminated(self, peer: QuicPeer) -> None:
        if peer.done:
            return
        peer.done = True
        peer._wake.set()
        peer._progress.set()
        peer._room_opened()
        self._forget(peer)
        if peer.handler is not None:
            peer.handler.closed()
        peer.nursery.cancel_scope.cancel()

    async def _transmit(self, peer: QuicPeer) -> None:
        now = trio.current_time()
        sock = self.sock
        for data, addr in peer.quic.datagrams_to_send(now=now):
            peer.unsent = max(0, peer.unsent - len(data))
            peer.datagram_unsent = max(0, peer.datagram_unsent - len(data))
            self.stats.packets_out += 1
            try:
                await sock.sendto(data, addr)
            except OSError:
                pass  # unreachable, buffer full: QUIC retransmits what mattered

    async def _drive(self, peer: QuicPeer) -> None:
        """The connection's task: its timer, and sending whatever it queued."""
        quic = peer.quic
        try:
            while not peer.done:
                await self._transmit(peer)
                progress, peer._progress = peer._progress, trio.Event()
                progress.set()
                peer._room_opened()
                wake_at = math.inf
                linger = peer.linger
                if linger is not None and not peer.closing:
                    now = trio.current_time()
                    if now >= linger[1] or (peer.unsent == 0 and now >= linger[0]):
                        peer.close(0, "closed")
                        continue  # send the CONNECTION_CLOSE
                    wake_at = linger[0] if peer.unsent == 0 else linger[1]
                timer = quic.get_timer()
                if timer is not None:
                    wake_at = min(wake_at, timer)
                with trio.move_on_at(wake_at):
                    await peer._wake.wait()
                peer._wake = trio.Event()
                if timer is not None and trio.current_time() >= timer:
                    quic.handle_timer(now=trio.current_time())
                    self._dispatch(peer)
        finally:
            # a connection whose task ends (the endpoint stops) is gone too
            if not peer.done:
                with trio.CancelScope(shield=True):
                    quic.close(reason_phrase="endpoint closing")
                    with trio.move_on_after(0.1):
                        await self._transmit(peer)
                self._terminated(peer)

    def _feed(self, peer: QuicPeer, data: bytes, addr: tuple[Any, ...]) -> None:
        if addr != peer.address:
            self.stats.address_changes += 1  # aioquic validates the new path
            peer.address = addr
        peer.quic.receive_datagram(data, addr, now=trio.current_time())
        self._dispatch(peer)
        peer._wake.set()


class QuicEndpoint(_EndpointBase):
    """A QUIC server on one UDP socket: connections by connection ID, address
    validation, bounded handshakes and connections, protocol handlers by ALPN."""

    def __init__(
        self,
        sock: trio.socket.SocketType,
        configuration: Any,
        handlers: Mapping[str, Callable[[QuicPeer], QuicConnectionHandler]],
        *,
        limits: QuicLimits | None = None,
    ) -> None:
        super().__init__(sock, limits or QuicLimits())
        from aioquic.quic.retry import QuicRetryTokenHandler

        self.configuration = configuration
        self.handlers = dict(handlers)
        self._by_cid: dict[bytes, QuicPeer] = {}
        self._peers: set[QuicPeer] = set()
        self._handshaking = 0
        self._idle = trio.Event()
        self._retry = QuicRetryTokenHandler() if self.limits.retry else None

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._peers)

    def table_sizes(self) -> dict[str, int]:
        """How much per-connection state the endpoint holds (each bounded)."""
        return {
            "connections": len(self._peers),
            "connection_ids": len(self._by_cid),
            "handshakes": self._handshaking,
        }

    def close_connections(self, reason: str = "closed by the node") -> int:
        """Close every open connection now (shedding load, or a test breaking them);
        how many.  Clients that reconnect come back with a new handshake."""
        peers = list(self._peers)
        for peer in peers:
            peer.close(0, reason)
        return len(peers)

    async def wait_no_connections(self) -> None:
        """Wait until no connection is open (all closed, timed out or refused)."""
        while self._peers:
            self._idle = trio.Event()
            await self._idle.wait()
        await trio.lowlevel.checkpoint()

    def _factory(self, alpn: str | None) -> Callable[[QuicPeer], QuicConnectionHandler] | None:
        return self.handlers.get(alpn) if alpn is not None else None

    def _established(self, peer: QuicPeer, alpn: str | None) -> None:
        self._handshaking -= 1
        super()._established(peer, alpn)

    def _cid_issued(self, peer: QuicPeer, cid: bytes) -> None:
        self._by_cid[cid] = peer
        peer.cids.add(cid)

    def _cid_retired(self, cid: bytes) -> None:
        peer = self._by_cid.pop(cid, None)
        if peer is not None:
            peer.cids.discard(cid)

    def _forget(self, peer: QuicPeer) -> None:
        if peer in self._peers:
            self._peers.discard(peer)
            if not peer.established:
                self._handshaking -= 1
            if not self._peers:
                self._idle.set()
        by_cid = self._by_cid
        for cid in peer.cids:
            if by_cid.get(cid) is peer:
                del by_cid[cid]
        peer.cids.clear()

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Receive and dispatch packets until cancelled."""
        from aioquic.buffer import Buffer  # type: ignore[attr-defined]
        from aioquic.quic.packet import (
            QuicPacketType,
            encode_quic_retry,
            encode_quic_version_negotiation,
            pull_quic_header,
        )

        cfg = self.configuration
        stats = self.stats
        sock = self.sock
        cid_length = cfg.connection_id_length
        versions = cfg.supported_versions
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                try:
                    data, addr = await sock.recvfrom(_MAX_UDP)
                except OSError:  # e.g. ICMP port unreachable reported on Linux
                    continue
                stats.packets_in += 1
                try:
                    header = pull_quic_header(Buffer(data=data), host_cid_length=cid_length)
                except Exception:
                    stats.packets_malformed += 1
                    continue
                peer = self._by_cid.get(header.destination_cid)
                if peer is not None:
                    try:
                        self._feed(peer, data, addr)
                    except Exception:  # aioquic refused it: the connection decides
                        stats.packets_malformed += 1
                    continue
                if header.version is not None and header.version not in versions:
                    if len(data) >= _MIN_INITIAL:  # no amplification for small probes
                        stats.version_negotiations += 1
                        await self._send(
                            encode_quic_version_negotiation(
                                source_cid=header.destination_cid,
                                destination_cid=header.source_cid,
                                supported_versions=versions,
                            ),
                            addr,
                        )
                    else:
                        stats.packets_unknown += 1
                    continue
                if header.packet_type != QuicPacketType.INITIAL or len(data) < _MIN_INITIAL:
                    stats.packets_unknown += 1
                    continue
                now = trio.current_time()
                original_cid = header.destination_cid
                retry_cid: bytes | None = None
                if self._retry is not None:
                    if not header.token:
                        if self._handshaking >= self.limits.max_handshakes:
                            stats.handshakes_refused += 1
                            continue
                        source_cid = os.urandom(8)
                        assert header.version is not None
                        token = self._retry.create_token(
                            address=addr,
                            original_destination_connection_id=header.destination_cid,
                            retry_source_connection_id=source_cid,
                            now=now,
                        )
                        stats.retries_sent += 1
                        await self._send(
                            encode_quic_retry(
                                version=header.version,
                                source_cid=source_cid,
                                destination_cid=header.source_cid,
                                original_destination_cid=header.destination_cid,
                                retry_token=token,
                            ),
                            addr,
                        )
                        continue
                    try:
                        original_cid = self._retry.validate_token(
                            address=addr,
                            destination_cid=header.destination_cid,
                            token=header.token,
                            now=now,
                        )
                    except Exception:
                        stats.retry_tokens_invalid += 1
                        continue
                    retry_cid = header.destination_cid
                if len(self._peers) >= self.limits.max_connections:
                    stats.connections_refused += 1
                    continue
                if self._handshaking >= self.limits.max_handshakes:
                    stats.handshakes_refused += 1
                    continue
                await self._accept(
                    nursery, data, addr, header.destination_cid, original_cid, retry_cid
                )

    async def _send(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.stats.packets_out += 1
        try:
            await self.sock.sendto(data, addr)
        except OSError:
            pass

    async def _accept(
        self,
        nursery: trio.Nursery,
        data: bytes,
        addr: tuple[Any, ...],
        dcid: bytes,
        original_cid: bytes,
        retry_cid: bytes | None,
    ) -> None:
        from aioquic.quic.connection import QuicConnection

        quic = QuicConnection(
            configuration=self.configuration,
            original_destination_connection_id=original_cid,
            retry_source_connection_id=retry_cid,
        )
        conn_nursery: trio.Nursery = await nursery.start(_nursery_task)
        peer = QuicPeer(self, quic, addr, conn_nursery)
        self._peers.add(peer)
        self._handshaking += 1
        self.stats.connections_opened += 1
        self._by_cid[dcid] = peer
        self._by_cid[quic.host_cid] = peer
        peer.cids.update((dcid, quic.host_cid))
        conn_nursery.start_soon(self._drive, peer)
        try:
            self._feed(peer, data, addr)
        except Exception:
            self.stats.packets_malformed += 1
            self._terminated(peer)


async def _nursery_task(task_status: trio.TaskStatus[trio.Nursery]) -> None:
    """A nursery for one connection's tasks, handed out (cancelled when it ends)."""
    async with trio.open_nursery() as nursery:
        task_status.started(nursery)
        await trio.sleep_forever()


class ReliableStream(trio.abc.Stream):
    """One reliable bidirectional stream of a QUIC connection as a
    :class:`trio.abc.Stream`, with the connection's datagram lane: what the meshgate
    protocol's own stream (:class:`QuicStream`) and a WebTransport session's stream
    share.  The connection's handler feeds it (:meth:`received`)."""

    #: unacknowledged bytes one ``send_all`` lets the stream hold before it waits
    send_buffer = 256 * 1024
    #: what ``send_all`` says once the connection is gone
    gone_text = "the QUIC connection is gone"

    def __init__(self, peer: QuicPeer, stream_id: int) -> None:
        #: the QUIC connection, and the stream this runs on
        self.peer = peer
        self.stream_id = stream_id
        self._in: deque[bytes] = deque()
        self._in_bytes = 0
        self._eof = False
        self._readable = trio.Event()
        self._closed = False

    def received(self, data: bytes, end: bool) -> int:
        """``data`` arrived (``end``: the peer finished the stream); the unread bytes
        the stream now holds (the caller decides when that is a flood)."""
        if data:
            self._in.append(data)
            self._in_bytes += len(data)
        if end:
            self._eof = True
        self._readable.set()
        return self._in_bytes

    def ended(self) -> None:
        """The connection (or the session) ended: readers see the end of the stream."""
        self._eof = True
        self._readable.set()

    def datagram_room(self) -> int:
        """Datagram bytes the path sends promptly if handed them now
        (:meth:`QuicPeer.datagram_room`)."""
        return self.peer.datagram_room()

    def notify_datagram_room(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, when :meth:`datagram_room` opens (or the connection
        ends)."""
        self.peer.notify_datagram_room(self, callback)

    def queue_datagram(self, data: bytes) -> bool:
        """Queue one datagram of the connection as it is; False if it was dropped
        (queue full, gone)."""
        peer = self.peer
        if peer.send_datagram(data):
            peer.transmit()
            return True
        return False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise trio.ClosedResourceError("stream is closed")
        peer = self.peer
        if peer.done:
            raise trio.BrokenResourceError(self.gone_text)
        if data:
            peer.send_stream_data(self.stream_id, bytes(data))
            peer.transmit()
        await peer.wait_writable(self.send_buffer)

    async def wait_send_all_might_not_block(self) -> None:
        await self.peer.wait_writable(self.send_buffer)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._closed:
            raise trio.ClosedResourceError("stream is closed")
        while not self._in:
            if self._eof or self.peer.done:
                await trio.lowlevel.checkpoint()
                return b""
            self._readable = trio.Event()
            await self._readable.wait()
        await trio.lowlevel.checkpoint()
        data = self._in.popleft()
        if max_bytes is not None and len(data) > max_bytes:
            self._in.appendleft(data[max_bytes:])
            data = data[:max_bytes]
        self._in_bytes -= len(data)
        return data


class QuicStream(ReliableStream):
    """The meshgate protocol's one reliable bidirectional stream of a QUIC connection,
    as a :class:`trio.abc.Stream`, with the connection's unreliable datagram lane."""

    def __init__(self, peer: QuicPeer, stream_id: int) -> None:
        super().__init__(peer, stream_id)
        self._datagrams: deque[bytes] = deque()
        self._datagram_ready = trio.Event()
        #: datagrams received and dropped because nobody read them in time
        self.datagrams_dropped = 0
        #: the client side's connection (:meth:`migrate`); None on the node
        self.endpoint: _ClientEndpoint | None = None
        self._eof_sent = False
        #: seconds :meth:`aclose` leaves the peer to close the connection first
        self.linger = 0.0

    @property
    def local_address(self) -> tuple[Any, ...] | None:
        """Client side: the local UDP address the connection sends from."""
        return None if self.endpoint is None else tuple(self.endpoint.sock.getsockname())

    async def migrate(self) -> None:
        """Client side: move the connection to a new local UDP port, as a NAT
        rebinding does; QUIC connection migration keeps it (and the session)."""
        if self.endpoint is None:
            raise RuntimeError("only a client's stream can migrate")
        await self.endpoint.rebind()

    # -- fed by the handler ---------------------------------------------------------------------

    def feed_data(self, data: bytes, end: bool) -> None:
        """The handler's ``stream_data`` for this stream: ``data`` arrived (``end``:
        the peer finished the stream).  Past ``max_buffered`` unread bytes the
        connection is closed as a flood (counted)."""
        if self.received(data, end) > self.peer.endpoint_limits.max_buffered:
            self.peer.stats.floods += 1
            self.peer.close(0x0, "too much unread data")

    def feed_datagram(self, data: bytes) -> None:
        """A datagram for :meth:`receive_datagram` (past ``max_datagrams_received``
        unread ones, the oldest is dropped and counted in :attr:`datagrams_dropped`)."""
        dgrams = self._datagrams
        if len(dgrams) >= self.peer.endpoint_limits.max_datagrams_received:
            dgrams.popleft()
            self.datagrams_dropped += 1
        dgrams.append(data)
        self._datagram_ready.set()

    def connection_lost(self) -> None:
        """The connection is gone: readers see the end of the stream."""
        self.ended()
        self._datagram_ready.set()

    # -- trio.abc.Stream ----------------------------------------------------------------------

    @property
    def max_datagram_payload(self) -> int:
        """The largest datagram payload that fits the path (0: no datagrams)."""
        return self.peer.max_datagram_payload

    def send_datagram(self, data: bytes) -> bool:
        """Queue one unreliable datagram; False if it was dropped (queue full, gone)."""
        return self.queue_datagram(data)

    async def receive_datagram(self) -> bytes:
        """The next datagram from the peer (b"": the connection is gone)."""
        while not self._datagrams:
            if self.peer.done or self._closed:
                await trio.lowlevel.checkpoint()
                return b""
            self._datagram_ready = trio.Event()
            await self._datagram_ready.wait()
        await trio.lowlevel.checkpoint()
        return self._datagrams.popleft()

    async def send_eof(self) -> None:
        """End our side of the stream (the connection stays until the peer ends)."""
        self._end()
        await trio.lowlevel.checkpoint()

    def _end(self) -> None:
        peer = self.peer
        if not self._eof_sent and not peer.done and not peer.closing:
            self._eof_sent = True
            peer.send_stream_data(self.stream_id, b"", end_stream=True)
            peer.transmit()

    async def aclose(self) -> None:
        """End the stream and close the connection once what was written has left
        (the node waits ``linger`` seconds for the client to close first, so that its
        last frames, an error say, are read)."""
        if not self._closed:
            self._closed = True
            self._end()
            self.peer.close_soon(self.linger)
            self.connection_lost()
        await trio.lowlevel.checkpoint()


class _MeshgateHandler(QuicConnectionHandler):
    """ALPN ``meshgate/1`` on the node: the client's first bidirectional stream is the
    protocol's stream, run by ``serve``; other streams and all datagrams are ignored."""

    def __init__(self, peer: QuicPeer, serve: Callable[[trio.abc.Stream], Awaitable[None]]) -> None:
        super().__init__(peer)
        self._serve = serve
        self.stream: QuicStream | None = None
        peer.nursery.start_soon(self._deadline)

    def stream_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        stream = self.stream
        if stream is None:
            if stream_id % 4 != 0:  # not client-initiated bidirectional: ignored
                return
            stream = self.stream = QuicStream(self.peer, stream_id)
            stream.linger = 1.0
            self.peer.nursery.start_soon(self._run, stream)
        elif stream_id != stream.stream_id:
            return  # one protocol stream only (the peer's stream count is bounded)
        stream.feed_data(data, end_stream)

    async def _deadline(self) -> None:
        """A client that opens no protocol stream in time holds no connection."""
        await trio.sleep(self.peer.endpoint_limits.stream_timeout)
        if self.stream is None:
            self.peer.stats.stream_timeouts += 1
            self.peer.close(0, "no stream opened")

    async def _run(self, stream: QuicStream) -> None:
        try:
            await self._serve(stream)
        finally:
            await stream.aclose()

    def closed(self) -> None:
        if self.stream is not None:
            self.stream.connection_lost()


def _server_configuration(
    cert_file: str, key_file: str, alpns: list[str], limits: QuicLimits
) -> Any:
    from aioquic.quic.configuration import QuicConfiguration

    cfg = QuicConfiguration(
        is_client=False,
        alpn_protocols=alpns,
        max_datagram_frame_size=65536,
        idle_timeout=limits.idle_timeout,
        max_stream_data=1024 * 1024,
        max_data=4 * 1024 * 1024,
    )
    cfg.load_cert_chain(cert_file, key_file)
    return cfg


def _client_configuration(ssl_context: ssl.SSLContext | None, host: str, alpn: str) -> Any:
    """An aioquic client configuration from an :class:`ssl.SSLContext`: its CA
    certificates verify the node (``CERT_NONE``: no verification)."""
    from aioquic.quic.configuration import QuicConfiguration

    cfg = QuicConfiguration(
        is_client=True,
        alpn_protocols=[alpn],
        server_name=host,
        max_datagram_frame_size=65536,
        idle_timeout=30.0,
    )
    if ssl_context is not None:
        if ssl_context.verify_mode == ssl.CERT_NONE:
            cfg.verify_mode = ssl.CERT_NONE
        cfg.cadata = _cadata(ssl_context)
    return cfg


#: the PEM CA bundle made from each client context (parsed once per context)
_CADATA: weakref.WeakKeyDictionary[ssl.SSLContext, tuple[tuple[bytes, ...], bytes | None]] = (
    weakref.WeakKeyDictionary()
)


def _cadata(ctx: ssl.SSLContext) -> bytes | None:
    """``ctx``'s CA certificates as one PEM bundle for aioquic (None: none)."""
    ders = tuple(ctx.get_ca_certs(binary_form=True))
    cached = _CADATA.get(ctx)
    if cached is not None and cached[0] == ders:
        return cached[1]
    cas = _usable_certs(list(ders))
    pem = "".join(ssl.DER_cert_to_PEM_cert(c) for c in cas).encode() if cas else None
    _CADATA[ctx] = (ders, pem)
    return pem


def _usable_certs(certs: list[bytes]) -> list[bytes]:
    """The CA certificates aioquic (cryptography) can load without complaint: a system
    store may hold old ones that cryptography warns about (a non-positive serial)."""
    from cryptography import x509

    out = []
    for der in certs:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                x509.load_der_x509_certificate(der)
            except Exception:
                continue
        out.append(der)
    return out


async def _udp_socket(host: str, port: int) -> trio.socket.SocketType:
    infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_DGRAM)
    family, type_, proto, _, addr = infos[0]
    sock = trio.socket.socket(family, type_, proto)
    try:
        await sock.bind(addr)
    except BaseException:
        sock.close()
        raise
    return sock


class _ClientEndpoint(_EndpointBase):
    """One client connection on its own UDP socket."""

    def __init__(self, sock: trio.socket.SocketType, alpn: str) -> None:
        super().__init__(sock, QuicLimits())
        self._alpn = alpn
        self.ready = trio.Event()
        self.peer: QuicPeer | None = None

    def _factory(self, alpn: str | None) -> Callable[[QuicPeer], QuicConnectionHandler] | None:
        return _ClientHandler if alpn == self._alpn else None

    def _established(self, peer: QuicPeer, alpn: str | None) -> None:
        super()._established(peer, alpn)
        self.ready.set()

    def _forget(self, peer: QuicPeer) -> None:
        self.ready.set()

    async def receive_loop(self, peer: QuicPeer) -> None:
        while not peer.done:
            sock = self.sock
            try:
                data, addr = await sock.recvfrom(_MAX_UDP)
            except (OSError, trio.ClosedResourceError):
                if sock.fileno() == -1 and sock is self.sock:
                    return  # closed and not replaced
                await trio.lowlevel.checkpoint()
                continue
            self.stats.packets_in += 1
            try:
                self._feed(peer, data, addr)
            except Exception:
                self.stats.packets_malformed += 1

    async def rebind(self) -> None:
        """Move to a new UDP socket (a new source port), as a NAT rebinding would:
        QUIC connection migration keeps the connection."""
        old = self.sock
        host = old.getsockname()[0]
        self.sock = await _udp_socket(host, 0)
        old.close()


class _ClientHandler(QuicConnectionHandler):
    def __init__(self, peer: QuicPeer) -> None:
        super().__init__(peer)
        self.stream = QuicStream(peer, peer.quic.get_next_available_stream_id())

    def stream_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        if stream_id == self.stream.stream_id:
            self.stream.feed_data(data, end_stream)

    def datagram(self, data: bytes) -> None:
        self.stream.feed_datagram(data)

    def closed(self) -> None:
        self.stream.connection_lost()


class QuicTransport(Transport):
    """``quic://host:port`` via aioquic (install ``meshgate[quic]``); see the module
    docstring.  A listener needs the node's certificate and key files
    (``GatewayConfig.tls_cert_file``/``tls_key_file``, TOML ``[tls]``)."""

    #: the gateway passes ``cert_files=(cert_file, key_file)`` to :meth:`serve`
    needs_cert_files = True

    def __init__(self, limits: QuicLimits | None = None) -> None:
        self.limits = limits or QuicLimits()
        #: each serving endpoint by its bound URL (the node shows their counters)
        self.endpoints: dict[str, QuicEndpoint] = {}

    async def listen(
        self, url: str, *, ssl_context: ssl.SSLContext | None = None, reuse_port: bool = False
    ) -> tuple[Listener, str]:
        """Not available: QUIC connections need the endpoint's tasks; use :meth:`serve`."""
        raise MeshgateError("quic:// cannot hand out a bare listener; use Transport.serve")

    async def connect(
        self, url: str, *, ssl_context: ssl.SSLContext | None = None
    ) -> trio.abc.Stream:
        """Open a QUIC connection and its protocol stream; ``ssl_context``'s CA
        certificates verify the node (``verify_mode = CERT_NONE``: no verification).

        The connection's tasks (timers, receiving) run as trio system tasks until the
        stream is closed or the connection ends, so the stream can be used like a TCP
        one (reconnecting clients redial with this)."""
        _require_aioquic()
        from aioquic.quic.connection import QuicConnection

        _, host, port = _split(url)
        infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_DGRAM)
        family, _, _, _, addr = infos[0]
        local = "::" if family == trio.socket.AF_INET6 else "0.0.0.0"
        if host in ("127.0.0.1", "localhost", "::1"):
            local = str(addr[0])
        sock = await _udp_socket(local, 0)
        endpoint = _ClientEndpoint(sock, ALPN_MESHGATE)
        quic = QuicConnection(configuration=_client_configuration(ssl_context, host, ALPN_MESHGATE))
        up = trio.Event()

        async def run() -> None:
            try:
                async with trio.open_nursery() as nursery:
                    peer = QuicPeer(endpoint, quic, addr, nursery)
                    endpoint.peer = peer
                    quic.connect(addr, now=trio.current_time())
                    nursery.start_soon(endpoint._drive, peer)
                    nursery.start_soon(endpoint.receive_loop, peer)
                    up.set()
                    await trio.sleep_forever()
            except Exception:  # a system task must not raise; the stream reports the end
                log.exception("QUIC connection to %s failed", url)
            finally:
                endpoint.sock.close()
                endpoint.ready.set()
                if endpoint.peer is not None:
                    endpoint.peer.done = True
                    if isinstance(endpoint.peer.handler, _ClientHandler):
                        endpoint.peer.handler.stream.connection_lost()

        trio.lowlevel.spawn_system_task(run)
        await up.wait()
        peer = endpoint.peer
        assert peer is not None
        with trio.move_on_after(_CONNECT_TIMEOUT):
            await endpoint.ready.wait()
        handler = peer.handler
        if not isinstance(handler, _ClientHandler):
            reason = "no answer" if not endpoint.ready.is_set() else "handshake failed"
            peer.close(0, "giving up")
            peer.nursery.cancel_scope.cancel()
            raise OSError(f"QUIC connection to {url} failed: {reason}")
        stream = handler.stream
        stream.endpoint = endpoint
        return stream

    async def serve(
        self,
        url: str,
        handler: Callable[[trio.abc.Stream], Awaitable[None]],
        *,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
        cert_files: tuple[str, str] | None = None,
        limits: QuicLimits | None = None,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve QUIC at ``url`` on one UDP socket; each connection's protocol stream
        runs ``handler``.  ``cert_files``: the node's certificate chain and key (PEM);
        ``limits``: this listener's (default: the transport's)."""
        _require_aioquic()
        if reuse_port:
            raise MeshgateError("quic:// listeners do not support reuse_port")
        if cert_files is None:
            raise MeshgateError("a quic:// listener needs tls cert_file and key_file")
        _, host, port = _split(url)
        limits = limits or self.limits
        cfg = _server_configuration(cert_files[0], cert_files[1], [ALPN_MESHGATE], limits)
        sock = await _udp_socket(host, port)
        with sock:
            endpoint = QuicEndpoint(
                sock,
                cfg,
                {ALPN_MESHGATE: lambda peer: _MeshgateHandler(peer, handler)},
                limits=limits,
            )
            bound = f"quic://{host}:{sock.getsockname()[1]}"
            self.endpoints[bound] = endpoint
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(endpoint.run)
                    task_status.started(bound)
            finally:
                self.endpoints.pop(bound, None)


def _split(url: str) -> tuple[str, str, int]:
    return split_url(url, "quic")
