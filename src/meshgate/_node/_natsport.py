"""The NATS port: client connections that speak the NATS text protocol.

A NATS client is a :class:`ClientConnection` like any other (same accounts, users,
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

__all__ = ["NOTICE_SUBJECT", "PING", "PONG", "NatsPort", "NatsState", "error_text"]

import json
import re
from typing import TYPE_CHECKING, Any

from .._errors import ErrorCode, RemoteProtocolError
from .._reserved import INPUT_PREFIX, NOTICE_SID
from .._version import __version__
from ..protocol import PROTOCOL_VERSION, Headered, Hello, Role
from ..protocol.game import ClientInput
from ..protocol.nats import NatsParser, NatsProtocolError, parse_headers
from ..subjects import match
from ._clients import session_identity
from ._conn import ClientConnection, ConnState

if TYPE_CHECKING:
    from ._core import NodeCore

#: the subject a NATS client subscribes to for its node's notices
NOTICE_SUBJECT = "$MG.notice"

#: keepalive in the NATS text protocol (client connections and leaf connections)
PING = b"PING\r\n"
PONG = b"PONG\r\n"
_OK = b"+OK\r\n"
_NO_RESPONDERS = b"NATS/1.0 503\r\n\r\n"

_DENIED = re.compile(r"^(publish|subscribe) to (['\"])(.*)\2 denied")
_REPLY_DENIED = re.compile(r"^reply subject (['\"])(.*)\1 denied")

_TEXT: dict[ErrorCode, str] = {
    ErrorCode.AUTH_FAILED: "Authorization Violation",
    ErrorCode.PAYLOAD_TOO_LARGE: "Maximum Payload Violation",
    ErrorCode.INVALID_SUBJECT: "Invalid Subject",
    ErrorCode.STALE_CONNECTION: "Stale Connection",
    ErrorCode.SLOW_CONSUMER: "Slow Consumer",
    ErrorCode.MALFORMED: "Parser Error",
    ErrorCode.FRAME_TOO_LARGE: "Maximum Payload Violation",
}


def error_text(code: ErrorCode, reason: str) -> str:
    """nats-server's ``-ERR`` text for one of meshgate's errors."""
    if code is ErrorCode.PERMISSION_DENIED:
        m = _DENIED.match(reason)
        if m is not None:
            what = "Publish" if m.group(1) == "publish" else "Subscription"
            return f'Permissions Violation for {what} to "{m.group(3)}"'
        m = _REPLY_DENIED.match(reason)
        if m is not None:
            return f'Permissions Violation for Publish with Reply of "{m.group(2)}"'
        return f"Permissions Violation: {reason}"
    if code is ErrorCode.AUTH_FAILED and "auth_timeout" in reason:
        return "Authentication Timeout"
    if code is ErrorCode.LIMIT_EXCEEDED and "max_connections" in reason:
        return "maximum connections exceeded"
    if code is ErrorCode.LIMIT_EXCEEDED and "max_subscriptions" in reason:
        return "maximum subscriptions exceeded"
    text = _TEXT.get(code)
    return text if text is not None else reason.replace("'", '"').replace("\r", " ")


class NatsState:
    """The NATS side of one client connection."""

    __slots__ = (
        "echo",
        "headers",
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


class NatsPort:
    """NATS clients of one node core."""

    def __init__(self, core: NodeCore) -> None:
        self.core = core
        #: the message being delivered, in NATS form (see :meth:`build`); ``current`` is
        #: its msgpack tail, which identifies it
        self.current: object = None
        self.head = b""
        #: ``MSG <subject> `` per recent subject, built once (bounded)
        self._heads: dict[str, bytes] = {}
        self.tail = b""
        self.plain_tail = b""
        self._server_id = f"meshgate-{core.config.name}"

    # -- life -----------------------------------------------------------------------------------

    def opened(self, conn: ClientConnection) -> None:
        """A NATS client connected: its state, then the client port's admission."""
        cfg = self.core.config
        conn.nats = NatsState(NatsParser(max_payload=cfg.max_payload))

    def info(self, conn: ClientConnection) -> bytes:
        """The INFO line: the greeting, and again when the cluster's NATS ports change."""
        core = self.core
        cfg = core.config
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
        if cfg.users:
            info["auth_required"] = True
        else:
            info["cluster"] = cfg.cluster
        if conn.state is ConnState.OPEN or not cfg.users:
            urls = core.routes.nats_urls()
            if len(urls) > 1:
                info["connect_urls"] = [u.split("://", 1)[-1] for u in urls]
        return b"INFO " + json.dumps(info, separators=(",", ":")).encode() + b"\r\n"

    def tell_urls(self) -> None:
        """The cluster's NATS ports changed: every open NATS client hears of them."""
        core = self.core
        for conn in core.conns.values():
            if (
                type(conn) is ClientConnection
                and conn.nats is not None
                and conn.state is ConnState.OPEN
            ):
                core._append(conn, self.info(conn))

    # -- input ----------------------------------------------------------------------------------

    def receive(self, conn: ClientConnection, data: bytes | bytearray) -> None:
        """Bytes from a NATS client: every complete operation is carried out."""
        st = conn.nats
        assert st is not None
        parser = st.parser
        parser.feed(data)
        core = self.core
        publish = core._publish
        while conn.state < ConnState.CLOSING:
            if conn.state is ConnState.OPEN and not st.verbose and st.echo:
                # the hot path: a run of plain PUBs, parsed in one call
                for subject, reply, payload in parser.pubs():
                    if reply is not None and st.no_responders:
                        self._publish(conn, st, subject, reply, None, payload)
                    else:
                        publish(conn, subject, reply, payload, None)
                    if conn.state >= ConnState.CLOSING:
                        return
            try:
                op = parser.next()
            except (NatsProtocolError, UnicodeDecodeError) as exc:
                text = str(exc) if isinstance(exc, NatsProtocolError) else "Parser Error"
                core.protocol_errors += 1
                self._fail(conn, text)
                return
            if op is None:
                return
            name = op[0]
            if conn.state is ConnState.AWAIT_HELLO and name != "CONNECT":
                if name == "PING":  # some clients ping before CONNECT is answered
                    core._append(conn, PONG)
                    continue
                core.protocol_errors += 1
                self._fail(conn, "Authorization Violation" if core.config.users else "Parser Error")
                return
            if name == "PUB":
                if st.verbose:
                    core._append(conn, _OK)  # as nats-server: before the message is routed
                if op[3] is None and st.echo and (op[2] is None or not st.no_responders):
                    publish(conn, op[1], op[2], op[4], None)  # the common case, directly
                else:
                    self._publish(conn, st, op[1], op[2], op[3], op[4])
            elif name == "SUB":
                self._subscribe(conn, st, op[1], op[2], op[3])
            elif name == "UNSUB":
                sid = st.sids.get(op[1])
                if sid is not None:
                    core.clients.unsubscribe(conn, sid, op[2])
                    if conn.subs.get(sid) is None:
                        del st.sids[op[1]]
                elif st.notice_sid is not None and op[1].encode() == st.notice_sid:
                    st.notice_sid = None
            elif name == "PING":
                core._append(conn, PONG)
                continue
            elif name == "PONG":
                core._pong_received(conn)
                continue
            elif name == "CONNECT":
                self._connect(conn, st, op[1])
            else:  # INFO, MSG, +OK, -ERR: a server's operations
                core.protocol_errors += 1
                self._fail(conn, "Unknown Protocol Operation")
                return
            if st.verbose and conn.state is ConnState.OPEN and name != "PUB":
                core._append(conn, _OK)

    def _fail(self, conn: ClientConnection, text: str) -> None:
        core = self.core
        core._append(conn, b"-ERR '" + text.encode() + b"'\r\n")
        core._close_quietly(conn, text)

    def _connect(self, conn: ClientConnection, st: NatsState, opts: dict[str, Any]) -> None:
        st.echo = opts.get("echo", True) is not False
        st.verbose = opts.get("verbose") is True
        st.headers = opts.get("headers") is True
        st.no_responders = st.headers and opts.get("no_responders") is True
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
        )
        self.core.clients.hello(conn, hello)

    def _subscribe(
        self, conn: ClientConnection, st: NatsState, subject: str, queue: str | None, nsid: str
    ) -> None:
        core = self.core
        if subject == NOTICE_SUBJECT and queue is None:
            st.notice_sid = nsid.encode()
            return
        if nsid in st.sids or len(nsid) > 64:
            core._fail(conn, ErrorCode.MALFORMED, f"sid {nsid!r} is already in use")
            return
        st.next_sid += 1
        sid = st.next_sid
        st.sids[nsid] = sid
        core.clients.subscribe(conn, sid, subject, queue)
        sub = conn.subs.get(sid)
        if sub is None:
            del st.sids[nsid]
        else:
            sub.prefix = nsid.encode()

    def _publish(
        self,
        conn: ClientConnection,
        st: NatsState,
        subject: str,
        reply: str | None,
        headers: bytes | None,
        payload: bytes,
    ) -> None:
        core = self.core
        body: bytes = payload
        if headers is not None:
            try:
                _, fields = parse_headers(headers)
            except (ValueError, UnicodeDecodeError):
                core.protocol_errors += 1
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
                    core.error(conn, exc.code, f"Meshgate-Seq: {exc.reason}")
                    return
                key = fields.get("Meshgate-Session")
                if key and conn.session is None and len(key[0]) >= 16 and conn.account:
                    conn.session = session_identity(conn.account.name, key[0])
            else:
                body = Headered(payload, headers)
        if st.no_responders and reply is not None and not core.has_interest(conn, subject):
            self._no_responders(conn, reply)
            return
        if st.echo:
            core._publish(conn, subject, reply, body, None)
            return
        core._origin = conn  # echo off: its own subscriptions skip this message
        try:
            core._publish(conn, subject, reply, body, None)
        finally:
            core._origin = None

    def _no_responders(self, conn: ClientConnection, reply: str) -> None:
        """Nobody anywhere is subscribed to a request's subject: answer at once with a
        503 status on the request's reply subject (as nats-server does)."""
        n = len(_NO_RESPONDERS)
        for sub in conn.subs.values():
            if sub.queue is None and match(sub.pattern, reply):
                self.core._append(
                    conn,
                    b"HMSG %s %s %d %d\r\n%s\r\n"
                    % (reply.encode(), sub.prefix, n, n, _NO_RESPONDERS),
                )
                return

    # -- output ---------------------------------------------------------------------------------

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

    def notice(
        self, conn: ClientConnection, sid: int, subject: str, reply: str | None, data: bytes
    ) -> None:
        """A notice for one NATS client (sid 0: a confirmation or correction) goes to
        its ``$MG.notice`` subscription; other sids are its own subscriptions."""
        st = conn.nats
        assert st is not None
        if sid == NOTICE_SID:
            nsid = st.notice_sid
        else:
            sub = conn.subs.get(sid)
            nsid = sub.prefix if sub is not None else None
        if nsid is None:
            return
        rb = b" " + reply.encode() if reply is not None else b""
        self.core._append(
            conn,
            b"MSG %s %s%s %d\r\n%s\r\n"
            % ((subject or NOTICE_SUBJECT).encode(), nsid, rb, len(data), data),
        )
