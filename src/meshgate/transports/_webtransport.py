"""WebTransport for browsers (``webtransport://host:port/path``), with the ``quic``
extra (aioquic).

HTTP/3 over the same QUIC stack as ``quic://``: a :class:`~meshgate.transports.QuicEndpoint`
on one UDP socket whose handler for ALPN ``h3`` (:class:`WebTransportHandler`) runs
aioquic's ``H3Connection(enable_webtransport=True)``.  A browser opens a session with
an extended CONNECT (``:protocol webtransport``) on the listener's path; any other
request, path or method gets a 404 (or 429 for a second session on one connection)
and is counted.  The session's first bidirectional stream carries the meshgate
protocol exactly as TCP does, handed to the node as a :class:`trio.abc.Stream`
(:class:`WebTransportStream`); keyed state goes as WebTransport datagrams (the
session's quarter stream ID, then the same ``MSG`` frame with ``kseq`` that a
``quic://`` datagram carries).  Datagrams from the browser are ignored and counted
(``datagrams_ignored``); nothing is read before the session is accepted; streams per
connection, unread bytes, connections and handshakes are bounded by the endpoint's
:class:`~meshgate.transports.QuicLimits`.

Browsers dial it with ``new WebTransport("https://host:port/path",
{serverCertificateHashes})``; ``clients/js/meshgate.js`` speaks the protocol on it.
"""

from __future__ import annotations

__all__ = [
    "ALPN_H3",
    "WebTransportHandler",
    "WebTransportStats",
    "WebTransportStream",
    "WebTransportTransport",
]

import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from .._errors import MeshgateError
from ._base import Listener, Transport
from ._quic import QuicConnectionHandler, QuicEndpoint, QuicLimits, QuicPeer, ReliableStream

#: the ALPN of HTTP/3
ALPN_H3 = "h3"
#: unread bytes one WebTransport stream may hold before its connection is closed
_MAX_UNREAD = 4 * 1024 * 1024


@attrs.define
class WebTransportStats:
    """Counters of one ``webtransport://`` listener (beside its endpoint's
    :class:`~meshgate.transports.QuicStats`)."""

    #: sessions accepted
    sessions: int = 0
    #: requests refused: not an extended CONNECT for webtransport on the listener's path
    requests_refused: int = 0
    #: CONNECTs refused because the connection already has a session
    sessions_refused: int = 0
    #: WebTransport streams ignored: not the session's first bidirectional stream,
    #: or data before the session was accepted
    streams_ignored: int = 0
    #: connections closed for holding more than the unread limit on the protocol stream
    floods: int = 0


def _quarter_id(session_id: int) -> bytes:
    """The session's quarter stream ID as a QUIC variable-length integer (RFC 9297)."""
    from aioquic.buffer import encode_uint_var

    return bytes(encode_uint_var(session_id // 4))


class WebTransportStream(ReliableStream):
    """The meshgate protocol's bidirectional WebTransport stream, as a
    :class:`trio.abc.Stream`, with the session's datagram lane
    (:meth:`send_datagram`, :attr:`max_datagram_payload`)."""

    gone_text = "the WebTransport session is gone"

    def __init__(self, peer: QuicPeer, stream_id: int, session_id: int) -> None:
        super().__init__(peer, stream_id)
        #: the session's stream (its CONNECT stream), and its datagrams' prefix
        self.session_id = session_id
        self.prefix = _quarter_id(session_id)

    # -- fed by the handler ---------------------------------------------------------------------

    def feed(self, data: bytes, end: bool) -> bool:
        """Bytes from the browser (``end``: it finished the stream); False if the
        stream now holds more unread bytes than allowed (the caller closes)."""
        return self.received(data, end) <= _MAX_UNREAD

    def gone(self) -> None:
        """The connection or the session ended."""
        self.ended()

    # -- the datagram lane ------------------------------------------------------------------------

    @property
    def max_datagram_payload(self) -> int:
        """The largest datagram payload that fits the path after the session prefix."""
        return max(0, self.peer.max_datagram_payload - len(self.prefix))

    def send_datagram(self, data: bytes) -> bool:
        """Queue one unreliable WebTransport datagram of this session; False if it was
        dropped (the connection's datagram queue is full, or it is gone)."""
        return self.queue_datagram(self.prefix + data)

    async def send_eof(self) -> None:
        """End our side of the stream."""
        peer = self.peer
        if not peer.done:
            peer.send_stream_data(self.stream_id, b"", end_stream=True)
            peer.transmit()
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self.peer.close(0, "closed")
            self.gone()
        await trio.lowlevel.checkpoint()


class WebTransportHandler(QuicConnectionHandler):
    """ALPN ``h3`` on a :class:`~meshgate.transports.QuicEndpoint`: HTTP/3 with
    WebTransport; one session per connection on ``path``, whose first bidirectional
    stream runs ``serve``."""

    def __init__(
        self,
        peer: QuicPeer,
        serve: Callable[[trio.abc.Stream], Awaitable[None]],
        path: str,
        stats: WebTransportStats,
    ) -> None:
        super().__init__(peer)
        from aioquic.h3.connection import H3Connection

        self.h3 = H3Connection(peer.quic, enable_webtransport=True)
        self.path = path.encode()
        self.stats = stats
        self._serve = serve
        #: the accepted session (its CONNECT stream ID), and its protocol stream
        self.session_id: int | None = None
        self.stream: WebTransportStream | None = None
        peer.transmit()  # the HTTP/3 control streams and SETTINGS

    # -- QUIC events to HTTP/3 --------------------------------------------------------------------

    def stream_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        from aioquic.quic.events import StreamDataReceived

        self._h3(StreamDataReceived(data=data, end_stream=end_stream, stream_id=stream_id))

    def stream_reset(self, stream_id: int) -> None:
        if self.stream is not None and stream_id in (self.stream.stream_id, self.session_id):
            self.peer.close(0, "session stream reset")

    def datagram(self, data: bytes) -> None:
        from aioquic.quic.events import DatagramFrameReceived

        self._h3(DatagramFrameReceived(data=data))

    def event(self, event: Any) -> None:
        self._h3(event)

    def closed(self) -> None:
        if self.stream is not None:
            self.stream.gone()

    def _h3(self, event: Any) -> None:
        from aioquic.h3.events import (
            DatagramReceived,
            HeadersReceived,
            WebTransportStreamDataReceived,
        )

        try:
            h3_events: list[Any] = self.h3.handle_event(event)
            for e in h3_events:
                t = type(e)
                if t is WebTransportStreamDataReceived:
                    self._stream_data(e.stream_id, e.session_id, e.data, e.stream_ended)
                elif t is DatagramReceived:
                    self.peer.stats.datagrams_ignored += 1  # none go to the node
                elif t is HeadersReceived:
                    self._request(e.stream_id, dict(e.headers))
        except Exception:  # a broken HTTP/3 peer: only its connection goes
            self.peer.stats.packets_malformed += 1
            self.peer.close(0x101, "HTTP/3 error")  # H3_GENERAL_PROTOCOL_ERROR
        self.peer.transmit()

    def _request(self, stream_id: int, headers: dict[bytes, bytes]) -> None:
        if (
            headers.get(b":method") != b"CONNECT"
            or headers.get(b":protocol") != b"webtransport"
            or headers.get(b":path", b"").split(b"?", 1)[0] != self.path
        ):
            self.stats.requests_refused += 1
            self.h3.send_headers(stream_id, [(b":status", b"404")], end_stream=True)
            return
        if self.session_id is not None:
            self.stats.sessions_refused += 1
            self.h3.send_headers(stream_id, [(b":status", b"429")], end_stream=True)
            return
        self.session_id = stream_id
        self.stats.sessions += 1
        self.h3.send_headers(
            stream_id, [(b":status", b"200"), (b"sec-webtransport-http3-draft", b"draft02")]
        )

    def _stream_data(self, stream_id: int, session_id: int, data: bytes, end: bool) -> None:
        stream = self.stream
        if stream is None:
            if session_id != self.session_id or stream_id % 4 != 0:
                self.stats.streams_ignored += 1  # no session yet, or not client-bidi
                return
            stream = self.stream = WebTransportStream(self.peer, stream_id, session_id)
            self.peer.nursery.start_soon(self._run, stream)
        elif stream_id != stream.stream_id:
            self.stats.streams_ignored += 1
            return
        if not stream.feed(data, end):
            self.stats.floods += 1
            self.peer.close(0, "too much unread data")

    async def _run(self, stream: WebTransportStream) -> None:
        try:
            await self._serve(stream)
        finally:
            self.peer.close(0, "done")


def _handler_factory(
    serve: Callable[[trio.abc.Stream], Awaitable[None]], path: str, stats: WebTransportStats
) -> Callable[[QuicPeer], QuicConnectionHandler]:
    def factory(peer: QuicPeer) -> QuicConnectionHandler:
        return WebTransportHandler(peer, serve, path, stats)

    return factory


class WebTransportTransport(Transport):
    """``webtransport://host:port/path`` via aioquic (install ``meshgate[quic]``);
    see the module docstring.  A listener needs the node's certificate and key files
    (``GatewayConfig.tls_cert_file``/``tls_key_file``, TOML ``[tls]``); a browser that
    pins it with ``serverCertificateHashes`` needs an ECDSA certificate valid for at
    most 14 days."""

    #: the gateway passes ``cert_files=(cert_file, key_file)`` to :meth:`serve`
    needs_cert_files = True

    def __init__(self, limits: QuicLimits | None = None) -> None:
        self.limits = limits or QuicLimits()
        #: each serving endpoint by its bound URL (the node shows their counters)
        self.endpoints: dict[str, QuicEndpoint] = {}
        #: each listener's WebTransport counters by its bound URL
        self.stats: dict[str, WebTransportStats] = {}

    async def listen(
        self, url: str, *, ssl_context: ssl.SSLContext | None = None, reuse_port: bool = False
    ) -> tuple[Listener, str]:
        """Not available: sessions need the endpoint's tasks; use :meth:`serve`."""
        raise MeshgateError("webtransport:// cannot hand out a bare listener; use serve")

    async def connect(
        self, url: str, *, ssl_context: ssl.SSLContext | None = None
    ) -> trio.abc.Stream:
        """Not available: webtransport:// is for browsers; Python clients dial quic://."""
        raise MeshgateError("webtransport:// is for browsers; a Python client dials quic://")

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
        """Serve WebTransport sessions at ``url`` (``webtransport://host:port/path``;
        the path defaults to ``/``) on one UDP socket; each session's protocol stream
        runs ``handler``.  ``cert_files``: the node's certificate chain and key (PEM)."""
        try:
            from aioquic.quic.configuration import QuicConfiguration
        except ImportError:
            raise MeshgateError("webtransport:// needs aioquic: install meshgate[quic]") from None
        if reuse_port:
            raise MeshgateError("webtransport:// listeners do not support reuse_port")
        if cert_files is None:
            raise MeshgateError("a webtransport:// listener needs tls cert_file and key_file")
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        if parts.scheme != "webtransport" or parts.hostname is None or parts.port is None:
            raise MeshgateError(f"{url!r}: write webtransport://host:port/path")
        host, path = parts.hostname, parts.path or "/"
        limits = limits or self.limits
        cfg = QuicConfiguration(
            is_client=False,
            alpn_protocols=[ALPN_H3],
            max_datagram_frame_size=65536,
            idle_timeout=limits.idle_timeout,
            max_stream_data=1024 * 1024,
            max_data=4 * 1024 * 1024,
        )
        cfg.load_cert_chain(cert_files[0], cert_files[1])
        infos = await trio.socket.getaddrinfo(host, parts.port, type=trio.socket.SOCK_DGRAM)
        family, type_, proto, _, addr = infos[0]
        sock = trio.socket.socket(family, type_, proto)
        with sock:
            await sock.bind(addr)
            stats = WebTransportStats()
            endpoint = QuicEndpoint(
                sock, cfg, {ALPN_H3: _handler_factory(handler, path, stats)}, limits=limits
            )
            shown = f"[{host}]" if ":" in host else host
            bound = f"webtransport://{shown}:{sock.getsockname()[1]}{path}"
            self.endpoints[bound] = endpoint
            self.stats[bound] = stats
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(endpoint.run)
                    task_status.started(bound)
            finally:
                self.endpoints.pop(bound, None)
                self.stats.pop(bound, None)
