"""The client library: connect to a node, publish, subscribe, request, flush.

Every call is trio-native; there are no ``timeout=`` parameters — wrap calls in
:func:`trio.fail_after` / :func:`trio.move_on_after`.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_SUBSCRIPTION_BUFFER",
    "RECENT_INPUTS",
    "Client",
    "ConnectionClosedError",
    "ConnectionEvent",
    "Message",
    "PayloadTooLargeError",
    "ServerError",
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

from ._errors import ErrorCode, MeshgateError, RemoteProtocolError
from ._nursery import open_unwrapping_nursery
from ._reserved import NOTICE_SID, input_subject
from .protocol import (
    PROTOCOL_VERSION,
    Decoder,
    Encoder,
    Headered,
    Hello,
    Info,
    Opcode,
    Ping,
    Pong,
    Role,
    to_ext,
    to_frame,
)
from .protocol.game import ClientInput
from .protocol.nats import encode_headers, parse_headers
from .subjects import validate_pattern, validate_subject
from .transports import connect_stream, get_transport

#: Messages a subscription buffers before it drops new ones (see :class:`Subscription`).
DEFAULT_SUBSCRIPTION_BUFFER = 65536
#: Game inputs a client keeps to send again after a reconnect (see :meth:`Client.send_input`).
RECENT_INPUTS = 256
_OUT_HIGH_WATER = 4 * 1024 * 1024


class Message(NamedTuple):
    """A received message (not the wire frame :class:`meshgate.protocol.Message`)."""

    subject: str
    payload: bytes
    reply: str | None
    #: the message's headers (``{name: [values]}``), or None if it has none; NATS
    #: clients' headers arrive here, and :meth:`Client.publish` can send them
    headers: dict[str, list[str]] | None = None


def _message(subject: str, payload: bytes, reply: str | None) -> Message:
    if type(payload) is not Headered:
        return Message(subject, payload, reply)
    try:
        _, headers = parse_headers(payload.headers)
    except (ValueError, UnicodeDecodeError):
        headers = {}
    return Message(subject, bytes(payload), reply, headers)


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


class ConnectionClosedError(MeshgateError):
    """The connection to the node is closed; ``error`` is the node's reason, if it gave one."""

    def __init__(self, message: str, error: ServerError | None = None) -> None:
        self.error = error
        super().__init__(message)


class ServerError(MeshgateError):
    """An error frame from the node: ``code`` (an :class:`~meshgate.ErrorCode`) and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason
        try:
            name = ErrorCode(code).name
        except ValueError:
            name = str(code)
        super().__init__(f"{name}: {reason}")


class PayloadTooLargeError(MeshgateError):
    """A publish was refused locally: the payload exceeds the node's ``max_payload``."""


class Subscription:
    """Messages on one subscription, in order.

    The buffer holds at most ``max_buffered`` messages; when it is full, new
    messages for this subscription are dropped and counted in
    :attr:`dropped` (the node and other subscriptions are unaffected).
    With ``on_message``, each message is handed to that callback (in the client's
    reader task; it must not block) instead of the buffer.
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
        self._remaining: int | None = None
        self._active = True
        self._lost = False  # the client gave up its connection (not an unsubscribe)

    def _push(self, msg: Message) -> None:
        if self._on_message is not None:
            self._on_message(msg)
            return
        try:
            self._send.send_nowait(msg)
        except trio.WouldBlock:
            self.dropped += 1
            return
        except trio.ClosedResourceError:
            return
        if self._remaining is not None:
            self._remaining -= 1
            if self._remaining <= 0:
                self._finish()

    def _finish(self) -> None:
        if self._active:
            self._active = False
            self._client._subs.pop(self.sid, None)
            self._send.close()

    async def receive(self) -> Message:
        """The next message; raises :class:`ConnectionClosedError` once closed and drained."""
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._client._closed_error() from None

    def receive_nowait(self) -> Message:
        """The next message if one is buffered, else raise :class:`trio.WouldBlock`."""
        try:
            return self._receive.receive_nowait()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._client._closed_error() from None

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        while True:
            try:
                yield await self._receive.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                if self._lost:  # the connection failed for good: say so, do not just end
                    raise self._client._closed_error() from None
                return

    async def unsubscribe(self, max_msgs: int | None = None) -> None:
        """Stop now, or after ``max_msgs`` more messages (then iteration ends)."""
        if not self._active:
            return
        if max_msgs:
            self._remaining = max_msgs
            await self._client._send_raw(Opcode.UNSUB, self.sid, max_msgs)
        else:
            self._finish()
            await self._client._send_raw(Opcode.UNSUB, self.sid, None)


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
    ) -> None:
        self._stream = stream
        self.name = name
        self._token = token
        self._role = role
        #: the URL of the node this client is connected to (None for a given stream)
        self.url = url
        self._redial = redial
        self._ping_interval = ping_interval
        self._max_pings_out = max_pings_out
        self._pings_out = 0
        self._explicit_close = False
        self._established = False  # the node accepted us once: a loss is worth a redial
        self._conn_scope: trio.CancelScope | None = None
        #: times the client reconnected (to this node or another)
        self.reconnects = 0
        #: the cluster's client URLs as the node told them (tried after the given ones)
        self.known_urls: tuple[str, ...] = ()
        self._events_send, self._events = trio.open_memory_channel[ConnectionEvent](256)
        #: the secret this client's game identity is derived from (same on every reconnect)
        self._session = session if session is not None else os.urandom(16).hex()
        self._recent_inputs: deque[bytes] = deque(maxlen=RECENT_INPUTS)
        self._enc = Encoder()
        self._dec = Decoder(max_frame_bytes=64 * 1024 * 1024)
        self._out = bytearray()
        self._wake = trio.Event()
        self._drained = trio.Event()
        self._subs: dict[int, Subscription] = {}
        self._sids = itertools.count(1)
        self._pongs: deque[trio.Event | None] = deque()  # None: a keepalive PING
        self._closed = False
        self._error: ServerError | None = None
        self._transport_error: BaseException | None = None
        #: the node's payload limit, learned in the handshake
        self.max_payload = 0
        #: the node's name and cluster, learned in the handshake
        self.server_name = ""
        self.server_cluster: str | None = None
        #: times the node dropped this client's event backlog (it fell behind)
        self.resyncs = 0
        #: error frames that did not close the connection (e.g. permission denied)
        self.errors: deque[ServerError] = deque(maxlen=100)
        self._inbox_prefix = f"_INBOX.{os.urandom(8).hex()}"
        self._inbox_sub: Subscription | None = None
        self._requests: dict[str, trio.MemorySendChannel[Message]] = {}
        self._req_ids = itertools.count(1)
        self._handshake_done = trio.Event()
        self._corrections_send, self._corrections = trio.open_memory_channel[Message](4096)

    # -- plumbing ------------------------------------------------------------------------------

    def _loss_reason(self) -> str:
        """Why the connection ended: the node's error, the transport's, or ""."""
        if self._error is not None:
            return str(self._error)
        if self._transport_error is not None:
            return f"transport: {self._transport_error.__cause__ or self._transport_error}"
        return ""

    def _closed_error(self) -> ConnectionClosedError:
        reason = self._loss_reason()
        message = f"connection closed ({reason})" if reason else "connection closed"
        err = ConnectionClosedError(message, self._error)
        err.__cause__ = self._transport_error
        return err

    async def _queue(self, data: bytes) -> None:
        if self._closed:
            raise self._closed_error()
        self._out += data
        self._wake.set()
        if len(self._out) > _OUT_HIGH_WATER:
            await self._drained.wait()  # set by the writer, and when the connection dies
            if self._closed:
                raise self._closed_error()
        else:
            await trio.lowlevel.checkpoint()

    async def _send_raw(self, op: Opcode, *fields: object) -> None:
        await self._queue(self._enc.encode_raw(int(op), *fields))

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            if self._out:
                data, self._out = self._out, bytearray()
                try:
                    await self._stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    self._transport_error = self._transport_error or exc
                    self._lose()
                    return
            self._drained.set()
            self._drained = trio.Event()

    async def _reader(self) -> None:
        dec = self._dec
        try:
            while True:
                try:
                    data = await self._stream.receive_some(64 * 1024)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    self._transport_error = self._transport_error or exc
                    return
                if not data:
                    return
                dec.feed(data)
                while (f := dec.next_raw()) is not None:
                    op = f[0]
                    if op == Opcode.MSG:
                        sub = self._subs.get(f[1])
                        if sub is not None:
                            sub._push(_message(f[2], f[4], f[3]))
                        elif f[1] == NOTICE_SID:  # the node's notices: speculation answers
                            try:
                                self._corrections_send.send_nowait(_message(f[2], f[4], f[3]))
                            except trio.WouldBlock:
                                pass
                    else:
                        self._control(op, f)
        except RemoteProtocolError as exc:
            self._error = ServerError(int(exc.code), f"bad frame from node: {exc.reason}")
        finally:
            self._lose()

    def _control(self, op: int, f: tuple[object, ...]) -> None:
        if op == Opcode.PONG:
            self._pings_out = 0  # any answer shows the node is alive
            if self._pongs:
                waiter = self._pongs.popleft()
                if waiter is not None:
                    waiter.set()
        elif op == Opcode.PING:
            self._out += _PONG
            self._wake.set()
        elif op == Opcode.ERROR:
            err = ServerError(f[1], f[2])  # type: ignore[arg-type]
            if err.code == ErrorCode.RESYNC:
                self.resyncs += 1
                self.errors.append(err)
            elif err.code == ErrorCode.PERMISSION_DENIED:
                self.errors.append(err)
            else:
                self._error = err
        elif op == Opcode.INFO:
            info = to_frame(f)
            assert isinstance(info, Info)
            self.known_urls = tuple(u for u in info.client_urls if u)[:64]
        elif op == Opcode.HELLO:
            hello = to_frame(f)
            assert isinstance(hello, Hello)
            self.max_payload = hello.max_payload
            self.server_name = hello.name
            self.server_cluster = hello.cluster
            self._handshake_done.set()

    def _lose(self) -> None:
        """This connection is over (the supervisor decides whether to reconnect)."""
        if self._conn_scope is not None:
            self._conn_scope.cancel()

    async def _pinger(self) -> None:
        """Keepalive: a node that answers no PING for ``max_pings_out`` intervals is hung."""
        assert self._ping_interval is not None
        while True:
            await trio.sleep(self._ping_interval)
            if self._pings_out >= self._max_pings_out:
                self._transport_error = self._transport_error or ConnectionError(
                    f"no PONG from the node for {self._max_pings_out} pings"
                )
                await trio.aclose_forcefully(self._stream)
                self._lose()
                return
            self._pings_out += 1
            self._pongs.append(None)
            self._out += _PING
            self._wake.set()

    async def _serve_connection(self) -> None:
        """Read, write and ping on the current stream until it is lost."""
        async with trio.open_nursery() as nursery:
            self._conn_scope = nursery.cancel_scope
            nursery.start_soon(self._writer)
            nursery.start_soon(self._reader)
            if self._ping_interval is not None:
                nursery.start_soon(self._pinger)

    def _final(self) -> bool:
        """The node refused us for good: reconnecting would only repeat it."""
        return self._error is not None and self._error.code in (
            ErrorCode.AUTH_FAILED,
            ErrorCode.HANDSHAKE_REFUSED,
            ErrorCode.PERMISSION_DENIED,
        )

    async def _supervise(self) -> None:
        """Serve the connection; when it is lost, reconnect (if allowed) and resume."""
        try:
            while True:
                await self._serve_connection()
                if (
                    self._explicit_close
                    or self._redial is None
                    or not self._established
                    or self._final()
                ):
                    return
                self._event("disconnected", self._loss_reason())
                await trio.aclose_forcefully(self._stream)
                found = await self._redial(self.url, self.known_urls)
                if found is None:
                    return
                self._stream, self.url = found
                self._resume()
                self._event("reconnected", "")
        finally:
            self._mark_closed()

    def _resume(self) -> None:
        """A new connection: say HELLO again, subscribe again (same sids), then what was
        queued meanwhile, then a PING for every flush still waiting."""
        self.reconnects += 1
        self._error = None
        self._transport_error = None
        self._pings_out = 0
        self._dec = Decoder(max_frame_bytes=64 * 1024 * 1024)
        waiting = [w for w in self._pongs if w is not None]
        self._pongs = deque(waiting)
        hello = self._enc.encode(
            Hello(
                version=PROTOCOL_VERSION,
                role=self._role.value,
                name=self.name,
                token=self._token,
                session=self._session,
            )
        )
        subs = b"".join(
            self._enc.encode_raw(int(Opcode.SUB), sid, s.pattern, s.queue)
            + (
                self._enc.encode_raw(int(Opcode.UNSUB), sid, s._remaining)
                if s._remaining is not None
                else b""
            )
            for sid, s in self._subs.items()
            if s._active
        )
        retries = b"".join(self._recent_inputs)  # the owner applies each once
        self._out = bytearray(hello + subs + retries) + self._out + _PING * len(waiting)
        self._wake.set()

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
        self._events_send.close()
        self._handshake_done.set()
        self._drained.set()  # a publish waiting for room must learn the connection died
        for sub in list(self._subs.values()):
            sub._lost = not self._explicit_close
            sub._finish()
        self._corrections_send.close()
        while self._pongs:
            waiter = self._pongs.popleft()
            if waiter is not None:
                waiter.set()
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
    ) -> None:
        """Publish ``payload`` on ``subject``.  ``key`` marks coalescable state;
        ``headers`` (name to value or values) travel with the message to every
        subscriber, meshgate's and NATS clients' alike, across routes and gateways.

        Raises :class:`PayloadTooLargeError` locally if the payload exceeds the
        node's ``max_payload``, and :class:`~meshgate.InvalidSubjectError` for
        a bad subject, without sending anything.
        """
        if self.max_payload and len(payload) > self.max_payload:
            raise PayloadTooLargeError(
                f"payload of {len(payload)} bytes exceeds the node's max_payload={self.max_payload}"
            )
        validate_subject(subject)
        if reply is not None:
            validate_subject(reply)
        body: object = bytes(payload)
        if headers:
            body = to_ext(Headered(payload, encode_headers(headers)))
        await self._queue(self._enc.encode_raw(_PUB, subject, reply, body, key))

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
                with trio.CancelScope(shield=True):
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
        validate_pattern(pattern)
        if queue is not None:
            validate_subject(queue)
        sid = next(self._sids)
        sub = Subscription(self, sid, pattern, queue, max_buffered, on_message)
        self._subs[sid] = sub
        await self._send_raw(Opcode.SUB, sid, pattern, queue)
        return sub

    async def flush(self) -> None:
        """A round trip: when this returns, the node has processed everything sent before."""
        ev = trio.Event()
        self._pongs.append(ev)
        await self._queue(_PING)
        await ev.wait()
        if self._closed:
            raise self._closed_error()

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
        once."""
        data = bytes(data)
        payload = ClientInput.pack(seq, data, relay)
        subject = input_subject(entity)
        await self.publish(subject, payload)
        # kept without the relay: a retry must not relay the move a second time
        retry = payload if relay is None else ClientInput.pack(seq, data)
        self._recent_inputs.append(self._enc.encode_raw(_PUB, subject, None, retry, None))

    async def receive_correction(self) -> Message:
        """The next confirm (reply ``$CONF.…``) or correction (``$CORR.…``) of this
        client's own speculative inputs."""
        try:
            return await self._corrections.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._closed_error() from None

    async def request(self, subject: str, payload: bytes = b"") -> Message:
        """Publish with a unique reply subject and return the first reply."""
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
                return await receive.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                raise self._closed_error() from None
        finally:
            self._requests.pop(token, None)

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
        if not self._closed and self._out:
            with trio.move_on_after(1), trio.CancelScope(shield=True):
                self._wake.set()
                await self._drained.wait()
        self._mark_closed()
        await trio.aclose_forcefully(self._stream)


_PUB = int(Opcode.PUB)
_PING = Encoder().encode(Ping())
_PONG = Encoder().encode(Pong())


@asynccontextmanager
async def _running(client: Client) -> AsyncIterator[Client]:
    """Run ``client`` (handshake first) for the duration of the block."""
    refused: ConnectionClosedError | None = None
    async with open_unwrapping_nursery() as nursery:
        nursery.start_soon(client._supervise)
        try:
            await client._queue(
                client._enc.encode(
                    Hello(
                        version=PROTOCOL_VERSION,
                        role=client._role.value,
                        name=client.name,
                        token=client._token,
                        session=client._session,
                    )
                )
            )
            await client._handshake_done.wait()
            await client.flush()  # the node accepted our HELLO (or said why not)
            client._established = True
        except ConnectionClosedError as exc:
            refused = exc  # raised below, outside the nursery, so callers can catch it plainly
        if refused is None:
            try:
                yield client
            finally:
                with trio.CancelScope(shield=True):
                    await client.aclose()
        else:
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
) -> AsyncIterator[Client]:
    """A :class:`Client` over a stream you opened (any ``trio.abc.Stream`` to a node's
    client port); the block runs while connected (no reconnect: the stream is yours).
    Same errors as :func:`connect`."""
    client = Client(stream, name=name or "client", token=token, role=role)
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
) -> AsyncIterator[Client]:
    """Connect to the node at ``url`` (or the first of several that answers); the block
    runs while connected.

    With ``reconnect`` (the default), a lost connection is reopened to any of the URLs
    (the lost one last), with jittered backoff for up to ``max_reconnect_attempts``
    passes over them (None: forever); subscriptions resume with the same ids, and what
    is published meanwhile waits in the client's bounded buffer.  The client pings its
    node every ``ping_interval`` seconds and treats a node that leaves ``max_pings_out``
    pings unanswered as lost.  :meth:`Client.connection_events` reports every change;
    once the client gives up, subscriptions raise :class:`ConnectionClosedError`.
    Reconnecting needs ``tcp://``, ``tls://`` or ``memory://`` URLs.

    Raises :class:`ConnectionClosedError` if the node refuses the handshake (for
    example a bad token), and :class:`OSError` if no URL can be reached at all.
    """
    urls = [url] if isinstance(url, str) else list(url)
    if not urls:
        raise ValueError("connect() needs at least one URL")
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
        )
        async with _running(client):
            yield client
