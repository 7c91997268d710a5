"""The node's timers (private): the housekeeping tick (handshake deadlines, pings,
slow-consumer reports) and the send tick of clients with a bandwidth budget."""

from __future__ import annotations

__all__ = ["Ticks"]

import trio

from .._node import NodeCore
from ._driver import CoreDriver
from ._logbook import Logbook


class Ticks:
    """Runs the core's :meth:`~NodeCore.tick` and :meth:`~NodeCore.send_tick` on time
    and lets the driver act on what they produced."""

    def __init__(self, core: NodeCore, driver: CoreDriver, logbook: Logbook) -> None:
        self._core = core
        self._driver = driver
        self._logbook = logbook
        self._nursery: trio.Nursery | None = None
        self._sending = False

    def start(self, nursery: trio.Nursery) -> None:
        """Start the housekeeping tick, and the send tick if some client has a budget."""
        self._nursery = nursery
        nursery.start_soon(self._housekeeping)
        self.start_send()

    def start_send(self) -> None:
        """Run the send tick if some client has a budget and it is not running (at
        start, and when a reload sets the first budget)."""
        nursery = self._nursery
        if nursery is not None and self._core.send_interval is not None and not self._sending:
            self._sending = True
            nursery.start_soon(self._send)

    async def _housekeeping(self) -> None:
        core = self._core
        cfg = core.config
        interval = min(cfg.auth_timeout, cfg.ping_interval) / 4
        while True:
            await trio.sleep(interval)
            core.tick(trio.current_time())
            self._driver.drain()
            self._logbook.slow_consumers(core.slow_consumers, core.config)

    async def _send(self) -> None:
        """The send tick (``client_bandwidth``); its interval is read every tick
        (reloadable); it ends when no budget is left."""
        core, driver = self._core, self._driver
        while (interval := core.send_interval) is not None:
            await trio.sleep(interval)
            core.send_tick(trio.current_time())
            driver.drain()
        self._sending = False
