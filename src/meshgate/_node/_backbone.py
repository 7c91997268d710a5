"""The backbone: a node attached to a nats-server deployment as a leaf node.

With ``GatewayConfig.backbone`` a node has no routes and no gateways of its own; it
dials one leafnode connection to a nats-server (the hub) and reaches every other node
through the hub's clusters and gateways.  The connection speaks nats-server's leafnode
protocol (``meshgate.protocol.nats`` parses it):

===================  ==========================================================================
hub -> node          ``INFO`` first; ``LS+ subject [queue weight]`` / ``LS-`` for the interest
                     of everyone else (the whole super-cluster, per queue group with its
                     member count); ``LMSG`` / ``HMSG`` deliveries; ``PING``/``PONG``
node -> hub          ``CONNECT`` (name, headers, credentials); ``LS+``/``LS-`` for this node's
                     local interest (queue keys with their member count); ``LMSG`` for local
                     messages that someone elsewhere wants
===================  ==========================================================================

The hub's interest is stored in the interest graph exactly like a route peer's
(:class:`RemoteInterest`), so the one fan-out serves it: a message goes to the hub only
if the hub has interest (interest-only), a queue group with a member on this node is
served here and named to the hub only when it has no local member (local members
first, exactly once across the deployment), and what comes from the hub goes to local
subscribers only (one hop: nats-server never sends a message back to the leaf it came
from).

Accounts: a leafnode connection is bound to one account of the hub, so meshgate's
accounts share it by subject prefix: the default account ``$G`` maps to the hub's
subjects unchanged (plain NATS clients of the hub see the same subjects), account
``X`` to ``$MGA.X.<subject>`` and the game layer's control namespace of ``X`` to
``$MGC.X.<subject>``.  Hub subjects that map to no account this node serves are
ignored, so accounts stay isolated.
"""

from __future__ import annotations

__all__ = ["Backbone", "from_hub", "hub_message", "reply_from_hub", "to_hub"]

import json
from collections.abc import Callable
from typing import Any

from .._errors import ErrorCode
from .._reserved import DEFAULT_ACCOUNT, control_account, is_control_account
from .._version import __version__
from ..interest import InterestGraph
from ..protocol import Headered
from ..protocol.nats import NatsParser, NatsProtocolError
from ._bus import Bus
from ._conn import BackboneConnection, Connection, ConnState, LocalSubscription, RemoteInterest
from ._natstext import PING
from ._outbox import Outbox, Settings

#: the fan-out's entry for a message from a peer of this node's cluster (or the hub):
#: ``(conn, queues, account, subject, reply, payload)``
PeerMessage = Callable[[Connection, "tuple[str, ...] | None", str, str, "str | None", bytes], None]

_ACCOUNT_PREFIX = "$MGA."
_CONTROL_PREFIX = "$MGC."
_CONTROL_SUFFIX_LEN = len(control_account(""))


def to_hub(account: str, subject: str) -> str:
    """The hub subject (or pattern) of ``subject`` in meshgate ``account``.  A reply
    nats-server routed through its gateways (``_GR_.<cluster>.<server>.<reply>``) goes
    back verbatim, if the reply inside it is this account's."""
    if subject.startswith("_GR_."):
        inner = subject.split(".", 3)
        mapped = from_hub(inner[3]) if len(inner) == 4 else None
        if mapped is not None and mapped[0] == account:
            return subject
    if account == DEFAULT_ACCOUNT:
        return subject
    if is_control_account(account):
        return f"{_CONTROL_PREFIX}{account[:-_CONTROL_SUFFIX_LEN]}.{subject}"
    return f"{_ACCOUNT_PREFIX}{account}.{subject}"


def from_hub(subject: str) -> tuple[str, str] | None:
    """``(account, subject)`` of a hub subject or pattern, or None if it maps to no
    meshgate account (loop detection, a wildcard in the account position)."""
    if subject[0] != "$":
        return DEFAULT_ACCOUNT, subject
    for prefix, control in ((_ACCOUNT_PREFIX, False), (_CONTROL_PREFIX, True)):
        if subject.startswith(prefix):
            account, dot, rest = subject[len(prefix) :].partition(".")
            if not dot or not rest or account in ("*", ">"):
                return None
            return (control_account(account) if control else account), rest
    if subject.startswith("$LDS."):
        return None
    return DEFAULT_ACCOUNT, subject


def reply_from_hub(account: str, reply: str) -> str | None:
    """The reply subject, in ``account``, of a hub message's reply (None: it belongs to
    another account and is dropped)."""
    if reply.startswith("_GR_."):
        return reply if to_hub(account, reply) == reply else None
    mapped = from_hub(reply)
    if mapped is None or mapped[0] != account:
        return None
    return mapped[1]


def hub_message(
    account: str, subject: str, reply: str | None, queues: list[str] | None, payload: bytes
) -> bytes:
    """One ``LMSG`` (``HMSG`` with headers, as leaf connections carry them) to the
    hub; ``queues``: the groups the hub should serve (those with no member here)."""
    target = to_hub(account, subject)
    if reply is not None:
        reply = to_hub(account, reply)
    if queues:
        mid = (f" + {reply} " if reply else " | ") + " ".join(queues)
    else:
        mid = f" {reply}" if reply else ""
    if type(payload) is Headered:
        h = payload.headers
        return b"HMSG %s%s %d %d\r\n%s%s\r\n" % (
            target.encode(),
            mid.encode(),
            len(h),
            len(h) + len(payload),
            h,
            payload,
        )
    return b"LMSG %s%s %d\r\n%s\r\n" % (target.encode(), mid.encode(), len(payload), payload)


class Backbone:
    """The node's leafnode connection to a nats-server hub (at most one at a time)."""

    def __init__(
        self,
        settings: Settings,
        outbox: Outbox,
        graph: InterestGraph[LocalSubscription | RemoteInterest],
        bus: Bus,
        local_keys: dict[tuple[str, str, str | None], int],
        on_message: PeerMessage,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.graph = graph
        #: the local interest per key (the client port's table; read here)
        self.local_keys = local_keys
        self._on_message = on_message
        outbox.retirers[BackboneConnection] = self.retire  # type: ignore[assignment]
        bus.on_local_key(self.on_local_key)
        #: the open backbone connection, once the hub answered
        self.conn: BackboneConnection | None = None
        #: what the hub said in its last INFO
        self.hub: dict[str, Any] = {}
        #: leafnode URLs the hub told us about (to fail over to)
        self.learned_urls: tuple[str, ...] = ()
        #: the last -ERR the hub sent
        self.last_error: str | None = None
        #: hub interest ignored because it maps to no account this node serves
        self.ignored_interest = 0

    # -- life ---------------------------------------------------------------------------------

    def opened(self, conn: BackboneConnection) -> None:
        """We dialed the hub: it speaks first (INFO)."""
        conn.parser = NatsParser(
            max_payload=self.settings.config.max_payload + 64 * 1024, leaf=True
        )

    def retire(self, conn: BackboneConnection, was_open: bool) -> None:
        """The connection is gone: forget the hub's interest."""
        for entry in conn.remote.values():
            self.graph.remove(entry.account, entry.pattern, entry, entry.queue)
        conn.remote.clear()
        if self.conn is conn:
            self.conn = None
            self.outbox.pending.routes_changed = True
        conn.wake_pong_waiters()

    def _connect(self, conn: BackboneConnection, info: dict[str, Any]) -> None:
        cfg = self.settings.config
        self.hub = info
        options: dict[str, Any] = {
            "name": cfg.name,
            "version": __version__,
            "headers": True,
            "verbose": False,
            "pedantic": False,
        }
        if cfg.backbone_user is not None:
            options["user"] = cfg.backbone_user
            options["pass"] = cfg.backbone_password or ""
        elif cfg.backbone_token is not None:
            options["auth_token"] = cfg.backbone_token
        lines = [b"CONNECT " + json.dumps(options, separators=(",", ":")).encode() + b"\r\n"]
        for (account, pattern, queue), n in sorted(
            self.local_keys.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")
        ):
            lines.append(self._interest_line(account, pattern, queue, n))
        lines.append(PING)
        self.outbox.append(conn, b"".join(lines))
        conn.state = ConnState.OPEN
        conn.peer = str(info.get("server_name") or info.get("server_id") or "hub")
        self.conn = conn
        self.outbox.pending.routes_changed = True

    @staticmethod
    def _interest_line(account: str, pattern: str, queue: str | None, n: int) -> bytes:
        subject = to_hub(account, pattern)
        if n <= 0:
            return f"LS- {subject}{' ' + queue if queue else ''}\r\n".encode()
        if queue is None:
            return f"LS+ {subject}\r\n".encode()
        return f"LS+ {subject} {queue} {n}\r\n".encode()

    def on_local_key(
        self, account: str, pattern: str, queue: str | None, n: int, added: bool
    ) -> None:
        """A local key's count changed to ``n``: tell the hub (plain keys on 0<->1 only,
        queue keys with their member count)."""
        conn = self.conn
        if conn is None or conn.state is not ConnState.OPEN:
            return
        if queue is None and n > 1:
            return
        self.outbox.append(conn, self._interest_line(account, pattern, queue, n))

    # -- input --------------------------------------------------------------------------------

    def receive(self, conn: BackboneConnection, data: bytes | bytearray) -> None:
        """Bytes from the hub."""
        out = self.outbox
        parser = conn.parser
        assert parser is not None
        parser.feed(data)
        known = self.settings.known_accounts
        while conn.state < ConnState.CLOSING:
            # the hot path: a run of plain LMSGs, parsed in one call
            for subject, reply, queues, payload in parser.lmsgs():
                self._message(conn, subject, reply, queues, payload, known)
                if conn.state >= ConnState.CLOSING:
                    return
            try:
                op = parser.next()
            except (NatsProtocolError, UnicodeDecodeError) as exc:
                out.fail(conn, ErrorCode.MALFORMED, f"backbone: {exc}")
                return
            if op is None:
                return
            name = op[0]
            if name == "LMSG":
                payload = op[5] if op[4] is None else Headered(op[5], op[4])
                self._message(conn, op[1], op[2], op[3], payload, known)
            elif name == "LS+":
                self._sub(conn, op[1], op[2], op[3])
            elif name == "LS-":
                self._unsub(conn, op[1], op[2])
            elif name == "PING":
                out.pong(conn)
            elif name == "PONG":
                conn.pong_received(self.settings.now)
            elif name == "INFO":
                urls = op[1].get("leafnode_urls")
                if isinstance(urls, list):
                    self.learned_urls = tuple(str(u) for u in urls if isinstance(u, str))[:64]
                if conn.state is ConnState.AWAIT_HELLO:
                    self._connect(conn, op[1])
            elif name == "-ERR":
                self.last_error = op[1]
                if conn.state is ConnState.AWAIT_HELLO or "Authorization" in op[1]:
                    out.close_quietly(conn, f"hub refused: {op[1]}")
            elif name == "+OK":
                continue
            else:
                out.fail(conn, ErrorCode.ILLEGAL_FOR_ROLE, f"backbone: unexpected {name}")
                return

    def _message(
        self,
        conn: BackboneConnection,
        hub_subject: str,
        reply: str | None,
        queues: tuple[str, ...] | None,
        payload: bytes,
        known: frozenset[str],
    ) -> None:
        """A message from the hub: to local subscribers of its account (one hop)."""
        if hub_subject[0] != "$":  # the default account: the common case
            account, subject = DEFAULT_ACCOUNT, hub_subject
            if account not in known:
                return
        else:
            mapped = from_hub(hub_subject)
            if mapped is None or mapped[0] not in known:
                return
            account, subject = mapped
        if reply is not None and (reply[0] in "$_" or account != DEFAULT_ACCOUNT):
            reply = reply_from_hub(account, reply)
        self._on_message(conn, queues, account, subject, reply, payload)

    def _sub(
        self, conn: BackboneConnection, hub_pattern: str, queue: str | None, weight: int
    ) -> None:
        mapped = from_hub(hub_pattern)
        if mapped is None or mapped[0] not in self.settings.known_accounts:
            self.ignored_interest += 1
            return
        account, pattern = mapped
        key = (account, pattern, queue)
        entry = conn.remote.get(key)
        if entry is None:
            if len(conn.remote) >= self.settings.config.max_subscriptions * 16:
                self.ignored_interest += 1  # bounded, like every table
                return
            entry = conn.remote[key] = RemoteInterest(conn, account, pattern, queue, 1)
            self.graph.add(account, pattern, entry, queue)
        entry.weight = max(1, weight)

    def _unsub(self, conn: BackboneConnection, hub_pattern: str, queue: str | None) -> None:
        mapped = from_hub(hub_pattern)
        if mapped is None:
            return
        entry = conn.remote.pop((mapped[0], mapped[1], queue), None)
        if entry is not None:
            self.graph.remove(entry.account, entry.pattern, entry, entry.queue)
