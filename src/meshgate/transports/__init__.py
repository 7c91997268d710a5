"""Transports: how bytes reach a node.  Each yields :class:`trio.abc.Stream` objects.

A transport is chosen by URL scheme: ``tcp://host:port``, ``tls://host:port``,
``memory://NAME`` (in-process, no sockets: for test harnesses), ``ws://host:port``
(WebSocket, with the ``websocket`` extra).  Register your
own with :func:`register_transport`.
"""

from __future__ import annotations

__all__ = [
    "Listener",
    "MemoryTransport",
    "TCPTransport",
    "TLSTransport",
    "Transport",
    "WebSocketTransport",
    "connect_stream",
    "get_transport",
    "open_stream",
    "register_transport",
    "split_url",
]

import abc
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
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
        self, url: str, *, ssl_context: ssl.SSLContext | None = None, reuse_port: bool = False
    ) -> tuple[Listener, str]:
        """Start listening at ``url``; return the listener and the URL actually bound.

        ``reuse_port``: share the port with other processes of the same user that
        listen with it too (``SO_REUSEPORT``; the kernel spreads connections over
        them).  Transports without ports raise :class:`MeshgateError` for it."""

    @abc.abstractmethod
    async def connect(
        self, url: str, *, ssl_context: ssl.SSLContext | None = None
    ) -> trio.abc.Stream:
        """Open a stream to ``url``."""

    async def serve(
        self,
        url: str,
        handler: Callable[[trio.abc.Stream], Awaitable[None]],
        *,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept connections at ``url`` and run ``handler(stream)`` for each, until cancelled.

        ``task_status.started`` reports the bound URL.  The default listens with
        :meth:`listen` (``reuse_port`` as there); a transport whose streams need their
        own background tasks (WebSocket) overrides this.  ``handler`` must not raise.
        """
        if reuse_port:
            listener, bound = await self.listen(url, ssl_context=ssl_context, reuse_port=True)
        else:
            listener, bound = await self.listen(url, ssl_context=ssl_context)
        async with listener, trio.open_nursery() as nursery:
            task_status.started(bound)
            while True:
                try:
                    stream = await listener.accept()
                except trio.ClosedResourceError:
                    return
                except OSError:  # e.g. EMFILE: back off, never spin
                    await trio.sleep(0.1)
                    continue
                nursery.start_soon(handler, stream)

    @asynccontextmanager
    async def open(
        self, url: str, *, ssl_context: ssl.SSLContext | None = None
    ) -> AsyncIterator[trio.abc.Stream]:
        """A stream to ``url`` for the duration of the block (closed on exit)."""
        stream = await self.connect(url, ssl_context=ssl_context)
        try:
            yield stream
        finally:
            await trio.aclose_forcefully(stream)


async def _shared_tcp_listener(host: str, port: int) -> trio.SocketListener:
    """A TCP listener with ``SO_REUSEPORT``: processes of the same user that bind the
    same address with it share the port, and the kernel spreads connections over them."""
    if not hasattr(trio.socket, "SO_REUSEPORT"):
        raise MeshgateError("reuse_port needs SO_REUSEPORT, which this platform lacks")
    infos = await trio.socket.getaddrinfo(
        host, port, type=trio.socket.SOCK_STREAM, flags=trio.socket.AI_PASSIVE
    )
    family, type_, proto, _, addr = infos[0]
    sock = trio.socket.socket(family, type_, proto)
    try:
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEPORT, 1)
        await sock.bind(addr)
        sock.listen(4096)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


class TCPTransport(Transport):
    """Plain TCP (``tcp://``) via trio's socket streams (TCP_NODELAY is on)."""

    async def listen(
        self, url: str, *, ssl_context: ssl.SSLContext | None = None, reuse_port: bool = False
    ) -> tuple[Listener, str]:
        """Listen on one TCP socket (``reuse_port``: shared, see :meth:`Transport.listen`)."""
        _, host, port = split_url(url)
        if reuse_port:
            listener = await _shared_tcp_listener(host, port)
        else:
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
        self, url: str, *, ssl_context: ssl.SSLContext | None = None, reuse_port: bool = False
    ) -> tuple[Listener, str]:
        """Listen on TCP and wrap accepted streams in TLS (server side)."""
        if ssl_context is None:
            raise MeshgateError("a tls:// listener needs an ssl.SSLContext")
        tcp, bound = await TCPTransport().listen(url, reuse_port=reuse_port)
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
        self, url: str, *, ssl_context: ssl.SSLContext | None = None, reuse_port: bool = False
    ) -> tuple[Listener, str]:
        """Register a listener under the URL's name (``memory://`` alone picks a fresh one)."""
        if reuse_port:
            raise MeshgateError("memory:// listeners cannot be shared between processes")
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


class _Guard:
    """Raise :class:`trio.BusyResourceError` when two tasks use one direction at once."""

    def __init__(self, message: str) -> None:
        self._message = message
        self._held = False

    def __enter__(self) -> None:
        if self._held:
            raise trio.BusyResourceError(self._message)
        self._held = True

    def __exit__(self, *exc: object) -> None:
        self._held = False


class _WebSocketStream(trio.abc.Stream):
    """A :class:`trio.abc.Stream` over one WebSocket connection: binary messages carry bytes."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._pending = b""
        self._closed = False
        self._send_guard = _Guard("another task is sending on this stream")
        self._receive_guard = _Guard("another task is receiving on this stream")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        from trio_websocket import ConnectionClosed

        with self._send_guard:
            if self._closed:
                raise trio.ClosedResourceError("stream is closed")
            if not data:
                await trio.lowlevel.checkpoint()
                return
            try:
                await self._ws.send_message(bytes(data))
            except ConnectionClosed as exc:
                raise trio.BrokenResourceError("websocket closed") from exc

    async def wait_send_all_might_not_block(self) -> None:
        with self._send_guard:
            if self._closed:
                raise trio.ClosedResourceError("stream is closed")
            await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        from trio_websocket import ConnectionClosed

        with self._receive_guard:
            if self._closed:
                raise trio.ClosedResourceError("stream is closed")
            if max_bytes is not None and max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
            if not self._pending:
                try:
                    msg = await self._ws.get_message()
                except ConnectionClosed:
                    return b""
                # text frames are not part of the protocol; pass them on so the
                # decoder rejects them with a clear error
                self._pending = msg.encode() if isinstance(msg, str) else bytes(msg)
                if not self._pending:
                    return await self.receive_some(max_bytes)
            else:
                await trio.lowlevel.checkpoint()
            n = len(self._pending) if max_bytes is None else max_bytes
            out, self._pending = self._pending[:n], self._pending[n:]
            return out

    async def aclose(self) -> None:
        self._closed = True
        await self._ws.aclose()


class WebSocketTransport(Transport):
    """``ws://host:port[/path]`` via trio-websocket (install ``meshgate[websocket]``).

    Each meshgate frame batch travels as binary WebSocket messages, so browser
    and game clients that only speak WebSocket can connect.
    """

    max_message_size = 16 * 1024 * 1024

    async def listen(
        self, url: str, *, ssl_context: ssl.SSLContext | None = None, reuse_port: bool = False
    ) -> tuple[Listener, str]:
        """Not available: WebSocket connections need background tasks; use :meth:`serve`."""
        raise MeshgateError("ws:// cannot hand out a bare listener; use Transport.serve")

    async def connect(
        self, url: str, *, ssl_context: ssl.SSLContext | None = None
    ) -> trio.abc.Stream:
        """Not available: use :meth:`open`, which owns the connection's background task."""
        raise MeshgateError("ws:// connections need Transport.open (an async context manager)")

    async def serve(
        self,
        url: str,
        handler: Callable[[trio.abc.Stream], Awaitable[None]],
        *,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve WebSocket upgrades at ``url``; each accepted connection runs ``handler``
        (``reuse_port``: the port is shared, see :meth:`Transport.listen`)."""
        from trio_websocket import ConnectionRejected, WebSocketServer

        _, host, port = split_url(url)

        async def on_request(request: Any) -> None:
            try:
                ws = await request.accept()
            except (ConnectionRejected, trio.BrokenResourceError, OSError):
                return
            await handler(_WebSocketStream(ws))

        tcp: list[trio.SocketListener]
        if reuse_port:
            tcp = [await _shared_tcp_listener(host, port)]
        else:
            tcp = (await trio.open_tcp_listeners(port, host=host))[:1]
        listeners: list[Any] = [
            trio.SSLListener(t, ssl_context, https_compatible=True) if ssl_context else t
            for t in tcp
        ]
        server = WebSocketServer(on_request, listeners, max_message_size=self.max_message_size)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            task_status.started(f"ws://{host}:{tcp[0].socket.getsockname()[1]}")

    @asynccontextmanager
    async def open(
        self, url: str, *, ssl_context: ssl.SSLContext | None = None
    ) -> AsyncIterator[trio.abc.Stream]:
        """A WebSocket stream for the duration of the block."""
        from trio_websocket import HandshakeError, open_websocket_url

        ws: Any = None
        try:
            cm = open_websocket_url(url, ssl_context, max_message_size=self.max_message_size)
            async with cm as ws:
                yield _WebSocketStream(ws)
        except HandshakeError as exc:
            raise OSError(f"websocket handshake with {url} failed: {exc}") from exc
        finally:
            # trio-websocket can leave the TCP socket open when the peer closed first;
            # closing it again is harmless, leaking a descriptor is not
            stream = getattr(ws, "_stream", None)
            if stream is not None:
                await trio.aclose_forcefully(stream)


_REGISTRY: dict[str, Transport] = {
    "tcp": TCPTransport(),
    "tls": TLSTransport(),
    "memory": MemoryTransport(),
    "ws": WebSocketTransport(),
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
