"""The NATS port: client connections that speak the NATS text protocol.

A NATS client (:class:`NatsClientConnection`) is a client like any other (same accounts, users,
permissions, limits, slow-consumer policy and fan-out); only its wire differs.  This
module turns NATS operations into the client port's operations, and the node's output
for that connection (greeting, keepalive, errors, deliveries) into NATS text.

============================  ==============================================================
NATS                          meshgate
============================  ==============================================================
INFO (greeting)               HELLO; ``connect_urls`` are the cluster's NATS ports
CONNECT                       HELLO: ``auth_token``, or ``pass`` (with any ``user``), is
                              the user's token; ``name``; ``echo``, ``verbose``,
                              ``headers``, ``no_responders``
PUB / HPUB                    PUB; headers travel with the message (routes, gateways)
SUB subject [queue] sid       SUB (a NATS sid is any token; it is mapped to an integer)
UNSUB sid [max]               UNSUB
MSG / HMSG                    MSG (HMSG when the message has headers and the client said
                              ``headers: true``)
PING / PONG                   PING / PONG
-ERR '<text>'                 ERROR, with nats-server's text
SUB ``$MG.notice``            the node's notices (sid 0 on the meshgate port):
                              confirmations and corrections of this client's inputs
============================  ==============================================================

A game input is a PUB to ``$IN.<entity>`` with the msgpack payload
``[seq, data, relay?]``, or with headers ``Meshgate-Seq`` (and optionally
``Meshgate-Relay``, and ``Meshgate-Session``: a secret key of at least 16 characters
that keeps the client's game identity across reconnects) and the raw data as the
payload.
"""

from __future__ import annotations

__all__ = ["NOTICE_SUBJECT", "NatsPort", "NatsRender", "NatsState"]

import json
from typing import TYPE_CHECKING, Any

from .._errors import ErrorCode, RemoteProtocolError
from .._reserved import INPUT_PREFIX
from .._version import __version__
from ..protocol import PROTOCOL_VERSION, Headered, Hello, Role
from ..protocol.game import ClientInput
from ..protocol.nats import NatsParser, NatsProtocolError, parse_headers
from ._bus import Bus, Directory
from ._clients import ClientPort, session_identity
from ._conn import ConnState, NatsClientConnection
from ._natstext import NOTICE_SUBJECT
from ._outbox import Outbox, Settings

if TYPE_CHECKING:
    from ._fanout import FanOut

_OK = b"+OK\r\n"


class NatsState:
    """The NATS side of one client connection."""

    __slots__ = (
        "echo",
        "headers",
        "info_after_pong",
        "lang",
        "next_sid",
        "no_responders",
        "notice_sid",
        "parser",
        "sids",
        "verbose",
        "version",
    )

    def __init__(self, parser: NatsParser) -> None:
        self.parser = parser
        #: NATS sid -> the integer sid of the subscription in the core
        self.sids: dict[str, int] = {}
        self.next_sid = 0
        self.echo = True
        self.verbose = False
        self.headers = False
        self.no_responders = False
        #: what the client said it is in CONNECT
        self.lang = ""
        self.version = ""
        #: the NATS sid of its ``$MG.notice`` subscription, if any
        self.notice_sid: bytes | None = None
        #: an INFO (``connect_urls``) waits for the PONG that answers the first PING after
        #: CONNECT: clients wait for that PONG to finish connecting (nats-server's order)
        self.info_after_pong = False


class NatsPort:
    """NATS clients of one node: their operations become the client port's and the
    fan-out's; the node's output for them becomes NATS text."""

    def __init__(
        self,
        settings: Settings,
        outbox: Outbox,
        bus: Bus,
        directory: Directory,
        clients: ClientPort,
        fanout: FanOut,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.directory = directory
        self.clients = clients
        self.fanout = fanout
        #: the open NATS clients by id
        self.conns: dict[int, NatsClientConnection] = {}
        self._server_id = f"meshgate-{settings.config.name}"
        outbox.retirers[NatsClientConnection] = self.retire  # type: ignore[assignment]
        bus.on_nats_urls(self.tell_urls)

    # -- life -----------------------------------------------------------------------------------

    def new_state(self) -> NatsState:
        """The NATS side of a new client connection."""
        return NatsState(NatsParser(max_payload=self.settings.config.max_payload))

    def opened(self, conn: NatsClientConnection) -> None:
        """A NATS client connected: INFO first, then the client port's admission."""
        self.conns[conn.id] = conn
        self.outbox.append(conn, self.info(conn))
        self.clients.admit(conn)

    def retire(self, conn: NatsClientConnection, was_open: bool) -> None:
        """The connection stops counting (as a client of the client port too)."""
        self.conns.pop(conn.id, None)
        self.clients.retire(conn, was_open)

    def info(self, conn: NatsClientConnection) -> bytes:
        """The INFO line: the greeting, and again when the cluster's NATS ports change."""
        cfg = self.settings.config
        info: dict[str, Any] = {
            "server_id": self._server_id,
            "server_name": cfg.name,
            "version": __version__,
            "proto": 1,
            "go": "meshgate",
            "headers": True,
            "max_payload": cfg.max_payload,
            "client_id": conn.id,
        }
        if self.settings.draining:
            info["ldm"] = True
        if cfg.users:
            info["auth_required"] = True
        else:
            info["cluster"] = cfg.cluster
        if conn.state is ConnState.OPEN or not cfg.users:
            urls = self.directory.nats_urls()
            if len(urls) > 1:
                info["connect_urls"] = [u.split("://", 1)[-1] for u in urls]
        return b"INFO " + json.dumps(info, separators=(",", ":")).encode() + b"\r\n"

    def tell_urls(self) -> None:
        """The cluster's NATS ports changed: every open NATS client hears of them."""
        for conn in self.conns.values():
            if conn.state is ConnState.OPEN and not conn.nats.info_after_pong:
                self.outbox.append(conn, self.info(conn))

    def lame_duck(self) -> None:
        """The node is going away: every NATS client is told (``"ldm": true``) so that it
        moves to another node before this one closes it."""
        for conn in self.conns.values():
            if conn.state is ConnState.OPEN:
                self.outbox.append(conn, self.info(conn))

    # -- input ----------------------------------------------------------------------------------

    def receive(self, conn: NatsClientConnection, data: bytes | bytearray) -> None:
        """Bytes from a NATS client: every complete operation is carried out."""
        st = conn.nats
        parser = st.parser
        parser.feed(data)
        out = self.outbox
        publish = self.fanout.publish
        while conn.state < ConnState.CLOSING:
            if conn.state is ConnState.OPEN and not st.verbose and st.echo:
                # the hot path: a run of plain PUBs, parsed in one call
                for subject, reply, payload in parser.pubs():
                    publish(conn, subject, reply, payload, None)
                    if conn.state >= ConnState.CLOSING:
                        return
            try:
                op = parser.next()
            except (NatsProtocolError, UnicodeDecodeError) as exc:
                text = str(exc) if isinstance(exc, NatsProtocolError) else "Parser Error"
                out.protocol_errors += 1
                self._fail(conn, text)
                return
            if op is None:
                return
            name = op[0]
            if conn.state is ConnState.AWAIT_HELLO and name != "CONNECT":
                if name == "PING":  # some clients ping before CONNECT is answered
                    out.pong(conn)
                    continue
                out.protocol_errors += 1
                self._fail(
                    conn,
                    "Authorization Violation" if self.settings.config.users else "Parser Error",
                )
                return
            if name == "PUB":
                if st.verbose:
                    out.append(conn, _OK)  # as nats-server: before the message is routed
                if op[3] is None and st.echo:
                    publish(conn, op[1], op[2], op[4], None)  # the common case, directly
                else:
                    self._publish(conn, st, op[1], op[2], op[3], op[4])
            elif name == "SUB":
                self._subscribe(conn, st, op[1], op[2], op[3])
            elif name == "UNSUB":
                sid = st.sids.get(op[1])
                if sid is not None:
                    self.clients.unsubscribe(conn, sid, op[2])
                    if conn.subs.get(sid) is None:
                        del st.sids[op[1]]
                elif st.notice_sid is not None and op[1].encode() == st.notice_sid:
                    st.notice_sid = None
            elif name == "PING":
                out.pong(conn)
                if st.info_after_pong and conn.state is ConnState.OPEN:
                    st.info_after_pong = False
                    out.append(conn, self.info(conn))
                continue
            elif name == "PONG":
                conn.pong_received(self.settings.now)
                continue
            elif name == "CONNECT":
                self._connect(conn, st, op[1])
            else:  # INFO, MSG, +OK, -ERR: a server's operations
                out.protocol_errors += 1
                self._fail(conn, "Unknown Protocol Operation")
                return
            if st.verbose and conn.state is ConnState.OPEN and name != "PUB":
                out.append(conn, _OK)

    def _fail(self, conn: NatsClientConnection, text: str) -> None:
        self.outbox.append(conn, b"-ERR '" + text.encode() + b"'\r\n")
        self.outbox.close_quietly(conn, text)

    def _connect(self, conn: NatsClientConnection, st: NatsState, opts: dict[str, Any]) -> None:
        st.echo = opts.get("echo", True) is not False
        st.verbose = opts.get("verbose") is True
        st.headers = opts.get("headers") is True
        st.no_responders = st.headers and opts.get("no_responders") is True
        # answered by the fan-out, as for meshgate's clients (see FanOut.publish)
        conn.no_responders = st.no_responders
        lang, version = opts.get("lang"), opts.get("version")
        st.lang = lang[:32] if isinstance(lang, str) else ""
        st.version = version[:32] if isinstance(version, str) else ""
        if conn.state is ConnState.OPEN:
            return  # a second CONNECT changes options only
        token = opts.get("auth_token") or opts.get("pass")
        name = opts.get("name")
        hello = Hello(
            version=PROTOCOL_VERSION,
            role=Role.CLIENT,
            name=name if isinstance(name, str) and name else "nats",
            token=token if isinstance(token, str) else None,
            features=("no-responders",) if st.no_responders else (),
        )
        self.clients.hello(conn, hello)
        cfg = self.settings.config
        if conn.account is not None and cfg.users and len(self.directory.nats_urls()) > 1:
            st.info_after_pong = True  # authenticated: connect_urls, after the next PONG

    def _subscribe(
        self,
        conn: NatsClientConnection,
        st: NatsState,
        subject: str,
        queue: str | None,
        nsid: str,
    ) -> None:
        if subject == NOTICE_SUBJECT and queue is None:
            st.notice_sid = nsid.encode()
            return
        if nsid in st.sids or len(nsid) > 64:
            self.outbox.fail(conn, ErrorCode.MALFORMED, f"sid {nsid!r} is already in use")
            return
        st.next_sid += 1
        sid = st.next_sid
        st.sids[nsid] = sid
        self.clients.subscribe(conn, sid, subject, queue)
        sub = conn.subs.get(sid)
        if sub is None:
            del st.sids[nsid]
        else:
            sub.prefix = nsid.encode()

    def _publish(
        self,
        conn: NatsClientConnection,
        st: NatsState,
        subject: str,
        reply: str | None,
        headers: bytes | None,
        payload: bytes,
    ) -> None:
        fanout = self.fanout
        body: bytes = payload
        if headers is not None:
            try:
                _, fields = parse_headers(headers)
            except (ValueError, UnicodeDecodeError):
                self.outbox.protocol_errors += 1
                self._fail(conn, "Parser Error")
                return
            seq = fields.get("Meshgate-Seq")
            if seq and subject.startswith(INPUT_PREFIX):
                # a game input in NATS form: the sequence number (and relay) as headers,
                # and a session key that keeps the client's identity across reconnects
                relay = fields.get("Meshgate-Relay")
                try:
                    body = ClientInput.from_text(seq[0], payload, relay[0] if relay else None)
                except RemoteProtocolError as exc:
                    self.outbox.error(conn, exc.code, f"Meshgate-Seq: {exc.reason}")
                    return
                key = fields.get("Meshgate-Session")
                if key and conn.session is None and len(key[0]) >= 16 and conn.account:
                    conn.session = session_identity(conn.account.name, key[0])
            else:
                body = Headered(payload, headers)
        if st.echo:
            fanout.publish(conn, subject, reply, body, None)
            return
        fanout.delivery.origin = conn  # echo off: its own subscriptions skip this message
        try:
            fanout.publish(conn, subject, reply, body, None)
        finally:
            fanout.delivery.origin = None


class NatsRender:
    """The message being delivered, rendered once in NATS text for all its NATS
    targets (the fan-out's delivery asks for it on the first NATS target)."""

    __slots__ = ("_heads", "current", "head", "plain_tail", "tail")

    def __init__(self) -> None:
        #: the msgpack tail of the message rendered now (it identifies the message)
        self.current: object = None
        self.head = b""
        #: ``MSG <subject> `` per recent subject, built once (bounded)
        self._heads: dict[str, bytes] = {}
        self.tail = b""
        self.plain_tail = b""

    def build(self, tail: bytes, subject: str, reply: str | None, payload: bytes) -> None:
        """The NATS parts of the message whose msgpack tail is ``tail``, once for all its
        NATS targets: :attr:`head` (``MSG subject `` or ``HMSG subject ``),
        :attr:`tail` (`` [reply] [hsize] size\r\n...\r\n``) and :attr:`plain_tail`
        (the body without headers, for clients that did not ask for them)."""
        self.current = tail
        rb = b" " + reply.encode() if reply is not None else b""
        if type(payload) is Headered:
            hdrs = payload.headers
            self.head = b"HMSG " + subject.encode() + b" "
            n = len(hdrs)
            self.tail = b"%s %d %d\r\n%s%s\r\n" % (rb, n, n + len(payload), hdrs, payload)
            self.plain_tail = b"%s %d\r\n%s\r\n" % (rb, len(payload), payload)
        else:
            heads = self._heads
            head = heads.get(subject)
            if head is None:
                head = b"MSG " + subject.encode() + b" "
                if len(heads) >= 1024:  # bounded: a new set of hot subjects replaces it
                    heads.clear()
                heads[subject] = head
            self.head = head
            self.tail = self.plain_tail = b"%s %d\r\n%s\r\n" % (rb, len(payload), payload)

    def plain(self, sid: bytes) -> tuple[bytes, bytes]:
        """The current message without its headers, for subscription ``sid``."""
        return b"MSG " + self.head[5:] + sid, self.plain_tail
