"""The game layer: inputs follow authority, speculative relay, interest for replicants.

It plugs into the node core through the hook interface of ``_node/_hooks.py`` (a
:class:`~meshgate._node.Layer`) and acts only through the core's
:class:`~meshgate._node.Host` methods: it subscribes the node to ``$AUTH.*``,
``$SPEC.*`` and ``$INTEREST.sync`` with handlers, publishes with ``inject`` and sends
notices with ``notify``.  Nodes run it with ``GatewayConfig(replicants=True)``.
"""

from __future__ import annotations

__all__ = ["EntityInfo", "GameInfo", "GameLayer", "plug_into"]

from collections import deque
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

import attrs
import msgpack

from . import _reserved as r
from ._errors import ErrorCode
from .authority import Delivery, InputRouter
from .protocol import Role
from .subjects import is_valid_subject, match

if TYPE_CHECKING:
    from ._node import ClientConnection, Host, LocalSubscription, NodeCore, RemoteInterest

#: provisional records remembered at most, in all and per sending client (oldest
#: forgotten first; a client's flood evicts only its own records)
SPECULATIVE_MAX = 65536
SPECULATIVE_PER_CLIENT = 256
_ERRORS_KEPT = 100


@attrs.frozen
class EntityInfo:
    """One entity as a node's input router sees it."""

    account: str
    entity: str
    #: the owning replicant, or None (unowned: inputs are held)
    owner: str | None
    epoch: int
    #: inputs held for the next owner
    held: int
    #: inputs delivered to the owner and not acknowledged yet
    retained: int


@attrs.frozen
class GameInfo:
    """The game layer of one node (:meth:`meshgate.Gateway.game`)."""

    entities: tuple[EntityInfo, ...]
    #: provisional relays waiting for the owner's confirm or correction
    provisional: int
    #: provisional records forgotten (bounded) before the owner answered
    provisional_evicted: int
    #: bytes of input data held or retained for owners, summed over accounts
    input_bytes: int
    #: inputs refused (a bound was reached), duplicated or stale, summed over accounts
    inputs_refused: int
    inputs_duplicate: int
    inputs_stale: int
    #: held inputs dropped because their client left before any owner took them
    inputs_dropped_client_left: int
    #: the last malformed authority and speculation messages, for diagnosis
    errors: tuple[str, ...]
    #: inputs sent with a relay subject no ``speculative`` pattern matches: applied by
    #: their owner, not relayed; the client got PERMISSION_DENIED
    relays_refused: int = 0


class GameLayer:
    """Authority, input routing, speculation and replicant interest for one node."""

    def __init__(self, host: Host, accounts: Sequence[str]) -> None:
        self.host = host
        self.config = host.config
        #: one input router per account
        self.routers: dict[str, InputRouter] = {}
        #: the last malformed authority and speculation messages
        self.errors: list[str] = []
        # sequence numbers of each local client's inputs relayed provisionally
        self._speculative: dict[str, dict[int, None]] = {}
        self._provisional: dict[str, tuple[str, list[tuple[int, int]]]] = {}
        self._provisional_of: dict[str, deque[str]] = {}  # sender -> its records, oldest first
        self._asked: dict[tuple[str, str], None] = {}  # entities whose owner was asked for
        self._attached: dict[str, int] = {}  # session identity -> local connection id
        self.provisional_evicted = 0
        #: inputs whose relay subject matched no ``speculative`` pattern (not relayed)
        self.relays_refused = 0
        for account in accounts:
            control = r.control_account(account)
            host.subscribe_internal(control, r.AUTH_PATTERN, partial(self._authority, account))
            host.subscribe_internal(control, r.INTEREST_SYNC, partial(self._snapshot, account))
            host.subscribe_internal(control, r.SPEC_PATTERN, self._answer)

    def _problem(self, text: str) -> None:
        self.errors.append(text)
        del self.errors[:-_ERRORS_KEPT]

    def _router(self, account: str) -> InputRouter:
        router = self.routers.get(account)
        if router is None:
            router = self.routers[account] = InputRouter()
        return router

    # -- hooks --------------------------------------------------------------------------------

    def on_dollar_publish(
        self, conn: ClientConnection, account: str, subject: str, reply: str | None, payload: bytes
    ) -> bool:
        """A replicant's control messages go to the account's control namespace; a
        client's ``$IN.<entity>`` (``[seq, data, relay?]``) goes to the entity's owner;
        anything else a client sends on a reserved subject or reply is refused."""
        if conn.role is Role.REPLICANT:
            if subject[0] != "$":
                return False  # a state update with a $ reply: routed as it is
            if subject.startswith(r.INPUT_PREFIX):
                self.host.deny(conn, "replicants do not send inputs")
                return True
            self.host.inject(r.control_account(account), subject, payload, reply)
            return True
        if reply is not None and reply[0] == "$":
            self.host.deny(conn, f"reply subject {reply!r} denied: reserved subject")
            return True
        if not subject.startswith(r.INPUT_PREFIX):
            self.host.deny(conn, f"publish to {subject!r} denied: reserved subject")
            return True
        entity = subject[len(r.INPUT_PREFIX) :]
        try:
            fields = msgpack.unpackb(payload, use_list=False)
            seq, data = fields[0], fields[1]
            relay = fields[2] if len(fields) > 2 else None
            if type(seq) is not int or seq < 0 or type(data) is not bytes:
                raise ValueError("wrong types")
            if relay is not None and not (type(relay) is str and is_valid_subject(relay)):
                raise ValueError("bad relay subject")
        except Exception:
            self.host.error(
                conn, ErrorCode.MALFORMED, "an input payload must be [seq, bytes, relay subject?]"
            )
            return True
        client = self._identity(conn)
        if conn.session is not None:
            self._attached[client] = conn.id
            if len(self._attached) > SPECULATIVE_MAX:
                del self._attached[next(iter(self._attached))]
        speculative = relay is not None and any(match(p, relay) for p in self.config.speculative)
        if relay is not None and not speculative:
            # the input still goes to its owner; the relay the client asked for does not
            # happen, and the client is told why
            self.relays_refused += 1
            self.host.error(
                conn,
                ErrorCode.PERMISSION_DENIED,
                f'relay to "{relay}" denied: not a speculative subject'
                " (GatewayConfig.speculative); the input goes to its owner unrelayed",
            )
        if speculative:
            mine = self._speculative.setdefault(client, {})
            mine[seq] = None
            if len(mine) > SPECULATIVE_PER_CLIENT:
                del mine[next(iter(mine))]
        router = self._router(account)
        self._send_inputs(account, router.input(client, entity, seq, data))
        if router.owner(entity) == (None, 0) and entity in router.entities:
            self._ask_owner(account, entity)
        if speculative:
            assert relay is not None
            # relayed at once to every interested client, marked provisional; the node
            # that delivers it remembers to whom, for the owner's confirm or correction
            self.host.inject(account, relay, data, r.provisional_reply(client, seq))
        return True

    def dollar_account(self, conn: ClientConnection, account: str, pattern: str) -> str | None:
        """A replicant's ``$`` subscriptions go to the control namespace (its own inbox
        only, of all the replicant inboxes); the node's own are there already; clients
        get none."""
        if r.is_control_account(account):
            return account  # the node's own subscriptions
        if conn.role is not Role.REPLICANT:
            return None
        if pattern.startswith(r.REPLICANT_PREFIX) and pattern != r.replicant_inbox(conn.name):
            return None
        return r.control_account(account)

    def on_dollar_reply(
        self, reply: str, subject: str, plain: Sequence[LocalSubscription | RemoteInterest]
    ) -> None:
        """Remember which local subscriptions got a provisional update."""
        if not reply.startswith(r.PROV_PREFIX):
            return
        recipients = [(sub.conn.id, sub.sid) for sub in plain if sub.prefix is not None]
        if not recipients:
            return
        provisional = self._provisional
        if reply not in provisional:
            sender = reply[len(r.PROV_PREFIX) :].rpartition(".")[0]
            mine = self._provisional_of.get(sender)
            if mine is None:
                mine = self._provisional_of[sender] = deque()
                if len(self._provisional_of) > SPECULATIVE_MAX:
                    del self._provisional_of[next(iter(self._provisional_of))]
            mine.append(reply)
            evicted = (
                provisional.pop(mine.popleft(), None)
                if len(mine) > SPECULATIVE_PER_CLIENT
                else None
            )
            if evicted is not None:
                self.provisional_evicted += 1
        provisional[reply] = (subject, recipients)
        if len(provisional) > SPECULATIVE_MAX:
            del provisional[next(iter(provisional))]
            self.provisional_evicted += 1

    def on_local_key(
        self, account: str, pattern: str, queue: str | None, count: int, added: bool
    ) -> None:
        """Tell replicants that this node's clients' interest in a pattern appeared/left."""
        prefix = self.config.interest_prefix
        if queue is None and prefix and pattern.startswith(prefix) and count == int(added):
            subject = r.INTEREST_ADD if added else r.INTEREST_REMOVE
            payload = self.host.encoder.pack((self.config.name, pattern))
            self.host.inject(r.control_account(account), subject, payload)

    def on_client_lost(self, conn: ClientConnection) -> None:
        """A client went: what was held for it goes.  A replicant went: its entities have
        no owner until claimed again."""
        if conn.role is Role.CLIENT and conn.account is not None:
            client = self._identity(conn)
            if self._attached.get(client) == conn.id:
                del self._attached[client]
            self._speculative.pop(client, None)
            for reply in self._provisional_of.pop(client, ()):
                self._provisional.pop(reply, None)
            router = self.routers.get(conn.account.name)
            if router is not None:
                router.client_left(client)
        if conn.role is Role.REPLICANT and conn.account is not None and conn.name:
            account = conn.account.name
            lost = self.host.encoder.pack((conn.name,))
            self.host.inject(r.control_account(account), r.AUTH_LOST, lost)
            self._router(account).owner_lost(conn.name)

    # -- internal subscriptions ---------------------------------------------------------------

    def _identity(self, conn: ClientConnection) -> str:
        """A client's game identity: its session's (stable across reconnects and nodes)
        or, without a session key, this connection's."""
        return conn.session if conn.session is not None else f"{self.config.name}/{conn.id}"

    def _ask_owner(self, account: str, entity: str) -> None:
        """An input for an entity this node never saw claimed (it joined after the claim):
        ask the other nodes once; those that know answer with the claim."""
        key = (account, entity)
        if key in self._asked:
            return
        self._asked[key] = None
        if len(self._asked) > SPECULATIVE_MAX:
            del self._asked[next(iter(self._asked))]
        payload = self.host.encoder.pack((entity,))
        self.host.inject(r.control_account(account), r.AUTH_WHO, payload)

    def _send_inputs(self, account: str, deliveries: list[Delivery]) -> None:
        pack = self.host.encoder.pack
        for d in deliveries:
            speculative = d.seq in self._speculative.get(d.client, ())
            payload = pack((d.entity, d.epoch, d.client, d.seq, d.data, speculative))
            self.host.inject(r.control_account(account), r.replicant_inbox(d.replicant), payload)

    def _authority(self, account: str, subject: str, _reply: str | None, payload: bytes) -> None:
        """An ``$AUTH.*`` message (claim, release, ack, lost) seen by this node."""
        try:
            fields = msgpack.unpackb(payload, use_list=False, strict_map_key=True)
            router = self._router(account)
            if subject == r.AUTH_CLAIM:
                entity, replicant, epoch = fields
                self._asked.pop((account, entity), None)
                self._send_inputs(account, router.claim(entity, replicant, epoch))
            elif subject == r.AUTH_WHO:
                (entity,) = fields
                owner, epoch = router.owner(entity)
                if owner is not None:  # tell the node that asked (and any other)
                    claim = self.host.encoder.pack((entity, owner, epoch))
                    self.host.inject(r.control_account(account), r.AUTH_CLAIM, claim)
            elif subject == r.AUTH_RELEASE:
                entity, replicant, epoch, applied = fields
                router.release(entity, replicant, epoch, dict(applied))
            elif subject == r.AUTH_ACK:
                entity, replicant, epoch, applied = fields
                router.ack(entity, replicant, epoch, dict(applied))
            elif subject == r.AUTH_LOST:
                (replicant,) = fields
                router.owner_lost(replicant)
        except (ValueError, TypeError) as exc:
            self._problem(f"bad authority message on {subject}: {exc}")

    def _snapshot(self, account: str, _subject: str, _reply: str | None, _payload: bytes) -> None:
        """Re-announce every local interest pattern under the prefix (a replicant joined)."""
        prefix = self.config.interest_prefix
        if not prefix:
            return
        pack = self.host.encoder.pack
        for pattern in self.host.local_patterns(account):
            if pattern.startswith(prefix):
                control = r.control_account(account)
                self.host.inject(control, r.INTEREST_ADD, pack((self.config.name, pattern)))

    def _answer(self, subject: str, _reply: str | None, payload: bytes) -> None:
        """The owner confirmed or corrected a provisional update: tell exactly the local
        clients that received it, and the sender if it is attached here."""
        try:
            client, seq, value = msgpack.unpackb(payload, use_list=False)
            if type(client) is not str or type(seq) is not int or type(value) is not bytes:
                raise ValueError("wrong types")
        except (ValueError, TypeError) as exc:
            self._problem(f"bad speculation answer: {exc}")
            return
        prefix = r.CONF_PREFIX if subject == r.SPEC_CONFIRM else r.CORR_PREFIX
        answer = f"{prefix}{client}.{seq}"
        record = self._provisional.pop(r.provisional_reply(client, seq), None)
        subject = record[0] if record is not None else ""
        if record is not None:
            for conn_id, sid in record[1]:
                self.host.notify(conn_id, sid, subject, answer, value)
        attached = self._attached.get(client)
        if attached is not None:  # a session: wherever it is attached now
            self.host.notify(attached, r.NOTICE_SID, subject, answer, value)
            return
        node, _, conn_id_text = client.partition("/")
        if node == self.config.name and conn_id_text.isdigit():
            self.host.notify(int(conn_id_text), r.NOTICE_SID, subject, answer, value)

    # -- introspection ------------------------------------------------------------------------

    def info(self) -> GameInfo:
        """A snapshot of entity ownership, held inputs and speculation."""
        entities = []
        refused = duplicate = stale = left = size = 0
        for account, router in sorted(self.routers.items()):
            refused += router.refused
            duplicate += router.duplicates
            stale += router.stale
            left += router.dropped_client_left
            size += router.total_bytes
            for entity, st in sorted(router.entities.items()):
                entities.append(
                    EntityInfo(
                        account=account,
                        entity=entity,
                        owner=st.owner,
                        epoch=st.epoch,
                        held=len(st.held),
                        retained=len(st.retained),
                    )
                )
        return GameInfo(
            entities=tuple(entities),
            provisional=len(self._provisional),
            provisional_evicted=self.provisional_evicted,
            input_bytes=size,
            inputs_refused=refused,
            inputs_duplicate=duplicate,
            inputs_stale=stale,
            inputs_dropped_client_left=left,
            errors=tuple(self.errors),
            relays_refused=self.relays_refused,
        )


def plug_into(core: NodeCore) -> GameLayer | None:
    """Attach a game layer to ``core`` if its configuration asks for one."""
    cfg = core.config
    if not cfg.replicants:
        return None
    layer = GameLayer(core, sorted(cfg.accounts))
    core.attach_layer(layer)
    return layer
