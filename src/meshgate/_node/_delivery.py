"""Delivery to local subscriptions and the slow-consumer policy (docs/operations.md,
"Slow consumers").

``Delivery.deliver`` is on the hot path: one call per local target.  Each client has one
output buffer bounded by ``max_pending_bytes``; what happens when it would pass
the bound is the node's ``slow_consumer_policy``:

=================  ===================================================================
``disconnect``     close the client with a SLOW_CONSUMER error (NATS behaviour)
``drop-new``       drop the message that does not fit (counted)
``drop-oldest``    drop whole frames from the front until it fits (counted)
``coalesce``       keyed frames replace the unsent frame with the same key (state lane);
                   when the event lane overflows: RESYNC (drop the event backlog, tell the
                   client), and after ``max_resyncs`` in a row without catching up,
                   disconnect
=================  ===================================================================

A client with a bandwidth budget (``client_bandwidth``) has a send scheduler
(``_scheduler.py``): its keyed messages go there instead of the output (latest value
per ``(sid, key)``), and the node's send tick (:meth:`Delivery.send_tick`) writes what
fits.  Everything else goes to its output as for any client and is charged to the
budget first.  All of it is in the section "the per-client scheduler" below; a client
without a budget pays one attribute check.
"""

from __future__ import annotations

__all__ = ["MAX_ACKS", "Delivery", "Relevance"]

from collections import deque
from collections.abc import Callable

from .._errors import ErrorCode
from ..config import GatewayConfig
from ..protocol import DeltaCodec, Role, XorDelta
from ._conn import (
    ClientConnection,
    ConnState,
    DatagramCounters,
    InternalHandler,
    LocalSubscription,
)
from ._deltas import DeltaCounters, KeyedDeltas
from ._natsport import NatsRender
from ._outbox import Outbox
from ._scheduler import Scheduler

#: the relevance of one keyed message to one client: ``(focus, subject, key)`` ->
#: ``(weight, min_interval)`` (``focus``: the client's position, or None)
Relevance = Callable[[tuple[float, float] | None, str, str], tuple[float, float]]

#: acknowledgements one KACK frame carries at most (its array of sid, key, kseq triples
#: is bounded by the decoder's 64 elements; a longer frame is malformed)
MAX_ACKS = 21

#: the budget of a scheduler whose client's budget a reload removed (bytes per second)
UNLIMITED = 1 << 62

#: seconds a key's relevance for a client is reused before it is asked again (entities
#: and clients do not change rings every tick; asking once per value would cost more
#: than the routing itself)
RELEVANCE_TTL = 0.25

_OPEN = ConnState.OPEN
_INTERNAL = ConnState.INTERNAL


class Delivery:
    """Delivery to local subscriptions, with the policy applied when a client is behind.

    The fan-out sets :attr:`cur` (the message being delivered) before the first
    :meth:`deliver` of a message; NATS targets need its fields, not the msgpack tail."""

    def __init__(
        self,
        config: GatewayConfig,
        outbox: Outbox,
        remove_sub: Callable[[LocalSubscription], None],
    ) -> None:
        self.outbox = outbox
        self._remove_sub = remove_sub
        self._writable = outbox.writable
        #: the message being delivered: (subject, reply, payload, payload size)
        self.cur: tuple[str, str | None, bytes, int] = ("", None, b"", 0)
        #: the NATS client publishing with ``echo: false`` now (its own messages skip it)
        self.origin: ClientConnection | None = None
        #: the current message in NATS text, built once for all its NATS targets
        self.render = NatsRender()
        #: the node's own subscriptions that matched: run by ``NodeCore.drain``
        self.internal: deque[tuple[InternalHandler, bytes]] = deque()
        self.slow_consumers = 0
        self.dropped_messages = 0
        self.coalesced_messages = 0
        self.resyncs = 0
        #: keyed messages sent as datagrams; the datagram lanes' totals
        self.datagrams_out = 0
        self.datagram_counters = DatagramCounters()
        #: clients with a budget, by id (the send tick's work list)
        self.scheduled: dict[int, ClientConnection] = {}
        #: some client had a budget at start-up: the shell runs the send tick (a reload
        #: cannot start it, so budgets a reload adds apply after a restart)
        self.enabled = config.scheduling
        #: the host application's relevance function (None: every key weighs 1, no cap)
        self.relevance: Relevance | None = None
        #: the publisher priority of the message being routed (None: none; set by the
        #: fan-out around the message, read only when a budgeted client gets keyed state)
        self.priority: float | None = None
        #: the delta codec of clients with ``keyed_deltas`` (the game's own, or XOR), and
        #: the node's delta totals
        self.codec: DeltaCodec = XorDelta()
        self.delta_counters = DeltaCounters()
        #: the scheduler counters of clients gone (``scheduler_totals`` adds the others)
        self._gone = [0, 0, 0, 0, 0]
        self.reconfigure(config)

    def reconfigure(self, config: GatewayConfig) -> None:
        """The limits of ``config`` apply to what is delivered from now on."""
        self._max_pending = config.max_pending_bytes
        self._policy = config.slow_consumer_policy
        self._max_resyncs = config.max_resyncs
        self._config = config
        self.enabled = config.scheduling

    def deliver(self, sub: LocalSubscription, tail: bytes, key: str | None) -> int:
        """Append one MSG (the subscription's prefix, then the shared tail); 1 if queued."""
        c = sub.conn
        if c.state is not _OPEN:
            return self._deliver_internal(sub, tail) if c.state is _INTERNAL else 0
        prefix = sub.prefix
        if c.nats_text:  # a NATS client: the same message in NATS text, built once
            if c is self.origin:
                return 0  # echo off: not to its own subscriptions
            nats = self.render
            if nats.current is not tail:
                subject, reply, payload, _ = self.cur
                nats.build(tail, subject, reply, payload)
            if c.nats.headers or nats.tail is nats.plain_tail:  # type: ignore[attr-defined]
                prefix = nats.head + prefix
                tail = nats.tail
            else:
                prefix, tail = nats.plain(prefix)
        if key is not None:
            if c.deltas is not None:  # deltas against acknowledged state (opt-in)
                done = self._delta(c, c.deltas, sub, prefix, tail, key)
                if type(done) is int:
                    return done
                prefix, tail = b"", done  # type: ignore[assignment]
            elif c.sched is not None:  # a budget: the scheduler decides when
                if c.dgram is not None:  # numbered now, a datagram when it goes
                    frame = c.dgram.number(sub.sid, key, prefix, tail)
                    if frame is not None:
                        return self._schedule(c, c.sched, sub, frame, key)
                return self._schedule(c, c.sched, sub, prefix + tail, key)
            elif c.dgram is not None:  # keyed state: the datagram lane
                frame = c.dgram.offer(sub.sid, key, prefix, tail, sub.remaining is not None)
                if frame is not None:
                    if not frame:
                        return self._sent_datagram(c, sub)
                    prefix, tail = b"", frame  # on the stream, with its kseq
        size = len(prefix) + len(tail)
        if key is not None and self._policy == "coalesce":
            k = (sub.sid, key)
            old = c.keyed.pop(k, None)
            if old is not None:
                c.keyed_bytes -= len(old)
                c.coalesced += 1
                self.coalesced_messages += 1
            if len(c.out) + c.keyed_bytes + size > self._max_pending and not (
                # the whole buffer is bounded: the event backlog goes first (a resync),
                # and only a state lane that cannot fit on its own disconnects
                c.out and self._resync(c) and len(c.out) + c.keyed_bytes + size <= self._max_pending
            ):
                self._slow(c, "keyed state lane")
                return 0
            c.keyed[k] = prefix + tail
            c.keyed_bytes += size
        else:
            out = c.out
            if len(out) + c.keyed_bytes + size > self._max_pending and not self._overflow(c, size):
                return 0
            out += prefix
            out += tail
            sizes = c.frame_sizes
            if sizes is not None:
                sizes.append(size)
        c.messages_out += 1
        c.payload_out += self.cur[3]
        if not c.dirty:
            c.dirty = True
            self._writable.append(c)
        if sub.remaining is not None:
            sub.remaining -= 1
            if sub.remaining <= 0:
                self._remove_sub(sub)
        return 1

    # -- the per-client scheduler (issue 21; docs/scheduling.md) ---------------------------

    def admit(self, c: ClientConnection) -> None:
        """``c`` completed its handshake: a client (not a replicant) whose user or node has
        a bandwidth budget gets a scheduler."""
        cfg = self._config
        if c.delta_wanted and c.role is Role.CLIENT and cfg.keyed_deltas:
            c.deltas = KeyedDeltas(
                self.codec,
                self.outbox.encoder,
                cfg.scheduler_max_keys,
                cfg.max_pending_bytes,
                cfg.datagram_refresh if c.dgram is not None else 0,
                self.delta_counters,
                c.dgram is not None,
                c.key_slots,
            )
        budget = cfg.bandwidth_for(c.user)
        if budget is None or c.role is not Role.CLIENT or not self.enabled:
            return
        self._start_scheduler(c, budget)

    def _start_scheduler(self, c: ClientConnection, budget: int) -> None:
        cfg = self._config
        c.sched = Scheduler(
            budget,
            cfg.send_interval,
            cfg.scheduler_max_keys,
            cfg.max_pending_bytes,
            self.outbox.settings.now,
        )
        c.sched_mark = c.bytes_out + len(c.out)
        self.scheduled[c.id] = c

    def rebudget(self, c: ClientConnection) -> None:
        """A reload changed budgets: ``c``'s scheduler takes its new budget and send
        interval; a client that had none and now has one gets a scheduler; one whose
        budget was removed keeps its scheduler, unlimited (its keyed state still goes
        out at the send tick, all of it, until it reconnects)."""
        if c.role is not Role.CLIENT:
            return
        cfg = self._config
        budget = cfg.bandwidth_for(c.user)
        sched = c.sched
        if sched is None:
            if budget is not None and self.enabled:
                self._start_scheduler(c, budget)
            return
        sched.budget = budget if budget is not None else UNLIMITED
        sched.interval = cfg.send_interval

    def _delta(
        self,
        c: ClientConnection,
        deltas: KeyedDeltas,
        sub: LocalSubscription,
        prefix: bytes,
        tail: bytes,
        key: str,
    ) -> bytes | int:
        """A keyed message to a client with deltas: numbered (``kseq``), as a delta
        against the key's acknowledged value when there is one, then scheduled (a
        budget), queued as a datagram (QUIC), or returned for the stream (bytes)."""
        sid = sub.sid
        k = (sid, key)
        sched = c.sched
        # the key's last value was never written (superseded while scheduled or coalesced)
        unsent = k in sched.waiting if sched is not None else k in c.keyed
        subject, reply, payload, _ = self.cur
        got = deltas.frame(sid, key, prefix, tail, subject, reply, payload, unsent)
        if got is None:  # not tracked (table full, or given up): the value whole, no kseq
            frame, n = prefix + tail, 0
        else:
            frame, n = got
        if sched is not None:
            return self._schedule(c, sched, sub, frame, key)
        if (
            n
            and c.dgram is not None
            and not c.dgram.place(sid, key, frame, n, sub.remaining is not None)
        ):
            return self._sent_datagram(c, sub)
        return frame

    def _schedule(
        self, c: ClientConnection, sched: Scheduler, sub: LocalSubscription, frame: bytes, key: str
    ) -> int:
        """A keyed message for a client with a budget: its scheduler holds the newest
        value per ``(sid, key)`` until a send tick has room for it.  Its weight is the
        relevance weight times the publisher priority (:attr:`priority`, 1 without)."""
        now = self.outbox.settings.now
        relevance = self.relevance
        k = (sub.sid, key)
        p = self.priority
        prio = 1.0 if p is None else p
        if relevance is None:
            ok = sched.offer(k, frame, now, 1.0, 0.0, prio)
        elif sched.supersede(k, frame, now, RELEVANCE_TTL, prio):
            ok = True
        else:
            st = sched.keys.get(k)
            if st is not None and now - st.rated < RELEVANCE_TTL:
                ok = sched.offer(k, frame, now, st.weight, st.min_interval, prio)
            else:
                weight, min_interval = relevance(sched.focus, self.cur[0], key)
                ok = sched.offer(k, frame, now, weight, min_interval, prio)
                st = sched.keys.get(k)
                if ok and st is not None:
                    st.rated = now
        if not ok:
            return 0
        c.payload_out += self.cur[3]
        if sub.remaining is not None:
            sub.remaining -= 1
            if sub.remaining < 1:  # UNSUB with max_msgs: counted when scheduled
                self._remove_sub(sub)
        return 1

    def send_tick(self, now: float) -> None:
        """The send tick: every client with a budget is charged what it was written since
        the last tick and gets the keyed values that fit.  Output the shell has not
        taken yet (more than two ticks' worth) holds keyed values back: the link is
        slower than the budget."""
        writable = self._writable
        for cid, c in list(self.scheduled.items()):
            sched = c.sched
            if c.state is not _OPEN or sched is None:
                del self.scheduled[cid]
                if sched is not None:
                    self._retire(sched)
                continue
            out = c.out
            mark = c.bytes_out + len(out)
            reliable = mark - c.sched_mark
            hold = len(out) > 2 * sched.budget * sched.interval
            n = sched.tick(
                now,
                reliable if reliable > 0 else 0,
                out,
                c.frame_sizes,
                c.subs,
                hold,
                None if c.dgram is None else self._lane(c),
            )
            c.sched_mark = c.bytes_out + len(out)
            if n:
                c.messages_out += n
                if not c.dirty:
                    c.dirty = True
                    writable.append(c)

    def _lane(self, c: ClientConnection) -> Callable[[tuple[int, str], bytes], bool]:
        """What a send tick offers each keyed value of ``c`` (a client with a budget
        whose transport carries datagrams): its datagram lane, where the value goes
        unless it is the key's periodic reliable refresh or too large."""
        lane = c.dgram
        assert lane is not None
        deltas = c.deltas

        def place(k: tuple[int, str], frame: bytes) -> bool:
            if deltas is not None:  # numbered by the deltas (their kseq)
                st = deltas.keys.get(k)
                if st is None or lane.place(k[0], k[1], frame, st.kseq):
                    return False
            elif not lane.place_latest(k[0], k[1], frame):
                return False
            self.datagrams_out += 1
            return True

        return place

    def ack(self, c: ClientConnection, acks: tuple[int | str, ...]) -> None:
        """A client's KACK: flat (sid, key, kseq) triples.  From a client without deltas,
        or past :data:`MAX_ACKS` triples in one frame, ignored and counted."""
        deltas = c.deltas
        counters = self.delta_counters
        n = len(acks) // 3
        if deltas is None:
            counters.acks_ignored += n
            return
        if n > MAX_ACKS:
            counters.acks_ignored += n - MAX_ACKS
            n = MAX_ACKS
        ack = deltas.ack
        for j in range(0, 3 * n, 3):
            ack(acks[j], acks[j + 1], acks[j + 2])  # type: ignore[arg-type]

    def _retire(self, s: Scheduler) -> None:
        gone = self._gone
        gone[0] += s.keyed_sent
        gone[1] += s.keyed_bytes
        gone[2] += s.reliable_bytes
        gone[3] += s.superseded
        gone[4] += s.refused

    def scheduler_totals(self) -> dict[str, int]:
        """The node's scheduler counters (``Statistics.scheduled_*``)."""
        sent, keyed, reliable, superseded, refused = self._gone
        pending = 0
        live = [c.sched for c in self.scheduled.values() if c.sched is not None]
        for s in live:
            sent += s.keyed_sent
            keyed += s.keyed_bytes
            reliable += s.reliable_bytes
            superseded += s.superseded
            refused += s.refused
            pending += s.pending
        return {
            "scheduled_clients": len(live),
            "scheduled_keyed_msgs": sent,
            "scheduled_keyed_bytes": keyed,
            "scheduled_reliable_bytes": reliable,
            "scheduled_superseded": superseded,
            "scheduled_refused": refused,
            "scheduled_pending_keys": pending,
        }

    def _sent_datagram(self, c: ClientConnection, sub: LocalSubscription) -> int:
        """A keyed message went on ``c``'s datagram lane (issue 20)."""
        c.messages_out += 1
        c.payload_out += self.cur[3]
        self.datagrams_out += 1
        if not c.dirty:
            c.dirty = True
            self._writable.append(c)
        left = sub.remaining
        if left is not None:  # auto-unsubscribe (max_msgs), as for the stream
            sub.remaining = left - 1
            if left <= 1:
                self._remove_sub(sub)
        return 1

    def _deliver_internal(self, sub: LocalSubscription, tail: bytes) -> int:
        """A node's own subscription matched: its handler runs after the current batch."""
        handler = sub.conn.handlers.get(sub.sid)  # type: ignore[attr-defined]
        if handler is not None:
            self.internal.append((handler, tail))
        return 0

    def _overflow(self, c: ClientConnection, size: int) -> bool:
        """``c`` would pass max_pending_bytes; apply its policy.  True: append anyway."""
        if not c.slow:
            c.slow = True
            self.slow_consumers += 1
        policy = self._policy
        if policy == "drop-new":
            c.dropped += 1
            self.dropped_messages += 1
            return False
        if policy == "drop-oldest":
            if size > self._max_pending:
                c.dropped += 1
                self.dropped_messages += 1
                return False
            sizes = c.frame_sizes
            assert sizes is not None
            drop = 0
            while sizes and len(c.out) - drop + c.keyed_bytes + size > self._max_pending:
                drop += sizes.popleft()
                c.dropped += 1
                self.dropped_messages += 1
            del c.out[:drop]
            return True
        if policy == "coalesce":
            return self._resync(c)
        self._slow(c, "pending output")
        return False

    def _resync(self, c: ClientConnection) -> bool:
        """Graded slow-client policy, second grade: drop the event backlog (keyed state
        stays, latest value per key), tell the client to resynchronise; after
        ``max_resyncs`` in a row without the client catching up, disconnect it."""
        c.resync_streak += 1
        if c.resync_streak > self._max_resyncs:
            self._slow(c, f"still behind after {self._max_resyncs} resyncs")
            return False
        sizes = c.frame_sizes
        assert sizes is not None
        dropped = len(sizes)
        c.dropped += dropped
        self.dropped_messages += dropped
        c.resyncs += 1
        self.resyncs += 1
        c.out = bytearray()
        sizes.clear()
        self.outbox.error(
            c,
            ErrorCode.RESYNC,
            f"fell behind: {dropped} events dropped; keyed state follows (resync {c.resyncs})",
        )
        return True

    def _slow(self, c: ClientConnection, what: str) -> None:
        if not c.slow:
            c.slow = True
            self.slow_consumers += 1
        c.out = bytearray()  # the backlog will never be read; free it now
        c.keyed.clear()
        c.keyed_bytes = 0
        if c.frame_sizes is not None:
            c.frame_sizes.clear()
        self.outbox.fail(
            c,
            ErrorCode.SLOW_CONSUMER,
            f"slow consumer: {what} passed max_pending_bytes={self._max_pending}",
            count=False,
        )
