"""Plain TCP (``tcp://``), with ``SO_REUSEPORT`` listeners for worker processes."""

from __future__ import annotations

__all__ = ["TCPTransport", "shared_tcp_listener"]

import ssl

import trio
import trio.testing

from .._errors import MeshgateError
from ._base import Listener, Transport, split_url


async def shared_tcp_listener(host: str, port: int) -> trio.SocketListener:
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
            listener = await shared_tcp_listener(host, port)
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
