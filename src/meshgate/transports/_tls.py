"""TLS over TCP (``tls://``)."""

from __future__ import annotations

__all__ = ["TLSTransport"]

import ssl

import trio
import trio.testing

from .._errors import MeshgateError
from ._base import Listener, Transport, split_url
from ._tcp import TCPTransport


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
