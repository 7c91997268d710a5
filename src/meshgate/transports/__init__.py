"""Transports: how bytes reach a node.  Each yields :class:`trio.abc.Stream` objects.

A transport is chosen by URL scheme: ``tcp://host:port``, ``tls://host:port``,
``memory://NAME`` (in-process, no sockets: for test harnesses), ``ws://host:port``
and ``wss://host:port`` (WebSocket, plain or over TLS, with the ``websocket`` extra),
``quic://host:port`` (QUIC with unreliable datagrams, with the ``quic`` extra),
``webtransport://host:port/path`` (WebTransport over HTTP/3 for browsers, served
only, with the ``quic`` extra).
Register your own with :func:`register_transport`.

One private module per transport: ``_tcp.py``, ``_tls.py``, ``_memory.py``,
``_websocket.py``, ``_quic.py``, ``_webtransport.py``; the interface and URL parsing in ``_base.py``.
"""

from __future__ import annotations

__all__ = [
    "Listener",
    "ALPN_MESHGATE",
    "MemoryTransport",
    "QuicConnectionHandler",
    "QuicEndpoint",
    "QuicLimits",
    "QuicPeer",
    "QuicStats",
    "QuicStream",
    "QuicTransport",
    "TCPTransport",
    "TLSTransport",
    "Transport",
    "WebSocketTransport",
    "WebTransportHandler",
    "WebTransportStats",
    "WebTransportStream",
    "WebTransportTransport",
    "connect_stream",
    "get_transport",
    "open_stream",
    "register_transport",
    "split_url",
]

import ssl
from contextlib import AbstractAsyncContextManager

import trio
import trio.testing

from .._errors import MeshgateError
from ._base import Listener, Transport, split_url
from ._memory import MemoryTransport
from ._quic import (
    ALPN_MESHGATE,
    QuicConnectionHandler,
    QuicEndpoint,
    QuicLimits,
    QuicPeer,
    QuicStats,
    QuicStream,
    QuicTransport,
)
from ._tcp import TCPTransport
from ._tls import TLSTransport
from ._websocket import WebSocketTransport
from ._webtransport import (
    WebTransportHandler,
    WebTransportStats,
    WebTransportStream,
    WebTransportTransport,
)

_REGISTRY: dict[str, Transport] = {
    "tcp": TCPTransport(),
    "tls": TLSTransport(),
    "memory": MemoryTransport(),
    "ws": WebSocketTransport(),
    "wss": WebSocketTransport(),
    "quic": QuicTransport(),
    "webtransport": WebTransportTransport(),
}


def register_transport(scheme: str, transport: Transport) -> None:
    """Make ``scheme://`` URLs use ``transport``."""
    if not scheme.isidentifier():
        raise ValueError(f"bad scheme {scheme!r}")
    _REGISTRY[scheme] = transport


def get_transport(url: str) -> Transport:
    """The transport registered for the URL's scheme (bare ``host:port`` is TCP)."""
    scheme = url.split("://", 1)[0] if "://" in url else "tcp"
    try:
        return _REGISTRY[scheme]
    except KeyError:
        raise MeshgateError(f"no transport registered for {scheme}://") from None


async def open_stream(url: str, *, ssl_context: ssl.SSLContext | None = None) -> trio.abc.Stream:
    """Connect to ``url`` with the transport registered for its scheme (plain streams only)."""
    return await get_transport(url).connect(url, ssl_context=ssl_context)


def connect_stream(
    url: str, *, ssl_context: ssl.SSLContext | None = None
) -> AbstractAsyncContextManager[trio.abc.Stream]:
    """A stream to ``url`` for the duration of an ``async with`` block, for every transport."""
    return get_transport(url).open(url, ssl_context=ssl_context)
