"""Times and durations as nats-server's monitoring prints them (shared by the observer's
snapshots and the HTTP endpoint)."""

from __future__ import annotations

__all__ = ["go_duration", "rfc3339", "uptime_text"]

import time


def go_duration(seconds: float) -> str:
    """A duration as Go's ``time.Duration`` prints it (``"1.5ms"``, ``"2m3.5s"``), the
    form nats-server's monitoring uses for ``rtt``."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{_trim(ns / 1e3)}\u00b5s"
    if ns < 1_000_000_000:
        return f"{sign}{_trim(ns / 1e6)}ms"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    secs = _trim(rest / 1e9)
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{sign}{minutes}m{secs}s"
    return f"{sign}{secs}s"


def _trim(x: float) -> str:
    return f"{x:.9f}".rstrip("0").rstrip(".")


def uptime_text(seconds: float) -> str:
    """Whole seconds as nats-server prints ``uptime`` and ``idle``: ``"1d2h3m4s"``."""
    s = int(seconds)
    mins, hours, days = s // 60, s // 3600, s // 86400
    years = days // 365
    if years:
        return f"{years}y{days % 365}d{hours % 24}h{mins % 60}m{s % 60}s"
    if days:
        return f"{days}d{hours % 24}h{mins % 60}m{s % 60}s"
    if hours:
        return f"{hours}h{mins % 60}m{s % 60}s"
    if mins:
        return f"{mins}m{s % 60}s"
    return f"{s}s"


def rfc3339(wall: float) -> str:
    """A wall-clock time (``time.time()``) as nats-server prints times (UTC, microseconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{int(wall % 1 * 1e6):06d}Z"
