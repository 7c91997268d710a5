"""The client port: client and replicant handshakes, authentication, permissions,
subscriptions and the count of local interest per key."""

from __future__ import annotations

__all__ = ["ClientPort", "session_identity", "sub_permitted"]

import hashlib
import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._errors import ErrorCode
from .._reserved import DEFAULT_ACCOUNT
from ..config import Permissions, User
from ..interest import InterestGraph
from ..protocol import (
    DELTA_FEATURE,
    KEY_SLOTS_FEATURE,
    MAX_PRIORITY,
    Hello,
    Info,
    Opcode,
    Role,
    XorDelta,
)
from ..subjects import is_valid_pattern, is_valid_subject
from ._bus import Bus, Directory
from ._conn import Account, ClientConnection, ConnState, LocalSubscription, RemoteInterest
from ._outbox import Outbox, Settings

if TYPE_CHECKING:
    from ._hooks import Layer

_SUB = int(Opcode.SUB)
_KACK = int(Opcode.KACK)
_UNSUB = int(Opcode.UNSUB)


def _covers(general: str, specific: str) -> bool:
    g, s = general.split("."), specific.split(".")
    for i, gt in enumerate(g):
        if gt == ">":
            return len(s) > i
        if i >= len(s):
            return False
        if gt != "*" and (gt != s[i] or s[i] in ("*", ">")):
            return False
    return len(g) == len(s)


def _overlaps(a: str, b: str) -> bool:
    x, y = a.split("."), b.split(".")
    for i in range(max(len(x), len(y))):
        xt = x[i] if i < len(x) else None
        yt = y[i] if i < len(y) else None
        if xt == ">" or yt == ">":
            return xt is not None and yt is not None
        if xt is None or yt is None:
            return False
        if xt != "*" and yt != "*" and xt != yt:
            return False
    return True


def session_identity(account: str, key: str) -> str:
    """A client's game identity from its secret session key: public and stable, so the
    key stays secret and the identity survives reconnects to any node."""
    return "s-" + hashlib.sha256(f"{account}\0{key}".encode()).hexdigest()[:24]


def sub_permitted(perm: Permissions, pattern: str) -> bool:
    """A subscription pattern is allowed if an allow pattern covers it and no deny pattern
    could match a subject it matches."""
    return any(_covers(p, pattern) for p in perm.allow) and not any(
        _overlaps(p, pattern) for p in perm.deny
    )


class ClientPort:
    """Clients and replicants on the client port, and the node's local interest."""

    def __init__(
        self,
        settings: Settings,
        outbox: Outbox,
        graph: InterestGraph[LocalSubscription | RemoteInterest],
        bus: Bus,
        directory: Directory,
        accounts: dict[str, Account],
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.graph = graph
        self.bus = bus
        self.directory = directory
        #: per-account counters (the node's table; entries are created here)
        self.accounts = accounts
        #: the game layer, if one is plugged in (it decides about ``$`` subscriptions)
        self.layer: Layer | None = None
        #: called when a connection's handshake opened it (the delivery's scheduler admits)
        self.on_open: Callable[[ClientConnection], None] | None = None
        #: a client's KACK (the delivery's deltas take it)
        self.on_ack: Callable[[ClientConnection, tuple[Any, ...]], None] | None = None
        cfg = settings.config
        self._users: dict[str, User] = {u.token: u for u in cfg.users}
        #: a token the host application's in-process replicants present (set by the shell)
        self.local_replicant_token: str | None = None
        #: client connections counted towards ``max_connections``
        self.count = 0
        #: the client connections of this node (meshgate and NATS ports) by id
        self.conns: dict[int, ClientConnection] = {}
        #: local subscriptions per (account, pattern, queue), the node's own included
        self.local_keys: dict[tuple[str, str, str | None], int] = {}
        #: the HELLO every client gets first; with users configured it names neither the
        #: node nor its cluster (nothing for an unauthenticated caller to use)
        #: the delta codec's name when ``keyed_deltas`` is on (announced in the HELLO)
        self.delta_name: str | None = XorDelta.name if cfg.keyed_deltas else None
        self.node_hello = b""
        self._build_hello()

    def _build_hello(self) -> None:
        cfg = self.settings.config
        features: tuple[str, ...] = ("game",) if cfg.replicants else ()  # inputs have owners
        if self.delta_name is not None:
            features += (DELTA_FEATURE + self.delta_name, KEY_SLOTS_FEATURE)
        self.node_hello = self.outbox.hello_frame(
            Role.NODE,
            features=features,
            max_payload=cfg.max_payload,
            reveal=not cfg.users,
        )

    def set_delta_name(self, name: str) -> None:
        """The delta codec is now ``name`` (clients connecting from now on see it)."""
        if self.delta_name is not None:
            self.delta_name = name
            self._build_hello()

    def account(self, name: str) -> Account:
        """The counters of account ``name`` (created on first use)."""
        acct = self.accounts.get(name)
        if acct is None:
            acct = self.accounts[name] = Account(name)
        return acct

    # -- life ---------------------------------------------------------------------------------

    def opened(self, conn: ClientConnection) -> None:
        """A meshgate client connection was accepted: our HELLO first, then the limits."""
        self.outbox.append(conn, self.node_hello)
        self.admit(conn)

    def admit(self, conn: ClientConnection) -> None:
        """A client connection (either port) was greeted: refused if the node is going
        away or full, else counted towards ``max_connections``."""
        self.conns[conn.id] = conn
        cfg = self.settings.config
        if self.settings.draining:
            self.outbox.fail(conn, ErrorCode.SHUTTING_DOWN, "node is shutting down", count=False)
        elif self.count >= cfg.max_connections:
            self.outbox.fail(
                conn, ErrorCode.LIMIT_EXCEEDED, f"max_connections={cfg.max_connections} reached"
            )
        else:
            self.count += 1
            conn.counted = True

    def hello(self, conn: ClientConnection, hello: Hello) -> None:
        """The handshake settles who the connection is: role, account, permissions."""
        out = self.outbox
        if hello.role not in (Role.CLIENT, Role.REPLICANT):
            out.fail(
                conn,
                ErrorCode.HANDSHAKE_REFUSED,
                f"role {hello.role!r} cannot use the client port",
            )
            return
        account = DEFAULT_ACCOUNT
        user = None
        if self._users:
            user = self._check_token(hello.token)
            if user is None:
                out.fail_auth(conn, "authentication failed")
                return
        if hello.role == Role.REPLICANT and not self._replicant_credential(user, hello):
            out.fail_auth(conn, "role replicant needs a replicant credential")
            return
        if user is not None:
            account = user.account
            conn.user = user
            self._apply_permissions(conn, user)
        acct = self.account(account)
        acct.clients += 1
        conn.account = acct
        conn.name = hello.name
        if hello.session is not None and len(hello.session) >= 16:
            conn.session = session_identity(account, hello.session)
        conn.no_responders = "no-responders" in hello.features
        if self.delta_name is not None:
            conn.delta_wanted = DELTA_FEATURE + self.delta_name in hello.features
            conn.key_slots = KEY_SLOTS_FEATURE in hello.features
        conn.role = Role(hello.role)
        conn.max_priority = self._priority_grant(user, conn.role)
        conn.state = ConnState.OPEN
        if self.on_open is not None:
            self.on_open(conn)

    def handshake(self, conn: ClientConnection, hello: Hello) -> None:
        """A meshgate client's HELLO: who it is, then (authenticated) where else it can
        reconnect to."""
        self.hello(conn, hello)
        if conn.state is ConnState.OPEN:
            self.welcome(conn)

    def welcome(self, conn: ClientConnection) -> None:
        """A meshgate client authenticated: where else it can reconnect to."""
        frame = self._urls_frame()
        if frame is not None:
            self.outbox.append(conn, frame)

    def _urls_frame(self) -> bytes | None:
        urls = self.directory.client_urls()
        if len(urls) < 2:
            return None
        return self.outbox.encoder.encode(Info(self.settings.config.cluster, client_urls=urls))

    def tell_urls(self) -> None:
        """The cluster's nodes changed: every open meshgate client learns the client URLs
        again (NATS clients hear of NATS ports from the NATS port)."""
        frame = self._urls_frame()
        if frame is None:
            return
        append = self.outbox.append
        for conn in self.conns.values():
            if conn.state is ConnState.OPEN and not conn.nats_text:
                append(conn, frame)

    @staticmethod
    def _apply_permissions(conn: ClientConnection, user: User) -> None:
        conn.pub_perm = user.publish if user.publish != Permissions() else None
        conn.sub_perm = user.subscribe if user.subscribe != Permissions() else None
        conn.perm_cache.clear()

    def reload_users(self, users: tuple[User, ...]) -> None:
        """New users: a connection whose credential is gone (or moved to another account,
        or lost its replicant right) is closed; the others get their user's new
        permissions, and subscriptions those no longer allow end with an error."""
        out = self.outbox
        self._users = {u.token: u for u in users}
        for conn in list(self.conns.values()):
            if conn.user is None:
                continue
            if conn.state is not ConnState.OPEN:
                continue
            new = self._users.get(conn.user.token)
            if (
                new is None
                or new.account != conn.user.account
                or (conn.role is Role.REPLICANT and not new.replicant)
            ):
                out.fail(conn, ErrorCode.AUTH_FAILED, "credential revoked")
                continue
            conn.user = new
            conn.max_priority = self._priority_grant(new, conn.role)
            self._apply_permissions(conn, new)
            if conn.sub_perm is not None:
                for sub in list(conn.subs.values()):
                    if sub.pattern[0] != "$" and not sub_permitted(conn.sub_perm, sub.pattern):
                        self.remove_sub(sub)
                        out.deny(
                            conn, f"subscription to {sub.pattern!r} no longer permitted", sub.sid
                        )

    @staticmethod
    def _priority_grant(user: User | None, role: Role) -> float:
        """The highest publisher priority a connection may give (docs/scheduling.md): its
        user's ``max_priority``; without users, a replicant (it presented the node's
        replicant secret) any, an anonymous client none."""
        if user is not None:
            return float(user.max_priority)
        return MAX_PRIORITY if role is Role.REPLICANT else 0.0

    def _is_local_replicant(self, hello: Hello) -> bool:
        local = self.local_replicant_token
        return (
            hello.role == Role.REPLICANT
            and local is not None
            and hello.token is not None
            and hmac.compare_digest(hello.token.encode(), local.encode())
        )

    def _replicant_credential(self, user: User | None, hello: Hello) -> bool:
        """A replicant authenticated as one: a replicant user, or (without users) the
        node's ``replicant_token`` or the host application's in-process token."""
        if user is not None:
            return user.replicant
        if self._is_local_replicant(hello):
            return True
        token = self.settings.config.replicant_token
        return (
            not self._users
            and token is not None
            and hello.token is not None
            and hmac.compare_digest(hello.token.encode(), token.encode())
        )

    def _check_token(self, token: str | None) -> User | None:
        if token is None:
            return None
        found = None
        for known, user in self._users.items():
            # compare against every user so timing does not reveal how close a guess was
            if hmac.compare_digest(known.encode(), token.encode()):
                found = user
        return found

    def control(self, conn: ClientConnection, op: int, f: tuple[Any, ...]) -> None:
        """SUB ``(op, sid, pattern, queue)`` and UNSUB ``(op, sid, max_msgs)``."""
        if op == _SUB:
            self.subscribe(conn, f[1], f[2], f[3])
        elif op == _UNSUB:
            self.unsubscribe(conn, f[1], f[2])
        elif op == _KACK and self.on_ack is not None:
            self.on_ack(conn, f[1])

    def retire(self, conn: ClientConnection, was_open: bool) -> None:
        """The connection stops counting: its subscriptions and its client slot go now."""
        self.conns.pop(conn.id, None)
        for sub in list(conn.subs.values()):
            self.remove_sub(sub)
        if was_open:
            self.bus.client_lost(conn)
        if conn.account is not None:
            conn.account.clients -= 1
            conn.account = None
        if conn.counted:
            conn.counted = False
            self.count -= 1

    # -- subscriptions ------------------------------------------------------------------------

    def subscribe(self, conn: ClientConnection, sid: int, pattern: str, queue: str | None) -> None:
        """Add a subscription; interest changes go to gateways, then routes, then the layer."""
        out = self.outbox
        if not is_valid_pattern(pattern):
            out.fail(conn, ErrorCode.INVALID_SUBJECT, f"invalid subscription pattern {pattern!r}")
            return
        if queue is not None and not is_valid_subject(queue):
            out.fail(conn, ErrorCode.INVALID_SUBJECT, f"invalid queue name {queue!r}")
            return
        if sid in conn.subs:
            out.fail(conn, ErrorCode.MALFORMED, f"sid {sid} is already in use")
            return
        limit = self.settings.config.max_subscriptions
        if len(conn.subs) >= limit:
            out.fail(conn, ErrorCode.LIMIT_EXCEEDED, f"max_subscriptions={limit} reached")
            return
        assert conn.account is not None
        account = conn.account.name
        layer = self.layer
        if pattern[0] == "$" and layer is not None:
            # the game layer's control subjects: only where it says, in its namespace
            target = layer.dollar_account(conn, account, pattern)
            if target is None:
                out.deny(conn, f"subscribe to {pattern!r} denied: reserved subject", sid)
                return
            account = target
        if conn.sub_perm is not None and not sub_permitted(conn.sub_perm, pattern):
            out.deny(conn, f"subscribe to {pattern!r} denied", sid)
            return
        prefix = out.encoder.message_prefix(sid)
        sub = LocalSubscription(conn, account, sid, pattern, queue, prefix)
        conn.subs[sid] = sub
        if self.graph.add(account, pattern, sub, queue):
            self.bus.cluster_key(account, pattern, queue, True)
        key = (account, pattern, queue)
        n = self.local_keys[key] = self.local_keys.get(key, 0) + 1
        self.bus.local_key(account, pattern, queue, n, True)

    def unsubscribe(self, conn: ClientConnection, sid: int, max_msgs: int | None) -> None:
        """Remove a subscription now, or after ``max_msgs`` more messages."""
        sub = conn.subs.get(sid)
        if sub is None:
            return  # already gone (auto-unsubscribe raced with this)
        if max_msgs:
            sub.remaining = max_msgs
        else:
            self.remove_sub(sub)

    def remove_sub(self, sub: LocalSubscription) -> None:
        """Forget ``sub``; interest changes go out as for :meth:`subscribe`."""
        conn = sub.conn
        if conn.subs.pop(sub.sid, None) is None:
            return
        if conn.deltas is not None:
            conn.deltas.forget(sub.sid)
        account = sub.account
        if self.graph.remove(account, sub.pattern, sub, sub.queue):
            self.bus.cluster_key(account, sub.pattern, sub.queue, False)
        key = (account, sub.pattern, sub.queue)
        n = self.local_keys[key] - 1
        if n:
            self.local_keys[key] = n
        else:
            del self.local_keys[key]
        self.bus.local_key(account, sub.pattern, sub.queue, n, False)

    def patterns(self, account: str) -> list[str]:
        """Plain (non-queue) patterns with local subscribers in ``account``."""
        return [p for (a, p, q) in self.local_keys if a == account and q is None]
