"""Streaming decoder with DoS limits, and an encoder that encodes shared parts once.

Sans-IO: :class:`Decoder` takes bytes with :meth:`Decoder.feed` and hands back
frames; :class:`Encoder` turns frames into bytes.  Neither touches a socket.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "Decoder",
    "Encoder",
    "UnpackerPool",
]

from collections.abc import Iterator
from typing import Any, cast

import msgpack

from .._errors import ErrorCode, RemoteProtocolError
from ..subjects import DEFAULT_MAX_SUBJECT_LENGTH
from ._delta import KEY_SLOTS
from ._frames import (
    FRAME_TYPES,
    OPCODE_OF,
    Error,
    Frame,
    Hello,
    Info,
    Opcode,
)
from ._headers import Headered, ext_hook, to_ext

#: Default bound on one encoded frame: a 1 MiB payload plus generous room for the envelope.
DEFAULT_MAX_FRAME_BYTES = 1024 * 1024 + 8 * 1024

_MAX_REASON = 4096
_OP_PUB = int(Opcode.PUB)
_OP_MSG = int(Opcode.MSG)
_OP_GMSG = int(Opcode.GMSG)
_OP_RMSG = int(Opcode.RMSG)

_PAYLOAD_OPS = frozenset((Opcode.PUB, Opcode.MSG, Opcode.RMSG, Opcode.GMSG))

# field kinds of the positional frames
_STR = 0  # a subject-like string (length-limited)
_OSTR = 1  # the same or nil
_BIN = 2  # bytes
_INT = 3  # a non-negative int
_OINT = 4  # the same or nil
_OQUEUES = 5  # nil or an array of subject-like strings
_TEXT = 6  # free text (error reason)
_ACKS = 7  # a flat array of (sid, key, kseq) triples (KACK)
_OPRIO = 8  # nil or a number (a publisher priority; its range is the node's to check)
_KEY = 9  # a keyed MSG's key: a name, a slot, or [slot, name] (key slots)

_SHAPES: dict[int, tuple[int, ...]] = {
    Opcode.PUB: (_STR, _OSTR, _BIN, _OSTR),
    Opcode.SUB: (_INT, _STR, _OSTR),
    Opcode.UNSUB: (_INT, _OINT),
    Opcode.MSG: (_INT, _STR, _OSTR, _BIN),
    Opcode.PING: (),
    Opcode.PONG: (),
    Opcode.ERROR: (_INT, _TEXT),
    Opcode.KACK: (_ACKS,),
    Opcode.RSUB: (_STR, _STR, _OSTR, _INT),
    Opcode.RUNSUB: (_STR, _STR, _OSTR),
    Opcode.RMSG: (_OQUEUES, _STR, _STR, _OSTR, _BIN),
    Opcode.GMSG: (_OQUEUES, _STR, _STR, _OSTR, _BIN),
    Opcode.GSUB: (_STR, _STR, _OSTR),
    Opcode.GUNSUB: (_STR, _STR, _OSTR),
    Opcode.GNOINT: (_STR, _STR),
    Opcode.GACC_NOINT: (_STR,),
    Opcode.GACC_INT: (_STR,),
    Opcode.GMODE_START: (_STR,),
    Opcode.GMODE_END: (_STR,),
}

#: PUB with a publisher priority (issue 21), and keyed relays: ``key`` (and ``priority``)
_PUB_PRIO = (_STR, _OSTR, _BIN, _OSTR, _OPRIO)
_RELAY_KEYED = (_OQUEUES, _STR, _STR, _OSTR, _BIN, _OSTR)
_RELAY_PRIO = (_OQUEUES, _STR, _STR, _OSTR, _BIN, _OSTR, _OPRIO)
_RELAY_OPS = (_OP_RMSG, _OP_GMSG)
#: how many fields each payload frame has without its optional trailing ones
_BASE_FIELDS = {Opcode.PUB: 4, Opcode.MSG: 4, Opcode.RMSG: 5, Opcode.GMSG: 5}

#: ERROR with its optional last field, the sid of a refused subscription
_ERROR_WITH_SID = (_INT, _TEXT, _INT)
#: MSG with its optional trailing fields (issue 20): ``kseq`` and the ``key`` it numbers
_MSG_KEYED = (_INT, _STR, _OSTR, _BIN, _INT, _KEY)
#: a keyed MSG carrying a delta (issue 21): ``kseq``, ``key``, the baseline's kseq
_MSG_DELTA = (_INT, _STR, _OSTR, _BIN, _INT, _KEY, _INT)

# keys of the map-shaped frames: name -> (kind, default); kinds: "int", "str", "ostr", "strs"
_HELLO_KEYS: dict[str, str] = {
    "version": "int",
    "role": "str",
    "name": "str",
    "cluster": "ostr",
    "token": "ostr",
    "max_payload": "int",
    "features": "strs",
    "urls": "strs",
    "session": "ostr",
}
_HELLO_REQUIRED = ("version", "role", "name")
_INFO_KEYS: dict[str, str] = {
    "cluster": "str",
    "route_urls": "strs",
    "gateway_urls": "strs",
    "client_urls": "strs",
}
_INFO_REQUIRED = ("cluster",)


class UnpackerPool:
    """Unpackers shared by many decoders: each costs tens of KiB, so a connection holds
    one only while it has bytes to parse (see ``Decoder(pool=...)``).  Only decoders
    with identical limits may share a pool."""

    def __init__(self, max_size: int = 64) -> None:
        self._free: list[Any] = []
        self._max = max_size

    def take(self) -> Any:
        """A free unpacker, or None."""
        return self._free.pop() if self._free else None

    def give_back(self, unpacker: Any) -> None:
        """Return an unpacker that holds no partial frame."""
        if len(self._free) < self._max:
            self._free.append(unpacker)


class Decoder:
    """Turns a byte stream into validated frames.

    Feed bytes with :meth:`feed`, then take frames with :meth:`next_frame`
    (typed) or :meth:`next_raw` (the validated tuple ``(opcode, *fields)``,
    used by the node's hot path).  Both return ``None`` when more bytes are
    needed.

    Every malformed input raises :class:`~meshgate.RemoteProtocolError` with a
    reason and an :class:`~meshgate.ErrorCode`; after that the decoder is
    failed and every further call raises the same error.  Memory is bounded by
    ``max_frame_bytes + chunk_size`` however the input arrives.
    """

    # one per connection: slots keep an idle connection small
    __slots__ = (
        "_backlog",
        "_backlog_bytes",
        "_chunk_size",
        "_failed",
        "_fed",
        "_last_tell",
        "_pool",
        "_unpacker",
        "max_array_len",
        "max_frame_bytes",
        "max_map_len",
        "max_nesting",
        "max_subject_length",
    )

    def __init__(
        self,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_array_len: int = 64,
        max_map_len: int = 32,
        max_nesting: int = 3,
        max_subject_length: int = DEFAULT_MAX_SUBJECT_LENGTH,
        chunk_size: int = 64 * 1024,
        pool: UnpackerPool | None = None,
    ) -> None:
        if max_frame_bytes < 16 or chunk_size < 1 or max_nesting < 2:
            raise ValueError("decoder limits are too small to decode any frame")
        self.max_frame_bytes = max_frame_bytes
        self.max_array_len = max_array_len
        self.max_map_len = max_map_len
        self.max_nesting = max_nesting
        self.max_subject_length = max_subject_length
        self._chunk_size = chunk_size
        self._pool = pool
        self._unpacker: Any = None if pool is not None else self._new_unpacker()
        # a list, not a deque: it is short (chunks of chunk_size), and an idle connection's
        # empty deque would cost ten times the memory
        self._backlog: list[bytes | bytearray | memoryview] = []
        self._backlog_bytes = 0
        self._fed = 0
        self._last_tell = 0
        self._failed: RemoteProtocolError | None = None

    def _new_unpacker(self) -> Any:
        return msgpack.Unpacker(
            max_buffer_size=self.max_frame_bytes + self._chunk_size,
            max_array_len=self.max_array_len,
            max_map_len=self.max_map_len,
            use_list=False,
            raw=False,
            strict_map_key=True,
            ext_hook=ext_hook,
        )

    @property
    def failed(self) -> RemoteProtocolError | None:
        """The error that failed this decoder, if any."""
        return self._failed

    @property
    def buffered_bytes(self) -> int:
        """Bytes fed but not yet returned as frames."""
        if self._failed is not None:
            return 0
        return self._backlog_bytes + self._fed - self._last_tell

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add received bytes.  Any amount is accepted; it is parsed in bounded chunks."""
        if self._failed is not None:
            raise self._failed
        n = len(data)
        if not n:
            return
        if n <= self._chunk_size:
            self._backlog.append(data)
        else:
            view = memoryview(data)
            for i in range(0, n, self._chunk_size):
                self._backlog.append(view[i : i + self._chunk_size])
        self._backlog_bytes += n

    def _fail(self, reason: str, code: ErrorCode = ErrorCode.MALFORMED) -> RemoteProtocolError:
        self._failed = RemoteProtocolError(reason, code)
        self._backlog.clear()
        self._backlog_bytes = 0
        self._unpacker = None  # an Unpacker is not reusable after an error
        return self._failed

    def next_raw(self) -> tuple[Any, ...] | None:
        """The next validated frame as ``(opcode, *fields)``, or None if more bytes are needed."""
        if self._failed is not None:
            raise self._failed
        unpacker = self._unpacker
        if unpacker is None:
            if not self._backlog:
                return None
            unpacker = self._borrow()
        while True:
            try:
                obj = unpacker.unpack()
            except msgpack.OutOfData:
                # bytes fed since the last complete frame: the frame being received (the
                # unpacker keeps a partial frame's parse state, so tell() may include it)
                if self._fed - self._last_tell > self.max_frame_bytes:
                    raise self._fail(
                        f"frame larger than max_frame_bytes={self.max_frame_bytes}",
                        ErrorCode.FRAME_TOO_LARGE,
                    ) from None
                if not self._backlog:
                    if self._pool is not None and self._fed == self._last_tell:
                        # nothing partial: give the unpacker back (an idle connection
                        # then costs no parser memory)
                        self._pool.give_back(unpacker)
                        self._unpacker = None
                    return None
                chunk = self._backlog.pop(0)
                self._backlog_bytes -= len(chunk)
                try:
                    unpacker.feed(chunk)
                except Exception as exc:  # BufferFull cannot happen by construction
                    raise self._fail(f"cannot buffer input: {exc}") from None
                self._fed += len(chunk)
                continue
            except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
                raise self._fail(f"malformed msgpack: {exc}") from None
            except Exception as exc:
                raise self._fail(f"malformed msgpack: {type(exc).__name__}: {exc}") from None
            tell = unpacker.tell()
            size = tell - self._last_tell
            self._last_tell = tell
            if size > self.max_frame_bytes:
                raise self._fail(
                    f"frame of {size} bytes is larger than max_frame_bytes={self.max_frame_bytes}",
                    ErrorCode.FRAME_TOO_LARGE,
                )
            # fast path for the data frames: [op, str|nil..., bin] checked inline
            if type(obj) is tuple and len(obj) == 5:
                op = obj[0]
                limit = self.max_subject_length
                if op == _OP_PUB:
                    s, r, k = obj[1], obj[2], obj[4]
                    if (
                        type(s) is str
                        and len(s) <= limit
                        and type(obj[3]) is bytes
                        and (r is None or (type(r) is str and len(r) <= limit))
                        and (k is None or (type(k) is str and len(k) <= limit))
                    ):
                        return obj
                elif op == _OP_MSG:
                    sid, s, r = obj[1], obj[2], obj[3]
                    if (
                        type(sid) is int
                        and 0 <= sid <= 0xFFFFFFFFFFFF
                        and type(s) is str
                        and len(s) <= limit
                        and type(obj[4]) is bytes
                        and (r is None or (type(r) is str and len(r) <= limit))
                    ):
                        return obj
            elif type(obj) is tuple and len(obj) == 6:
                op = obj[0]
                if op in (_OP_GMSG, _OP_RMSG):
                    limit = self.max_subject_length
                    q, a, s, r = obj[1], obj[2], obj[3], obj[4]
                    if (
                        q is None
                        and type(a) is str
                        and len(a) <= limit
                        and type(s) is str
                        and len(s) <= limit
                        and type(obj[5]) is bytes
                        and (r is None or (type(r) is str and len(r) <= limit))
                    ):
                        return obj
            problem = self._check(obj)
            if problem is not None:
                raise self._fail(*problem)
            return obj  # type: ignore[no-any-return]

    def _borrow(self) -> Any:
        assert self._pool is not None
        unpacker = self._pool.take()
        if unpacker is None:
            unpacker = self._new_unpacker()
        self._unpacker = unpacker
        self._fed = self._last_tell = unpacker.tell()
        return unpacker

    def next_frame(self) -> Frame | None:
        """The next frame as its typed :data:`~meshgate.protocol.Frame`, or None."""
        raw = self.next_raw()
        if raw is None:
            return None
        return to_frame(raw)

    def __iter__(self) -> Iterator[Frame]:
        """Iterate over every complete frame fed so far."""
        while (frame := self.next_frame()) is not None:
            yield frame

    # -- validation ---------------------------------------------------------------------------

    def _check(self, obj: object) -> tuple[str, ErrorCode] | None:
        if type(obj) is not tuple or not obj:
            return ("a frame must be a non-empty msgpack array", ErrorCode.MALFORMED)
        op = obj[0]
        if type(op) is not int:
            return ("the first element of a frame must be an integer opcode", ErrorCode.MALFORMED)
        if op == Opcode.HELLO or op == Opcode.INFO:
            return self._check_map(obj)
        shape = _SHAPES.get(op)
        if shape is None:
            return (f"unknown opcode {op}", ErrorCode.UNKNOWN_OPCODE)
        if op == Opcode.ERROR and len(obj) == 4:
            shape = _ERROR_WITH_SID  # the refused subscription's sid
        elif op == Opcode.MSG and len(obj) == 7:
            shape = _MSG_KEYED  # keyed state with its kseq
        elif op == Opcode.MSG and len(obj) == 8:
            shape = _MSG_DELTA  # a delta against an acknowledged value
        elif op == Opcode.PUB and len(obj) == 6:
            shape = _PUB_PRIO  # with a publisher priority
        elif op in _RELAY_OPS and len(obj) == 7:
            shape = _RELAY_KEYED  # keyed state relayed
        elif op in _RELAY_OPS and len(obj) == 8:
            shape = _RELAY_PRIO  # keyed state relayed with its priority
        if len(obj) != len(shape) + 1:
            return (
                f"opcode {Opcode(op).name} takes {len(shape)} fields, got {len(obj) - 1}",
                ErrorCode.MALFORMED,
            )
        limit = self.max_subject_length
        for i, kind in enumerate(shape, 1):
            v = obj[i]
            t = type(v)
            if kind == _STR or (kind == _OSTR and v is not None):
                if t is not str:
                    return (self._field(op, i, "a string"), ErrorCode.MALFORMED)
                if len(v) > limit:
                    return (
                        f"{Opcode(op).name} field {i} longer than max_subject_length={limit}",
                        ErrorCode.INVALID_SUBJECT,
                    )
            elif kind == _BIN:
                if t is not bytes and t is not Headered:
                    return (self._field(op, i, "binary"), ErrorCode.MALFORMED)
            elif kind == _INT or (kind == _OINT and v is not None):
                if t is not int or v < 0 or v > 0xFFFFFFFFFFFF:
                    return (self._field(op, i, "a non-negative integer"), ErrorCode.MALFORMED)
            elif kind == _OQUEUES and v is not None:
                if t is not tuple or any(type(q) is not str or not q or len(q) > limit for q in v):
                    return (self._field(op, i, "nil or an array of names"), ErrorCode.MALFORMED)
            elif kind == _KEY:
                if not _key_ok(v, limit):
                    return (self._field(op, i, "a key, a slot or [slot, key]"), ErrorCode.MALFORMED)
            elif kind == _ACKS:
                if t is not tuple or len(v) % 3 or not _acks_ok(v, limit):
                    return (self._field(op, i, "an array of sid, key, kseq"), ErrorCode.MALFORMED)
            elif kind == _OPRIO and v is not None and t is not float and t is not int:
                return (self._field(op, i, "nil or a number (a priority)"), ErrorCode.MALFORMED)
            elif kind == _TEXT and (t is not str or len(v) > _MAX_REASON):
                return (self._field(op, i, "text"), ErrorCode.MALFORMED)
        return None

    @staticmethod
    def _field(op: int, i: int, what: str) -> str:
        return f"{Opcode(op).name} field {i} must be {what}"

    def _check_map(self, obj: tuple[Any, ...]) -> tuple[str, ErrorCode] | None:
        name = Opcode(obj[0]).name
        if len(obj) != 2 or type(obj[1]) is not dict:
            return (f"{name} must be [opcode, map]", ErrorCode.MALFORMED)
        keys, required = (
            (_HELLO_KEYS, _HELLO_REQUIRED)
            if obj[0] == Opcode.HELLO
            else (_INFO_KEYS, _INFO_REQUIRED)
        )
        fields: dict[str, Any] = obj[1]
        for key in required:
            if key not in fields:
                return (f"{name} lacks required key {key!r}", ErrorCode.MALFORMED)
        limit = self.max_subject_length
        for key, v in fields.items():
            kind = keys.get(key)
            if kind is None:
                # unknown keys are ignored for forward compatibility, but stay shallow
                if type(v) in (dict, tuple) and _depth(v, self.max_nesting - 2) < 0:
                    return (f"{name} value {key!r} nests too deeply", ErrorCode.MALFORMED)
                continue
            ok = (
                (kind == "int" and type(v) is int and 0 <= v <= 0xFFFFFFFFFFFF)
                or (kind == "str" and type(v) is str and len(v) <= limit)
                or (kind == "ostr" and (v is None or (type(v) is str and len(v) <= limit)))
                or (
                    kind == "strs"
                    and type(v) is tuple
                    and all(type(s) is str and len(s) <= limit for s in v)
                )
            )
            if not ok:
                return (f"{name} key {key!r} has the wrong type", ErrorCode.MALFORMED)
        return None


def _depth(v: object, budget: int) -> int:
    """Remaining nesting budget after descending into ``v``; negative if exceeded."""
    if budget < 0:
        return budget
    if type(v) is tuple:
        return min((_depth(x, budget - 1) for x in v), default=budget - 1)
    if type(v) is dict:
        return min((_depth(x, budget - 1) for x in v.values()), default=budget - 1)
    return budget


def _key_ok(v: Any, limit: int) -> bool:
    """A keyed MSG's key field: a name, a slot, or [slot, name]."""
    t = type(v)
    if t is str:
        return len(v) <= limit
    if t is int:
        return 0 <= v < KEY_SLOTS  # type: ignore[no-any-return]
    return (
        t is tuple
        and len(v) == 2
        and type(v[0]) is int
        and 0 <= v[0] < KEY_SLOTS
        and type(v[1]) is str
        and len(v[1]) <= limit
    )


def _acks_ok(v: tuple[Any, ...], limit: int) -> bool:
    """A KACK's flat (sid, key, kseq) triples are well typed."""
    for j in range(0, len(v), 3):
        sid, key, kseq = v[j], v[j + 1], v[j + 2]
        if type(sid) is not int or not 0 <= sid <= 0xFFFFFFFFFFFF:
            return False
        if type(key) is int:
            if not 0 <= key < KEY_SLOTS:
                return False
        elif type(key) is not str or len(key) > limit:
            return False
        if type(kseq) is not int or not 0 <= kseq <= 0xFFFFFFFFFFFF:
            return False
    return True


def to_frame(raw: tuple[Any, ...]) -> Frame:
    """Build the typed frame for a validated raw tuple from :meth:`Decoder.next_raw`."""
    op = raw[0]
    if op == Opcode.HELLO:
        f = raw[1]
        return Hello(**{k: f[k] for k in _HELLO_KEYS if k in f})
    if op == Opcode.INFO:
        f = raw[1]
        return Info(**{k: f[k] for k in _INFO_KEYS if k in f})
    if op == Opcode.ERROR:
        return Error(*raw[1:])  # the sid is optional
    if op == Opcode.MSG and len(raw) >= 7:
        return FRAME_TYPES[Opcode.MSG]._make(raw[1:5])
    cls: Any = FRAME_TYPES[Opcode(op)]
    return cls(*raw[1:])  # type: ignore[no-any-return]  # (optional trailing fields)


class Encoder:
    """Encodes frames with one reused :class:`msgpack.Packer`.

    For fan-out, :meth:`message_tail` packs the part every target shares once
    and the ``*_prefix`` methods give the short per-target part, so one
    delivery costs two ``bytearray.extend`` calls and no encoding.
    """

    def __init__(self) -> None:
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=False)
        self._accounts: dict[str, bytes] = {}  # packed account names (few, reused)
        self._plain_prefixes: dict[int, bytes] = {}

    def _take(self) -> bytes:
        p = self._packer
        out = p.bytes()
        p.reset()
        return out  # type: ignore[no-any-return]

    def encode(self, frame: Frame) -> bytes:
        """Encode one frame."""
        op = OPCODE_OF[type(frame)]
        p = self._packer
        if isinstance(frame, Hello | Info):
            fields = {
                k: (list(v) if isinstance(v, tuple) else v) for k, v in frame._asdict().items()
            }
            if isinstance(frame, Hello):
                fields = {k: v for k, v in fields.items() if v is not None}
            p.pack([int(op), fields])
        elif type(frame) is Error and frame.sid is None:
            p.pack([int(op), frame.code, frame.reason])  # the sid only when there is one
        elif op in _PAYLOAD_OPS:
            # (as a sequence of objects: mypyc cannot iterate the union of frame types)
            items = list(cast("tuple[object, ...]", frame))
            base = _BASE_FIELDS[op]
            while len(items) > base and items[-1] is None:
                items.pop()  # optional trailing fields only when given (old peers decode it)
            p.pack([int(op), *[to_ext(v) if type(v) is Headered else v for v in items]])
        else:
            p.pack([int(op), *cast("tuple[object, ...]", frame)])
        return self._take()

    def pack(self, value: object) -> bytes:
        """Pack any msgpack value (a payload) with the reused Packer."""
        self._packer.pack(value)
        return self._take()

    def encode_raw(self, op: int, *fields: object) -> bytes:
        """Encode ``[op, *fields]`` without building a frame object (a payload with
        headers must be passed as its wire form, :func:`to_ext`)."""
        self._packer.pack((op, *fields))
        return self._take()

    def message_tail(self, subject: str, reply: str | None, payload: bytes) -> bytes:
        """The shared tail of :class:`Message` (after the sid): subject, reply, payload."""
        p = self._packer
        p.pack(subject)
        p.pack(reply)
        p.pack(payload if type(payload) is not Headered else to_ext(payload))
        return self._take()

    def relay_tail(self, account: str, subject: str, reply: str | None, payload: bytes) -> bytes:
        """The shared tail of route and gateway messages (after the queue list)."""
        head = self._accounts.get(account)
        if head is None:
            self._packer.pack(account)
            head = self._take()
            if len(self._accounts) < 1024:
                self._accounts[account] = head
        return head + self.message_tail(subject, reply, payload)

    def relay_trailer(self, key: str, priority: float | None) -> bytes:
        """The optional trailing fields of a keyed route or gateway message: ``key``, and
        ``priority`` when given (the frame's array header counts them: :meth:`keyed_prefix`)."""
        p = self._packer
        p.pack(key)
        if priority is not None:
            p.pack(priority)
        return self._take()

    def message_prefix(self, sid: int) -> bytes:
        """The per-subscription head of a :class:`Message`: array header, opcode, sid."""
        self._packer.pack(sid)
        return b"\x95\x04" + self._take()

    @staticmethod
    def keyed_prefix(prefix: bytes, priority: float | None) -> bytes:
        """A :meth:`relay_prefix` whose array header counts the trailing ``key`` (and
        ``priority``) of :meth:`relay_trailer`."""
        return (b"\x98" if priority is not None else b"\x97") + prefix[1:]

    def relay_prefix(self, op: Opcode, queues: tuple[str, ...] | None) -> bytes:
        """The per-target head of a route or gateway message: array header, opcode, queues."""
        if queues is None:
            cached = self._plain_prefixes.get(op)
            if cached is not None:
                return cached
            self._packer.pack(int(op))
            self._packer.pack(None)
            cached = self._plain_prefixes[op] = b"\x96" + self._take()
            return cached
        self._packer.pack(int(op))
        self._packer.pack(queues)
        return b"\x96" + self._take()
