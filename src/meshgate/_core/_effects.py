"""What the core asks of its shell: the whole core -> shell contract in one object."""

from __future__ import annotations

__all__ = ["Effects"]

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._conn import Connection


class Effects:
    """Filled by the core during any call; drained by the shell (or the simulator) after it.

    The core only appends and sets; the shell empties each list and clears each flag
    when it has acted on it.  Nothing else of the core needs polling.
    """

    __slots__ = (
        "closing",
        "dial_gateways",
        "dial_routes",
        "gateways_changed",
        "routes_changed",
        "writable",
    )

    def __init__(self) -> None:
        #: connections with new output: take it with ``NodeCore.take_output`` (a connection
        #: appears once until its output is taken; its ``dirty`` flag says so)
        self.writable: list[Connection] = []
        #: connections the core closed: flush what is queued (the error frame), then drop the
        #: transport and call ``NodeCore.connection_lost``
        self.closing: list[Connection] = []
        #: route URLs learned by gossip that should be dialed
        self.dial_routes: list[str] = []
        #: remote clusters that need an outbound gateway dialer
        self.dial_gateways: list[str] = []
        #: the set of routes changed (``wait_routes`` waiters should look again)
        self.routes_changed = False
        #: the set of gateway connections changed
        self.gateways_changed = False
