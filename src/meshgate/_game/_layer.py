"""The game layer's hooks and the handlers of its control subjects.

It subscribes the node to ``$AUTH.*``, ``$SPEC.*`` and ``$INTEREST.sync`` with
handlers, publishes with ``inject`` and sends notices with ``notify``.  Every payload it
reads or writes is a message of :mod:`meshgate.protocol.game`: a client's or a
replicant's malformed message gets an error frame naming the field, and is dropped;
one from another node is dropped and kept in :attr:`GameLayer.errors`.
"""

from __future__ import annotations

__all__ = ["GameLayer", "plug_into"]

from bisect import bisect_left
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

from .. import _reserved as r
from .._errors import ErrorCode, RemoteProtocolError
from ..authority import Delivery, InputRouter
from ..protocol import Role
from ..protocol.game import (
    Ack,
    Claim,
    ClientInput,
    Input,
    Interest,
    Marker,
    MarkerKind,
    OwnerLost,
    Release,
    Verdict,
    WhoOwns,
    check,
)
from ..subjects import match
from ._info import RELAY_LATENCY_BUCKETS, EntityInfo, GameInfo
from ._speculation import SPECULATIVE_MAX, Speculation

if TYPE_CHECKING:
    from .._node import ClientConnection, Host, LocalSubscription, NodeCore, RemoteInterest

_ERRORS_KEPT = 100
_RELAYS_KEPT = 4096
# the markers' prefixes as plain strings (an enum member formats slowly)
_PROVISIONAL = MarkerKind.PROVISIONAL.value
_CONFIRMED = MarkerKind.CONFIRMED.value
_CORRECTED = MarkerKind.CORRECTED.value
_unpack_input = ClientInput.unpack
_pack_input = Input.pack
_unpack_verdict = Verdict.unpack


class GameLayer:
    """Authority, input routing, speculation and replicant interest for one node."""

    def __init__(self, host: Host, accounts: Sequence[str]) -> None:
        self.host = host
        self.config = host.config
        #: one input router per account
        self.routers: dict[str, InputRouter] = {}
        #: the last malformed game messages, for diagnosis
        self.errors: list[str] = []
        #: what the node remembers about speculative relays
        self.speculation = Speculation()
        self._asked: dict[tuple[str, str], None] = {}  # entities whose owner was asked for
        self._inboxes: dict[str, str] = {}  # replicant -> its input subject
        self._relays: dict[str, bool] = {}  # relay subject -> matches config.speculative
        #: inputs whose relay subject matched no ``speculative`` pattern (not relayed)
        self.relays_refused = 0
        #: owner verdicts on provisional updates delivered here: confirmed, corrected
        self.confirmed = 0
        self.corrected = 0
        #: claims that moved an entity from one owner (or a release) to the next
        self.handovers = 0
        #: seconds from a provisional update reaching this node's clients to the owner's
        #: verdict: counts per bucket of RELAY_LATENCY_BUCKETS (the last: beyond), and sum
        self.relay_latency = [0] * (len(RELAY_LATENCY_BUCKETS) + 1)
        self.relay_latency_sum = 0.0
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
        """A replicant's control messages (checked) go to the account's control
        namespace; a client's ``$IN.<entity>`` (a :class:`ClientInput`) goes to the
        entity's owner; anything else a client sends on a reserved subject or reply is
        refused."""
        if conn.role is Role.REPLICANT:
            return self._from_replicant(conn, account, subject, reply, payload)
        if reply is not None and reply[0] == "$":
            self.host.deny(conn, f"reply subject {reply!r} denied: reserved subject")
            return True
        if not subject.startswith(r.INPUT_PREFIX):
            self.host.deny(conn, f"publish to {subject!r} denied: reserved subject")
            return True
        try:
            seq, data, relay = _unpack_input(payload)
        except RemoteProtocolError as exc:
            self.host.error(conn, exc.code, f"{subject}: {exc.reason}")
            return True
        entity = subject[len(r.INPUT_PREFIX) :]
        spec = self.speculation
        if conn.session is not None:
            client = conn.session
            spec.attach(client, conn.id)
        else:
            client = f"{self.config.name}/{conn.id}"
        speculative = False
        if relay is not None:
            known = self._relays.get(relay)
            speculative = known if known is not None else self._speculative_relay(relay)
            if speculative:
                spec.relay(client, seq)
            else:
                # the input still goes to its owner; the relay the client asked for does
                # not happen, and the client is told why
                self.relays_refused += 1
                self.host.error(
                    conn,
                    ErrorCode.PERMISSION_DENIED,
                    f'relay to "{relay}" denied: not a speculative subject'
                    " (GatewayConfig.speculative); the input goes to its owner unrelayed",
                )
        router = self.routers.get(account)
        if router is None:
            router = self._router(account)
        self._send_inputs(account, router.input(client, entity, seq, data))
        state = router.entities.get(entity)
        if state is not None and state.owner is None and state.epoch == 0:
            self._ask_owner(account, entity)
        if speculative:
            assert relay is not None
            # relayed at once to every interested client, marked provisional; the node
            # that delivers it remembers to whom, for the owner's confirm or correction
            self.host.inject(account, relay, data, Marker.pack(_PROVISIONAL, client, seq))
        return True

    def _speculative_relay(self, relay: str) -> bool:
        """Whether inputs relayed on ``relay`` are relayed provisionally (remembered)."""
        if len(self._relays) >= _RELAYS_KEPT:
            self._relays.clear()
        found = self._relays[relay] = any(match(p, relay) for p in self.config.speculative)
        return found

    def _from_replicant(
        self, conn: ClientConnection, account: str, subject: str, reply: str | None, payload: bytes
    ) -> bool:
        """A replicant's publish: a state update with a ``$`` reply is routed as it is;
        a control message must be well formed and goes to the control namespace."""
        if subject[0] != "$":
            return False
        if subject.startswith(r.INPUT_PREFIX):
            self.host.deny(conn, "replicants do not send inputs")
            return True
        try:
            check(subject, payload)
        except RemoteProtocolError as exc:
            self.host.error(conn, exc.code, f"{subject}: {exc.reason}")
            return True
        self.host.inject(r.control_account(account), subject, payload, reply)
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
        if recipients:
            self.speculation.delivered(reply, subject, recipients, self.host.now)

    def on_local_key(
        self, account: str, pattern: str, queue: str | None, count: int, added: bool
    ) -> None:
        """Tell replicants that this node's clients' interest in a pattern appeared/left."""
        prefix = self.config.interest_prefix
        if queue is None and prefix and pattern.startswith(prefix) and count == int(added):
            subject = r.INTEREST_ADD if added else r.INTEREST_REMOVE
            payload = Interest(self.config.name, pattern).encode()
            self.host.inject(r.control_account(account), subject, payload)

    def on_client_lost(self, conn: ClientConnection) -> None:
        """A client went: what was held for it goes.  A replicant went: its entities have
        no owner until claimed again."""
        if conn.role is Role.CLIENT and conn.account is not None:
            client = self._identity(conn)
            self.speculation.client_left(client, conn.id)
            router = self.routers.get(conn.account.name)
            if router is not None:
                router.client_left(client)
        if conn.role is Role.REPLICANT and conn.account is not None and conn.name:
            account = conn.account.name
            lost = OwnerLost(conn.name).encode()
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
        self.host.inject(r.control_account(account), r.AUTH_WHO, WhoOwns(entity).encode())

    def _send_inputs(self, account: str, deliveries: list[Delivery]) -> None:
        if not deliveries:
            return
        control = r.control_account(account)
        relayed = self.speculation.relayed
        inboxes = self._inboxes
        for d in deliveries:
            speculative = d.seq in relayed.get(d.client, ())
            payload = _pack_input(d.entity, d.epoch, d.client, d.seq, d.data, speculative)
            inbox = inboxes.get(d.replicant)
            if inbox is None:
                if len(inboxes) >= SPECULATIVE_MAX:
                    inboxes.clear()
                inbox = inboxes[d.replicant] = r.replicant_inbox(d.replicant)
            self.host.inject(control, inbox, payload)

    def _authority(self, account: str, subject: str, _reply: str | None, payload: bytes) -> None:
        """An ``$AUTH.*`` message (claim, release, ack, lost, who) seen by this node."""
        try:
            router = self._router(account)
            if subject == r.AUTH_CLAIM:
                claim = Claim.decode(payload)
                self._asked.pop((account, claim.entity), None)
                epoch = router.owner(claim.entity)[1]
                if 0 < epoch < claim.epoch:  # it had an owner before: a hand-over
                    self.handovers += 1
                delivered = router.claim(claim.entity, claim.replicant, claim.epoch)
                self._send_inputs(account, delivered)
            elif subject == r.AUTH_WHO:
                entity = WhoOwns.decode(payload).entity
                owner, epoch = router.owner(entity)
                if owner is not None:  # tell the node that asked (and any other)
                    claim_ = Claim(entity, owner, epoch).encode()
                    self.host.inject(r.control_account(account), r.AUTH_CLAIM, claim_)
            elif subject == r.AUTH_RELEASE:
                release = Release.decode(payload)
                router.release(release.entity, release.replicant, release.epoch, release.applied)
            elif subject == r.AUTH_ACK:
                ack = Ack.decode(payload)
                router.ack(ack.entity, ack.replicant, ack.epoch, ack.applied)
            elif subject == r.AUTH_LOST:
                router.owner_lost(OwnerLost.decode(payload).replicant)
        except RemoteProtocolError as exc:
            self._problem(f"bad authority message on {subject}: {exc.reason}")

    def _snapshot(self, account: str, _subject: str, _reply: str | None, _payload: bytes) -> None:
        """Re-announce every local interest pattern under the prefix (a replicant joined)."""
        prefix = self.config.interest_prefix
        if not prefix:
            return
        control = r.control_account(account)
        for pattern in self.host.local_patterns(account):
            if pattern.startswith(prefix):
                payload = Interest(self.config.name, pattern).encode()
                self.host.inject(control, r.INTEREST_ADD, payload)

    def _answer(self, subject: str, _reply: str | None, payload: bytes) -> None:
        """The owner confirmed or corrected a provisional update: tell exactly the local
        clients that received it, and the sender if it is attached here."""
        try:
            client, seq, value = _unpack_verdict(payload)
        except RemoteProtocolError as exc:
            self._problem(f"bad speculation answer on {subject}: {exc.reason}")
            return
        kind = _CONFIRMED if subject == r.SPEC_CONFIRM else _CORRECTED
        answer = Marker.pack(kind, client, seq)
        spec = self.speculation
        record = spec.answered(Marker.pack(_PROVISIONAL, client, seq))
        subject = record[0] if record is not None else ""
        if record is not None:
            if kind == _CONFIRMED:
                self.confirmed += 1
            else:
                self.corrected += 1
            waited = max(0.0, self.host.now - record[2])
            self.relay_latency[bisect_left(RELAY_LATENCY_BUCKETS, waited)] += 1
            self.relay_latency_sum += waited
            for conn_id, sid in record[1]:
                self.host.notify(conn_id, sid, subject, answer, value)
        attached = spec.attached(client)
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
            provisional=len(self.speculation),
            provisional_evicted=self.speculation.evicted,
            input_bytes=size,
            inputs_refused=refused,
            inputs_duplicate=duplicate,
            inputs_stale=stale,
            inputs_dropped_client_left=left,
            errors=tuple(self.errors),
            relays_refused=self.relays_refused,
            confirmed=self.confirmed,
            corrected=self.corrected,
            relay_latency_buckets=tuple(
                zip(RELAY_LATENCY_BUCKETS, self.relay_latency, strict=False)
            ),
            relay_latency_beyond=self.relay_latency[-1],
            relay_latency_sum=self.relay_latency_sum,
            handovers=self.handovers,
        )


def plug_into(core: NodeCore) -> GameLayer | None:
    """Attach a game layer to ``core`` if its configuration asks for one."""
    cfg = core.config
    if not cfg.replicants:
        return None
    layer = GameLayer(core, sorted(cfg.accounts))
    core.attach_layer(layer)
    return layer
