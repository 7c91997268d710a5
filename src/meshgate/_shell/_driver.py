"""The one driver: the only place that acts on what the node core asks of its embedding.

After every call into a :class:`~meshgate._node.NodeCore`, :meth:`CoreDriver.drain` takes
the core's :class:`~meshgate._node.Effects` and hands each part of it to an
:class:`EffectSink`: the trio shell's (sockets, tasks, dialers), the test harness's
(scripted peers) or the simulator's (simulated links).  No trio, no clock: the
simulator and the harness run it as the shell does.
"""

from __future__ import annotations

__all__ = ["CoreDriver", "EffectSink"]

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .._node import Connection, NodeCore


class EffectSink(Protocol):
    """What an embedding does with a core's effects (one method per kind of effect)."""

    def write(self, conns: tuple[Connection, ...]) -> None:
        """These connections have new output: take it (``NodeCore.take_output``) and send it."""

    def close(self, conns: tuple[Connection, ...]) -> None:
        """The core closed these connections: flush what is queued (the error frame),
        then drop the transport and call ``NodeCore.connection_lost``."""

    def routes_changed(self) -> None:
        """The set of routes (or the backbone link) changed."""

    def gateways_changed(self) -> None:
        """The set of gateway connections changed."""

    def dial_route(self, url: str) -> None:
        """Dial the route URL ``url`` (learned by gossip)."""

    def dial_gateway(self, cluster: str) -> None:
        """Keep an outbound gateway connection to ``cluster``."""


class CoreDriver:
    """Drains a core after each call into it and hands the effects to a sink, in one
    order: output, closes, route changes and dials, gateway changes and dials."""

    __slots__ = ("core", "sink")

    def __init__(self, core: NodeCore, sink: EffectSink) -> None:
        #: the core driven
        self.core = core
        #: where its effects go
        self.sink = sink

    def drain(self) -> None:
        """Finish the current call into the core and act on everything it asked for.
        Call it after every other call into the core (once per batch of input: the hot
        path pays one call here and one ``write`` per batch, nothing per message)."""
        fx = self.core.drain()
        if not fx:
            return
        sink = self.sink
        if fx.writable:
            sink.write(fx.writable)
        if fx.closing:
            sink.close(fx.closing)
        if fx.routes_changed:
            sink.routes_changed()
        for url in fx.dial_routes:
            sink.dial_route(url)
        if fx.gateways_changed:
            sink.gateways_changed()
        for cluster in fx.dial_gateways:
            sink.dial_gateway(cluster)
