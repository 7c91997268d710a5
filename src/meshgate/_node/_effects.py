"""What the core asks of its shell: the whole core -> shell contract.

Every call into :class:`~meshgate._node.NodeCore` (bytes received, a tick, a
connection opened or lost, a publish by the node itself) leaves work for the shell;
:meth:`NodeCore.drain` runs what the core itself still has to do (the node's own
subscriptions) and returns it as one immutable :class:`Effects` value.  One
``CoreDriver`` (``meshgate/_shell/_driver.py``) acts on it, for the trio shell, the
test harness and the simulator alike; nothing else of the core needs polling.
"""

from __future__ import annotations

__all__ = ["Effects", "PendingEffects"]

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from ._conn import Connection


@attrs.frozen(slots=True)
class Effects:
    """What the shell must do after a call into the core (one value per ``drain``)."""

    #: connections with new output: take it with ``NodeCore.take_output`` (a connection
    #: appears once until its output is taken; ``NodeCore.has_output`` says if any is left)
    writable: tuple[Connection, ...] = ()
    #: connections the core closed: flush what is queued (the error frame), then drop the
    #: transport and call ``NodeCore.connection_lost``
    closing: tuple[Connection, ...] = ()
    #: route URLs learned by gossip that should be dialed
    dial_routes: tuple[str, ...] = ()
    #: remote clusters that need an outbound gateway dialer
    dial_gateways: tuple[str, ...] = ()
    #: the set of routes (or the backbone link) changed
    routes_changed: bool = False
    #: the set of gateway connections changed
    gateways_changed: bool = False

    def __bool__(self) -> bool:
        return bool(
            self.writable
            or self.closing
            or self.dial_routes
            or self.dial_gateways
            or self.routes_changed
            or self.gateways_changed
        )


#: the value ``drain`` returns when there is nothing to do (no allocation)
NOTHING = Effects()


class PendingEffects:
    """The core's side of :class:`Effects`: filled during a call, emptied by ``drain``.

    Private to the core (parts append and set; only ``NodeCore.drain`` reads and
    clears it)."""

    __slots__ = (
        "closing",
        "dial_gateways",
        "dial_routes",
        "gateways_changed",
        "routes_changed",
        "writable",
    )

    def __init__(self) -> None:
        self.writable: list[Connection] = []
        self.closing: list[Connection] = []
        self.dial_routes: list[str] = []
        self.dial_gateways: list[str] = []
        self.routes_changed = False
        self.gateways_changed = False

    def take(self) -> Effects:
        """Everything pending as one immutable value; empty again afterwards."""
        if not (
            self.writable
            or self.closing
            or self.dial_routes
            or self.dial_gateways
            or self.routes_changed
            or self.gateways_changed
        ):
            return NOTHING
        fx = Effects(
            tuple(self.writable),
            tuple(self.closing),
            tuple(self.dial_routes),
            tuple(self.dial_gateways),
            self.routes_changed,
            self.gateways_changed,
        )
        self.writable.clear()  # cleared in place: the hot path holds this list
        self.closing.clear()
        self.dial_routes.clear()
        self.dial_gateways.clear()
        self.routes_changed = self.gateways_changed = False
        return fx
