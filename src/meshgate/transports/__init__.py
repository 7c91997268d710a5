"""Transports: how bytes reach a node.  Each yields :class:`trio.abc.Stream` objects.

A transport is chosen by URL scheme: ``tcp://host:port``, ``tls://host:port``,
``memory://NAME`` (in-process, no sockets: for test harnesses).  Register your
own with :func:`register_transport`.
"""

from __future__ import annotations

__all__ = [
    "Listener",
    "MemoryTransport",
    "TCPTransport",
    "TLSTransport",
    "Transport",
    "get_transport",
    "open_stream",
    "register_transport",
    "split_url",
]

import abc
import ssl
from urllib.parse import urlsplit

import trio
import trio.testing

from .._errors import MeshgateError

Listener = trio.abc.Listener[trio.abc.Stream]
_HOST_PORT_SCHEMES = frozenset({"tcp", "tls", "ws", "wss"})


def split_url(url: str, default_scheme: str = "tcp") -> tuple[str, str, int]:
    """Split ``scheme://host:port`` (or bare ``host:port``) into its parts.

    Schemes other than tcp/tls/ws/wss name an endpoint instead (``memory://NAME``):
    the name comes back as the host and the port is 0.
    """
    if "://" not in url:
        url = f"{default_scheme}://{url}"
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme not in _HOST_PORT_SCHEMES:
        return scheme, parts.netloc + parts.path, 0
    try:
        port = parts.port
    except ValueError:
        raise MeshgateError(f"bad port in URL {url!r}") from None
    if parts.hostname is None or port is None:
        raise MeshgateError(f"URL {url!r} needs a host and a port")
    return scheme, parts.hostname, port


class Transport(abc.ABC):
    """Listens and connects for one URL scheme."""

    @abc.abstractmethod
    async def listen(
        self, url: str, *, ssl_context: ssl.SSLContext | None = None
    ) -> tuple[Listener, str]:
        """Start listening at ``url``; return the listener and the URL actually bound."""

    @abc.abstractmethod
    async def connect(
        self, url: str, *, ssl_context: ssl.SSLContext | None = None
    ) -> trio.abc.Stream:
        """Open a stream to ``url``."""


class TCPTransport(Transport):
    """Plain TCP (``tcp://``) via trio's socket streams (TCP_NODELAY is on)."""

    async def listen(
        self, url: str, *, ssl_context: ssl.SSLContext | None = None
    ) -> tuple[Listener, str]:
        """Listen on one TCP socket."""
        _, host, port = split_url(url)
        listeners = await trio.open_tcp_listeners(port, host=host)
        listener = listeners[0]
        for extra in listeners[1:]:
            await extra.aclose()
        sockname = listener.socket.getsockname()
        return listener, f"tcp://{sockname[0]}:{sockname[1]}"

    async def connect(
        self, url: str, *, ssl_context: ssl.SSLContext | None = None
    ) -> trio.abc.Stream:
        """Connect over TCP."""
        _, host, port = split_url(url)
        return await trio.open_tcp_stream(host, port)


class TLSTransport(Transport):
    """TLS over TCP (``tls://``) with :class:`trio.SSLStream`."""

    async def listen(
        self, url: str, *, ssl_context: ssl.SSLContext | None = None
    ) -> tuple[Listener, str]:
        """Listen on TCP and wrap accepted streams in TLS (server side)."""
        if ssl_context is None:
            raise MeshgateError("a tls:// listener needs an ssl.SSLContext")
        tcp, bound = await TCPTransport().listen(url)
        listener = trio.SSLListener(tcp, ssl_context, https_compatible=False)
        return listener, "tls://" + bound.removeprefix("tcp://")

    async def connect(
        self, url: str, *, ssl_context: ssl.SSLContext | None = None
    ) -> trio.abc.Stream:
        """Connect over TLS; the default context verifies the server certificate."""
        _, host, port = split_url(url)
        ctx = ssl_context or ssl.create_default_context()
        return await trio.open_ssl_over_tcp_stream(host, port, ssl_context=ctx)


class _MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    def __init__(self, transport: MemoryTransport, name: str) -> None:
        self._transport = transport
        self._name = name
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](16)

    async def accept(self) -> trio.abc.Stream:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise trio.ClosedResourceError("listener is closed") from None

    async def aclose(self) -> None:
        self._transport._listeners.pop(self._name, None)
        self._receive.close()
        await trio.lowlevel.checkpoint()


class MemoryTransport(Transport):
    """An in-process network (``memory://NAME``): no sockets, bounded buffers.

    Streams are :func:`trio.testing.lockstep_stream_pair` halves, so a sender
    waits for its receiver exactly as over a full TCP window.
    """

    def __init__(self) -> None:
        self._listeners: dict[str, _MemoryListener] = {}
        self._counter = 0

    async def listen(
        self, url: str, *, ssl_context: ssl.SSLContext | None = None
    ) -> tuple[Listener, str]:
        """Register a listener under the URL's name (``memory://`` alone picks a fresh one)."""
        _, name, _ = split_url(url)
        if not name:
            self._counter += 1
            name = f"anon-{self._counter}"
        if name in self._listeners:
            raise MeshgateError(f"memory://{name} is already listening")
        listener = self._listeners[name] = _MemoryListener(self, name)
        await trio.lowlevel.checkpoint()
        return listener, f"memory://{name}"

    async def connect(
        self, url: str, *, ssl_context: ssl.SSLContext | None = None
    ) -> trio.abc.Stream:
        """Connect to a registered in-process listener."""
        _, name, _ = split_url(url)
        listener = self._listeners.get(name)
        if listener is None:
            raise OSError(f"nothing listens at memory://{name}")
        ours, theirs = trio.testing.lockstep_stream_pair()
        try:
            await listener._send.send(theirs)
        except trio.ClosedResourceError:
            raise OSError(f"memory://{name} stopped listening") from None
        return ours


_REGISTRY: dict[str, Transport] = {
    "tcp": TCPTransport(),
    "tls": TLSTransport(),
    "memory": MemoryTransport(),
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
    """Connect to ``url`` with the transport registered for its scheme."""
    return await get_transport(url).connect(url, ssl_context=ssl_context)
