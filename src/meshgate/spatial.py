"""Spatial interest: positions and radii as grid-cell subjects, with hysteresis.

The world is cut into square cells; cell ``(i, j)`` is the subject
``<prefix>.<i>.<j>`` and publishers put entity updates under it
(``cell.3.-2.ship.42``), so a subscriber to ``cell.3.-2.>`` sees everything there.

An :class:`AreaOfInterest` follows a moving point: a cell is *entered* when it comes
within ``enter_radius`` and *left* only when it is farther than ``exit_radius``
(larger), so a client moving along a cell edge does not churn subscriptions.
:func:`interest_area` ties one to a :class:`~meshgate.Client`: one call to
``move(x, y)`` subscribes and unsubscribes only the difference, and every cell's
messages arrive merged on one bounded channel.

:class:`Rings` tell a node's per-client scheduler (``client_bandwidth``) how much each
entity matters to a client by its distance from the client's focus: a weight (how fast
its priority grows while it waits) and a rate cap per ring (full rate near, 5 Hz
farther, 1 Hz beyond); plug ``rings.relevance`` in with
:meth:`meshgate.Gateway.set_relevance` and tell the node where each client is with
:meth:`meshgate.Gateway.set_focus`.

The geometry is pure synchronous code; only :func:`interest_area` touches trio.
"""

from __future__ import annotations

__all__ = ["AreaOfInterest", "Grid", "InterestArea", "Rings", "interest_area"]

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import attrs
import trio

from .client import ConnectionClosedError
from .subjects import validate_subject

if TYPE_CHECKING:
    from .client import Client, Message, Subscription

Cell = tuple[int, int]


@attrs.frozen
class Grid:
    """Square cells of ``cell_size`` world units, named ``<prefix>.<i>.<j>``."""

    cell_size: float
    prefix: str = "cell"

    def __attrs_post_init__(self) -> None:
        if not (self.cell_size > 0 and math.isfinite(self.cell_size)):
            raise ValueError(f"cell_size must be a positive finite number, not {self.cell_size!r}")
        validate_subject(self.prefix)

    def cell_of(self, x: float, y: float) -> Cell:
        """The cell containing the point ``(x, y)``."""
        return math.floor(x / self.cell_size), math.floor(y / self.cell_size)

    def subject(self, cell: Cell, *rest: str) -> str:
        """The subject of a cell, optionally with more tokens (``cell.1.2.ship.7``)."""
        return ".".join((self.prefix, str(cell[0]), str(cell[1]), *rest))

    def pattern(self, cell: Cell) -> str:
        """The subscription pattern for everything published under a cell."""
        return f"{self.prefix}.{cell[0]}.{cell[1]}.>"

    def cells_within(self, x: float, y: float, radius: float) -> set[Cell]:
        """Cells whose (closed) square comes within ``radius`` of ``(x, y)``: distance to
        the nearest point of the cell, so the point's own cell is always included."""
        s = self.cell_size
        # closed squares: a cell whose edge is exactly at the radius counts
        i0, i1 = math.ceil((x - radius) / s) - 1, math.floor((x + radius) / s)
        j0, j1 = math.ceil((y - radius) / s) - 1, math.floor((y + radius) / s)
        out = set()
        for i in range(i0, i1 + 1):
            dx = max(i * s - x, 0.0, x - (i + 1) * s)
            for j in range(j0, j1 + 1):
                dy = max(j * s - y, 0.0, y - (j + 1) * s)
                if math.hypot(dx, dy) <= radius:
                    out.add((i, j))
        return out


#: ``(outer radius, rate cap in Hz (0: none), weight)`` per ring, nearest first
Ring = tuple[float, float, float]

#: full rate within 50 units, 5 Hz to 200, 1 Hz beyond; nearer weighs more
DEFAULT_RINGS: tuple[Ring, ...] = ((50.0, 0.0, 4.0), (200.0, 5.0, 2.0), (math.inf, 1.0, 1.0))


@attrs.frozen
class Rings:
    """Distance rings around a client's focus: each caps how often an entity in it is
    sent to the client and weighs its priority.  An entity's position is the centre of
    the cell its subject names (``cell.3.-2.ship.42``), or what ``position(subject,
    key)`` returns when given (the host knows exact positions)."""

    grid: Grid
    rings: tuple[Ring, ...] = DEFAULT_RINGS
    position: Callable[[str, str], tuple[float, float] | None] | None = None

    def __attrs_post_init__(self) -> None:
        radii = [r[0] for r in self.rings]
        if not radii or radii != sorted(radii) or any(r[1] < 0 or r[2] <= 0 for r in self.rings):
            raise ValueError("rings: increasing radii, rates >= 0 and weights > 0")

    def ring(self, distance: float) -> Ring:
        """The ring a distance falls in (the last one beyond every radius)."""
        for r in self.rings:
            if distance <= r[0]:
                return r
        return self.rings[-1]

    def where(self, subject: str, key: str) -> tuple[float, float] | None:
        """An entity's position: ``position(subject, key)``, else its cell's centre
        (None: the subject names no cell of the grid)."""
        if self.position is not None:
            pos = self.position(subject, key)
            if pos is not None:
                return pos
        prefix = self.grid.prefix + "."
        if not subject.startswith(prefix):
            return None
        parts = subject[len(prefix) :].split(".", 2)
        if len(parts) < 2:
            return None
        try:
            i, j = int(parts[0]), int(parts[1])
        except ValueError:
            return None
        s = self.grid.cell_size
        return ((i + 0.5) * s, (j + 0.5) * s)

    def relevance(
        self, focus: tuple[float, float] | None, subject: str, key: str
    ) -> tuple[float, float]:
        """``(weight, min_interval)`` of one keyed message for a client at ``focus``
        (the node's relevance function; no focus or no position: the nearest ring)."""
        pos = self.where(subject, key) if focus is not None else None
        if focus is None or pos is None:
            _, rate, weight = self.rings[0]
        else:
            _, rate, weight = self.ring(math.hypot(pos[0] - focus[0], pos[1] - focus[1]))
        return weight, (1.0 / rate if rate > 0 else 0.0)


class AreaOfInterest:
    """The cells a moving point is interested in, with enter/exit hysteresis."""

    def __init__(self, grid: Grid, enter_radius: float, exit_radius: float | None = None) -> None:
        exit_radius = enter_radius if exit_radius is None else exit_radius
        if enter_radius < 0 or exit_radius < enter_radius:
            raise ValueError("need 0 <= enter_radius <= exit_radius")
        self.grid = grid
        self.enter_radius = enter_radius
        self.exit_radius = exit_radius
        self.cells: frozenset[Cell] = frozenset()
        self.position: tuple[float, float] | None = None

    def move(self, x: float, y: float) -> tuple[set[Cell], set[Cell]]:
        """Move to ``(x, y)``; return ``(added, removed)`` cells."""
        grid = self.grid
        enter = grid.cells_within(x, y, self.enter_radius)
        keep = grid.cells_within(x, y, self.exit_radius)
        new = frozenset((self.cells & keep) | enter)
        added = set(new - self.cells)
        removed = set(self.cells - new)
        self.cells = new
        self.position = (x, y)
        return added, removed


class InterestArea:
    """An :class:`AreaOfInterest` bound to a client (see :func:`interest_area`)."""

    def __init__(
        self, client: Client, aoi: AreaOfInterest, nursery: trio.Nursery, max_buffered: int
    ) -> None:
        self.client = client
        self.aoi = aoi
        self._nursery = nursery
        self._subs: dict[Cell, tuple[Subscription, trio.CancelScope]] = {}
        self._send, self._receive = trio.open_memory_channel["Message"](max_buffered)
        #: messages dropped because the merged buffer was full
        self.dropped = 0
        #: subscribe and unsubscribe calls made so far
        self.subscribes = 0
        self.unsubscribes = 0

    @property
    def cells(self) -> frozenset[Cell]:
        """The cells subscribed now."""
        return frozenset(self._subs)

    async def move(self, x: float, y: float) -> tuple[set[Cell], set[Cell]]:
        """Move the area; subscribe and unsubscribe only the cells that changed."""
        added, removed = self.aoi.move(x, y)
        for cell in sorted(removed):
            sub, scope = self._subs.pop(cell)
            scope.cancel()
            await sub.unsubscribe()
            self.unsubscribes += 1
        for cell in sorted(added):
            sub = await self.client.add_subscription(self.aoi.grid.pattern(cell), max_buffered=1024)
            scope = trio.CancelScope()
            self._subs[cell] = (sub, scope)
            self._nursery.start_soon(self._forward, sub, scope)
            self.subscribes += 1
        return added, removed

    async def _forward(self, sub: Subscription, scope: trio.CancelScope) -> None:
        with scope:
            try:
                async for msg in sub:
                    try:
                        self._send.send_nowait(msg)
                    except trio.WouldBlock:
                        self.dropped += 1
            except ConnectionClosedError:
                self._send.close()  # the client gave up: receive() says so

    async def receive(self) -> Message:
        """The next message from any cell of the area; raises
        :class:`~meshgate.ConnectionClosedError` once the client has given up."""
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise ConnectionClosedError("the client's connection is closed") from None

    def receive_nowait(self) -> Message:
        """The next buffered message, or raise :class:`trio.WouldBlock`."""
        return self._receive.receive_nowait()

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._receive.__aiter__()


@asynccontextmanager
async def interest_area(
    client: Client,
    grid: Grid,
    enter_radius: float,
    exit_radius: float | None = None,
    *,
    max_buffered: int = 4096,
) -> AsyncIterator[InterestArea]:
    """An area of interest for ``client``: call ``await area.move(x, y)`` as the player
    moves and read merged messages with ``area.receive()``.  Subscriptions end with the
    block.  The merged buffer holds ``max_buffered`` messages; beyond that new ones are
    dropped and counted in :attr:`InterestArea.dropped`."""
    from .client import ConnectionClosedError

    async with trio.open_nursery() as nursery:
        area = InterestArea(
            client, AreaOfInterest(grid, enter_radius, exit_radius), nursery, max_buffered
        )
        try:
            yield area
        finally:
            nursery.cancel_scope.cancel()
            if not client.is_closed:
                # bounded: a connection that no longer drains must not hold the block
                with trio.CancelScope(shield=True, deadline=trio.current_time() + 1):
                    for sub, _ in area._subs.values():
                        try:
                            await sub.unsubscribe()
                        except ConnectionClosedError:
                            break
