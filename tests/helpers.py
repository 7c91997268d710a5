"""Shared helpers for node tests: a raw protocol connection and gateway factories."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

import meshgate
from meshgate.protocol import PROTOCOL_VERSION, Decoder, Encoder, Error, Frame, Hello
from meshgate.transports import connect_stream

LISTENS = ["127.0.0.1:0", "memory://", "ws://127.0.0.1:0"]


class Raw:
    """A hand-driven protocol connection, for sending what a well-behaved client never would."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.dec = Decoder(max_frame_bytes=16 * 1024 * 1024)
        self.enc = Encoder()
        self.frames: list[Frame] = []

    async def send(self, *frames: Frame) -> None:
        await self.stream.send_all(b"".join(self.enc.encode(f) for f in frames))

    async def send_bytes(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def hello(self, token: str | None = None, role: str = "client") -> None:
        await self.send(Hello(version=PROTOCOL_VERSION, role=role, name="raw", token=token))

    async def next(self) -> Frame | None:
        """The next frame, or None at end of stream."""
        while True:
            f = self.dec.next_frame()
            if f is not None:
                return f
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            if not data:
                return None
            self.dec.feed(data)

    async def until_closed(self) -> list[Frame]:
        """Every frame until the node closes the connection."""
        out = []
        while (f := await self.next()) is not None:
            out.append(f)
        return out

    async def error_and_close(self) -> Error:
        frames = await self.until_closed()
        errors = [f for f in frames if isinstance(f, Error)]
        assert errors, f"no error frame before close: {frames}"
        return errors[-1]


@asynccontextmanager
async def raw(url: str, **kw: Any) -> AsyncIterator[Raw]:
    async with connect_stream(url, **kw) as stream:
        r = Raw(stream)
        hello = await r.next()
        assert isinstance(hello, Hello)
        yield r


def memory_node(name: str, seeds: tuple[str, ...] = (), **kw: Any) -> meshgate.GatewayConfig:
    """Node ``name`` of cluster A, in process: clients at ``memory://<name>-clients``,
    routes at ``memory://<name>-routes``, seeded with ``seeds``."""
    fields: dict[str, Any] = {
        "name": name,
        "cluster": "A",
        "listen": f"memory://{name}-clients",
        "cluster_listen": f"memory://{name}-routes",
        "routes": seeds,
        "reconnect_wait": 0.05,
        **kw,
    }
    return meshgate.GatewayConfig(**fields)


def tcp_node(name: str, seeds: tuple[str, ...] = (), **kw: Any) -> meshgate.GatewayConfig:
    """Node ``name`` of cluster C on loopback TCP (port 0), with routes seeded by
    ``seeds``; ``kw`` adds fields (``nats_listen``, ``monitor_listen``, ...)."""
    fields: dict[str, Any] = {
        "name": name,
        "cluster": "C",
        "listen": "127.0.0.1:0",
        "cluster_listen": "127.0.0.1:0",
        "routes": seeds,
        **kw,
    }
    return meshgate.GatewayConfig(**fields)


def config(listen: str, **kw: Any) -> meshgate.GatewayConfig:
    return meshgate.GatewayConfig(listen=listen, **kw)


async def collect(sub: meshgate.Subscription, n: int) -> list[meshgate.Message]:
    return [await sub.receive() for _ in range(n)]


def drain(sub: meshgate.Subscription) -> list[meshgate.Message]:
    """Every message already buffered on ``sub``."""
    out = []
    while True:
        try:
            out.append(sub.receive_nowait())
        except trio.WouldBlock:
            return out


async def refused(url: str, hello: Hello) -> Error:
    """Connect, send ``hello``, and return the error frame sent before the close.

    The client port sends its HELLO first; route and gateway ports say nothing until
    the dialer has authenticated, so a refused dialer sees no HELLO at all."""
    async with connect_stream(url) as stream:
        r = Raw(stream)
        await r.send(hello)
        frames = await r.until_closed()
        errors = [f for f in frames if isinstance(f, Error)]
        assert errors, f"no error frame before close: {frames}"
        return errors[-1]


#: fields of a monitoring body that move with the clock between two reads
CLOCK_FIELDS = frozenset({"now", "start", "last_activity", "uptime", "idle", "cpu", "mem"})


def timeless(body: Any) -> Any:
    """A monitoring body without the fields that move with the clock (to compare the
    HTTP body with the snapshot it was built from)."""
    if isinstance(body, dict):
        return {k: timeless(v) for k, v in body.items() if k not in CLOCK_FIELDS}
    if isinstance(body, list):
        return [timeless(v) for v in body]
    return body
