"""The game messages: typed payloads of the game layer's reserved subjects.

With ``GatewayConfig(replicants=True)``, clients, nodes and replicants exchange these
payloads on the reserved ``$`` subjects (see ``docs/protocol.md``, "Game messages").
Each message is a ``NamedTuple`` whose fields are the elements of one msgpack array, in
order, so that a replicant written in any language can speak them:

=========================  ======================  ==========================================
subject                    message                 payload
=========================  ======================  ==========================================
``$IN.<entity>``           :class:`ClientInput`    ``[seq, data, relay?]``
``$REP.<replicant>.in``    :class:`Input`          ``[entity, epoch, client, seq, data,
                                                   speculative]``
``$AUTH.claim``            :class:`Claim`          ``[entity, replicant, epoch]``
``$AUTH.release``          :class:`Release`        ``[entity, replicant, epoch, applied]``
``$AUTH.ack``              :class:`Ack`            ``[entity, replicant, epoch, applied]``
``$AUTH.lost``             :class:`OwnerLost`      ``[replicant]``
``$AUTH.who``              :class:`WhoOwns`        ``[entity]``
``$INTEREST.add|remove``   :class:`Interest`       ``[node, pattern]``
``$INTEREST.sync``         :class:`InterestSync`   empty
``$SPEC.confirm|correct``  :class:`Verdict`        ``[client, seq, value]``
=========================  ======================  ==========================================

``message.encode()`` gives the payload; ``Type.decode(payload)`` checks every field's
type and limit (:class:`FieldKind`) and raises :class:`~meshgate.RemoteProtocolError`
(code ``MALFORMED``) whose reason names the message, its layout and the offending field.
For the hot path, ``pack(*fields)`` (:class:`ClientInput`, :class:`Input`,
:class:`Verdict`, :class:`Marker`) and ``unpack(payload)`` (:class:`ClientInput`,
:class:`Verdict`) give the same wire from and to a plain tuple, without building the
message; :func:`check` checks a reserved subject's payload.

A :class:`Marker` is not a payload but a reply subject: ``$PROV.<client>.<seq>`` marks
a provisional relay, ``$CONF.…`` and ``$CORR.…`` the owner's confirm and correction;
a node's *notice* to one client is a ``MSG`` with sid 0 whose reply is such a marker
and whose payload is the verdict's value.

Sans-IO and pure: nothing here touches a socket or a clock.
"""

from __future__ import annotations

__all__ = [
    "GAME_SUBJECTS",
    "MAX_APPLIED",
    "MAX_NAME_LENGTH",
    "MAX_SEQ",
    "Ack",
    "Claim",
    "ClientInput",
    "FieldKind",
    "GameMessage",
    "GameSubject",
    "Input",
    "Interest",
    "InterestSync",
    "Marker",
    "MarkerKind",
    "OwnerLost",
    "Release",
    "Verdict",
    "WhoOwns",
    "check",
    "fields_of",
    "message_type",
]

import enum
import reprlib
import types
import typing
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, NamedTuple

import msgpack

from .._errors import ErrorCode, RemoteProtocolError
from .._reserved import (
    AUTH_ACK,
    AUTH_CLAIM,
    AUTH_LOST,
    AUTH_RELEASE,
    AUTH_WHO,
    CONF_PREFIX,
    CORR_PREFIX,
    INPUT_PREFIX,
    INTEREST_ADD,
    INTEREST_REMOVE,
    INTEREST_SYNC,
    PROV_PREFIX,
    REPLICANT_PREFIX,
    SPEC_CONFIRM,
    SPEC_CORRECT,
)
from ..subjects import DEFAULT_MAX_SUBJECT_LENGTH, is_valid_pattern, is_valid_subject

#: the longest name (entity, replicant, client identity, node) a message may carry
MAX_NAME_LENGTH = DEFAULT_MAX_SUBJECT_LENGTH
#: the largest sequence number or epoch (msgpack's largest unsigned integer)
MAX_SEQ = 2**64 - 1
#: the most clients one ``applied`` map may name
MAX_APPLIED = 65536


class FieldKind(enum.Enum):
    """The wire type and limits of a game message field; the value is its description
    (``docs/protocol.md`` lists it, checked by a test)."""

    NAME = f"str, 1 to {MAX_NAME_LENGTH} characters"
    PATTERN = "str, a valid subscription pattern"
    SUBJECT = "str, a valid subject"
    SEQ = "int, 0 to 2**64-1"
    BYTES = "bin, within the node's max_payload"
    FLAG = "bool"
    APPLIED = f"map of NAME to SEQ, at most {MAX_APPLIED} entries"


# the field types: what mypy sees, and the kind decode checks
_Name = Annotated[str, FieldKind.NAME]
_Pattern = Annotated[str, FieldKind.PATTERN]
_Relay = Annotated[str | None, FieldKind.SUBJECT]
_Seq = Annotated[int, FieldKind.SEQ]
_Bytes = Annotated[bytes, FieldKind.BYTES]
_Flag = Annotated[bool, FieldKind.FLAG]
_Applied = Annotated[dict[str, int], FieldKind.APPLIED]

# One Packer for every message: ``pack`` holds the GIL from start to end (it calls no
# Python code for the builtin values messages carry), and it resets itself after an
# error, so sharing it is safe; it costs half of a ``msgpack.packb`` call.
_pack: Callable[[object], bytes] = msgpack.Packer(use_bin_type=True).pack
_unpackb = msgpack.unpackb
_new = tuple.__new__
# msgpack's limits for one payload: no array longer than the longest message (6), no
# map larger than ``applied`` may be (none in the hot messages), no extension types
# (spelled out at each call: keyword arguments from a dict cost more than the parsing)
_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = _repr.maxlong = 40


class ClientInput(NamedTuple):
    """``$IN.<entity>``: a client's input for an entity (client to its node, which
    routes it to the entity's owner as an :class:`Input`).

    ``seq`` grows per client; with ``relay`` (a subject), the node also relays ``data``
    at once to the clients interested in it, marked provisional.  ``relay`` is left
    out of the array when it is None."""

    seq: _Seq
    data: _Bytes
    relay: _Relay = None

    def encode(self) -> bytes:
        """The payload."""
        return ClientInput.pack(*self)

    @staticmethod
    def pack(seq: int, data: bytes, relay: str | None = None) -> bytes:
        """The payload of ``ClientInput(seq, data, relay)``, without building it."""
        return _pack((seq, data) if relay is None else (seq, data, relay))

    @staticmethod
    def from_text(seq: str, data: bytes, relay: str | None = None) -> bytes:
        """The payload of an input whose sequence number is text (a NATS client's
        ``Meshgate-Seq`` header); raises :class:`~meshgate.RemoteProtocolError` if
        ``seq`` is not a decimal number from 0 to 2**64-1."""
        if seq.isdigit() and seq.isascii() and len(seq) <= 20:
            n = int(seq)
            if n <= MAX_SEQ:  # the payload of ClientInput.pack, without one more call
                return _pack((n, data) if relay is None else (n, data, relay))
        raise _error(ClientInput, f"seq must be a decimal number, got {_repr.repr(seq)}")

    @staticmethod
    def unpack(payload: bytes) -> tuple[int, bytes, str | None]:
        """The checked fields of a payload as a plain tuple, without building the
        message; raises :class:`~meshgate.RemoteProtocolError`."""
        try:
            f = _unpackb(payload, use_list=False, max_array_len=6, max_map_len=0)
        except Exception as exc:
            raise _not_msgpack(ClientInput, exc) from None
        if type(f) is tuple:
            n = len(f)
            if n == 2:
                seq, data = f
                if type(seq) is int and seq >= 0 and type(data) is bytes:
                    return (seq, data, None)
            elif n == 3:
                seq, data, relay = f
                if (
                    type(seq) is int
                    and seq >= 0
                    and type(data) is bytes
                    and (relay is None or is_valid_subject(relay))
                ):
                    return f
        raise _invalid(ClientInput, f)

    @classmethod
    def decode(cls, payload: bytes) -> ClientInput:
        """Parse and check a payload; raises :class:`~meshgate.RemoteProtocolError`."""
        return _new(cls, ClientInput.unpack(payload))


class Input(NamedTuple):
    """``$REP.<replicant>.in``: a client input delivered to the entity's owner (node to
    replicant), tagged with the owner's ``epoch`` and the client's game identity.

    With ``speculative``, the client's node relayed it provisionally: the owner answers
    with a :class:`Verdict`."""

    entity: _Name
    epoch: _Seq
    client: _Name
    seq: _Seq
    data: _Bytes
    #: the client's node relayed it provisionally: answer with confirm or correct
    speculative: _Flag = False

    def encode(self) -> bytes:
        """The payload."""
        return _pack(self)

    @staticmethod
    def pack(
        entity: str, epoch: int, client: str, seq: int, data: bytes, speculative: bool
    ) -> bytes:
        """The payload of ``Input(entity, epoch, client, seq, data, speculative)``,
        without building it."""
        return _pack((entity, epoch, client, seq, data, speculative))

    @classmethod
    def decode(cls, payload: bytes) -> Input:
        """Parse and check a payload; raises :class:`~meshgate.RemoteProtocolError`."""
        try:
            f = _unpackb(payload, use_list=False, max_array_len=6, max_map_len=0)
        except Exception as exc:
            raise _not_msgpack(cls, exc) from None
        if type(f) is tuple and len(f) == 6:
            entity, epoch, client, seq, data, speculative = f
            if (
                type(entity) is str
                and 0 < len(entity) <= MAX_NAME_LENGTH
                and type(epoch) is int
                and epoch >= 0
                and type(client) is str
                and 0 < len(client) <= MAX_NAME_LENGTH
                and type(seq) is int
                and seq >= 0
                and type(data) is bytes
                and type(speculative) is bool
            ):
                return _new(cls, f)
        raise _invalid(cls, f)


class Claim(NamedTuple):
    """``$AUTH.claim``: ``replicant`` takes authority over ``entity`` at ``epoch``
    (higher than any before); a node that knows the owner also sends it to answer a
    :class:`WhoOwns`."""

    entity: _Name
    replicant: _Name
    epoch: _Seq

    def encode(self) -> bytes:
        """The payload."""
        return _pack(self)

    @classmethod
    def decode(cls, payload: bytes) -> Claim:
        """Parse and check a payload; raises :class:`~meshgate.RemoteProtocolError`."""
        return _new(cls, _unpack(cls, payload))


class Release(NamedTuple):
    """``$AUTH.release``: the owner hands ``entity`` over; ``applied`` maps each client
    to the last sequence number it applied (later inputs are held for the next owner)."""

    entity: _Name
    replicant: _Name
    epoch: _Seq
    applied: _Applied

    def encode(self) -> bytes:
        """The payload."""
        return _pack(self)

    @classmethod
    def decode(cls, payload: bytes) -> Release:
        """Parse and check a payload; raises :class:`~meshgate.RemoteProtocolError`."""
        return _new(cls, _unpack(cls, payload))


class Ack(NamedTuple):
    """``$AUTH.ack``: the state the owner published includes ``applied`` (per client,
    the last sequence number): the nodes forget those inputs."""

    entity: _Name
    replicant: _Name
    epoch: _Seq
    applied: _Applied

    def encode(self) -> bytes:
        """The payload."""
        return _pack(self)

    @classmethod
    def decode(cls, payload: bytes) -> Ack:
        """Parse and check a payload; raises :class:`~meshgate.RemoteProtocolError`."""
        return _new(cls, _unpack(cls, payload))


class OwnerLost(NamedTuple):
    """``$AUTH.lost``: the connection of ``replicant`` went away (its node tells the
    other nodes and the replicants); its entities have no owner until claimed again."""

    replicant: _Name

    def encode(self) -> bytes:
        """The payload."""
        return _pack(self)

    @classmethod
    def decode(cls, payload: bytes) -> OwnerLost:
        """Parse and check a payload; raises :class:`~meshgate.RemoteProtocolError`."""
        return _new(cls, _unpack(cls, payload))


class WhoOwns(NamedTuple):
    """``$AUTH.who``: a node got an input for an entity it never saw claimed and asks
    the other nodes; those that know answer with a :class:`Claim`."""

    entity: _Name

    def encode(self) -> bytes:
        """The payload."""
        return _pack(self)

    @classmethod
    def decode(cls, payload: bytes) -> WhoOwns:
        """Parse and check a payload; raises :class:`~meshgate.RemoteProtocolError`."""
        return _new(cls, _unpack(cls, payload))


class Interest(NamedTuple):
    """``$INTEREST.add`` / ``$INTEREST.remove``: the first of ``node``'s clients began
    to want ``pattern`` (a pattern under ``interest_prefix``), or the last one stopped."""

    node: _Name
    pattern: _Pattern

    def encode(self) -> bytes:
        """The payload."""
        return _pack(self)

    @classmethod
    def decode(cls, payload: bytes) -> Interest:
        """Parse and check a payload; raises :class:`~meshgate.RemoteProtocolError`."""
        return _new(cls, _unpack(cls, payload))


class InterestSync(NamedTuple):
    """``$INTEREST.sync``: a replicant joined; every node announces its interest again.
    The payload is empty."""

    def encode(self) -> bytes:
        """The payload (empty)."""
        return b""

    @classmethod
    def decode(cls, payload: bytes) -> InterestSync:
        """Check that the payload is empty; raises :class:`~meshgate.RemoteProtocolError`."""
        if payload:
            raise _error(cls, f"the payload must be empty, got {len(payload)} bytes")
        return _SYNC


_SYNC = InterestSync()


class Verdict(NamedTuple):
    """``$SPEC.confirm`` / ``$SPEC.correct``: the owner's verdict on ``client``'s
    input ``seq`` relayed provisionally; a correction's ``value`` replaces the
    provisional update for exactly the clients that got it (a confirm's is empty)."""

    client: _Name
    seq: _Seq
    value: _Bytes

    def encode(self) -> bytes:
        """The payload."""
        return _pack(self)

    @staticmethod
    def pack(client: str, seq: int, value: bytes) -> bytes:
        """The payload of ``Verdict(client, seq, value)``, without building it."""
        return _pack((client, seq, value))

    @staticmethod
    def unpack(payload: bytes) -> tuple[str, int, bytes]:
        """The checked fields of a payload as a plain tuple, without building the
        message; raises :class:`~meshgate.RemoteProtocolError`."""
        try:
            f = _unpackb(payload, use_list=False, max_array_len=6, max_map_len=0)
        except Exception as exc:
            raise _not_msgpack(Verdict, exc) from None
        if type(f) is tuple and len(f) == 3:
            client, seq, value = f
            if (
                type(client) is str
                and 0 < len(client) <= MAX_NAME_LENGTH
                and type(seq) is int
                and seq >= 0
                and type(value) is bytes
            ):
                return f
        raise _invalid(Verdict, f)

    @classmethod
    def decode(cls, payload: bytes) -> Verdict:
        """Parse and check a payload; raises :class:`~meshgate.RemoteProtocolError`."""
        return _new(cls, Verdict.unpack(payload))


#: every message carried as a msgpack payload
GameMessage = (
    ClientInput
    | Input
    | Claim
    | Release
    | Ack
    | OwnerLost
    | WhoOwns
    | Interest
    | InterestSync
    | Verdict
)


class MarkerKind(enum.StrEnum):
    """What a :class:`Marker` says; the value is its prefix."""

    #: a client's input relayed at once, before its owner saw it
    PROVISIONAL = PROV_PREFIX
    #: the owner confirmed the provisional update
    CONFIRMED = CONF_PREFIX
    #: the owner corrected it: the payload replaces it
    CORRECTED = CORR_PREFIX


class Marker(NamedTuple):
    """A reply subject ``<kind><client>.<seq>`` that marks speculative traffic (node to
    clients): on the relayed update, on the owner's verdict delivered to the clients
    that got it, and on a notice (sid 0) to the sending client."""

    kind: MarkerKind
    client: str
    seq: int

    def encode(self) -> str:
        """The reply subject."""
        return Marker.pack(*self)

    @staticmethod
    def pack(kind: str, client: str, seq: int) -> str:
        """The reply subject of ``Marker(kind, client, seq)``, without building it
        (``kind`` is a :class:`MarkerKind` or, faster, its value)."""
        return f"{kind}{client}.{seq}"

    @classmethod
    def decode(cls, reply: str) -> Marker:
        """Parse a reply subject; raises :class:`~meshgate.RemoteProtocolError` if it is
        not a marker."""
        for kind in MarkerKind:
            if reply.startswith(kind.value):
                client, dot, seq = reply[len(kind.value) :].rpartition(".")
                if dot and client and seq.isascii() and seq.isdigit() and len(seq) <= 20:
                    return cls(kind, client, int(seq))
                break
        raise RemoteProtocolError(
            f"Marker: {_repr.repr(reply)} is not <$PROV.|$CONF.|$CORR.><client>.<seq>",
            ErrorCode.MALFORMED,
        )


class GameSubject(NamedTuple):
    """A reserved subject of the game layer, the message it carries and who sends it."""

    #: the subject, or its form (``$IN.<entity>``)
    subject: str
    message: type[GameMessage]
    sender: str
    receivers: str


#: every reserved subject with a payload (``docs/protocol.md`` lists them, checked by a test)
GAME_SUBJECTS: tuple[GameSubject, ...] = (
    GameSubject(f"{INPUT_PREFIX}<entity>", ClientInput, "client", "its node"),
    GameSubject(f"{REPLICANT_PREFIX}<replicant>.in", Input, "node", "the owner"),
    GameSubject(AUTH_CLAIM, Claim, "replicant; node (answering who)", "nodes"),
    GameSubject(AUTH_RELEASE, Release, "replicant", "nodes"),
    GameSubject(AUTH_ACK, Ack, "replicant", "nodes"),
    GameSubject(AUTH_LOST, OwnerLost, "node", "nodes, replicants"),
    GameSubject(AUTH_WHO, WhoOwns, "node", "nodes"),
    GameSubject(INTEREST_ADD, Interest, "node", "replicants"),
    GameSubject(INTEREST_REMOVE, Interest, "node", "replicants"),
    GameSubject(INTEREST_SYNC, InterestSync, "replicant", "nodes"),
    GameSubject(SPEC_CONFIRM, Verdict, "replicant", "nodes"),
    GameSubject(SPEC_CORRECT, Verdict, "replicant", "nodes"),
)

_BY_SUBJECT: dict[str, type[GameMessage]] = {
    s.subject: s.message for s in GAME_SUBJECTS if "<" not in s.subject
}


def message_type(subject: str) -> type[GameMessage] | None:
    """The message a reserved subject carries, or None if it carries none."""
    found = _BY_SUBJECT.get(subject)
    if found is not None:
        return found
    if subject.startswith(INPUT_PREFIX):
        return ClientInput
    if subject.startswith(REPLICANT_PREFIX) and subject.endswith(".in"):
        return Input
    return None


# -- the fields, read from the annotations once, for checking and for the documentation -----


class _Field(NamedTuple):
    name: str
    kind: FieldKind
    optional: bool


def _fields(cls: type) -> tuple[_Field, ...]:
    hints = typing.get_type_hints(cls, include_extras=True)
    out = []
    for name in cls._fields:  # type: ignore[attr-defined]
        hint = hints[name]
        base = typing.get_args(hint)[0]
        optional = isinstance(base, types.UnionType) and type(None) in typing.get_args(base)
        out.append(_Field(name, hint.__metadata__[0], optional))
    return tuple(out)


_SHAPES: dict[type, tuple[_Field, ...]] = {
    cls: _fields(cls) for cls in typing.get_args(GameMessage)
}


def fields_of(message: type[GameMessage]) -> tuple[tuple[str, FieldKind, bool], ...]:
    """``(name, kind, optional)`` of each field of ``message``, in wire order (an
    optional field is last and may be nil or left out)."""
    return tuple(tuple(f) for f in _SHAPES[message])  # type: ignore[misc]


def _layout(cls: type) -> str:
    names = [f.name + ("?" if f.optional else "") for f in _SHAPES[cls]]
    return f"{cls.__name__} [{', '.join(names)}]"


def _error(cls: type, problem: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"{_layout(cls)}: {problem}", ErrorCode.MALFORMED)


def _not_msgpack(cls: type, exc: Exception) -> RemoteProtocolError:
    detail = f"{type(exc).__name__}: {exc}"[:120] if str(exc) else type(exc).__name__
    return _error(cls, f"not one msgpack value within limits ({detail})")


def _what(v: object) -> str:
    return f"{type(v).__name__} {_repr.repr(v)}"


def _kind_problem(kind: FieldKind, v: object) -> bool:
    """True if ``v`` breaks ``kind``."""
    if kind is FieldKind.NAME:
        return not (type(v) is str and 0 < len(v) <= MAX_NAME_LENGTH)
    if kind is FieldKind.SEQ:
        return not (type(v) is int and 0 <= v <= MAX_SEQ)
    if kind is FieldKind.BYTES:
        return type(v) is not bytes
    if kind is FieldKind.FLAG:
        return type(v) is not bool
    if kind is FieldKind.SUBJECT:
        return not is_valid_subject(v)
    if kind is FieldKind.PATTERN:
        return not is_valid_pattern(v)
    # APPLIED
    return not (
        type(v) is dict
        and len(v) <= MAX_APPLIED
        and all(
            not _kind_problem(FieldKind.NAME, k) and not _kind_problem(FieldKind.SEQ, n)
            for k, n in v.items()
        )
    )


def _problem(cls: type, f: object) -> str | None:
    """What is wrong with the decoded array ``f`` as a ``cls``, or None."""
    shape = _SHAPES[cls]
    if type(f) is not tuple:
        return f"must be an array, got {_what(f)}"
    required = sum(1 for x in shape if not x.optional)
    if not required <= len(f) <= len(shape):
        count = str(required) if required == len(shape) else f"{required} to {len(shape)}"
        return f"must have {count} elements, got {len(f)}"
    for field, v in zip(shape, f, strict=False):
        if not (v is None and field.optional) and _kind_problem(field.kind, v):
            return f"field {field.name!r} must be {field.kind.value}, got {_what(v)}"
    return None


def _invalid(cls: type, f: object) -> RemoteProtocolError:
    return _error(cls, _problem(cls, f) or "malformed")


def _unpack(cls: type, payload: bytes) -> tuple[Any, ...]:
    """The checked fields of a payload (the hot messages have their own, equivalent
    ``unpack``)."""
    try:
        f = _unpackb(
            payload, use_list=False, max_array_len=6, max_map_len=MAX_APPLIED, max_ext_len=0
        )
    except Exception as exc:
        raise _not_msgpack(cls, exc) from None
    problem = _problem(cls, f)
    if problem is not None:
        raise _error(cls, problem)
    assert type(f) is tuple
    missing = len(_SHAPES[cls]) - len(f)
    return f + (None,) * missing if missing else f


def _checker(message: type[GameMessage]) -> Callable[[bytes], object]:
    """What checks a payload of ``message`` fastest."""
    if message is ClientInput or message is Verdict:
        return message.unpack
    if message is Input or message is InterestSync:
        return message.decode
    return partial(_unpack, message)


_CHECKS: dict[str, Callable[[bytes], object]] = {
    subject: _checker(message) for subject, message in _BY_SUBJECT.items()
}


def check(subject: str, payload: bytes) -> None:
    """Check the payload of a reserved subject without building the message: raises
    :class:`~meshgate.RemoteProtocolError` if it is not the message the subject carries
    (:func:`message_type`); a subject that carries none passes."""
    unpack = _CHECKS.get(subject)
    if unpack is None:
        message = message_type(subject)
        if message is None:
            return
        unpack = _checker(message)
    unpack(payload)
