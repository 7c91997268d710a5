"""The trio client: :class:`ClientProtocol` over a ``trio.abc.Stream``.

This module only moves bytes and wakes tasks: a reader feeds the protocol and hands
its events to subscriptions and waiters, a writer sends what the protocol queued, a
pinger calls its keepalive, and a supervisor redials and resumes after a loss.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_SUBSCRIPTION_BUFFER",
    "Client",
    "ConnectionEvent",
    "Subscription",
    "connect",
    "connect_with_stream",
]

import itertools
import os
import random
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import NamedTuple

import trio

from .._errors import ErrorCode, MeshgateError
from .._nursery import open_unwrapping_nursery
from ..protocol import DeltaCodec, Role, XorDelta
from ..transports import connect_stream, get_transport
from ._protocol import (
    ClientEvent,
    ClientProtocol,
    Connected,
    ConnectionClosedError,
    ConnectionLost,
    Message,
    NoRespondersError,
    NoticeReceived,
    PongReceived,
    ServerError,
    ServerErrorReceived,
    SubscriptionEnded,
    check_session,
)

#: Messages a subscription buffers before it drops new ones (see :class:`Subscription`).
DEFAULT_SUBSCRIPTION_BUFFER = 65536
_OUT_HIGH_WATER = 4 * 1024 * 1024
#: the default delta codec (issue 21: deltas against acknowledged keyed state)
_XOR = XorDelta()


class ConnectionEvent(NamedTuple):
    """A change of a client's connection (:meth:`Client.connection_events`)."""

    #: ``"disconnected"``, ``"reconnected"`` or ``"closed"`` (the last event)
    kind: str
    #: the node URL it concerns (the new one for ``reconnected``)
    url: str | None
    #: why, for ``disconnected`` and ``closed`` (empty when the client closed itself)
    reason: str


#: how a client finds a node again: ``redial(lost_url, learned_urls) -> (stream, url) | None``
Redial = Callable[[str | None, tuple[str, ...]], Awaitable["tuple[trio.abc.Stream, str] | None"]]


class Subscription:
    """Messages on one subscription, in order.

    The buffer holds at most ``max_buffered`` messages; when it is full, new
    messages for this subscription are dropped and counted in
    :attr:`dropped` (the node and other subscriptions are unaffected).
    With ``on_message``, each message is handed to that callback (in the client's
    reader task; it must not block) instead of the buffer.

    If the node refuses the subscription (its permissions, a reserved ``$`` subject,
    or permissions narrowed by a reload), it is over: :meth:`receive`,
    :meth:`receive_nowait` and iteration raise that :class:`~meshgate.PermissionDeniedError`
    (also :attr:`error`) once the buffer is drained, instead of waiting forever.
    """

    def __init__(
        self,
        client: Client,
        sid: int,
        pattern: str,
        queue: str | None,
        size: int,
        on_message: Callable[[Message], None] | None = None,
    ) -> None:
        self._client = client
        self._on_message = on_message
        self.sid = sid
        self.pattern = pattern
        self.queue = queue
        self._send, self._receive = trio.open_memory_channel[Message](size)
        #: messages dropped because the buffer was full
        self.dropped = 0
        self._active = True
        self._lost = False  # the client gave up its connection (not an unsubscribe)
        #: the node's refusal of this subscription (then it is over), else None
        self.error: ServerError | None = None

    def _finish(self) -> None:
        if self._active:
            self._active = False
            self._client._subs.pop(self.sid, None)
            self._send.close()

    def _refused(self, error: ServerError) -> None:
        """The node refused this subscription: it is over, and says why."""
        self.error = error
        self._finish()

    def _ended(self) -> MeshgateError:
        """What receiving from a finished subscription raises."""
        return self.error if self.error is not None else self._client._closed_error()

    async def receive(self) -> Message:
        """The next message; raises :class:`ConnectionClosedError` once closed and
        drained, the node's :class:`~meshgate.PermissionDeniedError` once refused and drained."""
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._ended() from None

    def receive_nowait(self) -> Message:
        """The next message if one is buffered, else raise :class:`trio.WouldBlock`
        (or the error that ended the subscription, as :meth:`receive`)."""
        try:
            return self._receive.receive_nowait()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._ended() from None

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        while True:
            try:
                yield await self._receive.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                if self._lost or self.error is not None:  # failed or refused: say so
                    raise self._ended() from None
                return

    async def unsubscribe(self, max_msgs: int | None = None) -> None:
        """Stop now, or after ``max_msgs`` more messages (then iteration ends)."""
        if not self._active:
            return
        if not max_msgs:
            self._finish()
        await self._client._unsubscribe(self.sid, max_msgs)


class Client:
    """A connection to a node.  Get one from :func:`connect`."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        name: str,
        token: str | None,
        role: Role = Role.CLIENT,
        url: str | None = None,
        redial: Redial | None = None,
        ping_interval: float | None = None,
        max_pings_out: int = 2,
        session: str | None = None,
        on_error: Callable[[ServerError], None] | None = None,
        delta_codec: DeltaCodec | None = _XOR,
    ) -> None:
        self._proto = ClientProtocol(
            delta_codec=delta_codec,
            name=name,
            token=token,
            role=role,
            session=session,
            ping_interval=ping_interval,
            max_pings_out=max_pings_out,
            on_message=self._deliver,
        )
        self._stream = stream
        #: the URL of the node this client is connected to (None for a given stream)
        self.url = url
        self._redial = redial
        self._explicit_close = False
        self._established = False  # the node accepted us once: a loss is worth a redial
        self._conn_scope: trio.CancelScope | None = None
        self._events_send, self._events = trio.open_memory_channel[ConnectionEvent](256)
        self._wake = trio.Event()
        self._drained = trio.Event()
        self._subs: dict[int, Subscription] = {}
        self._flushes: dict[int, trio.Event] = {}  # ping id -> its flush() waiting
        self._closed = False
        self._transport_error: BaseException | None = None
        #: the node's error frames that did not close the connection, newest last (at
        #: most 100): refusals (:class:`~meshgate.PermissionDeniedError`) and resync notices
        self.errors: deque[ServerError] = deque(maxlen=100)
        self._on_error = on_error
        # refusals not raised by a flush() yet, each with whether it claimed to be fatal
        self._unraised: list[tuple[ServerError, bool]] = []
        self._refusals: dict[int, ServerError] = {}  # ping id -> what its flush() raises
        self._inbox_prefix = f"_INBOX.{os.urandom(8).hex()}"
        self._inbox_sub: Subscription | None = None
        self._requests: dict[str, trio.MemorySendChannel[Message]] = {}
        self._req_ids = itertools.count(1)
        self._connected = trio.Event()  # the first handshake completed (or the client closed)
        self._corrections_send, self._corrections = trio.open_memory_channel[Message](4096)

    # -- what the protocol knows -----------------------------------------------------------------

    @property
    def name(self) -> str:
        """The client's name (in its HELLO)."""
        return self._proto.name

    @property
    def session(self) -> str:
        """The client's secret session key: keep it (privately) and pass it to
        :func:`connect` again after a restart to remain the same client."""
        return self._proto.session

    @property
    def reconnects(self) -> int:
        """Times the client reconnected (to this node or another)."""
        return self._proto.reconnects

    @property
    def known_urls(self) -> tuple[str, ...]:
        """The cluster's client URLs as the node told them (tried after the given ones)."""
        return self._proto.known_urls

    @property
    def max_payload(self) -> int:
        """The node's payload limit, learned in the handshake."""
        return self._proto.max_payload

    @property
    def server_name(self) -> str:
        """The node's name, learned in the handshake."""
        return self._proto.server_name

    @property
    def server_cluster(self) -> str | None:
        """The node's cluster, learned in the handshake."""
        return self._proto.server_cluster

    @property
    def resyncs(self) -> int:
        """Times the node dropped this client's event backlog (it fell behind)."""
        return self._proto.resyncs

    # -- plumbing ------------------------------------------------------------------------------

    def _loss_reason(self) -> str:
        """Why the connection ended: the node's error, the transport's, or ""."""
        if self._proto.error is not None:
            return str(self._proto.error)
        if self._transport_error is not None:
            return f"transport: {self._transport_error.__cause__ or self._transport_error}"
        return ""

    def _closed_error(self) -> ConnectionClosedError:
        reason = self._loss_reason()
        message = f"connection closed ({reason})" if reason else "connection closed"
        err = ConnectionClosedError(message, self._proto.error)
        err.__cause__ = self._transport_error
        return err

    async def _queued(self, pending: int) -> None:
        """The protocol queued frames (``pending`` bytes wait): wake the writer; past
        the high-water mark, wait until it has written them."""
        self._wake.set()
        if pending > _OUT_HIGH_WATER:
            await self._drained.wait()  # set by the writer, and when the connection dies
            if self._closed:
                raise self._closed_error()
        else:
            await trio.lowlevel.checkpoint()

    async def _unsubscribe(self, sid: int, max_msgs: int | None) -> None:
        if self._closed:
            raise self._closed_error()
        self._proto.unsubscribe(sid, max_msgs)
        await self._queued(self._proto.pending_bytes)

    async def _writer(self) -> None:
        proto = self._proto
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            data = proto.data_to_send()
            if data:
                try:
                    await self._stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    self._transport_error = self._transport_error or exc
                    self._lose()
                    return
            self._drained.set()
            self._drained = trio.Event()

    async def _reader(self) -> None:
        proto = self._proto
        try:
            while True:
                try:
                    data = await self._stream.receive_some(64 * 1024)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    self._transport_error = self._transport_error or exc
                    return
                for event in proto.receive_data(data):  # messages went to _deliver
                    if type(event) is ConnectionLost:
                        return
                    self._handle(event)
                if proto.pending_bytes:  # PONGs to the node's PINGs
                    self._wake.set()
        finally:
            self._lose()

    async def _datagram_reader(self, receive: Callable[[], Awaitable[bytes]]) -> None:
        """Unreliable datagrams (keyed state over QUIC) to their subscriptions."""
        proto = self._proto
        while True:
            data = await receive()
            if not data:
                return  # the connection is gone: the stream reader sees it too
            for event in proto.receive_datagram(data):  # messages went to _deliver
                self._handle(event)
            if proto.pending_bytes:  # acknowledgements of keyed state (deltas)
                self._wake.set()

    def _deliver(self, sid: int, msg: Message) -> None:
        """A message for a subscription (the protocol's ``on_message``: the hot path)."""
        sub = self._subs.get(sid)
        if sub is None:
            return
        if sub._on_message is not None:
            sub._on_message(msg)
            return
        try:
            sub._send.send_nowait(msg)
        except trio.WouldBlock:
            sub.dropped += 1
        except trio.ClosedResourceError:
            pass

    def _handle(self, event: ClientEvent) -> None:
        """Every event but the loss (messages go to :meth:`_deliver`)."""
        if type(event) is PongReceived:
            waiter = self._flushes.pop(event.ping_id, None)
            if waiter is not None:
                if self._unraised:  # refused before this PING: its flush() raises it
                    self._refusals[event.ping_id] = self._unraised[0][0]
                    self._unraised.clear()
                waiter.set()
        elif type(event) is NoticeReceived:  # the node's notices: speculation answers
            try:
                self._corrections_send.send_nowait(event.message)
            except trio.WouldBlock:
                pass
        elif type(event) is SubscriptionEnded:
            sub = self._subs.get(event.sid)
            if sub is not None:
                sub._finish()
        elif type(event) is ServerErrorReceived:
            error = event.error
            if error.sid is not None:
                sub = self._subs.get(error.sid)
                if sub is not None:
                    sub._refused(error)
            if not event.fatal:  # a fatal one is the protocol's error: the loss reports it
                self.errors.append(error)
            if error.code != ErrorCode.RESYNC:  # a notice, not a refusal of the caller's
                self._unraised.append((error, event.fatal))
                del self._unraised[:-100]
            if self._on_error is not None:
                self._on_error(error)
        elif type(event) is Connected:
            self._connected.set()

    def _lose(self) -> None:
        """This connection is over (the supervisor decides whether to reconnect)."""
        if self._conn_scope is not None:
            self._conn_scope.cancel()

    async def _pinger(self) -> None:
        """Keepalive: the protocol's timer, on trio's clock."""
        proto = self._proto
        while (deadline := proto.next_timer) is not None:
            await trio.sleep_until(deadline)
            for event in proto.tick(trio.current_time()):
                if type(event) is ConnectionLost:
                    self._transport_error = self._transport_error or ConnectionError(event.reason)
                    await trio.aclose_forcefully(self._stream)
                    self._lose()
                    return
            self._wake.set()

    async def _serve_connection(self) -> None:
        """Read, write and ping on the current stream until it is lost."""
        self._proto.connection_made(trio.current_time())
        self._wake.set()  # the HELLO and what waits for this connection
        async with trio.open_nursery() as nursery:
            self._conn_scope = nursery.cancel_scope
            nursery.start_soon(self._writer)
            nursery.start_soon(self._reader)
            nursery.start_soon(self._pinger)
            receive_datagram = getattr(self._stream, "receive_datagram", None)
            if receive_datagram is not None:  # QUIC: keyed state as datagrams
                nursery.start_soon(self._datagram_reader, receive_datagram)
        self._proto.connection_lost()
        # what ended the connection is the loss's reason, not a refusal to raise later
        self._unraised = [(e, fatal) for e, fatal in self._unraised if not fatal]

    async def _supervise(self) -> None:
        """Serve the connection; when it is lost, reconnect (if allowed) and resume."""
        try:
            while True:
                await self._serve_connection()
                if (
                    self._explicit_close
                    or self._redial is None
                    or not self._established
                    or self._proto.refused
                ):
                    return
                self._event("disconnected", self._loss_reason())
                await trio.aclose_forcefully(self._stream)
                found = await self._redial(self.url, self._proto.known_urls)
                if found is None:
                    return
                self._stream, self.url = found
                self._transport_error = None
                self._event("reconnected", "")
        finally:
            self._mark_closed()

    def _event(self, kind: str, reason: str) -> None:
        try:
            self._events_send.send_nowait(ConnectionEvent(kind, self.url, reason))
        except (trio.WouldBlock, trio.ClosedResourceError):
            pass

    def _mark_closed(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._event("closed", "" if self._explicit_close else str(self._closed_error()))
        self._proto.close()
        self._events_send.close()
        self._connected.set()
        self._drained.set()  # a publish waiting for room must learn the connection died
        for sub in list(self._subs.values()):
            sub._lost = not self._explicit_close
            sub._finish()
        self._corrections_send.close()
        for waiter in self._flushes.values():
            waiter.set()
        self._flushes.clear()
        for ch in self._requests.values():
            ch.close()

    # -- public API ----------------------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        """True once the client is closed for good (not while it reconnects)."""
        return self._closed

    def connection_events(self) -> trio.MemoryReceiveChannel[ConnectionEvent]:
        """Changes of the connection as they happen (``async for`` over it):
        ``disconnected``, ``reconnected``, and a last ``closed`` (its ``reason`` is empty
        for :meth:`aclose`).  Bounded: at most 256 unread events are kept."""
        return self._events

    async def publish(
        self,
        subject: str,
        payload: bytes = b"",
        *,
        reply: str | None = None,
        key: str | None = None,
        headers: Mapping[str, str | list[str]] | None = None,
        priority: float | None = None,
    ) -> None:
        """Publish ``payload`` on ``subject``.  ``key`` marks coalescable state;
        ``headers`` (name to value or values) travel with the message to every
        subscriber, meshgate's and NATS clients' alike, across routes and gateways.

        ``priority`` (with ``key``) multiplies the key's relevance weight in the send
        schedulers of receiving clients with a bandwidth budget: 2.0 is sent about
        twice as often as 1.0 (the default) when the budget is tight; from 0 to
        :data:`~meshgate.protocol.MAX_PRIORITY`, and honoured only if this
        connection's user may give priorities (``max_priority``; docs/scheduling.md,
        "Priority from the publisher").

        Raises :class:`PayloadTooLargeError` locally if the payload exceeds the
        node's ``max_payload``, :class:`~meshgate.InvalidSubjectError` for
        a bad subject and :class:`ValueError` for a bad ``priority``, without
        sending anything.
        """
        if self._closed:
            raise self._closed_error()
        pending = self._proto.publish(
            subject, payload, reply=reply, key=key, headers=headers, priority=priority
        )
        await self._queued(pending)

    @asynccontextmanager
    async def subscribe(
        self,
        pattern: str,
        *,
        queue: str | None = None,
        max_buffered: int = DEFAULT_SUBSCRIPTION_BUFFER,
    ) -> AsyncIterator[Subscription]:
        """Subscribe for the duration of the block (unsubscribed on exit)."""
        sub = await self.add_subscription(pattern, queue=queue, max_buffered=max_buffered)
        try:
            yield sub
        finally:
            if not self._closed and sub._active:
                # shielded so a cancelled block still unsubscribes, but bounded: a
                # connection that no longer drains must not hold the caller forever
                with trio.CancelScope(shield=True, deadline=trio.current_time() + 1):
                    try:
                        await sub.unsubscribe()
                    except ConnectionClosedError:
                        pass

    async def add_subscription(
        self,
        pattern: str,
        *,
        queue: str | None = None,
        max_buffered: int = DEFAULT_SUBSCRIPTION_BUFFER,
        on_message: Callable[[Message], None] | None = None,
    ) -> Subscription:
        """Subscribe until :meth:`Subscription.unsubscribe` (or the connection ends):
        for long-lived subscriptions handed to other tasks.  Prefer :meth:`subscribe`
        when a block scopes the subscription."""
        if self._closed:
            raise self._closed_error()
        sid = self._proto.subscribe(pattern, queue)
        sub = Subscription(self, sid, pattern, queue, max_buffered, on_message)
        self._subs[sid] = sub
        await self._queued(self._proto.pending_bytes)
        return sub

    async def flush(self) -> None:
        """A round trip: when this returns, the node has processed everything sent before.

        Raises the first refusal the node reported for what was sent before it (and
        no earlier ``flush()`` raised): a :class:`~meshgate.PermissionDeniedError` for a denied
        publish, subscription, input or relay (every one is also in :attr:`errors`
        and given to ``on_error``); :class:`ConnectionClosedError` if the connection
        is closed for good."""
        if self._closed:
            raise self._closed_error()
        ping_id = self._proto.ping()
        waiter = self._flushes[ping_id] = trio.Event()
        try:
            await self._queued(self._proto.pending_bytes)
            await waiter.wait()
        except BaseException:
            # cancelled: a later flush() raises what this one would have
            self._flushes.pop(ping_id, None)
            refusal = self._refusals.pop(ping_id, None)
            if refusal is not None:
                self._unraised.insert(0, (refusal, False))
            raise
        refusal = self._refusals.pop(ping_id, None)
        if self._closed:
            raise self._closed_error()
        if refusal is not None:
            raise refusal

    async def send_input(
        self, entity: str, seq: int, data: bytes, *, relay: str | None = None
    ) -> None:
        """Send a game input for ``entity`` with this client's sequence number ``seq``
        (increasing per client): the node routes it to the entity's current owner,
        holding it across hand-overs (requires ``GatewayConfig.replicants``).

        With ``relay`` (a subject matching ``GatewayConfig.speculative``), the node also
        relays ``data`` at once to every client interested in ``relay``, marked
        provisional (its ``reply`` is ``$PROV.<client>.<seq>``); the owner's confirm or
        correction arrives later on the same subscriptions (``$CONF.``/``$CORR.``) and,
        for this client, through :meth:`receive_correction`.

        The client keeps its last inputs (:data:`RECENT_INPUTS`) and sends them again
        after a reconnect: its session key makes the owner apply each sequence number
        once (also after a restart, with :func:`connect`'s ``session``).

        Raises :class:`~meshgate.NoGameLayerError` at once if the node does not run the
        game layer.  A ``relay`` subject that matches no ``speculative`` pattern is not
        relayed (the input still goes to its owner): the next :meth:`flush` raises the
        node's :class:`~meshgate.PermissionDeniedError`."""
        if self._closed:
            raise self._closed_error()
        await self._queued(self._proto.send_input(entity, seq, data, relay=relay))

    async def receive_correction(self) -> Message:
        """The next confirm (reply ``$CONF.…``) or correction (``$CORR.…``) of this
        client's own speculative inputs."""
        try:
            return await self._corrections.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._closed_error() from None

    async def request(self, subject: str, payload: bytes = b"") -> Message:
        """Publish with a unique reply subject and return the first reply.

        Raises :class:`~meshgate.NoRespondersError` as soon as the node knows nobody can receive
        the request: no subscriber on the node or its cluster, and no remote cluster
        that might have one (see the NATS page, "No responders", for exactly when).
        Otherwise it waits for the first reply however long it takes: bound it with
        :func:`trio.fail_after` (raises :class:`trio.TooSlowError`) or
        :func:`trio.move_on_after`, as every call here; there is no ``timeout=``."""
        if self._inbox_sub is None:
            self._inbox_sub = await self.add_subscription(
                f"{self._inbox_prefix}.*", max_buffered=1, on_message=self._route_reply
            )
        token = str(next(self._req_ids))
        send, receive = trio.open_memory_channel[Message](1)
        self._requests[token] = send
        try:
            await self.publish(subject, payload, reply=f"{self._inbox_prefix}.{token}")
            try:
                reply = await receive.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                raise self._closed_error() from None
        finally:
            self._requests.pop(token, None)
        headers = reply.headers
        if headers is not None and headers.get("Status") == ["503"] and not reply.payload:
            raise NoRespondersError(subject)
        return reply

    def _route_reply(self, msg: Message) -> None:
        ch = self._requests.pop(msg.subject.rsplit(".", 1)[-1], None)
        if ch is not None:
            try:
                ch.send_nowait(msg)
            except (trio.WouldBlock, trio.ClosedResourceError):
                pass

    async def aclose(self) -> None:
        """Close the connection for good (buffered publishes are flushed first, briefly)."""
        self._explicit_close = True
        if not self._closed and self._proto.pending_bytes:
            with trio.move_on_after(1), trio.CancelScope(shield=True):
                self._wake.set()
                await self._drained.wait()
        self._mark_closed()
        await trio.aclose_forcefully(self._stream)


@asynccontextmanager
async def _running(client: Client) -> AsyncIterator[Client]:
    """Run ``client`` (handshake first) for the duration of the block."""
    refused: ConnectionClosedError | None = None
    async with open_unwrapping_nursery() as nursery:
        nursery.start_soon(client._supervise)
        await client._connected.wait()  # the node accepted our HELLO (or said why not)
        if client.is_closed:
            refused = client._closed_error()  # raised below, outside the nursery
        else:
            client._established = True
            try:
                yield client
            finally:
                with trio.CancelScope(shield=True):
                    await client.aclose()
        if refused is not None:
            client._explicit_close = True
            await trio.aclose_forcefully(client._stream)
        nursery.cancel_scope.cancel()
    if refused is not None:
        raise refused


@asynccontextmanager
async def connect_with_stream(
    stream: trio.abc.Stream,
    *,
    name: str | None = None,
    token: str | None = None,
    role: Role = Role.CLIENT,
    session: str | None = None,
    on_error: Callable[[ServerError], None] | None = None,
    delta_codec: DeltaCodec | None = _XOR,
) -> AsyncIterator[Client]:
    """A :class:`Client` over a stream you opened (any ``trio.abc.Stream`` to a node's
    client port); the block runs while connected (no reconnect: the stream is yours).
    ``session``, ``on_error`` and the errors are as for :func:`connect`."""
    client = Client(
        stream,
        name=name or "client",
        token=token,
        role=role,
        session=session,
        on_error=on_error,
        delta_codec=delta_codec,
    )
    async with _running(client):
        yield client


def _redialer(
    urls: list[str], ssl_context: ssl.SSLContext | None, attempts: int | None, wait: float
) -> Redial:
    async def redial(
        lost: str | None, learned: tuple[str, ...]
    ) -> tuple[trio.abc.Stream, str] | None:
        """Every URL in turn, the given ones first, then those the node told us, the lost
        one last; jittered backoff between passes."""
        candidates = list(dict.fromkeys([*urls, *learned]))
        order = [u for u in candidates if u != lost] + [u for u in candidates if u == lost]
        passes = 0
        while attempts is None or passes < attempts:
            for u in order:
                try:
                    return await get_transport(u).connect(u, ssl_context=ssl_context), u
                except (OSError, MeshgateError):
                    continue
            passes += 1
            await trio.sleep(wait * min(10.0, 1.5 ** min(passes, 8)) * random.uniform(0.5, 1.0))
        return None

    return redial


@asynccontextmanager
async def connect(
    url: str | Sequence[str],
    *,
    name: str | None = None,
    token: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    role: Role = Role.CLIENT,
    reconnect: bool = True,
    max_reconnect_attempts: int | None = 60,
    reconnect_wait: float = 0.25,
    ping_interval: float | None = 10.0,
    max_pings_out: int = 2,
    session: str | None = None,
    on_error: Callable[[ServerError], None] | None = None,
    delta_codec: DeltaCodec | None = _XOR,
) -> AsyncIterator[Client]:
    """Connect to the node at ``url`` (or the first of several that answers); the block
    runs while connected.

    Mistakes are never silent.  What the client can check itself raises at the call
    (a bad subject, an oversized payload, an input to a node without the game layer).
    What only the node can judge (permissions, reserved ``$`` subjects, a relay
    subject that is not speculative) it refuses with an error frame and keeps the
    connection: the next :meth:`Client.flush` raises it (a
    :class:`~meshgate.PermissionDeniedError` with the node's ``code`` and ``reason``), a
    refused subscription's :meth:`Subscription.receive` raises it, and
    ``on_error(error)``, if given, is called with every error frame as it arrives (in
    the client's reader task: it must not block); :attr:`Client.errors` keeps the last
    100 that did not close the connection.

    ``session`` is the client's secret session key (16 to 256 characters; default: a
    new random one, :attr:`Client.session`).  The node derives the client's game
    identity from it (hashed with the account), so a game client that restarts, or
    reconnects with its own logic, and presents the same key again is the same
    client: the owner applies each of its input sequence numbers once, retries
    included, and its corrections find it on any node.  It is what NATS clients send
    as the ``Meshgate-Session`` header.  Keep it secret: who presents it acts as that
    client.

    With ``reconnect`` (the default), a lost connection is reopened to any of the URLs
    (the lost one last), with jittered backoff for up to ``max_reconnect_attempts``
    passes over them (None: forever); subscriptions resume with the same ids, and what
    is published meanwhile waits in the client's bounded buffer.  The client pings its
    node every ``ping_interval`` seconds and treats a node that leaves ``max_pings_out``
    pings unanswered as lost.  :meth:`Client.connection_events` reports every change;
    once the client gives up, subscriptions raise :class:`ConnectionClosedError`.
    Reconnecting needs ``tcp://``, ``tls://`` or ``memory://`` URLs.

    ``delta_codec`` decodes deltas against acknowledged keyed state from a node with
    ``keyed_deltas`` on and the same codec (:meth:`meshgate.Gateway.set_delta_codec`;
    default :class:`meshgate.protocol.XorDelta`); None: this client asks for none.

    Raises :class:`ValueError` for a session key out of bounds (before connecting),
    :class:`ConnectionClosedError` if the node refuses the handshake (for example a
    bad token), and :class:`OSError` if no URL can be reached at all.
    """
    urls = [url] if isinstance(url, str) else list(url)
    if not urls:
        raise ValueError("connect() needs at least one URL")
    if session is not None:
        check_session(session)  # before any connection: a bad key is the caller's mistake
    redial = _redialer(urls, ssl_context, max_reconnect_attempts, reconnect_wait)
    failure: OSError | None = None
    async with AsyncExitStack() as stack:
        for first in urls:
            try:
                stream = await stack.enter_async_context(
                    connect_stream(first, ssl_context=ssl_context)
                )
            except OSError as exc:
                failure = exc
                continue
            break
        else:
            assert failure is not None
            raise failure
        client = Client(
            stream,
            name=name or "client",
            token=token,
            role=role,
            url=first,
            redial=redial if reconnect else None,
            ping_interval=ping_interval,
            max_pings_out=max_pings_out,
            session=session,
            on_error=on_error,
            delta_codec=delta_codec,
        )
        async with _running(client):
            yield client
