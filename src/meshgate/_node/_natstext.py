"""What the NATS text protocol says for the core's generic operations: keepalive and
errors (for the NATS port's clients and the backbone's leafnode connection)."""

from __future__ import annotations

__all__ = ["NOTICE_SUBJECT", "PING", "PONG", "error_line", "error_text"]

import re

from .._errors import ErrorCode

#: the subject a NATS client subscribes to for its node's notices
NOTICE_SUBJECT = "$MG.notice"

#: keepalive in the NATS text protocol (client connections and leaf connections)
PING = b"PING\r\n"
PONG = b"PONG\r\n"

_DENIED = re.compile(r"^(publish|subscribe) to (['\"])(.*)\2 denied")
_REPLY_DENIED = re.compile(r"^reply subject (['\"])(.*)\1 denied")

_TEXT: dict[ErrorCode, str] = {
    ErrorCode.AUTH_FAILED: "Authorization Violation",
    ErrorCode.PAYLOAD_TOO_LARGE: "Maximum Payload Violation",
    ErrorCode.INVALID_SUBJECT: "Invalid Subject",
    ErrorCode.STALE_CONNECTION: "Stale Connection",
    ErrorCode.SLOW_CONSUMER: "Slow Consumer",
    ErrorCode.MALFORMED: "Parser Error",
    ErrorCode.FRAME_TOO_LARGE: "Maximum Payload Violation",
}


def error_text(code: ErrorCode, reason: str) -> str:
    """nats-server's ``-ERR`` text for one of meshgate's errors."""
    if code is ErrorCode.PERMISSION_DENIED:
        m = _DENIED.match(reason)
        if m is not None:
            what = "Publish" if m.group(1) == "publish" else "Subscription"
            return f'Permissions Violation for {what} to "{m.group(3)}"'
        m = _REPLY_DENIED.match(reason)
        if m is not None:
            return f'Permissions Violation for Publish with Reply of "{m.group(2)}"'
        return f"Permissions Violation: {reason}"
    if code is ErrorCode.AUTH_FAILED and "auth_timeout" in reason:
        return "Authentication Timeout"
    if code is ErrorCode.LIMIT_EXCEEDED and "max_connections" in reason:
        return "maximum connections exceeded"
    if code is ErrorCode.LIMIT_EXCEEDED and "max_subscriptions" in reason:
        return "maximum subscriptions exceeded"
    text = _TEXT.get(code)
    return text if text is not None else reason.replace("'", '"').replace("\r", " ")


def error_line(code: ErrorCode, reason: str) -> bytes:
    """The whole ``-ERR '<text>'`` line for one of meshgate's errors."""
    return b"-ERR '" + error_text(code, reason).encode("utf-8", "replace") + b"'\r\n"
