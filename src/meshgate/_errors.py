"""The exception hierarchy of meshgate.

Every exception meshgate raises on purpose derives from :class:`MeshgateError`.
Protocol errors follow h11's split: a :class:`LocalProtocolError` means *we* (the
caller) broke a rule; a :class:`RemoteProtocolError` means the peer did, and carries
an error code suitable for the error frame sent back before the connection closes.
"""

from __future__ import annotations

__all__ = [
    "ErrorCode",
    "InvalidSubjectError",
    "LocalProtocolError",
    "MeshgateError",
    "ProtocolError",
    "RemoteProtocolError",
]

import enum


class ErrorCode(enum.IntEnum):
    """Machine-readable reason carried by an error frame."""

    #: Bytes that are not a well-formed frame (bad msgpack, wrong shape or types).
    MALFORMED = 1
    #: A frame with an opcode this protocol version does not define.
    UNKNOWN_OPCODE = 2
    #: A frame that is legal in the protocol but not for this role or direction.
    ILLEGAL_FOR_ROLE = 3
    #: A frame larger than the negotiated maximum.
    FRAME_TOO_LARGE = 4
    #: A payload larger than the node's ``max_payload``.
    PAYLOAD_TOO_LARGE = 5
    #: An invalid subject or subscription pattern.
    INVALID_SUBJECT = 6
    #: Authentication failed or did not happen within ``auth_timeout``.
    AUTH_FAILED = 7
    #: A permission violation (the connection stays open).
    PERMISSION_DENIED = 8
    #: A configured limit (connections, subscriptions) was reached.
    LIMIT_EXCEEDED = 9
    #: The connection could not keep up and was closed.
    SLOW_CONSUMER = 10
    #: The peer stopped answering pings.
    STALE_CONNECTION = 11
    #: The handshake was refused (version, cluster name, role).
    HANDSHAKE_REFUSED = 12
    #: The node is shutting down.
    SHUTTING_DOWN = 13
    #: The client fell behind: its event backlog was dropped and keyed state follows
    #: (the connection stays; the client should resynchronise what it shows).
    RESYNC = 14


class MeshgateError(Exception):
    """Base class of every error meshgate raises deliberately."""


class InvalidSubjectError(MeshgateError, ValueError):
    """A subject or pattern broke a syntax rule; the message names the input and the rule."""

    def __init__(self, value: object, rule: str) -> None:
        self.value = value
        self.rule = rule
        super().__init__(f"invalid subject {value!r}: {rule}")


class ProtocolError(MeshgateError):
    """A rule of the meshgate wire protocol was broken."""

    def __init__(self, reason: str, code: ErrorCode = ErrorCode.MALFORMED) -> None:
        self.reason = reason
        self.code = code
        super().__init__(reason)


class LocalProtocolError(ProtocolError):
    """This side tried to do something the protocol forbids."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids; ``code`` goes in the error frame."""
