"""The dialers of a node: routes to the seeds and gossiped URLs of its cluster, one
outbound gateway per remote cluster; jittered backoff, never a hot loop.

A mixin of :class:`~meshgate.Gateway` (the shell); it decides nothing about routing.
"""

from __future__ import annotations

__all__ = ["Dialing"]

import itertools
import logging
import random
import ssl
from typing import TYPE_CHECKING, Any

import trio

from .protocol import ConnectionKind
from .transports import connect_stream

if TYPE_CHECKING:
    from ._node import NodeCore
    from .config import GatewayConfig

log = logging.getLogger("meshgate.gateway")


class Dialing:
    """Keeps the node's routes and outbound gateways dialed."""

    config: GatewayConfig
    gateway_url: str | None
    _core: NodeCore
    _nursery: trio.Nursery | None
    _stopping: bool
    _gateways_event: trio.Event
    _routes_event: trio.Event
    _gateway_dialers: set[str]
    _dialing: set[str]
    #: orders dial attempts across dialers (see ``_serve_first_of``)
    _attempts = itertools.count()

    if TYPE_CHECKING:  # the shell runs the connections the dialers open

        async def _serve_stream(
            self,
            stream: trio.abc.Stream,
            kind: ConnectionKind = ConnectionKind.CLIENT,
            *,
            dialed: bool = False,
            expected_cluster: str | None = None,
            nats: bool = False,
            backbone: bool = False,
        ) -> None: ...

    async def _backoff(self, failures: int) -> None:
        """Wait before the next dial: jittered, growing with failures to 10x
        ``reconnect_wait``, and never zero (no hot loop)."""
        delay = self.config.reconnect_wait * min(10.0, 1.5 ** min(failures, 8))
        await trio.sleep(delay * random.uniform(0.5, 1.0))

    async def _serve_first_of(
        self,
        urls: list[str],
        lost_at: dict[str, int],
        ssl_context: ssl.SSLContext | None,
        kind: ConnectionKind,
        **serve: Any,
    ) -> str | None:
        """One pass over ``urls``: serve the first that connects until its connection
        ends; the URL served, or None if none connected.  ``lost_at`` remembers when
        each URL last failed or lost its connection: those are tried last, the longest
        ago first, so a hung or dead node is not picked again while another is untried."""
        cfg = self.config
        random.shuffle(urls)
        for gone in [u for u in lost_at if u not in urls]:  # forget departed URLs
            del lost_at[gone]
        urls.sort(key=lambda u: lost_at.get(u, -1))
        for url in urls:
            lost_at[url] = next(self._attempts)  # kept if this attempt fails or ends
            try:
                with trio.move_on_after(max(2.0, cfg.reconnect_wait)) as scope:
                    cm = connect_stream(url, ssl_context=ssl_context)
                    stream = await cm.__aenter__()
                if scope.cancelled_caught:
                    continue
            except OSError as exc:
                log.debug("%s via %s failed: %s", kind.value, url, exc)
                continue
            try:
                await self._serve_stream(stream, kind, dialed=True, **serve)
            finally:
                with trio.CancelScope(shield=True):
                    await cm.__aexit__(None, None, None)
            return url
        return None

    def _start_gateway_dialer(self, cluster: str, *, explicit: bool) -> None:
        if (
            cluster in self._gateway_dialers
            or cluster == self.config.cluster
            or self._nursery is None
            or self._stopping
            or self.gateway_url is None
        ):
            return
        self._gateway_dialers.add(cluster)
        self._nursery.start_soon(self._dial_gateway, cluster, explicit)

    async def _dial_gateway(self, cluster: str, explicit: bool) -> None:
        """Keep exactly one outbound connection to ``cluster``, landing on any of its nodes.

        Configured clusters are retried forever, discovered ones for ``connect_retries``
        failed passes.  Every pass is followed by a jittered wait: never a hot loop.
        """
        gateways = self._core.gateways
        cfg = self.config
        failures = 0
        lost_at: dict[str, int] = {}
        try:
            while True:
                if cluster in gateways.outbound:
                    await self._gateways_event.wait()
                    continue
                served = await self._serve_first_of(
                    list(gateways.urls.get(cluster, ())),
                    lost_at,
                    cfg.gateway_tls_dial,
                    ConnectionKind.GATEWAY_OUTBOUND,
                    expected_cluster=cluster,
                )
                connected = served is not None
                failures = 0 if connected else failures + 1
                if not explicit and failures > cfg.connect_retries:
                    log.info("giving up on discovered gateway cluster %s", cluster)
                    return
                await self._backoff(failures)
        finally:
            self._gateway_dialers.discard(cluster)

    def _start_dialer(self, url: str, *, explicit: bool) -> None:
        if url in self._dialing or self._nursery is None or self._stopping:
            return
        self._dialing.add(url)
        self._nursery.start_soon(self._dial_route, url, explicit)

    async def _dial_route(self, url: str, explicit: bool) -> None:
        """Keep a route to ``url``: forever for a configured seed, ``connect_retries``
        failed attempts for a URL learned by gossip.  Always waits between attempts."""
        routes = self._core.routes
        cfg = self.config
        failures = 0
        try:
            while True:
                if url in routes.self_urls or url == self._core.directory.cluster_url:
                    return
                if url in self._core.directory.route_urls():
                    await self._routes_event.wait()  # a route to it exists (either direction)
                    continue
                try:
                    async with connect_stream(url, ssl_context=cfg.cluster_tls_dial) as stream:
                        failures = 0
                        await self._serve_stream(stream, ConnectionKind.ROUTE, dialed=True)
                except OSError as exc:
                    failures += 1
                    log.debug("route to %s failed: %s", url, exc)
                    if not explicit and failures > cfg.connect_retries:
                        log.info("giving up on gossiped route %s", url)
                        return
                if url in routes.self_urls:
                    return
                await self._backoff(failures)
        finally:
            self._dialing.discard(url)

    async def _dial_backbone(self) -> None:
        """Keep one leafnode connection to the nats-server backbone: every configured
        URL and every URL the hub told us about, the ones that failed or were lost
        last tried last; jittered backoff between passes, forever."""
        backbone = self._core.backbone
        cfg = self.config
        failures = 0
        lost_at: dict[str, int] = {}
        scheme = "tls" if cfg.backbone[0].startswith("tls://") else "tcp"
        tls = cfg.backbone_tls if scheme == "tls" else None
        while not self._stopping:
            urls = list(dict.fromkeys(_dial_url(u, scheme) for u in cfg.backbone))
            urls += [
                u for u in (_dial_url(u, scheme) for u in backbone.learned_urls) if u not in urls
            ]
            served = await self._serve_first_of(
                urls, lost_at, tls, ConnectionKind.ROUTE, backbone=True
            )
            if served is not None and backbone.last_error:
                log.warning("backbone %s: %s", served, backbone.last_error)
            connected = served is not None
            failures = 0 if connected else failures + 1
            await self._backoff(failures)


def _dial_url(url: str, scheme: str) -> str:
    """A backbone URL as the transports dial it: ``nats://`` is TCP, credentials are
    sent in CONNECT (not part of the address)."""
    rest = url.split("://", 1)[1] if "://" in url else url
    given = url.split("://", 1)[0] if "://" in url else None
    host = rest.rpartition("@")[2].rstrip("/")
    return f"{'tls' if given == 'tls' or (given is None and scheme == 'tls') else 'tcp'}://{host}"
