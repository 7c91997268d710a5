"""Every reserved subject and prefix of meshgate, in one place.

Subjects that start with ``$`` belong to the game layer (nodes run it with
``GatewayConfig(replicants=True)``); ``_GR_.`` belongs to gateway reply routing.

============================  =================================================  ================
subject                       meaning                                            sent by
============================  =================================================  ================
``$IN.<entity>``              a client's input ``[seq, data, relay?]``            client (its node
                                                                                 intercepts it)
``$REP.<replicant>.in``       inputs delivered to the entity's owner              node
``$AUTH.claim``               ``(entity, replicant, epoch)``: take authority      replicant
``$AUTH.release``             ``(entity, replicant, epoch, applied)``             replicant
``$AUTH.ack``                 ``(entity, replicant, epoch, applied)``             replicant
``$AUTH.lost``                ``(replicant,)``: its connection went away          node
``$AUTH.who``                 ``(entity,)``: who owns it? (nodes that know        node
                              answer with ``$AUTH.claim``)
``$INTEREST.add`` / remove    ``(node, pattern)``: client interest appeared/left  node
``$INTEREST.sync``            a replicant joined: re-announce interest            replicant
``$SPEC.confirm`` / correct   ``(client, seq, value)``: verdict on a relay        replicant
``$PROV.<client>.<seq>``      reply marking a provisional (speculative) relay     node
``$CONF.`` / ``$CORR.``       reply marking a confirm / correction                node
``_GR_.<cluster>.<node>.``    a reply routed back to its origin node              node
============================  =================================================  ================

A ``MSG`` with sid :data:`NOTICE_SID` is a notice from the node to one client.

With the game layer on, the control subjects (``$AUTH.``, ``$SPEC.``, ``$REP.``,
``$INTEREST.``) live in each account's *control namespace*
(:func:`control_account`), like nats-server's system account: ordinary clients can
neither publish into it nor subscribe to it, whatever their wildcards; replicants
that authenticated with a replicant credential, the nodes themselves and their
authenticated peers can.  A client publishes only ``$IN.<entity>`` (its node consumes
it) and never a ``$`` reply.
This table mirrors "Reserved subjects and sid 0" in ``docs/protocol.md``.
"""

from __future__ import annotations

__all__ = [
    "AUTH_ACK",
    "AUTH_CLAIM",
    "AUTH_LOST",
    "AUTH_PATTERN",
    "AUTH_PREFIX",
    "AUTH_RELEASE",
    "AUTH_WHO",
    "CONF_PREFIX",
    "CORR_PREFIX",
    "DEFAULT_ACCOUNT",
    "GR_PREFIX",
    "INPUT_PREFIX",
    "INTEREST_ADD",
    "INTEREST_REMOVE",
    "INTEREST_SYNC",
    "NOTICE_SID",
    "PROV_PREFIX",
    "REPLICANT_PREFIX",
    "SPEC_CONFIRM",
    "SPEC_CORRECT",
    "SPEC_PATTERN",
    "SPEC_PREFIX",
    "control_account",
    "is_control_account",
    "input_subject",
    "parse_routed_reply",
    "provisional_reply",
    "replicant_inbox",
    "routed_reply",
]

#: the account of a node without users
DEFAULT_ACCOUNT = "$G"

INPUT_PREFIX = "$IN."
REPLICANT_PREFIX = "$REP."
AUTH_PREFIX = "$AUTH."
AUTH_PATTERN = "$AUTH.*"
AUTH_CLAIM = "$AUTH.claim"
AUTH_RELEASE = "$AUTH.release"
AUTH_ACK = "$AUTH.ack"
AUTH_LOST = "$AUTH.lost"
AUTH_WHO = "$AUTH.who"
INTEREST_ADD = "$INTEREST.add"
INTEREST_REMOVE = "$INTEREST.remove"
INTEREST_SYNC = "$INTEREST.sync"
SPEC_PREFIX = "$SPEC."
SPEC_PATTERN = "$SPEC.*"
SPEC_CONFIRM = "$SPEC.confirm"
SPEC_CORRECT = "$SPEC.correct"
PROV_PREFIX = "$PROV."
CONF_PREFIX = "$CONF."
CORR_PREFIX = "$CORR."
#: prefix of reply subjects routed back to their origin cluster and node
GR_PREFIX = "_GR_."
#: the sid of a node's notices to one client (clients never subscribe with it)
NOTICE_SID = 0
_CONTROL_SUFFIX = " $control"  # a space: no configured account name can end so


def control_account(account: str) -> str:
    """The control namespace of ``account`` (a name no configured account can have)."""
    return account + _CONTROL_SUFFIX


def is_control_account(name: str) -> bool:
    """``name`` is a control namespace (see :func:`control_account`)."""
    return name.endswith(_CONTROL_SUFFIX)


def input_subject(entity: str) -> str:
    """The subject a client publishes an input for ``entity`` on."""
    return INPUT_PREFIX + entity


def replicant_inbox(name: str) -> str:
    """The subject on which the replicant ``name`` receives the inputs it owns."""
    return f"{REPLICANT_PREFIX}{name}.in"


def provisional_reply(client: str, seq: int) -> str:
    """The reply subject marking ``client``'s input ``seq`` relayed provisionally."""
    return f"{PROV_PREFIX}{client}.{seq}"


def routed_reply(cluster: str, node: str, reply: str) -> str:
    """``reply`` wrapped so that any cluster routes it back to ``node`` of ``cluster``."""
    return f"{GR_PREFIX}{cluster}.{node}.{reply}"


def parse_routed_reply(subject: str) -> tuple[str, str, str] | None:
    """Split ``_GR_.<cluster>.<node>.<reply>``; None if it is not of that form."""
    parts = subject.split(".", 3)
    if len(parts) != 4 or not parts[1] or not parts[2] or not parts[3]:
        return None
    return parts[1], parts[2], parts[3]
