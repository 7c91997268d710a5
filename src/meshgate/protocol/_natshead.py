"""The NATS protocol's header blocks and error type (``meshgate.protocol.nats`` is
their public face; kept out of ``_nats.py``, which ``tools/compile.py`` compiles and
whose docstrings would be lost)."""

from __future__ import annotations

__all__ = ["HEADER_LINE", "NatsProtocolError", "encode_headers", "parse_headers"]

from collections.abc import Mapping

#: the first line of every header block (a status, such as ``503``, may follow it)
HEADER_LINE = b"NATS/1.0"


class NatsProtocolError(Exception):
    """Input that breaks the protocol; ``str()`` is nats-server's ``-ERR`` text."""


def encode_headers(headers: Mapping[str, str | list[str]], status: str = "") -> bytes:
    """A header block: ``NATS/1.0[ status]\\r\\n`` then ``Key: value`` lines and an
    empty line.  Keys and values may not contain CR, LF or (keys) a colon."""
    out = [HEADER_LINE + (b" " + status.encode() if status else b"") + b"\r\n"]
    for key, values in headers.items():
        if not key or any(c in key for c in ":\r\n "):
            raise ValueError(f"invalid header name {key!r}")
        for value in [values] if isinstance(values, str) else values:
            if "\r" in value or "\n" in value:
                raise ValueError(f"invalid value for header {key!r}")
            out.append(f"{key}: {value}\r\n".encode())
    out.append(b"\r\n")
    return b"".join(out)


def parse_headers(block: bytes) -> tuple[str, dict[str, list[str]]]:
    """``(status, headers)`` of a header block; raises ValueError if malformed."""
    if not block.startswith(HEADER_LINE) or not block.endswith(b"\r\n\r\n"):
        raise ValueError("a header block starts with NATS/1.0 and ends with an empty line")
    lines = block[:-4].decode("utf-8", "strict").split("\r\n")
    status = lines[0][len("NATS/1.0") :].strip()
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if not sep or not key.strip():
            raise ValueError(f"malformed header line {line!r}")
        headers.setdefault(key.strip(), []).append(value.strip())
    return status, headers
