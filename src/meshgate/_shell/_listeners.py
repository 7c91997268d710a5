"""The node's listeners (private): every configured URL served with its handler, and
the counters of the UDP (QUIC, WebTransport) endpoints among them."""

from __future__ import annotations

__all__ = ["Bound", "Handlers", "quic_stats", "start_listeners"]

import ssl
from collections.abc import Awaitable, Callable
from functools import partial

import attrs
import trio

from ..config import GatewayConfig
from ..transports import get_transport

Handler = Callable[[trio.abc.Stream], Awaitable[None]]


@attrs.frozen
class Handlers:
    """What serves a stream accepted on each kind of listener."""

    client: Handler
    route: Handler
    gateway: Handler
    nats: Handler


@attrs.frozen
class Bound:
    """The URLs the listeners were bound at (None: not configured)."""

    client_urls: tuple[str, ...]
    cluster_url: str | None
    gateway_url: str | None
    nats_urls: tuple[str, ...]


async def _listen(
    nursery: trio.Nursery,
    cfg: GatewayConfig,
    url: str | None,
    handler: Handler,
    ssl_context: ssl.SSLContext | None,
    reuse_port: bool = False,
) -> str | None:
    """Serve ``url`` (None: nothing) with ``handler``; the bound URL."""
    if url is None:
        return None
    transport = get_transport(url)
    serve = partial(transport.serve, url, handler, ssl_context=ssl_context)
    if getattr(transport, "needs_cert_files", False):  # QUIC: aioquic's own TLS
        if cfg.tls_cert_file is not None and cfg.tls_key_file is not None:
            serve = partial(serve, cert_files=(cfg.tls_cert_file, cfg.tls_key_file))
        if cfg.quic_limits is not None:
            serve = partial(serve, limits=cfg.quic_limits)
    elif reuse_port:  # only then: a custom transport need not know the keyword
        serve = partial(serve, reuse_port=True)
    bound: str = await nursery.start(serve)
    return bound


async def start_listeners(nursery: trio.Nursery, cfg: GatewayConfig, on: Handlers) -> Bound:
    """Bind every listener of ``cfg`` in ``nursery``, in the order of
    :attr:`GatewayConfig.listeners`: clients, cluster, gateway, NATS."""
    shared = cfg.reuse_port
    clients = []
    for _, url in cfg.client_listeners:
        scheme = url.partition("://")[0] if "://" in url else "tcp"
        ctx = None if scheme in ("tcp", "ws") else cfg.tls
        bound = await _listen(nursery, cfg, url, on.client, ctx, shared)
        assert bound is not None
        clients.append(bound)
    cluster = await _listen(nursery, cfg, cfg.cluster_listen, on.route, cfg.cluster_tls)
    gateway = await _listen(nursery, cfg, cfg.gateway_listen, on.gateway, cfg.gateway_tls, shared)
    nats = []
    for url in cfg.nats_listen:
        bound = await _listen(nursery, cfg, url, on.nats, cfg.tls, shared)
        assert bound is not None
        nats.append(bound)
    return Bound(tuple(clients), cluster, gateway, tuple(nats))


def quic_stats(client_urls: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """The counters of the ``quic://`` and ``webtransport://`` listeners among
    ``client_urls``, by bound URL."""
    out = {}
    for url in client_urls:
        if url.startswith(("quic://", "webtransport://")):
            endpoints = getattr(get_transport(url), "endpoints", {})
            endpoint = endpoints.get(url)
            if endpoint is not None:
                out[url] = endpoint.stats.as_dict()
    return out
