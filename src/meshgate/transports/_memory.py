"""In-process streams (``memory://NAME``): no sockets, for test harnesses."""

from __future__ import annotations

__all__ = ["MemoryTransport"]

import ssl

import trio
import trio.testing

from .._errors import MeshgateError
from ._base import Listener, Transport, split_url


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
