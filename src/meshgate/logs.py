"""Logging for operators (``meshgate.logs``): the ``text`` and ``json`` formats of ``meshgate serve`` and
``meshgate demo`` (``--log-format``), and a limiter that keeps a noisy condition (a
peer refused again and again, slow consumers) to one line per key and interval, with
the count of lines it held back.

The sans-IO core never logs: it counts and reports (statistics, close reasons,
effects); the shell turns what it sees into these lines.
"""

from __future__ import annotations

__all__ = ["LOG_FORMATS", "JsonFormatter", "LogLimiter", "configure_logging"]

import json
import logging
import sys
import time
from collections import OrderedDict

#: the values ``--log-format`` takes
LOG_FORMATS = ("text", "json")

_TEXT = "%(asctime)s %(name)s %(levelname)s %(message)s"

#: LogRecord attributes that are not extra fields
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (RFC 3339, UTC), ``level``, ``logger``,
    ``msg`` and any ``extra`` fields of the call; an exception as ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        out: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(
            (k, v) for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")
        )
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: int, fmt: str = "text") -> None:
    """Send log records of ``level`` and above to standard error, as text or JSON lines
    (replacing the root logger's handlers)."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


class LogLimiter:
    """At most one line per key every ``interval`` seconds; the keys are bounded
    (``max_keys``; when full the key seen longest ago is forgotten, policy
    "oldest forgotten")."""

    __slots__ = ("_keys", "interval", "max_keys")

    def __init__(self, interval: float = 30.0, max_keys: int = 1024) -> None:
        #: seconds between two lines for one key
        self.interval = interval
        #: keys remembered at most
        self.max_keys = max_keys
        self._keys: OrderedDict[object, tuple[float, int]] = OrderedDict()

    def allow(self, key: object, now: float) -> int | None:
        """Whether a line for ``key`` may be logged at ``now`` (monotonic seconds): the
        number of lines held back since the last one (log it with the line), or None
        (hold this one back)."""
        keys = self._keys
        seen = keys.get(key)
        if seen is not None and now - seen[0] < self.interval:
            keys[key] = (seen[0], seen[1] + 1)
            return None
        keys[key] = (now, 0)
        keys.move_to_end(key)
        if len(keys) > self.max_keys:
            keys.popitem(last=False)
        return seen[1] if seen is not None else 0
