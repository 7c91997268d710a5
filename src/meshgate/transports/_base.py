"""The transport interface, URL parsing (private; see :mod:`meshgate.transports`)."""

from __future__ import annotations

__all__ = ["Listener", "Transport", "split_url"]

import abc
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import trio
import trio.testing

from .._errors import MeshgateError

Listener = trio.abc.Listener[trio.abc.Stream]
_HOST_PORT_SCHEMES = frozenset({"tcp", "tls", "ws", "wss", "quic", "webtransport"})


def split_url(url: str, default_scheme: str = "tcp") -> tuple[str, str, int]:
    """Split ``scheme://host:port`` (or bare ``host:port``) into its parts.

    Schemes other than tcp/tls/ws/wss/quic/webtransport name an endpoint instead (``memory://NAME``):
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
