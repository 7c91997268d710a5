"""What a node knows of its links to other nodes, and a wake-up each time that changes.

The driver's sink calls :meth:`Topology.routes_changed` and
:meth:`Topology.gateways_changed`; the dialers and the node's ``wait_*`` methods wait
on them and ask the core's public queries.  Nothing here polls or writes core tables.
"""

from __future__ import annotations

__all__ = ["Topology"]

import logging
from typing import TYPE_CHECKING

import trio

from .._node import PeerConnection
from ..protocol import ConnectionKind

if TYPE_CHECKING:
    from .._node import Connection, NodeCore

log = logging.getLogger("meshgate.links")


def describe_link(conn: PeerConnection) -> str:
    """A link as the logs name it: ``route a1 (tcp://10.0.0.2:6222, dialed)``,
    ``gateway to cluster B (node b0, dialed)``, ``backbone (nats-server n1)``."""
    how = "dialed" if conn.dialed else "accepted"
    kind = conn.kind
    if kind is ConnectionKind.GATEWAY_OUTBOUND:
        return (
            f"gateway to cluster {getattr(conn, 'remote_cluster', None)} (node {conn.peer}, {how})"
        )
    if kind is ConnectionKind.GATEWAY_INBOUND:
        return f"gateway from cluster {getattr(conn, 'remote_cluster', None)} (node {conn.peer}, {how})"
    if getattr(conn, "leaf", False):
        return f"backbone (nats-server {conn.peer})"
    url = getattr(conn, "peer_url", None)
    return f"route {conn.peer} ({url + ', ' if url else ''}{how})"


class Topology:
    """Routes, gateways and the backbone of one node: answers and change notifications.
    It also logs each link coming up (INFO); the node tells it when one ends
    (:meth:`link_ended`) and it logs that with the reason."""

    __slots__ = ("_backbone", "_core", "_gateways", "_routes", "_up")

    def __init__(self, core: NodeCore) -> None:
        self._core = core
        self._routes = trio.Event()
        self._gateways = trio.Event()
        #: links logged as up, by connection id (bounded by the node's links)
        self._up: dict[int, str] = {}
        self._backbone: str | None = None

    # -- notifications (from the driver's sink) -----------------------------------------------

    def routes_changed(self) -> None:
        """The set of routes (or the backbone link) changed: wake whoever waits."""
        self._routes.set()
        self._routes = trio.Event()
        self._log_up(self._core.route_connections())
        backbone = self._core.backbone_server()
        if backbone is not None and backbone != self._backbone:
            log.info("backbone up: attached to nats-server %s", backbone)
        self._backbone = backbone

    def gateways_changed(self) -> None:
        """The set of gateway connections changed: wake whoever waits."""
        self._gateways.set()
        self._gateways = trio.Event()
        self._log_up(self._core.gateway_connections())

    def _log_up(self, conns: list[Connection]) -> None:
        up = self._up
        for conn in conns:
            if conn.id not in up and isinstance(conn, PeerConnection):
                what = up[conn.id] = describe_link(conn)
                log.info("%s up", what)

    def link_ended(self, conn: Connection, reason: str) -> None:
        """Link ``conn`` ended for ``reason``: logged if it had come up."""
        what = self._up.pop(conn.id, None)
        if what is not None:
            log.info("%s down: %s", what, reason)
        elif isinstance(conn, PeerConnection) and getattr(conn, "leaf", False) and conn.peer:
            log.info("%s down: %s", describe_link(conn), reason)

    async def next_routes_change(self) -> None:
        """Wait for the next change of the routes (or the backbone link)."""
        await self._routes.wait()

    async def next_gateways_change(self) -> None:
        """Wait for the next change of the gateway connections."""
        await self._gateways.wait()

    async def next_change(self) -> None:
        """Wait until a route or gateway connection comes or goes."""
        routes, gateways = self._routes, self._gateways
        async with trio.open_nursery() as nursery:

            async def wait(event: trio.Event) -> None:
                await event.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(wait, routes)
            nursery.start_soon(wait, gateways)

    # -- waits for the node's public API ------------------------------------------------------

    async def wait_routes(self, n: int) -> None:
        """Wait until there are routes to at least ``n`` peers of the cluster."""
        while self._core.route_peer_count() < n:
            await self._routes.wait()

    async def wait_gateways(self, outbound: int, inbound: int) -> None:
        """Wait until there are at least ``outbound`` outbound and ``inbound`` inbound
        gateway connections."""
        while True:
            have_out, have_in = self._core.gateway_counts()
            if have_out >= outbound and have_in >= inbound:
                return
            await self._gateways.wait()

    async def wait_backbone(self) -> None:
        """Wait until the backbone connection is attached."""
        while self._core.backbone_server() is None:
            await self._routes.wait()

    # -- what the dialers ask -----------------------------------------------------------------

    def has_outbound_gateway(self, cluster: str) -> bool:
        """An outbound gateway connection to ``cluster`` is up."""
        return self._core.has_outbound_gateway(cluster)

    def gateway_urls(self, cluster: str) -> tuple[str, ...]:
        """The gateway URLs known for ``cluster``'s nodes."""
        return self._core.gateway_urls(cluster)

    def is_own_route_url(self, url: str) -> bool:
        """``url`` leads to this node itself."""
        return self._core.is_own_route_url(url)

    def has_route_to(self, url: str) -> bool:
        """A route to the node at ``url`` is up (either direction)."""
        return self._core.has_route_to(url)

    def backbone_urls(self) -> tuple[str, ...]:
        """Backbone URLs the hub told this node about."""
        return self._core.backbone_urls()

    def backbone_error(self) -> str | None:
        """The last error the backbone hub sent, or None."""
        return self._core.backbone_error()
