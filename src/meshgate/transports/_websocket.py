"""WebSocket (``ws://``), with the ``websocket`` extra (trio-websocket)."""

from __future__ import annotations

__all__ = ["WebSocketTransport"]

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing

from .._errors import MeshgateError
from ._base import Listener, Transport, split_url
from ._tcp import shared_tcp_listener


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
    """``ws://host:port[/path]`` and ``wss://`` (over TLS) via trio-websocket (install
    ``meshgate[websocket]``).

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

        scheme, host, port = split_url(url)
        if scheme == "wss" and ssl_context is None:
            raise MeshgateError("a wss:// listener needs an ssl.SSLContext")

        async def on_request(request: Any) -> None:
            try:
                ws = await request.accept()
            except (ConnectionRejected, trio.BrokenResourceError, OSError):
                return
            await handler(_WebSocketStream(ws))

        tcp: list[trio.SocketListener]
        if reuse_port:
            tcp = [await shared_tcp_listener(host, port)]
        else:
            tcp = (await trio.open_tcp_listeners(port, host=host))[:1]
        listeners: list[Any] = [
            trio.SSLListener(t, ssl_context, https_compatible=True) if ssl_context else t
            for t in tcp
        ]
        server = WebSocketServer(on_request, listeners, max_message_size=self.max_message_size)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            bound_scheme = "wss" if ssl_context is not None else "ws"
            task_status.started(f"{bound_scheme}://{host}:{tcp[0].socket.getsockname()[1]}")

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
