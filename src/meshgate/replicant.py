"""Replicants: entity-state services attached to gateway nodes.

A replicant owns entities (one owner per entity at a time, with an epoch), receives
the client inputs for them — in order, across hand-overs, wherever in the super-cluster
the client and the replicant are attached — publishes their state, and learns which
cells clients want so it streams only those.

* :class:`ReplicantLink` is the replicant's handle into the mesh.  Get one with
  :meth:`meshgate.Gateway.attach_replicant` (in process) or :func:`connect_replicant`
  (over any transport, from another process or machine).  A replicant may hold links
  to several nodes, in any cluster.
* :class:`ReplicantAdapter` is what a host application implements to bridge a node to
  its replicant service: one ``run(link)`` coroutine.
* :class:`InMemoryReplicant` is the reference adapter: an entity table with owner and
  epoch, inputs applied in order, state published on grid-cell subjects.

Nodes must run with ``GatewayConfig(replicants=True)``.  Wire conventions (plain
meshgate subjects; every payload is a message of :mod:`meshgate.protocol.game`): clients send inputs with :meth:`meshgate.Client.send_input`
(``$IN.<entity>``); owners announce ``$AUTH.claim`` / ``release`` / ``ack``; a node
announces ``$AUTH.lost`` when a replicant's connection goes; inputs reach a replicant
on ``$REP.<name>.in``; nodes announce client interest on ``$INTEREST.add`` / ``remove``.
"""

from __future__ import annotations

__all__ = [
    "AttachedReplicant",
    "InMemoryReplicant",
    "Input",
    "InterestDelta",
    "ReplicantAdapter",
    "ReplicantLink",
    "connect_replicant",
    "open_replicant_link",
]

import abc
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import NamedTuple

import trio

from ._errors import ErrorCode
from ._nursery import open_unwrapping_nursery
from ._reserved import (
    AUTH_ACK,
    AUTH_CLAIM,
    AUTH_LOST,
    AUTH_RELEASE,
    INTEREST_ADD,
    INTEREST_REMOVE,
    INTEREST_SYNC,
    SPEC_CONFIRM,
    SPEC_CORRECT,
    replicant_inbox,
)
from .client import Client, ConnectionClosedError, Subscription, connect
from .protocol import RemoteProtocolError, Role
from .protocol.game import Ack, Claim, Input, Interest, InterestSync, OwnerLost, Release, Verdict
from .spatial import Grid
from .subjects import match

log = logging.getLogger("meshgate.replicant")


class InterestDelta(NamedTuple):
    """Patterns some client started or stopped wanting (union over the nodes linked).

    With ``reset``, the replicant fell behind and the deltas in between were dropped:
    ``added`` is everything wanted now; forget what was wanted before."""

    added: frozenset[str]
    removed: frozenset[str]
    reset: bool = False


class AttachedReplicant:
    """The handle of a replicant attached in process
    (:meth:`meshgate.Gateway.attach_replicant` creates it and starts :meth:`run`)."""

    def __init__(
        self,
        adapter: ReplicantAdapter,
        connect: Callable[[], AbstractAsyncContextManager[Client]],
    ) -> None:
        #: the replicant's name
        self.name = adapter.name
        #: the exception that ended the adapter, if one did
        self.error: Exception | None = None
        self._adapter = adapter
        self._connect = connect
        self._scope = trio.CancelScope()
        self._stopped = trio.Event()

    async def run(self) -> None:
        """Run the adapter over a new link until it returns, fails or is stopped.  An
        exception in the adapter ends its link (the node announces the owner lost) and
        is kept in :attr:`error`; it never propagates into the node.  A link the node
        closed because it is shutting down ends the adapter quietly (an INFO log line,
        no :attr:`error`): the node stops its replicants first, so this happens only
        to an adapter that outlived the stop's grace period."""
        try:
            with self._scope:
                async with (
                    self._connect() as client,
                    open_replicant_link(client, self.name) as link,
                ):
                    await self._adapter.run(link)
        except ConnectionClosedError as exc:
            if exc.error is not None and exc.error.code == ErrorCode.SHUTTING_DOWN:
                log.info("replicant %s stopped: the node is shutting down", self.name)
            else:
                self.error = exc
                log.exception("replicant %s failed", self.name)
        except Exception as exc:
            self.error = exc
            log.exception("replicant %s failed", self.name)
        finally:
            self._stopped.set()

    @property
    def running(self) -> bool:
        """The adapter has not stopped yet."""
        return not self._stopped.is_set()

    def stop(self) -> None:
        """Stop the adapter (its link closes; the node announces the owner lost).  The
        node calls it for every attached replicant when it shuts down, before it closes
        any connection."""
        self._scope.cancel()

    async def wait_stopped(self) -> None:
        """Wait until the adapter has stopped (returned, failed or was stopped)."""
        await self._stopped.wait()


class ReplicantLink:
    """A replicant's handle into the mesh through one connection to one node."""

    def __init__(self, client: Client, name: str, *, max_buffered: int = 65536) -> None:
        self.client = client
        self.name = name
        # a deque, not a memory channel: a channel hands an item to a waiting receiver
        # before that task runs, and a hand-over in between would skip it
        self._inputs: deque[Input] = deque()
        self._input_waiters = trio.lowlevel.ParkingLot()
        self._max_buffered = max_buffered
        self._deltas_send, self._deltas = trio.open_memory_channel[InterestDelta](max_buffered)
        self._wanted: dict[str, set[str]] = {}  # pattern -> nodes whose clients want it
        #: inputs dropped because the replicant did not keep up (never happens unless
        #: ``max_buffered`` inputs are waiting)
        self.dropped_inputs = 0
        #: times the interest deltas overflowed and were replaced by a full re-sync
        self.interest_resyncs = 0
        #: malformed messages received (dropped; the last reasons are logged)
        self.malformed = 0
        self._closed = False
        #: how the connection ended, as the client reported it (None: not yet, or no reason)
        self._close_error: ConnectionClosedError | None = None
        self._lost_send, self._lost = trio.open_memory_channel[str](1024)

    # -- authority --------------------------------------------------------------------------

    async def claim(self, entity: str, epoch: int) -> None:
        """Take authority over ``entity`` at ``epoch`` (higher than any before)."""
        await self.client.publish(AUTH_CLAIM, Claim(entity, self.name, epoch).encode())

    async def release(self, entity: str, epoch: int, applied: dict[str, int]) -> None:
        """Hand ``entity`` over: ``applied`` maps each client to the last sequence number
        this owner applied; later inputs are held for the next owner."""
        await self.client.publish(AUTH_RELEASE, Release(entity, self.name, epoch, applied).encode())

    async def ack(self, entity: str, epoch: int, applied: dict[str, int]) -> None:
        """The state published so far includes ``applied``: those inputs are durable."""
        await self.client.publish(AUTH_ACK, Ack(entity, self.name, epoch, applied).encode())

    async def confirm(self, client: str, seq: int) -> None:
        """The provisional relay of ``client``'s input ``seq`` was right."""
        await self.client.publish(SPEC_CONFIRM, Verdict.pack(client, seq, b""))

    async def correct(self, client: str, seq: int, value: bytes) -> None:
        """The provisional relay was wrong: ``value`` replaces it for exactly the clients
        that got it, the sender included."""
        await self.client.publish(SPEC_CORRECT, Verdict.pack(client, seq, bytes(value)))

    # -- data -------------------------------------------------------------------------------

    async def publish(
        self, subject: str, payload: bytes, *, key: str | None = None, priority: float | None = None
    ) -> None:
        """Publish an entity update (``key`` lets slow clients get only the latest;
        ``priority`` multiplies its weight in budgeted clients' schedulers, honoured if
        the replicant's credential grants it: docs/scheduling.md)."""
        await self.client.publish(subject, payload, key=key, priority=priority)

    async def receive_input(self) -> Input:
        """The next input for an entity this replicant owns (in order per client); raises
        :class:`~meshgate.ConnectionClosedError` once the link's connection is gone."""
        while not self._inputs:
            if self._closed:
                raise self._closed_error()
            await self._input_waiters.park()
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._inputs:  # taken by receive_input_nowait meanwhile
            return await self.receive_input()
        return self._inputs.popleft()

    def receive_input_nowait(self) -> Input:
        """The next input if one is waiting, else raise :class:`trio.WouldBlock`."""
        if not self._inputs:
            raise trio.WouldBlock
        return self._inputs.popleft()

    async def interest_change(self) -> InterestDelta:
        """The next change of the aggregated client interest; raises
        :class:`~meshgate.ConnectionClosedError` once the link's connection is gone."""
        try:
            return await self._deltas.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._closed_error() from None

    async def owner_lost(self) -> str:
        """The name of the next replicant whose connection went away (its entities have
        no owner until someone claims them); raises
        :class:`~meshgate.ConnectionClosedError` once this link's connection is gone."""
        try:
            return await self._lost.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._closed_error() from None

    def _closed_error(self) -> ConnectionClosedError:
        """The link's connection is gone: why, with the node's error if it gave one."""
        cause = self._close_error
        if cause is None:
            return ConnectionClosedError("the replicant link's connection is closed")
        return ConnectionClosedError(f"the replicant link's {cause}", cause.error)

    async def _pump_lost(self, sub: Subscription) -> None:
        with self._ends_link():
            async for m in sub:
                try:
                    name = OwnerLost.decode(m.payload).replicant
                except RemoteProtocolError as exc:
                    self._malformed(m.subject, exc)
                    continue
                with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
                    self._lost_send.send_nowait(name)

    def interest_change_nowait(self) -> InterestDelta:
        """The next change if one is waiting, else raise :class:`trio.WouldBlock`."""
        try:
            return self._deltas.receive_nowait()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._closed_error() from None

    def _emit(self, delta: InterestDelta) -> None:
        try:
            self._deltas_send.send_nowait(delta)
        except trio.WouldBlock:
            # the replicant fell behind: one full re-sync replaces the whole backlog
            while True:
                try:
                    self._deltas.receive_nowait()
                except trio.WouldBlock:
                    break
            self.interest_resyncs += 1
            self._deltas_send.send_nowait(InterestDelta(frozenset(self._wanted), frozenset(), True))
        except trio.ClosedResourceError:
            pass

    @property
    def interest(self) -> frozenset[str]:
        """Patterns at least one client reachable through this link wants now."""
        return frozenset(self._wanted)

    def wants(self, subject: str) -> bool:
        """True if some client's interest covers ``subject``."""
        return any(match(p, subject) for p in self._wanted)

    # -- plumbing ---------------------------------------------------------------------------

    def _malformed(self, subject: str, exc: RemoteProtocolError) -> None:
        self.malformed += 1
        log.warning("replicant %s dropped a malformed %s: %s", self.name, subject, exc.reason)

    async def _run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        c = self.client
        inputs = await c.add_subscription(replicant_inbox(self.name), max_buffered=65536)
        adds = await c.add_subscription(INTEREST_ADD, max_buffered=65536)
        removes = await c.add_subscription(INTEREST_REMOVE, max_buffered=65536)
        lost = await c.add_subscription(AUTH_LOST, max_buffered=1024)
        await c.flush()
        await c.publish(INTEREST_SYNC, InterestSync().encode())  # nodes re-announce interest
        task_status.started()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump_inputs, inputs)
                nursery.start_soon(self._pump_interest, adds, True)
                nursery.start_soon(self._pump_interest, removes, False)
                nursery.start_soon(self._pump_lost, lost)
        finally:
            self._closed = True  # the connection is gone: waiters learn it
            self._input_waiters.unpark_all()
            self._deltas_send.close()
            self._lost_send.close()

    @contextlib.contextmanager
    def _ends_link(self) -> Iterator[None]:
        """A pump ends with the connection: the link keeps the reason."""
        try:
            yield
        except ConnectionClosedError as exc:
            if self._close_error is None:
                self._close_error = exc

    async def _pump_inputs(self, sub: Subscription) -> None:
        with self._ends_link():
            await self._pump_inputs_from(sub)

    async def _pump_inputs_from(self, sub: Subscription) -> None:
        decode = Input.decode
        async for m in sub:
            try:
                inp = decode(m.payload)
            except RemoteProtocolError as exc:
                self._malformed(m.subject, exc)
                continue
            if len(self._inputs) >= self._max_buffered:
                self.dropped_inputs += 1  # the router redelivers: it was never acknowledged
                continue
            self._inputs.append(inp)
            self._input_waiters.unpark_all()

    async def _pump_interest(self, sub: Subscription, added: bool) -> None:
        with self._ends_link():
            await self._pump_interest_from(sub, added)

    async def _pump_interest_from(self, sub: Subscription, added: bool) -> None:
        async for m in sub:
            try:
                node, pattern = Interest.decode(m.payload)
            except RemoteProtocolError as exc:
                self._malformed(m.subject, exc)
                continue
            nodes = self._wanted.get(pattern)
            if added:
                if nodes is None:
                    self._wanted[pattern] = {node}
                    self._emit(InterestDelta(frozenset({pattern}), frozenset()))
                else:
                    nodes.add(node)
            elif nodes is not None:
                nodes.discard(node)
                if not nodes:
                    del self._wanted[pattern]
                    self._emit(InterestDelta(frozenset(), frozenset({pattern})))


@asynccontextmanager
async def open_replicant_link(
    client: Client, name: str, *, max_buffered: int = 65536
) -> AsyncIterator[ReplicantLink]:
    """A :class:`ReplicantLink` over an existing client connection (role replicant);
    ``max_buffered`` bounds its input queue and its interest-delta queue."""
    link = ReplicantLink(client, name, max_buffered=max_buffered)
    async with open_unwrapping_nursery() as nursery:
        await nursery.start(link._run)
        try:
            yield link
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def connect_replicant(
    url: str, name: str, *, token: str | None = None, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[ReplicantLink]:
    """The remote adapter: a replicant in another process or machine links to the node
    at ``url`` over any transport, speaking the meshgate protocol."""
    async with (
        connect(url, name=name, token=token, ssl_context=ssl_context, role=Role.REPLICANT) as c,
        open_replicant_link(c, name) as link,
    ):
        yield link


class ReplicantAdapter(abc.ABC):
    """Bridges a node to one replicant service; host applications implement :meth:`run`.

    ``run`` gets a :class:`ReplicantLink` and typically loops: claim entities, apply
    :meth:`ReplicantLink.receive_input` inputs, publish state for cells in
    :attr:`ReplicantLink.interest`, acknowledge, hand entities over.
    """

    #: the replicant's name, unique in the super-cluster
    name: str

    @abc.abstractmethod
    async def run(self, link: ReplicantLink) -> None:
        """Serve the replicant through ``link`` until cancelled."""


Apply = Callable[[bytes, bytes], bytes]


def _append(state: bytes, data: bytes) -> bytes:
    return state + data


class InMemoryReplicant(ReplicantAdapter):
    """The reference replicant: an entity table with owner, epoch and state.

    Inputs are applied in order with ``apply(state, data) -> state``; after each batch
    the new state of each changed entity is published on its cell subject (``grid``,
    ``positions``) — only if some client's interest covers that cell — and the applied
    sequence numbers are acknowledged.  :meth:`hand_over` moves an entity to another
    in-memory replicant without losing or duplicating an input.
    """

    def __init__(
        self,
        name: str,
        grid: Grid,
        positions: dict[str, tuple[float, float]] | None = None,
        *,
        apply: Apply = _append,
        validate: Callable[[bytes, bytes], bytes | None] | None = None,
        locate: Callable[[str, bytes], tuple[float, float]] | None = None,
        priority: Callable[[str, bytes], float | None] | None = None,
    ) -> None:
        self.name = name
        #: ``priority(entity, state)``: the publisher priority of an entity's state update
        #: (None: none; docs/scheduling.md, "Priority from the publisher")
        self.priority = priority
        self.grid = grid
        self.apply = apply
        #: for speculative inputs: ``validate(state_before, data)`` returns None when the
        #: client's provisional update stands, else the authoritative replacement
        self.validate = validate
        self._verdicts: list[tuple[str, int, bytes | None]] = []
        #: ``locate(entity, state) -> (x, y)``: where an entity is, for its cell subject
        #: (default: the fixed ``positions``)
        self.locate = locate
        self.positions: dict[str, tuple[float, float]] = dict(positions or {})
        self.states: dict[str, bytes] = {}
        self.epochs: dict[str, int] = {}
        #: per entity, per client: the last sequence number applied
        self.applied: dict[str, dict[str, int]] = {}
        #: per entity: every (client, seq) applied, in order (for tests and tools)
        self.log: dict[str, list[tuple[str, int]]] = {}
        #: state updates published, and those skipped because no client wanted the cell
        self.published = 0
        self.skipped = 0
        self.link: ReplicantLink | None = None
        self._ready = trio.Event()

    async def wait_ready(self) -> None:
        """Wait until :meth:`run` has claimed its initial entities."""
        await self._ready.wait()

    async def own(
        self, entity: str, epoch: int, state: bytes = b"", applied: dict[str, int] | None = None
    ) -> None:
        """Take ``entity`` at ``epoch`` with a given state (a hand-over's target side)."""
        assert self.link is not None
        self.states[entity] = state
        self.epochs[entity] = epoch
        self.applied[entity] = dict(applied or {})
        self.log.setdefault(entity, [])
        self.positions.setdefault(entity, (0.0, 0.0))
        await self.link.claim(entity, epoch)

    async def hand_over(self, entity: str, to: InMemoryReplicant) -> None:
        """Move ``entity`` to ``to``: apply what arrived, release, and let ``to`` claim
        the next epoch with the state and applied sequence numbers."""
        assert self.link is not None
        self._apply_pending()
        epoch = self.epochs.pop(entity)
        state = self.states.pop(entity)
        applied = self.applied.pop(entity)
        to.positions[entity] = self.positions.pop(entity, (0.0, 0.0))
        to.log[entity] = self.log.pop(entity, [])
        await self.link.release(entity, epoch, applied)
        await to.own(entity, epoch + 1, state, applied)

    def _apply(self, inp: Input) -> bool:
        """Apply one input if this replicant owns the entity at that epoch and has not
        applied that sequence number yet; True if the state changed."""
        if self.epochs.get(inp.entity) != inp.epoch:
            return False  # fenced: not (or no longer) the owner at that epoch
        applied = self.applied.setdefault(inp.entity, {})
        if inp.seq <= applied.get(inp.client, -1):
            return False
        applied[inp.client] = inp.seq
        before = self.states.get(inp.entity, b"")
        self.states[inp.entity] = self.apply(before, inp.data)
        self.log.setdefault(inp.entity, []).append((inp.client, inp.seq))
        if inp.speculative:
            verdict = self.validate(before, inp.data) if self.validate else None
            self._verdicts.append((inp.client, inp.seq, verdict))
        return True

    def _apply_pending(self) -> set[str]:
        assert self.link is not None
        changed: set[str] = set()
        while True:
            try:
                inp = self.link.receive_input_nowait()
            except trio.WouldBlock:
                return changed
            if self._apply(inp):
                changed.add(inp.entity)

    async def _publish(self, entity: str) -> None:
        assert self.link is not None
        if self.locate is not None:
            x, y = self.locate(entity, self.states.get(entity, b""))
        else:
            x, y = self.positions.get(entity, (0.0, 0.0))
        subject = self.grid.subject(self.grid.cell_of(x, y), entity)
        if self.link.wants(subject):
            state = self.states.get(entity, b"")
            prio = self.priority(entity, state) if self.priority is not None else None
            await self.link.publish(subject, state, key=entity, priority=prio)
            self.published += 1
        else:
            self.skipped += 1

    async def run(self, link: ReplicantLink) -> None:
        """Claim the initial entities, then apply inputs and publish state until cancelled."""
        self.link = link
        for entity in self.positions:
            if entity not in self.epochs:
                await self.own(entity, 1)
        self._ready.set()
        while True:
            first = await link.receive_input()
            changed = {first.entity} if self._apply(first) else set()
            changed |= self._apply_pending()
            verdicts, self._verdicts = self._verdicts, []
            for client, seq, verdict in verdicts:
                if verdict is None:
                    await link.confirm(client, seq)
                else:
                    await link.correct(client, seq, verdict)
            for entity in sorted(changed):
                epoch = self.epochs.get(entity)
                if epoch is None:
                    continue  # handed over meanwhile
                applied = dict(self.applied[entity])
                await self._publish(entity)
                if self.epochs.get(entity) == epoch:
                    await link.ack(entity, epoch, applied)
