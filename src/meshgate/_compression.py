"""lz4 compression of route and gateway links, where bytes meet the wire.

Why lz4 (the ``compression`` extra, ``python-lz4``): a node is one Python thread, so
CPU per byte decides; lz4 compresses and decompresses several times faster than zstd
at level 1, for a lower ratio.  Frames are small msgpack arrays, so each write is
compressed against the history of the link: one lz4 *frame* per direction for the
link's life, with linked blocks (a block may refer to the previous 64 KiB) and
``auto_flush`` (every write comes out at once, nothing waits in the compressor).  The
format bounds expansion to about 255 to 1; the reader also bounds what one read may
inflate to (:data:`MAX_INFLATE`) and pieces it (:data:`PIECE`), so a decompression
bomb from a peer is refused (the link is closed, counted) without holding the bytes.

Negotiation, in the peers' HELLO frames (the core's, with a feature added on the way
out, so the core knows nothing of compression):

* the dialer offers ``lz4`` (it wants compression: mode ``on``, or ``auto`` with a
  connect round trip of ``compression_auto_rtt`` or more) or ``lz4?`` (it can: ``auto`` on a
  near link); mode ``off`` or no library: nothing;
* the node that accepted decides: it answers ``lz4`` if it can too (mode not
  ``off``, library present) and either side wants it (the dialer said ``lz4``, or its
  own mode is ``on``).

Everything after a side's HELLO is compressed if and only if the accepting node's
HELLO says ``lz4``.  Only links whose mode is not ``off`` are wrapped here; other links
keep the writer's direct socket writes.
"""

from __future__ import annotations

__all__ = [
    "AUTO_RTT",
    "MAX_INFLATE",
    "PIECE",
    "CompressedStream",
    "CompressionCounters",
    "available",
]

import importlib
import logging
from typing import Any

import msgpack
import trio

log = logging.getLogger("meshgate.gateway")

#: ``auto``: a dialer whose connect took at least this long (seconds) asks for lz4
#: (the default of ``GatewayConfig.compression_auto_rtt``)
AUTO_RTT = 0.010
#: the most one read from a peer may inflate to (bytes); more is a decompression bomb
MAX_INFLATE = 16 * 1024 * 1024
#: decompressed output is produced in pieces of at most this many bytes
PIECE = 256 * 1024
#: the HELLO features
WANT = "lz4"
CAN = "lz4?"
#: the most bytes read before a peer's HELLO is complete (it is a few hundred)
_MAX_HEAD = 64 * 1024

_lz4: Any
try:
    _lz4 = importlib.import_module("lz4.frame")
except ImportError:  # pragma: no cover - the extra is not installed
    _lz4 = None


def available() -> bool:
    """``python-lz4`` is installed (the ``compression`` extra)."""
    return _lz4 is not None


class CompressionCounters:
    """A node's compression figures: links compressed, bytes before and after, bombs."""

    __slots__ = ("links", "raw_in", "raw_out", "refused", "wire_in", "wire_out")

    def __init__(self) -> None:
        self.links = 0
        self.raw_out = 0
        self.wire_out = 0
        self.raw_in = 0
        self.wire_in = 0
        self.refused = 0

    def as_dict(self) -> dict[str, int]:
        """The figures by name."""
        return {k: getattr(self, k) for k in self.__slots__}


def _first_object(data: bytes | bytearray) -> tuple[Any, int] | None:
    """The first msgpack object in ``data`` and its length, or None if incomplete;
    raises ValueError if it is not msgpack."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=_MAX_HEAD)
    unpacker.feed(data)
    try:
        obj = unpacker.unpack()
    except msgpack.OutOfData:
        return None
    except Exception as exc:
        raise ValueError(str(exc)) from None
    return obj, unpacker.tell()


def _features(hello: Any) -> list[str] | None:
    """The features of a HELLO frame ``[0, {...}]`` (None: not a HELLO)."""
    if isinstance(hello, list) and len(hello) == 2 and hello[0] == 0 and isinstance(hello[1], dict):
        features = hello[1].get("features", [])
        return [f for f in features if isinstance(f, str)] if isinstance(features, list) else []
    return None


class CompressedStream(trio.abc.HalfCloseableStream):
    """A route or gateway stream that negotiates lz4 in the HELLO exchange and then
    compresses what it sends and inflates what it receives (see the module doc)."""

    def __init__(
        self,
        inner: trio.abc.Stream,
        *,
        mode: str,
        dialed: bool,
        rtt: float | None,
        counters: CompressionCounters,
        max_inflate: int = MAX_INFLATE,
        auto_rtt: float = AUTO_RTT,
    ) -> None:
        #: the stream underneath (``_peer_address`` looks through it)
        self.transport_stream = inner
        self._mode = mode if available() else "off"
        self._dialed = dialed
        self._counters = counters
        self._max_inflate = max_inflate
        #: what the dialer offers
        self._offer: str | None = None
        if dialed and self._mode != "off":
            want = self._mode == "on" or (rtt is not None and rtt >= auto_rtt)
            self._offer = WANT if want else CAN
        #: set once both sides know whether the link is compressed
        self._decided = trio.Event()
        #: the link is compressed (meaningful once decided)
        self.compressed = False
        self._head = bytearray()  # the peer's bytes until its HELLO is complete
        self._head_done = False
        self._sent_hello = False
        self._ready = b""  # received bytes to hand out before reading again
        self._compressor: Any = None
        self._sent_begin = False
        self._decompressor: Any = None

    # -- negotiation ----------------------------------------------------------------------

    def _decide_from_peer(self, features: list[str] | None) -> None:
        """The peer's HELLO arrived (None: its first frame was not a HELLO)."""
        if self._decided.is_set():
            return
        if features is None or self._mode == "off":
            agreed = False
        elif self._dialed:
            agreed = WANT in features  # the accepting node decided
        else:
            offered = WANT in features or CAN in features
            agreed = offered and (WANT in features or self._mode == "on")
        self._agree(agreed)

    def _agree(self, agreed: bool) -> None:
        self.compressed = agreed
        if agreed and _lz4 is not None:
            self._counters.links += 1
            self._compressor = _lz4.LZ4FrameCompressor(
                block_linked=True, auto_flush=True, content_checksum=False
            )
            self._decompressor = _lz4.LZ4FrameDecompressor()
        self._decided.set()

    def _our_hello(self, hello: Any) -> bytes | None:
        """Our HELLO with the compression feature added (None: leave it as it is)."""
        features = _features(hello)
        if features is None:
            return None
        if self._dialed:
            if self._offer is None:
                return None
            features.append(self._offer)
        elif self.compressed:
            features.append(WANT)
        else:
            return None
        hello[1]["features"] = features
        return bytes(msgpack.packb(hello, use_bin_type=True))

    # -- sending --------------------------------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data``: our HELLO as it is (with the feature), the rest compressed if
        the link is."""
        if not self._sent_hello:
            self._sent_hello = True
            try:
                first = _first_object(bytes(data))
            except ValueError:
                first = None
            if first is None or _features(first[0]) is None:
                # our first frame is not a HELLO (an error): this link is never compressed
                if not self._decided.is_set():
                    self._agree(False)
                await self.transport_stream.send_all(data)
                return
            hello, n = first
            if not self._dialed:
                await self._decided.wait()  # our HELLO answers the dialer's
            rewritten = self._our_hello(hello)
            await self.transport_stream.send_all(
                rewritten if rewritten is not None else bytes(data[:n])
            )
            data = data[n:]
            if not data:
                return
        if not self._decided.is_set():
            await self._decided.wait()
        if self._compressor is None:
            await self.transport_stream.send_all(data)
            return
        raw = bytes(data)
        if self._sent_begin:
            out = self._compressor.compress(raw)
        else:
            self._sent_begin = True
            out = self._compressor.begin() + self._compressor.compress(raw)
        counters = self._counters
        counters.raw_out += len(raw)
        counters.wire_out += len(out)
        await self.transport_stream.send_all(out)

    async def wait_send_all_might_not_block(self) -> None:
        """As the stream underneath."""
        await self.transport_stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        """End our direction, if the stream underneath can."""
        inner = self.transport_stream
        if isinstance(inner, trio.abc.HalfCloseableStream):
            await inner.send_eof()

    async def aclose(self) -> None:
        """Close the stream underneath."""
        await self.transport_stream.aclose()

    # -- receiving ------------------------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """The next bytes of the peer's frames (inflated, on a compressed link)."""
        while True:
            if self._ready:
                out, self._ready = self._ready, b""
                return out
            data = await self.transport_stream.receive_some(max_bytes)
            if not data:
                return data
            if not self._head_done:
                self._head += data
                try:
                    first = _first_object(self._head)
                except ValueError:
                    first = None
                    self._head_done = True
                if first is None and not self._head_done and len(self._head) < _MAX_HEAD:
                    continue  # the HELLO is not complete yet
                self._head_done = True
                head, self._head = bytes(self._head), bytearray()
                if first is None:  # not a HELLO: the core will say what is wrong
                    self._decide_from_peer(None)
                    return head
                hello, n = first
                self._decide_from_peer(_features(hello))
                rest = head[n:]
                if rest:
                    self._ready = self._inflate(rest) if self.compressed else rest
                return head[:n]
            if not self.compressed:
                return data
            out = self._inflate(data)
            if out:
                return out

    def _inflate(self, data: bytes | bytearray) -> bytes:
        """What ``data`` inflates to, at most ``max_inflate`` bytes (in pieces); more is
        a decompression bomb: refused, counted, and the link closed."""
        d = self._decompressor
        counters = self._counters
        counters.wire_in += len(data)
        try:
            piece = d.decompress(bytes(data), max_length=PIECE)
            pieces = [piece]
            total = len(piece)
            while total <= self._max_inflate and piece and not (d.needs_input or d.eof):
                piece = d.decompress(b"", max_length=PIECE)
                total += len(piece)
                pieces.append(piece)
        except RuntimeError as exc:  # lz4's error for a corrupt stream
            counters.refused += 1
            log.warning("refused a corrupt compressed stream from a peer: %s", exc)
            raise trio.BrokenResourceError(f"corrupt compressed stream: {exc}") from None
        if total > self._max_inflate:
            counters.refused += 1
            log.warning(
                "refused a decompression bomb from a peer (more than %d bytes from a read "
                "of %d): link closed",
                self._max_inflate,
                len(data),
            )
            raise trio.BrokenResourceError("decompression limit exceeded")
        counters.raw_in += total
        return b"".join(pieces)
