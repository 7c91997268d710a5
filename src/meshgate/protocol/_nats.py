"""The NATS text protocol codec (``meshgate.protocol.nats`` is its public face; a
module of its own so that ``tools/compile.py`` can compile it)."""

from __future__ import annotations

__all__ = ["NatsScanner"]

import json
from typing import Any

from ._natshead import NatsProtocolError

_MAX_JSON = 64 * 1024


_NO_ARGS = {b"PING": ("PING",), b"PONG": ("PONG",), b"+OK": ("+OK",)}


class NatsScanner:
    """The parser's machinery (documented on :class:`meshgate.protocol.nats.NatsParser`,
    its public face: compiled classes lose their docstrings)."""

    def __init__(
        self, *, max_control_line: int = 4096, max_payload: int = 1024 * 1024, leaf: bool = False
    ) -> None:
        self.max_control_line = max_control_line
        #: a leafnode connection: ``LMSG`` and ``HMSG`` carry the leaf arguments
        self.leaf = leaf
        self.max_payload = max_payload
        self._buf = b""
        self._pos = 0
        #: a message op whose payload is still arriving: (op, args, header size, total)
        self._pending: tuple[str, list[bytes], int, int] | None = None
        #: decoded subjects and sids, reused (bounded)
        self._names: dict[bytes, str] = {}
        #: plain PUB control lines already parsed: (subject, reply, size) (bounded)
        self._lines: dict[bytes, tuple[str, str | None, int]] = {}

    def feed(self, data: bytes | bytearray) -> None:
        """Add received bytes."""
        if self._pos:
            self._buf = self._buf[self._pos :] + data
            self._pos = 0
        else:
            self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet parsed."""
        return len(self._buf) - self._pos

    def _name(self, raw: bytes) -> str:
        names = self._names
        name = names.get(raw)
        if name is None:
            name = raw.decode()
            if len(names) < 256 and len(raw) <= 64:  # a client's usual subjects only
                names[raw] = name
        return name

    def pubs(self) -> list[tuple[str, str | None, bytes]]:
        """The plain ``PUB`` operations at the front of the buffer, complete ones only,
        as ``(subject, reply, payload)``: the hot path of a publishing client in one
        call.  Anything else (or anything wrong) is left for :meth:`next`."""
        buf = self._buf
        pos = self._pos
        out: list[tuple[str, str | None, bytes]] = []
        if self._pending is not None:
            return out
        names = self._names
        limit = self.max_control_line
        max_payload = self.max_payload
        append = out.append
        lines = self._lines
        while buf.startswith(b"PUB ", pos):
            end = buf.find(b"\r\n", pos, pos + limit + 2)
            if end < 0:
                break
            line = buf[pos:end]
            known = lines.get(line)
            if known is not None:  # a control line seen before: (subject, reply, size)
                subject, reply, total = known
                stop = end + 2 + total
                if len(buf) < stop + 2 or buf[stop : stop + 2] != b"\r\n":
                    break
                append((subject, reply, buf[end + 2 : stop]))
                pos = stop + 2
                self._pos = pos
                continue
            args = line[4:].split()
            n = len(args)
            if n != 2 and n != 3:
                break
            size = args[-1]
            if not size.isdigit():
                break
            total = int(size)
            stop = end + 2 + total
            if total > max_payload or len(buf) < stop + 2 or buf[stop : stop + 2] != b"\r\n":
                break
            try:
                raw = args[0]
                subject = names.get(raw) or self._name(raw)
                reply = None
                if n == 3:
                    raw = args[1]
                    reply = names.get(raw) or self._name(raw)
            except UnicodeDecodeError:
                break  # next() reports it, after the PUBs before it
            if len(lines) < 256 and len(line) <= 128:  # a client's usual lines only
                lines[line] = (subject, reply, total)
            append((subject, reply, buf[end + 2 : stop]))
            pos = stop + 2
            self._pos = pos
        return out

    def lmsgs(self) -> list[tuple[str, str | None, tuple[str, ...] | None, bytes]]:
        """The plain ``LMSG`` operations at the front of the buffer (a leaf connection's
        hot path), complete ones only, as ``(subject, reply, queues, payload)``;
        anything else is left for :meth:`next`."""
        buf = self._buf
        pos = self._pos
        out: list[tuple[str, str | None, tuple[str, ...] | None, bytes]] = []
        if self._pending is not None or not self.leaf:
            return out
        names = self._names
        limit = self.max_control_line
        max_payload = self.max_payload
        while buf.startswith(b"LMSG ", pos):
            end = buf.find(b"\r\n", pos, pos + limit + 2)
            if end < 0:
                break
            args = buf[pos + 5 : end].split()
            n = len(args)
            if n < 2 or not args[-1].isdigit():
                break
            total = int(args[-1])
            stop = end + 2 + total
            if total > max_payload or len(buf) < stop + 2 or buf[stop : stop + 2] != b"\r\n":
                break
            try:
                raw = args[0]
                subject = names.get(raw) or self._name(raw)
                reply: str | None = None
                queues: tuple[str, ...] | None = None
                if n == 3:
                    reply = self._name(args[1])
                elif n > 3:
                    marker = args[1]
                    if marker == b"+":
                        reply = self._name(args[2])
                        queues = tuple(self._name(q) for q in args[3:-1]) or None
                    elif marker == b"|":
                        queues = tuple(self._name(q) for q in args[2:-1]) or None
                    else:
                        break
            except UnicodeDecodeError:
                break  # next() reports it
            out.append((subject, reply, queues, buf[end + 2 : stop]))
            pos = stop + 2
            self._pos = pos
        return out

    def next(self) -> tuple[Any, ...] | None:
        """The next complete operation, or None until more bytes arrive."""
        if self._pending is not None:
            return self._payload()
        buf = self._buf
        pos = self._pos
        end = buf.find(b"\r\n", pos)
        if end < 0:
            if len(buf) - pos > self.max_control_line:
                raise NatsProtocolError("Maximum Control Line Exceeded")
            return None
        if end - pos > self.max_control_line:
            raise NatsProtocolError("Maximum Control Line Exceeded")
        line = buf[pos:end]
        self._pos = end + 2
        op, _, rest = line.partition(b" ")
        op = op.upper()
        simple = _NO_ARGS.get(op)
        if simple is not None:
            return simple
        args = rest.split()
        if self.leaf and (op == b"LMSG" or op == b"HMSG"):
            return self._leaf_message(op == b"HMSG", args)
        if op == b"PUB" or op == b"HPUB" or op == b"MSG" or op == b"HMSG":
            return self._message(op.decode(), args)
        if op == b"SUB":
            if len(args) == 2:
                return ("SUB", args[0].decode(), None, args[1].decode())
            if len(args) == 3:
                return ("SUB", args[0].decode(), args[1].decode(), args[2].decode())
            raise NatsProtocolError("Parser Error")
        if op == b"UNSUB":
            if len(args) == 1:
                return ("UNSUB", args[0].decode(), None)
            if len(args) == 2 and args[1].isdigit():
                return ("UNSUB", args[0].decode(), int(args[1]))
            raise NatsProtocolError("Parser Error")
        if op == b"LS+":
            if len(args) == 1:
                return ("LS+", self._name(args[0]), None, 1)
            if len(args) == 3 and args[2].isdigit():
                return ("LS+", self._name(args[0]), self._name(args[1]), int(args[2]))
            raise NatsProtocolError("Parser Error")
        if op == b"LS-":
            if len(args) in (1, 2):
                return ("LS-", self._name(args[0]), self._name(args[1]) if len(args) == 2 else None)
            raise NatsProtocolError("Parser Error")
        if op == b"CONNECT" or op == b"INFO":
            return (op.decode(), self._json(rest))
        if op == b"-ERR":
            return ("-ERR", rest.decode("utf-8", "replace").strip().strip("'"))
        raise NatsProtocolError("Unknown Protocol Operation")

    def _json(self, text: bytes) -> dict[str, Any]:
        if len(text) > _MAX_JSON:
            raise NatsProtocolError("Maximum Control Line Exceeded")
        try:
            value = json.loads(text)
        except ValueError:
            raise NatsProtocolError("Parser Error") from None
        if type(value) is not dict:
            raise NatsProtocolError("Parser Error")
        return value

    def _message(self, op: str, args: list[bytes]) -> tuple[Any, ...] | None:
        headers = op[0] == "H"
        sizes = 2 if headers else 1
        # PUB subject [reply] size | MSG subject sid [reply] size (+ header size first)
        fixed = (2 if op.endswith("MSG") else 1) + sizes
        if len(args) not in (fixed, fixed + 1) or not all(a.isdigit() for a in args[-sizes:]):
            raise NatsProtocolError("Parser Error")
        total = int(args[-1])
        hsize = int(args[-2]) if headers else 0
        if hsize > total:
            raise NatsProtocolError("Parser Error")
        if total > self.max_payload:
            raise NatsProtocolError("Maximum Payload Violation")
        self._pending = (op, args, hsize, total)
        return self._payload()

    def _leaf_message(self, headers: bool, args: list[bytes]) -> tuple[Any, ...] | None:
        """``LMSG subject [reply] size``, ``LMSG subject + reply q1 .. size`` or
        ``LMSG subject | q1 .. size`` (on a leaf connection ``HMSG`` is the same with
        the header size before the size)."""
        sizes = 2 if headers else 1
        if len(args) < 1 + sizes or not all(a.isdigit() for a in args[-sizes:]):
            raise NatsProtocolError("Parser Error")
        rest = args[1:-sizes]
        reply: bytes | None = None
        queues: list[bytes] = []
        if len(rest) == 1:
            reply = rest[0]
        elif len(rest) > 1:
            if rest[0] == b"+":
                reply, queues = rest[1], rest[2:]
            elif rest[0] == b"|":
                queues = rest[1:]
            else:
                raise NatsProtocolError("Parser Error")
        total = int(args[-1])
        hsize = int(args[-2]) if headers else 0
        if hsize > total:
            raise NatsProtocolError("Parser Error")
        if total > self.max_payload:
            raise NatsProtocolError("Maximum Payload Violation")
        self._pending = (
            "HLMSG" if headers else "LMSG",
            [args[0], reply or b"", *queues],
            hsize,
            total,
        )
        return self._payload()

    def _payload(self) -> tuple[Any, ...] | None:
        assert self._pending is not None
        op, args, hsize, total = self._pending
        buf = self._buf
        start = self._pos
        if len(buf) - start < total + 2:
            return None
        if buf[start + total : start + total + 2] != b"\r\n":
            raise NatsProtocolError("Parser Error")
        self._pending = None
        self._pos = start + total + 2
        headers = buf[start : start + hsize] if op[0] == "H" else None
        payload = buf[start + hsize : start + total]
        name = self._name
        if op.endswith("LMSG"):
            queues = tuple(name(q) for q in args[2:]) or None
            return (
                "LMSG",
                name(args[0]),
                name(args[1]) if args[1] else None,
                queues,
                headers,
                payload,
            )
        n = len(args) - (2 if op[0] == "H" else 1)  # arguments before the sizes
        subject = name(args[0])
        if op.endswith("PUB"):
            reply = name(args[1]) if n == 2 else None
            return ("PUB", subject, reply, headers, payload)
        reply = name(args[2]) if n == 3 else None
        return ("MSG", subject, name(args[1]), reply, headers, payload)
